"""Page-cache reference counts, buffered writes and fsync writeback.

v6.1 mm/filemap.c, mm/page-writeback.c, mm/truncate.c, mm/memory.c zap_pte_range.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import pytest

from pinlab.interleave import Unmodelled, Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.fs import File, vfs_fsync, vfs_write
from pinlab.kernel.fs.direct_io import PGPGOUT
from pinlab.kernel.mm.filemap import filemap_add_folio, filemap_remove_folio, find_get_page
from pinlab.kernel.mm.locking import folio_unlock
from pinlab.kernel.mm.mmap import MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, alloc_pages
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.page_writeback import NR_WRITEBACK, NR_WRITTEN
from pinlab.kernel.mm.pgtable import PAGE_SIZE
from pinlab.kernel.mm.rmap import PageAnon, page_mapcount
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.truncate import truncate_setsize
from pinlab.kernel.mm.vmstat import NR_FILE_DIRTY, global_node_page_state
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE


def test_add_find_remove_refcounts() -> None:
    """filemap_add_folio: +1 for the cache and +1 in the LRU batch; find_get_page +1;
    filemap_remove_folio drops the cache's reference (filemap_free_folio)."""
    k = boot("6.1")
    f = P.tmpfs_create(k, PAGE_SIZE)
    mapping = k.mappings[f.mapping]
    page = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
    assert page is not None
    assert run(filemap_add_folio(k, mapping, page, 0)) == 0
    assert int(k.mem.refcount[page]) == 3
    run(lru_add_drain(k, 0))
    assert int(k.mem.refcount[page]) == 2
    assert run(find_get_page(k, mapping, 0)) == page
    assert int(k.mem.refcount[page]) == 3
    folio_put(k, page)
    assert run(find_get_page(k, mapping, 1)) is None
    assert run(filemap_add_folio(k, mapping, page, 0)) == -17  # -EEXIST
    k.mem.flags[page] |= k.pf.mask("PG_locked")
    filemap_remove_folio(k, mapping, page)
    assert int(k.mem.refcount[page]) == 1
    assert 0 not in mapping.i_pages
    folio_put(k, page)
    assert int(k.mem.refcount[page]) == 0


def test_munmap_dirty_shared_pte_dirties_page_and_keeps_cache_ref() -> None:
    """zap_pte_range: dirty PTE of a file page -> set_page_dirty; mapcount drops; the page
    cache keeps its reference.  A tmpfs read fault maps the page writable and clean
    (no writenotify), so the store dirties only the PTE."""
    k = boot("6.1")
    t = P.new_task(k)
    f = P.tmpfs_create(k, PAGE_SIZE)
    addr = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_SHARED, f))
    run(user_access(k, t, addr, False))
    run(user_access(k, t, addr, True, 9))
    page = k.mappings[f.mapping].i_pages[0]
    assert not int(k.mem.flags[page]) & k.pf.mask("PG_dirty")
    assert run(P.sys_munmap(k, t, addr, PAGE_SIZE)) == 0
    assert int(k.mem.flags[page]) & k.pf.mask("PG_dirty")
    assert page_mapcount(k, page) == 0
    assert int(k.mem.refcount[page]) == 1
    assert int(k.mem.data[page]) == 9


def test_truncate_unmaps_even_cow_copies_and_frees_cache() -> None:
    """truncate_pagecache: unmap_mapping_range(even_cows=1) zaps private COW pages too,
    truncate_inode_pages_range drops the cache's refs (and buffer heads)."""
    k = boot("6.1")
    t = P.new_task(k)
    f = P.ext4_create(k, 2 * PAGE_SIZE)
    shared = run(P.sys_mmap(k, t, None, 2 * PAGE_SIZE, RW, MAP_SHARED, f))
    private = run(P.sys_mmap(k, t, None, 2 * PAGE_SIZE, RW, MAP_PRIVATE, f))
    run(user_access(k, t, shared, True, 1))
    run(user_access(k, t, private + PAGE_SIZE, True, 2))
    cow = P.pagemap(k, t, private + PAGE_SIZE).pfn
    assert PageAnon(k, cow)
    cached = k.mappings[f.mapping].i_pages[0]
    run(lru_add_drain(k, 0))
    run(truncate_setsize(k, k.mappings[f.mapping], 0))
    assert not P.pagemap(k, t, shared).present
    assert not P.pagemap(k, t, private + PAGE_SIZE).present
    assert k.mappings[f.mapping].i_pages == {}
    assert int(k.mem.refcount[cached]) == 0
    assert int(k.mem.refcount[cow]) == 0


