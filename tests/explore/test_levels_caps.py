"""Caps and state keys: a cap on states stops a breadth-first search there; a thread's
line is part of the state."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pinlab.explore import GenThread, Options, WorldProgram, explore
from pinlab.interleave import Yield
from tests.explore.programs import peterson_machine


@pytest.mark.parametrize("busy_wait", [False, True])
def test_bfs_stops_at_max_states(busy_wait: bool) -> None:
    """The cap is the user's bound: a search under it that reaches it is cut there and
    reports "max-states", never a complete search of more states (the arrays search,
    which has no cap, must step aside for it)."""
    full = explore(peterson_machine(busy_wait), Options(strategy="bfs", shrink=False))
    assert full.complete and full.states > 6
    for cap in (5, full.states // 2, full.states - 1):
        cut = explore(
            peterson_machine(busy_wait), Options(strategy="bfs", shrink=False, max_states=cap)
        )
        assert cut.states == cap, cap
        assert cut.limits_hit == ["max-states"] and not cut.complete, cap


class Flag:
    def __init__(self) -> None:
        self.done = False


def _same_label_twice(w: Flag) -> Generator[Yield, None, None]:
    yield "step"
    yield "step"
    w.done = True


@pytest.mark.parametrize("strategy", ["dfs", "bfs"])
def test_a_thread_at_two_points_with_equal_locals_is_two_states(strategy: str) -> None:
    """A thread's place in its code is part of the state: the same label and locals at two
    different lines are two states, else the cache would cut the run short."""
    prog = WorldProgram("twice", Flag, (GenThread("A", _same_label_twice),), lambda w: w.done)
    res = explore(prog, Options(strategy=strategy, shrink=False))
    assert res.complete and not res.violated
    # start, at the first "step", at the second, finished
    assert res.states == 4, res
    assert res.complete_schedules == 1, res
