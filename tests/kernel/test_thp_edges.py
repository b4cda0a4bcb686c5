"""Splitting a huge PMD into PTEs: what the PTEs and the THP's head page carry over.

v5.7 and v6.1 split a PMD-mapped anon THP in place (__split_huge_pmd_locked): the PMD's
dirty bit goes to the head page's PG_dirty (the new PTEs are made clean), and a
write-protected PMD gives write-protected PTEs even in a VM_WRITE VMA.  Rows are facts of
the 5.7.14 and 6.1.192 trees, each with its citation (file, function, line); the values
come out of the model (user faults, MADV_DONTNEED of one subpage, fork).
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.mmap import MADV_DONTNEED, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import (
    PAGE_SIZE,
    PMD_SIZE,
    PageTable,
    get_pmd,
    get_pte,
    pte_dirty,
    pte_pfn,
    pte_write,
)
from pinlab.kernel.mm.types import Task
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

NR = 512
TAIL = 5  # the subpage written after the split
LAST = NR - 1  # the subpage MADV_DONTNEED drops: the PMD is split, not zapped
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


class Thp:
    """A task with an anon THP written at a PMD-aligned address (token 7 on subpage 0)."""

    def __init__(self, profile: str) -> None:
        self.k = k = boot(profile, BootParams(normal_mb=8))
        self.task = P.new_task(k)
        region = run(P.sys_mmap(k, self.task, None, 2 * PMD_SIZE, RW, ANON))
        self.addr = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        run(user_access(k, self.task, self.addr, True, 7))
        self.head = pte_pfn(get_pmd(self.pt(self.task), self.addr))
        assert self.head % NR == 0

    def pt(self, task: Task) -> PageTable:
        return self.k.mms[task.mm].pgtable

    def split(self, task: Task) -> None:
        """MADV_DONTNEED of the last subpage: the huge PMD becomes a PTE table."""
        assert (
            run(P.sys_madvise(self.k, task, self.addr + LAST * PAGE_SIZE, PAGE_SIZE, MADV_DONTNEED))
            == 0
        )
        assert not get_pmd(self.pt(task), self.addr)

    def pte(self, task: Task, index: int) -> int:
        return get_pte(self.pt(task), self.addr + index * PAGE_SIZE)

    def access(self, task: Task, index: int, write: bool = False, value: int = 0) -> int:
        return run(user_access(self.k, task, self.addr + index * PAGE_SIZE, write, value))


def _dirty(k: Kernel, pfn: int) -> bool:
    return bool(int(k.mem.flags[pfn]) & k.pf.mask("PG_dirty"))


# --- the PMD's dirty bit goes to PG_dirty ---------------------------------------------------


class DirtySplit(NamedTuple):
    profile: str
    cite: str


DIRTY_ROWS = [
    DirtySplit(
        "5.7",
        "v5.7.14 mm/huge_memory.c:2302-2303 __split_huge_pmd_locked: pmd_dirty(old_pmd) -> "
        "SetPageDirty(page); :2335-2344 the PTEs are built from vm_page_prot (clean)",
    ),
    DirtySplit(
        "6.1",
        "v6.1.192 mm/huge_memory.c:2179-2181 __split_huge_pmd_locked: pmd_dirty(old_pmd) -> "
        "SetPageDirty(page); :2246-2263 no pte_mkdirty (the PTEs stay clean)",
    ),
]


@pytest.mark.parametrize("row", DIRTY_ROWS, ids=[r.profile for r in DIRTY_ROWS])
def test_split_of_a_dirty_pmd_marks_the_head_page_dirty(row: DirtySplit) -> None:
    t = Thp(row.profile)
    k = t.k
    # the write fault made the PMD dirty, not the page (a new anon THP is not PG_dirty)
    assert pte_dirty(get_pmd(t.pt(t.task), t.addr)), row.cite
    assert not _dirty(k, t.head), row.cite
    t.split(t.task)
    assert _dirty(k, t.head), row.cite
    assert not any(_dirty(k, t.head + i) for i in range(1, NR)), row.cite
    for index in (0, TAIL, LAST - 1):
        pte = t.pte(t.task, index)
        assert pte_pfn(pte) == t.head + index, row.cite
        assert pte_write(pte) and not pte_dirty(pte), row.cite
    assert t.access(t.task, 0) == 7, row.cite


# --- a write-protected PMD gives write-protected PTEs ---------------------------------------


class ReadOnlySplit(NamedTuple):
    profile: str
    cite: str


READONLY_ROWS = [
    ReadOnlySplit(
        "5.7",
        "v5.7.14 mm/huge_memory.c:1107-1108 copy_huge_pmd write-protects both PMDs; :2304 "
        "write = pmd_write(old_pmd), :2335-2338 mk_pte, maybe_mkwrite, then pte_wrprotect "
        "when !write",
    ),
    ReadOnlySplit(
        "6.1",
        "v6.1.192 mm/huge_memory.c:1181,1184 copy_huge_pmd write-protects both PMDs; :2183 "
        "write = pmd_write(old_pmd), :2246-2251 mk_pte, maybe_mkwrite, then pte_wrprotect "
        "when !write",
    ),
]


@pytest.mark.parametrize("row", READONLY_ROWS, ids=[r.profile for r in READONLY_ROWS])
def test_split_of_a_write_protected_pmd_keeps_the_ptes_write_protected(
    row: ReadOnlySplit,
) -> None:
    t = Thp(row.profile)
    child = t.k.tasks[run(P.sys_fork(t.k, t.task))]
    assert not pte_write(get_pmd(t.pt(t.task), t.addr)), row.cite
    t.split(t.task)
    for index in (0, TAIL, LAST - 1):
        pte = t.pte(t.task, index)
        assert pte_pfn(pte) == t.head + index, row.cite
        assert not pte_write(pte), row.cite
    # so the parent's store faults and copies the page: the child keeps what fork shared
    t.access(t.task, TAIL, True, 555)
    assert pte_pfn(t.pte(t.task, TAIL)) not in range(t.head, t.head + NR), row.cite
    assert pte_pfn(get_pmd(t.pt(child), t.addr)) == t.head, row.cite
    assert (t.access(t.task, TAIL), t.access(child, TAIL)) == (555, 0), row.cite
    assert (t.access(t.task, 0), t.access(child, 0)) == (7, 7), row.cite
