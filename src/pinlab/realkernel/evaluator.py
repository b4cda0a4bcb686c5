"""Outcomes of a probe, the Evaluator interface the model side implements, and the comparison."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pinlab.realkernel.catalog import Probe
from pinlab.realkernel.ops import Op, bind

Status = Literal["ok", "unmet", "error"]
Verdict = Literal["match", "mismatch", "unmet", "error", "no model evaluator"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one evaluation of a probe observed: status and the named observations."""

    status: Status
    values: dict[str, str] = field(default_factory=dict)
    detail: str = ""

    def describe(self) -> str:
        """One line for the table: the observations, or the status and its reason."""
        if self.status != "ok":
            return f"{self.status}: {self.detail}" if self.detail else self.status
        return " ".join(f"{k}={v}" for k, v in sorted(self.values.items()))


class Evaluator(Protocol):
    """Predicts probe outcomes: implemented by the model side (pinlab.kernel).

    ``evaluate`` runs the probe's op list (semantics in pinlab.realkernel.ops) in a fresh
    process of a freshly booted model kernel under ``profile`` (e.g. "6.1") and returns the
    same observation names the guest reports. A probe with a ``search`` is evaluated with
    ``search_threshold`` so both sides bisect identically.
    """

    name: str

    def evaluate(self, probe: Probe, profile: str) -> Outcome: ...


def outcome_from_fields(fields: dict[str, str]) -> Outcome:
    """The guest's frame fields as an Outcome (``case`` is dropped)."""
    values = {k: v for k, v in fields.items() if k not in ("case", "status", "detail")}
    status = fields.get("status", "error")
    if status not in ("ok", "unmet", "error"):
        return Outcome("error", values, f"unknown status {status}")
    detail = fields.get("detail", "" if "status" in fields else "no status reported")
    return Outcome(status, values, detail)  # type: ignore[arg-type]


def search_threshold(probe: Probe, run: Callable[[tuple[Op, ...]], Outcome]) -> Outcome:
    """The bisection runner.c's run_search does, over an evaluator's run(ops).

    Three-valued: the search observation must be ``value`` or ``other``; every other
    observation must be the same at each point as at the first, and is reported.
    """
    s = probe.search
    if s is None:
        return run(probe.ops)
    first: dict[str, str] | None = None

    def at(n: int) -> bool | Outcome:
        nonlocal first
        out = run(bind(probe.ops, s.param, n))
        if out.status != "ok":
            return out
        if s.obs not in out.values:
            return Outcome("error", {}, f"search-key-missing-at-{n}")
        rest = {k: v for k, v in out.values.items() if k != s.obs}
        if first is None:
            first = rest
        elif rest != first:
            return Outcome("error", {}, f"search-observations-differ-at-{n}")
        if out.values[s.obs] == s.value:
            return True
        if out.values[s.obs] == s.other:
            return False
        return Outcome("error", {}, f"search-value-unexpected-at-{n}")

    lo, hi = s.lo, s.hi
    at_lo = at(lo)
    if isinstance(at_lo, Outcome):
        return at_lo
    at_hi = at(hi)
    if isinstance(at_hi, Outcome):
        return at_hi
    others = dict(first or {})
    if at_lo or not at_hi:
        return Outcome(
            "ok",
            {**others, "threshold": "none", "at_lo": str(int(at_lo)), "at_hi": str(int(at_hi))},
        )
    steps = 2
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        r = at(mid)
        steps += 1
        if isinstance(r, Outcome):
            return r
        if r:
            hi = mid
        else:
            lo = mid
    return Outcome("ok", {**others, "threshold": str(hi), "steps": str(steps)})


def verdict(kernel: Outcome, predicted: Outcome | None) -> Verdict:
    """Kernel against prediction: unmet and error are never a match."""
    if kernel.status == "unmet":
        return "unmet"
    if kernel.status == "error":
        return "error"
    if predicted is None:
        return "no model evaluator"
    if predicted.status != "ok":
        return "mismatch"
    return "match" if predicted.values == kernel.values else "mismatch"
