"""Edges of fork's page-table copy, each row a kernel fact: what the child's huge PMD of a
shared THP looks like, and that a store by either side after fork stays its own.  Observed:
the PMD entries' bits, the frame behind each side's address, and the data tokens each reads."""

from __future__ import annotations

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.mmap import (
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import PMD_SIZE, get_pmd, pte_pfn, pte_write, pte_young
from pinlab.kernel.state import BootParams, boot
from pinlab.kernel.uaccess import user_access

ADDR = 0x7F00_0000_0000  # PMD aligned
RW = PROT_READ | PROT_WRITE
OLD, PARENT, CHILD = 7, 8, 9  # data tokens: before fork, the parent's store, the child's


# --- copy_huge_pmd: the THP is shared write-protected on both sides, the child's entry old ---
# v6.1.192 mm/huge_memory.c copy_huge_pmd :1181 pmdp_set_wrprotect (the parent's PMD), :1184
# pmd_mkold(pmd_wrprotect(pmd)) set in the child; v5.7.14 mm/huge_memory.c copy_huge_pmd
# :1107-1108 the same.  A store on either side then faults (do_huge_pmd_wp_page) and gets its
# own copy, the other side keeping the THP's data.


@pytest.mark.parametrize("profile", ["6.1", "5.7"])
def test_child_huge_pmd_is_write_protected_and_old(profile: str) -> None:
    k = boot(profile, BootParams(normal_mb=16))
    parent = P.new_task(k)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    assert run(P.sys_mmap(k, parent, ADDR, PMD_SIZE, RW, flags)) == ADDR
    assert run(P.sys_madvise(k, parent, ADDR, PMD_SIZE, MADV_HUGEPAGE)) == 0
    run(user_access(k, parent, ADDR, True, OLD))
    before = get_pmd(k.mms[parent.mm].pgtable, ADDR)
    assert before and pte_write(before) and pte_young(before)
    child = k.tasks[run(P.sys_fork(k, parent))]
    mine = get_pmd(k.mms[parent.mm].pgtable, ADDR)
    theirs = get_pmd(k.mms[child.mm].pgtable, ADDR)
    assert pte_pfn(theirs) == pte_pfn(mine) == pte_pfn(before)
    assert not pte_write(mine)
    assert not pte_write(theirs)
    assert not pte_young(theirs)
    # the child's store is its own: the parent still reads the THP's data, and back
    run(user_access(k, child, ADDR, True, CHILD))
    assert run(user_access(k, parent, ADDR, False)) == OLD
    run(user_access(k, parent, ADDR, True, PARENT))
    assert run(user_access(k, child, ADDR, False)) == CHILD
    assert run(user_access(k, parent, ADDR, False)) == PARENT
