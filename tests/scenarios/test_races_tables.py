"""Rechecks of a huge PMD against a concurrent zap or split, each tested by a search that needs it.

Each row is a two-thread program over the 6.1 model with a THP at ADDR and a property the
recheck exists to keep.  The search must hold it over every interleaving; with the
recheck removed (bench/mutation.py fast_huge_recheck_dropped,
follow_pmd_recheck_under_lock_dropped) the same search finds an interleaving that breaks it.
"""

from __future__ import annotations

from collections.abc import Generator

from pinlab.explore import FinalCheck, GenThread
from pinlab.interleave import Point, Violation, Yield, run_to_completion
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, get_pmd, get_pte, pte_pfn, pte_present
from pinlab.kernel.process import new_task, sys_madvise, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from tests.scenarios.searching import only_mm, only_task, search

ADDR = 0x7F00_0000_0000  # PMD aligned: the THP every program starts from
NEXT = ADDR + PMD_SIZE  # the next PMD of the same VMA
RW = PROT_READ | PROT_WRITE
DMA = 99  # the token the device stand-in writes
CPU_STORE = 2


def _thp_kernel() -> Kernel:
    """Two PMDs of private anonymous memory at ADDR (MADV_HUGEPAGE), the first a written THP."""
    k = boot("6.1", BootParams(normal_mb=8))
    task = new_task(k)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, 2 * PMD_SIZE, RW, flags)) == ADDR
    assert run_to_completion(sys_madvise(k, task, ADDR, 2 * PMD_SIZE, MADV_HUGEPAGE)) == 0
    run_to_completion(user_access(k, task, ADDR, True, 1))
    assert get_pmd(only_mm(k).pgtable, ADDR)
    return k


# --- gup-fast's recheck of the huge PMD after the batched grab -------------------------
# v6.1 mm/gup.c gup_huge_pmd: after try_grab_folio, a PMD that is no longer the one read
# means the THP may have been freed and its frames reused: drop the grab and fall back.


def pin_thp_dma_unpin(k: Kernel) -> Generator[Yield, None, None]:
    """Pin the THP's first page with gup-fast, let the device write into it, unpin."""
    pages = page_array(1)
    got = yield from pin_user_pages_fast(k, only_mm(k), ADDR, 1, FOLL_WRITE, pages)
    if got == 1:
        page = int(pages[0])
        yield Point("device DMA", writes=frozenset({("page", page, "data")}))
        k.mem.data[page] = DMA
        yield from unpin_user_pages(k, pages, 1)


def drop_thp_and_fault_next(k: Kernel) -> Generator[Yield, None, None]:
    """MADV_DONTNEED the whole THP (its frames are freed), then a store to the next PMD
    (a new THP: the allocator hands the same frames out again)."""
    task = only_task(k)
    yield from sys_madvise(k, task, ADDR, PMD_SIZE, MADV_DONTNEED)
    yield from user_access(k, task, NEXT, True, CPU_STORE)


def _next_keeps_its_store(k: Kernel) -> bool:
    """The page mapped at NEXT holds the store made to it, not the device's write."""
    pmd = get_pmd(only_mm(k).pgtable, NEXT)
    entry = pmd or get_pte(only_mm(k).pgtable, NEXT)
    return pte_present(entry) and int(k.mem.data[pte_pfn(entry)]) == CPU_STORE


def test_gup_fast_huge_recheck_keeps_a_dma_out_of_a_reused_thp() -> None:
    threads = (
        GenThread("pin", pin_thp_dma_unpin),
        GenThread("dontneed", drop_thp_and_fault_next),
    )
    finals = (FinalCheck("dma-into-reused-thp", _next_keeps_its_store),)
    res = search("huge-recheck", _thp_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit


# --- follow_pmd_mask's second look at the PMD under its lock -----------------------------
# v6.1 mm/gup.c follow_pmd_mask :750-765: the PMD read without the lock was huge; under
# pmd_lock it is looked at again (none: no_page_table; no longer huge after a split: the
# PTE table) before follow_trans_huge_pmd, which needs a huge PMD to be there.


def pin_thp_page(k: Kernel) -> Generator[Yield, None, None]:
    """pin_user_pages of the THP's second page under mmap_read_lock: it must be the page
    mapped there, whether the THP was split meanwhile or not."""
    mm = only_mm(k)
    pages = page_array(1)
    yield from mmap_read_lock(k, mm)
    got = yield from pin_user_pages(k, mm, ADDR + PAGE_SIZE, 1, 0, pages)
    mmap_read_unlock(k, mm)
    yield Point("look at the pin", reads=None)
    pmd = get_pmd(mm.pgtable, ADDR)
    mapped = pte_pfn(pmd) + 1 if pmd else pte_pfn(get_pte(mm.pgtable, ADDR + PAGE_SIZE))
    if got != 1 or int(pages[0]) != mapped:
        raise Violation("pinned a page not mapped there", f"got {got}, {int(pages[0])}")


def split_thp(k: Kernel) -> Generator[Yield, None, None]:
    """MADV_DONTNEED of the THP's last page: the huge PMD is split under mmap_read_lock."""
    end = ADDR + PMD_SIZE - PAGE_SIZE
    yield from sys_madvise(k, only_task(k), end, PAGE_SIZE, MADV_DONTNEED)


def test_follow_pmd_recheck_under_lock_sees_a_split() -> None:
    threads = (GenThread("pin", pin_thp_page), GenThread("split", split_thp))
    res = search("pmd-recheck", _thp_kernel, threads)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit
