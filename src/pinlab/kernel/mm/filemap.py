"""The page cache: index -> folio lookups, insertion and removal with the kernel's refcounts.

v6.1 mm/filemap.c.  The page cache holds one reference per base page of a
cached folio (one for a hugetlb folio); a folio newly added also sits in the
per-CPU LRU-add batch with one more (swap.py).  Faults read through it, and
buffered writes (generic_perform_write) fill it through each filesystem's
->write_begin / ->write_end (fs/); writeback is page_writeback.py.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.bug import bug_on, warn_on_once
from pinlab.kernel.mm.locking import folio_lock, folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head, folio_nr_pages
from pinlab.kernel.mm.page_alloc import (
    GFP_HIGHUSER_MOVABLE,
    GFP_USER,
    alloc_pages,
    free_reads,
    free_writes,
    order_keys,
    page_keys,
    peek_hugetlb,
)
from pinlab.kernel.mm.page_ref import folio_put, folio_put_refs, page_ref_add
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE, get_pte, pmd_key, pte_key
from pinlab.kernel.mm.rmap import PageHuge, file_mapping_value, page_mapping_id
from pinlab.kernel.mm.swap import folio_add_lru, rotate_reclaimable_page
from pinlab.kernel.mm.types import AddressSpace, FsType, MmStruct, VmArea
from pinlab.kernel.mm.vmstat import NR_DIRTIED, NR_FILE_DIRTY, mod_node_page_state

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

ReadFolio = Callable[["Kernel", AddressSpace, int, int], None]
_ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF
# v6.1 include/linux/gfp_types.h ___GFP_HIGHMEM and GFP_HIGHUSER
__GFP_HIGHMEM = 0x02
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM


def _mkey(mapping: AddressSpace) -> tuple[str, int]:
    return ("mapping", mapping.id)


def mapping_gfp_mask(mapping: AddressSpace) -> int:
    """v6.1 include/linux/pagemap.h mapping_gfp_mask: where the inode's page cache comes from.

    inode_init_always sets GFP_HIGHUSER_MOVABLE (v6.1 fs/inode.c); ramfs_get_inode
    narrows it to GFP_HIGHUSER, so ramfs pages are unmovable (v6.1 fs/ramfs/inode.c).
    """
    return GFP_HIGHUSER if mapping.fs is FsType.RAMFS else GFP_HIGHUSER_MOVABLE


def folio_try_get(k: Kernel, folio: int) -> bool:
    """v6.1 include/linux/page_ref.h folio_try_get: +1 unless the count is 0 (being freed)."""
    if int(k.mem.refcount[folio]) == 0:
        return False
    page_ref_add(k.mem, folio, 1)
    return True


def filemap_get_folio(
    k: Kernel, mapping: AddressSpace, index: int
) -> Generator[Yield, None, int | None]:
    """v6.1 mm/filemap.c mapping_get_entry (filemap_get_folio, no FGP flags): +1 ref.

    The speculative reference is retried while the count is 0, and dropped
    and retried when the slot no longer holds the folio (xas_reload).
    """
    while True:
        yield Point("page cache lookup", reads=frozenset({_mkey(mapping)}))
        folio = mapping.i_pages.get(index)
        if folio is None:
            return None
        yield Point("folio_try_get", writes=frozenset({("page", folio, "refcount")}))
        if not folio_try_get(k, folio):
            continue
        yield Point("xas_reload", reads=frozenset({_mkey(mapping)}))
        if mapping.i_pages.get(index) == folio:
            return folio
        yield Point("folio_put", writes=folio_put_footprint(k, folio))
        folio_put(k, folio)


def folio_put_footprint(k: Kernel, folio: int) -> frozenset[Hashable]:
    """What dropping a reference may write: the count, and the pages' fields if it is freed."""
    return frozenset({("page", folio, "refcount")}) | free_writes(k, folio)


def folio_put_reads(folio: int) -> frozenset[Hashable]:
    """What dropping a reference may read besides what it writes: the count, and what
    free_folio reads to tell what it frees."""
    return frozenset({("page", folio, "refcount")}) | free_reads(folio)


def find_get_page(
    k: Kernel, mapping: AddressSpace, index: int
) -> Generator[Yield, None, int | None]:
    """v6.1 include/linux/pagemap.h find_get_page: the page at `index` with +1 ref."""
    return (yield from filemap_get_folio(k, mapping, index))


