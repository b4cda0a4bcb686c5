"""Search options and their validation (bounds must be positive)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

STRATEGIES = ("dfs", "bfs", "random", "pct")
Progress = Callable[[int, int, int], None]


@dataclass(frozen=True, slots=True)
class Options:
    """How to explore.  ``None`` limits are unlimited; a limit that is set must be >= 1."""

    strategy: str = "dfs"
    por: bool = False
    symmetry: bool = False
    cache: bool = True
    count_all: bool = False
    preemption_bound: int | None = None
    seed: int = 0
    pct_depth: int = 3
    max_schedules: int | None = None
    max_steps: int | None = None
    max_states: int | None = None
    max_time: float | None = None
    shrink: bool = True

    def validate(self) -> None:
        """Raise ValueError for options that make no sense."""
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})"
            )
        for name in ("preemption_bound", "max_schedules", "max_steps", "max_states", "max_time"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {value}")
        if self.pct_depth <= 0:
            raise ValueError(f"pct-depth must be positive, got {self.pct_depth}")
        if self.por and self.strategy != "dfs":
            raise ValueError("partial-order reduction (sleep sets) needs --strategy dfs")
        if self.preemption_bound is not None and self.strategy not in ("dfs", "bfs"):
            raise ValueError("a preemption bound applies to dfs and bfs")
        if self.preemption_bound is not None and (self.por or self.symmetry):
            raise ValueError("a preemption bound cannot be combined with --por or --symmetry")
