"""v4.4 THP refcounting: tail references in _mapcount, and splits that split the compound page.

Rows are facts of the 4.4.178 tree, each with its citation (file, function, line).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest
from gupstate import anon_vma, fault_thp, new_mm

from pinlab.explore import GenThread, Options, explore
from pinlab.explore.program import FinalCheck
from pinlab.interleave import Yield, run_to_completion
from pinlab.kernel.mm.debug import dump_page
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import FOLL_SPLIT
from pinlab.kernel.mm.gup_follow import follow_page_mask
from pinlab.kernel.mm.huge_memory_4_4 import put_compound_page
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memmap import NO_HEAD
from pinlab.kernel.mm.mmap import MADV_DONTNEED, PROT_READ, do_madvise, do_mprotect, do_munmap
from pinlab.kernel.mm.page_ref import put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_DIRTY,
    _PAGE_RW,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    get_pte,
    pte_pfn,
)
from pinlab.kernel.mm.rmap import page_mapcount
from pinlab.kernel.mm.types import MmStruct, find_vma
from pinlab.kernel.state import Kernel, boot
from pinlab.scenarios.harness import kernel_program

NR = 512
TAIL = 5
ADDR = PMD_SIZE


def _thp() -> tuple[Kernel, MmStruct, int]:
    """A 4.4 kernel with one anon THP mapped by a writable PMD at ADDR."""
    k = boot("4.4")
    mm = new_mm(k)
    vma = anon_vma(k, mm, ADDR, PMD_SIZE)
    head = fault_thp(k, mm, vma, ADDR)
    return k, mm, head


def _gup(k: Kernel, mm: MmStruct, index: int) -> Generator[Yield, None, int]:
    """get_user_pages(FOLL_WRITE) of subpage ``index`` under mmap_sem: the page."""
    pages = page_array(1)
    yield from mmap_read_lock(k, mm)
    got = yield from get_user_pages(k, mm, ADDR + index * PAGE_SIZE, 1, 0, pages)
    mmap_read_unlock(k, mm)
    assert got == 1
    return int(pages[0])


def _gup_tail() -> tuple[Kernel, MmStruct, int]:
    """_thp with two get_user_pages references on subpage TAIL."""
    k, mm, head = _thp()
    for _ in range(2):
        assert run_to_completion(_gup(k, mm, TAIL)) == head + TAIL
    return k, mm, head


Probe = Callable[[Kernel, int], tuple[int, ...]]

# (what, citation, probe(k, head), values) after two get_user_pages of subpage TAIL
GUP_ROWS: list[tuple[str, str, Probe, tuple[int, ...]]] = [
    (
        "head _count, tail _count, tail _mapcount, next tail's _mapcount",
        "v4.4 mm/internal.h __get_page_tail_foll :86-87, include/linux/mm.h get_huge_page_tail"
        " :483-486 (+1 on the head's _count and the tail's _mapcount, tail _count stays 0)",
        lambda k, h: tuple(
            int(v)
            for v in (k.mem.refcount[h], k.mem.refcount[h + TAIL], *k.mem.mapcount[h + 5 : h + 7])
        ),
        (3, 0, 1, -1),
    ),
    (
        "page_count(tail), page_mapcount(head), page_mapcount(tail)",
        "v4.4 include/linux/mm.h page_count :453-455 (the head's _count), page_mapcount :447-451"
        " (own _mapcount + 1: the head's PMD mapping, the tail's gup references)",
        lambda k, h: (
            int(k.mem.refcount[int(k.mem.head[h + TAIL])]),
            page_mapcount(k, h),
            page_mapcount(k, h + TAIL),
        ),
        (3, 1, 2),
    ),
]


@pytest.mark.parametrize(
    ("what", "cite", "probe", "values"), GUP_ROWS, ids=[r[0] for r in GUP_ROWS]
)
def test_gup_of_a_tail_counts_on_head_and_tail_mapcount(
    what: str, cite: str, probe: Probe, values: tuple[int, ...]
) -> None:
    """v4.4 mm/huge_memory.c follow_trans_huge_pmd :1325 get_page_foll(page) on the subpage."""
    k, _, head = _gup_tail()
    assert probe(k, head) == values, cite


def test_dump_page_of_a_4_4_tail_shows_the_gup_references_as_mapcount() -> None:
    """v4.4 mm/debug.c dump_page_badflags :84-86: count: page->_count, mapcount: page_mapcount."""
    k, _, head = _gup_tail()
    assert "count:0 mapcount:2 " in dump_page(k, head + TAIL)[0]


Put = Callable[[Kernel, int], None]


def _put_atomic(k: Kernel, page: int) -> None:
    put_page(k, page)


def _put_interleaved(k: Kernel, page: int) -> None:
    run_to_completion(put_compound_page(k, page))


@pytest.mark.parametrize("put", [_put_atomic, _put_interleaved], ids=["put_page", "steps"])
def test_put_page_of_a_tail_undoes_both(put: Put) -> None:
    """v4.4 mm/swap.c put_refcounted_compound_page :166: the tail's _mapcount -1 (:201), the
    head's _count -1 (:207); the compound lock is free again (:205)."""
    k, _, head = _gup_tail()
    put(k, head + TAIL)
    m = k.mem
    assert (int(m.refcount[head]), int(m.mapcount[head + TAIL])) == (2, 0)
    assert not int(m.flags[head]) & k.pf.mask("PG_compound_lock")


