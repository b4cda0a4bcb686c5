"""Taking gup references and pins on one folio (v6.1 mm/gup.c); gup_put.py drops them.

Each function is interleavable: it yields before every atomic operation on
shared state (refcount read/add, pincount add, vmstat update).  Where the
profile's kernel keeps the pin count (bias in _refcount, or an exact count in
a tail page) comes from `k.profile`.  The pin_record / pin_release hooks replace
the pin accounting with a design's, inside the very step where the profile does
its own (same label, same yield), so the steps are the kernel's either way.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Footprint, Point, Yield
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.mm.gup_flags import FOLL_GET, FOLL_LONGTERM, FOLL_PIN
from pinlab.kernel.mm.memmap import PAGE_MAPPING_ANON, compound_head, peek_head
from pinlab.kernel.mm.page_alloc import free_reads, free_writes, order_keys, pool_of
from pinlab.kernel.mm.page_ref import folio_put_refs, page_ref_add, page_ref_add_unless
from pinlab.kernel.mm.pincount import has_exact_pincount
from pinlab.kernel.mm.vmstat import (
    NR_FOLL_PIN_ACQUIRED,
    mod_node_page_state,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


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

    v5.7 (check_and_migrate_cma_pages) only refused CMA pages.  The longterm_pinnable
    hook replaces the test.
    """
    if k.hooks.longterm_pinnable is not None:
        return k.hooks.longterm_pinnable(k, page)
    return longterm_pinnable_test(k, page)


def longterm_pinnable_test(k: Kernel, page: int) -> bool:
    """The profile's own test: what the longterm_pinnable hook replaces."""
    pool = pool_of(k.free_area, page)
    if pool == "cma" and k.profile.longterm_migrates_cma:
        return False
    if is_zero_page(k, page):
        return True
    return not (pool == "movable" and k.profile.longterm_migrates_movable)


def pin_step(label: str, reads: Footprint, writes: Footprint, design: bool) -> Point:
    """A pin-accounting step; with a design's hook in it, of unknown footprint (a design's own)."""
    return Point(label) if design else Point(label, reads=reads, writes=writes)


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
        # a pin goes on to folio_test_large (folio_order) before its next yield
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


def record_pins(k: Kernel, folio: int, refs: int) -> bool:
    """The profile's pin accounting for `refs` references a grab took: pin_record's own body.

    A large folio's exact pincount (6.1 page[1], 5.7 page[2]), else GUP_PIN_COUNTING_BIAS - 1
    more per reference.  NR_FOLL_PIN_ACQUIRED is no part of it: the grab counts it itself.
    """
    m = k.mem
    if has_exact_pincount(k, folio):
        m.pincount[folio + k.profile.pincount_page] += refs
    else:
        page_ref_add(m, folio, refs * (k.profile.pin_bias - 1))
    return True


def _design_pins(k: Kernel, folio: int, refs: int) -> bool:
    """A design's pin accounting (hooks.pin_record), in the step the kernel does its own."""
    hook = k.hooks.pin_record
    assert hook is not None
    return hook(k, folio, refs)


def _refused(k: Kernel, folio: int, refs: int) -> Generator[Yield, None, None]:
    """A design refused the pin: drop the `refs` references the grab took."""
    yield Point("pin_record:refused", reads=put_reads(folio), writes=put_writes(k, folio))
    folio_put_refs(k, folio, refs)


