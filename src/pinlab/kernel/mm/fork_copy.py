"""fork's page-table copy: copy_page_range with COW and early copy of maybe-pinned pages.

v6.1 mm/memory.c copy_page_range / copy_pte_range / copy_present_pte /
copy_present_page, include/linux/rmap.h page_try_dup_anon_rmap and
mm/huge_memory.c copy_huge_pmd.  v4.4 / v5.7 mm/memory.c copy_one_pte and
copy_huge_pmd share every anon page (no early copy; 4.4's THPs in
huge_pmd_4_4.copy_huge_pmd); the profile's fork_cow_pinned and
page_anon_exclusive select the behaviour, and the fork_must_copy hook replaces
the "must the child get a copy now?" test.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.errno import EAGAIN, EBUSY, ENOMEM, ENOSPC
from pinlab.kernel.mm.filemap import folio_put_footprint
from pinlab.kernel.mm.huge_memory import (
    is_huge_zero_pmd,
    mm_get_huge_zero_page,
    split_huge_pmd,
)
from pinlab.kernel.mm.huge_pmd_4_4 import copy_huge_pmd as copy_huge_pmd_4_4
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head, peek_head
from pinlab.kernel.mm.memory import maybe_mkwrite, mk_pte, vm_normal_page, vma_page_prot
from pinlab.kernel.mm.page_alloc import (
    GFP_HIGHUSER_MOVABLE,
    alloc_pages,
    alloc_writes,
    free_reads,
    page_keys,
)
from pinlab.kernel.mm.page_ref import get_page, put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_PSE,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    get_pte,
    pfn_pte,
    pmd_key,
    pte_footprint,
    pte_key,
    pte_mkclean,
    pte_mkdirty,
    pte_mkold,
    pte_pfn,
    pte_present,
    pte_write,
    pte_wrprotect,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import (
    ClearPageAnonExclusive,
    PageAnon,
    PageAnonExclusive,
    page_add_new_anon_rmap,
    page_dup_rmap,
)
from pinlab.kernel.mm.swap import folio_add_lru_vma
from pinlab.kernel.mm.types import (
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_SHARED,
    MmStruct,
    VmArea,
    is_cow_mapping,
    vma_is_anonymous,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def fork_must_copy(
    k: Kernel, src_mm: MmStruct, src_vma: VmArea, page: int
) -> Generator[Yield, None, bool]:
    """Whether the child must get its own copy of exclusive anon `page` now.

    v6.1 include/linux/mm.h page_needs_cow_for_dma: test MMF_HAS_PINNED, then
    read the folio's pin state (the caller already holds fork's own
    reference), two separate reads.  The fork_must_copy hook replaces this
    test in every profile.
    """
    from pinlab.kernel.mm.pincount import mm_has_pinned, page_maybe_dma_pinned, pinned_footprint

    folio = compound_head(k.mem, page)
    mm_flags = ("mm", src_mm.id, "flags")
    if k.hooks.fork_must_copy is not None:
        yield Point("fork pinned?", reads=pinned_footprint(k, folio) | {mm_flags})
        return k.hooks.fork_must_copy(k, src_mm, page)
    if not k.profile.fork_cow_pinned:
        return False
    yield Point("MMF_HAS_PINNED?", reads=frozenset({mm_flags}))
    if not mm_has_pinned(src_mm):
        return False
    yield Point("page_maybe_dma_pinned", reads=pinned_footprint(k, folio))
    return page_maybe_dma_pinned(k, page)


def fork_copy_test(k: Kernel, src_mm: MmStruct, page: int) -> bool:
    """The profile's own answer to fork_must_copy in one go: what the hook replaces."""
    from pinlab.kernel.mm.pincount import mm_has_pinned, page_maybe_dma_pinned

    if not k.profile.fork_cow_pinned:
        return False
    return mm_has_pinned(src_mm) and page_maybe_dma_pinned(k, page)


