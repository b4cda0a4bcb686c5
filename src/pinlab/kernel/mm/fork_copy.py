"""fork's page-table copy: copy_page_range with COW and early copy of maybe-pinned pages.

v6.1 mm/memory.c copy_page_range / copy_pte_range / copy_present_pte /
copy_present_page, include/linux/rmap.h page_try_dup_anon_rmap and
mm/huge_memory.c copy_huge_pmd.  v4.4 / v5.7 mm/memory.c copy_one_pte and
copy_huge_pmd share every anon page (no early copy); the profile's
fork_cow_pinned and page_anon_exclusive select the behaviour, and the
fork_must_copy hook replaces the "must the child get a copy now?" test.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.errno import EAGAIN, EBUSY, ENOMEM
from pinlab.kernel.mm.huge_memory import (
    is_huge_zero_pmd,
    mm_get_huge_zero_page,
    split_huge_pmd,
)
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.memory import maybe_mkwrite, mk_pte, pte_key, vm_normal_page
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, alloc_pages
from pinlab.kernel.mm.page_ref import get_page, put_page
from pinlab.kernel.mm.pgtable import (
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    get_pte,
    pte_mkclean,
    pte_mkdirty,
    pte_mkold,
    pte_present,
    pte_write,
    pte_wrprotect,
    set_pte_at,
)
from pinlab.kernel.mm.pincount import page_needs_cow_for_dma
from pinlab.kernel.mm.rmap import (
    ClearPageAnonExclusive,
    PageAnon,
    PageAnonExclusive,
    page_add_new_anon_rmap,
    page_dup_rmap,
)
from pinlab.kernel.mm.swap import folio_add_lru
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

    v6.1 include/linux/rmap.h page_try_dup_anon_rmap: page_needs_cow_for_dma
    (MMF_HAS_PINNED and maybe pinned; the caller already holds fork's own
    reference).  The fork_must_copy hook replaces this test in every profile.
    """
    from pinlab.kernel.mm.pincount import pinned_footprint

    folio = compound_head(k.mem, page)
    reads = pinned_footprint(k, folio) | {("mm", src_mm.id, "flags")}
    yield Point("fork pinned?", reads=frozenset(reads))
    if k.hooks.fork_must_copy is not None:
        return k.hooks.fork_must_copy(k, src_mm, page)
    if not k.profile.fork_cow_pinned:
        return False
    return page_needs_cow_for_dma(k, src_mm, src_vma, page)


def page_try_dup_anon_rmap(
    k: Kernel, src_mm: MmStruct, page: int, compound: bool, src_vma: VmArea
) -> Generator[Yield, None, int]:
    """v6.1 include/linux/rmap.h page_try_dup_anon_rmap: share, or -EBUSY to copy now.

    v4.4 / v5.7 page_dup_rmap: always share (mapcount + 1).
    """
    if k.profile.page_anon_exclusive:
        yield Point("PageAnonExclusive?", reads=frozenset({("page", page, "flags")}))
        if not PageAnonExclusive(k, page):
            page_dup_rmap(k, page, compound)
            return 0
    if (yield from fork_must_copy(k, src_mm, src_vma, page)):
        return -EBUSY
    if k.profile.page_anon_exclusive:
        ClearPageAnonExclusive(k, page)
    page_dup_rmap(k, page, compound)
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
    yield from folio_add_lru(k, new, cpu)
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
    """v6.1 mm/memory.c copy_present_pte: fork's reference first, then the pin test."""
    pte = get_pte(src.pgtable, addr)
    page = vm_normal_page(k, src_vma, addr, pte)
    if page is not None and PageAnon(k, page):
        folio = compound_head(k.mem, page)
        yield Point("fork get_page", writes=frozenset({("page", folio, "refcount")}))
        get_page(k, page)
        if (yield from page_try_dup_anon_rmap(k, src, page, False, src_vma)):
            put_page(k, page)
            return (yield from copy_present_page(k, dst, dst_vma, addr, page, prealloc, cpu))
    elif page is not None:
        get_page(k, page)
        page_dup_rmap(k, page, False)
    if is_cow_mapping(src_vma.vm_flags) and pte_write(pte):
        yield Point("fork wrprotect", writes=frozenset({pte_key(src, addr)}))
        pte = pte_wrprotect(pte)
        set_pte_at(src.pgtable, addr, pte)
    if src_vma.vm_flags & VM_SHARED:
        pte = pte_mkclean(pte)
    set_pte_at(dst.pgtable, addr, pte_mkold(pte))
    return 0


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
            yield Point("fork pte", reads=frozenset({pte_key(src, addr)}))
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
    """v6.1 mm/huge_memory.c copy_huge_pmd: share the THP, or split the parent's PMD: -EAGAIN."""
    if not vma_is_anonymous(dst_vma):
        return 0
    slot = haddr >> PMD_SHIFT
    yield from pte_lock(k, src, haddr)
    yield Point("copy huge pmd", reads=frozenset({pte_key(src, haddr)}))
    pmd = src.pgtable.pmd[slot]
    if is_huge_zero_pmd(k, pmd):
        mm_get_huge_zero_page(k)
        dst.pgtable.pmd[slot] = pmd
        pte_unlock(k, src, haddr)
        return 0
    from pinlab.kernel.mm.pgtable import pte_pfn

    page = pte_pfn(pmd)
    get_page(k, page)
    if (yield from page_try_dup_anon_rmap(k, src, page, True, src_vma)):
        put_page(k, page)
        pte_unlock(k, src, haddr)
        yield from split_huge_pmd(k, src, src_vma, haddr)
        return -EAGAIN
    src.pgtable.pmd[slot] = pte_wrprotect(pmd)
    dst.pgtable.pmd[slot] = pte_mkold(pte_wrprotect(pmd))
    pte_unlock(k, src, haddr)
    return 0


def copy_page_range(
    k: Kernel, dst: MmStruct, src: MmStruct, dst_vma: VmArea, src_vma: VmArea, cpu: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c copy_page_range: hugetlb, huge PMDs, then PTE tables; 0 or -ENOMEM.

    write_protect_seq (v5.11) is odd while a COW mapping is copied, so GUP-fast
    pins back off (v6.1 mm/gup.c lockless_pages_from_mm).
    """
    from pinlab.kernel.mm.hugetlb import copy_hugetlb_page_range, is_vm_hugetlb_page

    if not vma_needs_copy(dst_vma, src_vma):
        return 0
    if is_vm_hugetlb_page(src_vma):
        return (yield from copy_hugetlb_page_range(k, dst, src, dst_vma, src_vma))
    cow = is_cow_mapping(src_vma.vm_flags)
    seq = cow and k.profile.mmf_has_pinned
    if seq:
        yield Point("write_protect_seq begin", writes=frozenset({("mm", src.id, "wpseq")}))
        src.write_protect_seq += 1
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
        yield Point("write_protect_seq end", writes=frozenset({("mm", src.id, "wpseq")}))
        src.write_protect_seq += 1
    return ret if ret == -ENOMEM else 0
