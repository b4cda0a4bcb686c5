"""Taking and dropping gup references and pins on one folio (v6.1 mm/gup.c).

Each function is interleavable: it yields before every atomic operation on
shared state (refcount read/add, pincount add, vmstat update).  Where the
profile's kernel keeps the pin count (bias in _refcount, or an exact count in
a tail page) comes from `k.profile`; the pin_record / pin_release hooks replace
the pin accounting with a design's.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable, Sequence
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.mm.gup_flags import FOLL_GET, FOLL_LONGTERM, FOLL_PIN
from pinlab.kernel.mm.memmap import PAGE_MAPPING_ANON, compound_head
from pinlab.kernel.mm.page_alloc import free_reads, free_writes, order_keys, pool_of
from pinlab.kernel.mm.page_ref import folio_put_refs, page_ref_add, page_ref_add_unless
from pinlab.kernel.mm.pincount import has_exact_pincount
from pinlab.kernel.mm.vmstat import (
    NR_FOLL_PIN_ACQUIRED,
    NR_FOLL_PIN_RELEASED,
    mod_node_page_state,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

Gen = Generator[Yield, None, "object"]


def ref_key(folio: int) -> frozenset[Hashable]:
    """Footprint of a folio's _refcount."""
    return frozenset({("page", folio, "refcount")})


def head_key(page: int) -> frozenset[Hashable]:
    """Footprint of the compound_head() read of a page (a split rewrites it)."""
    return frozenset({("page", page, "head")})


def pin_key(k: Kernel, folio: int) -> frozenset[Hashable]:
    """Footprint of a folio's exact pincount (in the tail page the profile keeps it in)."""
    return frozenset({("page", folio + k.profile.pincount_page, "pincount")})


def vmstat_key(item: str) -> frozenset[Hashable]:
    """Footprint of a /proc/vmstat counter."""
    return frozenset({("vmstat", item)})


def is_zero_page(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/mm.h is_zero_page: the shared zero page, by PFN."""
    return page == k.zero_pfn


def is_longterm_pinnable_page(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/mm.h is_longterm_pinnable_page: not CMA, not ZONE_MOVABLE.

    v5.7 (check_and_migrate_cma_pages) only refused CMA pages.
    """
    if k.hooks.longterm_pinnable is not None:
        return k.hooks.longterm_pinnable(k, page)
    pool = pool_of(k.free_area, page)
    if pool == "cma" and k.profile.longterm_migrates_cma:
        return False
    if is_zero_page(k, page):
        return True
    return not (pool == "movable" and k.profile.longterm_migrates_movable)


def node_stat_mod_folio(k: Kernel, item: str, nr: int) -> Generator[Yield, None, None]:
    """v6.1 include/linux/vmstat.h node_stat_mod_folio, for the pin counters the profile has."""
    if k.profile.vmstat_foll_pin:
        yield Point("vmstat", writes=vmstat_key(item))
        mod_node_page_state(k.vmstat, item, nr)


def try_get_folio(k: Kernel, page: int, refs: int) -> Generator[Yield, None, int | None]:
    """v6.1 mm/gup.c try_get_folio: add `refs` unless the count is 0; refuse a negative count."""
    m = k.mem
    while True:
        folio = compound_head(m, page)
        yield Point("try_get_folio:read", reads=ref_key(folio))
        if int(m.refcount[folio]) < 0:
            warn_on_once(k, "mm/gup.c try_get_folio refcount < 0")
            return None
        # a pin goes on to has_exact_pincount (folio_order) before its next yield
        yield Point(
            "try_get_folio:add",
            reads=ref_key(folio) | head_key(page) | order_keys(folio),
            writes=ref_key(folio),
        )
        if not page_ref_add_unless(m, folio, refs, 0):
            return None
        if compound_head(m, page) == folio:
            return folio
        # The folio was split under us: drop what we took and look again.
        yield Point("try_get_folio:undo", writes=ref_key(folio))
        folio_put_refs(k, folio, refs)


def _pin_folio(k: Kernel, folio: int, refs: int, have_ref: int) -> Gen:
    """Account `refs` pins on a folio already holding `have_ref` of them as plain refs."""
    m = k.mem
    if has_exact_pincount(k, folio) and not have_ref and k.profile.pin_v5_7_order:
        # v5.7 mm/gup.c try_grab_page: hpage_pincount_add, then page_ref_add
        yield Point("pin:pincount", writes=pin_key(k, folio))
        m.pincount[folio + k.profile.pincount_page] += refs
        yield Point("pin:ref", writes=ref_key(folio))
        page_ref_add(m, folio, refs)
    elif has_exact_pincount(k, folio):
        if have_ref < refs:
            yield Point("pin:ref", writes=ref_key(folio))
            page_ref_add(m, folio, refs - have_ref)
        yield Point("pin:pincount", writes=pin_key(k, folio))
        m.pincount[folio + k.profile.pincount_page] += refs
    else:
        yield Point("pin:bias", writes=ref_key(folio))
        page_ref_add(m, folio, refs * k.profile.pin_bias - have_ref)
    yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, refs)
    return None


def _hook_pin(k: Kernel, folio: int, refs: int) -> Generator[Yield, None, bool]:
    """A design's pin accounting (hooks.pin_record): one step of unknown footprint."""
    hook = k.hooks.pin_record
    assert hook is not None
    yield "pin_record"
    return hook(k, folio, refs)


