"""Write-protect faults: do_wp_page, reuse, COW copy, shared-page mkwrite (v6.1 mm/memory.c).

The reuse rule for a non-exclusive anon page is the profile's: by refcount
(v5.9+, profile.wp_reuse_by_refcount) or by mapcount through reuse_swap_page
(v4.4, v5.7); PageAnonExclusive short-circuits it where the kernel has it (v5.19+).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.filemap import folio_put_footprint
from pinlab.kernel.mm.locking import folio_lock, folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head, folio_nr_pages, folio_test_large, peek_head
from pinlab.kernel.mm.memory import (
    FAULT_FLAG_UNSHARE,
    FAULT_FLAG_WRITE,
    VM_FAULT_ERROR,
    VM_FAULT_NOPAGE,
    VM_FAULT_OOM,
    VM_FAULT_WRITE,
    alloc_zeroed_user_highpage_movable,
    anon_vma_prepare,
    maybe_mkwrite,
    mk_pte,
    vm_normal_page,
)
from pinlab.kernel.mm.page_alloc import (
    GFP_HIGHUSER_MOVABLE,
    alloc_pages,
    alloc_writes,
    free_reads,
    page_keys,
)
from pinlab.kernel.mm.page_ref import folio_put, get_page, put_page
from pinlab.kernel.mm.pgtable import (
    get_pte,
    pte_footprint,
    pte_key,
    pte_mkdirty,
    pte_mkyoung,
    pte_pfn,
    pte_write,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import (
    PageAnon,
    PageAnonExclusive,
    PageDoubleMap,
    page_add_new_anon_rmap,
    page_mapcount,
    page_move_anon_rmap,
    page_remove_rmap,
)
from pinlab.kernel.mm.swap import folio_add_lru_vma, lru_add_drain
from pinlab.kernel.mm.types import VM_SHARED, VM_WRITE, MmStruct, VmArea

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def _ref(k: Kernel, folio: int) -> int:
    return int(k.mem.refcount[folio])


def wp_page_reuse(k: Kernel, mm: MmStruct, vma: VmArea, address: int, orig: int) -> None:
    """v6.1 mm/memory.c wp_page_reuse: same page, now young, dirty and writable; unlocks."""
    set_pte_at(mm.pgtable, address, maybe_mkwrite(pte_mkdirty(pte_mkyoung(orig)), vma))
    pte_unlock(k, mm, address)


def reuse_swap_page(k: Kernel, page: int) -> tuple[bool, int]:
    """v5.7 mm/swapfile.c reuse_swap_page: reusable iff mapped at most once.

    Returns (reusable, total mapcount).  Swap is not modelled, so the swap
    counts are 0; a PTE-mapped THP counts its busiest subpage plus the PMD
    mappings (v5.7 page_trans_huge_map_swapcount).  v4.4 mm/swapfile.c:925
    counts page_mapcount(page) alone (:932), which for a THP head is its PMD
    mappings: a tail's gup references, on the tail's _mapcount, do not count.
    """
    if k.profile.thp_tail_refs_in_mapcount:
        count = page_mapcount(k, page)
        return count <= 1, count
    m = k.mem
    head = compound_head(m, page)
    if not folio_test_large(m, head):
        count = int(m.mapcount[page]) + 1
        return count <= 1, count
    nr = folio_nr_pages(m, head)
    per_page = m.mapcount[head : head + nr] + 1
    entire = int(m.compound_mapcount[head + 1]) + 1
    count = int(per_page.max()) + entire
    total = int(per_page.sum()) + entire
    if PageDoubleMap(k, head):
        count -= 1
        total -= nr
    return count <= 1, total


def do_wp_page_footprint(
    k: Kernel, vma: VmArea, address: int, flags: int, orig: int, point: Point
) -> Point:
    """``point`` (the step that enters do_wp_page for PTE ``orig``) with what that step
    reads and writes of struct pages up to do_wp_page's first yield: the page's head and
    mapping (PageAnon, compound_head), or for the zero page wp_page_copy's allocation of
    a zeroed page."""
    assert point.reads is not None and point.writes is not None
    if not flags & (FAULT_FLAG_WRITE | FAULT_FLAG_UNSHARE) or pte_write(orig):
        return point
    page = vm_normal_page(k, vma, address, orig)
    if page is None:
        shared = vma.vm_flags & (VM_WRITE | VM_SHARED) == VM_WRITE | VM_SHARED
        if (flags & FAULT_FLAG_UNSHARE and not k.profile.unshare_non_anon) or shared:
            return point
        return replace(point, writes=point.writes | alloc_writes(k, GFP_HIGHUSER_MOVABLE, 0))
    reads = {("page", page, "head"), ("page", peek_head(k.mem, page), "mapping")}
    return replace(point, reads=point.reads | reads)


def do_wp_page(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, orig: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c do_wp_page (entered with the PTE lock held; releases it).

    v4.4 / v5.7 mm/memory.c do_wp_page: anon pages are reused when
    reuse_swap_page says the page is mapped once, whatever its refcount.
    v6.5 (profile.unshare_non_anon; mm/memory.c:3338-3448): an unshare fault on the zero
    page or a page that is not anon, in a private mapping, copies it (:3436-3447) where 6.1
    returns 0; gup asks for it only in a COW mapping (mm/internal.h:992-1000).
    """
    unshare = bool(flags & FAULT_FLAG_UNSHARE)
    # 6.1.192 mm/memory.c do_wp_page: "no anonymous page, nothing to do"
    keep_non_anon = unshare and not k.profile.unshare_non_anon
    page = vm_normal_page(k, vma, address, orig)
    if page is None:
        if keep_non_anon:
            pte_unlock(k, mm, address)
            return 0
        if vma.vm_flags & (VM_WRITE | VM_SHARED) == VM_WRITE | VM_SHARED:
            wp_page_reuse(k, mm, vma, address, orig)
            return VM_FAULT_WRITE
        pte_unlock(k, mm, address)
        return (yield from wp_page_copy(k, mm, vma, address, flags, orig, None, cpu))
    folio = compound_head(k.mem, page)
    if PageAnon(k, page):
        reuse = yield from _can_reuse_anon(k, mm, vma, address, page, orig, cpu)
        if reuse is None:
            return 0
        if reuse:
            if unshare:
                pte_unlock(k, mm, address)
                return 0
            wp_page_reuse(k, mm, vma, address, orig)
            return VM_FAULT_WRITE
    elif keep_non_anon:
        pte_unlock(k, mm, address)
        return 0
    elif vma.vm_flags & (VM_WRITE | VM_SHARED) == VM_WRITE | VM_SHARED:
        return (yield from wp_page_shared(k, mm, vma, address, page, orig, flags))
    # the step goes on into wp_page_copy: the copy's allocation (or, without one, the put)
    yield Point(
        "do_wp_page get_page",
        writes=folio_put_footprint(k, folio) | alloc_writes(k, GFP_HIGHUSER_MOVABLE, 0),
    )
    get_page(k, page)
    pte_unlock(k, mm, address)
    return (yield from wp_page_copy(k, mm, vma, address, flags, orig, page, cpu))


