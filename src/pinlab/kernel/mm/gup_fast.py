"""gup-fast: the lockless page-table walk of get/pin_user_pages_fast (v6.1 mm/gup.c 2414-3235).

The walk takes no lock: it reads each entry, grabs the folio, then re-reads
the entry and backs off if it changed.  It stops at the first entry it cannot
handle (not present, not permitted, special, must unshare, not long-term
pinnable, ...); the caller then finishes the range on the slow path unless
FOLL_FAST_ONLY.  `mm` stands for current->mm; callers do not hold mmap_lock.
When `k.fine_grained` is False and no design hook is installed, the walk
runs as one whole-range step (gup_fast_range.py) leaving the same state.
A profile with x86's own gup-fast (profile.gup_fast "x86": v4.4) runs
arch/x86/mm/gup.c's walk instead (kernel/arch/x86/mm/gup.py).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Violation, Yield
from pinlab.kernel import errno
from pinlab.kernel.arch.x86.mm import gup as x86_gup
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.mm.gup import (
    __gup_longterm_locked,
    get_user_pages_unlocked,
    is_valid_gup_args,
    mm_set_has_pinned_flag,
)
from pinlab.kernel.mm.gup_fast_range import fast_range_ok, lockless_range
from pinlab.kernel.mm.gup_flags import (
    FOLL_FAST_ONLY,
    FOLL_FORCE,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_NOFAULT,
    FOLL_PIN,
    FOLL_TOUCH,
    FOLL_WRITE,
    is_valid_gup_flags,
    require_gup_flags,
)
from pinlab.kernel.mm.gup_grab import try_grab_folio
from pinlab.kernel.mm.gup_page import Locked, Pages, gup_must_unshare
from pinlab.kernel.mm.gup_put import gup_put_folio
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memmap import (
    HUGETLB_PAGE_DTOR,
    PAGE_MAPPING_ANON,
    compound_head,
    folio_test_large,
)
from pinlab.kernel.mm.page_ref import wrap_s32
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
    TASK_SIZE,
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
from pinlab.kernel.profiles import NotInKernel, require_gup_api

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

U64 = (1 << 64) - 1
# v6.1 mm/gup.c internal_get_user_pages_fast: the only flags the fast API accepts
FAST_GUP_FLAGS = (
    FOLL_WRITE | FOLL_LONGTERM | FOLL_FORCE | FOLL_PIN | FOLL_GET | FOLL_FAST_ONLY | FOLL_NOFAULT
)
# v5.7.14 mm/gup.c:2780-2781: before FOLL_FAST_ONLY (v5.8) and FOLL_NOFAULT (v5.16)
FAST_GUP_FLAGS_5_7 = FOLL_WRITE | FOLL_LONGTERM | FOLL_FORCE | FOLL_PIN | FOLL_GET
# v6.1 arch/x86/include/asm/page_64_types.h __VIRTUAL_MASK_SHIFT, 4-level paging
VIRTUAL_MASK_SHIFT = 47
# v6.1 arch/x86/include/asm/page_64_types.h TASK_SIZE_MAX
TASK_SIZE_MAX = TASK_SIZE
# v6.1 include/linux/page-flags.h PAGE_MAPPING_FLAGS (anon | movable)
PAGE_MAPPING_FLAGS = 0x3


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


def folio_fast_pin_allowed(k: Kernel, folio: int, flags: int) -> bool:
    """v6.5 mm/gup.c folio_fast_pin_allowed: refuse PIN|LONGTERM|WRITE of file folios but shmem.

    Same series as the slow path's writable_file_mapping_allowed (Lorenzo
    Stoakes, v6.5), so it follows that profile fact; 6.1 has no such check.
    """
    if not k.profile.longterm_file_write_refused:
        return True
    want = FOLL_PIN | FOLL_LONGTERM | FOLL_WRITE
    if flags & want != want:
        return True
    m = k.mem
    if int(m.flags[folio]) & k.pf.mask("PG_slab"):
        warn_on_once(k, "mm/gup.c folio_fast_pin_allowed slab folio")
        return False
    if folio_test_large(m, folio) and int(m.dtor[folio + 1]) == HUGETLB_PAGE_DTOR:
        return True
    mapping = int(m.mapping[folio])
    if not mapping:
        return False
    if mapping & PAGE_MAPPING_FLAGS:
        return bool(mapping & PAGE_MAPPING_ANON)
    space = k.mappings.get(mapping >> 2)
    return space is not None and space.fs.is_shmem


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


def __gup_longterm_unlocked(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c __gup_longterm_unlocked: the slow path for what gup-fast left."""
    if gup_flags & FOLL_LONGTERM:
        yield from mmap_read_lock(k, mm)
        ret = yield from __gup_longterm_locked(k, mm, start, nr_pages, pages, gup_flags)
        mmap_read_unlock(k, mm)
        return ret
    return (yield from get_user_pages_unlocked(k, mm, start, nr_pages, pages, gup_flags))


