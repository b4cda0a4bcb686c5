"""A fault's PTE table: __pte_alloc and the pmd_trans_unstable check after it.

A THP fault that fell back, or one that found a none PMD with THPs off, races other
faults of the same mm for the PMD: the table is installed only if the PMD is still none
under the PMD lock, and a PMD that is none or huge afterwards ends the fault with 0, to
be retried.  The model's PMD lock is the PTE lock of that slot (locking.pte_lock).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np

from pinlab.interleave import Footprint, Point, Yield
from pinlab.kernel.mm.huge_memory import pmd_none
from pinlab.kernel.mm.huge_memory_4_4 import pmd_trans_huge as pmd_trans_huge_4_4
from pinlab.kernel.mm.huge_memory_4_4 import pmd_trans_splitting, wait_split_huge_page
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.pgtable import PMD_SHIFT, PTRS_PER_PTE, get_pmd, pmd_key, pmd_trans_huge

if TYPE_CHECKING:
    from pinlab.kernel.mm.types import MmStruct, VmArea
    from pinlab.kernel.state import Kernel


def pmd_trans_unstable(k: Kernel, mm: MmStruct, address: int) -> bool:
    """v6.1 include/linux/pgtable.h pmd_trans_unstable (v5.7.14
    include/asm-generic/pgtable.h:1060, :1003; v4.4.178 :737, :695): the PMD is none or
    huge (v4.4's pmd_trans_huge is _PAGE_PSE alone)."""
    huge = pmd_trans_huge_4_4 if k.profile.thp_tail_refs_in_mapcount else pmd_trans_huge
    return pmd_none(mm.pgtable, address) or huge(get_pmd(mm.pgtable, address))


def pte_alloc(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, then: Footprint = frozenset()
) -> Generator[Yield, None, bool]:
    """pte_alloc, then pmd_trans_unstable: whether the fault goes on to the PTE.

    A none PMD gets a table under the PMD lock if it is still none (v6.1.192 mm/memory.c
    __pte_alloc :466 -> pmd_install :440-444; v5.7.14 :423-451; v4.4.178 :555-591, which
    also waits out a PMD being split).  The unlocked pmd_trans_unstable read after it
    (v6.1.192 do_anonymous_page :4158-4163, v5.7.14 :3331-3336, v4.4.178
    __handle_mm_fault :3450-3465) is its own step only when the PMD is huge by then:
    another thread may split it into a table (or zap it) first.  A table stays one under
    mmap_lock, so then the read is part of the step before.  v6.5 differs: no such read,
    the PMD is checked when the PTE is mapped under its lock, after the page is allocated
    (v6.5 mm/memory.c:4074-4126); the model runs 6.1's order for it.  ``then``: what the
    caller writes after this returns, before it yields again (footprint only; None:
    unknown).
    """
    slot = address >> PMD_SHIFT
    key = pmd_key(mm.id, address)
    if pmd_none(mm.pgtable, address):
        yield from pte_lock(k, mm, address)
        yield Point(
            "__pte_alloc", reads=frozenset({key}), writes=None if then is None else then | {key}
        )
        pmd = get_pmd(mm.pgtable, address)
        if pmd_none(mm.pgtable, address):
            mm.pgtable.pte[slot] = np.zeros(PTRS_PER_PTE, np.uint64)
        pte_unlock(k, mm, address)
        if k.profile.thp_tail_refs_in_mapcount and pmd_trans_splitting(pmd):
            yield from wait_split_huge_page(k, vma.anon_vma)
    if pmd_trans_unstable(k, mm, address):
        yield Point("pmd_trans_unstable", reads=frozenset({key}), writes=then)
    return not pmd_trans_unstable(k, mm, address)
