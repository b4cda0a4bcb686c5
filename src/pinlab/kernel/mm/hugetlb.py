"""hugetlb mappings: faults, COW, fork copy and unmap of 2 MiB / 1 GiB pages (v6.1 mm/hugetlb.c).

A huge PTE lives in PageTable.pmd (2 MiB) or PageTable.pud (1 GiB).  Huge
page reservations (resv_huge_pages) and PMD sharing are not modelled.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.locking import folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.page_alloc import alloc_hugetlb_folio
from pinlab.kernel.mm.page_ref import get_page, put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_DIRTY,
    _PAGE_PSE,
    _PAGE_RW,
    HPAGE_PMD_ORDER,
    PAGE_SHIFT,
    PMD_SHIFT,
    PUD_SHIFT,
    pfn_pte,
    pte_pfn,
)
from pinlab.kernel.mm.rmap import (
    ClearPageAnonExclusive,
    PageAnon,
    PageAnonExclusive,
    hugepage_add_new_anon_rmap,
    page_dup_rmap,
    page_mapcount,
    page_move_anon_rmap,
    page_remove_rmap,
)
from pinlab.kernel.mm.types import (
    VM_HUGETLB,
    VM_MAYSHARE,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    VmArea,
    is_cow_mapping,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def is_vm_hugetlb_page(vma: VmArea) -> bool:
    """v6.1 include/linux/hugetlb_inline.h is_vm_hugetlb_page."""
    return bool(vma.vm_flags & VM_HUGETLB)


def huge_page_order(k: Kernel, vma: VmArea) -> int:
    """v6.1 include/linux/hugetlb.h huge_page_order(hstate_vma(vma))."""
    assert vma.vm_file is not None
    return k.mappings[vma.vm_file].huge_order


def _shift(order: int) -> int:
    return PMD_SHIFT if order == HPAGE_PMD_ORDER else PUD_SHIFT


def huge_ptep_get(k: Kernel, mm: MmStruct, order: int, haddr: int) -> int:
    """v6.1 huge_ptep_get: the huge entry at the PMD (2 MiB) or PUD (1 GiB) level."""
    table = mm.pgtable.pmd if order == HPAGE_PMD_ORDER else mm.pgtable.pud
    return table.get(haddr >> _shift(order), 0)


def set_huge_pte_at(k: Kernel, mm: MmStruct, order: int, haddr: int, entry: int) -> None:
    """v6.1 set_huge_pte_at (entry 0 clears it, as huge_ptep_get_and_clear)."""
    table = mm.pgtable.pmd if order == HPAGE_PMD_ORDER else mm.pgtable.pud
    slot = haddr >> _shift(order)
    if entry:
        table[slot] = entry
    else:
        table.pop(slot, None)


def make_huge_pte(k: Kernel, vma: VmArea, page: int, writable: bool) -> int:
    """v6.1 mm/hugetlb.c make_huge_pte: young; writable+dirty, or write-protected."""
    from pinlab.kernel.mm.memory import vma_page_prot

    entry = pfn_pte(page, vma_page_prot(k, vma)) | _PAGE_PSE
    if writable:
        return entry | _PAGE_RW | _PAGE_DIRTY
    return entry & ~_PAGE_RW


def vma_hugecache_offset(vma: VmArea, order: int, haddr: int) -> int:
    """v6.1 mm/hugetlb.c vma_hugecache_offset: the file index in huge pages."""
    return ((haddr - vma.vm_start) >> (order + PAGE_SHIFT)) + (vma.vm_pgoff >> order)


def hugetlb_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/hugetlb.c hugetlb_fault: no page -> hugetlb_no_page; write/unshare -> hugetlb_wp."""
    from pinlab.kernel.mm.memory import FAULT_FLAG_UNSHARE, FAULT_FLAG_WRITE

    order = huge_page_order(k, vma)
    haddr = address & ~((1 << (order + PAGE_SHIFT)) - 1)
    key = ("pte", mm.id, haddr)
    yield from pte_lock(k, mm, haddr)
    yield Point("hugetlb pte", reads=frozenset({key}), writes=frozenset({key}))
    entry = huge_ptep_get(k, mm, order, haddr)
    if entry == 0:
        pte_unlock(k, mm, haddr)
        return (yield from hugetlb_no_page(k, mm, vma, haddr, order, flags))
    ret = 0
    if flags & (FAULT_FLAG_WRITE | FAULT_FLAG_UNSHARE) and not entry & _PAGE_RW:
        ret = hugetlb_wp(k, mm, vma, haddr, order, flags)
    elif flags & FAULT_FLAG_WRITE:
        set_huge_pte_at(k, mm, order, haddr, entry | _PAGE_DIRTY)
    pte_unlock(k, mm, haddr)
    return ret


