"""`legacy-get`: FOLL_GET references only, nothing tracked, nothing answered (the 4.4 world).

The kernel of the 2018 customer bug as it was (../shared/seeds/002_78cd4012e2cb9fa3.txt):
drivers take pages with get_user_pages() and give them back with set_page_dirty_lock()
and put_page(); a pinned page is just a page with one more reference, so no consumer
can tell it from any other.  No hooks, no state, no cost.
"""

from __future__ import annotations

from pinlab.designs.base import Costs, Design
from pinlab.designs.drivers import GET

DESIGN = Design(
    name="legacy-get",
    year=2016,
    source="seed 002: the 4.4 kernel of the customer bug, before any design",
    idea="plain get_user_pages references; nothing records a pin",
    base="4.4",
    gup=GET,
    release="set_page_dirty_lock + put_page",
    costs=Costs(page_bits=0, pin_bytes=0, always_on_bytes_per_page=0),
)