def _dup_rmap(
    k: Kernel, page: int, compound: bool, then: frozenset[Hashable] = frozenset()
) -> Generator[Yield, None, None]:
    """page_dup_rmap as its own atomic step (mapcount, or the folio's entire mapcount).

    ``then``: what the caller writes after this returns, before it yields again.
    """
    key = ("page", page + 1, "compound_mapcount") if compound else ("page", page, "mapcount")
    yield Point("page_dup_rmap", writes=frozenset({key}) | then)
    page_dup_rmap(k, page, compound)


def page_try_dup_anon_rmap(
    k: Kernel,
    src_mm: MmStruct,
    page: int,
    compound: bool,
    src_vma: VmArea,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, int]:
    """v6.1 include/linux/rmap.h page_try_dup_anon_rmap: share, or -EBUSY to copy now.

    v4.4 / v5.7 page_dup_rmap: always share (mapcount + 1).  ``then``: what the caller
    writes after it shares the page, before it yields again (footprint only).
    """
    if k.profile.page_anon_exclusive:
        yield Point("PageAnonExclusive?", reads=frozenset({("page", page, "flags")}))
        if not PageAnonExclusive(k, page):
            yield from _dup_rmap(k, page, compound, then)
            return 0
    if (yield from fork_must_copy(k, src_mm, src_vma, page)):
        return -EBUSY
    if k.profile.page_anon_exclusive:
        yield Point("ClearPageAnonExclusive", writes=frozenset({("page", page, "flags")}))
        ClearPageAnonExclusive(k, page)
    yield from _dup_rmap(k, page, compound, then)
    return 0


def vma_needs_copy(dst_vma: VmArea, src_vma: VmArea) -> bool:
    """v6.1 mm/memory.c vma_needs_copy: PFN/mixed maps, or the VMA has an anon_vma."""
    if src_vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP):
        return True
    return src_vma.anon_vma is not None


