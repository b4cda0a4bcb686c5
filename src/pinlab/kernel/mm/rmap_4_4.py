"""The v4.4.178 file rmap walks reclaim needs: page_referenced and try_to_unmap over a
page's i_mmap mappings (mm/rmap.c).  Other profiles raise Unmodelled."""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.mm.filemap import folio_mark_dirty
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.page_alloc import order_keys
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import (
    PAGE_SHIFT,
    get_pte,
    pte_dirty,
    pte_footprint,
    pte_mkold,
    pte_pfn,
    pte_present,
    pte_young,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import (
    PageAnon,
    page_mapcount,
    page_mapped,
    page_mapping_id,
    page_remove_rmap,
)
from pinlab.kernel.mm.types import VM_LOCKED, VmArea, find_vma

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def _require_4_4(k: Kernel, function: str) -> None:
    """The reclaim-side rmap walks below are v4.4.178's; other kernels' differ (folios,
    page_vma_mapped_walk, TTU flags, the v6.4 pinned-page check) and are not modelled."""

    if k.profile.consumers != "4.4":
        raise Unmodelled(function, f"only the v4.4.178 walk is modelled, not {k.profile.name}'s")


def file_rmap_ptes(k: Kernel, page: int) -> list[tuple[int, int]]:
    """rmap_walk_file's hits (v4.4.178 mm/rmap.c:1729): (mm id, address) of each VMA of the
    page's file (its i_mmap) covering the page's index, in mm then VMA order (the kernel's
    interval tree orders by vm_pgoff, then insertion: VMAs are not numbered by insertion
    in the model)."""
    as_id = page_mapping_id(k, page)
    index = int(k.mem.index[page])
    hits: list[tuple[int, int]] = []
    for mm in k.mms.values():
        for vma in mm.vmas:
            pages = (vma.vm_end - vma.vm_start) >> PAGE_SHIFT
            if vma.vm_file == as_id and vma.vm_pgoff <= index < vma.vm_pgoff + pages:
                hits.append((mm.id, vma.vm_start + ((index - vma.vm_pgoff) << PAGE_SHIFT)))
    return hits


def _vma_at(k: Kernel, mm_id: int, address: int) -> VmArea:

    mm = k.mms.get(mm_id)
    vma = None if mm is None else find_vma(mm, address)
    if vma is None or vma.vm_start > address:
        # the kernel holds i_mmap_rwsem over the walk, which munmap's unlink_file_vma
        # needs (v4.4.178 mm/mmap.c:255-265); the model does not have that lock yet
        raise Unmodelled("rmap_walk_file", "a VMA of the walk unmapped meanwhile")
    return vma


def page_referenced(
    k: Kernel, page: int, is_locked: bool
) -> Generator[Yield, None, tuple[int, int]]:
    """v4.4.178 mm/rmap.c:950 page_referenced: (referenced, vm_flags).

    Unmapped -> 0; a file page the caller has not locked is trylocked (:973-977: taken ->
    1); over the file rmap, page_referenced_one (:851) tests and clears each
    PTE's young bit under its PTE lock (page_check_address, :888); a young one counts
    unless the VMA is VM_SEQ_READ (never set in the model) and adds its vm_flags; a
    VM_LOCKED VMA stops the walk with VM_LOCKED.  Anon pages are not modelled here.
    """

    _require_4_4(k, "page_referenced")

    # page_mapped and PageAnon read compound_head and folio_order too (order_keys)
    reads = page_keys_of(page, ("mapcount", "mapping", "index")) | order_keys(page)
    yield Point("page_referenced", reads=reads)
    if not page_mapped(k, page):
        return 0, 0
    mapcount = page_mapcount(k, page)  # :958 pra.mapcount
    if PageAnon(k, page):
        raise Unmodelled("page_referenced", "an anonymous page (rmap_walk_anon)")
    if not is_locked:
        keys = page_keys_of(page, ("flags",))
        yield Point("page_referenced trylock_page", reads=keys | reads, writes=keys)
        if int(k.mem.flags[page]) & k.pf.mask("PG_locked"):
            return 1, 0
        k.mem.flags[page] |= k.pf.mask("PG_locked")
    # the page is unlocked after the walk's last step, before the caller yields again
    unlock = frozenset() if is_locked else page_keys_of(page, ("flags",))
    referenced, vm_flags = yield from _page_referenced_walk(k, page, unlock, mapcount)
    if not is_locked:
        k.mem.flags[page] &= ~k.pf.mask("PG_locked") & 0xFFFF_FFFF_FFFF_FFFF
    return referenced, vm_flags


def _page_referenced_walk(
    k: Kernel, page: int, then_writes: frozenset[Hashable], mapcount: int
) -> Generator[Yield, None, tuple[int, int]]:
    """rmap_walk_file with page_referenced_one (v4.4.178 mm/rmap.c:851): the walk stops once
    it has met as many mappings as page_mapcount counted before it (:922-924), so a mapping
    a fault adds meanwhile can take the place of one counted.  Which one depends on the
    walk's order: the model's is file_rmap_ptes' (mm, then address), the kernel's the
    i_mmap interval tree's (vm_pgoff, then insertion).  ``then_writes``: what the caller
    writes after the walk, before it yields again (footprint only)."""

    referenced, vm_flags = 0, 0
    for mm_id, address in file_rmap_ptes(k, page):
        mm = k.mms[mm_id]
        yield from pte_lock(k, mm, address)
        key = pte_footprint(mm_id, address)
        yield Point("page_referenced_one", reads=key | then_writes, writes=key | then_writes)
        pte = get_pte(mm.pgtable, address)
        if pte_present(pte) and pte_pfn(pte) == page:
            vma = _vma_at(k, mm_id, address)
            if vma.vm_flags & VM_LOCKED:
                pte_unlock(k, mm, address)
                return referenced, vm_flags | VM_LOCKED
            if pte_young(pte):
                set_pte_at(mm.pgtable, address, pte_mkold(pte))
                referenced += 1
                vm_flags |= vma.vm_flags
            mapcount -= 1
        pte_unlock(k, mm, address)
        if not mapcount:
            break
    return referenced, vm_flags


def page_keys_of(page: int, fields: tuple[str, ...]) -> frozenset[Hashable]:
    """Footprint keys of some fields of one struct page."""
    return frozenset(("page", page, f) for f in fields)


# v4.4.178 mm/rmap.c try_to_unmap results (include/linux/rmap.h:271-274)
SWAP_SUCCESS = 0
SWAP_AGAIN = 1
SWAP_FAIL = 2
SWAP_MLOCK = 3


def unmap_refused_hook(k: Kernel, page: int) -> Generator[Yield, None, bool]:
    """The unmap_refused design hook on entry to try_to_unmap_one, before the PTE lock."""
    hook = k.hooks.unmap_refused
    if hook is None:
        return False
    yield Point(
        "try_to_unmap_one:design", reads=page_keys_of(page, ("flags",)) | {("design", page)}
    )
    return hook(k, page)


def try_to_unmap(k: Kernel, page: int) -> Generator[Yield, None, int]:
    """v4.4.178 mm/rmap.c:1550 try_to_unmap(TTU_UNMAP) of a locked page-cache page.

    Over the file rmap, try_to_unmap_one (:1319) under each PTE lock: VM_LOCKED ->
    SWAP_MLOCK (mlock_vma_page is not modelled: raised); a young PTE is made old and fails
    the walk, SWAP_FAIL (:1381-1385: without TTU_IGNORE_ACCESS, and kswapd passes TTU_UNMAP,
    mm/vmscan.c:1631); else the PTE is cleared and flushed, a dirty one moves its
    dirty bit to the page (set_page_dirty, :1430), page_remove_rmap and the mapping's
    reference dropped (:1498-1499).  The walk stops once the page is unmapped; SWAP_SUCCESS
    when nothing maps it any more (:1575).  TTU_BATCH_FLUSH's deferred flush is the same
    here (no CPU holds a stale TLB entry in the model).
    """

    _require_4_4(k, "try_to_unmap")
    if PageAnon(k, page):
        raise Unmodelled("try_to_unmap", "an anonymous page (rmap_walk_anon)")
    ret = SWAP_AGAIN
    for mm_id, address in file_rmap_ptes(k, page):
        mm = k.mms[mm_id]
        if (yield from unmap_refused_hook(k, page)):
            ret = SWAP_FAIL
            break
        yield from pte_lock(k, mm, address)
        key = pte_footprint(mm_id, address)
        # the page is locked and isolated by reclaim, which holds a reference: no free here
        writes = key | page_keys_of(page, ("mapcount", "refcount"))
        # page_mapped reads compound_head and folio_order (order_keys)
        reads = writes | page_keys_of(page, ("flags",)) | order_keys(page)
        yield Point("try_to_unmap_one", reads=reads, writes=writes)
        pte = get_pte(mm.pgtable, address)
        if not pte_present(pte) or pte_pfn(pte) != page:
            pte_unlock(k, mm, address)
            continue
        if _vma_at(k, mm_id, address).vm_flags & VM_LOCKED:
            raise Unmodelled("try_to_unmap_one", "a VM_LOCKED VMA (mlock_vma_page, SWAP_MLOCK)")
        if pte_young(pte):
            set_pte_at(mm.pgtable, address, pte_mkold(pte))
            pte_unlock(k, mm, address)
            ret = SWAP_FAIL
            break
        set_pte_at(mm.pgtable, address, 0)
        if pte_dirty(pte):  # set_page_dirty, under the PTE lock; then the rest of this step
            yield from folio_mark_dirty(k, page, reads, writes)
        page_remove_rmap(k, page, _vma_at(k, mm_id, address), False)
        folio_put(k, page)
        pte_unlock(k, mm, address)
        if not page_mapped(k, page):
            break
    if not page_mapped(k, page):
        return SWAP_SUCCESS
    return ret