def _can_reuse_anon(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, page: int, orig: int, cpu: int
) -> Generator[Yield, None, bool | None]:
    """The anon-page reuse decision of do_wp_page for the profile's kernel (PTL held).

    None: the PTE changed while the PTL was dropped; everything is unlocked.
    """
    folio = compound_head(k.mem, page)
    lock = k.pf.mask("PG_locked")
    ref = ("page", folio, "refcount")
    fflags = ("page", folio, "flags")
    if not k.profile.wp_reuse_by_refcount:
        return (yield from _reuse_by_mapcount(k, mm, vma, address, page, orig))
    if k.profile.page_anon_exclusive:
        yield Point("PageAnonExclusive?", reads=frozenset({("page", page, "flags")}))
        if PageAnonExclusive(k, page):
            return True
    yield Point("do_wp_page refcount", reads=frozenset({ref, fflags}))
    if _ref(k, folio) > 3:
        return False
    if not int(k.mem.flags[folio]) & k.pf.mask("PG_lru"):
        yield from lru_add_drain(k, cpu)
    yield Point("do_wp_page refcount", reads=frozenset({ref}))
    if _ref(k, folio) > 1:
        return False
    # page_move_anon_rmap: the folio's mapping and the page's PageAnonExclusive
    yield Point(
        "folio_trylock",
        reads=frozenset({ref, ("page", page, "head")}),
        writes=frozenset({fflags, ("page", folio, "mapping"), ("page", page, "flags")}),
    )
    if int(k.mem.flags[folio]) & lock:
        return False
    k.mem.flags[folio] |= lock
    reuse = _ref(k, folio) == 1
    if reuse:
        page_move_anon_rmap(k, page, vma)
    folio_unlock(k, folio)
    return reuse


