"""hugetlb mappings: faults, COW and gup's walk of 2 MiB / 1 GiB pages (v6.1 mm/hugetlb.c).

A huge PTE lives in PageTable.pmd (2 MiB) or PageTable.pud (1 GiB).  Huge
page reservations (resv_huge_pages) and PMD sharing are not modelled.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Await, Point, Yield
from pinlab.kernel import errno
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.errno import EEXIST
from pinlab.kernel.mm.gup_flags import FOLL_NOWAIT, FOLL_TRIED, FOLL_WRITE
from pinlab.kernel.mm.gup_grab import try_grab_folio, try_grab_page
from pinlab.kernel.mm.gup_page import (
    Locked,
    Pages,
    gup_must_unshare,
    gup_page_hook,
    store_pages,
    vm_fault_to_errno,
)
from pinlab.kernel.mm.locking import folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.memory import (
    FAULT_FLAG_ALLOW_RETRY,
    FAULT_FLAG_KILLABLE,
    FAULT_FLAG_RETRY_NOWAIT,
    FAULT_FLAG_TRIED,
    FAULT_FLAG_UNSHARE,
    FAULT_FLAG_WRITE,
    VM_FAULT_ERROR,
    VM_FAULT_RETRY,
    handle_mm_fault,
)
from pinlab.kernel.mm.page_alloc import (
    alloc_hugetlb_folio,
    free_writes,
    hugetlb_alloc_writes,
    page_keys,
)
from pinlab.kernel.mm.page_ref import get_page, put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_DIRTY,
    _PAGE_PSE,
    _PAGE_RW,
    HPAGE_PMD_ORDER,
    HPAGE_PUD_ORDER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PUD_SHIFT,
    pfn_pte,
    pmd_key,
    pte_pfn,
    pte_present,
    pte_write,
    pud_key,
)
from pinlab.kernel.mm.rmap import (
    PageAnon,
    PageAnonExclusive,
    hugepage_add_new_anon_rmap,
    page_dup_rmap,
    page_mapcount,
    page_move_anon_rmap,
    page_remove_rmap,
)
from pinlab.kernel.mm.types import (
    VM_HUGETLB,
    VM_MAYSHARE,
    VM_SHARED,
    VM_WRITE,
    AddressSpace,
    MmStruct,
    VmArea,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

PAGE_MASK = ~(PAGE_SIZE - 1)


def is_vm_hugetlb_page(vma: VmArea) -> bool:
    """v6.1 include/linux/hugetlb_inline.h is_vm_hugetlb_page."""
    return bool(vma.vm_flags & VM_HUGETLB)


def huge_page_order(k: Kernel, vma: VmArea) -> int:
    """v6.1 include/linux/hugetlb.h huge_page_order(hstate_vma(vma))."""
    assert vma.vm_file is not None
    return k.mappings[vma.vm_file].huge_order


def _shift(order: int) -> int:
    return PMD_SHIFT if order == HPAGE_PMD_ORDER else PUD_SHIFT


def huge_ptep_get(k: Kernel, mm: MmStruct, order: int, haddr: int) -> int:
    """v6.1 huge_ptep_get: the huge entry at the PMD (2 MiB) or PUD (1 GiB) level."""
    table = mm.pgtable.pmd if order == HPAGE_PMD_ORDER else mm.pgtable.pud
    return table.get(haddr >> _shift(order), 0)


def set_huge_pte_at(k: Kernel, mm: MmStruct, order: int, haddr: int, entry: int) -> None:
    """v6.1 set_huge_pte_at (entry 0 clears it, as huge_ptep_get_and_clear)."""
    table = mm.pgtable.pmd if order == HPAGE_PMD_ORDER else mm.pgtable.pud
    slot = haddr >> _shift(order)
    if entry:
        table[slot] = entry
    else:
        table.pop(slot, None)


def make_huge_pte(k: Kernel, vma: VmArea, page: int, writable: bool) -> int:
    """v6.1 mm/hugetlb.c make_huge_pte: young; writable+dirty, or write-protected."""
    from pinlab.kernel.mm.memory import vma_page_prot

    entry = pfn_pte(page, vma_page_prot(k, vma)) | _PAGE_PSE
    if writable:
        return entry | _PAGE_RW | _PAGE_DIRTY
    return entry & ~_PAGE_RW


def vma_hugecache_offset(vma: VmArea, order: int, haddr: int) -> int:
    """v6.1 mm/hugetlb.c vma_hugecache_offset: the file index in huge pages."""
    return ((haddr - vma.vm_start) >> (order + PAGE_SHIFT)) + (vma.vm_pgoff >> order)


def huge_pte_key(mm: MmStruct, order: int, haddr: int) -> tuple[str, int, int]:
    """Footprint key of a hugetlb entry: the PMD (2 MiB) or PUD (1 GiB) it lives in."""
    return pmd_key(mm.id, haddr) if order == HPAGE_PMD_ORDER else pud_key(mm.id, haddr)


def hugetlb_fault_mutex_lock(
    k: Kernel, mapping: AddressSpace, idx: int
) -> Generator[Yield, None, None]:
    """v6.1 mm/hugetlb.c hugetlb_fault_mutex_hash + mutex_lock: one fault per file index.

    The kernel hashes (mapping, index) into a table of mutexes; the model
    keeps one per key (hash collisions are not modelled).
    """
    key = (mapping.id, idx)
    yield Await(
        "hugetlb_fault_mutex",
        lambda: key not in k.hugetlb_fault_mutex,
        writes=frozenset({("hugetlb_fault_mutex", *key)}),
    )
    k.hugetlb_fault_mutex.add(key)


def hugetlb_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/hugetlb.c hugetlb_fault: under the fault mutex, no page -> hugetlb_no_page;
    write/unshare on a read-only entry -> hugetlb_wp."""
    from pinlab.kernel.mm.memory import FAULT_FLAG_UNSHARE, FAULT_FLAG_WRITE

    assert vma.vm_file is not None
    mapping = k.mappings[vma.vm_file]
    order = huge_page_order(k, vma)
    haddr = address & ~((1 << (order + PAGE_SHIFT)) - 1)
    idx = vma_hugecache_offset(vma, order, haddr)
    yield from hugetlb_fault_mutex_lock(k, mapping, idx)
    try:
        key = huge_pte_key(mm, order, haddr)
        yield Point("hugetlb pte", reads=frozenset({key}))
        if huge_ptep_get(k, mm, order, haddr) == 0:
            return (yield from hugetlb_no_page(k, mm, vma, mapping, idx, haddr, order, flags))
        yield from pte_lock(k, mm, haddr)
        entry = huge_ptep_get(k, mm, order, haddr)
        ret = 0
        if entry and flags & (FAULT_FLAG_WRITE | FAULT_FLAG_UNSHARE) and not entry & _PAGE_RW:
            page = pte_pfn(entry)
            yield _hpoint("hugetlb_wp", k, key, page, order, True)
            ret = hugetlb_wp(k, mm, vma, haddr, order, flags)
        elif entry and flags & FAULT_FLAG_WRITE:
            yield Point("huge_ptep_set_access_flags", writes=frozenset({key}))
            set_huge_pte_at(k, mm, order, haddr, entry | _PAGE_DIRTY)
        pte_unlock(k, mm, haddr)
        return ret
    finally:
        k.hugetlb_fault_mutex.discard((mapping.id, idx))


