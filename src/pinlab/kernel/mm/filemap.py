"""The page cache: index -> folio lookups, insertion and removal with the kernel's refcounts.

v6.1 mm/filemap.c.  The page cache holds one reference per base page of a
cached folio (one for a hugetlb folio); a folio newly added also sits in the
per-CPU LRU-add batch with one more (swap.py).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.locking import folio_lock, folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import folio_nr_pages, folio_test_large
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, alloc_pages
from pinlab.kernel.mm.page_ref import folio_put, folio_put_refs, page_ref_add
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE, get_pte
from pinlab.kernel.mm.rmap import PageHuge, file_mapping_value
from pinlab.kernel.mm.swap import folio_add_lru
from pinlab.kernel.mm.types import AddressSpace, MmStruct, VmArea

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

ReadFolio = Callable[["Kernel", AddressSpace, int, int], None]


def _mkey(mapping: AddressSpace) -> tuple[str, int]:
    return ("mapping", mapping.id)


def folio_try_get(k: Kernel, folio: int) -> bool:
    """v6.1 include/linux/page_ref.h folio_try_get: +1 unless the count is 0 (being freed)."""
    if int(k.mem.refcount[folio]) == 0:
        return False
    page_ref_add(k.mem, folio, 1)
    return True


def filemap_get_folio(
    k: Kernel, mapping: AddressSpace, index: int
) -> Generator[Yield, None, int | None]:
    """v6.1 mm/filemap.c filemap_get_folio (__filemap_get_folio, no FGP flags): +1 ref."""
    yield Point("page cache lookup", reads=frozenset({_mkey(mapping)}))
    folio = mapping.i_pages.get(index)
    if folio is None:
        return None
    yield Point("folio_try_get", writes=frozenset({("page", folio, "refcount")}))
    if not folio_try_get(k, folio):
        return None
    return folio


def find_get_page(
    k: Kernel, mapping: AddressSpace, index: int
) -> Generator[Yield, None, int | None]:
    """v6.1 include/linux/pagemap.h find_get_page: the page at `index` with +1 ref."""
    return (yield from filemap_get_folio(k, mapping, index))


def filemap_add_folio(
    k: Kernel, mapping: AddressSpace, folio: int, index: int, cpu: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 mm/filemap.c filemap_add_folio: lock, cache it (+nr refs), then folio_add_lru.

    Returns 0 or -EEXIST when the index is taken (v6.1 __filemap_add_folio).
    """
    from pinlab.kernel.errno import EEXIST

    k.mem.flags[folio] |= k.pf.mask("PG_locked")
    yield Point("page cache insert", writes=frozenset({_mkey(mapping)}))
    if index in mapping.i_pages:
        k.mem.flags[folio] &= ~k.pf.mask("PG_locked") & 0xFFFF_FFFF_FFFF_FFFF
        return -EEXIST
    nr = 1 if PageHuge(k, folio) else folio_nr_pages(k.mem, folio)
    page_ref_add(k.mem, folio, nr)
    k.mem.mapping[folio] = file_mapping_value(mapping.id)
    k.mem.index[folio] = index
    mapping.i_pages[index] = folio
    if not PageHuge(k, folio):
        yield from folio_add_lru(k, folio, cpu)
    return 0


def filemap_remove_folio(k: Kernel, mapping: AddressSpace, folio: int) -> None:
    """v6.1 mm/filemap.c filemap_remove_folio + filemap_free_folio (folio locked by caller)."""
    index = int(k.mem.index[folio])
    del mapping.i_pages[index]
    k.mem.mapping[folio] = 0
    refs = folio_nr_pages(k.mem, folio) if folio_test_large(k.mem, folio) else 1
    if PageHuge(k, folio):
        refs = 1
    folio_put_refs(k, folio, refs)


def folio_mark_dirty(k: Kernel, folio: int) -> bool:
    """v6.1 mm/page-writeback.c folio_mark_dirty: set PG_dirty; True if newly dirtied."""
    dirty = k.pf.mask("PG_dirty")
    was = bool(int(k.mem.flags[folio]) & dirty)
    k.mem.flags[folio] |= dirty
    return not was


def filemap_fault(
    k: Kernel, mapping: AddressSpace, index: int, cpu: int, read_folio: ReadFolio
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 mm/filemap.c filemap_fault: the cached page, or a new one read in; locked, +1 ref.

    Readahead is not modelled: a miss reads just the faulting page
    (v6.1 filemap_create_folio path).  Returns (vm_fault_t, page).
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
        new = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
        if new is None:
            return VM_FAULT_OOM, -1
        err = yield from filemap_add_folio(k, mapping, new, index, cpu)
        if err:
            folio_put(k, new)
            return (yield from filemap_fault(k, mapping, index, cpu, read_folio))
        read_folio(k, mapping, new, index)
        folio_unlock(k, new)
        folio = new
    yield from folio_lock(k, folio)
    if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id):
        folio_unlock(k, folio)
        folio_put(k, folio)
        return (yield from filemap_fault(k, mapping, index, cpu, read_folio))
    if index >= -(-mapping.i_size // PAGE_SIZE):
        folio_unlock(k, folio)
        folio_put(k, folio)
        return VM_FAULT_SIGBUS, -1
    return ret | VM_FAULT_LOCKED, folio


def filemap_map_pages(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, start_pgoff: int, end_pgoff: int
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
        folio = mapping.i_pages[index]
        flags = int(k.mem.flags[folio])
        if not flags & uptodate or flags & locked:
            continue
        addr = vma.vm_start + ((index - vma.vm_pgoff) << PAGE_SHIFT)
        yield Point("map_pages pte", writes=frozenset({("pte", mm.id, addr)}))
        if get_pte(mm.pgtable, addr) != 0:
            continue
        if addr == address:
            ret = VM_FAULT_NOPAGE
        page_ref_add(k.mem, folio, 1)
        yield from do_set_pte(k, mm, vma, folio, addr, False, 0)
    pte_unlock(k, mm, first_addr)
    return ret
