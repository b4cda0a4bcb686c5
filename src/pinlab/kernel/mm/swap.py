"""Per-CPU LRU batches and page aging: a reference held on every batched folio until it drains.

v6.1 mm/swap.c: folio_add_lru (the lru_add batch), folio_mark_accessed and
folio_activate (the activate batch), folio_batch_move_lru and lru_add_drain.
The LRU lists themselves hold no reference and are not modelled; PG_lru,
PG_active, PG_referenced and the batches' references are, because a user can
observe them (refcount, kpageflags).  MGLRU is built in but off by default in
Debian's config (CONFIG_LRU_GEN_ENABLED unset), so the classic two-list aging applies.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.memmap import folio_test_large
from pinlab.kernel.mm.page_alloc import free_reads, free_writes
from pinlab.kernel.mm.page_ref import folio_get, folio_put
from pinlab.kernel.mm.types import (
    VM_DONTEXPAND,
    VM_IO,
    VM_LOCKED,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VmArea,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

_ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF
# include/linux/mm.h VM_SPECIAL: v6.1.192 :422, v5.7.14 :379, v4.4.178 :201 (the same four)
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP


def _batch_footprint(k: Kernel, batch: list[int], key: Hashable) -> frozenset[Hashable]:
    """What moving a batch writes: the batch, every batched folio's flags and refcount, and
    what freeing one writes (the batch may hold its last reference)."""
    keys: set[Hashable] = {key}
    for folio in batch:
        keys |= {("page", folio, "refcount"), ("page", folio, "flags")}
        keys |= free_writes(k, folio)
    return frozenset(keys)


def _batch_reads(batch: list[int]) -> frozenset[Hashable]:
    """What moving a batch reads besides what it writes: folio_test_large and free_folio's
    tests of every batched folio."""
    keys: set[Hashable] = set()
    for folio in batch:
        keys |= free_reads(folio)
    return frozenset(keys)


def folio_batch_move_lru(k: Kernel, cpu: int, activate: bool = False) -> None:
    """v6.1 mm/swap.c folio_batch_move_lru: move each folio, set PG_lru, then drop the batch refs.

    The lru_add batch (lru_add_fn) takes every folio; the activate batch
    (folio_activate_fn) skips a folio whose PG_lru was already cleared, and
    sets PG_active unless it is active or unevictable.
    """
    batches = k.lru_activate if activate else k.lru_add
    batch = batches[cpu]
    batches[cpu] = []
    lru = k.pf.mask("PG_lru")
    active = k.pf.mask("PG_active")
    unevictable = k.pf.mask("PG_unevictable")
    for folio in batch:
        flags = int(k.mem.flags[folio])
        if activate:
            if not flags & lru:
                continue
            if not flags & (active | unevictable):
                flags |= active
        k.mem.flags[folio] = flags | lru
    for folio in batch:
        folio_put(k, folio)


def folio_add_lru(
    k: Kernel,
    folio: int,
    cpu: int = 0,
    then: frozenset[Hashable] = frozenset(),
    active: bool = False,
) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c folio_add_lru: +1 ref into this CPU's batch; flush when full or large.

    v4.4 mm/swap.c __lru_cache_add flushed a full pagevec before adding and let
    compound pages wait in it like any other (profile.lru_add_flush_first).  ``then``:
    what the caller writes after this returns, before it yields again (footprint only).
    ``active``: PG_active is set first (lru_cache_add_active_or_unevictable).
    """
    batch = k.lru_add[cpu]
    yield Point("folio_add_lru", writes=_batch_footprint(k, [*batch, folio], ("lru", cpu)) | then)
    if active:
        k.mem.flags[folio] |= k.pf.mask("PG_active")
    folio_get(k, folio)
    if k.profile.lru_add_flush_first:
        if len(batch) >= k.profile.pagevec_size:
            folio_batch_move_lru(k, cpu)
        k.lru_add[cpu].append(folio)
        return
    batch.append(folio)
    if len(batch) >= k.profile.pagevec_size or folio_test_large(k.mem, folio):
        folio_batch_move_lru(k, cpu)


