"""Page-cache reference counts (v6.1 mm/filemap.c, mm/truncate.c, mm/memory.c zap_pte_range)."""

from __future__ import annotations

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.filemap import filemap_add_folio, filemap_remove_folio, find_get_page
from pinlab.kernel.mm.mmap import MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, alloc_pages
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import PAGE_SIZE
from pinlab.kernel.mm.rmap import PageAnon, page_mapcount
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.truncate import truncate_setsize
from pinlab.kernel.state import boot
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
    from pinlab.kernel.mm.vmstat import NR_DIRTIED, NR_FILE_DIRTY, global_node_page_state

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
