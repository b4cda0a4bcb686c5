"""Hook points where the historical pin-tracking designs touched the kernel.

Each field is None for the profile's own behaviour, or a design's replacement.
The kernel functions named in the comments call the hook at exactly the place
the real patches changed, and nowhere else.  Consumers added later (writeback,
reclaim/try_to_unmap, general migration, truncate) bring their own hook points with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pinlab.kernel.mm.types import MmStruct, VmArea
    from pinlab.kernel.state import Kernel


@dataclass(slots=True)
class Hooks:
    """Design overrides; None means the profile's kernel behaviour."""

    # try_grab_page / try_grab_folio, FOLL_PIN branch: record `refs` pins on a
    # folio; False refuses the grab (v6.1 mm/gup.c).
    pin_record: Callable[[Kernel, int, int], bool] | None = None
    # gup_put_folio, FOLL_PIN branch: release `refs` pins (v6.1 mm/gup.c).
    pin_release: Callable[[Kernel, int, int], None] | None = None
    # folio_maybe_dma_pinned (v6.1 include/linux/mm.h).
    maybe_dma_pinned: Callable[[Kernel, int], bool] | None = None
    # __get_user_pages, after follow_page_mask found `page` and before the grab:
    # 0 to go on, or a -errno (Hillf's page_try_gup_pin refusal, v2 zone_gup_lock).
    gup_page: Callable[[Kernel, VmArea, int, int], int] | None = None
    # copy_present_pte: whether fork must give the child a copy of this anon
    # page now (v6.1 mm/memory.c via page_needs_cow_for_dma).
    fork_must_copy: Callable[[Kernel, MmStruct, int], bool] | None = None
    # is_longterm_pinnable_page: may this page be pinned FOLL_LONGTERM where it
    # lies, or must check_and_migrate_movable_pages move it first (v6.1
    # include/linux/mm.h, called from try_grab_folio and mm/gup.c).
    longterm_pinnable: Callable[[Kernel, int], bool] | None = None