def internal_get_user_pages_fast(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c internal_get_user_pages_fast: fast walk, then the slow path for the rest."""
    allowed = FAST_GUP_FLAGS_5_7 if k.profile.foll_flags == "5.7" else FAST_GUP_FLAGS
    if gup_flags & ~allowed:
        warn_on_once(k, "mm/gup.c internal_get_user_pages_fast gup_flags")
        return -errno.EINVAL
    if gup_flags & FOLL_PIN:
        yield from mm_set_has_pinned_flag(k, mm)
    # The int nr_pages widens to unsigned long: a negative count becomes huge.
    nr = wrap_s32(nr_pages) & U64
    start &= ~(PAGE_SIZE - 1) & U64
    length = (nr << PAGE_SHIFT) & U64
    end = start + length
    v6_5 = k.profile.valid_gup_args
    if end > U64:
        # v6.5 mm/gup.c:3183-3184 -EOVERFLOW; 6.1.192 mm/gup.c:3060-3061 returns 0
        return -errno.EOVERFLOW if v6_5 else 0
    # access_ok (v6.1 include/asm-generic/access_ok.h __access_ok); v6.5 mm/gup.c:3185-3186
    # tests end > TASK_SIZE_MAX first, and x86-64's access_ok (v6.5
    # arch/x86/include/asm/uaccess_64.h:85-92) then passes: the same bound
    if not (length <= TASK_SIZE_MAX and start <= TASK_SIZE_MAX - length):
        return -errno.EFAULT
    nr_pinned = yield from lockless_pages_from_mm(k, mm, start, end, gup_flags, pages)
    if nr_pinned == nr or gup_flags & FOLL_FAST_ONLY:
        return nr_pinned
    rest = wrap_s32(nr - nr_pinned)
    addr = start + (nr_pinned << PAGE_SHIFT)
    if v6_5:
        # v6.5 mm/gup.c:3197-3199: __gup_longterm_locked with *locked == 0 and
        # FOLL_TOUCH | FOLL_UNLOCKABLE, FOLL_LONGTERM or not
        ret = yield from __gup_longterm_locked(
            k, mm, addr, rest, pages[nr_pinned:], gup_flags | FOLL_TOUCH, Locked(held=False)
        )
    else:
        ret = yield from __gup_longterm_unlocked(k, mm, addr, rest, gup_flags, pages[nr_pinned:])
    if ret < 0:
        return nr_pinned if nr_pinned else ret
    return ret + nr_pinned


def get_user_pages_fast(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c get_user_pages_fast: FOLL_GET references (v4.4: `int write` = FOLL_WRITE).

    A profile with x86's own gup-fast (v4.4) runs arch/x86/mm/gup.c's instead.
    """
    require_gup_api(k.profile, "get_user_pages_fast")
    require_gup_flags(k, gup_flags)
    if not k.profile.has_foll_pin and gup_flags & ~FOLL_WRITE:
        raise NotInKernel("get_user_pages_fast gup_flags beyond `int write`", k.profile)
    if k.profile.gup_fast == "x86":
        write = bool(gup_flags & FOLL_WRITE)
        return (yield from x86_gup.get_user_pages_fast(k, mm, start, nr_pages, write, pages))
    if k.profile.valid_gup_args:
        # v6.5 mm/gup.c get_user_pages_fast (:3264-3276)
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_GET)
        if flags65 is None:
            return -errno.EINVAL
        return (yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags65, pages))
    if not is_valid_gup_flags(k, gup_flags):
        return -errno.EINVAL
    return (
        yield from internal_get_user_pages_fast(k, mm, start, nr_pages, gup_flags | FOLL_GET, pages)
    )


def get_user_pages_fast_only(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c get_user_pages_fast_only: no flag check, no slow path, never < 0.

    v6.5 (:3230-3245): is_valid_gup_args (-EINVAL) and internal_get_user_pages_fast's
    return value as it is, -errno included.
    """
    require_gup_api(k.profile, "get_user_pages_fast_only")
    require_gup_flags(k, gup_flags)
    if k.profile.valid_gup_args:
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_GET | FOLL_FAST_ONLY)
        if flags65 is None:
            return -errno.EINVAL
        return (yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags65, pages))
    flags = gup_flags | FOLL_GET | FOLL_FAST_ONLY
    ret = yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags, pages)
    return max(ret, 0)


def pin_user_pages_fast(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages | None
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c pin_user_pages_fast: FOLL_GET or a NULL array is -EINVAL (WARN)."""
    require_gup_api(k.profile, "pin_user_pages_fast")
    require_gup_flags(k, gup_flags)
    if k.profile.valid_gup_args:
        # v6.5 mm/gup.c pin_user_pages_fast (:3298-3304)
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_PIN)
        if flags65 is None or pages is None:
            return -errno.EINVAL
        return (yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags65, pages))
    if gup_flags & FOLL_GET:
        warn_on_once(k, "mm/gup.c pin_user_pages_fast FOLL_GET")
        return -errno.EINVAL
    if pages is None:
        warn_on_once(k, "mm/gup.c pin_user_pages_fast pages == NULL")
        return -errno.EINVAL
    return (
        yield from internal_get_user_pages_fast(k, mm, start, nr_pages, gup_flags | FOLL_PIN, pages)
    )


def pin_user_pages_fast_only(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages | None
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c pin_user_pages_fast_only: bad arguments WARN and return 0; never < 0."""
    require_gup_api(k.profile, "pin_user_pages_fast_only")
    require_gup_flags(k, gup_flags)
    if gup_flags & FOLL_GET:
        warn_on_once(k, "mm/gup.c pin_user_pages_fast_only FOLL_GET")
        return 0
    if pages is None:
        warn_on_once(k, "mm/gup.c pin_user_pages_fast_only pages == NULL")
        return 0
    flags = gup_flags | FOLL_PIN | FOLL_FAST_ONLY
    ret = yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags, pages)
    return max(ret, 0)
