"""Kernel-fact rows for 4.4's own x86 gup-fast (v4.4.178 arch/x86/mm/gup.c); its race with munmap.

4.4 walks with interrupts off and takes a plain get_page() without re-reading the
entry; the unmapper's TLB-flush IPI (v4.4 arch/x86/mm/tlb.c) waits for those
interrupts before the pages are freed.  6.1 (mm/gup.c) grabs speculatively and
re-reads the entry instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import PROT, anon_vma, fault_anon, fault_thp, hugetlb_vma, new_mm

from pinlab.explore import GenThread, Options, explore
from pinlab.interleave import Yield, run_to_completion
from pinlab.kernel import errno
from pinlab.kernel.arch.x86.mm.gup import __get_user_pages_fast
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import get_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.memory import anon_vma_prepare
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_alloc import alloc_hugetlb_folio
from pinlab.kernel.mm.pgtable import (
    _PAGE_PRESENT,
    _PAGE_PROTNONE,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_SPECIAL,
    _PAGE_SPLITTING,
    HPAGE_PMD_ORDER,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    get_pte,
    pfn_pte,
    pte_pfn,
    pte_present,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import hugepage_add_new_anon_rmap
from pinlab.kernel.mm.types import MmStruct
from pinlab.kernel.process import new_task, sys_mmap, sys_munmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import kernel_program

BASE = PMD_SIZE
GUP = "v4.4 arch/x86/mm/gup.c"


def _referenced(k: Kernel, page: int) -> bool:
    return bool(int(k.mem.flags[page]) & k.pf.mask("PG_referenced"))


# ---- counts after a 4.4 gup-fast ----


def test_small_pages_get_one_reference_each() -> None:
    """v4.4 arch/x86/mm/gup.c gup_pte_range :98 get_page (+1 on _count, no add-unless-zero),
    :99 SetPageReferenced; :374-377 all pages walked: no slow path, interrupts on again."""
    k = boot("4.4")
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, PMD_SIZE)
    got = [fault_anon(k, mm, vma, BASE + i * PAGE_SIZE) for i in range(3)]
    pages = page_array(3)
    assert run_to_completion(get_user_pages_fast(k, mm, BASE, 3, FOLL_WRITE, pages)) == 3
    assert list(pages) == got
    assert [int(k.mem.refcount[p]) for p in got] == [2, 2, 2]
    assert all(_referenced(k, p) for p in got)
    assert not k.irqs_off


@dataclass(frozen=True)
class HugeRow:
    name: str
    hugetlb: bool
    first: int  # subpage index the range starts at
    nr: int
    head_refs: int  # added to the head's _count
    tail_maps: int  # added to each tail's _mapcount
    cite: str


HUGE_ROWS = [
    HugeRow(
        "thp-tails",
        False,
        1,
        3,
        3,
        1,
        f"{GUP} gup_huge_pmd :139-140 get_huge_page_tail per tail (v4.4 include/linux/mm.h:485-486"
        " atomic_inc of the tail's _mapcount, compound_tail_refcounted: anon THP), :145"
        " get_head_page_multiple :113 atomic_add(refs) on the head",
    ),
    HugeRow(
        "thp-from-head",
        False,
        0,
        2,
        2,
        1,
        f"{GUP} gup_huge_pmd :139 PageTail: the head itself takes no _mapcount",
    ),
    HugeRow(
        "hugetlb-tails",
        True,
        1,
        3,
        3,
        0,
        "v4.4 include/linux/mm.h:458-460 __compound_tail_refcounted: PageHeadHuge -> no tail"
        f" _mapcount; {GUP} :113 head _count += refs",
    ),
]


def _huge(row: HugeRow) -> tuple[Kernel, MmStruct, int]:
    k = boot("4.4", BootParams(hugepages_2m=1 if row.hugetlb else 0))
    mm = new_mm(k)
    if not row.hugetlb:
        return k, mm, fault_thp(k, mm, anon_vma(k, mm, BASE, PMD_SIZE), BASE)
    vma = hugetlb_vma(k, mm, BASE, PMD_SIZE)
    head = alloc_hugetlb_folio(k, HPAGE_PMD_ORDER)
    assert head is not None
    anon_vma_prepare(k, vma)
    hugepage_add_new_anon_rmap(k, head, vma, BASE)
    mm.pgtable.pmd[BASE >> PMD_SHIFT] = pfn_pte(head, PROT) | _PAGE_PSE
    return k, mm, head


@pytest.mark.parametrize("row", HUGE_ROWS, ids=[r.name for r in HUGE_ROWS])
def test_huge_entry_counts_on_head_and_tail_mapcounts(row: HugeRow) -> None:
    k, mm, head = _huge(row)
    first = head + row.first
    taken = range(first, first + row.nr)
    ref0 = int(k.mem.refcount[head])
    maps0 = [int(k.mem.mapcount[p]) for p in taken]
    pages = page_array(row.nr)
    start = BASE + row.first * PAGE_SIZE
    assert run_to_completion(get_user_pages_fast(k, mm, start, row.nr, FOLL_WRITE, pages)) == (
        row.nr
    ), row.cite
    assert list(pages) == list(taken), row.cite
    assert int(k.mem.refcount[head]) == ref0 + row.head_refs, row.cite
    want = [m + (row.tail_maps if p != head else 0) for p, m in zip(taken, maps0, strict=True)]
    assert [int(k.mem.mapcount[p]) for p in taken] == want, row.cite
    assert _referenced(k, head), f"{GUP} :114 SetPageReferenced on the head"
    assert not any(int(k.mem.refcount[p]) for p in taken if p != head), row.cite


# ---- where the walk stops (the caller finishes on the slow path) ----


@dataclass(frozen=True)
class StopRow:
    name: str
    spoil: Callable[[Kernel, MmStruct], None]  # spoils the second page's entry
    write: bool
    cite: str


def _pte(k: Kernel, mm: MmStruct, set_bits: int, clear_bits: int) -> None:
    addr = BASE + PAGE_SIZE
    set_pte_at(mm.pgtable, addr, (get_pte(mm.pgtable, addr) | set_bits) & ~clear_bits)


STOP_ROWS = [
    StopRow(
        "special",
        lambda k, mm: _pte(k, mm, _PAGE_SPECIAL, 0),
        False,
        f"{GUP} gup_pte_range :92-95 _PAGE_SPECIAL in the mask test",
    ),
    StopRow(
        "not-present",
        lambda k, mm: _pte(k, mm, 0, _PAGE_PRESENT),
        False,
        f"{GUP} gup_pte_range :92-95 _PAGE_PRESENT required",
    ),
    StopRow(
        "protnone",
        lambda k, mm: _pte(k, mm, _PAGE_PROTNONE, _PAGE_PRESENT),
        False,
        f"{GUP} gup_pte_range :87-90 pte_protnone (NUMA hinting)",
    ),
    StopRow(
        "write-to-read-only",
        lambda k, mm: _pte(k, mm, 0, _PAGE_RW),
        True,
        f"{GUP} gup_pte_range :77-79 _PAGE_RW in the mask for a write",
    ),
]


@pytest.mark.parametrize("row", STOP_ROWS, ids=[r.name for r in STOP_ROWS])
def test_walk_stops_at_an_entry_it_cannot_take(row: StopRow) -> None:
    k = boot("4.4")
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, PMD_SIZE)
    got = [fault_anon(k, mm, vma, BASE + i * PAGE_SIZE) for i in range(2)]
    row.spoil(k, mm)
    pages = page_array(2)
    # __get_user_pages_fast (:255) is the walk alone: it hands back what it took first
    assert run_to_completion(__get_user_pages_fast(k, mm, BASE, 2, row.write, pages)) == 1
    assert int(pages[0]) == got[0], row.cite
    assert [int(k.mem.refcount[p]) for p in got] == [2, 1], row.cite
    assert not k.irqs_off, f"{GUP} :302 local_irq_restore"


def test_write_to_read_only_entry_goes_to_the_slow_path() -> None:
    """v4.4 arch/x86/mm/gup.c :370-372 goto slow, :383-391 get_user_pages_unlocked for the
    rest with FOLL_WRITE, whose write fault makes the entry writable; :394-398 nr + ret."""
    k = boot("4.4")
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, PMD_SIZE)
    for i in range(2):
        fault_anon(k, mm, vma, BASE + i * PAGE_SIZE)
    _pte(k, mm, 0, _PAGE_RW)
    pages = page_array(2)
    assert run_to_completion(get_user_pages_fast(k, mm, BASE, 2, FOLL_WRITE, pages)) == 2
    assert get_pte(mm.pgtable, BASE + PAGE_SIZE) & _PAGE_RW
    assert int(k.mem.refcount[int(pages[1])]) == 2


def test_splitting_pmd_goes_to_the_slow_path() -> None:
    """v4.4 arch/x86/mm/gup.c gup_pmd_range :172-173 pmd_trans_splitting -> return 0, so the
    slow path (which may sleep in wait_split_huge_page) handles the range."""
    k = boot("4.4")
    mm = new_mm(k)
    head = fault_thp(k, mm, anon_vma(k, mm, BASE, PMD_SIZE), BASE)
    mm.pgtable.pmd[BASE >> PMD_SHIFT] |= _PAGE_SPLITTING
    pages = page_array(1)
    assert run_to_completion(__get_user_pages_fast(k, mm, BASE, 1, False, pages)) == 0
    assert int(k.mem.refcount[head]) == 1


# ---- gup-fast beside munmap, searched ----


def _race_kernel(profile: str) -> Kernel:
    """One task with one written private anonymous page."""
    k = boot(profile, BootParams(normal_mb=4))
    task = new_task(k)
    gen = sys_mmap(k, task, None, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    addr = run_to_completion(gen)
    run_to_completion(user_access(k, task, addr, True, 1))
    return k


def _mm(k: Kernel) -> MmStruct:
    return next(iter(k.mms.values()))


def _addr(k: Kernel) -> int:
    return _mm(k).vmas[0].vm_start


def _mapped(k: Kernel, addr: int, page: int) -> bool:
    pte = get_pte(_mm(k).pgtable, addr)
    return pte_present(pte) and pte_pfn(pte) == page


# The gup caller's outcome in each run the search makes, by program.
OUTCOMES: dict[str, set[tuple[object, ...]]] = {}


def _gup_thread(name: str, addr: int, page: int, k: Kernel) -> Generator[Yield, None, None]:
    """get_user_pages_fast of the page; at each of its steps that raises the page's count it
    notes whether the page was still mapped then, and the count it found."""
    mm = _mm(k)
    pages = page_array(1)
    gen = get_user_pages_fast(k, mm, addr, 1, FOLL_WRITE, pages)
    grabs: tuple[tuple[bool, int], ...] = ()
    while True:
        before = int(k.mem.refcount[page])
        try:
            value = next(gen)
        except StopIteration as stop:
            ret = stop.value
            break
        finally:
            if int(k.mem.refcount[page]) > before:
                grabs += ((_mapped(k, addr, page), before),)
        yield value
    handed = int(pages[0]) if ret == 1 else None
    OUTCOMES[name].add((ret, handed, grabs, int(k.mem.refcount[page])))


def _unmap_thread(addr: int, k: Kernel) -> Generator[Yield, None, int]:
    """munmap of the page."""
    task = next(iter(k.tasks.values()))
    return (yield from sys_munmap(k, task, addr, PAGE_SIZE))


def _race(profile: str) -> tuple[int, set[tuple[object, ...]]]:
    """Every outcome of gup-fast beside munmap within two preemptions.

    The gup thread holds the generator it observes, which the state cache cannot capture:
    the search runs without it, so it is bounded.
    """
    name = f"gup-fast-vs-munmap-{profile}"
    make = partial(_race_kernel, profile)
    k = make()
    addr = _addr(k)
    page = pte_pfn(get_pte(_mm(k).pgtable, addr))
    OUTCOMES[name] = set()
    threads = (
        GenThread("gup", partial(_gup_thread, name, addr, page)),
        GenThread("munmap", partial(_unmap_thread, addr)),
    )
    options = Options(strategy="dfs", cache=False, preemption_bound=2)
    result = explore(kernel_program(name, make, threads), options)
    assert not result.errors, result.errors[:1]
    assert result.complete and not result.counterexamples, result.verdict
    return page, OUTCOMES[name]


def test_4_4_hands_back_the_page_the_unmap_cleared_and_the_free_waits() -> None:
    """v4.4 arch/x86/mm/gup.c :363 local_irq_disable, gup_pte_range :83 reads the entry and
    :98 get_page()s it with no second look: a munmap clearing the entry in between still has
    its page handed back, the caller's reference taken on an unmapped page whose only other
    reference is the unmap's gather.  The unmap frees its pages only after its TLB flush
    (v4.4 mm/memory.c:261 tlb_flush_mmu: tlb_flush_mmu_tlbonly, then tlb_flush_mmu_free),
    whose IPI (arch/x86/mm/tlb.c:390-391 flush_tlb_others, :325 smp_call_function_many,
    wait=1) runs on gup's CPU at :374 local_irq_enable: get_page never finds the page freed."""
    page, outcomes = _race("4.4")
    assert outcomes == {
        # the walk before the unmap cleared the entry: the count is the mapping's, the
        # fault's LRU batch's (until the unmap drains it), and gup's
        (1, page, ((True, 2),), 3),
        (1, page, ((True, 2),), 2),
        (1, page, ((True, 1),), 2),
        # entry read, then cleared, then get_page: no recheck, the page is handed back
        (1, page, ((False, 1),), 2),
        # entry already clear: the slow path finds no VMA (v4.4 mm/gup.c __get_user_pages)
        (-errno.EFAULT, None, (), 0),
    }


def test_6_1_recheck_drops_a_page_the_unmap_cleared() -> None:
    """v6.1 mm/gup.c gup_pte_range: try_grab_folio (folio_ref_try_add_rcu, refused at 0), then
    the entry is read again and a changed one puts the folio back (2506-2511): a page is
    handed back only if its reference was taken while it was still mapped."""
    page, outcomes = _race("6.1")
    dropped = {(-errno.EFAULT, None, ((m, n),), 0) for m, n in ((False, 1), (True, 1), (True, 2))}
    assert outcomes == {
        (-errno.EFAULT, None, (), 0),
        # grabbed, then the entry read again had changed: put back, then the slow path
        *dropped,
        # handed back: grabbed while mapped; the unmap may finish before gup returns
        *((1, page, ((True, n),), c) for n in (1, 2) for c in (1, 2)),
        (1, page, ((True, 2),), 3),
    }
