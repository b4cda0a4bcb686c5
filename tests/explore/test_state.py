"""What goes into a state: generator locals by value, symmetric orders, counts under a bound."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import pytest

from pinlab.explore import (
    FinalCheck,
    GenThread,
    Machine,
    MachineProgram,
    Options,
    Transition,
    Unfreezable,
    WorldProgram,
    explore,
    replay,
)
from pinlab.interleave import Yield
from tests.explore.programs import E, Two, peterson_machine, steps_machine, two_threads


class W:
    def __init__(self) -> None:
        self.x = 0
        self.y = 0


def _reader(container: str) -> Any:
    """Reads x into a private container, yields, then publishes what it read as y."""

    def body(w: W) -> Generator[Yield, None, None]:
        got: Any = None
        yield "before read"
        if container == "list":
            got = [w.x]
        elif container == "dict":
            got = {"x": w.x}
        elif container == "set":
            got = {w.x}
        else:
            got = np.array([w.x])
        yield "before publish"
        w.y = next(iter(got.values())) if container == "dict" else min(got)

    return body


def _writer(w: W) -> Generator[Yield, None, None]:
    w.x = 1
    yield from ()


def private_local_program(container: str) -> WorldProgram:
    """review P0-2: the read value lives only in a local container until published."""
    return WorldProgram(
        f"private-{container}",
        W,
        (GenThread("A", _reader(container)), GenThread("B", _writer)),
        lambda w: (w.x, w.y),
        finals=(FinalCheck("y != 1", lambda w: w.y != 1),),
    )


@pytest.mark.parametrize("container", ["list", "dict", "set", "ndarray"])
def test_mutable_locals_are_part_of_the_state(container: str) -> None:
    program = private_local_program(container)
    cached = explore(program)
    uncached = explore(program, Options(cache=False))
    assert [(c.kind, c.name) for c in cached.counterexamples] == [("final", "y != 1")]
    assert [(c.kind, c.name) for c in uncached.counterexamples] == [("final", "y != 1")]
    assert replay(program, cached.counterexamples[0].schedule).reaches("final", "y != 1")


class Opaque:
    """An object with no value form (not a dataclass, not a container)."""


def _holds_object(w: W) -> Generator[Yield, None, None]:
    token = Opaque()
    yield "holding"
    w.x = 1 if token else 0


def test_a_local_that_cannot_be_frozen_is_refused_by_name() -> None:
    program = WorldProgram(
        "opaque", W, (GenThread("A", _holds_object), GenThread("B", _writer)), lambda w: w.x
    )
    with pytest.raises(Unfreezable, match=r"thread A in _holds_object:\d+: token holds a Opaque"):
        explore(program)
    stateless = explore(program, Options(cache=False))
    assert stateless.complete and not stateless.violated


def test_frozenset_locals_under_symmetry_give_the_real_state_count() -> None:
    """review P1-4: sorting with < (partial on sets) split one orbit into several forms."""
    take = Machine(
        "t",
        "p",
        (
            Transition(
                "p", "q", "take a", act=lambda g, _l: (g, frozenset({"a"})), reads=E, writes=E
            ),
            Transition(
                "p", "q", "take b", act=lambda g, _l: (g, frozenset({"b"})), reads=E, writes=E
            ),
        ),
        locals=frozenset(),
    )
    program = MachineProgram("fsym", 0, (take, take), symmetric=((0, 2),))
    plain = explore(program, Options(count_all=True))
    sym = explore(program, Options(count_all=True, symmetry=True))
    assert plain.states == 9
    assert (sym.states, sym.orbits) == (9, 6)


def test_mixed_none_and_int_locals_canonicalise() -> None:
    pick = Machine(
        "t",
        "p",
        (
            Transition("p", "q", "none", act=lambda g, _l: (g, None), reads=E, writes=E),
            Transition("p", "q", "one", act=lambda g, _l: (g, 1), reads=E, writes=E),
        ),
        locals=0,
    )
    program = MachineProgram("msym", 0, (pick, pick), symmetric=((0, 2),))
    sym = explore(program, Options(symmetry=True, count_all=True))
    assert sym.complete and sym.states == explore(program, Options(count_all=True)).states == 9


def test_symmetric_generator_threads_must_run_one_body() -> None:
    program = WorldProgram(
        "asym",
        W,
        (GenThread("A", _reader("list")), GenThread("B", _writer)),
        lambda w: (w.x, w.y),
        symmetric=((0, 2),),
    )
    with pytest.raises(ValueError, match="do not run one body"):
        explore(program, Options(symmetry=True))


def _bounded_states(sizes: tuple[int, ...], bound: int) -> int:
    """Brute force: states (positions) on schedules with at most ``bound`` preemptions."""
    states = set()

    def walk(pos: tuple[int, ...], last: int, pre: int) -> None:
        states.add(pos)
        for t, size in enumerate(sizes):
            if pos[t] == size:
                continue
            p = pre + (last >= 0 and last != t and pos[last] < sizes[last])
            if p <= bound:
                walk((*pos[:t], pos[t] + 1, *pos[t + 1 :]), t, p)

    walk((0,) * len(sizes), -1, 0)
    return len(states)


def three_threads(n: int) -> MachineProgram:
    return MachineProgram(
        f"three-{n}",
        Two(0, 0),
        tuple(steps_machine(name, "x", n) for name in "ABC"),
    )


@pytest.mark.parametrize("strategy", ["dfs", "bfs"])
@pytest.mark.parametrize("bound", [1, 2, 3, 50])
def test_distinct_states_under_a_preemption_bound(strategy: str, bound: int) -> None:
    """review P1-5: (state, last thread) cache keys were counted as states."""
    result = explore(three_threads(3), Options(strategy=strategy, preemption_bound=bound))
    assert result.states == _bounded_states((3, 3, 3), bound)
    assert _bounded_states((3, 3, 3), 1) < _bounded_states((3, 3, 3), 50) == 64
    for program, reachable in ((two_threads(3, 3, True), 16), (peterson_machine(True), 26)):
        assert explore(program, Options(strategy=strategy, preemption_bound=50)).states == reachable