def hugetlb_no_page(
    k: Kernel, mm: MmStruct, vma: VmArea, haddr: int, order: int, flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/hugetlb.c hugetlb_no_page: page-cache page (shared) or new anon page (private)."""
    from pinlab.kernel.mm.filemap import filemap_add_folio, filemap_get_folio, folio_mark_dirty
    from pinlab.kernel.mm.memory import (
        FAULT_FLAG_WRITE,
        VM_FAULT_SIGBUS,
        anon_vma_prepare,
    )

    assert vma.vm_file is not None
    mapping = k.mappings[vma.vm_file]
    idx = vma_hugecache_offset(vma, order, haddr)
    if idx >= mapping.i_size >> (order + PAGE_SHIFT):
        return VM_FAULT_SIGBUS
    nr = 1 << order
    anon = False
    page = yield from filemap_get_folio(k, mapping, idx)
    if page is None:
        page = alloc_hugetlb_folio(k, order)
        if page is None:
            # alloc_huge_page -> -ENOSPC -> vmf_error: VM_FAULT_SIGBUS
            return VM_FAULT_SIGBUS
        k.mem.data[page : page + nr] = 0
        k.mem.flags[page] |= k.pf.mask("PG_uptodate")
        if vma.vm_flags & VM_MAYSHARE:
            yield from filemap_add_folio(k, mapping, page, idx)
            folio_mark_dirty(k, page)
            folio_unlock(k, page)
        else:
            anon = True
    yield from pte_lock(k, mm, haddr)
    yield Point("hugetlb install", writes=frozenset({("pte", mm.id, haddr)}))
    if huge_ptep_get(k, mm, order, haddr) != 0:
        pte_unlock(k, mm, haddr)
        put_page(k, page)
        return 0
    if anon:
        anon_vma_prepare(k, vma)
        hugepage_add_new_anon_rmap(k, page, vma, haddr)
    else:
        page_dup_rmap(k, page, True)
    writable = bool(vma.vm_flags & VM_WRITE and vma.vm_flags & VM_SHARED)
    set_huge_pte_at(k, mm, order, haddr, make_huge_pte(k, vma, page, writable))
    ret = 0
    if flags & FAULT_FLAG_WRITE and not vma.vm_flags & VM_SHARED:
        ret = hugetlb_wp(k, mm, vma, haddr, order, flags)
    pte_unlock(k, mm, haddr)
    return ret


def hugetlb_wp(k: Kernel, mm: MmStruct, vma: VmArea, haddr: int, order: int, flags: int) -> int:
    """v6.1 mm/hugetlb.c hugetlb_wp (PTL held): reuse when mapped once and anon, else copy.

    The reuse test is page_mapcount == 1, not PageAnonExclusive, even in v6.1.
    """
    from pinlab.kernel.mm.memory import (
        FAULT_FLAG_UNSHARE,
        VM_FAULT_SIGBUS,
        VM_FAULT_SIGSEGV,
        anon_vma_prepare,
    )

    unshare = bool(flags & FAULT_FLAG_UNSHARE)
    if not unshare and not vma.vm_flags & VM_WRITE:
        return VM_FAULT_SIGSEGV
    pte = huge_ptep_get(k, mm, order, haddr)
    if vma.vm_flags & VM_MAYSHARE:
        if not unshare:
            set_huge_pte_at(k, mm, order, haddr, pte | _PAGE_RW | _PAGE_DIRTY)
        return 0
    old_page = pte_pfn(pte)
    if page_mapcount(k, old_page) == 1 and PageAnon(k, old_page):
        if not (k.profile.page_anon_exclusive and PageAnonExclusive(k, old_page)):
            page_move_anon_rmap(k, old_page, vma)
        if not unshare:
            set_huge_pte_at(k, mm, order, haddr, pte | _PAGE_RW | _PAGE_DIRTY)
        return 0
    get_page(k, old_page)
    new_page = alloc_hugetlb_folio(k, order)
    if new_page is None:
        put_page(k, old_page)
        return VM_FAULT_SIGBUS
    nr = 1 << order
    k.mem.data[new_page : new_page + nr] = k.mem.data[old_page : old_page + nr]
    k.mem.flags[new_page] |= k.pf.mask("PG_uptodate")
    anon_vma_prepare(k, vma)
    page_remove_rmap(k, old_page, vma, True)
    hugepage_add_new_anon_rmap(k, new_page, vma, haddr)
    set_huge_pte_at(k, mm, order, haddr, make_huge_pte(k, vma, new_page, not unshare))
    put_page(k, old_page)
    put_page(k, old_page)
    return 0


def copy_hugetlb_page_range(
    k: Kernel, dst: MmStruct, src: MmStruct, dst_vma: VmArea, src_vma: VmArea
) -> Generator[Yield, None, int]:
    """v6.1 mm/hugetlb.c copy_hugetlb_page_range: share, or copy a maybe-pinned anon page now."""
    from pinlab.kernel.errno import ENOMEM
    from pinlab.kernel.mm.fork_copy import fork_must_copy
    from pinlab.kernel.mm.memmap import compound_head

    order = huge_page_order(k, src_vma)
    size = 1 << (order + PAGE_SHIFT)
    cow = is_cow_mapping(src_vma.vm_flags)
    for haddr in range(src_vma.vm_start, src_vma.vm_end, size):
        yield Point("copy hugetlb pte", reads=frozenset({("pte", src.id, haddr)}))
        entry = huge_ptep_get(k, src, order, haddr)
        if entry == 0:
            continue
        page = compound_head(k.mem, pte_pfn(entry))
        get_page(k, page)
        if not PageAnon(k, page):
            page_dup_rmap(k, page, True)
        elif (yield from fork_must_copy(k, src, src_vma, page)):
            new = alloc_hugetlb_folio(k, order)
            if new is None:
                put_page(k, page)
                return -ENOMEM
            nr = 1 << order
            k.mem.data[new : new + nr] = k.mem.data[page : page + nr]
            k.mem.flags[new] |= k.pf.mask("PG_uptodate")
            put_page(k, page)
            hugepage_add_new_anon_rmap(k, new, dst_vma, haddr)
            set_huge_pte_at(k, dst, order, haddr, make_huge_pte(k, dst_vma, new, True))
            continue
        else:
            if k.profile.page_anon_exclusive:
                ClearPageAnonExclusive(k, page)
            page_dup_rmap(k, page, True)
        if cow:
            entry &= ~_PAGE_RW
            set_huge_pte_at(k, src, order, haddr, entry)
        set_huge_pte_at(k, dst, order, haddr, entry)
    return 0


def unmap_hugepage_range(k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int) -> None:
    """v6.1 mm/hugetlb.c __unmap_hugepage_range: clear, dirty->set_page_dirty, rmap, put."""
    from pinlab.kernel.mm.filemap import folio_mark_dirty

    order = huge_page_order(k, vma)
    size = 1 << (order + PAGE_SHIFT)
    for haddr in range(start, end, size):
        entry = huge_ptep_get(k, mm, order, haddr)
        if entry == 0:
            continue
        set_huge_pte_at(k, mm, order, haddr, 0)
        page = pte_pfn(entry)
        if entry & _PAGE_DIRTY:
            folio_mark_dirty(k, page)
        page_remove_rmap(k, page, vma, True)
        put_page(k, page)