def folio_add_lru_vma(
    k: Kernel, folio: int, vma: VmArea, cpu: int = 0, then: frozenset[Hashable] = frozenset()
) -> Generator[Yield, None, None]:
    """A new anon page or THP onto the LRU: inactive in v6.1, active in v5.7 and v4.4.

    v6.1 mm/swap.c folio_add_lru_vma (:539, or lru_cache_add_inactive_or_unevictable) adds
    it as it is; v5.7.14 mm/swap.c:460 and v4.4.178 mm/swap.c:711
    lru_cache_add_active_or_unevictable set PG_active first (profile.new_anon_lru_active)
    unless the VMA is VM_LOCKED and not VM_SPECIAL.  That mlock path (6.1 mlock_new_page,
    5.7 PG_mlocked then the pagevec, 4.4 PG_mlocked and straight onto the unevictable
    list) is not modelled in any profile: such a page is added as an inactive one.
    ``then``: as folio_add_lru's.
    """
    locked = vma.vm_flags & (VM_LOCKED | VM_SPECIAL) == VM_LOCKED
    active = k.profile.new_anon_lru_active and not locked
    yield from folio_add_lru(k, folio, cpu, then, active)


def folio_activate(k: Kernel, folio: int, cpu: int) -> None:
    """An inactive LRU folio joins this CPU's activate batch, +1 ref until the batch drains.

    v6.1 mm/swap.c folio_activate (SMP, :361) -> folio_batch_add_and_move (:249): drained
    when full or the folio is large (folio_may_be_lru_cached); v5.7.14 mm/swap.c activate_page
    (:307) into activate_page_pvecs, drained when full or PageCompound; v4.4.178 mm/swap.c
    activate_page (:536) drains only a full pagevec (profile.activate_flush_large).  The
    drain (6.1 folio_activate_fn :336, 5.7 / 4.4 __activate_page :275 / :502) sets PG_active
    on a folio still on the LRU and neither active nor unevictable.
    """
    flags = int(k.mem.flags[folio])
    if not flags & k.pf.mask("PG_lru") or flags & (
        k.pf.mask("PG_active") | k.pf.mask("PG_unevictable")
    ):
        return
    folio_get(k, folio)
    batch = k.lru_activate[cpu]
    batch.append(folio)
    large = k.profile.activate_flush_large and folio_test_large(k.mem, folio)
    if len(batch) >= k.profile.pagevec_size or large:
        folio_batch_move_lru(k, cpu, activate=True)


def __lru_cache_activate_folio(k: Kernel, folio: int, cpu: int) -> None:
    """Still in this CPU's lru_add batch -> PG_active (only the local batch is searched).

    v6.1 mm/swap.c __lru_cache_activate_folio (:393); v5.7.14 / v4.4.178 mm/swap.c
    __lru_cache_activate_page (:336 / :568) over lru_add_pvec, the same.
    """
    if folio in k.lru_add[cpu]:
        k.mem.flags[folio] |= k.pf.mask("PG_active")


def folio_mark_accessed(k: Kernel, folio: int, cpu: int = 0) -> Generator[Yield, None, None]:
    """Mark a folio accessed: referenced on the first touch, activated on the second.

    v6.1 mm/swap.c folio_mark_accessed (:467), v5.7.14 mm/swap.c mark_page_accessed
    (:373) and v4.4.178 mm/swap.c mark_page_accessed (:605) order their tests differently
    but agree: an unreferenced folio gets PG_referenced; a referenced one neither active
    nor unevictable is activated (folio_activate on the LRU, else __lru_cache_activate_folio)
    and loses PG_referenced.  Not modelled, as nothing the model shows depends on them:
    workingset_activation (6.1 mm/workingset.c:507 ages the lruvec's nonresident counter;
    5.7 :371 advances the node's inactive_age, file pages only; 4.4 :250 the zone's,
    file pages only), read only when a shadow entry refaults.  PG_idle: Debian's
    config-6.1.0 amd64 has neither IDLE_PAGE_TRACKING nor DAMON, so no PAGE_IDLE_FLAG and
    folio_test_idle is the constant false (include/linux/page_idle.h); nor do the 5.7 and
    4.4 profiles have idle tracking (profiles.py).  MGLRU's folio_inc_refs is off
    (CONFIG_LRU_GEN_ENABLED unset).  v4.4 does not take compound_head; every caller passes a
    head or a small page.
    """
    batch = [*k.lru_activate[cpu], *k.lru_add[cpu], folio]
    yield Point(
        "folio_mark_accessed",
        reads=frozenset({("page", folio, "flags"), ("lru", cpu)}) | _batch_reads(batch),
        writes=_batch_footprint(k, batch, ("lru_activate", cpu)),
    )
    ref = k.pf.mask("PG_referenced")
    flags = int(k.mem.flags[folio])
    if not flags & ref:
        k.mem.flags[folio] |= ref
        return
    if flags & (k.pf.mask("PG_unevictable") | k.pf.mask("PG_active")):
        return
    if flags & k.pf.mask("PG_lru"):
        folio_activate(k, folio, cpu)
    else:
        __lru_cache_activate_folio(k, folio, cpu)
    k.mem.flags[folio] &= ~ref & _ALL_BITS


