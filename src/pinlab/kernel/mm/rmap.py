"""Reverse-map accounting: mapcounts, page->mapping of anon pages, PageAnonExclusive.

v6.1 mm/rmap.c and include/linux/rmap.h.  Each function is one atomic step
on struct page; interleavable callers yield before calling it.  page->mapping
is encoded as a tagged "pointer": an anon page holds
``anon_vma_id << 2 | PAGE_MAPPING_ANON``, a page-cache page ``as_id << 2``.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.kernel.mm.memmap import (
    HUGETLB_PAGE_DTOR,
    PAGE_MAPPING_ANON,
    compound_head,
    folio_nr_pages,
    folio_order,
    folio_test_large,
)
from pinlab.kernel.mm.pgtable import PAGE_SHIFT
from pinlab.kernel.mm.types import VmArea

if TYPE_CHECKING:
    from pinlab.interleave import Yield
    from pinlab.kernel.state import Kernel

# v6.1 include/linux/page-flags.h PAGE_MAPPING_FLAGS
PAGE_MAPPING_FLAGS = 0x3


def anon_mapping_value(anon_vma: int) -> int:
    """The page->mapping value of an anon page of `anon_vma` (PAGE_MAPPING_ANON tagged)."""
    return anon_vma << 2 | PAGE_MAPPING_ANON


def file_mapping_value(as_id: int) -> int:
    """The page->mapping value of a page-cache page of address_space `as_id`."""
    return as_id << 2


def PageAnon(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/page-flags.h PageAnon: the folio's mapping has the anon bit."""
    return bool(int(k.mem.mapping[compound_head(k.mem, page)]) & PAGE_MAPPING_ANON)


def page_mapping_id(k: Kernel, page: int) -> int | None:
    """The address_space id of a page-cache page, None for anon or unmapped (page_mapping)."""
    value = int(k.mem.mapping[compound_head(k.mem, page)])
    if value == 0 or value & PAGE_MAPPING_FLAGS:
        return None
    return value >> 2


def PageHuge(k: Kernel, page: int) -> bool:
    """v6.1 mm/hugetlb.c PageHuge: a compound page with the hugetlb destructor."""
    head = compound_head(k.mem, page)
    return folio_test_large(k.mem, head) and int(k.mem.dtor[head + 1]) == HUGETLB_PAGE_DTOR


