"""Reclaim of one page-cache page, as kswapd does it in v4.4.178 mm/vmscan.c.

kswapd's scan reaches a page at the tail of its LRU list; the model reclaims one given
page, from whichever list it is on: shrink_active_list deactivates it,
shrink_inactive_list isolates it and runs shrink_page_list.  The LRU lists' order is
not modelled (PG_lru and PG_active say which list).  Only v4.4.178 is modelled: other
kernels raise Unmodelled.  Anonymous pages, mlocked pages and reclaim's own
writeback (pageout) are not modelled either: they raise Unmodelled where reached.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.bug import bug_on
from pinlab.kernel.fs.jbd2 import JOURNAL_KEY
from pinlab.kernel.mm.filemap import filemap_release_folio, folio_mapping
from pinlab.kernel.mm.page_alloc import free_folio, free_reads, free_writes, order_keys
from pinlab.kernel.mm.page_ref import page_ref_count, set_page_count
from pinlab.kernel.mm.rmap import PageAnon, page_mapped
from pinlab.kernel.mm.rmap_4_4 import (
    SWAP_AGAIN,
    SWAP_FAIL,
    page_keys_of,
    page_referenced,
    try_to_unmap,
)
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import VM_EXEC, VM_LOCKED
from pinlab.kernel.mm.vmstat import NR_FILE_DIRTY

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

_ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF
# v4.4.178 mm/vmscan.c:797-802 enum page_references
PAGEREF_RECLAIM = 0
PAGEREF_RECLAIM_CLEAN = 1
PAGEREF_KEEP = 2
PAGEREF_ACTIVATE = 3
_PAGE = ("flags", "refcount", "mapcount", "mapping", "index", "private")
# the zone's ZONE_WRITEBACK / ZONE_DIRTY bits (Kernel.zone_flags)
ZONE_KEY: frozenset[Hashable] = frozenset({("zone", "flags")})


def _has(k: Kernel, page: int, flag: str) -> bool:
    return bool(int(k.mem.flags[page]) & k.pf.mask(flag))


def _set(k: Kernel, page: int, flag: str) -> None:
    k.mem.flags[page] |= k.pf.mask(flag)


def _clear(k: Kernel, page: int, flag: str) -> None:
    k.mem.flags[page] &= ~k.pf.mask(flag) & _ALL_BITS


def _page(page: int) -> frozenset[Hashable]:
    return page_keys_of(page, _PAGE)


def _reads(page: int) -> frozenset[Hashable]:
    """A step's reads of the page: its fields, and compound_head / folio_order's
    (PageAnon, page_mapped, folio_nr_pages)."""
    return _page(page) | order_keys(page)


def _require_4_4(k: Kernel, function: str) -> None:
    if k.profile.consumers != "4.4":
        raise Unmodelled(function, f"only v4.4.178 reclaim is modelled, not {k.profile.name}'s")


def _release_footprint(k: Kernel, page: int) -> frozenset[Hashable]:
    """What try_to_release_page may touch: the page, its buffers, the journal, and the
    dirty count (try_to_free_buffers' cancel_dirty_page) and the mapping's dirty tag."""
    keys: set[Hashable] = set(_page(page)) | {JOURNAL_KEY, ("vmstat", NR_FILE_DIRTY)}
    mapping = folio_mapping(k, page)
    if mapping is not None:
        keys.add(("mapping", mapping.id))
    return frozenset(keys)


def page_check_references(k: Kernel, page: int) -> Generator[Yield, None, int]:
    """v4.4.178 mm/vmscan.c:804 page_check_references, for a locked, isolated page."""
    referenced_ptes, vm_flags = yield from page_referenced(k, page, True)
    yield Point("TestClearPageReferenced", reads=_reads(page), writes=_page(page))
    referenced_page = _has(k, page, "PG_referenced")
    _clear(k, page, "PG_referenced")
    if vm_flags & VM_LOCKED:
        return PAGEREF_RECLAIM
    if referenced_ptes:
        if _has(k, page, "PG_swapbacked"):
            return PAGEREF_ACTIVATE
        _set(k, page, "PG_referenced")
        if referenced_page or referenced_ptes > 1 or vm_flags & VM_EXEC:
            return PAGEREF_ACTIVATE
        return PAGEREF_KEEP
    if referenced_page and not _has(k, page, "PG_swapbacked"):
        return PAGEREF_RECLAIM_CLEAN
    return PAGEREF_RECLAIM


def __remove_mapping(k: Kernel, page: int) -> Generator[Yield, None, bool]:
    """v4.4.178 mm/vmscan.c:620 __remove_mapping: under tree_lock, freeze the count at 2 (the
    page cache's and the isolation's) or fail; a dirty page is unfrozen and kept (:656-659);
    else __delete_from_page_cache (:689).  Shadow entries (workingset_eviction) are not
    modelled.  The frozen page is freed by shrink_page_list."""
    mapping = folio_mapping(k, page)
    assert mapping is not None
    keys = _page(page) | {("mapping", mapping.id)}
    # shrink_page_list frees the frozen page before it yields again
    yield Point(
        "__remove_mapping",
        reads=keys | _reads(page) | free_reads(page),
        writes=keys | free_writes(k, page),
    )
    bug_on(not _has(k, page, "PG_locked"), "__remove_mapping !PageLocked")
    if page_ref_count(k.mem, page) != 2:  # page_freeze_refs(page, 2)
        return False
    if _has(k, page, "PG_dirty"):
        return False
    set_page_count(k.mem, page, 0)
    index = int(k.mem.index[page])
    del mapping.i_pages[index]
    mapping.dirty_marks.discard(index)
    k.mem.mapping[page] = 0
    return True


def shrink_page_list(
    k: Kernel, page: int, kswapd: bool
) -> Generator[Yield, None, tuple[bool, bool, bool]]:
    """v4.4.178 mm/vmscan.c:891 shrink_page_list over one isolated file page (ttu TTU_UNMAP).

    Returns (reclaimed, nr_unqueued_dirty, nr_writeback) for the one page; the page is
    unlocked either way; a kept page is activated where the kernel goes to activate_locked.
    """
    yield Point("trylock_page", reads=_reads(page) | ZONE_KEY, writes=_page(page))
    if _has(k, page, "PG_locked"):
        return False, False, False
    _set(k, page, "PG_locked")
    if _has(k, page, "PG_mlocked") or _has(k, page, "PG_unevictable"):
        raise Unmodelled("shrink_page_list", "an unevictable page (cull_mlocked)")
    if PageAnon(k, page):
        raise Unmodelled("shrink_page_list", "an anonymous page (add_to_swap)")
    # page_check_dirty_writeback (:860): ext4's aops have no is_dirty_writeback
    dirty, writeback = _has(k, page, "PG_dirty"), _has(k, page, "PG_writeback")
    unqueued_dirty = dirty and not writeback
    why = yield from _shrink_locked(k, page, kswapd, writeback)
    if why == "put":
        # :1170-1185 buffers gone, no mapping (truncate could not invalidate it), only the
        # isolation reference: unlock, then put_page_testzero; a speculative reference
        # taken in between frees the page later, off the LRU.  Reclaimed either way.
        _clear(k, page, "PG_locked")
        keys = _page(page) | free_writes(k, page)
        yield Point("put_page_testzero", reads=keys | free_reads(page) | _reads(page), writes=keys)
        value = page_ref_count(k.mem, page) - 1
        set_page_count(k.mem, page, value)
        if value == 0:
            free_folio(k, page)
        return True, unqueued_dirty, writeback
    if why == "free":
        _clear(k, page, "PG_locked")  # __clear_page_locked (:1198)
        free_folio(k, page)  # free_hot_cold_page_list (:1232)
        return True, unqueued_dirty, writeback
    if why == "activate":
        _set(k, page, "PG_active")
    _clear(k, page, "PG_locked")
    return False, unqueued_dirty, writeback


def _shrink_locked(
    k: Kernel, page: int, kswapd: bool, writeback: bool
) -> Generator[Yield, None, str]:
    """shrink_page_list from the writeback test to __remove_mapping: "free", "put" (a page
    whose buffers went and that has no mapping, :1170), "activate" or "keep"
    (keep_locked)."""
    if writeback:
        if kswapd and _has(k, page, "PG_reclaim") and "ZONE_WRITEBACK" in k.zone_flags:
            return "keep"  # case 1 (:1007-1011)
        _set(k, page, "PG_reclaim")  # case 2 (:1014-1030): global reclaim is sane_reclaim
        return "keep"
    references = yield from page_check_references(k, page)
    if references == PAGEREF_ACTIVATE:
        return "activate"
    if references == PAGEREF_KEEP:
        return "keep"
    yield Point("page_mapped", reads=_reads(page))
    if page_mapped(k, page):
        ret = yield from try_to_unmap(k, page)
        if ret == SWAP_FAIL:
            return "activate"
        if ret == SWAP_AGAIN:
            return "keep"
    yield Point("PageDirty", reads=_reads(page) | ZONE_KEY, writes=_page(page))
    if _has(k, page, "PG_dirty"):
        if not kswapd or "ZONE_DIRTY" not in k.zone_flags:
            _set(k, page, "PG_reclaim")  # :1102-1114, NR_VMSCAN_IMMEDIATE not modelled
            return "keep"
        if references == PAGEREF_RECLAIM_CLEAN:
            return "keep"
        raise Unmodelled("pageout", "kswapd writing a dirty file page back itself")
    if int(k.mem.flags[page]) & (k.pf.mask("PG_private") | k.pf.mask("PG_private_2")):
        footprint = _release_footprint(k, page)
        yield Point("try_to_release_page", reads=footprint | _reads(page), writes=footprint)
        if not filemap_release_folio(k, page):
            return "activate"
        if folio_mapping(k, page) is None and page_ref_count(k.mem, page) == 1:
            return "put"
    if folio_mapping(k, page) is None:
        return "keep"
    removed = yield from __remove_mapping(k, page)
    return "free" if removed else "keep"


def putback_page(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v4.4.178 mm/vmscan.c:1507 putback_inactive_pages / :1741 move_active_pages_to_lru for one
    page: SetPageLRU on its list, then drop the isolation reference (freeing at 0)."""
    keys = _page(page) | free_writes(k, page)
    yield Point("putback_lru_page", reads=keys | free_reads(page) | _reads(page), writes=keys)
    _set(k, page, "PG_lru")
    value = page_ref_count(k.mem, page) - 1
    set_page_count(k.mem, page, value)
    if value == 0:
        _clear(k, page, "PG_lru")
        _clear(k, page, "PG_active")
        free_folio(k, page)


def isolate_lru_page(k: Kernel, page: int, active: bool) -> Generator[Yield, None, bool]:
    """v4.4.178 mm/vmscan.c:1283 __isolate_lru_page from isolate_lru_pages (:1377): a page on
    the LRU list asked for gets a reference (get_page_unless_zero) and leaves the LRU."""
    yield Point("isolate_lru_pages", reads=_reads(page), writes=_page(page))
    if not _has(k, page, "PG_lru") or _has(k, page, "PG_active") != active:
        return False
    if _has(k, page, "PG_unevictable") or page_ref_count(k.mem, page) == 0:
        return False
    set_page_count(k.mem, page, page_ref_count(k.mem, page) + 1)
    _clear(k, page, "PG_lru")
    return True


def shrink_inactive_list(k: Kernel, page: int, cpu: int) -> Generator[Yield, None, bool]:
    """v4.4.178 mm/vmscan.c:1579 shrink_inactive_list taking one page: drain this CPU's LRU
    batch, isolate, shrink_page_list, put back; then the zone flags (:1672-1694)."""
    _require_4_4(k, "shrink_inactive_list")
    yield from lru_add_drain(k, cpu)
    if not (yield from isolate_lru_page(k, page, False)):
        return False
    reclaimed, unqueued_dirty, writeback = yield from shrink_page_list(k, page, kswapd=True)
    if not reclaimed:
        yield from putback_page(k, page)
    if writeback or unqueued_dirty:
        yield Point("zone flags", writes=ZONE_KEY)
    if writeback:
        k.zone_flags.add("ZONE_WRITEBACK")
    if unqueued_dirty:
        k.zone_flags.add("ZONE_DIRTY")
    return reclaimed


def shrink_active_list(k: Kernel, page: int, cpu: int) -> Generator[Yield, None, None]:
    """v4.4.178 mm/vmscan.c:1782 shrink_active_list taking one page: page_referenced without
    the page lock (it trylocks, :1839); a referenced VM_EXEC file page stays active, any
    other is deactivated (:1852-1858).  buffer_heads_over_limit is not modelled (false)."""
    _require_4_4(k, "shrink_active_list")
    yield from lru_add_drain(k, cpu)
    if not (yield from isolate_lru_page(k, page, True)):
        return
    referenced, vm_flags = yield from page_referenced(k, page, False)
    yield Point("ClearPageActive", reads=_reads(page), writes=_page(page))
    if not (referenced and vm_flags & VM_EXEC):
        _clear(k, page, "PG_active")
    yield from putback_page(k, page)


def kswapd_reclaim_page(
    k: Kernel, page: int, passes: int, cpu: int
) -> Generator[Yield, None, bool]:
    """kswapd reaching `page` `passes` times at the tail of its list (v4.4.178 mm/vmscan.c
    balance_pgdat -> kswapd_shrink_zone -> shrink_zone -> shrink_lruvec -> shrink_list):
    an active page is aged by shrink_active_list, an inactive one goes to
    shrink_inactive_list.  Stops once the page is reclaimed (True) or off the LRU."""
    for _ in range(passes):
        yield Point("kswapd shrink_list", reads=_reads(page))
        if PageAnon(k, page):
            raise Unmodelled("shrink_page_list", "an anonymous page")
        flags = int(k.mem.flags[page])
        if not flags & k.pf.mask("PG_lru") or folio_mapping(k, page) is None:
            return False
        if flags & k.pf.mask("PG_active"):
            yield from shrink_active_list(k, page, cpu)
        elif (yield from shrink_inactive_list(k, page, cpu)):
            return True
    return False
