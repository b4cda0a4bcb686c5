"""PCT's draws and preemptions, the shrinker's ranking of equally short schedules, and
freezing a value that contains itself."""

from __future__ import annotations

import random

import pytest

from pinlab.explore import Invariant, Machine, MachineProgram, Options, Transition, explore
from pinlab.explore.canon import Unfreezable, freeze
from pinlab.explore.schedule import decode
from pinlab.explore.walk import pct_plan
from tests.explore.programs import Two, fs

# --- PCT (Burckhardt et al., ASPLOS 2010) ------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("k", [0, 1, 5])
def test_pct_draws_distinct_priorities_above_every_change_point(n: int, d: int, k: int) -> None:
    """Threads start at priorities d..d+n-1 and the j-th change point drops a thread to j
    (1..d-1), strictly below every starting priority; change points are d-1 distinct
    steps among 1..max(k, d), and every one of those steps can be drawn."""
    rng = random.Random(5)
    drawn: set[int] = set()
    for _ in range(400):
        prio, changes = pct_plan(rng, n, d, k)
        assert sorted(prio) == list(range(d, d + n))
        assert sorted(changes.values()) == list(range(1, d))
        assert len(changes) == d - 1
        assert set(changes) <= set(range(1, max(k, d) + 1))
        drawn |= set(changes)
    assert drawn == (set(range(1, max(k, d) + 1)) if d > 1 else set())


def _writer_reader() -> MachineProgram:
    """Thread 0 sets x to 1 and back to 0; thread 1 fails if it reads x == 1.  Only a
    preemption of thread 0 by thread 1 finds it."""
    set_x = Transition(
        "s0", "s1", "x = 1", act=lambda g, loc: (g._replace(x=1), loc), reads=fs(), writes=fs("x")
    )
    clear_x = Transition(
        "s1", "s2", "x = 0", act=lambda g, loc: (g._replace(x=0), loc), reads=fs(), writes=fs("x")
    )
    read_x = Transition(
        "r0", "r1", "y = x", act=lambda g, loc: (g._replace(y=g.x), loc), reads=fs("x"),
        writes=fs("y"),
    )  # fmt: skip
    return MachineProgram(
        "writer-reader",
        Two(0, 0),
        (Machine("W", "s0", (set_x, clear_x)), Machine("R", "r0", (read_x,))),
        invariants=(Invariant("reader never sees 1", lambda s: s[0].y == 0, fs("y")),),
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pct_depth_2_preempts_the_first_thread_for_the_second(seed: int) -> None:
    """With max_steps every run is a PCT run (no random first run).  At depth 2, a thread
    reaching the change point drops below the other thread, whichever index it has: when
    thread 0 runs first and the change point is its first step, thread 1 reads x == 1."""
    res = explore(
        _writer_reader(),
        Options(strategy="pct", pct_depth=2, max_steps=4, max_schedules=200, seed=seed),
    )
    assert [(c.kind, c.name) for c in res.counterexamples] == [("invariant", "reader never sees 1")]


# --- shrink: equally short schedules are ranked by context switches ----------------------------


def _appender(letters: str) -> Machine:
    """A thread of three steps, each appending one of ``letters`` (a choice)."""
    return Machine(
        "A",
        "p0",
        tuple(
            Transition(
                f"p{i}", f"p{i + 1}", f"append {c}", act=lambda g, loc, c=c: (g + c, loc),
                reads=fs(), writes=fs(),
            )
            for i in range(3)
            for c in letters
        ),
    )  # fmt: skip


def _tagger() -> Machine:
    mark = Transition("t0", "t1", "append T", act=lambda g, loc: (g + "T", loc))
    return Machine("B", "t0", (mark,))


def test_shrink_prefers_fewer_thread_switches_not_fewer_choice_changes() -> None:
    """Two shortest counterexamples: "xyxT" switches thread once but changes choice twice;
    "xTxx" switches thread twice and never changes choice.  A context switch is a change
    of thread, so the shrinker returns "xyxT"."""
    prog = MachineProgram(
        "two-shortest",
        "",
        (_appender("xy"), _tagger()),
        invariants=(Invariant("not a target", lambda s: s[0] not in ("xyxT", "xTxx")),),
    )
    res = explore(prog, Options(strategy="dfs"))
    (cex,) = res.counterexamples
    assert cex.shrink == "optimal"
    moves = decode(cex.schedule)[2]
    assert moves == [(0, 0), (0, 1), (0, 0), (1, 0)], cex.schedule


# --- canon: a value that contains itself --------------------------------------------------------


def test_a_value_that_contains_itself_is_refused_by_name() -> None:
    """A cyclic local has no finite value form: freezing it raises Unfreezable naming the
    cycle, not a RecursionError."""
    loop: list[object] = [1]
    loop.append(loop)
    with pytest.raises(Unfreezable, match="cyclic"):
        freeze(loop)
    table: dict[str, object] = {}
    table["self"] = [table]
    with pytest.raises(Unfreezable, match=r"cyclic"):
        freeze(table)
    shared = [1, 2]
    assert freeze([shared, shared]) == freeze([[1, 2], [1, 2]])  # shared is not cyclic