def _reuse_by_mapcount(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, page: int, orig: int
) -> Generator[Yield, None, bool | None]:
    """v4.4 / v5.7 mm/memory.c do_wp_page: under the page lock, reuse iff reuse_swap_page.

    A contended page lock is taken the slow way: get_page, drop the PTL,
    lock_page, retake the PTL and give up (return 0) if the PTE changed.
    """
    folio = compound_head(k.mem, page)
    lock = k.pf.mask("PG_locked")
    fflags = ("page", folio, "flags")
    yield Point("trylock_page", reads=frozenset({fflags}), writes=frozenset({fflags}))
    if int(k.mem.flags[folio]) & lock:
        yield Point("do_wp_page get_page", writes=frozenset({("page", folio, "refcount")}))
        get_page(k, page)
        pte_unlock(k, mm, address)
        yield from folio_lock(k, folio)
        yield from pte_lock(k, mm, address)
        yield Point("pte_same", reads=pte_footprint(mm.id, address))
        if get_pte(mm.pgtable, address) != orig:
            folio_unlock(k, folio)
            pte_unlock(k, mm, address)
            yield Point("put_page", writes=folio_put_footprint(k, folio))
            put_page(k, page)
            return None
        yield Point("put_page", writes=frozenset({("page", folio, "refcount")}))
        put_page(k, page)
    else:
        k.mem.flags[folio] |= lock
    yield Point("reuse_swap_page", reads=frozenset({("page", folio, "mapcount")}))
    reusable, total = reuse_swap_page(k, page)
    if reusable and total == 1:
        page_move_anon_rmap(k, page, vma)
    folio_unlock(k, folio)
    return reusable


