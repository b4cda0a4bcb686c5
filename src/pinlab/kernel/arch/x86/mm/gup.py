"""x86's own lockless get_user_pages_fast (v4.4 arch/x86/mm/gup.c).

Before v4.13 x86 did not use mm/gup.c's generic walk.  The walk runs with
interrupts disabled: an unmapper frees pages and page tables only after its
TLB-flush IPI has run on every CPU of the mm (arch/x86/mm/tlb.py), so a page
whose entry the walk read stays allocated until interrupts are back on.  Hence
a plain get_page() and no second look at the entry; a PMD being split
(pmd_trans_splitting) sends the caller to the slow path.  `mm` stands for
current->mm.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Violation, Yield
from pinlab.kernel.arch.x86.irqflags import local_irq_disable, local_irq_enable
from pinlab.kernel.mm.gup import get_user_pages_unlocked
from pinlab.kernel.mm.gup_flags import FOLL_GET, FOLL_WRITE
from pinlab.kernel.mm.gup_page import Pages, gup_returned_hook
from pinlab.kernel.mm.memmap import HUGETLB_PAGE_DTOR, PAGE_MAPPING_ANON, compound_head
from pinlab.kernel.mm.page_ref import page_ref_add
from pinlab.kernel.mm.pgtable import (
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_SPECIAL,
    _PAGE_SPLITTING,
    _PAGE_USER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    PUD_SHIFT,
    PUD_SIZE,
    TASK_SIZE,
    pmd_key,
    pte_footprint,
    pte_pfn,
    pte_protnone,
    pud_key,
    pxd_addr_end,
)
from pinlab.kernel.mm.types import MmStruct

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

U64 = (1 << 64) - 1
# v4.4 arch/x86/include/asm/page_64_types.h __VIRTUAL_MASK_SHIFT
VIRTUAL_MASK_SHIFT = 47


@dataclass(slots=True)
class Out:
    """The walk's output: the caller's pages[] and the kernel's `int nr`."""

    pages: Pages
    nr: int = 0

    def store(self, page: int) -> None:
        """pages[*nr] = page; past the caller's array the kernel would corrupt memory."""
        if self.nr >= self.pages.shape[0]:
            raise Violation("gup-fast pages[] overrun", f"entry {self.nr} of {self.pages.shape[0]}")
        self.pages[self.nr] = page


def _page_keys(page: int, *fields: str) -> frozenset[Hashable]:
    return frozenset(("page", page, f) for f in fields)


def _access_mask(write: bool) -> int:
    """v4.4 arch/x86/mm/gup.c:77-79 (and :124-126, :200-202): present, user, RW to write."""
    return _PAGE_PRESENT | _PAGE_USER | (_PAGE_RW if write else 0)