# the fields of a huge page's page[0] and page[1] its rmap and refcount change
_HFIELDS = ("flags", "refcount", "mapcount", "compound_mapcount", "mapping", "index")


def _hpoint(label: str, k: Kernel, key: Hashable, page: int, order: int, wp: bool) -> Point:
    """The point before a step that installs or write-faults the hugetlb entry ``key`` of
    huge page ``page``: it reads and writes the entry; the page's rmap fields, pincount
    and refcount, and what freeing it writes; with ``wp`` (hugetlb_wp follows) its
    contents and the allocation of a copy.  (Built in the yield expression: a footprint
    kept in a local would be part of the state key.)"""
    writes = {key} | page_keys(page, 2, _HFIELDS) | free_writes(k, page)
    writes |= {("page", page + k.profile.pincount_page, "pincount")}
    reads = writes | page_keys(page, 2, ("head", "order", "dtor"))
    if wp:
        writes |= hugetlb_alloc_writes(k, order)
        reads |= writes | page_keys(page, 1 << order, ("data",))
    return Point(label, reads=frozenset(reads), writes=frozenset(writes))


def hugetlb_no_page(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    mapping: AddressSpace,
    idx: int,
    haddr: int,
    order: int,
    flags: int,
) -> Generator[Yield, None, int]:
    """v6.1 mm/hugetlb.c hugetlb_no_page: page-cache page (shared) or new anon page (private).

    A lost race to add the page to the cache (-EEXIST) retries the lookup.
    """
    from pinlab.kernel.mm.filemap import filemap_add_folio, filemap_get_folio, folio_mark_dirty
    from pinlab.kernel.mm.memory import FAULT_FLAG_WRITE, VM_FAULT_SIGBUS, anon_vma_prepare

    nr = 1 << order
    while True:
        if idx >= mapping.i_size >> (order + PAGE_SHIFT):
            return VM_FAULT_SIGBUS
        anon = False
        page = yield from filemap_get_folio(k, mapping, idx)
        if page is not None:
            break
        page = alloc_hugetlb_folio(k, order)
        if page is None:
            # alloc_huge_page -> -ENOSPC -> vmf_error: VM_FAULT_SIGBUS
            return VM_FAULT_SIGBUS
        k.mem.data[page : page + nr] = 0
        k.mem.flags[page] |= k.pf.mask("PG_uptodate")
        if not vma.vm_flags & VM_MAYSHARE:
            anon = True
            break
        err = yield from filemap_add_folio(k, mapping, page, idx)
        if err == -EEXIST:
            put_page(k, page)
            continue
        yield from folio_mark_dirty(k, page)
        folio_unlock(k, page)
        break
    key = huge_pte_key(mm, order, haddr)
    yield from pte_lock(k, mm, haddr)
    wp = bool(flags & FAULT_FLAG_WRITE and not vma.vm_flags & VM_SHARED)
    yield _hpoint("hugetlb install", k, key, page, order, wp)
    if huge_ptep_get(k, mm, order, haddr) != 0:
        pte_unlock(k, mm, haddr)
        put_page(k, page)
        return 0
    if anon:
        anon_vma_prepare(k, vma)
        hugepage_add_new_anon_rmap(k, page, vma, haddr)
    else:
        page_dup_rmap(k, page, True)
    writable = bool(vma.vm_flags & VM_WRITE and vma.vm_flags & VM_SHARED)
    set_huge_pte_at(k, mm, order, haddr, make_huge_pte(k, vma, page, writable))
    ret = 0
    if flags & FAULT_FLAG_WRITE and not vma.vm_flags & VM_SHARED:
        ret = hugetlb_wp(k, mm, vma, haddr, order, flags)
    pte_unlock(k, mm, haddr)
    return ret


