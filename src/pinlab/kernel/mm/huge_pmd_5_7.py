"""Write faults on a huge PMD in v5.7 (v5.7.14 mm/huge_memory.c do_huge_pmd_wp_page).

Before v5.8's "thp: change CoW semantics for anon-THP", a write fault on a
write-protected anon THP reuses it when reuse_swap_page finds it mapped once
(the post-4.5 count: each page's _mapcount, the entire mapcount, PageDoubleMap),
under the page lock, and otherwise copies it whole, as v4.4 does
(huge_pmd_4_4.huge_pmd_wp_copy).  Pins play no part: 5.7 has FOLL_PIN and
page_maybe_dma_pinned, but neither the reuse test nor the copy reads them.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.filemap import folio_put_footprint
from pinlab.kernel.mm.huge_pmd_4_4 import huge_pmd_wp_copy
from pinlab.kernel.mm.locking import folio_lock, folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.page_alloc import order_keys, page_keys
from pinlab.kernel.mm.page_ref import get_page, put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    HPAGE_PMD_ORDER,
    PMD_SHIFT,
    PMD_SIZE,
    pmd_key,
    pte_pfn,
)
from pinlab.kernel.mm.types import MmStruct, VmArea

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER


def _reuse_reads(head: int) -> frozenset[Hashable]:
    """What trylock_page and reuse_swap_page read of the THP: the head's flags (PG_locked,
    PageKsm's mapping, PageSwapCache), every page's _mapcount, the entire mapcount and
    PageDoubleMap in page[1] (v5.7.14 mm/swapfile.c page_trans_huge_map_swapcount)."""
    return (
        page_keys(head, HPAGE_PMD_NR, ("mapcount",))
        | page_keys(head, 1, ("flags", "mapping", "refcount"))
        | page_keys(head + 1, 1, ("flags", "compound_mapcount"))
        | order_keys(head)
    )


def do_huge_pmd_wp_page(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, cpu: int
) -> Generator[Yield, None, int]:
    """v5.7.14 mm/huge_memory.c:1375 do_huge_pmd_wp_page: reuse a THP mapped once, else copy.

    The huge zero page goes straight to the copy (:1387).  Under the PMD lock, if the
    PMD is unchanged (:1390), the THP is locked: trylock_page (:1399), or else it is
    held, the PMD lock dropped for lock_page and retaken, the PMD checked again
    (:1400-1408) and the hold put (:1409).  reuse_swap_page(page, NULL) (:1411) ->
    the PMD made young, dirty and writable (VM_WRITE, :1413-1416), VM_FAULT_WRITE;
    no page_move_anon_rmap.  Else the THP is unlocked, held and the lock dropped
    (:1421-1423) for the copy (alloc:, :1424).
    """
    from pinlab.kernel.mm.cow import reuse_swap_page
    from pinlab.kernel.mm.memory import VM_FAULT_WRITE, maybe_mkwrite

    haddr = address & ~(PMD_SIZE - 1)
    slot = haddr >> PMD_SHIFT
    key = pmd_key(mm.id, haddr)
    orig = mm.pgtable.pmd.get(slot, 0)
    # (is_huge_zero_pmd)
    if pte_pfn(orig) == k.huge_zero_pfn:
        return (yield from huge_pmd_wp_copy(k, mm, vma, address, orig, None, cpu))
    page = pte_pfn(orig)
    lock = k.pf.mask("PG_locked")
    yield from pte_lock(k, mm, haddr)
    yield Point(
        "wp huge pmd",
        reads=_reuse_reads(page) | {key},
        writes=frozenset({key, ("page", page, "flags"), ("page", page, "refcount")}),
    )
    if mm.pgtable.pmd.get(slot, 0) != orig:
        pte_unlock(k, mm, haddr)
        return 0
    if int(k.mem.flags[page]) & lock:
        get_page(k, page)
        pte_unlock(k, mm, haddr)
        yield from folio_lock(k, page)
        yield from pte_lock(k, mm, haddr)
        yield Point(
            "wp huge pmd relocked",
            reads=_reuse_reads(page) | {key},
            writes=frozenset({key, ("page", page, "flags"), ("page", page, "refcount")}),
        )
        if mm.pgtable.pmd.get(slot, 0) != orig:
            folio_unlock(k, page)
            # :1405-1406 the hold may be the THP's last reference
            yield Point("wp huge pmd put", writes=folio_put_footprint(k, page))
            put_page(k, page)
            pte_unlock(k, mm, haddr)
            return 0
        put_page(k, page)
    else:
        k.mem.flags[page] |= lock
    reusable, _ = reuse_swap_page(k, page)
    if reusable:
        mm.pgtable.pmd[slot] = maybe_mkwrite(orig | _PAGE_ACCESSED | _PAGE_DIRTY, vma)
        folio_unlock(k, page)
        pte_unlock(k, mm, haddr)
        return VM_FAULT_WRITE
    folio_unlock(k, page)
    get_page(k, page)
    pte_unlock(k, mm, haddr)
    return (yield from huge_pmd_wp_copy(k, mm, vma, address, orig, page, cpu))
