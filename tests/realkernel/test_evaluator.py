"""Verdicts, the shared bisection, and the check table built from frames and an evaluator."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pinlab.realkernel import ops
from pinlab.realkernel.catalog import PROBES, Probe, Search, by_name
from pinlab.realkernel.check import (
    Report,
    Row,
    guest_problems,
    kernel_outcomes,
    profile_for,
    rows_for,
)
from pinlab.realkernel.console import encode_frame, parse_frames
from pinlab.realkernel.evaluator import Outcome, outcome_from_fields, search_threshold, verdict

OK = Outcome("ok", {"register": "ok", "reg.acquired": "256"})


@pytest.mark.parametrize(
    ("kernel", "predicted", "expected"),
    [
        (OK, Outcome("ok", dict(OK.values)), "match"),
        (OK, Outcome("ok", {**OK.values, "reg.acquired": "255"}), "mismatch"),
        (OK, Outcome("ok", {"register": "ok"}), "mismatch"),
        (OK, Outcome("error", {}, "model failed"), "mismatch"),
        (OK, None, "no model evaluator"),
        (Outcome("unmet", {}, "no-free-hugetlb-pages"), Outcome("ok", {}), "unmet"),
        (Outcome("unmet", {}, "x"), None, "unmet"),
        (Outcome("error", {}, "signal-11"), Outcome("ok", {}), "error"),
    ],
)
def test_verdict(kernel: Outcome, predicted: Outcome | None, expected: str) -> None:
    assert verdict(kernel, predicted) == expected


def test_outcome_from_guest_fields() -> None:
    assert outcome_from_fields({"case": "a", "status": "unmet", "detail": "no-thp"}) == Outcome(
        "unmet", {}, "no-thp"
    )
    assert outcome_from_fields({"case": "a", "x": "1"}).status == "error"
    assert outcome_from_fields({"case": "a", "status": "weird"}).status == "error"


def threshold_probe(lo: int, hi: int) -> Probe:
    return Probe(
        "t",
        "q",
        (
            ops.Map("b", "anon", 4096),
            ops.Vmsplice("b", 0, ops.Param("N")),
            ops.PagemapSave("b"),
            ops.Fork((ops.PagemapCmp("child", "b"),)),
        ),
        Search("N", lo, hi, "child", "d1", "s1"),
    )


def fake_run(threshold: int, calls: list[int]):  # type: ignore[no-untyped-def]
    def run(bound: tuple[ops.Op, ...]) -> Outcome:
        n = next(op.count for op in bound if isinstance(op, ops.Vmsplice))
        assert isinstance(n, int)
        calls.append(n)
        return Outcome("ok", {"child": "d1" if n >= threshold else "s1"})

    return run


@given(st.integers(0, 5000), st.integers(1, 5000))
def test_search_finds_any_threshold(lo: int, width: int) -> None:
    hi = lo + width
    for t in {lo + 1, hi, (lo + hi) // 2 + 1}:
        if not lo < t <= hi:
            continue
        calls: list[int] = []
        got = search_threshold(threshold_probe(lo, hi), fake_run(t, calls))
        assert got.values["threshold"] == str(t)
        assert got.values["steps"] == str(len(calls))
        assert len(calls) == len(set(calls))


def test_search_reports_none_when_predicate_not_bracketed() -> None:
    calls: list[int] = []
    got = search_threshold(threshold_probe(10, 20), fake_run(5, calls))
    assert got.values == {"threshold": "none", "at_lo": "1", "at_hi": "1"}


def run_with(child: dict[int, str], register: dict[int, str] | None = None):  # type: ignore[no-untyped-def]
    """A run whose child value (and register result) at N comes from the tables (default
    s1 / ok)."""

    def run(bound: tuple[ops.Op, ...]) -> Outcome:
        n = next(op.count for op in bound if isinstance(op, ops.Vmsplice))
        assert isinstance(n, int)
        values = {
            "child": child.get(n, "d1" if n >= 3 else "s1"),
            "register": (register or {}).get(n, "ok"),
        }
        return Outcome("ok", values)

    return run


def test_search_reports_the_other_observations() -> None:
    got = search_threshold(threshold_probe(0, 8), run_with({}))
    assert got == Outcome("ok", {"register": "ok", "threshold": "3", "steps": "5"})


@pytest.mark.parametrize(
    ("child", "register", "detail"),
    [
        # a value that is neither d1 nor s1 is no "false" (a child that saw the page vanish)
        ({4: "n1"}, {}, "search-value-unexpected-at-4"),
        ({0: "f1"}, {}, "search-value-unexpected-at-0"),
        # the pin the search relies on failed at one point: not comparable with the others
        ({}, {8: "EFAULT"}, "search-observations-differ-at-8"),
        ({}, {2: "ENOMEM"}, "search-observations-differ-at-2"),
    ],
)
def test_search_predicate_is_three_valued(
    child: dict[int, str], register: dict[int, str], detail: str
) -> None:
    got = search_threshold(threshold_probe(0, 8), run_with(child, register))
    assert got == Outcome("error", {}, detail)


def test_search_propagates_an_error_point() -> None:
    def run(bound: tuple[ops.Op, ...]) -> Outcome:
        return Outcome("error", {}, "boom")

    assert search_threshold(threshold_probe(0, 8), run).status == "error"


def test_profile_for_release() -> None:
    assert profile_for("6.1.0-56-amd64") == "6.1"
    assert profile_for("6.12.9") == "6.12"


HELLO = (
    "hello release=6.1.0-56-amd64 thp=always,[madvise],never nr_hugepages=16 cpus=1"
    " page_sizes=ok cases=2"
)


def frames_for(outcomes: dict[str, str], hello: str = HELLO) -> str:
    text = encode_frame(0, hello)
    for i, (name, rest) in enumerate(outcomes.items(), 1):
        text += "[    1.0] noise\r\n" + encode_frame(i, f"case={name} {rest}")
    return text


def test_kernel_outcomes_and_missing_frames() -> None:
    probes = PROBES[:3]
    text = frames_for(
        {probes[0].name: "status=ok register=ok", probes[1].name: "status=unmet detail=no-thp"}
    )
    got, release = kernel_outcomes(parse_frames(text), probes)
    assert release == "6.1.0-56-amd64"
    assert got[probes[0].name] == Outcome("ok", {"register": "ok"})
    assert got[probes[1].name].status == "unmet"
    assert got[probes[2].name].status == "error"
    assert "no intact frame" in got[probes[2].name].detail


def test_fatal_init_frame_makes_every_probe_an_error() -> None:
    got, _ = kernel_outcomes(parse_frames(encode_frame(0, "fatal insmod-ext4")), PROBES[:2])
    assert all(o.status == "error" and "insmod-ext4" in o.detail for o in got.values())


@dataclass
class ReplayEvaluator:
    """Predicts by replaying recorded outcomes, with one probe's observation changed."""

    recorded: dict[str, Outcome]
    changed: str
    name: str = "replay"

    def evaluate(self, probe: Probe, profile: str) -> Outcome:
        out = self.recorded[probe.name]
        if probe.name != self.changed:
            return out
        key = sorted(out.values)[0]
        return Outcome("ok", {**out.values, key: out.values[key] + "x"})


