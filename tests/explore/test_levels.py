"""Breadth-first search on arrays (levels.py) is the one-state-at-a-time search, exactly."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pinlab.explore import (
    Invariant,
    Machine,
    MachineProgram,
    Options,
    Result,
    Transition,
    explore,
    levels,
)
from tests.explore.programs import build_machine, peterson_machine, random_spec


@contextmanager
def one_at_a_time() -> Iterator[None]:
    """The sequential breadth-first search, as before the arrays."""
    with mock.patch.object(levels, "applies", lambda *_a: False):
        yield


def plain(result: Result) -> dict[str, Any]:
    d = result.to_dict()
    del d["elapsed"]
    return d


def both(program: MachineProgram, opts: Options) -> tuple[Result, Result]:
    with mock.patch.object(levels, "bfs", wraps=levels.bfs) as arrays:
        fast = explore(program, opts)
    assert arrays.called
    with one_at_a_time():
        slow = explore(program, opts)
    return fast, slow


OPTION_SETS = [
    Options(strategy="bfs", shrink=False),
    Options(strategy="bfs", shrink=False, count_all=True),
    Options(strategy="bfs", shrink=False, max_steps=2),
    Options(strategy="bfs", shrink=False, max_steps=3, count_all=True),
    Options(strategy="bfs"),
]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from(OPTION_SETS))
# a deadlock, then a failing step of the next state in the same level: which comes first
@example(seed=2752, opts=OPTION_SETS[0])
def test_arrays_give_the_sequential_result(seed: int, opts: Options) -> None:
    spec = random_spec(random.Random(seed), seed, world=False)
    spec["sym"] = False  # symmetry keeps the sequential search
    fast, slow = both(build_machine(spec), opts)
    assert plain(fast) == plain(slow)


def test_peterson_counts_and_verdict_agree() -> None:
    for broken in (False, True):
        fast, slow = both(peterson_machine(True, broken), Options(strategy="bfs", count_all=True))
        assert plain(fast) == plain(slow)
        assert fast.violated == broken


def ring(threads: int, rounds: int) -> MachineProgram:
    """A token passed round ``threads`` threads; each counts its turns in a local."""

    def machine(i: int) -> Machine:
        turn = Transition(
            "run",
            "run",
            f"take the token {i}",
            guard=lambda g, c: g == i and c < rounds,
            act=lambda g, c: ((g + 1) % threads, c + 1),
        )
        return Machine(f"T{i}", "run", (turn,), locals=0, ends=frozenset({"run"}))

    return MachineProgram(f"ring-{threads}-{rounds}", 0, tuple(machine(i) for i in range(threads)))


def test_invariants_over_locals_are_judged_in_every_state() -> None:
    counted = Invariant("T0 takes the token twice at most", lambda s: s[1][1] <= 2)
    program = replace(ring(3, 5), invariants=(counted,))
    for opts in (Options(strategy="bfs"), Options(strategy="bfs", count_all=True)):
        fast, slow = both(program, opts)
        assert plain(fast) == plain(slow)
        assert [c.steps for c in fast.counterexamples] == [7]  # T0's third turn
    assert fast.violating_states == 9  # the states after steps 7 to 15


def test_too_wide_states_fall_back_to_one_at_a_time() -> None:
    for threads, rounds in ((40, 1), (12, 40)):  # too wide at the start; outgrown on the way
        program = ring(threads, rounds)
        fast = explore(program, Options(strategy="bfs", count_all=True))
        with one_at_a_time():
            slow = explore(program, Options(strategy="bfs", count_all=True))
        assert fast.complete and fast.states == threads * rounds + 1
        (note,) = fast.notes
        assert note.startswith("breadth-first search took one state at a time: ")
        fast.notes.clear()
        assert plain(fast) == plain(slow)


def test_fields_widen_as_ids_grow() -> None:
    program = ring(3, 200)  # 201 local states, from 1 at the start
    fast, slow = both(program, Options(strategy="bfs"))
    assert not fast.notes and fast.states == 601
    assert plain(fast) == plain(slow)


def test_interrupt_keeps_the_levels_done() -> None:
    program = peterson_machine(True)

    def progress(_states: int, _transitions: int, depth: int) -> None:
        if depth == 3:
            raise KeyboardInterrupt

    cut = explore(program, Options(strategy="bfs", shrink=False), progress)
    within = explore(program, Options(strategy="bfs", shrink=False, max_steps=3))
    assert cut.interrupted and not cut.complete
    assert cut.states == within.states > 1


def test_max_time_stops_between_levels() -> None:
    result = explore(ring(3, 50), Options(strategy="bfs", max_time=1e-9))
    assert result.limits_hit == ["max-time"] and not result.complete
    assert result.states == 1
