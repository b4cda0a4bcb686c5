"""Dropping gup references and pins on one folio (v6.1 mm/gup.c gup_put_folio; v5.7
put_compound_head, unpin_user_page).

As in gup_grab.py, a pin_release hook replaces the unpin accounting inside the very step
where the profile does its own.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable, Sequence
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.mm.gup_flags import FOLL_PIN
from pinlab.kernel.mm.gup_grab import (
    is_zero_page,
    node_stat_mod_folio,
    pin_key,
    pin_step,
    put_reads,
    put_writes,
)
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.page_ref import folio_put_refs, page_ref_add
from pinlab.kernel.mm.pincount import has_exact_pincount
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_RELEASED

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def gup_put_folio(
    k: Kernel,
    folio: int,
    refs: int,
    flags: int,
    run: Sequence[int] = (),
    then_reads: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c gup_put_folio 185-199 (v5.7 put_compound_head): drop `refs` gets or pins.

    ``run``: the pages the caller found ``folio`` from with memmap.peek_head only (to
    name footprints): their compound_head is read again, from run[0], after the first
    yield.  ``then_reads``: what the caller reads after this returns, before it yields
    again (footprint only).
    """
    m = k.mem
    heads = frozenset(("page", page, "head") for page in run)
    design = k.hooks.pin_release is not None
    in_put = False  # a design's unpin accounting goes in the put's step
    if flags & FOLL_PIN:
        if k.profile.zero_page_pin_noop and is_zero_page(k, folio):
            return
        # :190
        yield from node_stat_mod_folio(k, NR_FOLL_PIN_RELEASED, refs)
        if run and k.profile.vmstat_foll_pin:  # node_stat_mod_folio yielded
            folio, run, heads = compound_head(m, run[0]), (), frozenset()
        if has_exact_pincount(k, folio):
            # :192 atomic_sub(refs, folio_pincount_ptr(folio))
            yield pin_step("unpin:pincount", None, pin_key(k, folio), design)
            if run:
                folio, run, heads = compound_head(m, run[0]), (), frozenset()
            if design:
                _design_unpins(k, folio, refs)
            else:
                m.pincount[folio + k.profile.pincount_page] -= refs
        elif design:
            # the bias comes off with the references (:194, :198): one step
            in_put = True
        else:
            # :194
            refs *= k.profile.pin_bias
    reads = put_reads(folio) | heads | then_reads
    # :198 folio_put_refs(folio, refs)
    yield pin_step("put:ref", reads, put_writes(k, folio), in_put)
    if run:
        folio = compound_head(m, run[0])
    if in_put:
        _design_unpins(k, folio, refs)
    folio_put_refs(k, folio, refs)


def release_pins(k: Kernel, folio: int, refs: int) -> None:
    """The profile's unpin accounting for `refs` pins: pin_release's own body.

    The exact pincount, else GUP_PIN_COUNTING_BIAS - 1 per pin off the refcount; the caller
    drops the `refs` references, and counts NR_FOLL_PIN_RELEASED itself.
    """
    m = k.mem
    if has_exact_pincount(k, folio):
        m.pincount[folio + k.profile.pincount_page] -= refs
    else:
        page_ref_add(m, folio, -refs * (k.profile.pin_bias - 1))


def _design_unpins(k: Kernel, folio: int, refs: int) -> None:
    """A design's unpin accounting (hooks.pin_release), in the step the kernel does its own."""
    hook = k.hooks.pin_release
    assert hook is not None
    hook(k, folio, refs)


def unpin_folio_vmstat_last(k: Kernel, folio: int) -> Generator[Yield, None, None]:
    """v5.7 mm/gup.c unpin_user_page 225-249: pincount or bias off, put, NR_FOLL_PIN_RELEASED."""
    design = k.hooks.pin_release is not None
    exact = has_exact_pincount(k, folio)
    if exact:
        # :240-241 hpage_pincount_sub(page, 1)
        yield pin_step("unpin:pincount", None, pin_key(k, folio), design)
        if design:
            _design_unpins(k, folio, 1)
        else:
            k.mem.pincount[folio + k.profile.pincount_page] -= 1
    # :245 page_ref_sub_and_test(page, refs): 1, or GUP_PIN_COUNTING_BIAS (:243), which a
    # design's accounting takes off in this same step
    yield pin_step("put:ref", put_reads(folio), put_writes(k, folio), design and not exact)
    if design and not exact:
        _design_unpins(k, folio, 1)
    folio_put_refs(k, folio, 1 if exact or design else k.profile.pin_bias)
    # :248
    yield from node_stat_mod_folio(k, NR_FOLL_PIN_RELEASED, 1)
