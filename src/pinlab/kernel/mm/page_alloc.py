"""The page allocator: buddy free lists per order, compound pages, freeing at refcount 0.

Modelled on v6.1 mm/page_alloc.c.  Allocation is deterministic (lowest PFN
first) so that scenarios replay exactly; the kernel's choice among free blocks
is not something a pin depends on.  Pools stand in for zones and migratetypes:
"normal" (ZONE_NORMAL, MIGRATE_MOVABLE/UNMOVABLE), "cma" (MIGRATE_CMA pageblocks)
and "movable" (ZONE_MOVABLE).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from pinlab.kernel.mm.memmap import (
    COMPOUND_PAGE_DTOR,
    FIELDS,
    HUGETLB_PAGE_DTOR,
    NO_HEAD,
    NULL_COMPOUND_DTOR,
    Memmap,
    folio_order,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/linux/mmzone.h MAX_ORDER: buddy blocks are of order 0..MAX_ORDER-1
MAX_ORDER = 11

# v6.1 include/linux/gfp_types.h: the bits the model distinguishes
__GFP_MOVABLE = 0x08
__GFP_COMP = 0x40000
GFP_KERNEL = 0xCC0
GFP_USER = 0x100CC0
GFP_HIGHUSER_MOVABLE = GFP_USER | 0x02 | __GFP_MOVABLE

POOLS = ("normal", "cma", "movable")

# Footprint key of the free lists (the buddy allocator's and the hugetlb pools): which
# block an allocation takes depends on every free and allocation before it.
FREE_LISTS: Hashable = ("free_lists",)


@dataclass(slots=True)
class FreeArea:
    """Free buddy blocks: pool -> order -> block start PFNs (v6.1 struct free_area)."""

    blocks: dict[str, list[set[int]]] = field(
        default_factory=lambda: {p: [set() for _ in range(MAX_ORDER)] for p in POOLS}
    )
    ranges: list[tuple[int, int, str]] = field(default_factory=list)


@dataclass(slots=True)
class HugetlbPool:
    """Free and total huge pages per order (v6.1 include/linux/hugetlb.h struct hstate)."""

    free: dict[int, list[int]] = field(default_factory=dict)
    nr: dict[int, int] = field(default_factory=dict)


def pool_of(fa: FreeArea, pfn: int) -> str:
    """Which pool (zone / migratetype) a PFN belongs to."""
    for start, end, pool in fa.ranges:
        if start <= pfn < end:
            return pool
    raise ValueError(f"pfn {pfn:#x} is outside every zone")


def free_area_add_range(fa: FreeArea, start: int, end: int, pool: str) -> None:
    """Hand the PFN range [start, end) to the buddy allocator (v6.1 memblock_free_all)."""
    fa.ranges.append((start, end, pool))
    pfn = start
    while pfn < end:
        order = MAX_ORDER - 1
        while order and (pfn & ((1 << order) - 1) or pfn + (1 << order) > end):
            order -= 1
        fa.blocks[pool][order].add(pfn)
        pfn += 1 << order


def _take_block(fa: FreeArea, pools: tuple[str, ...], order: int) -> tuple[int, str] | None:
    """Remove the lowest suitable free block, splitting a larger one (v6.1 __rmqueue_smallest)."""
    for pool in pools:
        lists = fa.blocks[pool]
        for have in range(order, MAX_ORDER):
            if lists[have]:
                pfn = min(lists[have])
                lists[have].remove(pfn)
                while have > order:
                    have -= 1
                    lists[have].add(pfn + (1 << have))
                return pfn, pool
    return None


def pools_for(gfp: int) -> tuple[str, ...]:
    """Pools a request may use: movable allocations may use ZONE_MOVABLE and CMA."""
    return ("movable", "normal", "cma") if gfp & __GFP_MOVABLE else ("normal",)


def _peek(arr: NDArray[np.generic], i: int) -> int:
    """An item read only to name a footprint (unrecorded, as memmap.peek_head)."""
    return int(arr.view(np.ndarray)[i])


def peek_order(m: Memmap, folio: int) -> int:
    """folio_order() read only to name a footprint (unrecorded, as memmap.peek_head)."""
    if _peek(m.head, folio) != NO_HEAD or folio + 1 >= m.nr_pages:
        return 0
    return _peek(m.order, folio + 1) if _peek(m.head, folio + 1) == folio else 0


def peek_hugetlb(m: Memmap, folio: int) -> bool:
    """PageHuge() read only to name a footprint (unrecorded, as memmap.peek_head)."""
    return bool(peek_order(m, folio)) and _peek(m.dtor, folio + 1) == HUGETLB_PAGE_DTOR


@lru_cache(maxsize=4096)
def page_keys(pfn: int, nr: int = 1, fields: tuple[str, ...] = FIELDS) -> frozenset[Hashable]:
    """Footprint keys of ``fields`` of the ``nr`` struct pages from ``pfn``."""
    return frozenset(("page", p, f) for p in range(pfn, pfn + nr) for f in fields)


def order_keys(folio: int) -> frozenset[Hashable]:
    """What folio_order (folio_nr_pages, folio_test_large) reads: the head fields of the
    folio and of page[1], and page[1]'s order."""
    return page_keys(folio, 1, ("head",)) | page_keys(folio + 1, 1, ("head", "order"))