def _munmap_last(k: Kernel, mm: MmStruct) -> None:
    assert run_to_completion(do_munmap(k, mm, ADDR + PMD_SIZE - PAGE_SIZE, PAGE_SIZE)) == 0


def _mprotect_one(k: Kernel, mm: MmStruct) -> None:
    assert run_to_completion(do_mprotect(k, mm, ADDR + PAGE_SIZE, PAGE_SIZE, PROT_READ)) == 0


def _dontneed_last(k: Kernel, mm: MmStruct) -> None:
    start = ADDR + PMD_SIZE - PAGE_SIZE
    assert run_to_completion(do_madvise(k, mm, start, PAGE_SIZE, MADV_DONTNEED)) == 0


def _foll_split(k: Kernel, mm: MmStruct) -> None:
    vma = find_vma(mm, ADDR)
    assert vma is not None
    run_to_completion(mmap_read_lock(k, mm))
    page, _ = run_to_completion(follow_page_mask(k, mm, vma, ADDR, FOLL_SPLIT))
    mmap_read_unlock(k, mm)
    assert page == int(pte_pfn(mm.pgtable.pte[ADDR >> PMD_SHIFT][0]))


# (operation, citation, how, subpages left mapped)
SPLIT_ROWS: list[tuple[str, str, Callable[[Kernel, MmStruct], None], int]] = [
    (
        "munmap of the last 4 KiB",
        "v4.4 mm/mmap.c vma_adjust :821 -> mm/huge_memory.c vma_adjust_trans_huge :3093",
        _munmap_last,
        NR - 1,
    ),
    (
        "mprotect of one 4 KiB page",
        "v4.4 mm/mprotect.c mprotect_fixup -> split_vma -> vma_adjust_trans_huge :3093",
        _mprotect_one,
        NR,
    ),
    (
        "madvise(MADV_DONTNEED) of the last 4 KiB",
        "v4.4 mm/memory.c zap_pmd_range :1239 split_huge_page_pmd",
        _dontneed_last,
        NR - 1,
    ),
    ("follow_page(FOLL_SPLIT)", "v4.4 mm/gup.c follow_page_mask :234-236", _foll_split, NR),
]


@pytest.mark.parametrize(
    ("op", "cite", "how", "mapped"), SPLIT_ROWS, ids=[r[0] for r in SPLIT_ROWS]
)
def test_split_of_a_pinned_thp_splits_the_compound_page(
    op: str, cite: str, how: Callable[[Kernel, MmStruct], None], mapped: int
) -> None:
    """v4.4 mm/huge_memory.c __split_huge_page_refcount :1752: tail _count = page_mapcount(head)
    + page_mapcount(tail) + 1 (:1786), the +1 put after (:1858); tail _mapcount = the head's
    (:1823); the head loses the tails' gup references (:1841) and PG_head (:1846);
    __split_huge_page_map :1871 makes 512 dirty PTEs (:1893), write-protected as the PMD."""
    k, mm, head = _gup_tail()
    how(k, mm)
    m = k.mem
    slot = ADDR >> PMD_SHIFT
    assert slot not in mm.pgtable.pmd, cite
    assert not int(m.flags[head]) & k.pf.mask("PG_head"), cite
    assert (int(m.refcount[head]), int(m.mapcount[head])) == (1, 0), cite
    gup = [2 if i == TAIL else 0 for i in range(NR)]
    for i in range(1, mapped):
        assert int(m.head[head + i]) == NO_HEAD, (cite, i)
        assert (int(m.refcount[head + i]), int(m.mapcount[head + i])) == (1 + gup[i], 0), (cite, i)
        assert int(m.index[head + i]) == i, (cite, i)
        assert int(m.flags[head + i]) & k.pf.mask("PG_dirty"), (cite, i)
    for i in range(mapped):
        pte = get_pte(mm.pgtable, ADDR + i * PAGE_SIZE)
        assert pte_pfn(pte) == head + i and pte & _PAGE_DIRTY, (cite, i)
        assert bool(pte & _PAGE_RW) == (op != "mprotect of one 4 KiB page" or i != 1), (cite, i)
    if mapped < NR:
        # the unmapped page was freed: its only reference was the mapping's
        assert (int(m.refcount[head + NR - 1]), int(m.mapcount[head + NR - 1])) == (0, -1)
    # the gup references are now the subpage's own, and put_page drops them there
    put_page(k, head + TAIL)
    assert (int(m.refcount[head + TAIL]), int(m.refcount[head])) == (2, 1), cite


