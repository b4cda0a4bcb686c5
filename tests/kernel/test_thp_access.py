"""A fault on a present, writable huge PMD (a spurious fault): huge_pmd_set_accessed.

Rows are facts of the 4.4.178, 5.7.14 and 6.1.192 trees; x86's pmdp_set_access_flags
(arch/x86/mm/pgtable.c, the same in all three) stores the new entry only for a write
fault, so a read fault leaves the PMD as it was.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import pytest
from tests.scenarios.searching import only_mm, only_task, search

from pinlab.explore import FinalCheck, GenThread
from pinlab.interleave import Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memory import (
    FAULT_FLAG_ALLOW_RETRY,
    FAULT_FLAG_USER,
    FAULT_FLAG_WRITE,
    handle_mm_fault,
)
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PSE,
    PMD_SHIFT,
    PMD_SIZE,
)
from pinlab.kernel.mm.pgtable import (
    pte_pfn as pmd_pfn,
)
from pinlab.kernel.mm.types import find_vma
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access


class Row(NamedTuple):
    profile: str
    write: bool
    young: bool  # the PMD's accessed bit afterwards
    dirty: bool  # the PMD's dirty bit afterwards
    cite: str


ROWS = [
    Row("4.4", True, True, False, "4.4.178 mm/huge_memory.c:1002 pmd_mkyoung(orig_pmd) only"),
    Row("5.7", True, True, True, "5.7.14 mm/huge_memory.c:1247-1249 mkyoung, mkdirty if write"),
    Row("6.1", True, True, True, "6.1.192 mm/huge_memory.c huge_pmd_set_accessed -> touch_pmd"),
    Row("4.4", False, False, False, "x86 pmdp_set_access_flags: stored only when dirty (write)"),
    Row("6.1", False, False, False, "x86 pmdp_set_access_flags: stored only when dirty (write)"),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.profile}-{'w' if r.write else 'r'}")
def test_spurious_fault_on_a_huge_pmd(row: Row) -> None:
    k = boot(row.profile, BootParams(normal_mb=8))
    task = P.new_task(k)
    region = run(
        P.sys_mmap(k, task, None, 2 * PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    )
    addr = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, task, addr, True, 1))
    mm = k.mms[task.mm]
    slot = addr >> PMD_SHIFT
    assert mm.pgtable.pmd[slot] & _PAGE_PSE, "a THP is mapped"
    mm.pgtable.pmd[slot] &= ~(_PAGE_ACCESSED | _PAGE_DIRTY)
    run(mmap_read_lock(k, mm))
    vma = find_vma(mm, addr)
    assert vma is not None
    flags = FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_USER | (FAULT_FLAG_WRITE if row.write else 0)
    assert run(handle_mm_fault(k, mm, vma, addr, flags)) == 0
    mmap_read_unlock(k, mm)
    pmd = mm.pgtable.pmd[slot]
    assert (bool(pmd & _PAGE_ACCESSED), bool(pmd & _PAGE_DIRTY)) == (row.young, row.dirty), row.cite


# --- the pmd_same test under the PMD lock, against a zap ---------------------------------
ADDR = 0x7F00_0000_0000  # PMD aligned


def _thp_kernel() -> Kernel:
    """6.1, one written THP at ADDR."""
    k = boot("6.1", BootParams(normal_mb=8))
    task = P.new_task(k)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    assert run(P.sys_mmap(k, task, ADDR, PMD_SIZE, PROT_READ | PROT_WRITE, flags)) == ADDR
    run(user_access(k, task, ADDR, True, 1))
    assert only_mm(k).pgtable.pmd[ADDR >> PMD_SHIFT] & _PAGE_PSE
    return k


def spurious_write_fault(k: Kernel) -> Generator[Yield, None, None]:
    mm = only_mm(k)
    yield from mmap_read_lock(k, mm)
    vma = find_vma(mm, ADDR)
    assert vma is not None
    flags = FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_USER | FAULT_FLAG_WRITE
    yield from handle_mm_fault(k, mm, vma, ADDR, flags)
    mmap_read_unlock(k, mm)


def dontneed(k: Kernel) -> Generator[Yield, None, None]:
    yield from P.sys_madvise(k, only_task(k), ADDR, PMD_SIZE, MADV_DONTNEED)


def _no_pmd_maps_a_free_frame(k: Kernel) -> bool:
    return all(int(k.mem.refcount[pmd_pfn(pmd)]) > 0 for pmd in only_mm(k).pgtable.pmd.values())


def test_a_zapped_huge_pmd_stays_zapped() -> None:
    """v6.1 mm/huge_memory.c huge_pmd_set_accessed: pmd_same(*pmd, orig_pmd) under the PMD
    lock (5.7.14 :1244, 4.4.178 :999): a fault that read the PMD before MADV_DONTNEED
    zapped it and freed the THP must not write the old entry back."""
    threads = (GenThread("fault", spurious_write_fault), GenThread("dontneed", dontneed))
    finals = (FinalCheck("pmd-maps-a-free-frame", _no_pmd_maps_a_free_frame),)
    res = search("thp-access-vs-zap", _thp_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert res.states > 2
    assert not res.violated, res.counterexamples
