"""What a search reports: verdict, coverage, counterexamples; serialisable to JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

MEMORY_MODEL = "sequential consistency"


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
    counterexamples: list[Counterexample] = field(default_factory=list)
    interrupted: bool = False
    elapsed: float = 0.0
    memory_model: str = MEMORY_MODEL
    notes: list[str] = field(default_factory=list)  # how the search went, beyond the verdict

    @property
    def violated(self) -> bool:
        """True when some property failed."""
        return bool(self.counterexamples)

    @property
    def verdict(self) -> str:
        """One line: violated, holds, holds within a bound, or what was covered."""
        if self.counterexamples:
            names = ", ".join(sorted({f"{c.kind} {c.name}" for c in self.counterexamples}))
            return f"violated ({names}), assuming {self.memory_model}"
        if self.complete and self.preemption_bound is None:
            return f"holds, assuming {self.memory_model}"
        if self.complete:
            return (
                f"holds within preemption bound {self.preemption_bound}, "
                f"assuming {self.memory_model}"
            )
        why = ", ".join(self.limits_hit) or "search is not exhaustive"
        return (
            f"no violation found in {self.schedules} schedules and {self.states} states "
            f"(incomplete: {why})"
        )

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON, with the derived verdict."""
        d = asdict(self)
        d["verdict"] = self.verdict
        d["violated"] = self.violated
        return d

    def to_json(self) -> str:
        """The result as one JSON document."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
