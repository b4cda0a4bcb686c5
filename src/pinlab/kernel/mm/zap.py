"""Unmapping user pages: zap_pte_range and the mmu_gather batch (v6.1 mm/memory.c, mm/mmu_gather.c).

The mapcount drops when the PTE is cleared; the PTE's page reference drops
only after the TLB flush (tlb_finish_mmu), so a caller sees both moments.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.arch.x86.mm.tlb import flush_tlb_mm_range
from pinlab.kernel.mm.filemap import folio_mark_dirty, folio_put_footprint
from pinlab.kernel.mm.huge_memory import split_huge_pmd, zap_huge_pmd
from pinlab.kernel.mm.huge_memory_4_4 import split_huge_page_pmd
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head, peek_head
from pinlab.kernel.mm.memory import vm_normal_page
from pinlab.kernel.mm.page_ref import put_page
from pinlab.kernel.mm.pgtable import (
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    get_pte,
    pte_dirty,
    pte_footprint,
    pte_key,
    pte_present,
    pte_young,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import PageAnon, page_remove_rmap
from pinlab.kernel.mm.swap import folio_mark_accessed, lru_add_drain
from pinlab.kernel.mm.types import MmStruct, VmArea

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def zap_pte_range(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    start: int,
    end: int,
    even_cows: bool,
    gather: list[int],
    cpu: int = 0,
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c zap_pte_range: clear PTEs, dirty file pages, drop rmaps, gather pages.

    `even_cows` False skips anon pages (truncate's should_zap_page).  A dirty
    file page forces a TLB flush that frees the gathered pages once the PTE
    lock is dropped (force_flush -> tlb_flush_mmu).
    """
    table = mm.pgtable.pte.get(start >> PMD_SHIFT)
    if table is None or not table.any():
        return
    force_flush = False
    yield from pte_lock(k, mm, start)
    for addr in range(start, end, PAGE_SIZE):
        yield Point(
            "zap pte",
            reads=pte_footprint(mm.id, addr) | _zap_reads(k, mm, vma, addr),
            writes=frozenset({pte_key(mm.id, addr)}),
        )
        pte = get_pte(mm.pgtable, addr)
        if not pte or not pte_present(pte):
            continue
        page = vm_normal_page(k, vma, addr, pte)
        if page is not None and not even_cows and PageAnon(k, page):
            continue
        set_pte_at(mm.pgtable, addr, 0)
        if page is None:
            continue
        folio = compound_head(k.mem, page)
        if not PageAnon(k, page):
            if pte_dirty(pte):
                force_flush = True
                yield from folio_mark_dirty(k, folio)
            if pte_young(pte):
                yield from folio_mark_accessed(k, folio, cpu)
        yield Point("page_remove_rmap", writes=frozenset({("page", page, "mapcount")}))
        page_remove_rmap(k, page, vma, False)
        gather.append(page)
    pte_unlock(k, mm, start)
    if force_flush:
        yield from tlb_flush_mmu(k, mm, gather, cpu)


def _zap_reads(k: Kernel, mm: MmStruct, vma: VmArea, addr: int) -> frozenset[Hashable]:
    """What zapping the PTE at ``addr`` reads of the page it maps (the PTE as it is now):
    PageAnon and compound_head (the page's head, the folio's mapping)."""
    pte = get_pte(mm.pgtable, addr)
    page = vm_normal_page(k, vma, addr, pte) if pte_present(pte) else None
    if page is None:
        return frozenset()
    return frozenset({("page", page, "head"), ("page", peek_head(k.mem, page), "mapping")})


def unmap_page_range(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    start: int,
    end: int,
    even_cows: bool,
    gather: list[int],
    cpu: int = 0,
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c unmap_single_vma: hugetlb, huge PMDs (split if partial), PTEs."""
    from pinlab.kernel.mm.hugetlb import is_vm_hugetlb_page
    from pinlab.kernel.mm.hugetlb_range import unmap_hugepage_range

    start = max(start, vma.vm_start)
    end = min(end, vma.vm_end)
    if start >= end:
        return
    if is_vm_hugetlb_page(vma):
        yield from unmap_hugepage_range(k, mm, vma, start, end, gather)
        return
    addr = start
    while addr < end:
        slot_end = min(end, ((addr >> PMD_SHIFT) + 1) << PMD_SHIFT)
        slot = addr >> PMD_SHIFT
        if slot in mm.pgtable.pmd:
            haddr = addr & ~(PMD_SIZE - 1)
            if addr == haddr and slot_end - addr == PMD_SIZE:
                page = yield from zap_huge_pmd(k, mm, vma, haddr)
                if page is not None:
                    gather.append(page)
                if slot not in mm.pgtable.pte:
                    addr = slot_end
                    continue
            elif k.profile.thp_tail_refs_in_mapcount:
                # v4.4 mm/memory.c:1239 zap_pmd_range splits the whole THP
                yield from split_huge_page_pmd(k, mm, vma, haddr)
            else:
                yield from split_huge_pmd(k, mm, vma, haddr)
        yield from zap_pte_range(k, mm, vma, addr, slot_end, even_cows, gather, cpu)
        addr = slot_end


def tlb_flush_mmu(
    k: Kernel, mm: MmStruct, gather: list[int], cpu: int = 0
) -> Generator[Yield, None, None]:
    """v6.1 mm/mmu_gather.c tlb_batch_pages_flush: after the TLB flush, release gathered pages.

    Each batch goes through free_pages_and_swap_cache (v6.1 mm/swap_state.c),
    which drains this CPU's LRU batches before dropping the references.  With x86's
    own gup-fast (v4.4 mm/memory.c:261 tlb_flush_mmu: tlb_flush_mmu_tlbonly's flush,
    then tlb_flush_mmu_free) the flush first waits for the mm's CPUs to take its IPI.
    """
    if not gather:
        return
    if k.profile.gup_fast == "x86":
        yield from flush_tlb_mm_range(k, mm)
    yield from lru_add_drain(k, cpu)
    for page in gather:
        folio = peek_head(k.mem, page)
        yield Point("tlb put_page", writes=folio_put_footprint(k, folio))
        put_page(k, page)
    gather.clear()


def tlb_finish_mmu(
    k: Kernel, mm: MmStruct, gather: list[int], cpu: int = 0
) -> Generator[Yield, None, None]:
    """v6.1 mm/mmu_gather.c tlb_finish_mmu: the final flush of the gather."""
    yield from tlb_flush_mmu(k, mm, gather, cpu)


def zap_page_range_single(
    k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int, even_cows: bool, cpu: int = 0
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c zap_page_range_single: drain the LRU batch, unmap one VMA's range, flush."""
    yield from lru_add_drain(k, cpu)
    gather: list[int] = []
    yield from unmap_page_range(k, mm, vma, start, end, even_cows, gather, cpu)
    yield from tlb_finish_mmu(k, mm, gather, cpu)


def zap_page_range(
    k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int, cpu: int = 0
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c zap_page_range (MADV_DONTNEED): drain the LRU batch, zap, flush."""
    yield from zap_page_range_single(k, mm, vma, start, end, True, cpu)
