"""`foll-pin-5.7`: FOLL_PIN as merged (v5.7): the bias for small pages, an exact pincount for large.

The series ../shared/seeds/003_c4154a1185dad986.txt describes, as released in v5.7:
GUP_PIN_COUNTING_BIAS in _refcount for order-0 and order-1 pages, and for compound
pages of order >= 2 an exact count, hpage_pinned_refcount, in the third struct page
(v5.7.14 include/linux/mm.h hpage_pincount_available, page_maybe_dma_pinned).  Tracking
only: in v5.7 no consumer acts on the answer (fork's copy came in v5.9).  The kernel is
the 5.7 profile itself; this design adds no hooks.

==========================  ==================================================
kernel function             what v5.7 does there (in the profile)
==========================  ==================================================
try_grab_compound_head /    FOLL_PIN: +refs to hpage_pinned_refcount and to
try_grab_page               _refcount for order >= 2; else + refs * 1024
put_compound_head /         the same taken off
unpin_user_page
page_maybe_dma_pinned       exact count > 0 where available, else
                            _refcount >= GUP_PIN_COUNTING_BIAS
==========================  ==================================================

Costs: hpage_pinned_refcount lives in a tail page of each large folio, so no struct
page grows and nothing is spent per pin.
"""

from __future__ import annotations

from pinlab.designs.base import Costs, Design
from pinlab.designs.drivers import PIN
from pinlab.kernel.mm.pincount import maybe_pinned_test

DESIGN = Design(
    name="foll-pin-5.7",
    year=2020,
    source="seed 003: the FOLL_PIN series as merged in v5.7",
    idea="pin_user_pages: bias of 1024 in _refcount for small pages, exact pincount "
    "in the third struct page of large ones",
    base="5.7",
    gup=PIN,
    release="unpin_user_pages",
    costs=Costs(page_bits=0, pin_bytes=0, always_on_bytes_per_page=0),
    maybe_pinned=maybe_pinned_test,
)
