"""What a search reports: verdict, coverage, and three kinds of findings kept apart.

* violations (``counterexamples``): a property failed (an invariant, a kernel assertion
  such as ``BUG_ON``, a final check, a deadlock): the verdict;
* unmodelled paths (``unmodelled``): a step reached a kernel path the model does not
  cover; the branch ends there, which is no verdict but leaves the search short;
* errors (``errors``): a step raised any other exception, a bug in pinlab.

:func:`exit_code` turns a result (or a replay) into the exit status of every command.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Protocol

MEMORY_MODEL = "sequential consistency"

# exit statuses of the search and replay commands; see exit_code
HOLDS, VIOLATED, BAD_INPUT, INCONCLUSIVE, ERROR, INTERRUPTED = 0, 1, 2, 3, 4, 130


@dataclass(slots=True)
class Counterexample:
    """One violated property and the schedule that violates it."""

    kind: str  # "invariant" | "assertion" | "final" | "deadlock"
    name: str
    detail: str
    schedule: str
    steps: int
    positions: tuple[str, ...] = ()
    # "optimal", "off", or why the schedule is kept as found (budget, interrupt, state cache)
    shrink: str = "off"


@dataclass(slots=True)
class UnmodelledPath:
    """A kernel path the model does not cover, reached by some step: never a violation.

    ``count`` is how many distinct states have a step into it (weighted by orbit size
    under symmetry, like violating states); ``schedule`` reaches it (as found, not
    shrunk) and replays to it.
    """

    function: str
    reason: str
    count: int
    schedule: str
    steps: int

    def __str__(self) -> str:
        return f"unmodelled: {self.function}: {self.reason}"


@dataclass(slots=True)
class ErrorReport:
    """A Python exception other than a violation raised in a step: a bug in pinlab.

    ``location`` is ``file:line`` of the innermost frame of its traceback, ``function``
    that frame's function (the kernel function, in the kernel model), ``thread`` the
    thread whose step raised it; ``schedule`` replays to it.
    """

    type: str
    message: str
    location: str
    function: str
    thread: str
    schedule: str
    steps: int

    def __str__(self) -> str:
        return f"error: {self.type}: {self.message} at {self.location} in {self.function}"


class Outcome(Protocol):
    """What decides an exit status: a :class:`Result`, or a replay of one schedule."""

    @property
    def errored(self) -> bool: ...
    @property
    def violated(self) -> bool: ...
    @property
    def interrupted(self) -> bool: ...
    @property
    def conclusive(self) -> bool: ...


def exit_code(outcome: Outcome) -> int:
    """The exit status of every search and replay command (bad input, 2, never gets here).

    4 if a step raised an error (a bug in pinlab); else 1 if a property was violated;
    else 130 if Ctrl-C interrupted the search; else 3 if the answer is not conclusive (an
    unmodelled path was reached, a limit or a preemption bound cut the search, or the
    strategy samples); else 0.
    """
    if outcome.errored:
        return ERROR
    if outcome.violated:
        return VIOLATED
    if outcome.interrupted:
        return INTERRUPTED
    if not outcome.conclusive:
        return INCONCLUSIVE
    return HOLDS


@dataclass(slots=True)
class Result:
    """The outcome of one exploration."""

    program: str
    strategy: str
    options: dict[str, object]
    complete: bool = False
    limits_hit: list[str] = field(default_factory=list)
    preemption_bound: int | None = None
    states: int = 0
    orbits: int | None = None
    transitions: int = 0
    schedules: int = 0
    complete_schedules: int = 0
    max_depth: int = 0
    violating_states: int = 0
    violating_orbits: int | None = None
    counterexamples: list[Counterexample] = field(default_factory=list)  # the violations
    unmodelled: list[UnmodelledPath] = field(default_factory=list)
    errors: list[ErrorReport] = field(default_factory=list)
    interrupted: bool = False
    elapsed: float = 0.0
    memory_model: str = MEMORY_MODEL
    notes: list[str] = field(default_factory=list)  # how the search went, beyond the verdict

    @property
    def violated(self) -> bool:
        """True when some property failed."""
        return bool(self.counterexamples)

    @property
    def errored(self) -> bool:
        """True when some step raised an error (a bug in pinlab)."""
        return bool(self.errors)

    @property
    def conclusive(self) -> bool:
        """Whether a search without findings means "holds": exhaustive, not cut, not
        bounded, and no step reached an unmodelled path."""
        return self.complete and self.preemption_bound is None and not self.unmodelled

    @property
    def verdict(self) -> str:
        """One line: error, violated, holds, holds within a bound, or what was covered."""
        if self.errors:
            first = self.errors[0]
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            also = f"; also violated ({self._violations()})" if self.counterexamples else ""
            return (
                f"error in pinlab: {first.type} at {first.location} in {first.function}{more}{also}"
            )
        if self.counterexamples:
            return f"violated ({self._violations()}), assuming {self.memory_model}"
        unmodelled = ""
        if self.unmodelled:
            n = len(self.unmodelled)
            unmodelled = f" ({n} unmodelled path{'s' if n > 1 else ''} not explored)"
        if self.complete and self.preemption_bound is None:
            where = " on the modelled paths" if self.unmodelled else ""
            return f"holds{where}{unmodelled}, assuming {self.memory_model}"
        if self.complete:
            return (
                f"holds within preemption bound {self.preemption_bound}{unmodelled}, "
                f"assuming {self.memory_model}"
            )
        why = ", ".join(self.limits_hit) or "search is not exhaustive"
        return (
            f"no violation found in {self.schedules} schedules and {self.states} states "
            f"(incomplete: {why}){unmodelled}"
        )

    def _violations(self) -> str:
        return ", ".join(sorted({f"{c.kind} {c.name}" for c in self.counterexamples}))

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON, with the derived verdict and exit status.

        Violations are under ``counterexamples``, unmodelled paths under ``unmodelled``,
        errors under ``errors``.
        """
        d = asdict(self)
        d["verdict"] = self.verdict
        d["violated"] = self.violated
        d["errored"] = self.errored
        d["exit_code"] = exit_code(self)
        return d

    def to_json(self) -> str:
        """The result as one JSON document."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
