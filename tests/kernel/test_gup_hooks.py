"""Design hooks replace the profile's behaviour at the places the designs touched the kernel."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest
from gupstate import anon_vma, fault_anon, fault_thp, new_mm, pin, unpin

from pinlab.interleave import run_to_completion
from pinlab.kernel import errno
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_PIN
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE
from pinlab.kernel.mm.pincount import folio_maybe_dma_pinned, folio_pincount
from pinlab.kernel.mm.types import VmArea
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED
from pinlab.kernel.state import Kernel, boot

BASE = PMD_SIZE


def _setup(n: int = 3):  # type: ignore[no-untyped-def]
    k = boot("6.1")
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, 2 * PMD_SIZE)
    return k, mm, vma, [fault_anon(k, mm, vma, BASE + i * PAGE_SIZE) for i in range(n)]


def test_gup_page_hook_refuses_before_the_grab() -> None:
    """__get_user_pages: the hook sees each page follow_page_mask found; a -errno from it
    ends the walk before try_grab_page (partial count after the first page)."""
    k, mm, _, got = _setup()
    seen: list[tuple[int, int]] = []

    def refuse_third(k: Kernel, vma: VmArea, page: int, flags: int) -> int:
        seen.append((page, flags & FOLL_PIN))
        return -errno.EAGAIN if page == got[2] else 0

    k.hooks.gup_page = refuse_third
    before = [int(k.mem.refcount[p]) for p in got]
    ret, pages = pin(k, mm, BASE, 3)
    assert (ret, pages) == (2, got[:2])
    assert seen == [(p, FOLL_PIN) for p in got]
    assert int(k.mem.refcount[got[2]]) == before[2]
    seen.clear()
    ret, _ = pin(k, mm, BASE + 2 * PAGE_SIZE, 1)
    assert ret == -errno.EAGAIN


def test_gup_page_hook_on_thp_subpage() -> None:
    """follow_trans_huge_pmd: the hook sees the subpage, before the head is grabbed."""
    k = boot("6.1")
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, PMD_SIZE)
    head = fault_thp(k, mm, vma, BASE)
    seen: list[int] = []
    k.hooks.gup_page = lambda k, vma, page, flags: seen.append(page) or -errno.EBUSY
    assert pin(k, mm, BASE + 7 * PAGE_SIZE, 1)[0] == -errno.EBUSY
    assert seen == [head + 7]
    assert folio_pincount(k, head) == 0


def test_pin_record_and_release_replace_accounting() -> None:
    """try_grab_page / try_grab_folio / gup_put_folio FOLL_PIN branches call the design's
    accounting instead of the bias (slow path and gup-fast alike); the kernel's own
    reference is still taken and dropped around it."""
    k, mm, _, got = _setup()
    pins: dict[int, int] = {}

    def record(k: Kernel, folio: int, refs: int) -> bool:
        pins[folio] = pins.get(folio, 0) + refs
        return True

    def release(k: Kernel, folio: int, refs: int) -> None:
        pins[folio] -= refs

    k.hooks.pin_record = record
    k.hooks.pin_release = release
    before = [int(k.mem.refcount[p]) for p in got]
    ret, pages = pin(k, mm, BASE, 2)
    assert ret == 2
    fast = page_array(1)
    assert run_to_completion(pin_user_pages_fast(k, mm, BASE + 2 * PAGE_SIZE, 1, 0, fast)) == 1
    assert pins == {got[0]: 1, got[1]: 1, got[2]: 1}
    assert [int(k.mem.refcount[p]) for p in got] == [n + 1 for n in before]
    # NR_FOLL_PIN_ACQUIRED stays the kernel's own count (hooks.py: its own patch, v5.7)
    assert k.vmstat.counters.get(NR_FOLL_PIN_ACQUIRED, 0) == 3
    unpin(k, pages)
    run_to_completion(unpin_user_pages(k, fast, 1))
    assert set(pins.values()) == {0}
    assert [int(k.mem.refcount[p]) for p in got] == before


def test_pin_record_refusal_fails_the_grab() -> None:
    """A design's refusal in try_grab_page makes follow_page_pte return -ENOMEM."""
    k, mm, _, _ = _setup(1)
    k.hooks.pin_record = lambda k, folio, refs: False
    assert pin(k, mm, BASE, 1)[0] == -errno.ENOMEM


def test_maybe_dma_pinned_hook_replaces_the_test() -> None:
    """folio_maybe_dma_pinned answers with the design's test."""
    k, _, _, got = _setup(1)
    assert not folio_maybe_dma_pinned(k, got[0])
    k.hooks.maybe_dma_pinned = lambda k, folio: folio == got[0]
    assert folio_maybe_dma_pinned(k, got[0])


@pytest.mark.parametrize("fine", [False, True], ids=["range", "page-by-page"])
def test_longterm_pinnable_hook_drives_the_migration_decision(fine: bool) -> None:
    """is_longterm_pinnable_page -> check_and_migrate_movable_pages: pages the design will not
    leave in place are migrated before the long-term pin (ZONE_NORMAL pages too)."""
    k, mm, _, got = _setup(2)
    k.fine_grained = fine
    refused = {got[1]}
    k.hooks.longterm_pinnable = lambda k, page: page not in refused
    ret, pages = pin(k, mm, BASE, 2, FOLL_LONGTERM)
    assert ret == 2
    assert pages[0] == got[0] and pages[1] != got[1]
    assert folio_maybe_dma_pinned(k, pages[1]) and not folio_maybe_dma_pinned(k, got[1])
    unpin(k, pages)