def free_reads(folio: int) -> frozenset[Hashable]:
    """What free_folio reads to tell what it frees: folio_order, and the destructor in
    page[1] (the hugetlb test)."""
    return order_keys(folio) | page_keys(folio + 1, 1, ("dtor",))


def free_writes(k: Kernel, folio: int) -> frozenset[Hashable]:
    """What freeing ``folio`` (its count reaching 0) may write: every field of its pages
    (free_pages_prepare), or a huge page's few fields and its pool; and the free lists."""
    m = k.mem
    if peek_hugetlb(m, folio):
        return frozenset(
            {
                ("page", folio, "flags"),
                ("page", folio, "mapping"),
                ("page", folio + 1, "compound_mapcount"),
                FREE_LISTS,
            }
        )
    return page_keys(folio, 1 << peek_order(m, folio)) | {FREE_LISTS}


def _next_block(fa: FreeArea, pools: tuple[str, ...], order: int) -> int | None:
    """The block _take_block would take now, without taking it."""
    for pool in pools:
        lists = fa.blocks[pool]
        for have in range(order, MAX_ORDER):
            if lists[have]:
                return min(lists[have])
    return None


def alloc_writes(k: Kernel, gfp: int, order: int) -> frozenset[Hashable]:
    """What alloc_pages(gfp, order) would write now: the free lists and every field of the
    block it takes (the caller's own initialisation of the new pages included)."""
    pfn = _next_block(k.free_area, pools_for(gfp), order)
    return frozenset({FREE_LISTS}) if pfn is None else page_keys(pfn, 1 << order) | {FREE_LISTS}


def hugetlb_alloc_writes(k: Kernel, order: int) -> frozenset[Hashable]:
    """What alloc_hugetlb_folio(order) would write now: the pool, and of the huge page it
    takes every field of page[0] and page[1] and every page's contents (the caller's own
    initialisation of it included)."""
    free = k.hugetlb.free.get(order)
    if not free:
        return frozenset({FREE_LISTS})
    pincount = ("page", free[0] + k.profile.pincount_page, "pincount")
    return (
        page_keys(free[0], 2) | page_keys(free[0], 1 << order, ("data",)) | {FREE_LISTS, pincount}
    )


def alloc_pages(k: Kernel, gfp: int, order: int) -> int | None:
    """v6.1 mm/page_alloc.c __alloc_pages + post_alloc_hook: refcount 1, compound if asked."""
    got = _take_block(k.free_area, pools_for(gfp), order)
    if got is None:
        return None
    pfn, _ = got
    m = k.mem
    m.refcount[pfn] = 1
    if order and gfp & __GFP_COMP:
        prep_compound_page(k, pfn, order, COMPOUND_PAGE_DTOR)
    return pfn


def prep_compound_page(k: Kernel, head: int, order: int, dtor: int) -> None:
    """v6.1 mm/page_alloc.c prep_compound_page: PG_head, tails point at the head."""
    m = k.mem
    nr = 1 << order
    m.flags[head] |= k.pf.mask("PG_head")
    m.head[head + 1 : head + nr] = head
    m.refcount[head + 1 : head + nr] = 0
    m.order[head + 1] = order
    m.dtor[head + 1] = dtor
    m.compound_mapcount[head + 1] = -1
    if k.profile.exact_pincount(order):
        m.pincount[head + k.profile.pincount_page] = 0


