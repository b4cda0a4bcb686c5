"""Collects what a search finds: state counts, orbits, limits hit, and the three kinds of
findings kept apart: violations, unmodelled paths and errors (see :mod:`result`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import fields
from functools import partial

from pinlab.explore.program import Program
from pinlab.explore.result import Counterexample, ErrorReport, Result, UnmodelledPath
from pinlab.explore.schedule import Move, encode
from pinlab.explore.system import StepError, System, UnmodelledStep, orbit_size
from pinlab.interleave import Violation


class Recorder:
    """The mutable side of a search: its result, and whether to stop."""

    def __init__(self, program: Program, system: System, result: Result, count_all: bool) -> None:
        self.program, self.system, self.result = program, system, result
        self.count_all = count_all
        self.stop = False
        self.bounded = False
        self._seen: set[tuple[str, str]] = set()
        self._bad: set[Hashable] = set()
        # per unmodelled (function, reason): its entry in the result, and the states
        # with a step into it; errors already reported, by (type, location)
        self._unmodelled: dict[tuple[str, str], tuple[UnmodelledPath, set[Hashable]]] = {}
        self._errors: set[tuple[str, str]] = set()
        self._symmetric = program.symmetric if system.symmetry else ()
        # a system whose keys are not tuples of thread parts sizes its own orbits
        self._orbit: Callable[[Hashable], int] = getattr(
            system, "orbit_size", partial(orbit_size, symmetric=self._symmetric)
        )
        if self._symmetric:
            result.orbits = 0
            result.violating_orbits = 0

    def restart(self) -> None:
        """Forget everything found, for a search that starts over another way."""
        res = self.result
        bound = res.preemption_bound
        fresh = Result(res.program, res.strategy, res.options, preemption_bound=bound)
        for f in fields(Result):
            setattr(res, f.name, getattr(fresh, f.name))
        self.stop = self.bounded = False
        self._seen.clear()
        self._bad.clear()
        self._unmodelled.clear()
        self._errors.clear()
        if self._symmetric:
            res.orbits = res.violating_orbits = 0

    def limit(self, what: str) -> None:
        """Note that a limit cut the search short."""
        if what not in self.result.limits_hit:
            self.result.limits_hit.append(what)

    def add_state(self, key: Hashable) -> None:
        """Count a newly reached distinct state (and its orbit, under symmetry)."""
        if self._symmetric:
            self.result.states += self._orbit(key)
            self.result.orbits = (self.result.orbits or 0) + 1
        else:
            self.result.states += 1

    def found(
        self,
        kind: str,
        name: str,
        detail: str,
        path: list[Move],
        positions: tuple[str, ...],
        key: Hashable,
    ) -> None:
        """Record a violation in state ``key``; the first of each property keeps its schedule.

        A state counts once however many properties fail in it (an assertion fails in
        the state its step starts from), weighted by its orbit size under symmetry, so
        that the count is the same with and without reduction.
        """
        if key not in self._bad:
            self._bad.add(key)
            if self._symmetric:
                self.result.violating_states += self._orbit(key)
                self.result.violating_orbits = (self.result.violating_orbits or 0) + 1
            else:
                self.result.violating_states += 1
        if (kind, name) not in self._seen:
            self._seen.add((kind, name))
            moves = self.system.concretise(list(path))
            self.result.counterexamples.append(
                Counterexample(
                    kind, name, detail, encode(self.program, moves), len(moves), positions
                )
            )
        if not self.count_all:
            self.stop = True

    def ended(self, err: Violation, path: list[Move], key: Hashable) -> None:
        """Record a step from state ``key`` (the last move of ``path``) that made no state.

        An assertion is a violation (:meth:`found`); an unmodelled path is counted apart
        and never stops the search; an error is reported apart and stops it as a
        violation does.
        """
        if isinstance(err, UnmodelledStep):
            self.unmodelled(err, path, key)
        elif isinstance(err, StepError):
            self.error(err, path)
        else:
            self.found("assertion", err.name, err.detail, path, (), key)

    def unmodelled(self, err: UnmodelledStep, path: list[Move], key: Hashable) -> None:
        """Count state ``key`` for the unmodelled path; the first keeps its schedule."""
        which = (err.function, err.reason)
        got = self._unmodelled.get(which)
        if got is None:
            moves = self.system.concretise(list(path))
            entry = UnmodelledPath(
                err.function, err.reason, 0, encode(self.program, moves), len(moves)
            )
            got = self._unmodelled[which] = (entry, set())
            self.result.unmodelled.append(entry)
        entry, states = got
        if key not in states:
            states.add(key)
            entry.count += self._orbit(key) if self._symmetric else 1

    def error(self, err: StepError, path: list[Move]) -> None:
        """Report an error (the first at each location keeps its schedule); stop unless
        counting everything."""
        if (err.type_name, err.location) not in self._errors:
            self._errors.add((err.type_name, err.location))
            moves = self.system.concretise(list(path))
            thread = self.system.names[moves[-1][0]] if moves else "?"
            self.result.errors.append(
                ErrorReport(
                    err.type_name,
                    err.message,
                    err.location,
                    err.function,
                    thread,
                    encode(self.program, moves),
                    len(moves),
                )
            )
        if not self.count_all:
            self.stop = True