def linear_page_index(vma: VmArea, address: int) -> int:
    """v6.1 include/linux/pagemap.h linear_page_index."""
    return ((address - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff


def PageAnonExclusive(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/page-flags.h PageAnonExclusive (hugetlb: tested on the head)."""
    if PageHuge(k, page):
        page = compound_head(k.mem, page)
    return bool(int(k.mem.flags[page]) & k.pf.mask("PG_anon_exclusive"))


def SetPageAnonExclusive(k: Kernel, page: int) -> None:
    """v6.1 include/linux/page-flags.h SetPageAnonExclusive."""
    k.mem.flags[page] |= k.pf.mask("PG_anon_exclusive")


def ClearPageAnonExclusive(k: Kernel, page: int) -> None:
    """v6.1 include/linux/page-flags.h ClearPageAnonExclusive."""
    k.mem.flags[page] &= ~k.pf.mask("PG_anon_exclusive") & 0xFFFF_FFFF_FFFF_FFFF


def PageDoubleMap(k: Kernel, head: int) -> bool:
    """v6.1 include/linux/page-flags.h PageDoubleMap: the page[1] flag (profile.double_map_flag)."""
    name = k.profile.double_map_flag
    return name is not None and bool(int(k.mem.flags[head + 1]) & k.pf.mask(name))


def TestSetPageDoubleMap(k: Kernel, head: int) -> bool:
    """v6.1 TestSetPageDoubleMap: set it, return whether it was already set."""
    name = k.profile.double_map_flag
    assert name is not None
    was = PageDoubleMap(k, head)
    k.mem.flags[head + 1] |= k.pf.mask(name)
    return was


def TestClearPageDoubleMap(k: Kernel, head: int) -> bool:
    """v6.1 TestClearPageDoubleMap: clear it, return whether it was set."""
    name = k.profile.double_map_flag
    if name is None:
        return False
    was = PageDoubleMap(k, head)
    k.mem.flags[head + 1] &= ~k.pf.mask(name) & 0xFFFF_FFFF_FFFF_FFFF
    return was


def page_mapcount(k: Kernel, page: int) -> int:
    """v6.1 include/linux/mm.h page_mapcount; compound: mm/util.c __page_mapcount.

    v4.4 include/linux/mm.h:447 page_mapcount is the page's own _mapcount + 1: for
    a THP head its PMD mappings (kept here in page[1]), for a tail the gup
    references counted there (profile.thp_tail_refs_in_mapcount).
    """
    m = k.mem
    own = int(m.mapcount[page]) + 1
    head = compound_head(m, page)
    if not folio_test_large(m, head):
        return own
    if k.profile.thp_tail_refs_in_mapcount:
        return own + int(m.compound_mapcount[head + 1]) + 1 if page == head else own
    if not PageAnon(k, page) and not PageHuge(k, page):
        return own
    ret = own + int(m.compound_mapcount[head + 1]) + 1
    return ret - 1 if PageDoubleMap(k, head) else ret


def folio_mapcount(k: Kernel, folio: int) -> int:
    """v6.1 mm/util.c folio_mapcount: entire mappings plus per-page mappings.

    v4.4 (profile.thp_tail_refs_in_mapcount): a THP is mapped by PMDs only and its
    tails' _mapcount count gup references, so its mapcount is the head's.
    """
    m = k.mem
    if not folio_test_large(m, folio):
        return int(m.mapcount[folio]) + 1
    compound = int(m.compound_mapcount[folio + 1]) + 1
    if PageHuge(k, folio):
        return compound
    if k.profile.thp_tail_refs_in_mapcount:
        return compound + int(m.mapcount[folio]) + 1
    nr = folio_nr_pages(m, folio)
    total = compound + int((m.mapcount[folio : folio + nr] + 1).sum())
    if not PageAnon(k, folio):
        return total - compound * nr
    return total - nr if PageDoubleMap(k, folio) else total


def page_mapped(k: Kernel, page: int) -> bool:
    """v6.1 mm/util.c folio_mapped on the page's folio."""
    return folio_mapcount(k, compound_head(k.mem, page)) > 0


def __page_set_anon_rmap(k: Kernel, page: int, vma: VmArea, address: int, exclusive: bool) -> None:
    """v6.1 mm/rmap.c __page_set_anon_rmap: point mapping at the anon_vma, set exclusivity."""
    assert vma.anon_vma is not None, "anon_vma_prepare must run first"
    m = k.mem
    head = compound_head(m, page)
    if not int(m.mapping[head]) & PAGE_MAPPING_ANON:
        m.mapping[head] = anon_mapping_value(vma.anon_vma)
        m.index[head] = linear_page_index(vma, address)
    if exclusive and k.profile.page_anon_exclusive:
        SetPageAnonExclusive(k, page)


def page_add_new_anon_rmap(k: Kernel, page: int, vma: VmArea, address: int) -> None:
    """v6.1 mm/rmap.c page_add_new_anon_rmap: first mapping of a fresh anon page or THP."""
    m = k.mem
    m.flags[page] |= k.pf.mask("PG_swapbacked")
    if folio_test_large(m, page):
        m.compound_mapcount[page + 1] = 0
        if k.profile.exact_pincount(folio_order(m, page)):
            m.pincount[page + k.profile.pincount_page] = 0
    else:
        m.mapcount[page] = 0
    __page_set_anon_rmap(k, page, vma, address, True)


def hugepage_add_new_anon_rmap(k: Kernel, page: int, vma: VmArea, address: int) -> None:
    """v6.1 mm/rmap.c hugepage_add_new_anon_rmap: entire mapcount 0, pincount 0, exclusive."""
    m = k.mem
    m.compound_mapcount[page + 1] = 0
    if k.profile.exact_pincount(folio_order(m, page)):
        m.pincount[page + k.profile.pincount_page] = 0
    __page_set_anon_rmap(k, page, vma, address, True)


def page_dup_rmap(k: Kernel, page: int, compound: bool) -> None:
    """v6.1 include/linux/rmap.h __page_dup_rmap: one more mapping of the page or whole folio."""
    if compound:
        k.mem.compound_mapcount[page + 1] += 1
    else:
        k.mem.mapcount[page] += 1


def page_add_file_rmap(k: Kernel, page: int, vma: VmArea, compound: bool) -> None:
    """v6.1 mm/rmap.c page_add_file_rmap (PMD-mapped file THPs are not modelled)."""
    if compound and PageHuge(k, page):
        k.mem.compound_mapcount[page + 1] += 1
        return
    k.mem.mapcount[page] += 1


def page_remove_rmap(k: Kernel, page: int, vma: VmArea, compound: bool) -> None:
    """v6.1 mm/rmap.c page_remove_rmap: drop one PTE (or whole-folio) mapping.

    The last PMD mapping of a double-mapped anon THP also drops the extra
    per-subpage mapcounts (v6.1 page_remove_anon_compound_rmap).
    """
    m = k.mem
    if not compound:
        m.mapcount[page] -= 1
        return
    m.compound_mapcount[page + 1] -= 1
    last = int(m.compound_mapcount[page + 1]) < 0 and not PageHuge(k, page)
    if last and PageAnon(k, page) and TestClearPageDoubleMap(k, page):
        m.mapcount[page : page + folio_nr_pages(m, page)] -= 1


def page_move_anon_rmap(k: Kernel, page: int, vma: VmArea) -> None:
    """v6.1 mm/rmap.c page_move_anon_rmap: the folio now belongs to this VMA's anon_vma.

    v4.4 / v5.7 mm/rmap.c page_move_anon_rmap only re-points the mapping.
    """
    assert vma.anon_vma is not None
    head = compound_head(k.mem, page)
    k.mem.mapping[head] = anon_mapping_value(vma.anon_vma)
    if k.profile.page_anon_exclusive:
        SetPageAnonExclusive(k, page)


def _require_4_4(k: Kernel, function: str) -> None:
    """The reclaim-side rmap walks below are v4.4.178's; other kernels' differ (folios,
    page_vma_mapped_walk, TTU flags, the v6.4 pinned-page check) and are not modelled."""
    from pinlab.interleave import Unmodelled

    if k.profile.name != "4.4":
        raise Unmodelled(function, f"only the v4.4.178 walk is modelled, not {k.profile.name}'s")


def file_rmap_ptes(k: Kernel, page: int) -> list[tuple[int, int]]:
    """rmap_walk_file's hits (v4.4.178 mm/rmap.c:1729): (mm id, address) of each VMA of the
    page's file (its i_mmap) covering the page's index, in mm then VMA order."""
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
    from pinlab.kernel.mm.types import find_vma

    vma = find_vma(k.mms[mm_id], address)
    assert vma is not None
    return vma


def page_referenced(
    k: Kernel, page: int, is_locked: bool
) -> Generator[Yield, None, tuple[int, int]]:
    """v4.4.178 mm/rmap.c:950 page_referenced: (referenced, vm_flags).

    Unmapped -> 0; a file page the caller has not locked is trylocked (:973-977: taken ->
    1); over the file rmap, page_referenced_one (:851) tests and clears each
    PTE's young bit under its PTE lock (page_check_address, :866); a young one counts
    unless the VMA is VM_SEQ_READ (never set in the model) and adds its vm_flags; a
    VM_LOCKED VMA stops the walk with VM_LOCKED.  Anon pages are not modelled here.
    """
    from pinlab.interleave import Point, Unmodelled

    _require_4_4(k, "page_referenced")
    from pinlab.kernel.mm.page_alloc import order_keys

    # page_mapped and PageAnon read compound_head and folio_order too (order_keys)
    reads = page_keys_of(page, ("mapcount", "mapping", "index")) | order_keys(page)
    yield Point("page_referenced", reads=reads)
    if not page_mapped(k, page):
        return 0, 0
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
    referenced, vm_flags = yield from _page_referenced_walk(k, page, unlock)
    if not is_locked:
        k.mem.flags[page] &= ~k.pf.mask("PG_locked") & 0xFFFF_FFFF_FFFF_FFFF
    return referenced, vm_flags


def _page_referenced_walk(
    k: Kernel, page: int, then_writes: frozenset[Hashable]
) -> Generator[Yield, None, tuple[int, int]]:
    """rmap_walk_file with page_referenced_one (v4.4.178 mm/rmap.c:851); ``then_writes``:
    what the caller writes after the walk, before it yields again (footprint only)."""
    from pinlab.interleave import Point
    from pinlab.kernel.mm.locking import pte_lock, pte_unlock
    from pinlab.kernel.mm.pgtable import (
        get_pte,
        pte_footprint,
        pte_mkold,
        pte_pfn,
        pte_present,
        pte_young,
        set_pte_at,
    )
    from pinlab.kernel.mm.types import VM_LOCKED

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
        pte_unlock(k, mm, address)
    return referenced, vm_flags


def page_keys_of(page: int, fields: tuple[str, ...]) -> frozenset[Hashable]:
    """Footprint keys of some fields of one struct page."""
    return frozenset(("page", page, f) for f in fields)


# v4.4.178 mm/rmap.c try_to_unmap results (include/linux/rmap.h:281-284)
SWAP_SUCCESS = 0
SWAP_AGAIN = 1
SWAP_FAIL = 2
SWAP_MLOCK = 3


def try_to_unmap(k: Kernel, page: int) -> Generator[Yield, None, int]:
    """v4.4.178 mm/rmap.c:1550 try_to_unmap(TTU_UNMAP) of a locked page-cache page.

    Over the file rmap, try_to_unmap_one (:1319) under each PTE lock: VM_LOCKED ->
    SWAP_MLOCK (mlock_vma_page is not modelled: raised); a young PTE is made old and fails
    the walk, SWAP_FAIL (:1381-1385: without TTU_IGNORE_ACCESS, and kswapd passes TTU_UNMAP,
    mm/vmscan.c:1631); else the PTE is cleared and flushed, a dirty one moves its
    dirty bit to the page (set_page_dirty, :1430), page_remove_rmap and the mapping's
    reference dropped (:1497-1498).  The walk stops once the page is unmapped; SWAP_SUCCESS
    when nothing maps it any more (:1583).  TTU_BATCH_FLUSH's deferred flush is the same
    here (no CPU holds a stale TLB entry in the model).
    """
    from pinlab.interleave import Point, Unmodelled
    from pinlab.kernel.mm.filemap import folio_mark_dirty
    from pinlab.kernel.mm.locking import pte_lock, pte_unlock
    from pinlab.kernel.mm.page_alloc import order_keys
    from pinlab.kernel.mm.page_ref import folio_put
    from pinlab.kernel.mm.pgtable import (
        get_pte,
        pte_dirty,
        pte_footprint,
        pte_mkold,
        pte_pfn,
        pte_present,
        pte_young,
        set_pte_at,
    )
    from pinlab.kernel.mm.types import VM_LOCKED

    _require_4_4(k, "try_to_unmap")
    if PageAnon(k, page):
        raise Unmodelled("try_to_unmap", "an anonymous page (rmap_walk_anon)")
    ret = SWAP_AGAIN
    for mm_id, address in file_rmap_ptes(k, page):
        mm = k.mms[mm_id]
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