def filemap_add_folio(
    k: Kernel,
    mapping: AddressSpace,
    folio: int,
    index: int,
    cpu: int = 0,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, int]:
    """v6.1 mm/filemap.c filemap_add_folio: lock, cache it (+nr refs), then folio_add_lru.

    Returns 0 or -EEXIST when the index is taken (v6.1 __filemap_add_folio).  ``then``:
    what the caller writes after this returns, before it yields again (footprint only).
    """
    from pinlab.kernel.errno import EEXIST

    k.mem.flags[folio] |= k.pf.mask("PG_locked")
    # The new folio is the caller's alone until it is cached: on -EEXIST the caller frees it
    writes = (
        folio_put_footprint(k, folio)
        | page_keys(folio, 1, ("flags", "mapping", "index", "refcount"))
        | {_mkey(mapping)}
    )
    huge = peek_hugetlb(k.mem, folio)
    yield Point(
        "page cache insert",
        reads=writes | free_reads(folio) | {_mkey(mapping)} | (then if huge else frozenset()),
        writes=writes | (then if huge else frozenset()),
    )
    if index in mapping.i_pages:
        k.mem.flags[folio] &= ~k.pf.mask("PG_locked") & _ALL_BITS
        return -EEXIST
    nr = 1 if PageHuge(k, folio) else folio_nr_pages(k.mem, folio)
    page_ref_add(k.mem, folio, nr)
    k.mem.mapping[folio] = file_mapping_value(mapping.id)
    k.mem.index[folio] = index
    mapping.i_pages[index] = folio
    if not PageHuge(k, folio):
        # the caller fills the new folio in (->read_folio, zeroing) and unlocks it
        yield from folio_add_lru(k, folio, cpu, page_keys(folio, 1, ("flags", "data")) | then)
    return 0


def remove_footprint(k: Kernel, mapping: AddressSpace, folio: int) -> frozenset[Hashable]:
    """What filemap_remove_folio writes: the cache slot, the folio's mapping and its count."""
    return folio_put_footprint(k, folio) | {_mkey(mapping)}


def filemap_remove_folio(k: Kernel, mapping: AddressSpace, folio: int) -> None:
    """v6.1 mm/filemap.c filemap_remove_folio + filemap_free_folio (folio locked by caller)."""
    index = int(k.mem.index[folio])
    del mapping.i_pages[index]
    mapping.dirty_marks.discard(index)  # the slot goes with its marks
    k.mem.mapping[folio] = 0
    refs = 1 if PageHuge(k, folio) else folio_nr_pages(k.mem, folio)
    folio_put_refs(k, folio, refs)


def folio_mapping(k: Kernel, folio: int) -> AddressSpace | None:
    """v6.1 mm/util.c folio_mapping: the page cache a folio belongs to (None for anon)."""
    as_id = page_mapping_id(k, folio)
    return None if as_id is None else k.mappings.get(as_id)


def folio_mark_dirty(
    k: Kernel,
    folio: int,
    then_reads: frozenset[Hashable] = frozenset(),
    then_writes: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, bool]:
    """Mark a folio dirty through its mapping's a_ops; True if this call dirtied it.

    v6.1 mm/page-writeback.c folio_mark_dirty (:2753): with a mapping, PG_reclaim is
    cleared and a_ops->dirty_folio runs (fs.a_ops_dirty_folio); without one (anon)
    noop_dirty_folio.  v5.7.14 / v4.4.178 mm/page-writeback.c set_page_dirty (:2549 /
    :2558) the same with a_ops->set_page_dirty, __set_page_dirty_buffers when it is NULL
    (CONFIG_BLOCK), and TestSetPageDirty without a mapping.  ``then_reads``,
    ``then_writes``: what the caller reads and writes after this returns, before it
    yields again (footprint only).
    """
    from pinlab.kernel.fs import a_ops_dirty_folio

    m = k.mem
    mapping = folio_mapping(k, folio)
    keys = dirty_footprint(mapping, folio)
    yield Point(
        "folio_mark_dirty",
        reads=keys | order_keys(folio) | then_reads,
        writes=keys | then_writes,
    )
    if mapping is None:
        return noop_dirty_folio(k, folio)
    m.flags[folio] &= ~k.pf.mask("PG_reclaim") & _ALL_BITS
    return a_ops_dirty_folio(k, mapping, folio)


def noop_dirty_folio(k: Kernel, folio: int) -> bool:
    """Test and set PG_dirty, nothing else; True if newly dirty.

    v6.1 mm/page-writeback.c noop_dirty_folio (:2560): anon folios, shmem_aops,
    ram_aops, hugetlbfs_aops, ext4_dax_aops; v5.7.14 / v4.4.178 mm/page-writeback.c
    __set_page_dirty_no_writeback (:2398 / :2405, shmem and ramfs) and set_page_dirty's
    no-mapping branch do the same.
    """
    dirty = k.pf.mask("PG_dirty")
    if int(k.mem.flags[folio]) & dirty:
        return False
    k.mem.flags[folio] |= dirty
    return True


