"""`foll-pin-bias-v4`: FOLL_PIN counted as GUP_PIN_COUNTING_BIAS in _refcount, huge pages too.

John Hubbard, "[PATCH v4 07/12] mm/gup: track FOLL_PIN pages" (Feb 2020; the series
../shared/seeds/003_c4154a1185dad986.txt records as merged, before 08/12 gave compound
pages an exact count).  Tracking only: no consumer looks at the count.  The kernel is
the pseudo-profile foll-pin-bias-v4 (pinlab.kernel.profiles), whose pin paths are the
patch's; this design adds no hooks.

==========================  ==================================================
kernel function             what the patch does there (in the profile)
==========================  ==================================================
try_grab_page               FOLL_PIN adds GUP_PIN_COUNTING_BIAS (1024) to the
                            head's _refcount, whatever the folio's size
put_compound_head /         FOLL_PIN release takes the bias off again
unpin_user_page
page_maybe_dma_pinned       _refcount >= GUP_PIN_COUNTING_BIAS
==========================  ==================================================

Costs: no new bits (the bias rides in _refcount), nothing per pin; the price is
false positives and a 1 GiB page's _refcount reaching INT_MAX after 8 whole pins.
"""

from __future__ import annotations

from pinlab.designs.base import Costs, Design
from pinlab.designs.drivers import PIN
from pinlab.kernel.mm.pincount import maybe_pinned_test

DESIGN = Design(
    name="foll-pin-bias-v4",
    year=2020,
    source="seed 003: [PATCH v4 07/12] mm/gup: track FOLL_PIN pages",
    idea="pin_user_pages adds a bias of 1024 to _refcount, for huge pages too; "
    "maybe pinned when _refcount >= 1024",
    base="foll-pin-bias-v4",
    gup=PIN,
    release="unpin_user_pages",
    costs=Costs(page_bits=0, pin_bytes=0, always_on_bytes_per_page=0),
    maybe_pinned=maybe_pinned_test,
)
