"""Unmapping user pages: zap_pte_range and the mmu_gather batch (v6.1 mm/memory.c, mm/mmu_gather.c).

The mapcount drops when the PTE is cleared; the PTE's page reference drops
only after the TLB flush (tlb_finish_mmu), so a caller sees both moments.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.filemap import folio_mark_dirty
from pinlab.kernel.mm.huge_memory import split_huge_pmd, zap_huge_pmd
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.memory import pte_key, vm_normal_page
from pinlab.kernel.mm.page_ref import put_page
from pinlab.kernel.mm.pgtable import (
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    get_pte,
    pte_dirty,
    pte_present,
    pte_young,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import PageAnon, page_remove_rmap
from pinlab.kernel.mm.types import MmStruct, VmArea

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def mark_page_accessed(k: Kernel, folio: int) -> None:
    """v6.1 mm/swap.c folio_mark_accessed: referenced first, then active if on the LRU."""
    ref = k.pf.mask("PG_referenced")
    flags = int(k.mem.flags[folio])
    if not flags & ref:
        k.mem.flags[folio] |= ref
    elif flags & k.pf.mask("PG_lru") and not flags & k.pf.mask("PG_active"):
        k.mem.flags[folio] = (flags | k.pf.mask("PG_active")) & ~ref


def zap_pte_range(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    start: int,
    end: int,
    even_cows: bool,
    gather: list[int],
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c zap_pte_range: clear PTEs, dirty file pages, drop rmaps, gather pages.

    `even_cows` False skips anon pages (truncate's should_zap_page).
    """
    table = mm.pgtable.pte.get(start >> PMD_SHIFT)
    if table is None or not table.any():
        return
    yield from pte_lock(k, mm, start)
    for addr in range(start, end, PAGE_SIZE):
        pte = get_pte(mm.pgtable, addr)
        if not pte or not pte_present(pte):
            continue
        page = vm_normal_page(k, vma, addr, pte)
        if page is not None and not even_cows and PageAnon(k, page):
            continue
        yield Point("zap pte", writes=frozenset({pte_key(mm, addr), ("page", page, "mapcount")}))
        set_pte_at(mm.pgtable, addr, 0)
        if page is None:
            continue
        if not PageAnon(k, page):
            folio = compound_head(k.mem, page)
            if pte_dirty(pte):
                folio_mark_dirty(k, folio)
            if pte_young(pte):
                mark_page_accessed(k, folio)
        page_remove_rmap(k, page, vma, False)
        gather.append(page)
    pte_unlock(k, mm, start)


def unmap_page_range(
    k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int, even_cows: bool, gather: list[int]
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c unmap_single_vma: hugetlb, huge PMDs (split if partial), PTEs."""
    from pinlab.kernel.mm.hugetlb import is_vm_hugetlb_page, unmap_hugepage_range

    start = max(start, vma.vm_start)
    end = min(end, vma.vm_end)
    if start >= end:
        return
    if is_vm_hugetlb_page(vma):
        yield Point("unmap hugetlb", writes=frozenset({("pte", mm.id, start)}))
        unmap_hugepage_range(k, mm, vma, start, end)
        return
    addr = start
    while addr < end:
        slot_end = min(end, ((addr >> PMD_SHIFT) + 1) << PMD_SHIFT)
        slot = addr >> PMD_SHIFT
        if slot in mm.pgtable.pmd:
            haddr = addr & ~(PMD_SIZE - 1)
            if addr == haddr and slot_end - addr == PMD_SIZE:
                page = zap_huge_pmd(k, mm, vma, haddr)
                if page is not None:
                    gather.append(page)
                addr = slot_end
                continue
            yield from split_huge_pmd(k, mm, vma, haddr)
        yield from zap_pte_range(k, mm, vma, addr, slot_end, even_cows, gather)
        addr = slot_end


def tlb_finish_mmu(k: Kernel, gather: list[int]) -> Generator[Yield, None, None]:
    """v6.1 mm/mmu_gather.c tlb_finish_mmu: after the flush, drop each gathered page's ref."""
    for page in gather:
        folio = compound_head(k.mem, page)
        yield Point("tlb put_page", writes=frozenset({("page", folio, "refcount")}))
        put_page(k, page)
    gather.clear()


def zap_page_range(
    k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int, cpu: int = 0
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c zap_page_range_single (MADV_DONTNEED): drain LRU batch, zap, flush."""
    from pinlab.kernel.mm.swap import lru_add_drain

    yield from lru_add_drain(k, cpu)
    gather: list[int] = []
    yield from unmap_page_range(k, mm, vma, start, end, True, gather)
    yield from tlb_finish_mmu(k, gather)