def _reset_pages(k: Kernel, pfn: int, nr: int) -> None:
    """Return struct pages to their free state (v6.1 mm/page_alloc.c free_pages_prepare)."""
    m = k.mem
    sl = slice(pfn, pfn + nr)
    m.flags[sl] = 0
    m.refcount[sl] = 0
    m.mapcount[sl] = -1
    m.head[sl] = NO_HEAD
    m.order[sl] = 0
    m.compound_mapcount[sl] = 0
    m.pincount[sl] = 0
    m.dtor[sl] = NULL_COMPOUND_DTOR
    m.mapping[sl] = 0
    m.index[sl] = 0
    m.private[sl] = 0
    # a design's page_ext bits live as long as the allocation, like the page flags cleared
    # above (v4.4.178 mm/page_alloc.c:817-818 free_pages_check)
    if k.page_ext:
        for page in range(pfn, pfn + nr):
            k.page_ext.pop(page, None)
    m.data[sl] = 0


def free_pages(k: Kernel, pfn: int, order: int) -> None:
    """v6.1 mm/page_alloc.c __free_one_page: merge with free buddies, then list the block."""
    _reset_pages(k, pfn, 1 << order)
    fa = k.free_area
    pool = pool_of(fa, pfn)
    lists = fa.blocks[pool]
    while order < MAX_ORDER - 1:
        buddy = pfn ^ (1 << order)
        if buddy not in lists[order] or pool_of(fa, buddy) != pool:
            break
        lists[order].remove(buddy)
        pfn = min(pfn, buddy)
        order += 1
    lists[order].add(pfn)


def free_folio(k: Kernel, folio: int) -> None:
    """Free a folio whose refcount reached 0 (v6.1 mm/swap.c __folio_put).

    Huge pages go back to their hugetlb pool keeping their compound structure
    and PG_head (v6.1 mm/hugetlb.c free_huge_page); others return to the buddy
    allocator.
    """
    order = folio_order(k.mem, folio)
    if order and int(k.mem.dtor[folio + 1]) == HUGETLB_PAGE_DTOR:
        k.mem.flags[folio] &= k.pf.mask("PG_head")
        k.mem.mapping[folio] = 0
        k.mem.compound_mapcount[folio + 1] = -1
        k.hugetlb.free[order].append(folio)
        k.hugetlb.free[order].sort()
        return
    free_pages(k, folio, order)


def alloc_hugetlb_folio(k: Kernel, order: int) -> int | None:
    """Take a free huge page from the pool (v6.1 mm/hugetlb.c alloc_huge_page): refcount 1."""
    free = k.hugetlb.free.get(order)
    if not free:
        return None
    folio = free.pop(0)
    k.mem.refcount[folio] = 1
    return folio


def hugetlb_reserve(k: Kernel, order: int, count: int) -> None:
    """Carve `count` huge pages of `order` from free memory (v6.1 hugetlb_hstate_alloc_pages)."""
    fa = k.free_area
    k.hugetlb.free.setdefault(order, [])
    for _ in range(count):
        folio = _take_contiguous(fa, order)
        k.mem.refcount[folio] = 0
        prep_compound_page(k, folio, order, HUGETLB_PAGE_DTOR)
        k.hugetlb.free[order].append(folio)
        k.hugetlb.nr[order] = k.hugetlb.nr.get(order, 0) + 1


def _take_contiguous(fa: FreeArea, order: int) -> int:
    """Remove an aligned run of 2**order free PFNs from the normal pool (memblock for gigantic)."""
    if order < MAX_ORDER:
        got = _take_block(fa, ("normal",), order)
        if got is None:
            raise MemoryError(f"no free block of order {order} for a huge page")
        return got[0]
    step = 1 << (MAX_ORDER - 1)
    need = 1 << (order - MAX_ORDER + 1)
    top = fa.blocks["normal"][MAX_ORDER - 1]
    for start in sorted(top):
        if start % (1 << order) == 0 and all(start + i * step in top for i in range(need)):
            for i in range(need):
                top.remove(start + i * step)
            return start
    raise MemoryError(f"no contiguous free range of order {order} for a gigantic page")
