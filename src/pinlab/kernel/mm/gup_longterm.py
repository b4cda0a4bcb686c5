"""FOLL_LONGTERM: move pinned pages out of ZONE_MOVABLE / CMA, then pin again.

Which path __gup_longterm_locked runs is the profile's ``longterm_check``:

- "movable" (v6.1 mm/gup.c): check_and_migrate_movable_pages unpins everything when any
  pinned folio is not long-term pinnable, migrates those folios (v6.1 mm/migrate.c
  migrate_pages, MIGRATE_SYNC, MR_LONGTERM_PIN) and returns -EAGAIN so the caller pins
  the range again; a failed migration is -ENOMEM.  The model migrates anon and
  page-cache folios, order-0 or THP; a THP whose new folio cannot be allocated fails
  (-ENOMEM) where the kernel would split it and migrate the base pages.
- "cma" (v5.7.14 mm/gup.c check_and_migrate_cma_pages): isolates the CMA pages, drops
  every page of the range (put_page, FOLL_PIN or not: profile.longterm_release_put_page),
  migrates (v5.7.14 mm/migrate.c migrate_pages, up to 10 passes), and pins the range
  again itself; when a page failed to migrate it pins the range where it is and returns
  the count.  Anonymous pages only: a page-cache page's ->migratepage, hugetlb pages, a
  THP that needs splitting, mlocked and double-mapped pages raise Unmodelled.  Not
  modelled on either path: NR_ISOLATED_ANON/FILE (back to 0 when the call returns),
  PGMIGRATE_SUCCESS/FAIL, memalloc_nocma_save / memalloc_pin_save (faults during the
  pin may take CMA or ZONE_MOVABLE memory only when nothing else is free), and
  migration entries (try_to_unmap to remove_migration_ptes is one step, so no other
  thread sees the page unmapped).
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel import errno
from pinlab.kernel.mm.gup_flags import FOLL_PIN
from pinlab.kernel.mm.gup_grab import (
    head_key,
    is_longterm_pinnable_page,
    put_reads,
    put_writes,
    ref_key,
)
from pinlab.kernel.mm.gup_put import gup_put_folio
from pinlab.kernel.mm.gup_range import unpinnable
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.memmap import (
    TRANSHUGE_PAGE_DTOR,
    compound_head,
    folio_nr_pages,
    folio_order,
    folio_test_large,
    peek_head,
)
from pinlab.kernel.mm.memory import maybe_mkwrite, mk_pte, vma_page_prot
from pinlab.kernel.mm.page_alloc import (
    __GFP_COMP,
    __GFP_MOVABLE,
    GFP_HIGHUSER_MOVABLE,
    GFP_USER,
    alloc_pages,
    alloc_writes,
    free_reads,
    order_keys,
    page_keys,
)
from pinlab.kernel.mm.page_ref import folio_put, page_ref_add, page_ref_count, put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_PRESENT,
    _PAGE_PROTNONE,
    _PAGE_PSE,
    HPAGE_PMD_ORDER,
    PAGE_SHIFT,
    PMD_SHIFT,
    PTE_PFN_MASK,
    get_pte,
    pfn_pte,
    pmd_key,
    pte_dirty,
    pte_footprint,
    pte_mkold,
    pte_pfn,
    pte_write,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import (
    PageAnon,
    PageDoubleMap,
    PageHuge,
    folio_mapcount,
    page_dup_rmap,
    page_mapped,
    page_mapping_id,
    page_remove_rmap,
)
from pinlab.kernel.mm.swap import folio_add_lru, lru_add_drain, lru_add_drain_all
from pinlab.kernel.mm.types import VM_LOCKED, MmStruct, VmArea, find_vma

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

_ALL = 0xFFFF_FFFF_FFFF_FFFF
# Page flags a migrated folio carries over (v6.1 mm/migrate.c folio_migrate_flags).
_MIGRATED_FLAGS = (
    "PG_uptodate",
    "PG_dirty",
    "PG_referenced",
    "PG_active",
    "PG_swapbacked",
    "PG_anon_exclusive",
    "PG_workingset",
)


def check_dax_vmas(k: Kernel, mm: MmStruct, start: int, nr_pages: int) -> bool:
    """v5.7 mm/gup.c check_dax_vmas: does any VMA of the pinned range map an fsdax file?"""
    addr = start
    end = start + (nr_pages << PAGE_SHIFT)
    while addr < end:
        vma = find_vma(mm, addr)
        if vma is None:
            return False
        if vma.vm_file is not None and k.mappings[vma.vm_file].fs.is_dax:
            return True
        addr = vma.vm_end
    return False


def folio_expected_ref_count(k: Kernel, folio: int) -> int:
    """v6.1.192 include/linux/mm.h folio_expected_ref_count: cache + private + mappings."""
    refs = 0
    if not PageAnon(k, folio):
        refs += 1 if page_mapping_id(k, folio) is not None else 0
        refs += 1 if int(k.mem.flags[folio]) & k.pf.mask("PG_private") else 0
    return refs + folio_mapcount(k, folio)


def collect_longterm_unpinnable_pages(
    k: Kernel, nr_pages: int, pages: NDArray[np.int64]
) -> Generator[Yield, None, tuple[int, list[int]]]:
    """v6.1 mm/gup.c collect_longterm_unpinnable_pages: (count, folios isolated from the LRU).

    Its LRU drains are profile.longterm_lru_drain's: 6.1.192 ("refcount") drains locally,
    then on every CPU, for a small folio with references beyond the pin's; v6.5 ("not_lru",
    mm/gup.c:2044-2047) drains every CPU once, for the first folio without PG_lru.
    """
    collected = 0
    movable: list[int] = []
    prev = -1
    drained = 0
    lru = k.pf.mask("PG_lru")
    by_lru = k.profile.longterm_lru_drain == "not_lru"
    for page in pages[:nr_pages].tolist():
        folio = compound_head(k.mem, page)
        if folio == prev:
            continue
        prev = folio
        if is_longterm_pinnable_page(k, folio):
            continue
        collected += 1
        if by_lru:
            if not int(k.mem.flags[folio]) & lru and not drained:
                yield from lru_add_drain_all(k)
                drained = 2
            if not _isolate(k, folio):
                continue
            movable.append(folio)
            continue
        small = not folio_test_large(k.mem, folio)
        if drained == 0 and small and _extra_refs(k, folio):
            yield from lru_add_drain(k)
            drained = 1
        if drained == 1 and small and _extra_refs(k, folio):
            yield from lru_add_drain_all(k)
            drained = 2
        if not _isolate(k, folio):
            continue
        movable.append(folio)
    return collected, movable


def _isolate(k: Kernel, folio: int) -> bool:
    """v6.1 mm/vmscan.c folio_isolate_lru (v6.5 :2421-2438): needs PG_lru, takes a reference."""
    lru = k.pf.mask("PG_lru")
    if not int(k.mem.flags[folio]) & lru:
        return False
    k.mem.flags[folio] &= ~lru & _ALL
    page_ref_add(k.mem, folio, 1)
    return True


def _extra_refs(k: Kernel, folio: int) -> bool:
    """Refcount differs from expected + 1 (the pin's): maybe a per-CPU batch holds it."""
    return int(k.mem.refcount[folio]) != folio_expected_ref_count(k, folio) + 1


def _migrate_folio(k: Kernel, old: int) -> int | None:
    """Move an isolated folio to ZONE_NORMAL memory of its own order (v6.1 mm/migrate.c
    alloc_migration_target, migrate_folio, remove_migration_ptes); a PMD-mapped THP stays
    PMD-mapped, as x86-64 has THP migration entries (CONFIG_ARCH_ENABLE_THP_MIGRATION)."""
    m = k.mem
    if PageHuge(k, old):
        return None
    # After unmapping, only the isolation reference and the cache's may remain.
    if int(m.refcount[old]) != folio_expected_ref_count(k, old) + 1:
        return None
    order = folio_order(m, old)
    nr = 1 << order
    # mtc.gfp_mask = GFP_USER; a large folio adds GFP_TRANSHUGE, whose __GFP_MOVABLE the
    # PF_MEMALLOC_PIN of __gup_longterm_locked strips (v6.1 include/linux/sched/mm.h).
    new = alloc_pages(k, GFP_USER | (__GFP_COMP if order else 0), order)
    if new is None:
        return None
    src, dst = slice(old, old + nr), slice(new, new + nr)
    carried = 0
    for name in _MIGRATED_FLAGS:
        if k.pf.profile.has_flag(name):
            carried |= k.pf.mask(name)
    m.flags[dst] |= m.flags[src] & np.uint64(carried)
    m.data[dst] = m.data[src]
    m.mapcount[dst] = m.mapcount[src]
    m.mapcount[src] = -1
    if order:
        m.dtor[new + 1] = m.dtor[old + 1]
        m.compound_mapcount[new + 1] = m.compound_mapcount[old + 1]
        m.compound_mapcount[old + 1] = -1
    m.mapping[new] = m.mapping[old]
    m.index[new] = m.index[old]
    m.refcount[new] = m.refcount[old]
    as_id = page_mapping_id(k, old)
    if as_id is not None:
        k.mappings[as_id].i_pages[int(m.index[old])] = new
    _remap(k, old, new, nr)
    m.mapping[old] = 0
    m.refcount[old] = 1
    if k.pf.profile.has_flag("PG_anon_exclusive"):
        m.flags[src] &= ~np.uint64(k.pf.mask("PG_anon_exclusive"))
    folio_put(k, old)
    return new


def _remap(k: Kernel, old: int, new: int, nr: int) -> None:
    """remove_migration_ptes: every PTE of [old, old + nr) and huge PMD of `old` now maps new."""
    pfn_mask = np.uint64(PTE_PFN_MASK)
    shift = np.uint64(PAGE_SHIFT)
    for mm in k.mms.values():
        for table in mm.pgtable.pte.values():
            pfns = (table & pfn_mask) >> shift
            hit = (table != 0) & (pfns >= old) & (pfns < old + nr)
            if hit.any():
                moved = pfns[hit] - np.uint64(old) + np.uint64(new)
                table[hit] = (table[hit] & ~pfn_mask) | (moved << shift)
        for slot, entry in mm.pgtable.pmd.items():
            if entry & _PAGE_PSE and (entry & PTE_PFN_MASK) >> PAGE_SHIFT == old:
                mm.pgtable.pmd[slot] = (entry & ~PTE_PFN_MASK) | (new << PAGE_SHIFT)


def migrate_longterm_unpinnable_pages(
    k: Kernel, movable: list[int], nr_pages: int, pages: NDArray[np.int64]
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c migrate_longterm_unpinnable_pages: unpin all, migrate, -EAGAIN or -ENOMEM."""
    for page in pages[:nr_pages].tolist():
        yield from gup_put_folio(k, compound_head(k.mem, page), 1, FOLL_PIN)
    pages[:nr_pages] = -1
    failed = False
    for folio in movable:
        new = _migrate_folio(k, folio)
        failed |= new is None
        # putback_lru_page / putback_movable_pages: to the LRU batch, drop the isolation ref
        target = folio if new is None else new
        yield from folio_add_lru(k, target)
        folio_put(k, target)
    return -errno.ENOMEM if failed else -errno.EAGAIN


def check_and_migrate_movable_pages(
    k: Kernel, nr_pages: int, pages: NDArray[np.int64], gup_flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c check_and_migrate_movable_pages: 0 when every pinned folio may stay."""
    if not (k.profile.longterm_migrates_cma or k.profile.longterm_migrates_movable):
        return 0
    # Pinnable folios are skipped without touching state: test them all at once.
    if not unpinnable(k, pages[:nr_pages]).any():
        return 0
    if k.profile.longterm_check != "movable":
        raise Unmodelled(
            "__gup_longterm_locked",
            f"kernel {k.profile.name} runs check_and_migrate_cma_pages (profile.longterm_check"
            f" {k.profile.longterm_check!r}), which pins again itself and needs mm and start:"
            " __gup_longterm_locked must call gup_longterm.check_and_migrate_cma_pages",
        )
    collected, movable = yield from collect_longterm_unpinnable_pages(k, nr_pages, pages)
    if not collected:
        return 0
    return (yield from migrate_longterm_unpinnable_pages(k, movable, nr_pages, pages))


# ---------------------------------------------------------------------------------------
# v5.7.14: check_and_migrate_cma_pages (profile.longterm_check == "cma")

# v5.7.14 include/linux/gfp.h:29,32,38 (___GFP_DIRECT_RECLAIM, ___GFP_NOWARN,
# ___GFP_NOMEMALLOC), :197 __GFP_RECLAIM, :302-304 GFP_TRANSHUGE_LIGHT / GFP_TRANSHUGE.
# The model's allocator reads only __GFP_MOVABLE and __GFP_COMP of a mask.
__GFP_DIRECT_RECLAIM = 0x400
__GFP_RECLAIM = 0x400 | 0x800
__GFP_NOWARN = 0x2000
__GFP_NOMEMALLOC = 0x80000
GFP_TRANSHUGE_LIGHT = (
    GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC | __GFP_NOWARN
) & ~__GFP_RECLAIM
GFP_TRANSHUGE = GFP_TRANSHUGE_LIGHT | __GFP_DIRECT_RECLAIM
# v5.7.14 mm/migrate.c:1442 migrate_pages: at most 10 passes; include/linux/migrate.h
# MIGRATEPAGE_SUCCESS 0.
MIGRATE_PASSES = 10
MIGRATEPAGE_SUCCESS = 0
# Flags v5.7.14 mm/migrate.c migrate_page_states (599-666) copies to the new page:
# PG_checked is PG_owner_priv_1, PG_readahead is PG_reclaim; PG_active / PG_unevictable
# move (test-and-clear on the old page); page_is_young/idle are not built (no idle tracking).
_STATES_5_7 = (
    "PG_error",
    "PG_referenced",
    "PG_uptodate",
    "PG_workingset",
    "PG_owner_priv_1",
    "PG_mappedtodisk",
    "PG_dirty",
    "PG_reclaim",
)

Mapping = tuple[MmStruct, int, bool]


def _put_page(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v5.7.14 include/linux/mm.h put_page (1157-1174): one reference off the head page.

    An fsdax page is devmap-managed: put_devmap_managed_page drops the reference the
    same way and at a count of 1 only wakes waiters (v5.7.14 mm/memremap.c
    free_devmap_managed_page 446-452), which holds no state the model keeps.
    """
    folio = peek_head(k.mem, page)
    yield Point("put_page", reads=put_reads(folio) | head_key(page), writes=put_writes(k, folio))
    put_page(k, page)


def release_longterm_pages(
    k: Kernel, pages: NDArray[np.int64], nr: int, gup_flags: int
) -> Generator[Yield, None, None]:
    """Drop what pinning pages[:nr] took, on a __gup_longterm_locked path that gives them back.

    v5.7.14 mm/gup.c __gup_longterm_locked 1796-1798 and check_and_migrate_cma_pages
    1713-1714: put_page() each, FOLL_PIN or not (profile.longterm_release_put_page);
    v5.10 (96e1fac162cc): unpin_user_pages under FOLL_PIN, put_page otherwise.
    """
    if k.profile.longterm_release_put_page or not gup_flags & FOLL_PIN:
        for page in pages[:nr].tolist():
            yield from _put_page(k, page)
        return
    for page in pages[:nr].tolist():
        yield from gup_put_folio(k, peek_head(k.mem, page), 1, FOLL_PIN, (page,))


def isolate_lru_page(k: Kernel, page: int) -> Generator[Yield, None, int]:
    """v5.7.14 mm/vmscan.c isolate_lru_page (1745-1766): off the LRU with a reference
    (get_page, ClearPageLRU): 0, or -EBUSY when PG_lru is clear.  No LRU drain of its own."""
    key = frozenset({("page", page, "flags"), ("page", page, "refcount")})
    yield Point("isolate_lru_page", reads=key, writes=key)
    lru = k.pf.mask("PG_lru")
    if not int(k.mem.flags[page]) & lru:
        return -errno.EBUSY
    page_ref_add(k.mem, page, 1)
    k.mem.flags[page] &= ~lru & _ALL
    return 0


def putback_lru_page(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v5.7.14 mm/vmscan.c putback_lru_page (968-972): lru_cache_add (mm/swap.c
    __lru_cache_add 405-413: +1 in the per-CPU pagevec, drained when full or compound),
    then put_page of the isolation reference."""
    yield from folio_add_lru(k, page)
    yield from _put_page(k, page)


def putback_movable_pages(k: Kernel, pagelist: list[int]) -> Generator[Yield, None, None]:
    """v5.7.14 mm/migrate.c putback_movable_pages (169-199): every LRU page back with
    putback_lru_page (NR_ISOLATED_* -= nr is not modelled)."""
    for page in list(pagelist):
        pagelist.remove(page)
        yield from putback_lru_page(k, page)


def new_non_cma_page(k: Kernel, page: int) -> Generator[Yield, None, int | None]:
    """v5.7.14 mm/gup.c new_non_cma_page (1606-1655): GFP_USER | __GFP_NOWARN order 0 (1620,
    1654), or for a THP GFP_TRANSHUGE | __GFP_NOWARN without __GFP_MOVABLE, HPAGE_PMD_ORDER,
    prep_transhuge_page (1635-1651); neither may come from CMA or ZONE_MOVABLE."""
    m = k.mem
    if PageHuge(k, page):
        raise Unmodelled("new_non_cma_page", "v5.7 alloc_migrate_huge_page for a hugetlb page")
    thp = folio_test_large(m, page)
    if thp:
        gfp, order = (GFP_TRANSHUGE | __GFP_NOWARN) & ~__GFP_MOVABLE, HPAGE_PMD_ORDER
    else:
        gfp, order = GFP_USER | __GFP_NOWARN, 0
    yield Point("new_non_cma_page", reads=free_reads(page), writes=alloc_writes(k, gfp, order))
    new = alloc_pages(k, gfp, order)
    if new is not None and order:
        m.dtor[new + 1] = TRANSHUGE_PAGE_DTOR
    return new


def _rmap_walk(k: Kernel, folio: int, nr: int) -> list[Mapping]:
    """Every PTE mapping a page of [folio, folio + nr) and every huge PMD mapping `folio`:
    what v5.7.14 mm/rmap.c rmap_walk_anon finds through the page's anon_vma."""
    out: list[Mapping] = []
    pfn_mask = np.uint64(PTE_PFN_MASK)
    shift = np.uint64(PAGE_SHIFT)
    present = np.uint64(_PAGE_PRESENT | _PAGE_PROTNONE)
    for mm in k.mms.values():
        for slot, table in mm.pgtable.pte.items():
            pfns = (table & pfn_mask) >> shift
            hit = ((table & present) != 0) & (pfns >= folio) & (pfns < folio + nr)
            for idx in np.flatnonzero(hit).tolist():
                out.append((mm, slot << PMD_SHIFT | idx << PAGE_SHIFT, False))
        for slot, entry in mm.pgtable.pmd.items():
            if entry & _PAGE_PSE and pte_pfn(entry) == folio:
                out.append((mm, slot << PMD_SHIFT, True))
    return out


def _mapping_keys(mappings: list[Mapping]) -> frozenset[Hashable]:
    """Footprint of the page-table entries of `mappings`."""
    keys: set[Hashable] = set()
    for mm, addr, huge in mappings:
        keys |= {pmd_key(mm.id, addr)} if huge else pte_footprint(mm.id, addr)
    return frozenset(keys)


def _refuse_unmodelled(k: Kernel, page: int) -> None:
    """Raise Unmodelled for a page v5.7's unmap_and_move would treat in a way the model
    does not cover."""
    m = k.mem
    if not PageAnon(k, page):
        raise Unmodelled(
            "move_to_new_page", "v5.7 migration of a page-cache page (a_ops->migratepage)"
        )
    if folio_test_large(m, page) and PageDoubleMap(k, page):
        raise Unmodelled("try_to_unmap", "v5.7 migration of a double-mapped THP")
    for mm, addr, _ in _rmap_walk(k, page, folio_nr_pages(m, page)):
        vma = find_vma(mm, addr)
        if vma is not None and vma.vm_flags & VM_LOCKED:
            raise Unmodelled("remove_migration_pte", "v5.7 mlock_vma_page of a VM_LOCKED VMA")


def migrate_page_states(k: Kernel, new: int, page: int) -> None:
    """v5.7.14 mm/migrate.c migrate_page_states (599-666): the flags the new page takes over;
    ClearPagePrivate and set_page_private(page, 0) on the old one (PageSwapCache, KSM, cpupid,
    page owner and memcg are not modelled)."""
    m = k.mem
    pf = k.pf
    old = int(m.flags[page])
    carried = 0
    for name in _STATES_5_7:
        carried |= old & pf.mask(name)
    active, unevictable = pf.mask("PG_active"), pf.mask("PG_unevictable")
    if old & active:
        carried |= active
        m.flags[page] &= ~active & _ALL
    elif old & unevictable:
        carried |= unevictable
        m.flags[page] &= ~unevictable & _ALL
    m.flags[new] |= carried
    m.flags[page] &= ~pf.mask("PG_private") & _ALL
    m.private[page] = 0


def move_to_new_page(k: Kernel, new: int, page: int) -> int:
    """v5.7.14 mm/migrate.c move_to_new_page (940-1015) of an anon LRU page: migrate_page
    (689-706) -> migrate_page_move_mapping without a mapping (402-420): -EAGAIN unless
    page_count is expected_page_refs (379-390), 1; then index, mapping, PG_swapbacked, the
    contents (migrate_page_copy 668-676) and the states.  An anon page keeps ->mapping."""
    m = k.mem
    if page_ref_count(m, page) != 1:
        return -errno.EAGAIN
    nr = folio_nr_pages(m, page)
    m.index[new] = m.index[page]
    m.mapping[new] = m.mapping[page]
    swapbacked = k.pf.mask("PG_swapbacked")
    if int(m.flags[page]) & swapbacked:
        m.flags[new] |= swapbacked
    m.data[new : new + nr] = m.data[page : page + nr]
    migrate_page_states(k, new, page)
    return MIGRATEPAGE_SUCCESS


def _unmap_move_remap(k: Kernel, page: int, new: int, mappings: list[Mapping]) -> int:
    """v5.7.14 mm/migrate.c __unmap_and_move 1119-1133: try_to_unmap, move_to_new_page when
    nothing maps the page any more, then remove_migration_ptes to the new page or back to
    the old one.

    Unmapping (v5.7.14 mm/rmap.c try_to_unmap_one 1550-1552, 1601-1608, 1701-1702; mm/huge_memory.c
    set_pmd_migration_entry 3129-3153) moves a dirty entry's dirty bit to the page
    (set_page_dirty: PG_dirty on an anon page, mm/page-writeback.c 2549-2579), keeps its
    write bit in the migration entry, and drops a mapcount and a reference per entry.
    Restoring (mm/migrate.c remove_migration_pte 205-285; mm/huge_memory.c
    remove_migration_pmd 3155-3183) takes a reference and a mapcount and builds the entry
    afresh from vm_page_prot: old, clean, writable when the migration entry was.
    """
    m = k.mem
    dirty = k.pf.mask("PG_dirty")
    undo: list[tuple[MmStruct, VmArea, int, bool, int, bool]] = []
    for mm, addr, huge in mappings:
        vma = find_vma(mm, addr)
        assert vma is not None
        if huge:
            entry = mm.pgtable.pmd[addr >> PMD_SHIFT]
            sub = page
        else:
            entry = get_pte(mm.pgtable, addr)
            sub = pte_pfn(entry)
        if pte_dirty(entry):
            m.flags[page] |= dirty
        page_remove_rmap(k, sub, vma, huge)
        page_ref_add(m, page, -1)
        undo.append((mm, vma, addr, huge, sub - page, pte_write(entry)))
    rc = -errno.EAGAIN
    if not page_mapped(k, page):
        rc = move_to_new_page(k, new, page)
    target = new if rc == MIGRATEPAGE_SUCCESS else page
    for mm, vma, addr, huge, off, write in undo:
        page_ref_add(m, target, 1)
        if huge:
            entry = pte_mkold(pfn_pte(target, vma_page_prot(k, vma)) | _PAGE_PSE)
        else:
            entry = pte_mkold(mk_pte(k, target + off, vma))
        if write:
            entry = maybe_mkwrite(entry, vma)
        if huge:
            mm.pgtable.pmd[addr >> PMD_SHIFT] = entry
        else:
            set_pte_at(mm.pgtable, addr, entry)
        page_dup_rmap(k, target + off, huge)
    return rc


def __unmap_and_move(k: Kernel, page: int, new: int, force: bool) -> Generator[Yield, None, int]:
    """v5.7.14 mm/migrate.c __unmap_and_move (1017-1160), MIGRATE_SYNC, an anon LRU page:
    trylock_page, or lock_page from the fourth pass on (1025-1046); a page under writeback
    waits only then (1048-1065); unmap, move and restore (one step); unlock; on success
    putback_lru_page(newpage) (1152-1157)."""
    m = k.mem
    flags = frozenset({("page", page, "flags")})
    yield Point("__unmap_and_move:trylock_page", reads=flags | order_keys(page), writes=flags)
    locked = k.pf.mask("PG_locked")
    if int(m.flags[page]) & locked:
        if not force:
            return -errno.EAGAIN
        yield from folio_lock(k, page)
    else:
        m.flags[page] |= locked
    if int(m.flags[page]) & k.pf.mask("PG_writeback"):
        if not force:
            folio_unlock(k, page)
            return -errno.EAGAIN
        raise Unmodelled("__unmap_and_move", "v5.7 wait_on_page_writeback of an anon page")
    nr = folio_nr_pages(m, page)
    fp = page_keys(page, nr) | page_keys(new, nr) | _mapping_keys(_rmap_walk(k, page, nr))
    yield Point("__unmap_and_move", reads=fp | free_reads(page) | free_reads(new), writes=fp)
    rc = _unmap_move_remap(k, page, new, _rmap_walk(k, page, nr))
    folio_unlock(k, page)
    if rc == MIGRATEPAGE_SUCCESS:
        yield from putback_lru_page(k, new)
    return rc


def unmap_and_move(
    k: Kernel, page: int, force: bool, pagelist: list[int]
) -> Generator[Yield, None, int]:
    """v5.7.14 mm/migrate.c unmap_and_move (1177-1268) with new_non_cma_page and no
    put_new_page: a page only the isolation holds is done (1189-1199); no new page is
    -ENOMEM (1202-1204); unless -EAGAIN the page leaves the list (1211-1227); success drops
    the isolation reference (1234-1235, freeing the old page), failure puts the page back
    (1246-1249, not for -EAGAIN) and frees the new one (1261-1264).  x86-64 migrates THPs
    (CONFIG_ARCH_ENABLE_THP_MIGRATION, v5.7.14 arch/x86/Kconfig:2471-2473)."""
    m = k.mem
    flags = frozenset({("page", page, "flags")})
    # the step goes on to _refuse_unmodelled: PageAnon, folio_test_large, PageDoubleMap
    seen = ref_key(page) | free_reads(page) | page_keys(page, 1, ("head", "mapping"))
    yield Point("unmap_and_move:page_count", reads=seen | page_keys(page + 1), writes=flags)
    if page_ref_count(m, page) == 1:
        m.flags[page] &= ~(k.pf.mask("PG_active") | k.pf.mask("PG_unevictable")) & _ALL
        pagelist.remove(page)
        yield from _put_page(k, page)
        return MIGRATEPAGE_SUCCESS
    _refuse_unmodelled(k, page)
    new = yield from new_non_cma_page(k, page)
    if new is None:
        return -errno.ENOMEM
    rc = yield from __unmap_and_move(k, page, new, force)
    if rc != -errno.EAGAIN:
        pagelist.remove(page)
    if rc == MIGRATEPAGE_SUCCESS:
        yield from _put_page(k, page)
        return rc
    if rc != -errno.EAGAIN:
        yield from putback_lru_page(k, page)
    yield from _put_page(k, new)
    return rc


def migrate_pages(k: Kernel, pagelist: list[int]) -> Generator[Yield, None, int]:
    """v5.7.14 mm/migrate.c migrate_pages (1426-1512), MIGRATE_SYNC: passes over the list
    while a page asked to retry, at most 10, the fourth on forcing the page lock; -ENOMEM
    stops at once (a THP would be split first: Unmodelled); returns the pages not migrated
    (PGMIGRATE_SUCCESS/FAIL are not modelled)."""
    retry = 1
    nr_failed = 0
    for npass in range(MIGRATE_PASSES):
        if not retry:
            break
        retry = 0
        for page in list(pagelist):
            rc = yield from unmap_and_move(k, page, npass > 2, pagelist)
            if rc == -errno.ENOMEM:
                if folio_test_large(k.mem, page) and not PageHuge(k, page):
                    raise Unmodelled(
                        "migrate_pages", "v5.7 split_huge_page_to_list of a THP with no new THP"
                    )
                return nr_failed + 1
            if rc == -errno.EAGAIN:
                retry += 1
            elif rc != MIGRATEPAGE_SUCCESS:
                nr_failed += 1
    return nr_failed + retry


def check_and_migrate_cma_pages(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, pages: NDArray[np.int64], gup_flags: int
) -> Generator[Yield, None, int]:
    """v5.7.14 mm/gup.c check_and_migrate_cma_pages (1657-1744), after the long-term pin.

    Per pinned folio in CMA (is_migrate_cma_page, 1687): lru_add_drain_all once per round if
    it is off the LRU (1691-1694), isolate_lru_page (1696-1702; a failure leaves it pinned
    where it is).  None isolated: the count.  Else put_page every page (1713-1714),
    migrate_pages (1716), and on failure put the rest back (1722-1725) and remember not to
    migrate again; pin the range again (1732); after a clean migration go round again with
    the new count (1736-1740), else return what the pin returned (1743).  No other bound.
    """
    from pinlab.kernel.mm.gup import __get_user_pages_locked

    m = k.mem
    lru = k.pf.mask("PG_lru")
    drain_allow = True
    migrate_allow = True
    ret = nr_pages
    while True:
        # A round with no CMA page reads and changes nothing: test the range at once.
        if not unpinnable(k, pages[:nr_pages]).any():
            return ret
        # The round's compound_head / compound_nr reads (1675-1681), taken in one step: a
        # pinned page's compound page cannot be split under us.
        seen: set[Hashable] = set()
        for page in pages[:nr_pages].tolist():
            seen |= head_key(page) | free_reads(peek_head(m, page))
        yield Point("check_and_migrate_cma_pages", reads=frozenset(seen))
        cma_heads: list[int] = []
        i = 0
        while i < nr_pages:
            page = int(pages[i])
            head = compound_head(m, page)
            step = folio_nr_pages(m, head) - (page - head)
            if not is_longterm_pinnable_page(k, head):
                if PageHuge(k, head):
                    raise Unmodelled("check_and_migrate_cma_pages", "v5.7 isolate_huge_page")
                cma_heads.append(head)
            i += step
        cma_page_list: list[int] = []
        for head in cma_heads:
            yield Point(
                "check_and_migrate_cma_pages:PageLRU", reads=frozenset({("page", head, "flags")})
            )
            if not int(m.flags[head]) & lru and drain_allow:
                yield from lru_add_drain_all(k)
                drain_allow = False
            if (yield from isolate_lru_page(k, head)) == 0:
                cma_page_list.append(head)
        if not cma_page_list:
            return ret
        yield from release_longterm_pages(k, pages, nr_pages, gup_flags)
        if (yield from migrate_pages(k, cma_page_list)):
            migrate_allow = False
            if cma_page_list:
                yield from putback_movable_pages(k, cma_page_list)
        ret = yield from __get_user_pages_locked(k, mm, start, nr_pages, pages, None, gup_flags)
        if not (ret > 0 and migrate_allow):
            return ret
        nr_pages = ret
        drain_allow = True
