"""Where the breadth-first search on arrays steps aside: a key must leave the sign bit
free, a choice must fit an int16, and narrow levels go back to one state at a time."""

from __future__ import annotations

import pytest

from pinlab.explore import Machine, MachineProgram, Options, Transition, explore
from pinlab.explore.arrays import CHOICES, KEY_BITS
from pinlab.explore.levels import NARROW, NARROW_AFTER

ONE_AT_A_TIME = "breadth-first search took one state at a time"


def _stepped_aside(notes: list[str]) -> bool:
    return any(n.startswith(ONE_AT_A_TIME) for n in notes)


def test_a_state_needing_every_bit_of_a_key_is_searched_one_state_at_a_time() -> None:
    """21 threads over 8 distinct start states need 1 + 21 * 3 = 64 key bits: one more
    than a signed key may use.  The search still answers, one state at a time."""
    assert KEY_BITS + 1 == 1 + 21 * 3
    threads = tuple(Machine(f"t{i}", f"s{i % 8}", ()) for i in range(21))
    res = explore(MachineProgram("wide", 0, threads), Options(strategy="bfs"))
    assert res.complete and not res.violated and res.states == 1
    assert _stepped_aside(res.notes), res.notes


def _fan(width: int) -> MachineProgram:
    """One thread with ``width`` enabled steps from its start, each to its own end."""
    steps = tuple(
        Transition("s", "e", "pick", act=lambda g, loc, i=i: (g, i)) for i in range(width)
    )
    return MachineProgram(f"fan-{width}", 0, (Machine("T", "s", steps),))


@pytest.mark.parametrize(("width", "aside"), [(CHOICES, False), (CHOICES + 1, True)])
def test_a_choice_index_must_fit_an_int16(width: int, aside: bool) -> None:
    """A child's choice is kept as an int16: 32767 steps from one state (choices 0..32766)
    fit, one more does not."""
    assert CHOICES == 2**15 - 1
    res = explore(_fan(width), Options(strategy="bfs"))
    assert res.complete and res.states == 1 + width
    assert res.complete_schedules == width
    assert _stepped_aside(res.notes) is aside, res.notes


def _layers(width: int, depth: int) -> MachineProgram:
    """One thread whose level d holds the ``width`` states (d, j) for d = 1..depth."""
    steps = tuple(
        Transition(
            "p", "p", f"to {j}", guard=lambda g, loc: loc[0] < depth,
            act=lambda g, loc, j=j: (g, (loc[0] + 1, j)),
        )
        for j in range(width)
    )  # fmt: skip
    return MachineProgram(
        f"layers-{width}", 0, (Machine("T", "p", steps, (0, 0), frozenset({"p"})),)
    )


@pytest.mark.parametrize(("width", "aside"), [(NARROW, False), (NARROW - 1, True)])
def test_levels_narrower_than_narrow_go_back_to_one_state_at_a_time(
    width: int, aside: bool
) -> None:
    """Fewer than NARROW new states a level over NARROW_AFTER levels do not repay a
    level's fixed cost; exactly NARROW a level do."""
    depth = NARROW_AFTER + 2
    res = explore(_layers(width, depth), Options(strategy="bfs", shrink=False))
    assert res.complete and not res.violated
    assert res.states == 1 + width * depth
    assert _stepped_aside(res.notes) is aside, res.notes
