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
    FinalCheck,
    Invariant,
    Machine,
    MachineProgram,
    Options,
    Result,
    Transition,
    explore,
    levels,
)
from pinlab.explore.arrays import CHOICES
from pinlab.explore.levels import NARROW_AFTER
from pinlab.interleave import Violation
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


def local_counter(name: str, up_to: int, after: Any = None) -> Machine:
    """A thread counting a local up to ``up_to`` (once ``after(shared)`` holds)."""
    count = Transition(
        "n",
        "n",
        f"{name} counts",
        lambda g, c: c < up_to and (after is None or after(g)),
        lambda g, c: (g, c + 1),
    )
    return Machine(name, "n", (count,), locals=0, ends=frozenset({"n"}))


def test_invariants_over_locals_are_judged_in_every_state() -> None:
    # the shared value never changes: every state of a level shares it
    total = Invariant("the counts add up to 3 at most", lambda s: s[1][1] + s[2][1] <= 3)
    program = MachineProgram(
        "two-counts", 0, (local_counter("A", 3), local_counter("B", 3)), (total,)
    )
    for opts in (Options(strategy="bfs"), Options(strategy="bfs", count_all=True)):
        fast, slow = both(program, opts)
        assert plain(fast) == plain(slow)
        assert [c.steps for c in fast.counterexamples] == [4]
    assert fast.violating_states == 6  # counts (1,3) (2,2) (3,1) (2,3) (3,2) (3,3)


def test_too_wide_states_fall_back_to_one_at_a_time() -> None:
    for threads, rounds in ((70, 1), (12, 40)):  # too wide at the start; outgrown on the way
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


def test_checks_past_the_stop_are_not_run() -> None:
    def fails(_g: Any, _l: Any) -> tuple[Any, Any]:
        raise Violation("A fails")

    a = Machine("A", "a", (Transition("a", "b", "assert", act=fails),))
    b = Machine("B", "a", (Transition("a", "b", "x = 1", act=lambda _g, loc: (1, loc)),))
    # the invariant divides by zero in the state B's step makes, after A's failed step
    crashes = Invariant("x != 1", lambda s: 1 / (1 - s[0]) > 0, frozenset({"x"}))
    fast, slow = both(MachineProgram("past", 0, (a, b), (crashes,)), Options(strategy="bfs"))
    assert plain(fast) == plain(slow)
    assert [c.kind for c in fast.counterexamples] == ["assertion"]


def test_interrupt_inside_a_level_keeps_the_counts_of_what_was_recorded() -> None:
    def ctrl_c(_s: Any) -> bool:
        raise KeyboardInterrupt

    t = Machine(
        "T",
        "a",
        (
            Transition("a", "b", "go"),
            Transition("a", "end", "stop"),
            Transition("b", "c", "x = 1", act=lambda _g, loc: (1, loc)),
        ),
    )
    x_not_1 = Invariant("x != 1", lambda s: s[0] != 1, frozenset({"x"}))
    program = MachineProgram("ctrl-c", 0, (t,), (x_not_1,), (FinalCheck("ctrl-c", ctrl_c),))
    fast, slow = both(program, Options(strategy="bfs", count_all=True, shrink=False))
    assert fast.interrupted and plain(fast) == plain(slow)
    assert (fast.states, fast.violating_states) == (4, 1)


def counters(n: int, up_to: int) -> MachineProgram:
    """``n`` threads, each counting its own shared counter up to ``up_to``."""

    def machine(i: int) -> Machine:
        def up(g: tuple[int, ...], loc: Any) -> tuple[Any, Any]:
            return (*g[:i], g[i] + 1, *g[i + 1 :]), loc

        count = Transition("n", "n", f"x{i} += 1", lambda g, _l: g[i] < up_to, up)
        return Machine(f"T{i}", "n", (count,), ends=frozenset({"n"}))

    return MachineProgram(f"counters-{n}-{up_to}", (0,) * n, tuple(machine(i) for i in range(n)))


def test_many_shared_values_with_few_local_states_stay_on_arrays() -> None:
    fast, slow = both(counters(2, 150), Options(strategy="bfs"))
    assert plain(fast) == plain(slow) and not fast.notes and fast.states == 151 * 151


def test_long_narrow_searches_go_back_to_one_state_at_a_time() -> None:
    wide = counters(2, 130)  # 131 * 131 states in 261 levels
    chain = local_counter("C", 3000, lambda g: g == (130, 130))
    cases = [
        (counters(1, 3000), 0, NARROW_AFTER),  # a level of one state, 3,000 times
        (
            replace(wide, threads=(*wide.threads, chain)),
            NARROW_AFTER,
            2 * NARROW_AFTER,
        ),
    ]
    for program, first, last in cases:
        fast = explore(program, Options(strategy="bfs"))
        with one_at_a_time():
            slow = explore(program, Options(strategy="bfs"))
        (note,) = fast.notes
        assert note.endswith(f"levels {first} to {last - 1} found only {NARROW_AFTER} new states")
        fast.notes.clear()
        assert plain(fast) == plain(slow) and fast.complete


def test_a_search_ending_at_the_narrow_check_stays_on_arrays() -> None:
    fast, slow = both(counters(1, NARROW_AFTER - 1), Options(strategy="bfs"))
    assert plain(fast) == plain(slow) and not fast.notes


def test_more_choices_than_int16_fall_back_with_the_same_schedule() -> None:
    def step(k: int, last: bool) -> Transition:
        def act(g: Any, loc: Any) -> tuple[Any, Any]:
            if last:
                raise Violation("the last choice fails")
            return g, loc

        return Transition("a", "b", f"choice {k}", act=act)

    n = CHOICES + 2
    program = MachineProgram(
        "many", 0, (Machine("T", "a", tuple(step(k, k == n - 1) for k in range(n))),)
    )
    fast = explore(program, Options(strategy="bfs", shrink=False))
    with one_at_a_time():
        slow = explore(program, Options(strategy="bfs", shrink=False))
    (note,) = fast.notes
    assert note.endswith(f"one state at a time: a thread has {n} enabled steps, over {CHOICES}")
    assert [c.schedule for c in fast.counterexamples] == [c.schedule for c in slow.counterexamples]
    assert fast.counterexamples[0].schedule.endswith(f":0/({n - 1})")