def dirty_footprint(mapping: AddressSpace | None, folio: int) -> frozenset[Hashable]:
    """What dirtying a folio touches: its flags, the dirty counters if its mapping accounts,
    and an ext4 folio's buffers (page->private)."""
    keys: set[Hashable] = {("page", folio, "flags")}
    if mapping is not None:
        keys |= {_mkey(mapping), ("page", folio, "index")}  # PAGECACHE_TAG_DIRTY at the index
    if mapping is not None and mapping.fs.writes_back:
        keys |= {("vmstat", NR_FILE_DIRTY), ("vmstat", NR_DIRTIED), ("page", folio, "private")}
    return frozenset(keys)


def __folio_mark_dirty(
    k: Kernel, mapping: AddressSpace | None, folio: int, warn: bool = False
) -> None:
    """Account a folio whose PG_dirty was just set (folio_account_dirtied).

    v6.1 mm/page-writeback.c __folio_mark_dirty (:2630): with `warn`, WARN_ON_ONCE on a
    folio that is not uptodate (:2637); only a mapping that writes back
    (mapping_can_writeback) counts NR_FILE_DIRTY and NR_DIRTIED.  v5.7.14 / v4.4.178
    fs/buffer.c __set_page_dirty (:609 / :633) the same.  Each marks the folio's index
    PAGECACHE_TAG_DIRTY (6.1 :2639; 5.7.14 fs/buffer.c:618; 4.4.178 :642).
    """
    if warn and not int(k.mem.flags[folio]) & k.pf.mask("PG_uptodate"):
        warn_on_once(k, "mm/page-writeback.c __folio_mark_dirty !uptodate")
    if mapping is not None:
        mapping.dirty_marks.add(int(k.mem.index[folio]))
    if mapping is not None and mapping.fs.writes_back:
        nr = folio_nr_pages(k.mem, folio)
        mod_node_page_state(k.vmstat, NR_FILE_DIRTY, nr)
        mod_node_page_state(k.vmstat, NR_DIRTIED, nr)


def folio_cancel_dirty(k: Kernel, mapping: AddressSpace, folio: int) -> None:
    """Clear PG_dirty; a mapping that writes back uncounts NR_FILE_DIRTY (folio_account_cleaned).

    v6.1 mm/page-writeback.c __folio_cancel_dirty (:2812); v5.7.14 __cancel_dirty_page
    (:2616); v4.4.178 cancel_dirty_page (:2624).
    """
    dirty = k.pf.mask("PG_dirty")
    was = int(k.mem.flags[folio]) & dirty
    k.mem.flags[folio] &= ~dirty & _ALL_BITS
    if was and mapping.fs.writes_back:
        mod_node_page_state(k.vmstat, NR_FILE_DIRTY, -folio_nr_pages(k.mem, folio))


def filemap_release_folio(k: Kernel, folio: int) -> bool:
    """Ask the fs to release a locked folio's private data (buffers); True if none is left.

    v6.1 mm/filemap.c filemap_release_folio (:4015): nothing private -> true
    (folio_needs_release; no modelled mapping sets AS_RELEASE_ALWAYS); under writeback ->
    false; else a_ops->release_folio, or try_to_free_buffers.  v5.7.14 / v4.4.178
    mm/filemap.c try_to_release_page (:3489 / :2762) the same, its callers testing
    page_has_private first.
    """
    from pinlab.kernel.fs import a_ops_release_folio

    flags = int(k.mem.flags[folio])
    bug_on(not flags & k.pf.mask("PG_locked"), "filemap_release_folio unlocked folio")
    if not flags & k.pf.mask("PG_private"):
        return True
    if flags & k.pf.mask("PG_writeback"):
        return False
    return a_ops_release_folio(k, folio_mapping(k, folio), folio)