def _pin_folio(k: Kernel, folio: int, refs: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/gup.c try_grab_folio 164-176: the pin on top of try_get_folio's `refs`.

    False when a design refused it (its references are dropped again).
    """
    m = k.mem
    design = k.hooks.pin_record is not None
    if has_exact_pincount(k, folio):
        # :165 atomic_add(refs, folio_pincount_ptr(folio))
        yield pin_step("pin:pincount", None, pin_key(k, folio), design)
        if not design:
            m.pincount[folio + k.profile.pincount_page] += refs
    else:
        # :167-168 folio_ref_add(folio, refs * (GUP_PIN_COUNTING_BIAS - 1))
        yield pin_step("pin:bias", None, ref_key(folio), design)
        if not design:
            page_ref_add(m, folio, refs * (k.profile.pin_bias - 1))
    if design and not _design_pins(k, folio, refs):
        yield from _refused(k, folio, refs)
        return False
    # :176 node_stat_mod_folio(folio, NR_FOLL_PIN_ACQUIRED, refs)
    yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, refs)
    return True


def try_grab_folio(
    k: Kernel, page: int, refs: int, flags: int
) -> Generator[Yield, None, int | None]:
    """v6.1 mm/gup.c try_grab_folio (125-183): the folio, or None; v5.7: try_grab_compound_head."""
    if k.profile.pin_v5_7_order:
        return (yield from try_grab_compound_head(k, page, refs, flags))
    if flags & FOLL_GET:
        return (yield from try_get_folio(k, page, refs))
    if flags & FOLL_PIN:
        # :136-137 no pin on the zero page
        if k.profile.zero_page_pin_noop and is_zero_page(k, page):
            return compound_head(k.mem, page)
        # :144-146 FOLL_LONGTERM of a page that may not stay here: the slow path migrates it
        if flags & FOLL_LONGTERM and not is_longterm_pinnable_page(k, page):
            return None
        # :152-154
        folio = yield from try_get_folio(k, page, refs)
        if folio is None:
            return None
        return folio if (yield from _pin_folio(k, folio, refs)) else None
    warn_on_once(k, "mm/gup.c try_grab_folio without FOLL_GET or FOLL_PIN")
    return None


def try_get_compound_head(
    k: Kernel, page: int, refs: int, design: bool = False
) -> Generator[Yield, None, int | None]:
    """v5.7 mm/gup.c:52-61 try_get_compound_head: the head with `refs` added unless its count is 0.

    page_cache_add_speculative (v5.7 include/linux/pagemap.h:184, not CONFIG_TINY_RCU) is
    page_ref_add_unless(head, refs, 0); unlike 6.1's try_get_folio nothing looks at the
    head again afterwards.  ``design``: the caller runs a design's pin accounting in the
    add's step (the footprint is then unknown).
    """
    m = k.mem
    head = compound_head(m, page)
    yield Point("try_get_compound_head:read", reads=ref_key(head))
    # :56-57
    if int(m.refcount[head]) < 0:
        warn_on_once(k, "mm/gup.c try_get_compound_head refcount < 0")
        return None
    # :58-59, then try_grab_compound_head's hpage_pincount_available(head) before its next yield
    yield pin_step(
        "try_get_compound_head:add", ref_key(head) | order_keys(head), ref_key(head), design
    )
    if not page_ref_add_unless(m, head, refs, 0):
        return None
    return head


def try_grab_compound_head(
    k: Kernel, page: int, refs: int, flags: int
) -> Generator[Yield, None, int | None]:
    """v5.7 mm/gup.c:82-126 try_grab_compound_head: a small page's pin is one add of
    refs * GUP_PIN_COUNTING_BIAS (:107-110); a large one's refs, then its exact pincount."""
    m = k.mem
    if flags & FOLL_GET:
        return (yield from try_get_compound_head(k, page, refs))
    if flags & FOLL_PIN:
        orig_refs = refs
        # :95-97 FOLL_LONGTERM of a CMA page: the slow path migrates it
        if flags & FOLL_LONGTERM and not is_longterm_pinnable_page(k, page):
            return None
        # :107-108 hpage_pincount_available(page), on the page as it is before the grab
        yield Point(
            "hpage_pincount_available", reads=head_key(page) | order_keys(peek_head(m, page))
        )
        design = k.hooks.pin_record is not None
        exact = has_exact_pincount(k, compound_head(m, page))
        if not exact and not design:
            refs *= k.profile.pin_bias
        # :110-112; a design accounts a small page's pin in this step, where the bias goes
        head = yield from try_get_compound_head(k, page, refs, design and not exact)
        if head is None:
            return None
        if design and not exact:
            if not _design_pins(k, head, refs):
                yield from _refused(k, head, refs)
                return None
        elif has_exact_pincount(k, head):
            # :114-115 hpage_pincount_add(head, refs)
            yield pin_step("pin:pincount", None, pin_key(k, head), design)
            if not design:
                m.pincount[head + k.profile.pincount_page] += refs
            elif not _design_pins(k, head, refs):
                yield from _refused(k, head, refs)
                return None
        # :117-118 mod_node_page_state(NR_FOLL_PIN_ACQUIRED, orig_refs)
        yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, orig_refs)
        return head
    warn_on_once(k, "mm/gup.c try_grab_compound_head without FOLL_GET or FOLL_PIN")
    return None


