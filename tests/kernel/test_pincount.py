"""folio_maybe_dma_pinned / page_maybe_dma_pinned per profile (include/linux/mm.h)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import anon_vma, fault_anon, fault_thp, new_mm, pin

from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.gup_flags import FOLL_PIN
from pinlab.kernel.mm.gup_grab import try_grab_page
from pinlab.kernel.mm.gup_put import gup_put_folio
from pinlab.kernel.mm.page_alloc import __GFP_COMP, GFP_HIGHUSER_MOVABLE, alloc_pages
from pinlab.kernel.mm.page_ref import get_page
from pinlab.kernel.mm.pgtable import PMD_SIZE
from pinlab.kernel.mm.pincount import (
    folio_maybe_dma_pinned,
    folio_pincount,
    page_maybe_dma_pinned,
    page_needs_cow_for_dma,
)
from pinlab.kernel.profiles import NotInKernel
from pinlab.kernel.state import boot


@pytest.mark.parametrize("profile", ["5.7", "6.1"])
def test_small_page_false_positive_at_bias_refs(profile: str) -> None:
    """v6.1 folio_maybe_dma_pinned / v5.7 page_maybe_dma_pinned: small pages test
    (unsigned)refcount >= GUP_PIN_COUNTING_BIAS, so plain references look like a pin."""
    k = boot(profile)
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, 2 * PMD_SIZE)
    page = fault_anon(k, mm, vma, PMD_SIZE)
    while int(k.mem.refcount[page]) < k.profile.pin_bias - 1:
        get_page(k, page)
    assert not page_maybe_dma_pinned(k, page)
    get_page(k, page)
    assert page_maybe_dma_pinned(k, page)
    head = fault_thp(k, mm, vma, 2 * PMD_SIZE)
    for _ in range(4 * k.profile.pin_bias):
        get_page(k, head + 3)
    assert not page_maybe_dma_pinned(k, head + 3)
    assert pin(k, mm, 2 * PMD_SIZE, 1)[0] == 1
    assert page_maybe_dma_pinned(k, head + 100)


@pytest.mark.parametrize(
    ("profile", "cite"),
    [
        ("5.7", "v5.7.14 include/linux/mm.h:1253 (unsigned int)page_ref_count(compound_head)"),
        ("6.1", "v6.1.192 include/linux/mm.h:1598 (unsigned int)folio_ref_count(folio)"),
    ],
)
def test_a_refcount_wrapped_negative_reads_as_pinned(profile: str, cite: str) -> None:
    """The small-page test compares the count as unsigned: a count that overflowed past
    INT_MAX (negative as an int) is at least the bias, so the page looks pinned."""
    k = boot(profile)
    mm = new_mm(k)
    page = fault_anon(k, mm, anon_vma(k, mm, PMD_SIZE, PMD_SIZE), PMD_SIZE)
    k.mem.refcount[page] = -2
    assert page_maybe_dma_pinned(k, page), cite


def test_folio_query_absent_before_5_18() -> None:
    k = boot("5.7")
    with pytest.raises(NotInKernel):
        folio_maybe_dma_pinned(k, 1)
    with pytest.raises(NotInKernel):
        page_maybe_dma_pinned(boot("4.4"), 1)


def test_needs_cow_only_with_mmf_has_pinned() -> None:
    """v6.1 include/linux/mm.h page_needs_cow_for_dma: false until the mm ever pinned."""
    k = boot("6.1")
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    page = fault_anon(k, mm, vma, PMD_SIZE)
    for _ in range(2000):
        get_page(k, page)
    assert folio_maybe_dma_pinned(k, page)
    assert not page_needs_cow_for_dma(k, mm, vma, page)
    assert pin(k, mm, PMD_SIZE, 1)[0] == 1
    assert page_needs_cow_for_dma(k, mm, vma, page)


# (profile, refcount added by one FOLL_PIN grab of an order-1 folio's tail, exact pincount)
# v5.7 mm/gup.c try_grab_page: hpage_pincount only for compound_order > 1 (page[2] holds it),
# so an order-1 folio takes the bias; v6.1 mm/gup.c try_grab_page: every large folio keeps
# an exact count in page[1] (folio->_pincount) and takes one reference.
ORDER1_ROWS = [("5.7", 1 << 10, 0), ("6.1", 1, 1)]


@pytest.mark.parametrize(("profile", "refs", "pincount"), ORDER1_ROWS)
def test_order_1_folio_pin_accounting(profile: str, refs: int, pincount: int) -> None:
    k = boot(profile)
    head = alloc_pages(k, GFP_HIGHUSER_MOVABLE | __GFP_COMP, 1)
    assert head is not None
    before = int(k.mem.refcount[head])
    assert run_to_completion(try_grab_page(k, head + 1, FOLL_PIN))
    assert int(k.mem.refcount[head]) - before == refs
    assert folio_pincount(k, head) == pincount
    assert page_maybe_dma_pinned(k, head + 1)
    run_to_completion(gup_put_folio(k, head, 1, FOLL_PIN))
    assert int(k.mem.refcount[head]) == before
    assert not page_maybe_dma_pinned(k, head + 1)
