"""`foll-pin-6.1`: FOLL_PIN with the responses the kernel grew by v6.1 (the 6.1 profile).

The FOLL_PIN tracking of ../shared/seeds/003_c4154a1185dad986.txt (bias for small
folios; compound_pincount for every large folio since v5.18, 5232c63f46fd), and what
later kernels do with a maybe-pinned page, each modelled in the 6.1 profile and cited
there:

==============================  ==================================================
kernel function (v6.1.192)      response
==============================  ==================================================
copy_present_pte /              fork copies a maybe-pinned anon page to the child
page_needs_cow_for_dma          at once (mm/memory.c, include/linux/mm.h; the early
                                COW of pinned pages began in v5.9, 70e806e4e645)
gup_must_unshare,               a read-only pin of a shared anon page unshares it
PageAnonExclusive               first (mm/gup.c, mm/internal.h; v5.19)
check_and_migrate_movable_pages FOLL_LONGTERM pins move off ZONE_MOVABLE and CMA
                                first (mm/gup.c)
folio_maybe_dma_pinned          compound_pincount > 0 for large folios, else
                                _refcount >= GUP_PIN_COUNTING_BIAS
==============================  ==================================================

This design adds no hooks: the kernel is the 6.1 profile itself.  Writeback and
reclaim of a pinned file page are those of 6.1, which pinlab does not model yet.
"""

from __future__ import annotations

from pinlab.designs.base import Costs, Design
from pinlab.designs.drivers import PIN
from pinlab.kernel.mm.pincount import maybe_pinned_test

DESIGN = Design(
    name="foll-pin-6.1",
    year=2022,
    source="seed 003's FOLL_PIN, with v5.9-v6.1's fork copy, unsharing and long-term migration",
    idea="pin_user_pages as in v6.1: fork copies maybe-pinned anon pages, read pins unshare, "
    "long-term pins migrate off movable memory",
    base="6.1",
    gup=PIN,
    release="unpin_user_pages",
    costs=Costs(page_bits=0, pin_bytes=0, always_on_bytes_per_page=0),
    maybe_pinned=maybe_pinned_test,
)