# --- explorer: gup FOLL_GET of a subpage beside a FOLL_SPLIT split ---------------------------


def _race_kernel() -> Kernel:
    return _thp()[0]


def _mm(k: Kernel) -> MmStruct:
    return next(iter(k.mms.values()))


def gup_and_keep(k: Kernel) -> Generator[Yield, None, None]:
    """get_user_pages of subpage TAIL; the reference is kept."""
    yield from _gup(k, _mm(k), TAIL)


def gup_and_put(k: Kernel) -> Generator[Yield, None, None]:
    """get_user_pages of subpage TAIL, then put_page of it."""
    page = yield from _gup(k, _mm(k), TAIL)
    yield from put_compound_page(k, page)


def foll_split(k: Kernel) -> Generator[Yield, None, None]:
    """follow_page(FOLL_SPLIT) of the THP under mmap_sem for read (v4.4 KSM, uprobes)."""
    mm = _mm(k)
    vma = find_vma(mm, ADDR)
    assert vma is not None
    yield from mmap_read_lock(k, mm)
    yield from follow_page_mask(k, mm, vma, ADDR, FOLL_SPLIT)
    mmap_read_unlock(k, mm)


def _outcome(k: Kernel) -> tuple[Any, ...]:
    """Per page: refcount, mapcount, compound head; and whether PG_head and the PMD remain."""
    m = k.mem
    head = int(pte_pfn(_mm(k).pgtable.pte[ADDR >> PMD_SHIFT][0]))
    rows = tuple(
        (i, int(m.refcount[head + i]), int(m.mapcount[head + i]), int(m.head[head + i]))
        for i in range(NR)
        if (int(m.refcount[head + i]), int(m.mapcount[head + i])) != (1, 0)
        or int(m.head[head + i]) != NO_HEAD
    )
    pmd = (ADDR >> PMD_SHIFT) in _mm(k).pgtable.pmd
    return rows, bool(int(m.flags[head]) & k.pf.mask("PG_head")), pmd


@pytest.mark.parametrize(
    ("gup_thread", "expected"),
    [
        # the gup reference ends on subpage TAIL's own _count, whichever ran first
        (gup_and_keep, {(((TAIL, 2, 0, NO_HEAD),), False, False)}),
        # and put back there (or on the head and tail _mapcount) leaves every page at 1
        (gup_and_put, {((), False, False)}),
    ],
    ids=["kept", "put"],
)
def test_gup_beside_a_split_ends_consistent(
    gup_thread: Callable[[Kernel], Generator[Yield, None, None]], expected: set[Any]
) -> None:
    """v4.4 mm/internal.h get_page_foll runs under the PMD lock (:92-94), which
    __split_huge_page_splitting (:1719) takes to mark the PMD; a gup finding it splitting
    waits (mm/gup.c :240-242) and follows the PTE; put_refcounted_compound_page holds
    the compound lock that __split_huge_page_refcount takes (:1763)."""
    seen: set[Any] = set()

    def record(k: Kernel) -> bool:
        seen.add(_outcome(k))
        return True

    program = kernel_program(
        "thp-4.4-gup-split",
        _race_kernel,
        (GenThread("gup", gup_thread), GenThread("split", foll_split)),
        finals=(FinalCheck("record", record),),
        checked=True,
    )
    result = explore(program, Options(strategy="dfs"))
    assert result.complete and not result.errors and not result.violated, result.errors[:1]
    assert seen == expected
