"""PMD-mapped anonymous THPs and the huge zero page (v6.1 mm/huge_memory.c).

A huge PMD is kept in PageTable.pmd by slot; splitting it builds the slot's
PTE table.  The deposited page table, khugepaged and file THPs are not modelled;
PageDoubleMap is modelled where the profile has it (profile.double_map_flag).
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

import numpy as np

from pinlab.interleave import Point, Yield
from pinlab.kernel import errno
from pinlab.kernel.mm.filemap import folio_put_footprint
from pinlab.kernel.mm.gup_flags import FOLL_GET, FOLL_TOUCH, FOLL_WRITE
from pinlab.kernel.mm.gup_grab import try_grab_page
from pinlab.kernel.mm.gup_page import Follow, can_follow_write, gup_must_unshare, gup_page_hook
from pinlab.kernel.mm.huge_memory_4_4 import (
    get_page_foll,
    pmd_trans_splitting,
    wait_split_huge_page,
)
from pinlab.kernel.mm.huge_pmd_4_4 import do_huge_pmd_wp_page as do_huge_pmd_wp_page_4_4
from pinlab.kernel.mm.huge_pmd_5_7 import do_huge_pmd_wp_page as do_huge_pmd_wp_page_5_7
from pinlab.kernel.mm.locking import folio_lock, folio_trylock, folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import TRANSHUGE_PAGE_DTOR
from pinlab.kernel.mm.page_alloc import (
    __GFP_COMP,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    alloc_pages,
    free_reads,
    page_keys,
)
from pinlab.kernel.mm.page_ref import folio_get, folio_put, page_ref_add, put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_SPECIAL,
    HPAGE_PMD_ORDER,
    PAGE_SHIFT,
    PMD_SHIFT,
    PMD_SIZE,
    PTRS_PER_PTE,
    PageTable,
    pfn_pte,
    pmd_key,
    pte_pfn,
    pte_write,
)
from pinlab.kernel.mm.rmap import (
    PageAnon,
    PageAnonExclusive,
    SetPageAnonExclusive,
    TestClearPageDoubleMap,
    TestSetPageDoubleMap,
    page_add_new_anon_rmap,
    page_move_anon_rmap,
)
from pinlab.kernel.mm.swap import folio_add_lru_vma
from pinlab.kernel.mm.types import (
    VM_DONTEXPAND,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_MIXEDMAP,
    VM_NOHUGEPAGE,
    VM_PFNMAP,
    MmStruct,
    VmArea,
    vma_is_anonymous,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
# v6.1 include/linux/mm.h VM_NO_KHUGEPAGED = VM_SPECIAL | VM_HUGETLB
VM_NO_KHUGEPAGED = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP | VM_HUGETLB
# v6.1 include/linux/sched/coredump.h MMF_HUGE_ZERO_PAGE (the mm has used the huge zero
# page) and MMF_DISABLE_THP (prctl PR_SET_THP_DISABLE)
MMF_HUGE_ZERO_PAGE = 23
MMF_DISABLE_THP = 24


def pmd_none(pt: PageTable, addr: int) -> bool:
    """v6.1 pmd_none: the slot holds neither a huge PMD nor a PTE table."""
    slot = addr >> PMD_SHIFT
    return slot not in pt.pmd and slot not in pt.pte


def is_huge_zero_pmd(k: Kernel, pmd: int) -> bool:
    """v6.1 include/linux/huge_mm.h is_huge_zero_pmd."""
    return k.huge_zero_pfn >= 0 and pte_pfn(pmd) == k.huge_zero_pfn


def hugepage_vma_check(k: Kernel, mm: MmStruct, vma: VmArea) -> bool:
    """v6.1 mm/huge_memory.c hugepage_vma_check(smaps=false, in_pf=true, enforce_sysfs=true).

    Only anonymous VMAs qualify: shmem_huge defaults to never and
    READ_ONLY_THP_FOR_FS is off in Debian's config; fsdax PMD faults are not modelled.
    v5.7.14's fault path tests __transparent_hugepage_enabled (mm/memory.c:4316,
    include/linux/huge_mm.h:133-159), which has no VM_NO_KHUGEPAGED test; this one serves
    5.7 too because no anonymous VMA carries those flags (VM_HUGETLB comes with a
    hugetlbfs file, VM_IO, VM_PFNMAP, VM_MIXEDMAP and VM_DONTEXPAND with a driver's mmap).
    """
    if vma.vm_flags & VM_NOHUGEPAGE or mm.flags >> MMF_DISABLE_THP & 1:
        return False
    if vma.vm_flags & VM_NO_KHUGEPAGED:
        return False
    if k.thp_enabled == "never":
        return False
    if k.thp_enabled == "madvise" and not vma.vm_flags & VM_HUGEPAGE:
        return False
    return vma_is_anonymous(vma)


def transhuge_vma_suitable(vma: VmArea, addr: int) -> bool:
    """v6.1 include/linux/huge_mm.h transhuge_vma_suitable (anonymous VMAs)."""
    haddr = addr & ~(PMD_SIZE - 1)
    return haddr >= vma.vm_start and haddr + PMD_SIZE <= vma.vm_end


def mm_get_huge_zero_page(k: Kernel, mm: MmStruct) -> int | None:
    """v6.1 mm/huge_memory.c:199 mm_get_huge_zero_page (v5.7.14 :116): marks the mm
    (test_and_set_bit, :207 / :124) and takes the huge zero page."""
    mm.flags |= 1 << MMF_HUGE_ZERO_PAGE
    return get_huge_zero_page(k)


def get_huge_zero_page(k: Kernel) -> int | None:
    """v5.7.14 mm/huge_memory.c:80 (v4.4 :176, v6.1 :156) get_huge_zero_page: allocated zeroed on
    first use.  huge_zero_refcount is not modelled: besides put_huge_zero_page's BUG_ON on
    reaching zero (v6.1 :196, v5.7.14 :113, v4.4 :209), which its own accounting never lets
    happen, only the shrinker reads it, to free the page under memory pressure (v6.1
    :223-234, v5.7.14 :140-146, v4.4 :216-222), and the model runs no shrinker: the page,
    once allocated, stays.  v4.4 callers take it with this
    alone: no per-mm MMF_HUGE_ZERO_PAGE (v4.4 include/linux/sched.h:504-509 ends at bit
    20; v5.7.14 include/linux/sched/coredump.h:71 has it)."""
    if k.huge_zero_pfn < 0:
        pfn = alloc_pages(k, GFP_KERNEL | __GFP_COMP, HPAGE_PMD_ORDER)
        if pfn is None:
            return None
        k.mem.data[pfn : pfn + HPAGE_PMD_NR] = 0
        k.huge_zero_pfn = pfn
    return k.huge_zero_pfn


def _folio_footprint(folio: int) -> frozenset[Hashable]:
    """A THP's refcount, its pages' mapcounts and flags (PageAnonExclusive, PageDoubleMap
    in page[1]) and its entire mapcount (a split or zap writes them)."""
    return page_keys(folio, HPAGE_PMD_NR, ("mapcount", "flags")) | {
        ("page", folio, "refcount"),
        ("page", folio + 1, "compound_mapcount"),
    }


def _folio_reads(folio: int) -> frozenset[Hashable]:
    """What a split or zap of a THP's PMD reads of it besides: PageAnon, PageHuge."""
    return page_keys(folio, 1, ("head", "mapping")) | page_keys(folio + 1, 1, ("head", "dtor"))


def _pmd_point(label: str, mm: MmStruct, haddr: int, pmd: int) -> Point:
    """The point before a step that splits or zaps huge PMD ``pmd``: it reads and writes
    the PMD and the THP's _folio_footprint, and reads its _folio_reads.  (Built in the
    yield expression: a footprint kept in a local would be part of the state key.)"""
    writes = {pmd_key(mm.id, haddr)} | (_folio_footprint(pte_pfn(pmd)) if pmd else set())
    reads = writes | (_folio_reads(pte_pfn(pmd)) if pmd else set())
    return Point(label, reads=frozenset(reads), writes=frozenset(writes))


def do_huge_pmd_anonymous_page(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/huge_memory.c do_huge_pmd_anonymous_page: huge zero page on read, else a THP."""
    from pinlab.kernel.mm.memory import (
        FAULT_FLAG_WRITE,
        VM_FAULT_FALLBACK,
        anon_vma_prepare,
        maybe_mkwrite,
        vma_page_prot,
    )

    haddr = address & ~(PMD_SIZE - 1)
    if not transhuge_vma_suitable(vma, haddr):
        return VM_FAULT_FALLBACK
    anon_vma_prepare(k, vma)
    key = pmd_key(mm.id, haddr)
    slot = haddr >> PMD_SHIFT
    if not flags & FAULT_FLAG_WRITE and k.thp_use_zero_page:
        # v4.4 mm/huge_memory.c:832 get_huge_zero_page; v5.7.14 :742 mm_get_huge_zero_page
        if not k.profile.mmf_huge_zero_page:
            zero = get_huge_zero_page(k)
        else:
            zero = mm_get_huge_zero_page(k, mm)
        if zero is None:
            return VM_FAULT_FALLBACK
        yield from pte_lock(k, mm, haddr)
        yield Point("set_huge_zero_page", reads=frozenset({key}), writes=frozenset({key}))
        if pmd_none(mm.pgtable, haddr):
            mm.pgtable.pmd[slot] = pfn_pte(zero, vma_page_prot(k, vma)) | _PAGE_PSE
        pte_unlock(k, mm, haddr)
        return 0
    page = alloc_pages(k, GFP_HIGHUSER_MOVABLE | __GFP_COMP, HPAGE_PMD_ORDER)
    if page is None:
        return VM_FAULT_FALLBACK
    m = k.mem
    m.dtor[page + 1] = TRANSHUGE_PAGE_DTOR
    m.data[page : page + HPAGE_PMD_NR] = 0
    m.flags[page] |= k.pf.mask("PG_uptodate")
    yield from pte_lock(k, mm, haddr)
    # the new THP is this fault's alone: it is rmapped, or freed if the PMD was taken
    yield Point(
        "set huge pmd",
        reads=folio_put_footprint(k, page) | free_reads(page) | {key},
        writes=folio_put_footprint(k, page) | {key},
    )
    if not pmd_none(mm.pgtable, haddr):
        pte_unlock(k, mm, haddr)
        put_page(k, page)
        return 0
    entry = maybe_mkwrite(pfn_pte(page, vma_page_prot(k, vma)) | _PAGE_PSE | _PAGE_DIRTY, vma)
    page_add_new_anon_rmap(k, page, vma, haddr)
    # v6.1 mm/huge_memory.c:726, v5.7.14 :645, v4.4.178 :775 (active in 5.7 / 4.4)
    yield from folio_add_lru_vma(k, page, vma, cpu)
    mm.pgtable.pmd[slot] = entry
    pte_unlock(k, mm, haddr)
    return 0


def huge_pmd_set_accessed(
    k: Kernel, mm: MmStruct, address: int, flags: int, orig: int
) -> Generator[Yield, None, None]:
    """v6.1 mm/huge_memory.c huge_pmd_set_accessed -> touch_pmd: if the PMD is still
    ``orig``, young, and dirty on a write (profile.thp_access_dirties; 4.4.178 :1002 only
    makes it young); x86's pmdp_set_access_flags (v6.1 / 4.4.178 arch/x86/mm/pgtable.c)
    stores the entry only for a write fault."""
    from pinlab.kernel.mm.memory import FAULT_FLAG_WRITE

    slot = address >> PMD_SHIFT
    key = frozenset({pmd_key(mm.id, address)})
    write = bool(flags & FAULT_FLAG_WRITE)
    yield from pte_lock(k, mm, address)
    yield Point("pmd mkyoung", reads=key, writes=key)
    if mm.pgtable.pmd.get(slot, 0) == orig and write:
        dirty = _PAGE_DIRTY if k.profile.thp_access_dirties else 0
        mm.pgtable.pmd[slot] = orig | _PAGE_ACCESSED | dirty
    pte_unlock(k, mm, address)


def do_huge_pmd_wp_page(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/huge_memory.c do_huge_pmd_wp_page: reuse an exclusive/sole THP, else split.

    v4.4 and v5.7 reuse a THP mapped once or copy it whole (v5.8 "thp: change CoW
    semantics for anon-THP" made it a split; profile.thp_cow_copies): huge_pmd_4_4
    do_huge_pmd_wp_page under 4.4's THP refcounting (profile.thp_tail_refs_in_mapcount),
    else huge_pmd_5_7's.
    """
    from pinlab.kernel.mm.memory import (
        FAULT_FLAG_UNSHARE,
        VM_FAULT_FALLBACK,
        VM_FAULT_WRITE,
        maybe_mkwrite,
    )

    if k.profile.thp_tail_refs_in_mapcount:
        return (yield from do_huge_pmd_wp_page_4_4(k, mm, vma, address, cpu))
    if k.profile.thp_cow_copies:
        return (yield from do_huge_pmd_wp_page_5_7(k, mm, vma, address, cpu))
    unshare = bool(flags & FAULT_FLAG_UNSHARE)
    haddr = address & ~(PMD_SIZE - 1)
    slot = haddr >> PMD_SHIFT
    orig = mm.pgtable.pmd.get(slot, 0)
    if not is_huge_zero_pmd(k, orig):
        yield from pte_lock(k, mm, haddr)
        page = pte_pfn(orig)
        yield _wp_point("wp huge pmd", mm, haddr, page)
        if mm.pgtable.pmd.get(slot, 0) != orig:
            pte_unlock(k, mm, haddr)
            return 0
        # :1353 the early check under the PMD lock alone
        reuse = PageAnonExclusive(k, page)
        if not reuse:
            if not folio_trylock(k, page):
                # :1356-1368 hold the THP, sleep for its lock, retake the PMD lock
                folio_get(k, page)
                pte_unlock(k, mm, haddr)
                yield from folio_lock(k, page)
                yield from pte_lock(k, mm, haddr)
                yield _wp_point("wp huge pmd relocked", mm, haddr, page)
                if mm.pgtable.pmd.get(slot, 0) != orig:
                    pte_unlock(k, mm, haddr)
                    folio_unlock(k, page)
                    yield Point("wp huge pmd put", writes=folio_put_footprint(k, page))
                    folio_put(k, page)
                    return 0
                folio_put(k, page)
            # :1370-1389 the recheck, then reuse only without other references (the model
            # has no swap cache, so folio_test_swapcache is false)
            reuse = PageAnonExclusive(k, page)
            if not reuse and int(k.mem.refcount[page]) == 1:
                page_move_anon_rmap(k, page, vma)
                reuse = True
            folio_unlock(k, page)
        if reuse:
            if not unshare:
                entry = maybe_mkwrite(orig | _PAGE_ACCESSED | _PAGE_DIRTY, vma)
                mm.pgtable.pmd[slot] = entry
            pte_unlock(k, mm, haddr)
            return 0 if unshare else VM_FAULT_WRITE
        pte_unlock(k, mm, haddr)
    yield from split_huge_pmd(k, mm, vma, haddr)
    return VM_FAULT_FALLBACK


def _wp_point(label: str, mm: MmStruct, haddr: int, page: int) -> Point:
    """The point before do_huge_pmd_wp_page's step under the PMD lock: it reads the THP
    and the PMD, and writes the PMD, the folio's lock, refcount and rmap
    (page_move_anon_rmap)."""
    return Point(
        label,
        reads=_folio_footprint(page) | _folio_reads(page) | {pmd_key(mm.id, haddr)},
        writes=frozenset(
            {
                pmd_key(mm.id, haddr),
                ("page", page, "flags"),
                ("page", page, "mapping"),
                ("page", page, "refcount"),
            }
        ),
    )


def split_huge_pmd(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int
) -> Generator[Yield, None, None]:
    """v6.1 mm/huge_memory.c __split_huge_pmd (freeze=false): 512 PTEs, the folio stays whole."""
    haddr = address & ~(PMD_SIZE - 1)
    yield from pte_lock(k, mm, haddr)
    pmd = mm.pgtable.pmd.get(haddr >> PMD_SHIFT, 0)
    yield _pmd_point("split huge pmd", mm, haddr, pmd)
    __split_huge_pmd_locked(k, mm, vma, haddr)
    pte_unlock(k, mm, haddr)


def __split_huge_pmd_locked(k: Kernel, mm: MmStruct, vma: VmArea, haddr: int) -> None:
    """v6.1 mm/huge_memory.c __split_huge_pmd_locked for anon THPs and the huge zero page
    (v6.5 also dirties the PTEs of a dirty PMD: profile.thp_split_dirties_ptes)."""
    from pinlab.kernel.mm.memory import maybe_mkwrite, vma_page_prot

    pt = mm.pgtable
    slot = haddr >> PMD_SHIFT
    pmd = pt.pmd.get(slot)
    if pmd is None:
        return
    prot = vma_page_prot(k, vma)
    table = np.zeros(PTRS_PER_PTE, np.uint64)
    base = np.arange(PTRS_PER_PTE, dtype=np.uint64)
    if is_huge_zero_pmd(k, pmd):
        del pt.pmd[slot]
        table[:] = np.uint64(pfn_pte(k.zero_pfn, prot) | _PAGE_SPECIAL)
        pt.pte[slot] = table
        return
    page = pte_pfn(pmd)
    m = k.mem
    del pt.pmd[slot]
    if pmd & _PAGE_DIRTY:
        m.flags[page] |= k.pf.mask("PG_dirty")
    page_ref_add(m, page, HPAGE_PMD_NR - 1)
    anon_exclusive = (
        k.profile.page_anon_exclusive and PageAnon(k, page) and PageAnonExclusive(k, page)
    )
    entry = maybe_mkwrite(pfn_pte(0, prot), vma)
    if not pmd & _PAGE_RW:
        entry &= ~_PAGE_RW
    if not pmd & _PAGE_ACCESSED:
        entry &= ~_PAGE_ACCESSED
    if k.profile.thp_split_dirties_ptes:
        entry |= pmd & _PAGE_DIRTY
    table[:] = (base + np.uint64(page)) << np.uint64(12) | np.uint64(entry)
    pt.pte[slot] = table
    if anon_exclusive:
        for i in range(HPAGE_PMD_NR):
            SetPageAnonExclusive(k, page + i)
    m.mapcount[page : page + HPAGE_PMD_NR] += 1
    double_map = k.profile.double_map_flag is not None
    shared_pmd = double_map and int(m.compound_mapcount[page + 1]) + 1 > 1
    if shared_pmd and not TestSetPageDoubleMap(k, page):
        m.mapcount[page : page + HPAGE_PMD_NR] += 1
    m.compound_mapcount[page + 1] -= 1
    if int(m.compound_mapcount[page + 1]) < 0 and TestClearPageDoubleMap(k, page):
        m.mapcount[page : page + HPAGE_PMD_NR] -= 1


def zap_huge_pmd(
    k: Kernel, mm: MmStruct, vma: VmArea, haddr: int
) -> Generator[Yield, None, int | None]:
    """v6.1 mm/huge_memory.c zap_huge_pmd: under the PMD lock clear it, drop the rmap.

    Returns the folio whose reference the caller drops after the TLB flush
    (tlb_remove_page_size); None for the huge zero page or a vanished PMD.
    """
    from pinlab.kernel.mm.filemap import folio_mark_dirty
    from pinlab.kernel.mm.rmap import page_remove_rmap

    slot = haddr >> PMD_SHIFT
    yield from pte_lock(k, mm, haddr)
    pmd = mm.pgtable.pmd.get(slot, 0)
    if k.profile.thp_tail_refs_in_mapcount and pmd_trans_splitting(pmd):
        # v4.4 mm/huge_memory.c:1646 __pmd_trans_huge_lock: wait out the split, return 0
        pte_unlock(k, mm, haddr)
        yield from wait_split_huge_page(k, vma.anon_vma)
        return None
    yield _pmd_point("zap huge pmd", mm, haddr, pmd)
    pmd = mm.pgtable.pmd.pop(slot, 0)
    if not pmd or is_huge_zero_pmd(k, pmd):
        pte_unlock(k, mm, haddr)
        return None
    page = pte_pfn(pmd)
    page_remove_rmap(k, page, vma, True)
    if not PageAnon(k, page) and pmd & _PAGE_DIRTY:
        yield from folio_mark_dirty(k, page)
    pte_unlock(k, mm, haddr)
    return page


def follow_trans_huge_pmd(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, Follow]:
    """v6.1 mm/huge_memory.c follow_trans_huge_pmd: grab the THP, return the subpage."""
    slot = address >> PMD_SHIFT
    pmd = mm.pgtable.pmd[slot]
    head = pte_pfn(pmd)
    if flags & FOLL_WRITE and not can_follow_write(k, pmd, head, vma, flags):
        return None
    if not pte_write(pmd) and gup_must_unshare(k, flags, head, vma):
        return -errno.EMLINK
    page = head + ((address >> PAGE_SHIFT) & ((1 << HPAGE_PMD_ORDER) - 1))
    refused = yield from gup_page_hook(k, vma, page, flags)
    if refused:
        return refused
    if k.profile.thp_tail_refs_in_mapcount and flags & FOLL_GET:
        yield from get_page_foll(k, page)
    elif not (yield from try_grab_page(k, head, flags)):
        return -errno.ENOMEM
    if flags & FOLL_TOUCH:
        # v6.1 mm/huge_memory.c touch_pmd: young, and dirty for a write
        mm.pgtable.pmd[slot] = pmd | _PAGE_ACCESSED | (_PAGE_DIRTY if flags & FOLL_WRITE else 0)
    return page
