"""gup-fast's lockless page-table walk (v6.1 mm/gup.c 2414-3000): lockless_pages_from_mm.

The walk takes no lock: it reads each entry, grabs the folio, then re-reads
the entry and backs off if it changed.  It stops at the first entry it cannot
handle (not present, not permitted, special, must unshare, not long-term
pinnable, ...); gup_fast.py's callers then finish the range on the slow path unless
FOLL_FAST_ONLY.  When `k.fine_grained` is False and no design hook is installed, the
walk runs as one whole-range step (gup_fast_range.py) leaving the same state.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Violation, Yield
from pinlab.kernel.mm.gup_fast_range import fast_range_ok, lockless_range
from pinlab.kernel.mm.gup_flags import (
    FOLL_FORCE,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_PIN,
    FOLL_WRITE,
)
from pinlab.kernel.mm.gup_grab import try_grab_folio
from pinlab.kernel.mm.gup_page import Pages, folio_fast_pin_allowed, gup_must_unshare
from pinlab.kernel.mm.gup_put import gup_put_folio
from pinlab.kernel.mm.memmap import (
    compound_head,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_USER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    PUD_SHIFT,
    PUD_SIZE,
    pmd_key,
    pte_devmap,
    pte_footprint,
    pte_pfn,
    pte_protnone,
    pte_special,
    pte_write,
    pud_key,
    pxd_addr_end,
)
from pinlab.kernel.mm.types import MmStruct
from pinlab.kernel.profiles import NotInKernel

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

U64 = (1 << 64) - 1
# v6.1 arch/x86/include/asm/page_64_types.h __VIRTUAL_MASK_SHIFT, 4-level paging
VIRTUAL_MASK_SHIFT = 47


@dataclass(slots=True)
class Walk:
    """The walk's output: the caller's pages[] and the kernel's `int *nr`."""

    pages: Pages
    nr: int = 0


def _store(w: Walk, at: int, page: int) -> None:
    """pages[at] = page; past the caller's array the kernel would corrupt memory."""
    if at >= w.pages.shape[0]:
        raise Violation("gup-fast pages[] overrun", f"entry {at} of {w.pages.shape[0]}")
    w.pages[at] = page


def access_permitted(entry: int, write: bool) -> bool:
    """v6.1 arch/x86/include/asm/pgtable.h __pte_access_permitted (pkeys always allow)."""
    need = _PAGE_PRESENT | _PAGE_USER | (_PAGE_RW if write else 0)
    return entry & need == need


def folio_set_referenced(k: Kernel, folio: int) -> Generator[Yield, None, None]:
    """v6.1 include/linux/page-flags.h folio_set_referenced: atomic set of PG_referenced."""
    yield Point("folio_set_referenced", writes=frozenset({("page", folio, "flags")}))
    k.mem.flags[folio] |= k.pf.mask("PG_referenced")


def gup_pte_range(
    k: Kernel, mm: MmStruct, addr: int, end: int, flags: int, w: Walk
) -> Generator[Yield, None, bool]:
    """v6.1 mm/gup.c gup_pte_range (CONFIG_ARCH_HAS_PTE_SPECIAL): True if it reached `end`."""
    slot = addr >> PMD_SHIFT
    table = mm.pgtable.pte[slot]
    write = bool(flags & FOLL_WRITE)
    while True:
        if addr >> PMD_SHIFT != slot:
            # Only a zero-length walk (end == start) gets here: ptep++ leaves the table.
            raise Violation("gup-fast walked off the PTE table", f"at {addr:#x}")
        idx = (addr >> PAGE_SHIFT) & 511
        yield Point("gup_pte_range:read", reads=pte_footprint(mm.id, addr))
        pte = int(table[idx])
        # gup_can_follow_protnone (v6.1 include/linux/mm.h): FOLL_FORCE only
        if pte_protnone(pte) and not flags & FOLL_FORCE:
            return False
        if not access_permitted(pte, write):
            return False
        if pte_devmap(pte):
            if flags & FOLL_LONGTERM:
                return False
        elif pte_special(pte):
            return False
        page = pte_pfn(pte)
        folio = yield from try_grab_folio(k, page, 1, flags)
        if folio is None:
            return False
        yield Point("gup_pte_range:recheck", reads=pte_footprint(mm.id, addr))
        if (
            mm.pgtable.pte.get(slot) is not table
            or slot in mm.pgtable.pmd
            or int(table[idx]) != pte
            or not folio_fast_pin_allowed(k, folio, flags)
            or (not pte_write(pte) and gup_must_unshare(k, flags, page, fast=True))
        ):
            yield from gup_put_folio(k, folio, 1, flags)
            return False
        yield from folio_set_referenced(k, folio)
        _store(w, w.nr, page)
        w.nr += 1
        addr += PAGE_SIZE
        if addr == end:
            return True


def _device_huge(
    k: Kernel, first: int, refs: int, flags: int, w: Walk
) -> Generator[Yield, None, bool]:
    """v6.1 mm/gup.c __gup_device_huge: one try_grab_page per subpage; undo all on failure."""
    from pinlab.kernel.mm.gup_grab import try_grab_page

    start = w.nr
    for n in range(refs):
        page = first + n
        yield Point("SetPageReferenced", writes=frozenset({("page", page, "flags")}))
        k.mem.flags[page] |= k.pf.mask("PG_referenced")
        _store(w, w.nr, page)
        if not (yield from try_grab_page(k, page, flags)):
            yield from undo_dev_pagemap(k, w, start, flags)
            return False
        w.nr += 1
    return True


