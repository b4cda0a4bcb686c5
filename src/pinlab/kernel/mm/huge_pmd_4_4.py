"""Write faults on a huge PMD and mprotect of one, before v4.5 (v4.4 mm/huge_memory.c).

A v4.4 THP is never mapped by PTEs, so a write fault on a write-protected PMD
either reuses the THP (mapped by this PMD alone), or copies it whole into a new
THP, or, when no THP can be allocated, into 512 small pages (mapped by a new PTE
table), or, when even those cannot be had, splits the compound page and lets
the PTE-level fault copy one small page.  mprotect of a whole THP waits out a
split in progress (__pmd_trans_huge_lock), and so does fork (copy_huge_pmd).
v5.7 copies as v4.4 does (huge_pmd_wp_copy, do_huge_pmd_wp_page_fallback) once its own
reuse test (huge_pmd_5_7) has failed; only what runs out of memory differs.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

import numpy as np

from pinlab.interleave import Point, Yield
from pinlab.kernel.arch.x86.mm.tlb import flush_tlb_mm_range
from pinlab.kernel.errno import EAGAIN
from pinlab.kernel.mm.filemap import folio_put_footprint
from pinlab.kernel.mm.huge_memory_4_4 import (
    pmd_trans_huge,
    pmd_trans_splitting,
    split_huge_page,
    split_huge_page_pmd,
    wait_split_huge_page,
)
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import TRANSHUGE_PAGE_DTOR
from pinlab.kernel.mm.page_alloc import (
    __GFP_COMP,
    GFP_HIGHUSER_MOVABLE,
    alloc_pages,
    alloc_writes,
    free_reads,
    order_keys,
    page_keys,
)
from pinlab.kernel.mm.page_ref import get_page, put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PRESENT,
    _PAGE_PROTNONE,
    _PAGE_PSE,
    HPAGE_PMD_ORDER,
    PAGE_SHIFT,
    PMD_SHIFT,
    PMD_SIZE,
    pfn_pte,
    pmd_key,
    pte_mkold,
    pte_modify,
    pte_pfn,
    pte_wrprotect,
)
from pinlab.kernel.mm.rmap import (
    page_add_new_anon_rmap,
    page_dup_rmap,
    page_mapcount,
    page_remove_rmap,
)
from pinlab.kernel.mm.swap import folio_add_lru_vma
from pinlab.kernel.mm.types import VM_HUGEPAGE, VM_NOHUGEPAGE, MmStruct, VmArea

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
# v4.4 alloc_hugepage_gfpmask -> GFP_TRANSHUGE: movable, compound (the pools it may use)
GFP_TRANSHUGE = GFP_HIGHUSER_MOVABLE | __GFP_COMP
# what page_add_new_anon_rmap writes of a new small page
_NEW_RMAP = ("flags", "mapcount", "mapping", "index")


def transparent_hugepage_enabled(k: Kernel, vma: VmArea) -> bool:
    """v4.4 include/linux/huge_mm.h:72 transparent_hugepage_enabled (no temporary stacks)."""
    if vma.vm_flags & VM_NOHUGEPAGE:
        return False
    return k.thp_enabled == "always" or (
        k.thp_enabled == "madvise" and bool(vma.vm_flags & VM_HUGEPAGE)
    )


def _wp_reads(head: int) -> frozenset[Hashable]:
    """What the locked part of do_huge_pmd_wp_page reads of the THP: page_mapcount(head)."""
    return (
        page_keys(head, 1, ("head", "mapcount", "refcount"))
        | order_keys(head)
        | {("page", head + 1, "compound_mapcount")}
    )


def do_huge_pmd_wp_page(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, cpu: int
) -> Generator[Yield, None, int]:
    """v4.4 mm/huge_memory.c:1151 do_huge_pmd_wp_page: reuse, copy to a new THP, or fall back.

    The huge zero page goes straight to the allocation (:1166); a THP is reused when
    page_mapcount(head) == 1 (:1174), the PMD's mappings only (a tail's gup
    references are on its own _mapcount); else it is held (get_user_huge_page
    :1183), the lock dropped, and huge_pmd_wp_copy copies it.
    """
    from pinlab.kernel.mm.memory import VM_FAULT_WRITE, maybe_mkwrite

    haddr = address & ~(PMD_SIZE - 1)
    slot = haddr >> PMD_SHIFT
    key = pmd_key(mm.id, haddr)
    orig = mm.pgtable.pmd.get(slot, 0)
    page: int | None = None
    # (is_huge_zero_pmd)
    if pte_pfn(orig) != k.huge_zero_pfn:
        yield from pte_lock(k, mm, haddr)
        yield Point(
            "wp huge pmd",
            reads=_wp_reads(pte_pfn(orig)) | {key},
            writes=frozenset({key, ("page", pte_pfn(orig), "refcount")}),
        )
        if mm.pgtable.pmd.get(slot, 0) != orig:
            pte_unlock(k, mm, haddr)
            return 0
        page = pte_pfn(orig)
        if page_mapcount(k, page) == 1:
            # :1175-1178 young, dirty, writable if VM_WRITE (x86 pmdp_set_access_flags)
            mm.pgtable.pmd[slot] = maybe_mkwrite(orig | _PAGE_ACCESSED | _PAGE_DIRTY, vma)
            pte_unlock(k, mm, haddr)
            return VM_FAULT_WRITE
        get_page(k, page)
        pte_unlock(k, mm, haddr)
    return (yield from huge_pmd_wp_copy(k, mm, vma, address, orig, page, cpu))


def thp_fault_enabled(k: Kernel, mm: MmStruct, vma: VmArea) -> bool:
    """Whether the COW of a huge PMD may allocate a THP: v4.4 transparent_hugepage_enabled
    (mm/huge_memory.c:1185); v5.7.14 mm/huge_memory.c:1425 __transparent_hugepage_enabled
    (include/linux/huge_mm.h:133) also refuses an mm with MMF_DISABLE_THP (:141)."""
    from pinlab.kernel.mm.huge_memory import MMF_DISABLE_THP

    if k.profile.mmf_huge_zero_page and mm.flags >> MMF_DISABLE_THP & 1:
        return False
    return transparent_hugepage_enabled(k, vma)


def huge_pmd_wp_copy(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, orig: int, page: int | None, cpu: int
) -> Generator[Yield, None, int]:
    """The copy of do_huge_pmd_wp_page (its alloc: label), the same in v4.4 and v5.7.14:
    v4.4 mm/huge_memory.c:1185-1265, v5.7.14 mm/huge_memory.c:1424-1514.

    ``page``: the THP held by the caller, or None for the huge zero page.  A THP is
    allocated, the old one copied into it (or it is cleared), and, under the lock, if
    the PMD is unchanged, it replaces the old THP; without a THP, _no_huge_page.
    """
    from pinlab.kernel.mm.memory import VM_FAULT_WRITE, maybe_mkwrite, vma_page_prot

    haddr = address & ~(PMD_SIZE - 1)
    slot = haddr >> PMD_SHIFT
    key = pmd_key(mm.id, haddr)
    # v4.4 :1185-1191, v5.7.14 :1425-1430; transparent_hugepage_debug_cow() is 0 without
    # CONFIG_DEBUG_VM
    yield Point(
        "alloc_hugepage_vma",
        reads=frozenset({("mm", mm.id, "flags")})
        | (frozenset() if page is None else page_keys(page, HPAGE_PMD_NR, ("data",))),
        writes=alloc_writes(k, GFP_TRANSHUGE, HPAGE_PMD_ORDER),
    )
    new = None
    if thp_fault_enabled(k, mm, vma):
        new = alloc_pages(k, GFP_TRANSHUGE, HPAGE_PMD_ORDER)
    if new is None:
        return (yield from _no_huge_page(k, mm, vma, address, orig, page, cpu))
    # the memcg charge (v4.4 :1210, v5.7.14 :1450) is not modelled: it never fails
    m = k.mem
    # as the model's THP fault (huge_memory.do_huge_pmd_anonymous_page) marks its THPs
    m.dtor[new + 1] = TRANSHUGE_PAGE_DTOR
    # v4.4 :1224-1228, v5.7.14 :1465-1469 clear_huge_page for the huge zero page, else
    # copy_user_huge_page
    if page is None:
        m.data[new : new + HPAGE_PMD_NR] = 0
    else:
        m.data[new : new + HPAGE_PMD_NR] = m.data[page : page + HPAGE_PMD_NR]
    m.flags[new] |= k.pf.mask("PG_uptodate")
    yield from pte_lock(k, mm, haddr)
    # v4.4 :1235-1236, v5.7.14 :1476-1478 the caller's reference is dropped first, under
    # the lock
    yield Point(
        "wp huge pmd install",
        reads=folio_put_footprint(k, new) | free_reads(new) | {key},
        writes=folio_put_footprint(k, new)
        | {key}
        | (frozenset() if page is None else folio_put_footprint(k, page)),
    )
    if page is not None:
        put_page(k, page)
    if mm.pgtable.pmd.get(slot, 0) != orig:
        pte_unlock(k, mm, haddr)
        put_page(k, new)
        return 0
    entry = maybe_mkwrite(pfn_pte(new, vma_page_prot(k, vma)) | _PAGE_PSE | _PAGE_DIRTY, vma)
    # v4.4 :1246, v5.7.14 :1488 pmdp_huge_clear_flush_notify: clear the PMD, flush the TLB
    # (v4.4: waits for gup-fast)
    del mm.pgtable.pmd[slot]
    yield from flush_tlb_mm_range(k, mm)
    page_add_new_anon_rmap(k, new, vma, haddr)
    # v4.4 :1249, v5.7.14 :1491 lru_cache_add_active_or_unevictable
    yield from folio_add_lru_vma(k, new, vma, cpu, _after_install(k, key, page))
    mm.pgtable.pmd[slot] = entry
    # (for the huge zero page, v4.4's put_huge_zero_page: its refcount is not modelled)
    if page is not None:
        page_remove_rmap(k, page, vma, True)
        put_page(k, page)
    pte_unlock(k, mm, haddr)
    return VM_FAULT_WRITE


def _rmap_drop_keys(k: Kernel, page: int) -> frozenset[Hashable]:
    """What page_remove_rmap(page, compound) of a THP's PMD writes: its entire mapcount, and
    after v4.4 (the last PMD of a PageDoubleMap THP) PageDoubleMap, each page's _mapcount
    and what PageAnon and PageHuge read."""
    keys = frozenset({("page", page + 1, "compound_mapcount")})
    if k.profile.thp_tail_refs_in_mapcount:
        return keys
    tests = page_keys(page, 1, ("mapping", "flags")) | page_keys(page + 1, 1, ("flags", "dtor"))
    return keys | page_keys(page, HPAGE_PMD_NR, ("mapcount",)) | tests


def _after_install(k: Kernel, key: Hashable, page: int | None) -> frozenset[Hashable]:
    """What follows the new THP's LRU add: set_pmd_at (v4.4 :1250, v5.7.14 :1492), and the
    old THP's loss of this mapping and of its reference (v4.4 :1257-1258, v5.7.14
    :1498-1499)."""
    if page is None:
        return frozenset({key})
    return folio_put_footprint(k, page) | {key} | _rmap_drop_keys(k, page)


def _no_huge_page(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, orig: int, page: int | None, cpu: int
) -> Generator[Yield, None, int]:
    """No THP for the copy: v4.4 mm/huge_memory.c:1193-1208, v5.7.14 :1433-1446.

    The huge zero page's PMD is split; a THP is copied to small pages
    (do_huge_pmd_wp_page_fallback), and if that runs out of memory v4.4 splits the
    THP itself (split_huge_page :1200), v5.7 the PMD alone (split_huge_pmd :1441);
    either way the fault goes on at the PTE level (VM_FAULT_FALLBACK).  Last, the
    caller's reference is dropped (v4.4 put_user_huge_page :1204, v5.7 put_page :1444).
    """
    from pinlab.kernel.mm.huge_memory import split_huge_pmd
    from pinlab.kernel.mm.memory import VM_FAULT_FALLBACK, VM_FAULT_OOM

    v4_4 = k.profile.thp_tail_refs_in_mapcount
    if page is None:
        # v4.4 :1195 split_huge_page_pmd, v5.7.14 :1436 split_huge_pmd
        if v4_4:
            yield from split_huge_page_pmd(k, mm, vma, address)
        else:
            yield from split_huge_pmd(k, mm, vma, address)
        return VM_FAULT_FALLBACK
    ret = yield from do_huge_pmd_wp_page_fallback(k, mm, vma, address, orig, page, cpu)
    if ret & VM_FAULT_OOM:
        if v4_4:
            yield from split_huge_page(k, page)
        else:
            yield from split_huge_pmd(k, mm, vma, address)
        ret |= VM_FAULT_FALLBACK
    yield Point("put_user_huge_page", writes=folio_put_footprint(k, page))
    put_page(k, page)
    return ret


def _puts(k: Kernel, pages: list[int]) -> frozenset[Hashable]:
    """What putting each of ``pages`` (each this fault's only reference) may write."""
    return frozenset().union(*(folio_put_footprint(k, p) for p in pages))


def _after_lru_add(
    k: Kernel, key: Hashable, page: int, pages: list[int], i: int
) -> frozenset[Hashable]:
    """What the fallback writes after adding ``pages[i]`` to the LRU, before it yields again:
    the next page's rmap, or after the last the PMD and the THP's mapcount."""
    if i + 1 < len(pages):
        return page_keys(pages[i + 1], 1, _NEW_RMAP)
    return frozenset({key}) | _rmap_drop_keys(k, page)


def do_huge_pmd_wp_page_fallback(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, orig: int, page: int, cpu: int
) -> Generator[Yield, None, int]:
    """v4.4 mm/huge_memory.c:1042 do_huge_pmd_wp_page_fallback: copy the THP to 512 pages.

    The pages are allocated one by one (:1066), any failure puts back those taken
    (VM_FAULT_OOM, :1072-1081); each is copied (:1088).  Under the PMD lock, if the
    PMD is unchanged (:1099), it is cleared and flushed (:1103), each new page rmapped
    and added to the LRU (:1115-1120) in a PTE table that then replaces it (:1126),
    and the THP loses this mapping (:1127) and, after the lock, its reference (:1133).
    v5.7.14 mm/huge_memory.c:1258 is the same: :1279, :1283-1295, :1301, :1311-1312,
    :1324, :1329-1341, :1346, :1347, :1357.
    """
    from pinlab.kernel.mm.memory import VM_FAULT_OOM, VM_FAULT_WRITE, maybe_mkwrite, mk_pte

    haddr = address & ~(PMD_SIZE - 1)
    slot = haddr >> PMD_SHIFT
    key = pmd_key(mm.id, haddr)
    pages: list[int] = []
    for _ in range(HPAGE_PMD_NR):
        yield Point("alloc_page_vma_node", writes=alloc_writes(k, GFP_HIGHUSER_MOVABLE, 0))
        new = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
        if new is None:
            yield Point("fallback oom put", writes=_puts(k, pages))
            for p in pages:
                put_page(k, p)
            return VM_FAULT_OOM
        pages.append(new)
    yield Point(
        "copy_user_highpage",
        reads=page_keys(page, HPAGE_PMD_NR, ("data",)),
        writes=frozenset(("page", p, f) for p in pages for f in ("data", "flags")),
    )
    m = k.mem
    for i, p in enumerate(pages):
        m.data[p] = m.data[page + i]
        m.flags[p] |= k.pf.mask("PG_uptodate")
    yield from pte_lock(k, mm, haddr)
    yield Point("fallback pmd_same", reads=frozenset({key}), writes=frozenset({key}))
    if mm.pgtable.pmd.get(slot, 0) != orig:
        pte_unlock(k, mm, haddr)
        yield Point("fallback put pages", writes=_puts(k, pages))
        for p in pages:
            put_page(k, p)
        return 0
    # :1103 pmdp_huge_clear_flush_notify; the PTE table is filled before it is populated
    del mm.pgtable.pmd[slot]
    yield from flush_tlb_mm_range(k, mm)
    for i, p in enumerate(pages):
        page_add_new_anon_rmap(k, p, vma, haddr + (i << PAGE_SHIFT))
        # :1117 lru_cache_add_active_or_unevictable
        yield from folio_add_lru_vma(k, p, vma, cpu, _after_lru_add(k, key, page, pages, i))
    entries = [maybe_mkwrite(mk_pte(k, p, vma) | _PAGE_DIRTY, vma) for p in pages]
    mm.pgtable.pte[slot] = np.array(entries, dtype=np.uint64)
    page_remove_rmap(k, page, vma, True)
    pte_unlock(k, mm, haddr)
    yield Point("fallback put", writes=folio_put_footprint(k, page))
    put_page(k, page)
    return VM_FAULT_WRITE


def __pmd_trans_huge_lock(
    k: Kernel, mm: MmStruct, vma: VmArea, addr: int
) -> Generator[Yield, None, int]:
    """v4.4 mm/huge_memory.c:1646 __pmd_trans_huge_lock: 1 with the PMD lock held on a huge
    PMD not being split; -1 after waiting out its split (:1650-1653); else 0."""
    yield from pte_lock(k, mm, addr)
    pmd = mm.pgtable.pmd.get(addr >> PMD_SHIFT, 0)
    if pmd_trans_huge(pmd):
        if not pmd_trans_splitting(pmd):
            return 1
        pte_unlock(k, mm, addr)
        yield from wait_split_huge_page(k, vma.anon_vma)
        return -1
    pte_unlock(k, mm, addr)
    return 0


def change_huge_pmd(
    k: Kernel, mm: MmStruct, vma: VmArea, addr: int, newprot: int
) -> Generator[Yield, None, int]:
    """v4.4 mm/huge_memory.c:1568 change_huge_pmd (prot_numa 0): HPAGE_PMD_NR once the PMD
    has ``newprot``; 0 when it is not a stable huge PMD, and the caller (v4.4
    mm/mprotect.c:166-179 change_pmd_range) goes on to the PTEs.

    :1616-1632 pmdp_invalidate (not present, TLB flush) then set_pmd_at with
    pmd_modify, which keeps the PFN, dirty, young and PSE bits and drops the rest
    (arch/x86/include/asm/pgtable_types.h:103 _HPAGE_CHG_MASK): _PAGE_SPLITTING too.
    """
    if (yield from __pmd_trans_huge_lock(k, mm, vma, addr)) != 1:
        return 0
    slot = addr >> PMD_SHIFT
    yield Point(
        "change_huge_pmd",
        reads=frozenset({pmd_key(mm.id, addr)}),
        writes=frozenset({pmd_key(mm.id, addr)}),
    )
    entry = mm.pgtable.pmd[slot]
    # v4.4 arch/x86/include/asm/pgtable.h:394 pmd_mknotpresent
    mm.pgtable.pmd[slot] = entry & ~(_PAGE_PRESENT | _PAGE_PROTNONE)
    yield from flush_tlb_mm_range(k, mm)
    mm.pgtable.pmd[slot] = pte_modify(entry, newprot)
    pte_unlock(k, mm, addr)
    return HPAGE_PMD_NR


def copy_huge_pmd(
    k: Kernel, dst: MmStruct, src: MmStruct, vma: VmArea, haddr: int
) -> Generator[Yield, None, int]:
    """v4.4 mm/huge_memory.c:915 copy_huge_pmd: share the THP, or wait out its split: -EAGAIN.

    Under both PMD locks, the child's first (:930-932): a PMD no longer huge is
    -EAGAIN (:936-939); the huge zero page is mapped in the child (:945-957); a
    PMD being split is unlocked and waited out (:959-967), and -EAGAIN (set at :934)
    sends v4.4 mm/memory.c copy_pmd_range (:998-1008) on to the PTE table the split
    left.  Else get_page and page_dup_rmap on the head (:970-971), the parent's PMD
    write-protected and the child's a write-protected old copy (:974-977).  Every THP
    is shared: no maybe-pinned test, so no fork_must_copy hook either.
    """
    from pinlab.kernel.mm.huge_memory import is_huge_zero_pmd
    from pinlab.kernel.mm.memory import vma_page_prot

    slot = haddr >> PMD_SHIFT
    keys = frozenset({pmd_key(src.id, haddr), pmd_key(dst.id, haddr)})
    yield from pte_lock(k, dst, haddr)
    yield from pte_lock(k, src, haddr)
    head = pte_pfn(src.pgtable.pmd.get(slot, 0))
    yield Point(
        "copy huge pmd",
        reads=keys | {("page", head, "head")},
        writes=keys | {("page", head, "refcount"), ("page", head + 1, "compound_mapcount")},
    )
    pmd = src.pgtable.pmd.get(slot, 0)
    ret = -EAGAIN
    if pmd_trans_huge(pmd) and is_huge_zero_pmd(k, pmd):
        # get_huge_zero_page (:176) takes a huge_zero_refcount reference: not modelled;
        # v4.4 keeps no per-mm MMF_HUGE_ZERO_PAGE (v4.4 include/linux/sched.h:504-509)
        dst.pgtable.pmd[slot] = pfn_pte(head, vma_page_prot(k, vma)) | _PAGE_PSE
        ret = 0
    elif pmd_trans_huge(pmd) and not pmd_trans_splitting(pmd):
        get_page(k, head)
        page_dup_rmap(k, head, True)
        src.pgtable.pmd[slot] = pte_wrprotect(pmd)
        dst.pgtable.pmd[slot] = pte_mkold(pte_wrprotect(pmd))
        ret = 0
    pte_unlock(k, src, haddr)
    pte_unlock(k, dst, haddr)
    if pmd_trans_huge(pmd) and pmd_trans_splitting(pmd):
        yield from wait_split_huge_page(k, vma.anon_vma)
    return ret
