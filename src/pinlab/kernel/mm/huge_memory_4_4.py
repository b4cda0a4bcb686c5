"""THP references and splitting before v4.5's refcounting rework (v4.4 mm/huge_memory.c).

A v4.4 THP is only ever mapped by PMDs.  A reference taken on one of its tail
pages goes on the head's _count and, for an anon THP, on the tail's _mapcount
(v4.4 mm/internal.h get_page_foll, mm/swap.c put_compound_page).  There is no
PMD-only split: split_huge_page_pmd splits the compound page itself, under the
anon_vma lock, marking every PMD that maps it splitting (bit _PAGE_SPLITTING)
first, then handing each tail its own counts, then replacing the PMDs by PTE
tables.  The model keeps the PMD mapcount in page[1] as for later kernels
(v4.4 kept it in the head's _mapcount); page_mapcount reads it from there.
The anon_vma rwsem is a k.ptl entry (ANON_VMA_LOCK, anon_vma id).
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

import numpy as np

from pinlab.interleave import Await, Point, Violation, Yield
from pinlab.kernel.arch.x86.mm.tlb import flush_tlb_mm_range
from pinlab.kernel.mm.filemap import folio_put_footprint, folio_put_reads
from pinlab.kernel.mm.gup_grab import head_key, ref_key
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import (
    NO_HEAD,
    NULL_COMPOUND_DTOR,
    PAGE_MAPPING_ANON,
    compound_head,
    peek_head,
)
from pinlab.kernel.mm.page_alloc import FREE_LISTS, page_keys
from pinlab.kernel.mm.page_ref import (
    compound_tail_refcounted,
    folio_put,
    page_ref_add,
    put_page,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_SPLITTING,
    HPAGE_PMD_ORDER,
    PAGE_SHIFT,
    PMD_SHIFT,
    PMD_SIZE,
    PTRS_PER_PTE,
    pfn_pte,
    pmd_key,
    pte_pfn,
)
from pinlab.kernel.mm.types import MmStruct, VmArea, find_vma, vma_is_anonymous

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
# k.ptl key (ANON_VMA_LOCK, anon_vma id): anon_vma->root->rwsem held for write
ANON_VMA_LOCK = -1
# v4.4 mm/huge_memory.c:1801 __split_huge_page_refcount: the head flags a tail inherits
_INHERITED = (
    "PG_referenced",
    "PG_swapbacked",
    "PG_mlocked",
    "PG_uptodate",
    "PG_active",
    "PG_unevictable",
)


def pmd_trans_huge(pmd: int) -> bool:
    """v4.4 arch/x86/include/asm/pgtable.h:194 pmd_trans_huge: _PAGE_PSE alone, so a huge PMD
    made PROT_NONE, or not present for a moment by change_huge_pmd, is one too."""
    return bool(pmd & _PAGE_PSE)


def pmd_trans_splitting(pmd: int) -> bool:
    """v4.4 arch/x86/include/asm/pgtable.h:189 pmd_trans_splitting."""
    return bool(pmd & _PAGE_SPLITTING)


def anon_vma_lock_write(k: Kernel, anon_vma: int) -> Generator[Yield, None, None]:
    """v4.4 include/linux/rmap.h anon_vma_lock_write: down_write(&anon_vma->root->rwsem)."""
    key = (ANON_VMA_LOCK, anon_vma)
    yield Await("anon_vma_lock_write", lambda: key not in k.ptl, writes=frozenset({("ptl", *key)}))
    k.ptl.add(key)


def anon_vma_unlock_write(k: Kernel, anon_vma: int) -> None:
    """v4.4 include/linux/rmap.h anon_vma_unlock_write."""
    k.ptl.discard((ANON_VMA_LOCK, anon_vma))


def wait_split_huge_page(k: Kernel, anon_vma: int | None) -> Generator[Yield, None, None]:
    """v4.4 include/linux/huge_mm.h:112 wait_split_huge_page: take and drop the anon_vma lock."""
    if anon_vma is None:
        return
    yield from anon_vma_lock_write(k, anon_vma)
    anon_vma_unlock_write(k, anon_vma)


def compound_lock(k: Kernel, head: int) -> Generator[Yield, None, None]:
    """v4.4 include/linux/mm.h:401 compound_lock: bit_spin_lock(PG_compound_lock) on the head."""
    bit = k.pf.mask("PG_compound_lock")
    yield Await(
        "compound_lock",
        lambda: not int(k.mem.flags[head]) & bit,
        writes=frozenset({("page", head, "flags")}),
    )
    k.mem.flags[head] |= bit


def compound_unlock(k: Kernel, head: int) -> None:
    """v4.4 include/linux/mm.h:409 compound_unlock."""
    k.mem.flags[head] &= ~k.pf.mask("PG_compound_lock") & 0xFFFF_FFFF_FFFF_FFFF


def _tail_ref_keys(page: int, head: int) -> frozenset[Hashable]:
    """A tail reference: the tail's head pointer and _mapcount, the head's count and what
    compound_tail_refcounted reads (mapping, flags, page[1]'s dtor)."""
    return frozenset(
        {
            ("page", page, "head"),
            ("page", page, "mapcount"),
            ("page", head, "refcount"),
            ("page", head, "mapping"),
            ("page", head, "flags"),
            ("page", head + 1, "dtor"),
        }
    )


def put_compound_page(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v4.4 mm/swap.c:272 put_page -> put_compound_page (:233), with its interleaving points.

    A refcounted THP tail goes through put_refcounted_compound_page (:166): a
    reference on the head (get_page_unless_zero), the compound lock, then (still a
    tail) the tail's _mapcount and that reference off, the lock dropped, and last
    the tail's reference off the head, which may free the THP; if a split ran
    before the lock was taken, the head and the (now ordinary) page are each put.
    """
    m = k.mem
    head = peek_head(m, page)
    # (the page's own put too: a split may make it an ordinary page before this step)
    yield Point(
        "put_page",
        reads=_tail_ref_keys(page, head) | folio_put_reads(head) | folio_put_reads(page),
        writes=folio_put_footprint(k, head) | folio_put_footprint(k, page),
    )
    head = compound_head(m, page)
    if head == page or not compound_tail_refcounted(k, head):
        put_page(k, page)
        return
    # the tail reference held keeps the head's count above 0
    page_ref_add(m, head, 1)
    yield from compound_lock(k, head)
    yield Point(
        "put_page:compound_locked",
        reads=_tail_ref_keys(page, head),
        writes=frozenset(
            {("page", head, "refcount"), ("page", page, "mapcount"), ("page", head, "flags")}
        ),
    )
    still_tail = compound_head(m, page) == head
    if still_tail:
        page_ref_add(m, head, -1)
        m.mapcount[page] -= 1
    compound_unlock(k, head)
    yield Point("put_page:head", reads=folio_put_reads(head), writes=folio_put_footprint(k, head))
    folio_put(k, head)
    if not still_tail:
        yield Point(
            "put_page:single", reads=folio_put_reads(page), writes=folio_put_footprint(k, page)
        )
        folio_put(k, page)


def _vma_addresses(k: Kernel, index: int) -> list[tuple[MmStruct, int]]:
    """(mm, vma_address(page)) of every anon VMA covering page index ``index``."""
    found = []
    for mm in k.mms.values():
        for vma in mm.vmas:
            if not vma_is_anonymous(vma) or vma.anon_vma is None:
                continue
            addr = vma.vm_start + ((index - vma.vm_pgoff) << PAGE_SHIFT)
            if vma.vm_start <= addr < vma.vm_end:
                found.append((mm, addr))
    return found


def _next_vma(k: Kernel, index: int, seen: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The next (mm id, address) of v4.4 mm/huge_memory.c:1948 __split_huge_page's anon_vma
    interval tree walk (:1960-1965): every anon VMA at vma_address(page), oldest mm first.

    Found again at each step, so that a VMA fork adds mid-walk is still visited after its
    parent's, as a child VMA added at the tail of the tree is (the comment at :1966-1975).
    """
    for mm, addr in _vma_addresses(k, index):
        if (mm.id, addr) not in seen:
            return mm.id, addr
    return None


def _thp_keys(head: int) -> frozenset[Hashable]:
    """Every field of the THP's struct pages (and page[512]'s compound test), the free
    lists: what splitting the compound page and putting its tails may touch."""
    return (
        page_keys(head, HPAGE_PMD_NR)
        | page_keys(head + HPAGE_PMD_NR, 1, ("head", "order", "dtor"))
        | {FREE_LISTS}
    )


def __split_huge_page_splitting(
    k: Kernel, head: int, mm_id: int, addr: int
) -> Generator[Yield, None, int]:
    """v4.4 mm/huge_memory.c:1719 __split_huge_page_splitting: mark the PMD splitting.

    v4.4 arch/x86/mm/pgtable.c:524 pmdp_splitting_flush sets the bit, then flushes the
    TLB under the PMD lock: the flush IPI waits for a gup-fast running with
    interrupts off, which saw the PMD before the bit was set.
    """
    mm = k.mms[mm_id]
    yield from pte_lock(k, mm, addr)
    yield Point(
        "pmd splitting",
        reads=frozenset({pmd_key(mm_id, addr)}),
        writes=frozenset({pmd_key(mm_id, addr)}),
    )
    slot = addr >> PMD_SHIFT
    pmd = mm.pgtable.pmd.get(slot, 0)
    ret = 0
    # page_check_address_pmd(PAGE_CHECK_ADDRESS_PMD_NOTSPLITTING_FLAG)
    if pmd_trans_huge(pmd) and pte_pfn(pmd) == head and not pmd_trans_splitting(pmd):
        mm.pgtable.pmd[slot] = pmd | _PAGE_SPLITTING
        ret = 1
        yield from flush_tlb_mm_range(k, mm)
    pte_unlock(k, mm, addr)
    return ret


def _split_refcount_locked(k: Kernel, head: int, marked: int) -> None:
    """The compound-locked part of v4.4 __split_huge_page_refcount (:1766-1846)."""
    m = k.mem
    tails = slice(head + 1, head + HPAGE_PMD_NR)
    # the head's _mapcount (PMD mappings - 1): kept in page[1] by the model
    head_mapcount = int(m.compound_mapcount[head + 1])
    if marked != head_mapcount + 1:
        raise Violation(
            "BUG", f"v4.4 __split_huge_page: {marked} PMDs marked of {head_mapcount + 1}"
        )
    # page_mapcount(tail): the gup references on each tail
    gup_refs = m.mapcount[tails] + 1
    tail_count = int(gup_refs.sum())
    if (gup_refs < 0).any() or m.refcount[tails].any():
        raise Violation("BUG", "v4.4 __split_huge_page_refcount: tail _mapcount < 0 or _count != 0")
    # page_mapcount(head) + page_mapcount(tail) + 1 (the +1 put once the lock is dropped)
    m.refcount[tails] += (head_mapcount + 1) + gup_refs + 1
    inherited = sum(k.pf.mask(name) for name in _INHERITED)
    # every tail flag cleared (PAGE_FLAGS_CHECK_AT_PREP), the head's few copied, PG_dirty;
    # lru_add_page_tail (v4.4 mm/swap.c) with no list sets PG_lru
    m.flags[tails] = (int(m.flags[head]) & inherited) | k.pf.mask("PG_dirty") | k.pf.mask("PG_lru")
    m.head[tails] = NO_HEAD
    m.mapcount[tails] = head_mapcount
    m.mapping[tails] = int(m.mapping[head])
    m.index[tails] = int(m.index[head]) + np.arange(1, HPAGE_PMD_NR, dtype=np.int64)
    # page[1]'s compound fields go with its lru list_head (lru_add_page_tail)
    m.order[head + 1] = 0
    m.dtor[head + 1] = NULL_COMPOUND_DTOR
    m.compound_mapcount[head + 1] = 0
    m.mapcount[head] = head_mapcount
    page_ref_add(m, head, -tail_count)
    if int(m.refcount[head]) <= 0:
        raise Violation("BUG", "v4.4 __split_huge_page_refcount: head _count <= 0")
    m.flags[head] &= ~k.pf.mask("PG_head") & 0xFFFF_FFFF_FFFF_FFFF


def __split_huge_page_refcount(k: Kernel, head: int, marked: int) -> Generator[Yield, None, None]:
    """v4.4 mm/huge_memory.c:1752 __split_huge_page_refcount: under the compound lock, each
    tail gets _count = PMD mappings + its gup references (its _mapcount) + 1, the head's
    _mapcount, mapping, index and some flags; the head loses the tails' references and
    PG_head.  After the lock is dropped each tail's extra reference is put.  ``marked``: the
    PMDs __split_huge_page marked splitting, which must be all of them (:1976)."""
    yield from compound_lock(k, head)
    yield Point("split refcount", reads=_thp_keys(head), writes=_thp_keys(head))
    _split_refcount_locked(k, head, marked)
    compound_unlock(k, head)
    yield Point("split put tails", reads=_thp_keys(head), writes=_thp_keys(head))
    for tail in range(head + 1, head + HPAGE_PMD_NR):
        folio_put(k, tail)


def __split_huge_page_map(
    k: Kernel, head: int, mm_id: int, addr: int
) -> Generator[Yield, None, int]:
    """v4.4 mm/huge_memory.c:1871 __split_huge_page_map: the splitting PMD becomes a PTE
    table of the 512 pages, dirty, write-protected or old as the PMD was."""
    from pinlab.kernel.mm.memory import maybe_mkwrite, vma_page_prot

    mm = k.mms[mm_id]
    yield from pte_lock(k, mm, addr)
    yield Point(
        "pmd populate",
        reads=frozenset({pmd_key(mm_id, addr)}),
        writes=frozenset({pmd_key(mm_id, addr)}),
    )
    slot = addr >> PMD_SHIFT
    pmd = mm.pgtable.pmd.get(slot, 0)
    vma = find_vma(mm, addr)
    if not pmd_trans_huge(pmd) or pte_pfn(pmd) != head or vma is None:
        pte_unlock(k, mm, addr)
        return 0
    entry = maybe_mkwrite(pfn_pte(0, vma_page_prot(k, vma)) | _PAGE_DIRTY, vma)
    if not pmd & _PAGE_RW:
        entry &= ~_PAGE_RW
    if not pmd & _PAGE_ACCESSED:
        entry &= ~_PAGE_ACCESSED
    base = np.arange(PTRS_PER_PTE, dtype=np.uint64) + np.uint64(head)
    del mm.pgtable.pmd[slot]
    mm.pgtable.pte[slot] = base << np.uint64(PAGE_SHIFT) | np.uint64(entry)
    pte_unlock(k, mm, addr)
    return 1


def split_huge_page(k: Kernel, page: int) -> Generator[Yield, None, int]:
    """v4.4 mm/huge_memory.c:2005 split_huge_page_to_list (list NULL) -> __split_huge_page
    (:1948): 0, or 1 when the page has no anon_vma."""
    m = k.mem
    # page_get_anon_vma reads page->mapping unlocked
    yield Point("page_get_anon_vma", reads=frozenset({("page", page, "mapping")}))
    if not int(m.mapping[page]) & PAGE_MAPPING_ANON:
        return 1
    anon_vma = int(m.mapping[page]) >> 2
    yield from anon_vma_lock_write(k, anon_vma)
    yield Point(
        "split_huge_page",
        reads=frozenset({("page", page, "flags"), ("page", page, "index")})
        | {pmd_key(mm.id, addr) for mm, addr in _vma_addresses(k, int(m.index[page]))},
    )
    if not int(m.flags[page]) & k.pf.mask("PG_head"):
        anon_vma_unlock_write(k, anon_vma)
        return 0
    # (page->index is stable while the anon_vma lock is held)
    index = int(m.index[page])
    seen: list[tuple[int, int]] = []
    mapcount = 0
    while (vma := _next_vma(k, index, seen)) is not None:
        seen.append(vma)
        mapcount += yield from __split_huge_page_splitting(k, page, *vma)
    yield from __split_huge_page_refcount(k, page, mapcount)
    mapcount2 = 0
    for mm_id, addr in seen:
        mapcount2 += yield from __split_huge_page_map(k, page, mm_id, addr)
    if mapcount2 != mapcount:
        raise Violation("BUG", f"v4.4 __split_huge_page: {mapcount2} of {mapcount} PMDs mapped")
    anon_vma_unlock_write(k, anon_vma)
    return 0


def split_huge_page_pmd(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int
) -> Generator[Yield, None, None]:
    """v4.4 include/linux/huge_mm.h:105 split_huge_page_pmd -> mm/huge_memory.c:3007
    __split_huge_page_pmd: hold the THP, split_huge_page it, put it; again while the PMD is
    still huge.  The huge zero page's PMD becomes a table of zero-page PTEs."""
    from pinlab.kernel.mm.huge_memory import __split_huge_pmd_locked, is_huge_zero_pmd

    haddr = address & ~(PMD_SIZE - 1)
    slot = haddr >> PMD_SHIFT
    while pmd_trans_huge(mm.pgtable.pmd.get(slot, 0)):
        yield from pte_lock(k, mm, haddr)
        pmd = mm.pgtable.pmd.get(slot, 0)
        yield Point(
            "split_huge_page_pmd",
            reads=frozenset({pmd_key(mm.id, haddr), ("page", pte_pfn(pmd), "refcount")}),
            writes=frozenset({pmd_key(mm.id, haddr), ("page", pte_pfn(pmd), "refcount")}),
        )
        pmd = mm.pgtable.pmd.get(slot, 0)
        page = None
        if pmd_trans_huge(pmd):
            if is_huge_zero_pmd(k, pmd):
                # v4.4 mm/huge_memory.c:2979 __split_huge_zero_page_pmd
                __split_huge_pmd_locked(k, mm, vma, haddr)
            else:
                page = pte_pfn(pmd)
                page_ref_add(k.mem, page, 1)
        pte_unlock(k, mm, haddr)
        if page is None:
            return
        yield from split_huge_page(k, page)
        yield Point(
            "split_huge_page_pmd put",
            reads=folio_put_reads(page),
            writes=folio_put_footprint(k, page),
        )
        put_page(k, page)


def get_page_foll(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v4.4 mm/internal.h:95 get_page_foll, under the PMD lock: +1 on the head's _count, then
    (__get_page_tail_foll :70, include/linux/mm.h:477 get_huge_page_tail) +1 on an anon
    THP tail's _mapcount."""
    head = peek_head(k.mem, page)
    yield Point("get_page_foll:head", reads=head_key(page), writes=ref_key(head))
    head = compound_head(k.mem, page)
    page_ref_add(k.mem, head, 1)
    if head == page:
        return
    yield Point(
        "get_page_foll:tail",
        reads=page_keys(head, 1, ("mapping", "flags")) | page_keys(head + 1, 1, ("dtor",)),
        writes=page_keys(page, 1, ("mapcount",)),
    )
    if compound_tail_refcounted(k, head):
        k.mem.mapcount[page] += 1
