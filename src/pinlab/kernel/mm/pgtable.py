"""Page tables: x86-64 PTE/PMD/PUD entries and an mm's sparse table tree.

Entries use the hardware bit layout (v6.1 arch/x86/include/asm/pgtable_types.h)
so whole PTE tables are NumPy uint64 arrays and range walks vectorise.  The
tree is kept by PMD slot: a slot holds a PTE table, or a huge PMD (2 MiB); a
PUD slot may hold a huge PUD (1 GiB hugetlb).  Upper levels (PGD, P4D) hold
nothing a pin depends on and are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
PUD_SHIFT = 30
PUD_SIZE = 1 << PUD_SHIFT
PTRS_PER_PTE = 512
HPAGE_PMD_ORDER = PMD_SHIFT - PAGE_SHIFT
HPAGE_PUD_ORDER = PUD_SHIFT - PAGE_SHIFT
# v6.1 arch/x86/include/asm/page_64_types.h TASK_SIZE_MAX with 4-level paging
TASK_SIZE = (1 << 47) - PAGE_SIZE

# v6.1 arch/x86/include/asm/pgtable_types.h _PAGE_BIT_*
_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_USER = 1 << 2
_PAGE_ACCESSED = 1 << 5
_PAGE_DIRTY = 1 << 6
_PAGE_PSE = 1 << 7
_PAGE_PROTNONE = 1 << 8
_PAGE_SPECIAL = 1 << 9
# v4.4 arch/x86/include/asm/pgtable_types.h:25,49 _PAGE_SPLITTING (_PAGE_BIT_SOFTW2): set on a
# huge PMD by pmdp_splitting_flush while split_huge_page works on its THP (gone in v4.5)
_PAGE_SPLITTING = 1 << 10
_PAGE_DEVMAP = 1 << 58
PTE_PFN_MASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)


def pfn_pte(pfn: int, prot: int) -> int:
    """v6.1 arch/x86/include/asm/pgtable.h pfn_pte: a present entry for `pfn`."""
    return (pfn << PAGE_SHIFT) | prot | _PAGE_PRESENT


def pte_pfn(pte: int) -> int:
    """v6.1 arch/x86/include/asm/pgtable.h pte_pfn."""
    return (pte & PTE_PFN_MASK) >> PAGE_SHIFT


def pte_present(pte: int) -> bool:
    """v6.1 arch/x86/include/asm/pgtable.h pte_present: present or PROT_NONE."""
    return bool(pte & (_PAGE_PRESENT | _PAGE_PROTNONE))


def pte_protnone(pte: int) -> bool:
    """v6.1 arch/x86/include/asm/pgtable.h pte_protnone: PROTNONE without PRESENT."""
    return pte & (_PAGE_PROTNONE | _PAGE_PRESENT) == _PAGE_PROTNONE


def pte_devmap(pte: int) -> bool:
    """v6.1 arch/x86/include/asm/pgtable.h pte_devmap (fsdax mappings)."""
    return bool(pte & _PAGE_DEVMAP)


def pte_write(pte: int) -> bool:
    """v6.1 arch/x86/include/asm/pgtable.h pte_write."""
    return bool(pte & _PAGE_RW)


def pte_dirty(pte: int) -> bool:
    """v6.1 arch/x86/include/asm/pgtable.h pte_dirty."""
    return bool(pte & _PAGE_DIRTY)


def pte_young(pte: int) -> bool:
    """v6.1 arch/x86/include/asm/pgtable.h pte_young."""
    return bool(pte & _PAGE_ACCESSED)


def pte_special(pte: int) -> bool:
    """v6.1 arch/x86/include/asm/pgtable.h pte_special (the zero page is mapped special)."""
    return bool(pte & _PAGE_SPECIAL)


def pte_wrprotect(pte: int) -> int:
    """v6.1 arch/x86/include/asm/pgtable.h pte_wrprotect."""
    return pte & ~_PAGE_RW


def pte_mkyoung(pte: int) -> int:
    """v6.1 arch/x86/include/asm/pgtable.h pte_mkyoung."""
    return pte | _PAGE_ACCESSED


def pte_mkdirty(pte: int) -> int:
    """v6.1 arch/x86/include/asm/pgtable.h pte_mkdirty."""
    return pte | _PAGE_DIRTY


def pte_mkold(pte: int) -> int:
    """v6.1 arch/x86/include/asm/pgtable.h pte_mkold."""
    return pte & ~_PAGE_ACCESSED


def pte_mkclean(pte: int) -> int:
    """v6.1 arch/x86/include/asm/pgtable.h pte_mkclean."""
    return pte & ~_PAGE_DIRTY


def pte_modify(pte: int, newprot: int) -> int:
    """v6.1 arch/x86/include/asm/pgtable.h pte_modify: new protections, PFN/dirty/young kept."""
    keep = PTE_PFN_MASK | _PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_PSE | _PAGE_SPECIAL | _PAGE_DEVMAP
    return (pte & keep) | newprot


# v6.1 arch/x86/include/asm/pgtable_types.h PAGE_NONE / PAGE_READONLY / PAGE_COPY /
# PAGE_SHARED: every user protection carries _PAGE_ACCESSED; only shared-writable RW.
PAGE_NONE = _PAGE_PROTNONE | _PAGE_ACCESSED
PAGE_READONLY = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED
PAGE_SHARED = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED


def pmd_trans_huge(pmd: int) -> bool:
    """v6.1 arch/x86/include/asm/pgtable.h pmd_trans_huge: a present PSE entry."""
    return bool(pmd & _PAGE_PSE) and bool(pmd & _PAGE_PRESENT)


def pte_key(mm_id: int, addr: int) -> tuple[str, int, int]:
    """Footprint key of the PTE mapping `addr`."""
    return ("pte", mm_id, addr & ~(PAGE_SIZE - 1))


def pmd_key(mm_id: int, addr: int) -> tuple[str, int, int]:
    """Footprint key of the PMD entry covering `addr`: a huge PMD or the PTE table under it.

    Every step that reads or writes a PTE also reads this key; every step that
    changes the PMD (install or split a huge PMD, zap it, allocate or free the
    PTE table) writes it, so PMD-level and PTE-level steps never look independent.
    """
    return ("pmd", mm_id, addr >> PMD_SHIFT)


def pud_key(mm_id: int, addr: int) -> tuple[str, int, int]:
    """Footprint key of the PUD entry covering `addr` (1 GiB hugetlb entries)."""
    return ("pud", mm_id, addr >> PUD_SHIFT)


def pte_footprint(mm_id: int, addr: int) -> frozenset[tuple[str, int, int]]:
    """The keys a PTE-level step touches: the PTE and the PMD above it."""
    return frozenset({pte_key(mm_id, addr), pmd_key(mm_id, addr)})


@dataclass(slots=True)
class PageTable:
    """One mm's page tables, by PMD slot (addr >> PMD_SHIFT) and PUD slot."""

    pte: dict[int, NDArray[np.uint64]] = field(default_factory=dict)
    pmd: dict[int, int] = field(default_factory=dict)
    pud: dict[int, int] = field(default_factory=dict)