def hugetlb_wp(k: Kernel, mm: MmStruct, vma: VmArea, haddr: int, order: int, flags: int) -> int:
    """v6.1 mm/hugetlb.c hugetlb_wp (PTL held): reuse when mapped once and anon, else copy.

    The reuse test is page_mapcount == 1, not PageAnonExclusive, even in v6.1.
    """
    from pinlab.kernel.mm.memory import (
        FAULT_FLAG_UNSHARE,
        VM_FAULT_SIGBUS,
        VM_FAULT_SIGSEGV,
        anon_vma_prepare,
    )

    unshare = bool(flags & FAULT_FLAG_UNSHARE)
    if not unshare and not vma.vm_flags & VM_WRITE:
        return VM_FAULT_SIGSEGV
    pte = huge_ptep_get(k, mm, order, haddr)
    if vma.vm_flags & VM_MAYSHARE:
        if not unshare:
            set_huge_pte_at(k, mm, order, haddr, pte | _PAGE_RW | _PAGE_DIRTY)
        return 0
    old_page = pte_pfn(pte)
    if page_mapcount(k, old_page) == 1 and PageAnon(k, old_page):
        if not (k.profile.page_anon_exclusive and PageAnonExclusive(k, old_page)):
            page_move_anon_rmap(k, old_page, vma)
        if not unshare:
            set_huge_pte_at(k, mm, order, haddr, pte | _PAGE_RW | _PAGE_DIRTY)
        return 0
    get_page(k, old_page)
    new_page = alloc_hugetlb_folio(k, order)
    if new_page is None:
        put_page(k, old_page)
        return VM_FAULT_SIGBUS
    nr = 1 << order
    k.mem.data[new_page : new_page + nr] = k.mem.data[old_page : old_page + nr]
    k.mem.flags[new_page] |= k.pf.mask("PG_uptodate")
    anon_vma_prepare(k, vma)
    page_remove_rmap(k, old_page, vma, True)
    hugepage_add_new_anon_rmap(k, new_page, vma, haddr)
    set_huge_pte_at(k, mm, order, haddr, make_huge_pte(k, vma, new_page, not unshare))
    put_page(k, old_page)
    put_page(k, old_page)
    return 0