def test_ext4_shared_write_accounts_nr_dirty_and_truncate_cancels_it() -> None:
    """v6.1 fs/buffer.c block_dirty_folio -> __folio_mark_dirty: NR_FILE_DIRTY and NR_DIRTIED
    +1 when ext4 dirties a page; truncate's folio_cancel_dirty -> folio_account_cleaned: -1
    (NR_DIRTIED is cumulative).  tmpfs dirties with noop_dirty_folio: no accounting."""
    from pinlab.kernel.mm.vmstat import NR_DIRTIED

    k = boot("6.1")
    t = P.new_task(k)
    for create, expect in ((P.tmpfs_create, 0), (P.ext4_create, 1)):
        f = create(k, PAGE_SIZE)
        addr = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_SHARED, f))
        before = global_node_page_state(k.vmstat, NR_DIRTIED)
        run(user_access(k, t, addr, True, 3))
        assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == expect
        assert global_node_page_state(k.vmstat, NR_DIRTIED) - before == expect
    run(truncate_setsize(k, k.mappings[f.mapping], 0))
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 0


def test_second_touch_activates_through_the_per_cpu_activate_batch() -> None:
    """v6.1 mm/swap.c folio_mark_accessed: first touch PG_referenced; second touch on an LRU
    folio -> folio_activate: +1 ref in cpu_fbatches.activate, PG_referenced cleared;
    lru_add_drain_cpu -> folio_activate_drain sets PG_active and drops the ref."""
    from pinlab.kernel.mm.swap import folio_mark_accessed

    k = boot("6.1")
    f = P.tmpfs_create(k, PAGE_SIZE)
    page = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
    assert page is not None
    run(filemap_add_folio(k, k.mappings[f.mapping], page, 0))
    run(lru_add_drain(k))
    base = int(k.mem.refcount[page])
    referenced, active = k.pf.mask("PG_referenced"), k.pf.mask("PG_active")
    run(folio_mark_accessed(k, page))
    assert int(k.mem.flags[page]) & (referenced | active) == referenced
    run(folio_mark_accessed(k, page))
    assert int(k.mem.refcount[page]) == base + 1
    assert int(k.mem.flags[page]) & (referenced | active) == 0
    run(lru_add_drain(k))
    assert int(k.mem.refcount[page]) == base
    assert int(k.mem.flags[page]) & (referenced | active) == active


def _flags(k: Kernel, page: int, *names: str) -> set[str]:
    return {n for n in names if int(k.mem.flags[page]) & k.pf.mask(n)}


STATE = ("PG_dirty", "PG_uptodate", "PG_locked", "PG_private", "PG_referenced", "PG_writeback")


@pytest.mark.parametrize(
    ("create", "holders", "flags", "accounted"),
    [
        # shmem_add_to_page_cache +1, folio_add_lru +1; SGP_WRITE __folio_set_referenced
        (P.tmpfs_create, 2, {"PG_dirty", "PG_uptodate", "PG_referenced"}, 0),
        # filemap_add_folio +1, folio_add_lru +1; ram_aops noop_dirty_folio: no accounting
        (P.ramfs_create, 2, {"PG_dirty", "PG_uptodate"}, 0),
        # ... + buffers (create_page_buffers -> folio_attach_private); mark_buffer_dirty ->
        # __folio_mark_dirty -> folio_account_dirtied
        (P.ext4_create, 3, {"PG_dirty", "PG_uptodate", "PG_private"}, 1),
    ],
)
def test_buffered_write_leaves_the_cache_references_and_drops_its_own(
    create: Callable[[Kernel, int], File], holders: int, flags: set[str], accounted: int
) -> None:
    """v6.1 mm/filemap.c generic_perform_write: write_begin's folio (allocation ref) is put
    by write_end after unlock; the page cache and the LRU-add batch keep theirs."""
    k = boot("6.1")
    f = create(k, 0)
    mapping = k.mappings[f.mapping]
    assert run(vfs_write(k, f, 0, PAGE_SIZE, 5)) == PAGE_SIZE
    page = mapping.i_pages[0]
    assert mapping.i_size == PAGE_SIZE
    assert int(k.mem.refcount[page]) == holders
    assert _flags(k, page, *STATE) == flags
    assert int(k.mem.data[page]) == 5
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == accounted


