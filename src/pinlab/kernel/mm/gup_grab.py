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
from pinlab.kernel.mm.memmap import PAGE_MAPPING_ANON, compound_head, peek_head
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
    """The profile's pin accounting for `refs` references a grab already took, in one go.

    What pin_record replaces (hooks.py): a large folio's exact pincount (6.1 page[1],
    5.7 page[2]), else GUP_PIN_COUNTING_BIAS - 1 more per reference; NR_FOLL_PIN_ACQUIRED.
    """
    m = k.mem
    if has_exact_pincount(k, folio):
        m.pincount[folio + k.profile.pincount_page] += refs
    else:
        page_ref_add(m, folio, refs * (k.profile.pin_bias - 1))
    if k.profile.vmstat_foll_pin:
        mod_node_page_state(k.vmstat, NR_FOLL_PIN_ACQUIRED, refs)
    return True


def _hook_pin(k: Kernel, folio: int, refs: int) -> Generator[Yield, None, bool]:
    """A design's pin accounting (hooks.pin_record) on `refs` references already taken.

    One step of unknown footprint; a refusal drops those references again.
    """
    hook = k.hooks.pin_record
    assert hook is not None
    yield "pin_record"
    if hook(k, folio, refs):
        return True
    yield Point("pin_record:refused", reads=put_reads(folio), writes=put_writes(k, folio))
    folio_put_refs(k, folio, refs)
    return False


def _pin_folio(k: Kernel, folio: int, refs: int) -> Gen:
    """v6.1 mm/gup.c try_grab_folio 164-176: the pin on top of try_get_folio's `refs`."""
    m = k.mem
    if has_exact_pincount(k, folio):
        # :165 atomic_add(refs, folio_pincount_ptr(folio))
        yield Point("pin:pincount", writes=pin_key(k, folio))
        m.pincount[folio + k.profile.pincount_page] += refs
    else:
        # :167-168 folio_ref_add(folio, refs * (GUP_PIN_COUNTING_BIAS - 1))
        yield Point("pin:bias", writes=ref_key(folio))
        page_ref_add(m, folio, refs * (k.profile.pin_bias - 1))
    # :176 node_stat_mod_folio(folio, NR_FOLL_PIN_ACQUIRED, refs)
    yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, refs)
    return None


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
        if k.hooks.pin_record is not None:
            return folio if (yield from _hook_pin(k, folio, refs)) else None
        yield from _pin_folio(k, folio, refs)
        return folio
    warn_on_once(k, "mm/gup.c try_grab_folio without FOLL_GET or FOLL_PIN")
    return None


def try_get_compound_head(k: Kernel, page: int, refs: int) -> Generator[Yield, None, int | None]:
    """v5.7 mm/gup.c:52-61 try_get_compound_head: the head with `refs` added unless its count is 0.

    page_cache_add_speculative (v5.7 include/linux/pagemap.h:184, not CONFIG_TINY_RCU) is
    page_ref_add_unless(head, refs, 0); unlike 6.1's try_get_folio nothing looks at the
    head again afterwards.
    """
    m = k.mem
    head = compound_head(m, page)
    yield Point("try_get_compound_head:read", reads=ref_key(head))
    # :56-57
    if int(m.refcount[head]) < 0:
        warn_on_once(k, "mm/gup.c try_get_compound_head refcount < 0")
        return None
    # :58-59, then try_grab_compound_head's hpage_pincount_available(head) before its next yield
    yield Point(
        "try_get_compound_head:add",
        reads=ref_key(head) | order_keys(head),
        writes=ref_key(head),
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
        if k.hooks.pin_record is not None:
            head = yield from try_get_compound_head(k, page, refs)
            if head is None:
                return None
            return head if (yield from _hook_pin(k, head, refs)) else None
        # :107-108 hpage_pincount_available(page), on the page as it is before the grab
        yield Point(
            "hpage_pincount_available", reads=head_key(page) | order_keys(peek_head(m, page))
        )
        if not has_exact_pincount(k, compound_head(m, page)):
            refs *= k.profile.pin_bias
        # :110-112
        head = yield from try_get_compound_head(k, page, refs)
        if head is None:
            return None
        # :114-115 hpage_pincount_add(head, refs)
        if has_exact_pincount(k, head):
            yield Point("pin:pincount", writes=pin_key(k, head))
            m.pincount[head + k.profile.pincount_page] += refs
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
        if k.hooks.pin_record is not None:
            yield Point("try_grab_page:get", writes=ref_key(folio))
            page_ref_add(m, folio, 1)
            return (yield from _hook_pin(k, folio, 1))
        if k.profile.pin_v5_7_order:
            yield from _pin_page_5_7(k, folio)
            return True
        if has_exact_pincount(k, folio):
            # :243-244 folio_ref_add(folio, 1), then atomic_add(1, folio_pincount_ptr(folio))
            yield Point("pin:ref", writes=ref_key(folio))
            page_ref_add(m, folio, 1)
            yield Point("pin:pincount", writes=pin_key(k, folio))
            m.pincount[folio + k.profile.pincount_page] += 1
        else:
            # :246 folio_ref_add(folio, GUP_PIN_COUNTING_BIAS)
            yield Point("pin:bias", writes=ref_key(folio))
            page_ref_add(m, folio, k.profile.pin_bias)
        # :249 node_stat_mod_folio(folio, NR_FOLL_PIN_ACQUIRED, 1)
        yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, 1)
    return True


def _pin_page_5_7(k: Kernel, head: int) -> Gen:
    """v5.7 mm/gup.c:162-175 try_grab_page, FOLL_PIN: the exact pincount first, then the ref."""
    m = k.mem
    refs = 1
    if has_exact_pincount(k, head):
        # :162-163 hpage_pincount_add(page, 1)
        yield Point("pin:pincount", writes=pin_key(k, head))
        m.pincount[head + k.profile.pincount_page] += 1
    else:
        refs = k.profile.pin_bias
    # :173 page_ref_add(page, refs)
    yield Point("pin:ref", writes=ref_key(head))
    page_ref_add(m, head, refs)
    # :175 mod_node_page_state(NR_FOLL_PIN_ACQUIRED, 1)
    yield from node_stat_mod_folio(k, NR_FOLL_PIN_ACQUIRED, 1)
    return None


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
            # a design's unpin accounting (one step of unknown footprint); the references
            # themselves go below, as the kernel drops them
            yield "pin_release"
            if run:
                folio, run, heads = compound_head(m, run[0]), (), frozenset()
            k.hooks.pin_release(k, folio, refs)
        else:
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


def release_pins(k: Kernel, folio: int, refs: int) -> None:
    """The profile's unpin accounting for `refs` pins, in one go; the caller then drops
    `refs` references.  What pin_release replaces (hooks.py): NR_FOLL_PIN_RELEASED, and
    the exact pincount, else GUP_PIN_COUNTING_BIAS - 1 per pin off the refcount."""
    m = k.mem
    if k.profile.vmstat_foll_pin:
        mod_node_page_state(k.vmstat, NR_FOLL_PIN_RELEASED, refs)
    if has_exact_pincount(k, folio):
        m.pincount[folio + k.profile.pincount_page] -= refs
    else:
        page_ref_add(m, folio, -refs * (k.profile.pin_bias - 1))


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
