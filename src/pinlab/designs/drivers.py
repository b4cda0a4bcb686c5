"""How a design's drivers take and give back pages: the gup and release calls it names."""

from __future__ import annotations

from collections.abc import Generator

from pinlab.interleave import Yield
from pinlab.kernel.mm.gup import get_user_pages, pin_user_pages
from pinlab.kernel.mm.gup_page import Pages
from pinlab.kernel.mm.gup_unpin import put_page_api, unpin_user_pages
from pinlab.kernel.mm.types import MmStruct
from pinlab.kernel.state import Kernel

# Design.gup values: the kernel call a driver of that design makes
GET = "get_user_pages"
PIN = "pin_user_pages"


def driver_gup(
    k: Kernel, gup: str, mm: MmStruct, start: int, nr: int, flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """The design's gup call (the caller holds mmap_lock, as drivers do)."""
    if gup == PIN:
        return (yield from pin_user_pages(k, mm, start, nr, flags, pages))
    if gup == GET:
        return (yield from get_user_pages(k, mm, start, nr, flags, pages))
    raise ValueError(f"no driver call {gup!r}")


def driver_release(k: Kernel, gup: str, pages: Pages, nr: int) -> Generator[Yield, None, None]:
    """Give back what driver_gup took: unpin_user_pages, or put_page per page."""
    if gup == PIN:
        yield from unpin_user_pages(k, pages, nr)
        return
    for page in pages[:nr]:
        yield from put_page_api(k, int(page))