def wp_page_copy(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    address: int,
    flags: int,
    orig: int,
    old_page: int | None,
    cpu: int,
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c wp_page_copy: map a private copy, drop the old page's mapping.

    `old_page` carries the temporary reference do_wp_page took (None for the zero page).
    """
    unshare = bool(flags & FAULT_FLAG_UNSHARE)
    anon_vma_prepare(k, vma)
    if old_page is None:
        new_page = alloc_zeroed_user_highpage_movable(k)
    else:
        new_page = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
        if new_page is not None:
            k.mem.data[new_page] = k.mem.data[old_page]
            k.mem.flags[new_page] |= k.pf.mask("PG_uptodate")
    if new_page is None:
        if old_page is not None:
            put_page(k, old_page)
        return VM_FAULT_OOM
    key = pte_footprint(mm.id, address)
    # the new page is this fault's alone: it is rmapped, or its put is the next step's
    new = page_keys(new_page)
    yield from pte_lock(k, mm, address)
    yield Point("wp_page_copy install", reads=key | new | free_reads(new_page), writes=key | new)
    copied = False
    drop: int = new_page
    if get_pte(mm.pgtable, address) == orig:
        entry = pte_mkyoung(mk_pte(k, new_page, vma))
        if not unshare:
            entry = maybe_mkwrite(pte_mkdirty(entry), vma)
        set_pte_at(mm.pgtable, address, 0)
        page_add_new_anon_rmap(k, new_page, vma, address)
        # then page_remove_rmap of the old page
        old_map = frozenset() if old_page is None else page_keys(old_page, 1, ("mapcount",))
        # v6.1 mm/memory.c:3222, v5.7.14 :2718, v4.4.178 :2205 (active in 5.7 / 4.4)
        yield from folio_add_lru_vma(k, new_page, vma, cpu, old_map)
        set_pte_at(mm.pgtable, address, entry)
        if old_page is None:
            pte_unlock(k, mm, address)
            return VM_FAULT_WRITE if not unshare else 0
        page_remove_rmap(k, old_page, vma, False)
        drop = old_page
        copied = True
    yield Point("wp_page_copy put", writes=folio_put_footprint(k, peek_head(k.mem, drop)))
    put_page(k, drop)
    pte_unlock(k, mm, address)
    if old_page is not None:
        old = peek_head(k.mem, old_page)
        yield Point("wp_page_copy put old", writes=folio_put_footprint(k, old))
        put_page(k, old_page)
    return VM_FAULT_WRITE if copied and not unshare else 0


def finish_mkwrite_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, orig: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c finish_mkwrite_fault: relock; if the PTE is unchanged reuse it."""
    yield from pte_lock(k, mm, address)
    # wp_page_shared goes on to unlock the folio (the PTE changed) or to
    # fault_dirty_shared_page's compound_head and folio_mark_dirty's folio_mapping
    page = pte_pfn(orig)
    folio = peek_head(k.mem, page)
    yield Point(
        "finish_mkwrite_fault",
        reads=pte_footprint(mm.id, address)
        | {("page", page, "head"), ("page", folio, "head"), ("page", folio, "mapping")},
        writes=frozenset({pte_key(mm.id, address), ("page", folio, "flags")}),
    )
    if get_pte(mm.pgtable, address) != orig:
        pte_unlock(k, mm, address)
        return VM_FAULT_NOPAGE
    wp_page_reuse(k, mm, vma, address, orig)
    return 0


def wp_page_shared(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, page: int, orig: int, flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c wp_page_shared: ->page_mkwrite, reuse the PTE, dirty the page."""
    from pinlab.kernel.fs import do_page_mkwrite, fault_dirty_shared_page

    assert vma.vm_file is not None
    folio = compound_head(k.mem, page)
    yield Point("wp_page_shared get", writes=frozenset({("page", folio, "refcount")}))
    get_page(k, page)
    if k.mappings[vma.vm_file].fs.has_page_mkwrite:
        pte_unlock(k, mm, address)
        tmp = yield from do_page_mkwrite(k, vma, page)
        if not tmp or tmp & (VM_FAULT_ERROR | VM_FAULT_NOPAGE):
            yield Point("put_page", writes=folio_put_footprint(k, folio))
            folio_put(k, folio)
            return tmp
        tmp = yield from finish_mkwrite_fault(k, mm, vma, address, orig)
        if tmp & (VM_FAULT_ERROR | VM_FAULT_NOPAGE):
            folio_unlock(k, folio)
            yield Point("put_page", writes=folio_put_footprint(k, folio))
            folio_put(k, folio)
            return tmp
    else:
        wp_page_reuse(k, mm, vma, address, orig)
        yield from folio_lock(k, folio)
    ret = VM_FAULT_WRITE | (yield from fault_dirty_shared_page(k, mm, vma, page, flags))
    yield Point("wp_page_shared put", writes=folio_put_footprint(k, folio))
    folio_put(k, folio)
    return ret