def copy_present_page(
    k: Kernel,
    dst: MmStruct,
    dst_vma: VmArea,
    addr: int,
    page: int,
    prealloc: list[int],
    cpu: int,
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c copy_present_page: the child's private copy, or -EAGAIN for a page."""
    if not prealloc:
        return -EAGAIN
    new = prealloc.pop()
    k.mem.data[new] = k.mem.data[page]
    k.mem.flags[new] |= k.pf.mask("PG_uptodate")
    page_add_new_anon_rmap(k, new, dst_vma, addr)
    # v6.1 mm/memory.c:930; a 4.4 / 5.7 copy (a fork_must_copy hook's) as their faults' pages
    yield from folio_add_lru_vma(k, new, dst_vma, cpu)
    entry = maybe_mkwrite(pte_mkdirty(mk_pte(k, new, dst_vma)), dst_vma)
    set_pte_at(dst.pgtable, addr, entry)
    return 0


def copy_present_pte(
    k: Kernel,
    dst: MmStruct,
    src: MmStruct,
    dst_vma: VmArea,
    src_vma: VmArea,
    addr: int,
    prealloc: list[int],
    cpu: int,
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c copy_present_pte: fork's reference first, then the pin test.

    v4.4 / v5.7 mm/memory.c copy_one_pte write-protects the parent PTE first
    (profile.fork_wrprotect_before_get).
    """
    pte = get_pte(src.pgtable, addr)
    page = vm_normal_page(k, src_vma, addr, pte)
    # a fork_must_copy hook replaces the test only, never the profile's order
    wrprotect_first = k.profile.fork_wrprotect_before_get
    # copy_pte_range puts an unused preallocated page once this returns
    then: frozenset[Hashable] = frozenset()
    if prealloc:
        then = folio_put_footprint(k, prealloc[-1]) | free_reads(prealloc[-1])
    if wrprotect_first:
        pte = yield from _fork_wrprotect(
            src, src_vma, addr, pte, then if page is None else frozenset()
        )
    if page is not None:
        folio = peek_head(k.mem, page)
        yield Point("fork get_page", writes=frozenset({("page", folio, "refcount")}))
        get_page(k, page)
        if PageAnon(k, page):
            if (yield from page_try_dup_anon_rmap(k, src, page, False, src_vma, then)):
                # the put, then copy_present_page's copy into the preallocated page, or
                # copy_pte_range's allocation of one (in one expression: a footprint kept
                # in a local would be part of the state key)
                yield Point(
                    "fork put_page",
                    writes=folio_put_footprint(k, folio)
                    | alloc_writes(k, GFP_HIGHUSER_MOVABLE, 0)
                    | (page_keys(prealloc[-1]) if prealloc else frozenset()),
                )
                put_page(k, page)
                return (yield from copy_present_page(k, dst, dst_vma, addr, page, prealloc, cpu))
        else:
            yield from _dup_rmap(k, page, False, then)
    if not wrprotect_first:
        pte = yield from _fork_wrprotect(src, src_vma, addr, pte, then)
    if src_vma.vm_flags & VM_SHARED:
        pte = pte_mkclean(pte)
    set_pte_at(dst.pgtable, addr, pte_mkold(pte))
    return 0


def _fork_wrprotect(
    src: MmStruct, src_vma: VmArea, addr: int, pte: int, then: frozenset[Hashable] = frozenset()
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c copy_present_pte: a COW mapping's writable parent PTE becomes R/O.

    ``then``: what the caller reads or writes after this returns, before it yields again.
    """
    if not (is_cow_mapping(src_vma.vm_flags) and pte_write(pte)):
        return pte
    yield Point(
        "fork wrprotect",
        reads=pte_footprint(src.id, addr) | then,
        writes=frozenset({pte_key(src.id, addr)}) | then,
    )
    pte = pte_wrprotect(get_pte(src.pgtable, addr))
    set_pte_at(src.pgtable, addr, pte)
    return pte


def copy_pte_range(
    k: Kernel,
    dst: MmStruct,
    src: MmStruct,
    dst_vma: VmArea,
    src_vma: VmArea,
    start: int,
    end: int,
    cpu: int,
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c copy_pte_range: on -EAGAIN unlock, preallocate, retry the same PTE."""
    prealloc: list[int] = []
    addr = start
    while addr < end:
        yield from pte_lock(k, src, addr)
        ret = 0
        while addr < end:
            yield Point("fork pte", reads=pte_footprint(src.id, addr))
            pte = get_pte(src.pgtable, addr)
            if pte and pte_present(pte):
                ret = yield from copy_present_pte(
                    k, dst, src, dst_vma, src_vma, addr, prealloc, cpu
                )
                if ret == -EAGAIN:
                    break
                if prealloc:
                    put_page(k, prealloc.pop())
            addr += PAGE_SIZE
        pte_unlock(k, src, addr if addr < end else end - PAGE_SIZE)
        if ret == -EAGAIN:
            new = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
            if new is None:
                return -ENOMEM
            prealloc.append(new)
    if prealloc:
        put_page(k, prealloc.pop())
    return 0


def copy_huge_pmd(
    k: Kernel,
    dst: MmStruct,
    src: MmStruct,
    dst_vma: VmArea,
    src_vma: VmArea,
    haddr: int,
) -> Generator[Yield, None, int]:
    """v6.1 mm/huge_memory.c copy_huge_pmd: share the THP, or split the parent's PMD: -EAGAIN.

    v5.7.14 mm/huge_memory.c:1022 copy_huge_pmd shares every THP (page_dup_rmap :1102, no
    pin test) and maps the huge zero page afresh (profile.fork_huge_zero_fresh); v4.4 is
    huge_pmd_4_4.copy_huge_pmd.
    """
    if k.profile.thp_tail_refs_in_mapcount:
        return (yield from copy_huge_pmd_4_4(k, dst, src, src_vma, haddr))
    if not vma_is_anonymous(dst_vma):
        return 0
    slot = haddr >> PMD_SHIFT
    yield from pte_lock(k, src, haddr)
    yield Point("copy huge pmd", reads=frozenset({pmd_key(src.id, haddr)}))
    pmd = src.pgtable.pmd.get(slot, 0)
    if not pmd:
        pte_unlock(k, src, haddr)
        return -EAGAIN
    if is_huge_zero_pmd(k, pmd):
        mm_get_huge_zero_page(k, dst)
        if k.profile.fork_huge_zero_fresh:
            # v5.7.14 mm/huge_memory.c:1092-1096 set_huge_zero_page: a new entry of the VMA's
            # protections (young, clean), the parent's PMD left as it is; v6.1 :1160-1161
            # goes on to the write-protected old copy below (out_zero_page)
            dst.pgtable.pmd[slot] = pfn_pte(pte_pfn(pmd), vma_page_prot(k, src_vma)) | _PAGE_PSE
            pte_unlock(k, src, haddr)
            return 0
    else:
        page = pte_pfn(pmd)
        yield Point("fork get_page", writes=frozenset({("page", page, "refcount")}))
        get_page(k, page)
        if (yield from page_try_dup_anon_rmap(k, src, page, True, src_vma)):
            yield Point("fork put_page", writes=frozenset({("page", page, "refcount")}))
            put_page(k, page)
            pte_unlock(k, src, haddr)
            yield from split_huge_pmd(k, src, src_vma, haddr)
            return -EAGAIN
    yield Point("pmdp_set_wrprotect", writes=frozenset({pmd_key(src.id, haddr)}))
    pmd = src.pgtable.pmd[slot]
    src.pgtable.pmd[slot] = pte_wrprotect(pmd)
    dst.pgtable.pmd[slot] = pte_mkold(pte_wrprotect(pmd))
    pte_unlock(k, src, haddr)
    return 0


def copy_page_range(
    k: Kernel, dst: MmStruct, src: MmStruct, dst_vma: VmArea, src_vma: VmArea, cpu: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c copy_page_range: hugetlb, huge PMDs, then PTE tables; 0 or -errno."""
    from pinlab.kernel.mm.hugetlb import is_vm_hugetlb_page
    from pinlab.kernel.mm.hugetlb_range import copy_hugetlb_page_range

    if not vma_needs_copy(dst_vma, src_vma):
        return 0
    if is_vm_hugetlb_page(src_vma):
        return (yield from copy_hugetlb_page_range(k, dst, src, dst_vma, src_vma))
    seq = is_cow_mapping(src_vma.vm_flags) and k.profile.write_protect_seq
    if seq:
        yield from raw_write_seqcount(src, "begin")
    ret = 0
    first = src_vma.vm_start >> PMD_SHIFT
    last = (src_vma.vm_end - 1) >> PMD_SHIFT
    for slot in range(first, last + 1):
        lo = max(src_vma.vm_start, slot << PMD_SHIFT)
        hi = min(src_vma.vm_end, (slot + 1) << PMD_SHIFT)
        if slot in src.pgtable.pmd:
            ret = yield from copy_huge_pmd(k, dst, src, dst_vma, src_vma, lo & ~(PMD_SIZE - 1))
            if ret == -ENOMEM:
                break
            if ret != -EAGAIN:
                continue
        if slot in src.pgtable.pte:
            ret = yield from copy_pte_range(k, dst, src, dst_vma, src_vma, lo, hi, cpu)
            if ret:
                break
    if seq:
        yield from raw_write_seqcount(src, "end")
    return ret if ret in (-ENOMEM, -ENOSPC) else 0


def raw_write_seqcount(mm: MmStruct, which: str) -> Generator[Yield, None, None]:
    """v6.1 include/linux/seqlock.h raw_write_seqcount_begin/_end on mm->write_protect_seq.

    Odd while fork write-protects a COW mapping, so GUP-fast pins back off
    (v6.1 mm/gup.c lockless_pages_from_mm); the seqcount is v5.11 (57efa1fe5957).
    """
    yield Point(f"write_protect_seq {which}", writes=frozenset({("mm", mm.id, "wpseq")}))
    mm.write_protect_seq += 1