def pte_table(pt: PageTable, addr: int) -> NDArray[np.uint64]:
    """The PTE table covering `addr`, allocated empty if absent (v6.1 mm/memory.c __pte_alloc)."""
    slot = addr >> PMD_SHIFT
    table = pt.pte.get(slot)
    if table is None:
        table = np.zeros(PTRS_PER_PTE, np.uint64)
        pt.pte[slot] = table
    return table


def pte_index(addr: int) -> int:
    """v6.1 include/linux/pgtable.h pte_index."""
    return (addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)


def get_pte(pt: PageTable, addr: int) -> int:
    """The PTE for `addr`, 0 (pte_none) when no PTE table covers it."""
    table = pt.pte.get(addr >> PMD_SHIFT)
    return 0 if table is None else int(table[pte_index(addr)])


def set_pte_at(pt: PageTable, addr: int, pte: int) -> None:
    """v6.1 include/linux/pgtable.h set_pte_at."""
    pte_table(pt, addr)[pte_index(addr)] = pte


def get_pmd(pt: PageTable, addr: int) -> int:
    """The huge PMD for `addr`, 0 when the slot is none or holds a PTE table."""
    return pt.pmd.get(addr >> PMD_SHIFT, 0)


def pxd_addr_end(addr: int, end: int, size: int) -> int:
    """p?d_addr_end (v6.1 include/linux/pgtable.h, v4.4 include/asm-generic/pgtable.h): the
    next `size` boundary after `addr`, or `end` if sooner (compared as unsigned longs)."""
    u64 = (1 << 64) - 1
    boundary = ((addr + size) & ~(size - 1)) & u64
    return boundary if (boundary - 1) & u64 < (end - 1) & u64 else end
