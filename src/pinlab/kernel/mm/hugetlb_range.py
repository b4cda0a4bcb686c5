"""hugetlb range walks: fork's copy and the unmap of 2 MiB / 1 GiB pages (v6.1 mm/hugetlb.c)."""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.errno import ENOSPC
from pinlab.kernel.mm.gup_grab import ref_key
from pinlab.kernel.mm.hugetlb import (
    huge_page_order,
    huge_pte_key,
    huge_ptep_get,
    make_huge_pte,
    set_huge_pte_at,
)
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.page_alloc import (
    alloc_hugetlb_folio,
    free_writes,
    page_keys,
)
from pinlab.kernel.mm.page_ref import get_page, put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_DIRTY,
    _PAGE_RW,
    PAGE_SHIFT,
    pte_pfn,
)
from pinlab.kernel.mm.rmap import (
    PageAnon,
    hugepage_add_new_anon_rmap,
    page_dup_rmap,
    page_remove_rmap,
)
from pinlab.kernel.mm.types import (
    MmStruct,
    VmArea,
    is_cow_mapping,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def copy_hugetlb_page_range(
    k: Kernel, dst: MmStruct, src: MmStruct, dst_vma: VmArea, src_vma: VmArea
) -> Generator[Yield, None, int]:
    """v6.1 mm/hugetlb.c copy_hugetlb_page_range: share, or copy a maybe-pinned anon page now.

    Each entry is copied under the page-table lock; a COW mapping bumps
    write_protect_seq around the walk; the copy for the child is allocated
    with the locks dropped, and a changed source entry restarts that entry.
    A failed allocation returns alloc_huge_page's -ENOSPC.
    """
    from pinlab.kernel.mm.fork_copy import page_try_dup_anon_rmap, raw_write_seqcount

    order = huge_page_order(k, src_vma)
    size = 1 << (order + PAGE_SHIFT)
    nr = 1 << order
    cow = is_cow_mapping(src_vma.vm_flags)
    seq = cow and k.profile.write_protect_seq
    if seq:
        yield from raw_write_seqcount(src, "begin")
    ret = 0
    haddr = src_vma.vm_start
    while haddr < src_vma.vm_end:
        key = huge_pte_key(src, order, haddr)
        yield from pte_lock(k, src, haddr)
        yield Point("copy hugetlb pte", reads=frozenset({key}))
        entry = huge_ptep_get(k, src, order, haddr)
        if entry == 0:
            pte_unlock(k, src, haddr)
            haddr += size
            continue
        page = compound_head(k.mem, pte_pfn(entry))
        yield Point("fork get_page", writes=frozenset({("page", page, "refcount")}))
        get_page(k, page)
        if not PageAnon(k, page):
            yield Point(
                "page_dup_file_rmap", writes=frozenset({("page", page + 1, "compound_mapcount")})
            )
            page_dup_rmap(k, page, True)
        elif (yield from page_try_dup_anon_rmap(k, src, page, True, src_vma)):
            pte_unlock(k, src, haddr)
            new = alloc_hugetlb_folio(k, order)
            if new is None:
                yield Point("fork put_page", writes=ref_key(page) | free_writes(k, page))
                put_page(k, page)
                ret = -ENOSPC
                break
            k.mem.data[new : new + nr] = k.mem.data[page : page + nr]
            k.mem.flags[new] |= k.pf.mask("PG_uptodate")
            yield Point("fork put_page", writes=ref_key(page) | free_writes(k, page))
            put_page(k, page)
            yield from pte_lock(k, src, haddr)
            yield Point("hugetlb pte_same", reads=frozenset({key}))
            if huge_ptep_get(k, src, order, haddr) != entry:
                pte_unlock(k, src, haddr)
                put_page(k, new)
                continue
            set_huge_pte_at(k, dst, order, haddr, make_huge_pte(k, dst_vma, new, True))
            hugepage_add_new_anon_rmap(k, new, dst_vma, haddr)
            pte_unlock(k, src, haddr)
            haddr += size
            continue
        if cow:
            yield Point("huge_ptep_set_wrprotect", writes=frozenset({key}))
            entry = huge_ptep_get(k, src, order, haddr) & ~_PAGE_RW
            set_huge_pte_at(k, src, order, haddr, entry)
        set_huge_pte_at(k, dst, order, haddr, entry)
        pte_unlock(k, src, haddr)
        haddr += size
    if seq:
        yield from raw_write_seqcount(src, "end")
    return ret


def _entry_page_keys(k: Kernel, mm: MmStruct, order: int, haddr: int) -> frozenset[Hashable]:
    """The head and mapping of the huge page the entry at ``haddr`` maps now, if any."""
    entry = huge_ptep_get(k, mm, order, haddr)
    return page_keys(pte_pfn(entry), 1, ("head", "mapping")) if entry else frozenset()


def unmap_hugepage_range(
    k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int, gather: list[int]
) -> Generator[Yield, None, None]:
    """v6.1 mm/hugetlb.c __unmap_hugepage_range: under the PTL clear, dirty, drop the rmap.

    The page's reference is dropped after the TLB flush (tlb_remove_page_size):
    the page joins `gather`.
    """
    from pinlab.kernel.mm.filemap import folio_mark_dirty

    order = huge_page_order(k, vma)
    size = 1 << (order + PAGE_SHIFT)
    for haddr in range(start, end, size):
        key = huge_pte_key(mm, order, haddr)
        yield from pte_lock(k, mm, haddr)
        # a dirty entry goes on to folio_mark_dirty's folio_mapping
        yield Point(
            "huge_ptep_get_and_clear",
            reads=_entry_page_keys(k, mm, order, haddr) | {key},
            writes=frozenset({key}),
        )
        entry = huge_ptep_get(k, mm, order, haddr)
        if entry == 0:
            pte_unlock(k, mm, haddr)
            continue
        set_huge_pte_at(k, mm, order, haddr, 0)
        page = pte_pfn(entry)
        if entry & _PAGE_DIRTY:
            yield from folio_mark_dirty(k, page)
        yield Point("page_remove_rmap", writes=frozenset({("page", page + 1, "compound_mapcount")}))
        page_remove_rmap(k, page, vma, True)
        pte_unlock(k, mm, haddr)
        gather.append(page)