def test_ext4_fsync_writes_back_to_completion() -> None:
    """v6.1 fs/ext4/fsync.c ext4_sync_file -> file_write_and_wait_range: each dirty folio is
    cleaned for I/O (NR_FILE_DIRTY -1), written (submit_bio: 8 sectors of PGPGOUT per page)
    and its writeback ended (NR_WRITTEN); write_cache_pages' pagevec_release drains the
    LRU-add batch, so the 16th page keeps only the cache's and the buffers' references."""
    k = boot("6.1")
    f = P.ext4_create(k, 0)
    mapping = k.mappings[f.mapping]
    assert run(vfs_write(k, f, 0, 16 * PAGE_SIZE, 3)) == 16 * PAGE_SIZE
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 16
    assert run(vfs_fsync(k, f)) == 0
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 0
    assert global_node_page_state(k.vmstat, NR_WRITTEN) == 16
    assert global_node_page_state(k.vmstat, NR_WRITEBACK) == 0
    assert k.vmstat.counters[PGPGOUT] == 16 * PAGE_SIZE // 512
    assert mapping.store == dict.fromkeys(range(16), 3)
    for page in mapping.i_pages.values():
        assert int(k.mem.refcount[page]) == 2
        assert _flags(k, page, *STATE) == {"PG_uptodate", "PG_private"}


@pytest.mark.parametrize("create", [P.tmpfs_create, P.ramfs_create])
def test_noop_fsync_leaves_pages_dirty(create: Callable[[Kernel, int], File]) -> None:
    """v6.1 fs/libfs.c noop_fsync (shmem_file_operations, ramfs_file_operations): no I/O."""
    k = boot("6.1")
    f = create(k, 0)
    assert run(vfs_write(k, f, 0, 2 * PAGE_SIZE, 0)) == 2 * PAGE_SIZE
    before = {p: int(k.mem.refcount[p]) for p in k.mappings[f.mapping].i_pages.values()}
    assert run(vfs_fsync(k, f)) == 0
    for page, count in before.items():
        assert int(k.mem.refcount[page]) == count
        assert "PG_dirty" in _flags(k, page, *STATE)
    assert k.vmstat.counters.get(PGPGOUT, 0) == 0


@pytest.mark.parametrize("create", [P.tmpfs_create, P.ramfs_create])
def test_partial_page_write_extends_i_size_and_makes_the_page_uptodate(
    create: Callable[[Kernel, int], File],
) -> None:
    """shmem_write_end / simple_write_begin zero the rest of a new folio: it is uptodate."""
    k = boot("6.1")
    f = create(k, 0)
    assert run(vfs_write(k, f, 100, 10, 0)) == 10
    mapping = k.mappings[f.mapping]
    assert mapping.i_size == 110
    assert {"PG_dirty", "PG_uptodate"} <= _flags(k, mapping.i_pages[0], *STATE)
    # a write across a page boundary takes two write_begin/write_end rounds
    assert run(vfs_write(k, f, PAGE_SIZE - 1, 2, 0)) == 2
    assert sorted(mapping.i_pages) == [0, 1] and mapping.i_size == PAGE_SIZE + 1


