"""Hook points where the historical pin-tracking designs touched the kernel.

Each field is None for the profile's own behaviour, or a design's replacement.
The kernel functions named in the comments call the hook at exactly the place
the real patches changed, and nowhere else: a hook replaces one test or one piece
of accounting, inside the kernel's own step for it, never the surrounding kernel
steps (the speculative reference, the split retry, the /proc/vmstat pin counters,
fork's order of steps).  Each names the function that is the profile's own body
for it, which a hook calling it leaves unchanged, step by step
(tests/kernel/test_hooks_neutral.py).  A hook is a
plain module-level function (kernel/walk.py digests hooks by qualified name).
The consumers (writeback, reclaim and try_to_unmap, migration, truncate) gain
their hook points as the designs that patched them arrive (pinlab.designs).
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

    # try_grab_folio / try_grab_page, FOLL_PIN (v6.1 mm/gup.c; v5.7
    # try_grab_compound_head, try_grab_page): account as pins the `refs` references
    # the grab takes on the folio, in the step where the profile adds the exact
    # pincount, or the GUP_PIN_COUNTING_BIAS (that step then takes just the `refs`
    # references).  try_get_folio's add-unless-zero and split retry, and
    # NR_FOLL_PIN_ACQUIRED, stay the kernel's; False refuses the grab, which drops
    # the references again.  Own body: gup_grab.record_pins.
    pin_record: Callable[[Kernel, int, int], bool] | None = None
    # gup_put_folio / unpin_user_page, FOLL_PIN (v6.1 mm/gup.c; v5.7 put_compound_head,
    # unpin_user_page): undo the accounting of `refs` pins, in the step where the
    # profile takes off the exact pincount, or the bias (with the references: that
    # step then drops just `refs`).  NR_FOLL_PIN_RELEASED stays the kernel's.  Own
    # body: gup_put.release_pins.
    pin_release: Callable[[Kernel, int, int], None] | None = None
    # folio_maybe_dma_pinned's test on a folio head (v6.1 include/linux/mm.h).  Own
    # body: pincount.maybe_pinned_test.
    maybe_dma_pinned: Callable[[Kernel, int], bool] | None = None
    # __get_user_pages, after follow_page_mask found `page` and before the grab:
    # 0 to go on, or a -errno (Hillf's page_try_gup_pin refusal, v2 zone_gup_lock).
    # Own body: return 0.
    gup_page: Callable[[Kernel, VmArea, int, int], int] | None = None
    # copy_present_pte: whether fork must give the child a copy of this anon
    # page now (v6.1 mm/memory.c via page_needs_cow_for_dma); the profile's order of
    # fork's steps stays (v4.4 / v5.7 write-protect first).  Own body:
    # fork_copy.fork_copy_test.
    fork_must_copy: Callable[[Kernel, MmStruct, int], bool] | None = None
    # is_longterm_pinnable_page: may this page be pinned FOLL_LONGTERM where it
    # lies, or must check_and_migrate_movable_pages move it first (v6.1
    # include/linux/mm.h, called from try_grab_folio and mm/gup.c).  Own body:
    # gup_grab.longterm_pinnable_test.
    longterm_pinnable: Callable[[Kernel, int], bool] | None = None
    # __get_user_pages as it returns, and v4.4 arch/x86 get_user_pages_fast after its
    # walk: called once per page the call returns, each its own step, after the whole
    # walk ("[PATCH 2/2] mm: set PG_dma_pinned on get_user_pages*()", June 2018: the
    # loop at __get_user_pages' out: label and the one after gup-fast's walk).  Own
    # body: nothing.
    gup_returned: Callable[[Kernel, int], None] | None = None
    # v4.4.178 mm/rmap.c try_to_unmap_one, on entry, before it looks up the PTE (the
    # same patch's mm/rmap.c hunk, after v4.18's huge-PMD split block, which 4.4 does
    # not have): True fails the rmap walk (v4.4: SWAP_FAIL).  Own body: return False.
    unmap_refused: Callable[[Kernel, int], bool] | None = None