def _huge_entry(mm: MmStruct, vaddr: int) -> tuple[int, int]:
    """The hugetlb entry mapping `vaddr` and its order (PUD 1 GiB or PMD 2 MiB); (0, 0) if none."""
    pud = mm.pgtable.pud.get(vaddr >> PUD_SHIFT, 0)
    if pud:
        return pud, HPAGE_PUD_ORDER
    pmd = mm.pgtable.pmd.get(vaddr >> PMD_SHIFT, 0)
    return (pmd, HPAGE_PMD_ORDER) if pmd else (0, 0)


def follow_hugetlb_page(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    pages: Pages | None,
    pos: list[int],
    i: int,
    flags: int,
    locked: Locked | None,
) -> Generator[Yield, None, int]:
    """v6.1 mm/hugetlb.c follow_hugetlb_page; pos = [vaddr, remainder], updated in place.

    6.1 grabs each huge page's subpages with one try_grab_folio(refs) (v5.12
    0fa5bc4023c1); v5.7 and the 2020 postings called try_grab_page per subpage.
    """
    vaddr, remainder = pos
    err = -errno.EFAULT
    while vaddr < vma.vm_end and remainder:
        yield from pte_lock(k, mm, vaddr)
        yield Point(
            "follow_hugetlb_page:read",
            reads=frozenset({pud_key(mm.id, vaddr), pmd_key(mm.id, vaddr)}),
        )
        entry, order = _huge_entry(mm, vaddr)
        must_fault = not pte_present(entry)
        unshare = False
        if not must_fault and not pte_write(entry):
            if flags & FOLL_WRITE:
                must_fault = True
            elif gup_must_unshare(k, flags, pte_pfn(entry)):
                must_fault = unshare = True
        if must_fault:
            pte_unlock(k, mm, vaddr)
            fault_flags = 0
            if flags & FOLL_WRITE:
                fault_flags |= FAULT_FLAG_WRITE
            elif unshare:
                fault_flags |= FAULT_FLAG_UNSHARE
            if locked is not None:
                fault_flags |= FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE
            if flags & FOLL_NOWAIT:
                fault_flags |= FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_RETRY_NOWAIT
            if flags & FOLL_TRIED:
                fault_flags |= FAULT_FLAG_TRIED
            ret = yield from handle_mm_fault(k, mm, vma, vaddr, fault_flags)
            if ret & VM_FAULT_ERROR:
                err = vm_fault_to_errno(ret, flags)
                remainder = 0
                break
            if (
                ret & VM_FAULT_RETRY
                and locked is not None
                and not fault_flags & FAULT_FLAG_RETRY_NOWAIT
            ):
                locked.held = False
                pos[:] = [vaddr, remainder]
                return i
            continue
        nr = 1 << order
        head = pte_pfn(entry)
        pfn_offset = (vaddr & ((nr << PAGE_SHIFT) - 1)) >> PAGE_SHIFT
        size = nr << PAGE_SHIFT
        if pages is None and not pfn_offset and vaddr + size < vma.vm_end and remainder >= nr:
            pte_unlock(k, mm, vaddr)
            vaddr += size
            remainder -= nr
            i += nr
            continue
        refs = min(nr - pfn_offset, remainder, (vma.vm_end - (vaddr & PAGE_MASK)) >> PAGE_SHIFT)
        refused = yield from gup_page_hook(k, vma, head + pfn_offset, flags)
        if refused:
            pte_unlock(k, mm, vaddr)
            err = refused
            break
        grabbed = yield from _hugetlb_grab(k, pages, i, head + pfn_offset, refs, flags)
        pte_unlock(k, mm, vaddr)
        if grabbed < refs:
            warn_on_once(k, "mm/hugetlb.c follow_hugetlb_page grab failed")
            i += grabbed
            remainder = 0
            err = -errno.ENOMEM
            break
        vaddr += refs << PAGE_SHIFT
        remainder -= refs
        i += refs
    pos[:] = [vaddr, remainder]
    return i if i else err


def _hugetlb_grab(
    k: Kernel, pages: Pages | None, i: int, first: int, refs: int, flags: int
) -> Generator[Yield, None, int]:
    """Record `refs` subpages from `first` into pages[i:] and grab them; how many were grabbed."""
    if pages is None:
        return refs
    store_pages(pages, i, first, refs)
    if k.profile.hugetlb_grab_batched:
        folio = yield from try_grab_folio(k, first, refs, flags)
        return refs if folio is not None else 0
    for n in range(refs):
        if not (yield from try_grab_page(k, first + n, flags)):
            return n
    return refs
