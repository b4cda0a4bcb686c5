"""v4.4 fork of a THP: copy_huge_pmd shares it whole, or waits out a split in progress.

Rows are facts of the 4.4.178 tree, each with its citation (file, function, line).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import pytest
from gupstate import anon_vma, fault_thp, new_mm

from pinlab.explore import GenThread, Options, explore
from pinlab.explore.program import FinalCheck
from pinlab.interleave import Await, Point, Yield, run_to_completion
from pinlab.kernel.fork import dup_mm, mm_alloc
from pinlab.kernel.mm.fork_copy import copy_huge_pmd
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import FOLL_SPLIT
from pinlab.kernel.mm.gup_follow import follow_page_mask
from pinlab.kernel.mm.huge_memory import MMF_HUGE_ZERO_PAGE, do_huge_pmd_anonymous_page
from pinlab.kernel.mm.huge_memory_4_4 import pmd_trans_splitting
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_RW,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    get_pte,
    pte_pfn,
)
from pinlab.kernel.mm.rmap import page_mapcount
from pinlab.kernel.mm.types import MmStruct, find_vma
from pinlab.kernel.state import Kernel, boot, new_id
from pinlab.scenarios.harness import kernel_program

NR = 512
TAIL = 5
ADDR = PMD_SIZE
SLOT = ADDR >> PMD_SHIFT


def _thp(gups: int = 0) -> tuple[Kernel, MmStruct, int]:
    """A 4.4 kernel, mm A with an anon THP at ADDR and ``gups`` gup references on TAIL."""
    k = boot("4.4")
    mm = new_mm(k)
    head = fault_thp(k, mm, anon_vma(k, mm, ADDR, PMD_SIZE), ADDR)
    for _ in range(gups):
        pages = page_array(1)
        run_to_completion(mmap_read_lock(k, mm))
        assert run_to_completion(get_user_pages(k, mm, ADDR + TAIL * PAGE_SIZE, 1, 0, pages))
        mmap_read_unlock(k, mm)
    return k, mm, head


def _fork(k: Kernel, mm: MmStruct) -> MmStruct:
    child = run_to_completion(dup_mm(k, mm))
    assert isinstance(child, MmStruct)
    return child


Probe = Callable[[Kernel, MmStruct, MmStruct, int], tuple[Any, ...]]

# (what, citation, probe(k, parent, child, head), values): fork of a THP with two
# get_user_pages references on subpage TAIL
ROWS: list[tuple[str, str, Probe, tuple[Any, ...]]] = [
    (
        "head _count, page_mapcount(head)",
        "v4.4 mm/huge_memory.c copy_huge_pmd :970 get_page, :971 page_dup_rmap on the head"
        " (1 mapping + 2 gup + fork's 1; 2 PMDs)",
        lambda k, p, c, h: (int(k.mem.refcount[h]), page_mapcount(k, h)),
        (4, 2),
    ),
    (
        "TAIL _count, _mapcount; next tail's _count, _mapcount",
        "v4.4 copy_huge_pmd counts on the head only: a tail keeps _count 0 and its gup"
        " references in _mapcount (mm/internal.h __get_page_tail_foll :86-87)",
        lambda k, p, c, h: tuple(
            int(v) for f in (k.mem.refcount, k.mem.mapcount) for v in f[h + TAIL : h + TAIL + 2]
        ),
        (0, 0, 1, -1),
    ),
    (
        "both PMDs map the head; PG_head; no PTE table",
        "v4.4 copy_huge_pmd :977 set_pmd_at(dst) of the same pmd; nothing splits",
        lambda k, p, c, h: (
            pte_pfn(p.pgtable.pmd[SLOT]) == h == pte_pfn(c.pgtable.pmd[SLOT]),
            bool(int(k.mem.flags[h]) & k.pf.mask("PG_head")),
            SLOT in p.pgtable.pte or SLOT in c.pgtable.pte,
        ),
        (True, True, False),
    ),
    (
        "parent PMD writable, young; child PMD writable, young",
        "v4.4 copy_huge_pmd :974 pmdp_set_wrprotect(src), :975 pmd_mkold(pmd_wrprotect(pmd))",
        lambda k, p, c, h: tuple(
            bool(mm.pgtable.pmd[SLOT] & bit) for mm in (p, c) for bit in (_PAGE_RW, _PAGE_ACCESSED)
        ),
        (False, True, False, False),
    ),
]


@pytest.mark.parametrize(("what", "cite", "probe", "values"), ROWS, ids=[r[0] for r in ROWS])
def test_fork_shares_the_thp_and_counts_on_the_head(
    what: str, cite: str, probe: Probe, values: tuple[Any, ...]
) -> None:
    """v4.4 mm/huge_memory.c copy_huge_pmd :915: no pin test, no split: the THP is shared."""
    k, parent, head = _thp(gups=2)
    child = _fork(k, parent)
    assert probe(k, parent, child, head) == values, cite


def test_fork_must_copy_hook_is_not_asked_about_a_4_4_thp() -> None:
    """v4.4 copy_huge_pmd (:968-977) shares every THP: there is no decision for the hook to
    replace, and no PMD-only split (split_huge_pmd came with v4.5's rework)."""
    k, parent, head = _thp()
    k.hooks.fork_must_copy = lambda _k, _mm, _page: True
    child = _fork(k, parent)
    assert pte_pfn(parent.pgtable.pmd[SLOT]) == head == pte_pfn(child.pgtable.pmd[SLOT])
    assert int(k.mem.flags[head]) & k.pf.mask("PG_head")


def test_fork_maps_the_huge_zero_page_young_without_an_mm_flag() -> None:
    """v4.4 copy_huge_pmd :945-957: get_huge_zero_page (:176, the global huge_zero_refcount,
    no per-mm MMF_HUGE_ZERO_PAGE: include/linux/sched.h:504-509 has none) and
    set_huge_zero_page (:793-806: mk_pmd with vm_page_prot, pmd_mkhuge: not made old);
    the parent's PMD is left as it is."""
    k = boot("4.4")
    parent = new_mm(k)
    vma = anon_vma(k, parent, ADDR, PMD_SIZE)
    assert run_to_completion(do_huge_pmd_anonymous_page(k, parent, vma, ADDR, 0, 0)) == 0
    before = parent.pgtable.pmd[SLOT]
    assert pte_pfn(before) == k.huge_zero_pfn
    child = _fork(k, parent)
    assert parent.pgtable.pmd[SLOT] == before
    assert child.pgtable.pmd[SLOT] == before
    assert child.pgtable.pmd[SLOT] & _PAGE_ACCESSED
    assert not child.flags >> MMF_HUGE_ZERO_PAGE & 1


# --- fork beside a split of the THP it is copying -----------------------------------------


def foll_split_in(k: Kernel, mm: MmStruct) -> Generator[Yield, None, None]:
    """follow_page(FOLL_SPLIT) of the THP in ``mm`` under its mmap_sem (v4.4 mm/gup.c
    follow_page_mask :234-236 split_huge_page_pmd)."""
    vma = find_vma(mm, ADDR)
    assert vma is not None
    yield from mmap_read_lock(k, mm)
    yield from follow_page_mask(k, mm, vma, ADDR, FOLL_SPLIT)
    mmap_read_unlock(k, mm)


def _step_to(gen: Generator[Yield, None, Any], stop: Callable[[Yield], bool]) -> Yield:
    """Run ``gen`` alone up to (and not past) the first yield ``stop`` accepts."""
    while True:
        value = next(gen)
        if stop(value):
            return value
        assert not isinstance(value, Await) or value.ready(), value


def _finish(gen: Generator[Yield, None, Any]) -> Any:
    """Run ``gen``, stopped at a yield, alone to its end."""
    try:
        while True:
            value = next(gen)
            assert not isinstance(value, Await) or value.ready(), value
    except StopIteration as stop:
        return stop.value


def test_fork_waits_for_a_split_that_marked_the_parent_pmd() -> None:
    """v4.4 copy_huge_pmd :959-967: a PMD marked splitting (by __split_huge_page_splitting
    :1719, under the PMD lock) is unlocked, wait_split_huge_page (include/linux/huge_mm.h:112)
    blocks on the anon_vma lock the split holds to its end (:2035), and copy_pmd_range
    (mm/memory.c :998-1008) then copies the PTE table the split left."""
    k, a, head = _thp()
    b = _fork(k, a)
    split = foll_split_in(k, b)
    _step_to(split, lambda y: isinstance(y, Point) and y.label == "split refcount")
    assert pmd_trans_splitting(a.pgtable.pmd[SLOT])
    fork = dup_mm(k, a)
    blocked = _step_to(fork, lambda y: isinstance(y, Await) and not y.ready())
    assert isinstance(blocked, Await) and blocked.label == "anon_vma_lock_write"
    c = next(mm for mm in k.mms.values() if mm not in (a, b))
    assert SLOT not in c.pgtable.pmd and SLOT not in c.pgtable.pte
    _finish(split)
    assert _finish(fork) is c
    for i in (0, TAIL, NR - 1):
        assert pte_pfn(get_pte(c.pgtable, ADDR + i * PAGE_SIZE)) == head + i
    # three PTE mappings of each page, one reference each (v4.4 mm/memory.c copy_one_pte :906-907)
    assert (int(k.mem.refcount[head + TAIL]), int(k.mem.mapcount[head + TAIL])) == (3, 2)


def _race_kernel() -> Kernel:
    """_thp forked once (mms A and B share the THP by write-protected PMDs), and a third mm
    C with A's VMA, as v4.4 kernel/fork.c dup_mmap links it (anon_vma_fork :464) before
    copy_page_range (:510)."""
    k, a, _ = _thp()
    _fork(k, a)
    c = mm_alloc(k)
    c.vmas.append(replace(a.vmas[0], anon_vma=new_id(k)))
    return k


def copy_a_to_c(k: Kernel) -> Generator[Yield, None, None]:
    """copy_page_range's copy_huge_pmd of the THP's PMD from mm A to mm C (its -EAGAIN
    fallback to the PTE table is test_fork_waits_for_a_split_that_marked_the_parent_pmd's)."""
    a, _, c = k.mms.values()
    yield from copy_huge_pmd(k, c, a, c.vmas[0], a.vmas[0], ADDR)


def split_b(k: Kernel) -> Generator[Yield, None, None]:
    """FOLL_SPLIT of the THP in mm B."""
    yield from foll_split_in(k, list(k.mms.values())[1])


def _outcome(k: Kernel) -> tuple[Any, ...]:
    """Per mm: PMD or PTE table at SLOT; subpage TAIL's _count and _mapcount; PG_head."""
    m = k.mem
    a = next(iter(k.mms.values()))
    tables = tuple((SLOT in mm.pgtable.pmd, SLOT in mm.pgtable.pte) for mm in k.mms.values())
    head = pte_pfn(get_pte(a.pgtable, ADDR))
    counts = (int(m.refcount[head + TAIL]), int(m.mapcount[head + TAIL]))
    return tables, counts, bool(int(m.flags[head]) & k.pf.mask("PG_head"))


def test_fork_beside_a_split_ends_consistent() -> None:
    """copy_huge_pmd from A to C beside a split started in B.  Either fork copies the PMD
    before the split marks A's, and the split's walk meets C's PMD later and splits it
    too (v4.4 mm/huge_memory.c __split_huge_page :1960-1975: C's VMA comes after A's);
    or the split marked A's PMD first, and copy_huge_pmd waits it out and returns -EAGAIN
    (:959-967), leaving C's slot empty (or finds A's PTE table: -EAGAIN, :936-939).  No
    interleaving trips the split's mapcount check (:1976-1980)."""
    seen: set[Any] = set()

    def record(k: Kernel) -> bool:
        seen.add(_outcome(k))
        return True

    program = kernel_program(
        "thp-4.4-fork-split",
        _race_kernel,
        (GenThread("fork", copy_a_to_c), GenThread("split", split_b)),
        finals=(FinalCheck("record", record),),
        checked=True,
    )
    result = explore(program, Options(strategy="dfs"))
    assert result.complete and not result.errors and not result.violated, result.errors[:1]
    split = (False, True)
    assert seen == {
        ((split, split, split), (3, 2), False),
        ((split, split, (False, False)), (2, 1), False),
    }