def test_changing_one_prediction_mismatches_exactly_that_probe() -> None:
    kernel = {p.name: Outcome("ok", {"obs": str(i)}) for i, p in enumerate(PROBES)}
    target = by_name("fork-pinned-thp").name
    rows = rows_for(PROBES, kernel, ReplayEvaluator(kernel, target), "6.1")
    assert [r.probe for r in rows if r.verdict != "match"] == [target]
    assert all(r.verdict == "no model evaluator" for r in rows_for(PROBES, kernel, None, "6.1"))


def test_interrupt_prints_the_probes_that_had_reported(capsys: pytest.CaptureFixture[str]) -> None:
    from pinlab.cli.kernel import _print_partial

    text = frames_for(
        {
            "pins-uring-small": "status=ok register=ok",
            "pins-uring-thp": "status=unmet detail=no-transparent-huge-page",
        }
    )
    _print_partial(text + "@@PINLAB 3 99 0000")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"interrupted; 2 of {len(PROBES)} probes had reported:"
    assert err[1:] == [
        "  pins-uring-small: register=ok",
        "  pins-uring-thp: unmet: no-transparent-huge-page",
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("thp=[always],madvise,never", "thp="),
        ("nr_hugepages=3", "nr_hugepages=3"),
        ("cpus=2", "cpus=2"),
        ("page_sizes=hpage_pmd_size", "page_sizes=hpage_pmd_size"),
    ],
)
def test_guest_with_another_configuration_makes_every_probe_an_error(
    change: str, problem: str
) -> None:
    key = change.split("=")[0]
    hello = " ".join(change if w.startswith(key + "=") else w for w in HELLO.split())
    probes = PROBES[:2]
    text = frames_for({probes[0].name: "status=ok register=ok"}, hello)
    got, _ = kernel_outcomes(parse_frames(text), probes)
    assert all(o.status == "error" and problem in o.detail for o in got.values())
    assert guest_problems({k: v for k, _, v in (w.partition("=") for w in HELLO.split())}) == []


def test_boot_failure_reason_reaches_the_rows() -> None:
    got, _ = kernel_outcomes(
        parse_frames("qemu noise"), PROBES[:1], "qemu exited with status 1: could not load kernel"
    )
    assert "could not load kernel" in got[PROBES[0].name].detail


def test_rows_without_predictions_pass_only_without_a_model() -> None:
    ok = Outcome("ok", {"x": "1"})
    rows = [Row("p", "q", ok, None, verdict(ok, None))]
    assert not Report(rows, "r", "tcg", 1.0).passed
    assert Report(rows, "r", "tcg", 1.0, model=False).passed
    unmet = Outcome("unmet", {}, "no-thp")
    assert not Report(
        [Row("p", "q", unmet, None, verdict(unmet, None))], "r", "tcg", 1.0, model=False
    ).passed
