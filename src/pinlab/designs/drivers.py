"""How a design's drivers take pages: the gup call it names."""

from __future__ import annotations

from collections.abc import Generator

from pinlab.interleave import Yield
from pinlab.kernel.mm.gup import get_user_pages, pin_user_pages
from pinlab.kernel.mm.gup_page import Pages
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
