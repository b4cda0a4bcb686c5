"""Verdicts the seeds state, as `pinlab compare` finds them: each cell is a search over the
design's kernel, judged by the scenario's hazard (pinlab.report.compare.run_cell)."""

from __future__ import annotations

import pytest

from pinlab.designs import DESIGNS, get_design
from pinlab.designs.costs import ORDERS, PLAIN_REFS, false_positive_rate, unpinned_folio
from pinlab.report.compare import Task, run_cell


@pytest.mark.parametrize(
    ("design", "verdict"),
    [
        # seed 003: with the bias on a 1 GiB head for every subpage, 8 whole pins wrap it;
        # the exact pincount of v5.7 (hpage_pinned_refcount) and v6.1 does not
        ("foll-pin-bias-v4", "violated"),
        ("foll-pin-5.7", "holds"),
        ("foll-pin-6.1", "holds"),
        ("legacy-get", "n/a"),
    ],
)
def test_hugepage_1g_overflow(design: str, verdict: str) -> None:
    cell = run_cell(Task(design, "hugepage-1g-overflow", None))
    assert cell.verdict == verdict, cell
    assert (cell.schedule is not None) == (verdict == "violated")


def test_reclaim_vs_gup_is_violated_by_every_4_4_design() -> None:
    """The window between gup's reference and its late mark (test_dma_pinned_flag.py)."""
    for name, design in DESIGNS.items():
        cell = run_cell(Task(name, "reclaim-vs-gup", None))
        assert cell.verdict == ("violated" if design.base == "4.4" else "n/a"), cell


def _positives(design: str, order: int) -> list[int]:
    check = get_design(design).maybe_pinned
    assert check is not None
    return [r for r in PLAIN_REFS if check(*unpinned_folio(get_design(design), order, r))]


def _over_the_bias(design: str, order: int) -> list[int]:
    """The plain reference counts that take the folio's _refcount to GUP_PIN_COUNTING_BIAS
    (1024, v5.7 and v6.1 include/linux/mm.h) or past, from the count it starts with."""
    k, folio = unpinned_folio(get_design(design), order, 0)
    start = int(k.mem.refcount[folio])
    return [r for r in PLAIN_REFS if start + r >= 1024]


def test_bias_designs_call_many_plain_references_a_pin_exact_counts_do_not() -> None:
    """Under every bias design a small page with enough plain references reads as pinned; a
    THP does too under the v4 posting, never under v5.7's and v6.1's exact compound
    count; a flag never does."""
    for design in ("foll-pin-bias-v4", "foll-pin-5.7", "foll-pin-6.1"):
        assert _positives(design, 0) == _over_the_bias(design, 0) != [], design
    assert _positives("foll-pin-bias-v4", 9) == _over_the_bias("foll-pin-bias-v4", 9) != []
    assert _positives("foll-pin-5.7", 9) == _positives("foll-pin-6.1", 9) == []
    for design in ("dma-pinned-flag-2018", "page-ext-flag"):
        assert all(_positives(design, order) == [] for order in ORDERS)
    rates = {d: false_positive_rate(get_design(d)) for d in DESIGNS}
    assert rates["legacy-get"] is None
    assert rates["foll-pin-bias-v4"] > rates["foll-pin-5.7"] == rates["foll-pin-6.1"] > 0