def undo_dev_pagemap(k: Kernel, w: Walk, start: int, flags: int) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c undo_dev_pagemap: clear PG_referenced and drop each page taken."""
    ref = k.pf.mask("PG_referenced")
    while w.nr > start:
        w.nr -= 1
        page = int(w.pages[w.nr])
        yield Point("ClearPageReferenced", writes=frozenset({("page", page, "flags")}))
        k.mem.flags[page] &= ~ref & U64
        how = FOLL_PIN if flags & FOLL_PIN else FOLL_GET
        yield from gup_put_folio(k, compound_head(k.mem, page), 1, how)


def gup_huge_entry(
    k: Kernel, mm: MmStruct, level: int, addr: int, end: int, flags: int, w: Walk
) -> Generator[Yield, None, bool]:
    """v6.1 mm/gup.c gup_huge_pmd / gup_huge_pud: one batched grab for the whole chunk."""
    table = mm.pgtable.pmd if level == PMD_SHIFT else mm.pgtable.pud
    slot = addr >> level
    key = frozenset({pmd_key(mm.id, addr) if level == PMD_SHIFT else pud_key(mm.id, addr)})
    orig = table.get(slot, 0)
    if not access_permitted(orig, bool(flags & FOLL_WRITE)):
        return False
    head = pte_pfn(orig)
    page = head + ((addr & ((1 << level) - 1)) >> PAGE_SHIFT)
    refs = (end - addr) >> PAGE_SHIFT
    if pte_devmap(orig):
        if flags & FOLL_LONGTERM:
            return False
        start = w.nr
        if not (yield from _device_huge(k, page, refs, flags, w)):
            return False
        yield Point("gup_huge:recheck", reads=key)
        if table.get(slot, 0) != orig:
            yield from undo_dev_pagemap(k, w, start, flags)
            return False
        return True
    for n in range(refs):
        _store(w, w.nr + n, page + n)
    folio = yield from try_grab_folio(k, page, refs, flags)
    if folio is None:
        return False
    yield Point("gup_huge:recheck", reads=key)
    if (
        table.get(slot, 0) != orig
        or not folio_fast_pin_allowed(k, folio, flags)
        or (not pte_write(orig) and gup_must_unshare(k, flags, folio, fast=True))
    ):
        yield from gup_put_folio(k, folio, refs, flags)
        return False
    w.nr += refs
    yield from folio_set_referenced(k, folio)
    return True


def gup_pgd_range(
    k: Kernel, mm: MmStruct, addr: int, end: int, flags: int, w: Walk
) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c gup_pgd_range .. gup_pmd_range: the lockless walk, level by level.

    The model keeps no PGD/P4D and no PUD tables: a missing lower table ends
    the walk exactly as a none upper entry would.
    """
    while True:
        pud_next = pxd_addr_end(addr, end, PUD_SIZE)
        yield Point("gup_pud_range:read", reads=frozenset({pud_key(mm.id, addr)}))
        if mm.pgtable.pud.get(addr >> PUD_SHIFT, 0):
            if not (yield from gup_huge_entry(k, mm, PUD_SHIFT, addr, pud_next, flags, w)):
                return
        else:
            while True:
                nxt = pxd_addr_end(addr, pud_next, PMD_SIZE)
                slot = addr >> PMD_SHIFT
                yield Point("gup_pmd_range:read", reads=frozenset({pmd_key(mm.id, addr)}))
                pmd = mm.pgtable.pmd.get(slot, 0)
                if pmd & _PAGE_PSE:
                    if pte_protnone(pmd) and not flags & FOLL_FORCE:
                        return
                    if not (yield from gup_huge_entry(k, mm, PMD_SHIFT, addr, nxt, flags, w)):
                        return
                elif slot in mm.pgtable.pte:
                    if not (yield from gup_pte_range(k, mm, addr, nxt, flags, w)):
                        return
                else:
                    return
                addr = nxt
                if addr == pud_next:
                    break
        addr = pud_next
        if addr == end:
            return


def lockless_pages_from_mm(
    k: Kernel, mm: MmStruct, start: int, end: int, flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c lockless_pages_from_mm: pages grabbed without mmap_lock (0 on a fork race)."""
    if k.profile.gup_fast != "generic":
        raise NotInKernel("mm/gup.c's generic gup-fast (x86 has its own)", k.profile)
    # gup_fast_permitted (v6.1 arch/x86/include/asm/pgtable_64.h)
    if end >> VIRTUAL_MASK_SHIFT:
        return 0
    seq = 0
    pin = bool(flags & FOLL_PIN) and k.profile.write_protect_seq
    wpseq = frozenset({("mm", mm.id, "wpseq")})
    if pin:
        yield Point("raw_read_seqcount", reads=wpseq)
        seq = mm.write_protect_seq
        if seq & 1:
            return 0
    if fast_range_ok(k, flags, start, end):
        yield "gup_fast:range"
        done = lockless_range(k, mm, start, end, flags, pages)
        if done is not None:
            return done
    w = Walk(pages)
    yield from gup_pgd_range(k, mm, start, end, flags, w)
    if pin:
        yield Point("read_seqcount_retry", reads=wpseq)
        if mm.write_protect_seq != seq:
            yield from unpin_user_pages_lockless(k, pages, w.nr)
            return 0
    return w.nr


def unpin_user_pages_lockless(k: Kernel, pages: Pages, npages: int) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c unpin_user_pages_lockless: one gup_put_folio per folio run, no checks."""
    i = 0
    while i < npages:
        folio = compound_head(k.mem, int(pages[i]))
        nr = 1
        while i + nr < npages and compound_head(k.mem, int(pages[i + nr])) == folio:
            nr += 1
        yield from gup_put_folio(k, folio, nr, FOLL_PIN)
        i += nr
