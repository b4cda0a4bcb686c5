"""The huge zero page: which mm is marked as its user, and what fork maps in the child.

Rows are facts of the 4.4.178, 5.7.14 and 6.1.192 trees, each with its citation
(file, function, line); the values come out of the model (a user read fault,
sys_fork, the page tables and mm->flags).
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.huge_memory import MMF_HUGE_ZERO_PAGE
from pinlab.kernel.mm.memory import vma_page_prot
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PSE,
    _PAGE_RW,
    PMD_SIZE,
    get_pmd,
    pfn_pte,
    pte_pfn,
)
from pinlab.kernel.mm.types import MmStruct, Task, find_vma
from pinlab.kernel.state import BootParams, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _marked(mm: MmStruct) -> bool:
    return bool(mm.flags >> MMF_HUGE_ZERO_PAGE & 1)


class ZeroMapped:
    """A task whose read fault mapped the huge zero page at a PMD-aligned address."""

    def __init__(self, profile: str) -> None:
        self.k = k = boot(profile, BootParams(normal_mb=8))
        self.task = P.new_task(k)
        region = run(P.sys_mmap(k, self.task, None, 2 * PMD_SIZE, RW, ANON))
        self.addr = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        assert run(user_access(k, self.task, self.addr, False)) == 0
        assert pte_pfn(self.pmd(self.task)) == k.huge_zero_pfn

    def mm(self, task: Task) -> MmStruct:
        return self.k.mms[task.mm]

    def pmd(self, task: Task) -> int:
        return get_pmd(self.mm(task).pgtable, self.addr)

    def fork(self) -> Task:
        return self.k.tasks[run(P.sys_fork(self.k, self.task))]


# --- MMF_HUGE_ZERO_PAGE --------------------------------------------------------------------


class Marked(NamedTuple):
    profile: str
    marked: bool
    cite: str


MARKED_ROWS = [
    Marked(
        "4.4",
        False,
        "v4.4.178 mm/huge_memory.c:832 do_huge_pmd_anonymous_page -> get_huge_zero_page (:176, "
        "huge_zero_refcount only) and :952 copy_huge_pmd the same; include/linux/sched.h:504-509 "
        "has no MMF_HUGE_ZERO_PAGE (MMF bits end at 20)",
    ),
    Marked(
        "5.7",
        True,
        "v5.7.14 mm/huge_memory.c:742 / :1092 mm_get_huge_zero_page (:116) test_and_set_bit "
        "(:124) MMF_HUGE_ZERO_PAGE (include/linux/sched/coredump.h:71, bit 23)",
    ),
    Marked(
        "6.1",
        True,
        "v6.1.192 mm/huge_memory.c:820 / :1160 mm_get_huge_zero_page (:199) test_and_set_bit "
        "(:207) MMF_HUGE_ZERO_PAGE (include/linux/sched/coredump.h:72)",
    ),
]


@pytest.mark.parametrize("row", MARKED_ROWS, ids=[r.profile for r in MARKED_ROWS])
def test_huge_zero_user_mark_on_fault_and_fork(row: Marked) -> None:
    z = ZeroMapped(row.profile)
    assert _marked(z.mm(z.task)) == row.marked, row.cite
    child = z.fork()
    assert pte_pfn(z.pmd(child)) == z.k.huge_zero_pfn, row.cite
    assert _marked(z.mm(child)) == row.marked, row.cite
    # no other mm.flags bit comes with it
    assert z.mm(child).flags & ~(1 << MMF_HUGE_ZERO_PAGE) == 0, row.cite


# --- the child's huge zero PMD -------------------------------------------------------------


class ChildPmd(NamedTuple):
    profile: str
    fresh: bool  # a new entry of the VMA's protections; else the parent's, write-protected
    young: bool
    cite: str


CHILD_ROWS = [
    ChildPmd(
        "4.4",
        True,
        True,
        "v4.4.178 mm/huge_memory.c:953 copy_huge_pmd -> set_huge_zero_page (:793): "
        "mk_pmd(zero_page, vma->vm_page_prot), pmd_mkhuge; PAGE_READONLY has _PAGE_ACCESSED "
        "(arch/x86/include/asm/pgtable_types.h:166); the parent's PMD is not touched (:956)",
    ),
    ChildPmd(
        "5.7",
        True,
        True,
        "v5.7.14 mm/huge_memory.c:1093 copy_huge_pmd -> set_huge_zero_page (:703): "
        "mk_pmd(zero_page, vma->vm_page_prot); PAGE_READONLY has ___A "
        "(arch/x86/include/asm/pgtable_types.h:187); goto out_unlock (:1096) skips the "
        "parent's pmdp_set_wrprotect",
    ),
    ChildPmd(
        "6.1",
        False,
        False,
        "v6.1.192 mm/huge_memory.c:1161 copy_huge_pmd goto out_zero_page (:1178): "
        "pmdp_set_wrprotect of the parent (:1181), the child's pmd_mkold(pmd_wrprotect(pmd)) "
        "(:1184-1185)",
    ),
]


@pytest.mark.parametrize("row", CHILD_ROWS, ids=[r.profile for r in CHILD_ROWS])
def test_child_huge_zero_pmd_young_and_clean_per_kernel(row: ChildPmd) -> None:
    z = ZeroMapped(row.profile)
    k = z.k
    parent = z.pmd(z.task)
    assert parent & _PAGE_ACCESSED and not parent & (_PAGE_RW | _PAGE_DIRTY)
    child_task = z.fork()
    child = z.pmd(child_task)
    assert pte_pfn(child) == k.huge_zero_pfn and child & _PAGE_PSE, row.cite
    assert bool(child & _PAGE_ACCESSED) == row.young, row.cite
    assert not child & (_PAGE_RW | _PAGE_DIRTY), row.cite
    vma = find_vma(z.mm(z.task), z.addr)
    assert vma is not None
    fresh = pfn_pte(k.huge_zero_pfn, vma_page_prot(k, vma)) | _PAGE_PSE
    assert (child == fresh) == row.fresh, row.cite
    if not row.fresh:
        assert child == parent & ~(_PAGE_ACCESSED | _PAGE_RW), row.cite
    assert z.pmd(z.task) == parent, row.cite
    # either way the child reads zeros through it
    assert run(user_access(k, child_task, z.addr + 4096, False)) == 0


@pytest.mark.parametrize("row", CHILD_ROWS, ids=[r.profile for r in CHILD_ROWS])
def test_child_of_an_aged_huge_zero_pmd(row: ChildPmd) -> None:
    """The parent's PMD made old (as page_referenced's pmdp_clear_flush_young would): a fresh
    entry is young all the same, a copy of the parent's stays old."""
    z = ZeroMapped(row.profile)
    slot = z.addr // PMD_SIZE
    pt = z.mm(z.task).pgtable
    pt.pmd[slot] &= ~_PAGE_ACCESSED
    child = z.pmd(z.fork())
    assert bool(child & _PAGE_ACCESSED) == row.fresh, row.cite