def end_page_writeback_reclaim(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v4.4.178 mm/filemap.c:839-842 end_page_writeback on a PageReclaim page, before
    test_clear_page_writeback: ClearPageReclaim, then rotate_reclaimable_page.

    The completion's CPU is taken to be CPU 0 (the model does not place interrupts).  The
    caller saw PG_reclaim before its last yield; it is tested again here, as another CPU
    (set_page_dirty, say) may have cleared it since.  v5.7.14 / v6.1 end_page_writeback /
    folio_end_writeback rotate likewise, but their PG_reclaim is only ever set by reclaim,
    which the model has only for v4.4.178: they raise Unmodelled.
    """
    if k.profile.consumers != "4.4":
        raise Unmodelled("end_page_writeback", "a PG_reclaim page (rotate_reclaimable_page)")
    keys = frozenset({("page", page, "flags")})
    yield Point("end_page_writeback PageReclaim", reads=keys, writes=keys)
    reclaim = k.pf.mask("PG_reclaim")
    if not int(k.mem.flags[page]) & reclaim:
        return
    k.mem.flags[page] &= ~reclaim & _ALL_BITS
    yield from rotate_reclaimable_page(k, page, 0)


def set_page_dirty(k: Kernel, page: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/folio-compat.c set_page_dirty: folio_mark_dirty on the page's folio."""
    return (yield from folio_mark_dirty(k, compound_head(k.mem, page)))


def set_page_dirty_lock(k: Kernel, page: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/page-writeback.c set_page_dirty_lock: lock_page, set_page_dirty, unlock_page."""
    folio = compound_head(k.mem, page)
    yield from folio_lock(k, folio)
    ret = yield from folio_mark_dirty(k, folio)
    folio_unlock(k, folio)
    return ret


def filemap_fault(
    k: Kernel,
    mapping: AddressSpace,
    index: int,
    cpu: int,
    read_folio: ReadFolio,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 mm/filemap.c filemap_fault: the cached page, or a new one read in; locked, +1 ref.

    Readahead is not modelled: a miss reads just the faulting page
    (v6.1 filemap_create_folio path).  Returns (vm_fault_t, page).  ``then``: what the
    caller writes after this returns, before it yields again (footprint only).
    """
    from pinlab.kernel.mm.memory import (
        VM_FAULT_LOCKED,
        VM_FAULT_MAJOR,
        VM_FAULT_OOM,
        VM_FAULT_SIGBUS,
    )

    max_idx = -(-mapping.i_size // PAGE_SIZE)
    if index >= max_idx:
        return VM_FAULT_SIGBUS, -1
    ret = 0
    folio = yield from filemap_get_folio(k, mapping, index)
    if folio is None:
        ret = VM_FAULT_MAJOR
        # vmf->gfp_mask is the mapping's (v6.1 mm/memory.c __get_fault_gfp_mask)
        new = alloc_pages(k, mapping_gfp_mask(mapping), 0)
        if new is None:
            return VM_FAULT_OOM, -1
        err = yield from filemap_add_folio(k, mapping, new, index, cpu)
        if err:
            folio_put(k, new)
            return (yield from filemap_fault(k, mapping, index, cpu, read_folio, then))
        read_folio(k, mapping, new, index)
        folio_unlock(k, new)
        folio = new
    # then the folio is unlocked and put (truncated meanwhile), or returned
    yield from folio_lock(k, folio, folio_put_footprint(k, folio) | then)
    if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id):
        folio_unlock(k, folio)
        folio_put(k, folio)
        return (yield from filemap_fault(k, mapping, index, cpu, read_folio, then))
    if index >= -(-mapping.i_size // PAGE_SIZE):
        folio_unlock(k, folio)
        folio_put(k, folio)
        return VM_FAULT_SIGBUS, -1
    return ret | VM_FAULT_LOCKED, folio


def filemap_map_pages(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    address: int,
    start_pgoff: int,
    end_pgoff: int,
    cpu: int,
) -> Generator[Yield, None, int]:
    """v6.1 mm/filemap.c filemap_map_pages: map cached, uptodate, unlocked pages read-only.

    Each mapped page gets +1 ref and +1 mapcount; returns VM_FAULT_NOPAGE when
    the faulting address itself was mapped.
    """
    from pinlab.kernel.mm.memory import VM_FAULT_NOPAGE, do_set_pte

    assert vma.vm_file is not None
    mapping = k.mappings[vma.vm_file]
    file_end = -(-mapping.i_size // PAGE_SIZE) - 1
    end_pgoff = min(end_pgoff, file_end)
    uptodate = k.pf.mask("PG_uptodate")
    locked = k.pf.mask("PG_locked")
    ret = 0
    yield Point("filemap_map_pages", reads=frozenset({_mkey(mapping)}))
    indices = sorted(i for i in mapping.i_pages if start_pgoff <= i <= end_pgoff)
    if not indices:
        return 0
    first_addr = vma.vm_start + ((start_pgoff - vma.vm_pgoff) << PAGE_SHIFT)
    yield from pte_lock(k, mm, first_addr)
    for index in indices:
        folio = mapping.i_pages.get(index)
        if folio is None:
            continue
        addr = vma.vm_start + ((index - vma.vm_pgoff) << PAGE_SHIFT)
        yield Point(
            "map_pages pte",
            reads=frozenset({_mkey(mapping), ("page", folio, "flags")}),
            writes=frozenset(
                {
                    pte_key(mm.id, addr),
                    pmd_key(mm.id, addr),
                    ("page", folio, "refcount"),
                    ("page", folio, "mapcount"),
                }
            ),
        )
        flags = int(k.mem.flags[folio])
        if mapping.i_pages.get(index) != folio or not flags & uptodate or flags & locked:
            continue
        if get_pte(mm.pgtable, addr) != 0:
            continue
        if addr == address:
            ret = VM_FAULT_NOPAGE
        page_ref_add(k.mem, folio, 1)
        yield from do_set_pte(k, mm, vma, folio, addr, False, cpu)
    pte_unlock(k, mm, first_addr)
    return ret


def grab_cache_page_write_begin(
    k: Kernel, mapping: AddressSpace, index: int, cpu: int
) -> Generator[Yield, None, int | None]:
    """v6.1 mm/folio-compat.c grab_cache_page_write_begin: the folio at `index` locked, +1 ref.

    v6.1 mm/filemap.c __filemap_get_folio with FGP_LOCK | FGP_WRITE | FGP_CREAT |
    FGP_STABLE: a cached folio is locked and rechecked against truncation; a miss
    allocates one (its allocation reference is the caller's) and inserts it,
    retrying on -EEXIST.  FGP_WRITE's PG_idle clearing has no flag to clear (the
    Debian config has no PAGE_IDLE_FLAG, profiles.py) and FGP_STABLE waits only
    on a superblock with SB_I_STABLE_WRITES, which none of the model's has.
    None is the kernel's NULL (allocation failure).
    """
    while True:
        folio = yield from filemap_get_folio(k, mapping, index)
        if folio is not None:
            yield from folio_lock(k, folio)
            if int(k.mem.mapping[folio]) == file_mapping_value(mapping.id):
                return folio
            folio_unlock(k, folio)
            yield Point("folio_put", writes=folio_put_footprint(k, folio))
            folio_put(k, folio)
            continue
        new = alloc_pages(k, mapping_gfp_mask(mapping), 0)
        if new is None:
            return None
        if (yield from filemap_add_folio(k, mapping, new, index, cpu)) == 0:
            return new
        folio_put(k, new)


def copy_page_from_iter_atomic(k: Kernel, folio: int, token: int) -> Generator[Yield, None, None]:
    """v6.1 lib/iov_iter.c copy_page_from_iter_atomic: the source bytes into the locked folio.

    Contents are one token per page (as process_vm_rw_pages copies them): any
    copy into a page leaves it holding the source's token.
    """
    yield Point("copy_page_from_iter_atomic", writes=frozenset({("page", folio, "data")}))
    k.mem.data[folio] = token


def generic_perform_write(
    k: Kernel, mapping: AddressSpace, pos: int, count: int, token: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/filemap.c generic_perform_write: page by page ->write_begin, copy, ->write_end.

    The source is `count` bytes of content token `token`; the user buffer
    itself is not modelled, so neither are fault_in_iov_iter_readable and short
    copies (a copy never stops early, so ->write_end never rejects it).
    balance_dirty_pages_ratelimited is not modelled: the model has no dirty
    limits or flusher threads, so no write is throttled into writeback.
    Returns the bytes written, or the first -errno if nothing was.
    """
    from pinlab.kernel.fs import write_begin, write_end

    written = 0
    status = 0
    while written < count:
        offset = pos & (PAGE_SIZE - 1)
        nbytes = min(PAGE_SIZE - offset, count - written)
        status, folio = yield from write_begin(k, mapping, pos, nbytes, cpu)
        if status < 0:
            break
        yield from copy_page_from_iter_atomic(k, folio, token)
        status = yield from write_end(k, mapping, pos, nbytes, nbytes, folio)
        if status < 0:
            break
        pos += status
        written += status
    return written if written else status


def generic_file_write_iter(
    k: Kernel, mapping: AddressSpace, pos: int, count: int, token: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/filemap.c generic_file_write_iter: checks, then a buffered write (tmpfs, ramfs).

    generic_write_checks passes a plain write through (no O_APPEND, limits far
    away) and stops an empty one; i_rwsem is not modelled (no other modelled
    path takes it), nor are file_remove_privs and file_update_time (inode
    metadata only).  generic_write_sync does nothing without O_SYNC/O_DSYNC.
    """
    if count <= 0:
        return 0
    return (yield from generic_perform_write(k, mapping, pos, count, token, cpu))