def pagevec_move_tail(k: Kernel, cpu: int) -> None:
    """v4.4.178 mm/swap.c:463 pagevec_move_tail of this CPU's lru_rotate_pvecs.

    pagevec_move_tail_fn (:447) moves a page still on the inactive list to its tail, which
    changes no flag (the lists' order is not modelled; PG_reclaim was cleared by
    end_page_writeback already); then pagevec_lru_move_fn's release_pages (:443, :909)
    drops the pagevec's references, freeing a page whose last one it was.
    """
    batch = k.lru_rotate[cpu]
    k.lru_rotate[cpu] = []
    for page in batch:
        folio_put(k, page)


def rotate_footprint(
    k: Kernel, page: int, cpu: int
) -> tuple[frozenset[Hashable], frozenset[Hashable]]:
    """(reads, writes) of rotate_reclaimable_page adding `page` to this CPU's pagevec."""
    writes = _batch_footprint(k, [*k.lru_rotate[cpu], page], ("lru_rotate", cpu))
    return writes | _batch_reads([*k.lru_rotate[cpu], page]), writes


def rotate_reclaimable_page(k: Kernel, page: int, cpu: int) -> Generator[Yield, None, None]:
    """v4.4.178 mm/swap.c:476 rotate_reclaimable_page, one step (irqs off on this CPU).

    A page neither locked, dirty, active nor unevictable and on the LRU gets a reference
    (page_cache_get, :482) in this CPU's lru_rotate_pvecs; the pagevec is moved once
    pagevec_add leaves it no room (:486-487, PAGEVEC_SIZE: profile.pagevec_size).
    """
    reads, writes = rotate_footprint(k, page, cpu)
    yield Point("rotate_reclaimable_page", reads=reads, writes=writes)
    flags = int(k.mem.flags[page])
    busy = ("PG_locked", "PG_dirty", "PG_active", "PG_unevictable")
    if any(flags & k.pf.mask(flag) for flag in busy) or not flags & k.pf.mask("PG_lru"):
        return
    folio_get(k, page)
    k.lru_rotate[cpu].append(page)
    if len(k.lru_rotate[cpu]) >= k.profile.pagevec_size:
        pagevec_move_tail(k, cpu)


def lru_add_drain_cpu(k: Kernel, cpu: int) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c lru_add_drain_cpu: the lru_add batch, the lru_rotate batch, then
    folio_activate_drain.

    The rotate batch is filled only by v4.4.178's rotate_reclaimable_page; v4.4.178
    mm/swap.c:814-821 drains it after lru_add_pvec, as v5.7.14 :601 and v6.1 :662 do.
    The deactivate and lazyfree batches are not modelled.
    """
    if k.lru_add[cpu]:
        yield Point("lru_add_drain", writes=_batch_footprint(k, k.lru_add[cpu], ("lru", cpu)))
        folio_batch_move_lru(k, cpu)
    if k.lru_rotate[cpu]:
        key = ("lru_rotate", cpu)
        batch = k.lru_rotate[cpu]
        yield Point(
            "pagevec_move_tail",
            reads=_batch_reads(batch),
            writes=_batch_footprint(k, batch, key),
        )
        pagevec_move_tail(k, cpu)
    if k.lru_activate[cpu]:
        key = ("lru_activate", cpu)
        yield Point("folio_activate_drain", writes=_batch_footprint(k, k.lru_activate[cpu], key))
        folio_batch_move_lru(k, cpu, activate=True)


def lru_add_drain(k: Kernel, cpu: int = 0) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c lru_add_drain: drain the current CPU only."""
    yield from lru_add_drain_cpu(k, cpu)


def lru_add_drain_all(k: Kernel) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c lru_add_drain_all: drain every CPU's batches."""
    for cpu in range(k.nr_cpus):
        yield from lru_add_drain_cpu(k, cpu)


def folio_in_lru_batch(k: Kernel, folio: int) -> int:
    """How many references the per-CPU batches hold on `folio` (for invariants and probes)."""
    batches = (*k.lru_add, *k.lru_activate, *k.lru_rotate)
    return sum(batch.count(folio) for batch in batches)