def get_page(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v4.4 include/linux/mm.h:491 get_page: atomic_inc of _count, no test of its value.

    The VM_BUG_ON_PAGE on a zero count is CONFIG_DEBUG_VM only.  A tail page would go
    through mm/swap.c __get_page_tail; no 4.4 PTE maps one in the model (a THP is
    mapped by its PMD until split_huge_page splits page and PMD together).
    """
    yield Point("get_page", reads=_page_keys(page, "head"), writes=_page_keys(page, "refcount"))
    if compound_head(k.mem, page) != page:
        raise Unmodelled("get_page", "v4.4 gup-fast of a tail page mapped by a PTE")
    page_ref_add(k.mem, page, 1)


def set_page_referenced(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v4.4 include/linux/page-flags.h SetPageReferenced: atomic set_bit."""
    yield Point("SetPageReferenced", writes=_page_keys(page, "flags"))
    k.mem.flags[page] |= k.pf.mask("PG_referenced")


def gup_pte_range(
    k: Kernel, mm: MmStruct, addr: int, end: int, write: bool, out: Out
) -> Generator[Yield, None, bool]:
    """v4.4 arch/x86/mm/gup.c:71 gup_pte_range: get_page per entry, the entry never re-read."""
    slot = addr >> PMD_SHIFT
    table = mm.pgtable.pte[slot]
    mask = _access_mask(write)
    while True:
        if addr >> PMD_SHIFT != slot:
            # Only a zero-length walk (end == start) gets here: ptep++ leaves the table.
            raise Violation("gup-fast walked off the PTE table", f"at {addr:#x}")
        yield Point("gup_get_pte", reads=pte_footprint(mm.id, addr))
        pte = int(table[(addr >> PAGE_SHIFT) & 511])
        # :87-90 NUMA hinting entries take the slow path
        if pte_protnone(pte):
            return False
        # :92-95 not present, not user, not writable for a write, or special
        if pte & (mask | _PAGE_SPECIAL) != mask:
            return False
        page = pte_pfn(pte)
        yield from get_page(k, page)
        yield from set_page_referenced(k, page)
        out.store(page)
        out.nr += 1
        addr += PAGE_SIZE
        if addr == end:
            return True


def compound_tail_refcounted(k: Kernel, head: int) -> bool:
    """v4.4 include/linux/mm.h:458-475: anon, not slab, not hugetlb (PageHeadHuge)."""
    m = k.mem
    anon = bool(int(m.mapping[head]) & PAGE_MAPPING_ANON)
    slab = bool(int(m.flags[head]) & k.pf.mask("PG_slab"))
    return anon and not slab and int(m.dtor[head + 1]) != HUGETLB_PAGE_DTOR


def gup_huge(
    k: Kernel, mm: MmStruct, level: int, addr: int, end: int, write: bool, out: Out
) -> Generator[Yield, None, bool]:
    """v4.4 arch/x86/mm/gup.c:117 gup_huge_pmd / :193 gup_huge_pud.

    Each tail page taken counts on its own _mapcount (get_huge_page_tail, v4.4
    include/linux/mm.h:477) when compound_tail_refcounted; then the head's _count
    gets them all at once and PG_referenced (get_head_page_multiple, :109).
    """
    table = mm.pgtable.pmd if level == PMD_SHIFT else mm.pgtable.pud
    entry = table.get(addr >> level, 0)
    mask = _access_mask(write)
    if entry & mask != mask:
        return False
    head = pte_pfn(entry)
    first = head + ((addr & ((1 << level) - 1)) >> PAGE_SHIFT)
    refs = (end - addr) >> PAGE_SHIFT
    tails = [p for p in range(first, first + refs) if p != head]
    facts = _page_keys(head, "mapping", "flags") | _page_keys(head + 1, "dtor")
    # :136-144 the tail increments are atomics on pages only a split (which waits for
    # this CPU's interrupts, pmdp_splitting_flush) or a put of a tail reference touches,
    # so their order among themselves does not matter: one step.
    yield Point(
        "get_huge_page_tail",
        reads=facts,
        writes=frozenset(("page", p, "mapcount") for p in tails),
    )
    counted = compound_tail_refcounted(k, head)
    for page in range(first, first + refs):
        out.store(page)
        if page != head and counted:
            k.mem.mapcount[page] += 1
        out.nr += 1
    # :145 get_head_page_multiple: atomic_add(refs, &head->_count), then SetPageReferenced
    yield Point("get_head_page_multiple", writes=_page_keys(head, "refcount"))
    page_ref_add(k.mem, head, refs)
    yield from set_page_referenced(k, head)
    return True


def gup_pmd_range(
    k: Kernel, mm: MmStruct, addr: int, end: int, write: bool, out: Out
) -> Generator[Yield, None, bool]:
    """v4.4 arch/x86/mm/gup.c:150 gup_pmd_range: none or splitting PMDs end the walk."""
    while True:
        nxt = pxd_addr_end(addr, end, PMD_SIZE)
        slot = addr >> PMD_SHIFT
        yield Point("gup_pmd_range:read", reads=frozenset({pmd_key(mm.id, addr)}))
        # The model's pmd map holds huge PMDs only; a PTE table stands for a table PMD.
        pmd = mm.pgtable.pmd.get(slot, 0)
        if pmd & _PAGE_PSE:
            # :172-173 pmd_trans_splitting: the slow path waits for the split;
            # :180-181 NUMA hinting (pmd_protnone) takes the slow path too
            if pmd & _PAGE_SPLITTING or pte_protnone(pmd):
                return False
            if not (yield from gup_huge(k, mm, PMD_SHIFT, addr, nxt, write, out)):
                return False
        elif slot not in mm.pgtable.pte:
            return False  # :172 pmd_none
        elif not (yield from gup_pte_range(k, mm, addr, nxt, write, out)):
            return False
        addr = nxt
        if addr == end:
            return True


def gup_pud_range(
    k: Kernel, mm: MmStruct, addr: int, end: int, write: bool, out: Out
) -> Generator[Yield, None, bool]:
    """v4.4 arch/x86/mm/gup.c:226 gup_pud_range (no PGD/P4D level in the model).

    The model keeps PUD entries only for 1 GiB hugetlb pages; a PUD with no PMD entry
    or PTE table under it is pmd_none at the next level, which ends the walk the same way.
    """
    while True:
        nxt = pxd_addr_end(addr, end, PUD_SIZE)
        yield Point("gup_pud_range:read", reads=frozenset({pud_key(mm.id, addr)}))
        if mm.pgtable.pud.get(addr >> PUD_SHIFT, 0):
            if not (yield from gup_huge(k, mm, PUD_SHIFT, addr, nxt, write, out)):
                return False
        elif not (yield from gup_pmd_range(k, mm, addr, nxt, write, out)):
            return False
        addr = nxt
        if addr == end:
            return True


def __get_user_pages_fast(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, write: bool, pages: Pages
) -> Generator[Yield, None, int]:
    """v4.4 arch/x86/mm/gup.c:255 __get_user_pages_fast: the walk only, never the slow path."""
    start &= ~(PAGE_SIZE - 1) & U64
    length = (nr_pages << PAGE_SHIFT) & U64
    end = (start + length) & U64
    # :269-271 access_ok (v4.4 arch/x86/include/asm/uaccess.h __range_not_ok)
    if start + length > TASK_SIZE:
        return 0
    out = Out(pages)
    # :291-302 local_irq_save / local_irq_restore around the walk
    yield from local_irq_disable(k, mm)
    yield from gup_pud_range(k, mm, start, end, write, out)
    yield from local_irq_enable(k, mm)
    return out.nr


def get_user_pages_fast(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, write: bool, pages: Pages
) -> Generator[Yield, None, int]:
    """v4.4 arch/x86/mm/gup.c:323 get_user_pages_fast: the walk, then the slow path for the rest."""
    start &= ~(PAGE_SIZE - 1) & U64
    # :334 the int count widens to unsigned long: a negative one becomes huge
    length = (nr_pages << PAGE_SHIFT) & U64
    end = start + length
    nr = 0
    # :337-342 a wrapping range or one past the 47-bit user space goes straight to the slow path
    if end <= U64 and not end >> VIRTUAL_MASK_SHIFT:
        out = Out(pages)
        # :363-374 interrupts off for the whole walk; on again before either return
        yield from local_irq_disable(k, mm)
        done = yield from gup_pud_range(k, mm, start, end, write, out)
        yield from local_irq_enable(k, mm)
        nr = out.nr
        yield from gup_returned_hook(k, pages, nr)
        if done:
            return nr
    end &= U64
    # :385-391 the rest through get_user_pages_unlocked (v4.4 mm/gup.c:795, adds FOLL_TOUCH;
    # __get_user_pages_locked adds FOLL_GET for a pages array)
    start += nr << PAGE_SHIFT
    flags = FOLL_GET | (FOLL_WRITE if write else 0)
    rest = ((end - start) & U64) >> PAGE_SHIFT
    ret = yield from get_user_pages_unlocked(k, mm, start, rest, pages[nr:], flags)
    # :394-399 pages already taken win over a slow-path error
    if nr > 0:
        return nr if ret < 0 else ret + nr
    return ret
