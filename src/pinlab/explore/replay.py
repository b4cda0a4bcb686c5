"""Replay a schedule step by step: a readable trace and the outcome it reaches (violations,
an unmodelled path, or an error), kept apart as the search keeps them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pinlab.explore.machine import MachineSystem
from pinlab.explore.program import MachineProgram, Program
from pinlab.explore.schedule import Move, ScheduleError, decode_for, encode
from pinlab.explore.system import StepError, System, UnmodelledStep
from pinlab.explore.world import WorldSystem


def make_system(program: Program, symmetry: bool = False, cache: bool = True) -> System:
    """The backend for a program; without the cache, state keys only count states."""
    if isinstance(program, MachineProgram):
        return MachineSystem(program, symmetry)
    return WorldSystem(program, symmetry, strict=cache)


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One line of a trace."""

    index: int
    thread: str
    where: str
    changed: str


@dataclass(slots=True)
class Replay:
    """What a schedule does: its steps and how it ends (a violation, an unmodelled path,
    an error, or none of these)."""

    schedule: str
    steps: list[TraceStep] = field(default_factory=list)
    # (kind, name, detail, positions) of each property violated where the schedule ends
    violations: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)
    # (states reached, name, detail) of each invariant that failed in a state the schedule then
    # ran on from (0: the initial state); a count-all search's schedules may pass through these
    passed: list[tuple[int, str, str]] = field(default_factory=list)
    # (function, reason) of the unmodelled path the last step reached, if it did
    unmodelled: tuple[str, str] | None = None
    # (type, message, file:line, function) of the error the last step raised, if it did
    error: tuple[str, str, str, str] | None = None
    interrupted: bool = False  # a replay runs to its end (for exit_code)

    @property
    def violated(self) -> bool:
        """Whether a property failed at the end or in a state the schedule ran on from."""
        return bool(self.violations or self.passed)

    @property
    def errored(self) -> bool:
        """Whether the last step raised an error (a bug in pinlab)."""
        return self.error is not None

    @property
    def conclusive(self) -> bool:
        """False when the schedule ends in an unmodelled path."""
        return self.unmodelled is None

    def _ended(self) -> str | None:
        """How the run ended before the schedule's last step, if it did."""
        if self.violations:
            return f"{self.violations[0][0]} {self.violations[0][1]}"
        if self.unmodelled is not None:
            return f"unmodelled: {self.unmodelled[0]}: {self.unmodelled[1]}"
        if self.error is not None:
            return f"error {self.error[0]} at {self.error[2]}"
        return None

    @property
    def verdict(self) -> tuple[str, str] | None:
        """(kind, name) of the first violation the schedule ends in, or None."""
        return (self.violations[0][0], self.violations[0][1]) if self.violations else None

    def reaches(self, kind: str, name: str) -> bool:
        """Whether the schedule ends in a violation of this property."""
        return any(v[0] == kind and v[1] == name for v in self.violations)

    def render(self) -> str:
        """The trace as text, one step a line, then the verdict."""
        lines = [f"schedule {self.schedule}"]
        for s in self.steps:
            changed = f"  | {s.changed}" if s.changed else ""
            lines.append(f"{s.index:4d}  {s.thread:<12} {s.where}{changed}")
        for after, name, detail in self.passed:
            lines.append(f"VIOLATION invariant {name} after {after} step(s), then run on: {detail}")
        if self.unmodelled is not None:
            function, reason = self.unmodelled
            lines.append(f"UNMODELLED {function}: {reason} (the path ends here; no verdict)")
        if self.error is not None:
            kind, message, location, function = self.error
            lines.append(f"ERROR (a bug in pinlab) {kind}: {message} at {location} in {function}")
        if not self.violations and self.unmodelled is None and self.error is None:
            lines.append("no violation at the end of this schedule")
        for kind, name, detail, positions in self.violations:
            lines.append(f"VIOLATION {kind} {name}: {detail}")
            lines += [f"      {p}" for p in positions]
        lines.append("(assuming sequential consistency)")
        return "\n".join(lines)


def run_moves(program: Program, moves: list[Move], trace: bool = True) -> Replay:
    """Run ``moves`` on the unreduced program; ScheduleError names the step that does not fit."""
    system = make_system(program, cache=False)
    out = Replay(encode(program, moves))
    node: Any = system.root()
    for i, (tid, choice) in enumerate(moves):
        # Judged in every state, as the search judges it, so running past a failure is seen.
        out.passed += [(i, name, detail) for name, detail in system.invariant(node)]
        ended = out._ended()
        if ended is not None:
            raise ScheduleError(
                f"position {i}: schedule too long: the run already ended with "
                f"{ended} at step {i - 1}"
            )
        if not 0 <= tid < system.n:
            raise ScheduleError(
                f"position {i}: unknown thread {tid} (the program has threads 0..{system.n - 1})"
            )
        count, where = system.status(node, tid)
        if count == 0:
            raise ScheduleError(f"position {i}: thread {tid} cannot run here: {where}")
        if choice >= count:
            raise ScheduleError(
                f"position {i}: thread {tid} has {count} choice(s), not choice {choice}: {where}"
            )
        at = system.where(node, (tid, choice)) if trace else ""
        child, err = system.step(node, (tid, choice))
        if err is not None:
            if isinstance(err, UnmodelledStep):
                out.unmodelled = (err.function, err.reason)
                raised = f"unmodelled: {err.function}: {err.reason}"
            elif isinstance(err, StepError):
                out.error = (err.type_name, err.message, err.location, err.function)
                raised = f"raised {err.type_name}: {err.message} at {err.location}"
            else:
                out.violations.append(("assertion", err.name, err.detail, ()))
                raised = "raised " + str(err)
            if trace:
                out.steps.append(TraceStep(i, system.names[tid], at, raised))
            continue
        if trace:
            out.steps.append(TraceStep(i, system.names[tid], at, system.changes(node, child)))
        node = child
    if out._ended() is not None:
        return out
    out.violations += [("invariant", name, detail, ()) for name, detail in system.invariant(node)]
    if not system.expand(node):
        term = system.terminal(node)
        if term is not None:
            out.violations.append(term)
    return out


def replay(program: Program, schedule: str, trace: bool = True) -> Replay:
    """Replay a schedule string made for ``program`` (refused if made for another)."""
    return run_moves(program, decode_for(program, schedule), trace)