def try_grab_folio(
    k: Kernel, page: int, refs: int, flags: int
) -> Generator[Yield, None, int | None]:
    """v6.1 mm/gup.c try_grab_folio (v5.7 try_grab_compound_head): the folio, or None."""
    if flags & FOLL_GET:
        return (yield from try_get_folio(k, page, refs))
    if flags & FOLL_PIN:
        if k.profile.zero_page_pin_noop and is_zero_page(k, page):
            return compound_head(k.mem, page)
        if flags & FOLL_LONGTERM and not is_longterm_pinnable_page(k, page):
            return None
        if k.hooks.pin_record is not None:
            folio = compound_head(k.mem, page)
            return folio if (yield from _hook_pin(k, folio, refs)) else None
        got = yield from try_get_folio(k, page, refs)
        if got is None:
            return None
        yield from _pin_folio(k, got, refs, refs)
        return got
    warn_on_once(k, "mm/gup.c try_grab_folio without FOLL_GET or FOLL_PIN")
    return None


def try_grab_page(k: Kernel, page: int, flags: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/gup.c try_grab_page: one reference or pin; False when the count is <= 0.

    v4.4 took get_page() unconditionally (the <= 0 refusal is v5.1 8fde12ca79af).
    """
    m = k.mem
    folio = compound_head(m, page)
    if flags & FOLL_GET and flags & FOLL_PIN:
        warn_on_once(k, "mm/gup.c try_grab_page FOLL_GET|FOLL_PIN")
    if k.profile.refcount_guard:
        yield Point("try_grab_page:read", reads=ref_key(folio))
        if int(m.refcount[folio]) <= 0:
            warn_on_once(k, "mm/gup.c try_grab_page refcount <= 0")
            return False
    if flags & FOLL_GET:
        yield Point("try_grab_page:get", writes=ref_key(folio))
        page_ref_add(m, folio, 1)
    elif flags & FOLL_PIN:
        if k.profile.zero_page_pin_noop and is_zero_page(k, page):
            return True
        if k.hooks.pin_record is not None:
            return (yield from _hook_pin(k, folio, 1))
        yield from _pin_folio(k, folio, 1, 0)
    return True


def gup_put_folio(
    k: Kernel,
    folio: int,
    refs: int,
    flags: int,
    run: Sequence[int] = (),
    then_reads: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c gup_put_folio (v5.7 put_compound_head): drop `refs` gets or pins.

    ``run``: the pages the caller found ``folio`` from with memmap.peek_head only (to
    name footprints): their compound_head is read again, from run[0], after the first
    yield.  ``then_reads``: what the caller reads after this returns, before it yields
    again (footprint only).
    """
    m = k.mem
    heads = frozenset(("page", page, "head") for page in run)
    if flags & FOLL_PIN:
        if k.profile.zero_page_pin_noop and is_zero_page(k, folio):
            return
        if k.hooks.pin_release is not None:
            yield "pin_release"
            if run:
                folio = compound_head(m, run[0])
            k.hooks.pin_release(k, folio, refs)
            return
        yield from node_stat_mod_folio(k, NR_FOLL_PIN_RELEASED, refs)
        if run and k.profile.vmstat_foll_pin:  # node_stat_mod_folio yielded
            folio, run, heads = compound_head(m, run[0]), (), frozenset()
        if has_exact_pincount(k, folio):
            yield Point("unpin:pincount", writes=pin_key(k, folio))
            if run:
                folio, run, heads = compound_head(m, run[0]), (), frozenset()
            m.pincount[folio + k.profile.pincount_page] -= refs
        else:
            refs *= k.profile.pin_bias
    reads = put_reads(folio) | heads | then_reads
    yield Point("put:ref", reads=reads, writes=put_writes(k, folio))
    if run:
        folio = compound_head(m, run[0])
    folio_put_refs(k, folio, refs)


def put_reads(folio: int) -> frozenset[Hashable]:
    """What dropping references on a folio reads: the count, and free_folio's tests."""
    return ref_key(folio) | free_reads(folio)


def put_writes(k: Kernel, folio: int) -> frozenset[Hashable]:
    """What dropping references on a folio may write: the count, and if it is freed what
    freeing writes."""
    return ref_key(folio) | free_writes(k, folio)


def unpin_folio_vmstat_last(k: Kernel, folio: int) -> Generator[Yield, None, None]:
    """v5.7 mm/gup.c unpin_user_page: pincount or bias off, put, then NR_FOLL_PIN_RELEASED."""
    if k.hooks.pin_release is not None:
        yield from gup_put_folio(k, folio, 1, FOLL_PIN)
        return
    refs = k.profile.pin_bias
    if has_exact_pincount(k, folio):
        yield Point("unpin:pincount", writes=pin_key(k, folio))
        k.mem.pincount[folio + k.profile.pincount_page] -= 1
        refs = 1
    yield Point("put:ref", reads=put_reads(folio), writes=put_writes(k, folio))
    folio_put_refs(k, folio, refs)
    yield from node_stat_mod_folio(k, NR_FOLL_PIN_RELEASED, 1)


def folio_test_anon(k: Kernel, folio: int) -> bool:
    """v6.1 include/linux/page-flags.h folio_test_anon: low bit of ->mapping."""
    return bool(int(k.mem.mapping[folio]) & PAGE_MAPPING_ANON)
