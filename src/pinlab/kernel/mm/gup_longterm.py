"""FOLL_LONGTERM: move pinned pages out of ZONE_MOVABLE / CMA, then pin again (v6.1 mm/gup.c).

check_and_migrate_movable_pages unpins everything when any pinned folio is
not long-term pinnable, migrates those folios (v6.1 mm/migrate.c
migrate_pages, MIGRATE_SYNC, MR_LONGTERM_PIN) and returns -EAGAIN so the
caller pins the range again.  The model migrates anon and page-cache folios,
order-0 or THP; a THP whose new folio cannot be allocated fails (-ENOMEM)
where the kernel would split it and migrate the base pages.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from pinlab.interleave import Yield
from pinlab.kernel import errno
from pinlab.kernel.mm.gup_flags import FOLL_PIN
from pinlab.kernel.mm.gup_grab import gup_put_folio, is_longterm_pinnable_page
from pinlab.kernel.mm.gup_range import unpinnable
from pinlab.kernel.mm.memmap import compound_head, folio_order, folio_test_large
from pinlab.kernel.mm.page_alloc import __GFP_COMP, GFP_USER, alloc_pages
from pinlab.kernel.mm.page_ref import folio_put, page_ref_add
from pinlab.kernel.mm.pgtable import _PAGE_PSE, PAGE_SHIFT, PTE_PFN_MASK
from pinlab.kernel.mm.rmap import PageAnon, PageHuge, folio_mapcount, page_mapping_id
from pinlab.kernel.mm.swap import folio_add_lru, lru_add_drain, lru_add_drain_all
from pinlab.kernel.mm.types import MmStruct, find_vma

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
    """v6.1 mm/gup.c collect_longterm_unpinnable_pages: (count, folios isolated from the LRU)."""
    collected = 0
    movable: list[int] = []
    prev = -1
    drained = 0
    lru = k.pf.mask("PG_lru")
    for page in pages[:nr_pages].tolist():
        folio = compound_head(k.mem, page)
        if folio == prev:
            continue
        prev = folio
        if is_longterm_pinnable_page(k, folio):
            continue
        collected += 1
        small = not folio_test_large(k.mem, folio)
        if drained == 0 and small and _extra_refs(k, folio):
            yield from lru_add_drain(k)
            drained = 1
        if drained == 1 and small and _extra_refs(k, folio):
            yield from lru_add_drain_all(k)
            drained = 2
        # v6.1 mm/vmscan.c folio_isolate_lru: needs PG_lru, takes a reference
        if not int(k.mem.flags[folio]) & lru:
            continue
        k.mem.flags[folio] &= ~lru & _ALL
        page_ref_add(k.mem, folio, 1)
        movable.append(folio)
    return collected, movable


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
    collected, movable = yield from collect_longterm_unpinnable_pages(k, nr_pages, pages)
    if not collected:
        return 0
    return (yield from migrate_longterm_unpinnable_pages(k, movable, nr_pages, pages))
