"""Edge cases of state keys (canon) and of the sampling strategies (walk)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import pytest

from pinlab.explore import (
    FinalCheck,
    GenThread,
    Invariant,
    MachineProgram,
    Options,
    WorldProgram,
    explore,
)
from pinlab.explore.canon import freeze
from pinlab.interleave import Yield
from tests.explore.programs import Two, fs, steps_machine

# --- canon: freezing values into state keys ----------------------------------------------------


def test_equal_dicts_freeze_alike_whatever_their_insertion_order() -> None:
    first = {"a": 1, "b": [2], "c": {"d": 3, "e": 4}}
    second = {"c": {"e": 4, "d": 3}, "b": [2], "a": 1}
    assert first == second and list(first) != list(second)
    assert freeze(first) == freeze(second)
    assert hash(freeze(first)) == hash(freeze(second))
    assert freeze(first) != freeze({**first, "a": 2})


class Box:
    def __init__(self) -> None:
        self.x = 0


def _dict_builder(ordered: bool) -> Callable[[Box], Generator[Yield, None, None]]:
    """Reads x, then builds {"a": 1, "b": 2}: in an order that depends on x unless ``ordered``."""

    def body(w: Box) -> Generator[Yield, None, None]:
        yield "before read"
        d = {"a": 1, "b": 2} if w.x or ordered else {"b": 2, "a": 1}
        yield "built"
        assert d == {"a": 1, "b": 2}

    return body


def _flip(w: Box) -> Generator[Yield, None, None]:
    w.x = 1
    yield "set"
    w.x = 0


def _dict_program(ordered: bool) -> WorldProgram:
    return WorldProgram(
        f"dict-order-{ordered}",
        Box,
        (GenThread("A", _dict_builder(ordered)), GenThread("B", _flip)),
        lambda w: w.x,
    )


@pytest.mark.parametrize("strategy", ["dfs", "bfs"])
def test_a_dict_built_in_two_orders_is_one_state(strategy: str) -> None:
    """The insertion order of a local dict is not state: the count matches a program that
    always builds it in one order."""
    varied = explore(_dict_program(ordered=False), Options(strategy=strategy))
    fixed = explore(_dict_program(ordered=True), Options(strategy=strategy))
    assert varied.complete and fixed.complete
    assert not varied.violated and not varied.errors
    assert varied.states == fixed.states


def test_arrays_with_the_same_bytes_but_different_shapes_freeze_differently() -> None:
    flat = np.arange(6, dtype=np.int64)
    tall, wide = flat.reshape(6, 1), flat.reshape(2, 3)
    assert flat.tobytes() == tall.tobytes() == wide.tobytes()
    keys = {freeze(flat), freeze(tall), freeze(wide), freeze(flat.reshape(3, 2))}
    assert len(keys) == 4
    assert freeze(wide) == freeze(np.arange(6, dtype=np.int64).reshape(2, 3))


def _adder(n: Any) -> Callable[[int], Any]:
    def add(x: int) -> Any:
        return x + n

    return add


def test_closures_of_one_code_freeze_by_what_they_captured() -> None:
    """canon.freeze: "a closure also stands for what it captured, frozen likewise"."""
    one, two = _adder(1), _adder(2)
    assert one.__code__ is two.__code__
    assert freeze(one) != freeze(two)
    assert freeze(one) == freeze(_adder(1))
    assert freeze(_adder([1, 2])) != freeze(_adder([1, 3]))
    assert freeze(_adder([1, 2])) == freeze(_adder([1, 2]))


# --- walk: random walk and PCT -----------------------------------------------------------------


def _fails_at_once(n: int) -> MachineProgram:
    """Both threads increment x; "x == 0" fails in every state after the first step."""
    return MachineProgram(
        "fails-at-once",
        Two(0, 0),
        (steps_machine("A", "x", n), steps_machine("B", "x", n)),
        invariants=(Invariant("x == 0", lambda s: s[0].x == 0, fs("x")),),
    )


@pytest.mark.parametrize("strategy", ["random", "pct"])
@pytest.mark.parametrize("count_all", [False, True])
def test_a_run_ends_at_its_first_invariant_failure(strategy: str, count_all: bool) -> None:
    runs = 20
    result = explore(
        _fails_at_once(5),
        Options(strategy=strategy, count_all=count_all, max_schedules=runs, seed=7),
    )
    assert [(c.kind, c.name) for c in result.counterexamples] == [("invariant", "x == 0")]
    # no run takes a step past the first failing state
    assert result.max_depth == 1
    assert result.complete_schedules == 0
    assert result.transitions == result.schedules
    assert result.schedules == (runs if count_all else 1)


def _disjoint(n: int) -> MachineProgram:
    return MachineProgram(
        f"disjoint-{n}",
        Two(0, 0),
        (steps_machine("A", "x", n), steps_machine("B", "y", n)),
        finals=(FinalCheck("both done", lambda s: s[0].x == s[0].y == n),),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pct_learns_the_run_length_from_its_first_run(seed: int) -> None:
    """Without max_steps, PCT's first run is a random walk that sets k; later runs are
    PCT runs.  At depth 1 there are no change points, so a PCT run lets the
    highest-priority thread run to its end: after the first run only the two serial
    schedules appear, which visit few of the (n+1)^2 states a random walk would."""
    n = 12
    pct = explore(_disjoint(n), Options(strategy="pct", pct_depth=1, max_schedules=60, seed=seed))
    assert not pct.violated and pct.schedules == pct.complete_schedules == 60
    path = 2 * n + 1  # states along one run
    assert pct.states <= 3 * path
    walk = explore(_disjoint(n), Options(strategy="random", max_schedules=60, seed=seed))
    assert walk.states > 3 * path  # the bound above is not met by chance
