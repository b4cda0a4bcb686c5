"""Edges of gup-fast's lockless walk (v6.1 mm/gup.c 2414-3235), each row a kernel fact.

Rows answer bench/mutation.py survivors: the start rounded down to its page, the special
(zero-page) PTE the walk leaves alone, the walk's end test, a folio whose count wrapped
to 0, and 5.7's FOLL_LONGTERM grab of a ZONE_MOVABLE page.  Most run both ways the model
walks (the whole-range step and page by page), since the kernel has only the latter.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import anon_vma, fault_anon, new_mm

from pinlab.interleave import Violation
from pinlab.interleave import run_to_completion as run
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import (
    get_user_pages_fast_only,
    pin_user_pages_fast,
    pin_user_pages_fast_only,
)
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_WRITE
from pinlab.kernel.mm.memory import FAULT_FLAG_USER, handle_mm_fault
from pinlab.kernel.mm.page_alloc import pool_of
from pinlab.kernel.mm.page_ref import page_ref_add
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, TASK_SIZE, get_pte, pte_pfn
from pinlab.kernel.mm.types import VM_NOHUGEPAGE
from pinlab.kernel.state import BootParams, boot

MODES = pytest.mark.parametrize("fine", [False, True], ids=["range", "page-by-page"])


def _ref(k, page: int) -> int:  # type: ignore[no-untyped-def]
    return int(k.mem.refcount[page])


@MODES
def test_unaligned_start_in_the_last_user_page(fine: bool) -> None:
    """v6.1 mm/gup.c internal_get_user_pages_fast :3058 start &= PAGE_MASK before :3062
    access_ok(start, len): an address inside the last user page is that page, not -EFAULT
    (include/asm-generic/access_ok.h __access_ok: addr <= TASK_SIZE_MAX - size)."""
    k = boot("6.1")
    k.fine_grained = fine
    mm = new_mm(k)
    top = TASK_SIZE - PAGE_SIZE
    page = fault_anon(k, mm, anon_vma(k, mm, top, PAGE_SIZE), top)
    pages = page_array(1)
    assert run(pin_user_pages_fast(k, mm, top + 100, 1, 0, pages)) == 1
    assert int(pages[0]) == page


@MODES
def test_unaligned_start_across_a_pte_table(fine: bool) -> None:
    """v6.1 mm/gup.c internal_get_user_pages_fast :3058-3060: the rounded start gives
    end = start + 2 pages, so from 100 bytes into the last page of one PTE table the walk
    takes that page and the first of the next table (gup_pmd_range / gup_pte_range)."""
    k = boot("6.1")
    k.fine_grained = fine
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE + PAGE_SIZE)
    last = 2 * PMD_SIZE - PAGE_SIZE
    got = [fault_anon(k, mm, vma, a) for a in (last, 2 * PMD_SIZE)]
    pages = page_array(2)
    assert run(pin_user_pages_fast_only(k, mm, last + 100, 2, 0, pages)) == 2
    assert pages.tolist() == got


def _zero_page_mapped(k, mm):  # type: ignore[no-untyped-def]
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    vma.vm_flags |= VM_NOHUGEPAGE
    assert run(handle_mm_fault(k, mm, vma, PMD_SIZE, FAULT_FLAG_USER)) == 0
    assert pte_pfn(get_pte(mm.pgtable, PMD_SIZE)) == k.zero_pfn


@MODES
@pytest.mark.parametrize("api", ["get", "pin"])
def test_fast_only_leaves_the_special_zero_page_pte(fine: bool, api: str) -> None:
    """v6.1 mm/gup.c gup_pte_range :2478-2479: a pte_special entry (do_anonymous_page maps
    the zero page special) ends the walk before try_grab_folio: the fast-only APIs return 0
    and the zero page's count is untouched."""
    k = boot("6.1")
    k.fine_grained = fine
    mm = new_mm(k)
    _zero_page_mapped(k, mm)
    before = _ref(k, k.zero_pfn)
    pages = page_array(1)
    call = get_user_pages_fast_only if api == "get" else pin_user_pages_fast_only
    assert run(call(k, mm, PMD_SIZE, 1, 0, pages)) == 0
    assert _ref(k, k.zero_pfn) == before
    flags = int(k.mem.flags[k.zero_pfn])
    assert not flags & k.pf.mask("PG_referenced")


def test_zero_length_fast_only_walks_past_its_end() -> None:
    """v6.1 mm/gup.c gup_pte_range :2520 loops `while (addr != end)` and
    internal_get_user_pages_fast (:3058-3066) has no nr_pages == 0 test: with end == start
    the walk does not stop after one page, so two present PTEs overrun a one-slot pages[]."""
    k = boot("6.1")
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    for i in range(2):
        fault_anon(k, mm, vma, PMD_SIZE + i * PAGE_SIZE)
    with pytest.raises(Violation, match="gup-fast pages\\[\\] overrun: entry 1 of 1"):
        run(pin_user_pages_fast_only(k, mm, PMD_SIZE, 0, 0, page_array(1)))


@MODES
@pytest.mark.parametrize("api", ["get", "pin"])
def test_fast_walk_refuses_a_count_wrapped_to_zero(fine: bool, api: str) -> None:
    """v6.1 mm/gup.c try_get_folio :73 folio_ref_try_add_rcu -> page_ref_add_unless(page,
    refs, 0) (include/linux/page_ref.h): a mapped page whose count came round to 0 (2^32
    plain references wrap the atomic_t) is not taken; the walk stops, fast-only returns 0."""
    k = boot("6.1")
    k.fine_grained = fine
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    vma.vm_flags |= VM_NOHUGEPAGE
    page = fault_anon(k, mm, vma, PMD_SIZE)
    page_ref_add(k.mem, page, 2**32 - _ref(k, page))
    assert _ref(k, page) == 0
    pages = page_array(1)
    call = get_user_pages_fast_only if api == "get" else pin_user_pages_fast_only
    assert run(call(k, mm, PMD_SIZE, 1, 0, pages)) == 0
    assert _ref(k, page) == 0


def test_5_7_fast_longterm_pin_of_a_movable_page() -> None:
    """v5.7.14 mm/gup.c try_grab_compound_head :95-97 refuses FOLL_LONGTERM only for a CMA
    page, so gup_pte_range pins a ZONE_MOVABLE page itself and SetPageReferenced's it
    (:2246); the slow path (__gup_longterm_unlocked :2759, no FOLL_TOUCH) would not."""
    k = boot("5.7", BootParams(normal_mb=8, movable_mb=4))
    k.fine_grained = True
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PAGE_SIZE)
    page = fault_anon(k, mm, vma, PMD_SIZE)
    assert pool_of(k.free_area, page) == "movable"
    referenced = k.pf.mask("PG_referenced")
    assert not int(k.mem.flags[page]) & referenced
    pages = page_array(1)
    got = run(pin_user_pages_fast(k, mm, PMD_SIZE, 1, FOLL_LONGTERM | FOLL_WRITE, pages))
    assert (got, int(pages[0])) == (1, page)
    assert int(k.mem.flags[page]) & referenced