def try_grab_page(k: Kernel, page: int, flags: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/gup.c try_grab_page (219-255): one reference or pin; False when the count is <= 0.

    v5.7 mm/gup.c:148-179 try_grab_page: see _pin_page_5_7.  v4.4 took get_page()
    unconditionally (the <= 0 refusal is v5.1 8fde12ca79af).
    """
    m = k.mem
    folio = compound_head(m, page)
    if flags & FOLL_GET and flags & FOLL_PIN:
        warn_on_once(k, "mm/gup.c try_grab_page FOLL_GET|FOLL_PIN")
    # 6.1 :224 for both; v5.7 :153 try_get_page and :159 (the same test)
    if k.profile.refcount_guard:
        yield Point("try_grab_page:read", reads=ref_key(folio))
        if int(m.refcount[folio]) <= 0:
            warn_on_once(k, "mm/gup.c try_grab_page refcount <= 0")
            return False
    if flags & FOLL_GET:
        # :228 folio_ref_inc
        yield Point("try_grab_page:get", writes=ref_key(folio))
        page_ref_add(m, folio, 1)
    elif flags & FOLL_PIN:
        # :234-235 no pin on the zero page
        if k.profile.zero_page_pin_noop and is_zero_page(k, page):
            return True
        if k.profile.pin_v5_7_order:
            return (yield from _pin_page_5_7(k, folio))
        design = k.hooks.pin_record is not None
        if has_exact_pincount(k, folio):
            # :243-244 folio_ref_add(folio, 1), then atomic_add(1, folio_pincount_ptr(folio))
            yield Point("pin:ref", writes=ref_key(folio))
            page_ref_add(m, folio, 1)
            yield pin_step("pin:pincount", None, pin_key(k, folio), design)
            if not design:
                m.pincount[folio + k.profile.pincount_page] += 1
        else:
            # :246 folio_ref_add(folio, GUP_PIN_COUNTING_BIAS); a design's accounting goes in
            # this step, on top of the one reference it takes
            yield pin_step("pin:bias", None, ref_key(folio), design)
            page_ref_add(m, folio, 1 if design else k.profile.pin_bias)
        if design and not _design_pins(k, folio, 1):
            yield from _refused(k, folio, 1)
            return False
        # :249 node_stat_mod_folio(folio, NR_FOLL_PIN_ACQUIRED, 1)
        yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, 1)
    return True


def _pin_page_5_7(k: Kernel, head: int) -> Generator[Yield, None, bool]:
    """v5.7 mm/gup.c:162-175 try_grab_page, FOLL_PIN: the exact pincount first, then the ref.

    False when a design refused the pin.
    """
    m = k.mem
    design = k.hooks.pin_record is not None
    exact = has_exact_pincount(k, head)
    refs = 1
    if exact:
        # :162-163 hpage_pincount_add(page, 1)
        yield pin_step("pin:pincount", None, pin_key(k, head), design)
        if not design:
            m.pincount[head + k.profile.pincount_page] += 1
        elif not _design_pins(k, head, 1):
            return False  # before any reference was taken
    elif not design:
        refs = k.profile.pin_bias
    # :173 page_ref_add(page, refs); a design accounts a small page's pin in this step
    yield pin_step("pin:ref", None, ref_key(head), design and not exact)
    page_ref_add(m, head, refs)
    if design and not exact and not _design_pins(k, head, 1):
        yield from _refused(k, head, 1)
        return False
    # :175 mod_node_page_state(NR_FOLL_PIN_ACQUIRED, 1)
    yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, 1)
    return True


def put_reads(folio: int) -> frozenset[Hashable]:
    """What dropping references on a folio reads: the count, and free_folio's tests."""
    return ref_key(folio) | free_reads(folio)


def put_writes(k: Kernel, folio: int) -> frozenset[Hashable]:
    """What dropping references on a folio may write: the count, and if it is freed what
    freeing writes."""
    return ref_key(folio) | free_writes(k, folio)


def folio_test_anon(k: Kernel, folio: int) -> bool:
    """v6.1 include/linux/page-flags.h folio_test_anon: low bit of ->mapping."""
    return bool(int(k.mem.mapping[folio]) & PAGE_MAPPING_ANON)