def test_ext4_partial_page_write_is_refused_before_any_change() -> None:
    """fs/buffer.c __block_write_begin works per fs block: not modelled, Unmodelled."""
    k = boot("6.1")
    f = P.ext4_create(k, 0)
    with pytest.raises(Unmodelled, match="__block_write_begin: a write of part of a page"):
        run(vfs_write(k, f, 0, 100, 0))
    assert k.mappings[f.mapping].i_pages == {}


def test_write_refusals() -> None:
    """vfs_write: -EBADF without FMODE_WRITE, -EINVAL without ->write_iter (hugetlbfs);
    shmem_write_begin: -EPERM under F_SEAL_WRITE (and F_SEAL_GROW past EOF)."""
    from pinlab.kernel.fs.hugetlbfs import hugetlb_file_setup
    from pinlab.kernel.fs.shmem import F_SEAL_GROW, F_SEAL_WRITE

    k = boot("6.1")
    assert run(vfs_write(k, P.tmpfs_create(k, 0, writable=False), 0, 1, 0)) == -9
    assert run(vfs_write(k, hugetlb_file_setup(k, 0, 9), 0, 1, 0)) == -22
    sealed = P.tmpfs_create(k, PAGE_SIZE)
    k.mappings[sealed.mapping].seals = F_SEAL_GROW
    assert run(vfs_write(k, sealed, 0, PAGE_SIZE, 0)) == PAGE_SIZE
    assert run(vfs_write(k, sealed, PAGE_SIZE, 1, 0)) == -1
    k.mappings[sealed.mapping].seals = F_SEAL_WRITE
    assert run(vfs_write(k, sealed, 0, 1, 0)) == -1


def test_writeback_write_protects_shared_ptes_and_a_store_redirties() -> None:
    """v6.1 mm/page-writeback.c folio_clear_dirty_for_io -> mm/rmap.c folio_mkclean: the
    shared PTE loses write and dirty, so the next store faults (do_wp_page ->
    ext4_page_mkwrite) and dirties the folio again."""
    from pinlab.kernel.mm.pgtable import get_pte, pte_dirty, pte_write

    k = boot("6.1")
    t = P.new_task(k)
    f = P.ext4_create(k, 0)
    assert run(vfs_write(k, f, 0, PAGE_SIZE, 0)) == PAGE_SIZE
    addr = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_SHARED, f))
    run(user_access(k, t, addr, True, 4))
    pte = get_pte(k.mms[t.mm].pgtable, addr)
    assert pte_write(pte) and pte_dirty(pte)
    assert run(vfs_fsync(k, f)) == 0
    pte = get_pte(k.mms[t.mm].pgtable, addr)
    assert not pte_write(pte) and not pte_dirty(pte)
    assert k.mappings[f.mapping].store == {0: 4}
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 0
    run(user_access(k, t, addr, True, 6))
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 1


def test_write_cache_pages_sync_none_stops_at_nr_to_write() -> None:
    """v6.1 mm/page-writeback.c write_cache_pages: WB_SYNC_NONE ends when nr_to_write runs
    out; each folio reaches ->writepage locked and cleaned for I/O."""
    from pinlab.kernel.mm.page_writeback import (
        WB_SYNC_NONE,
        WritebackControl,
        folio_end_writeback,
        folio_start_writeback,
        write_cache_pages,
    )

    k = boot("6.1")
    f = P.ext4_create(k, 0)
    mapping = k.mappings[f.mapping]
    assert run(vfs_write(k, f, 0, 3 * PAGE_SIZE, 0)) == 3 * PAGE_SIZE
    seen: list[int] = []

    def writepage(
        k: Kernel, folio: int, wbc: WritebackControl, data: list[int]
    ) -> Generator[Yield, None, int]:
        assert _flags(k, folio, "PG_locked", "PG_dirty") == {"PG_locked"}
        data.append(int(k.mem.index[folio]))
        yield from folio_start_writeback(k, folio)
        folio_unlock(k, folio)
        yield from folio_end_writeback(k, folio)
        return 0

    wbc = WritebackControl(WB_SYNC_NONE, nr_to_write=2)
    assert run(write_cache_pages(k, mapping, wbc, writepage, seen)) == 0
    assert seen == [0, 1]
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 1
