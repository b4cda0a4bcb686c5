"""Classic programs with known answers, through both backends."""

from __future__ import annotations

from math import comb

import pytest

from pinlab.explore import Options, decode, explore, replay
from tests.explore.programs import (
    disjoint_world,
    live_lock_machine,
    lock_inversion_world,
    locked_counter_world,
    long_dfs_machine,
    lost_update_machine,
    lost_update_world,
    peterson_machine,
    two_threads,
)


@pytest.mark.parametrize("make", [lost_update_machine, lost_update_world])
@pytest.mark.parametrize("strategy", ["dfs", "bfs"])
def test_lost_update_found_shrunk_to_0110_and_replayed(make, strategy):  # type: ignore[no-untyped-def]
    program = make()
    result = explore(program, Options(strategy=strategy))
    assert result.violated and not result.complete
    (cx,) = result.counterexamples
    assert (cx.kind, cx.name) == ("final", "x == 2")
    assert cx.schedule.endswith(":0110")
    assert [m[0] for m in decode(cx.schedule)[2]] == [0, 1, 1, 0]
    rep = replay(program, cx.schedule)
    assert rep.verdict == ("final", "x == 2")
    assert "sequential consistency" in result.verdict


def test_unshrunk_lost_update_is_another_schedule_of_the_same_length():  # type: ignore[no-untyped-def]
    result = explore(lost_update_machine(), Options(shrink=False))
    assert result.counterexamples[0].schedule.endswith(":0101")


def test_dfs_counterexample_shrinks_to_bfs_length():  # type: ignore[no-untyped-def]
    program = long_dfs_machine(8)
    raw = explore(program, Options(strategy="dfs", shrink=False)).counterexamples[0]
    bfs = explore(program, Options(strategy="bfs", shrink=False)).counterexamples[0]
    shrunk = explore(program, Options(strategy="dfs")).counterexamples[0]
    assert raw.steps > bfs.steps == 2
    assert shrunk.steps == bfs.steps
    assert replay(program, shrunk.schedule).reaches("invariant", "not both started")


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 1), (2, 2), (3, 2), (4, 3), (5, 5)])
@pytest.mark.parametrize("strategy", ["dfs", "bfs"])
def test_schedules_of_two_threads_without_reduction_or_cache(n, m, strategy):  # type: ignore[no-untyped-def]
    result = explore(two_threads(n, m, shared_var=True), Options(strategy=strategy, cache=False))
    assert result.complete
    assert result.complete_schedules == result.schedules == comb(n + m, n)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (3, 2), (5, 5)])
@pytest.mark.parametrize("cache", [True, False])
def test_disjoint_threads_under_por_explore_one_complete_schedule(n, m, cache):  # type: ignore[no-untyped-def]
    program = two_threads(n, m, shared_var=False)
    reduced = explore(program, Options(por=True, cache=cache))
    assert reduced.complete and reduced.complete_schedules == 1
    plain = explore(program, Options(cache=cache))
    assert plain.complete_schedules == (1 if cache else comb(n + m, n))
    if cache:
        assert reduced.states == plain.states == (n + 1) * (m + 1)


def test_an_invariant_reading_both_variables_makes_the_steps_dependent():  # type: ignore[no-untyped-def]
    """Invariants count as reading what they read: x and y steps no longer commute."""
    program = long_dfs_machine(2)  # the same threads as two_threads(2, 2), one invariant on x, y
    opts = Options(por=True, cache=False, count_all=True, shrink=False)
    assert explore(two_threads(2, 2, shared_var=False), opts).complete_schedules == 1
    reduced = explore(program, opts)
    plain = explore(program, Options(count_all=True, shrink=False))
    assert reduced.complete_schedules == comb(4, 2)
    assert (reduced.states, reduced.violating_states) == (plain.states, plain.violating_states)


def test_disjoint_generator_threads_under_por_explore_one_complete_schedule():  # type: ignore[no-untyped-def]
    reduced = explore(disjoint_world(3, 4), Options(por=True, cache=False))
    assert reduced.complete and reduced.complete_schedules == 1
    assert explore(disjoint_world(3, 4), Options(cache=False)).complete_schedules == comb(7, 3)


@pytest.mark.parametrize("busy_wait", [True, False])
def test_peterson_holds_exhaustively(busy_wait):  # type: ignore[no-untyped-def]
    result = explore(peterson_machine(busy_wait))
    assert result.complete and not result.violated
    assert result.verdict.startswith("holds")


def test_broken_peterson_violates_mutual_exclusion():  # type: ignore[no-untyped-def]
    program = peterson_machine(busy_wait=True, broken=True)
    (cx,) = explore(program).counterexamples
    assert (cx.kind, cx.name) == ("invariant", "mutual exclusion")
    assert replay(program, cx.schedule).reaches("invariant", "mutual exclusion")


def test_lock_order_inversion_is_a_deadlock_with_both_positions():  # type: ignore[no-untyped-def]
    program = lock_inversion_world()
    result = explore(program)
    (cx,) = result.counterexamples
    assert cx.kind == "deadlock"
    a, b = cx.positions
    for pos, name, waits_for in ((a, "A", "'lock b'"), (b, "B", "'lock a'")):
        assert pos.startswith(f"{name} at {waits_for} in ") and pos.endswith("(blocked)")
        assert "_lock_pair.<locals>.body:" in pos and " > _lock_pair.<locals>.take:" in pos
    rep = replay(program, cx.schedule)
    assert rep.verdict == ("deadlock", "deadlock")
    assert rep.violations[0][3] == cx.positions


def test_locked_counter_holds_and_racy_counter_does_not():  # type: ignore[no-untyped-def]
    locked = explore(locked_counter_world(True))
    assert locked.complete and not locked.violated
    racy = explore(locked_counter_world(False))
    assert [(c.kind, c.name) for c in racy.counterexamples] == [("final", "x == 2")]


def test_generator_trace_names_function_and_line():  # type: ignore[no-untyped-def]
    program = locked_counter_world(False)
    cx = explore(program).counterexamples[0]
    text = replay(program, cx.schedule).render()
    assert "_incr:" in text and "after 'between load and store'" in text
    assert "(assuming sequential consistency)" in text


def test_generator_trace_shows_what_changed():  # type: ignore[no-untyped-def]
    program = locked_counter_world(True)
    cx = explore(locked_counter_world(False)).counterexamples[0]
    assert cx.shrink == "optimal"
    text = replay(locked_counter_world(False), cx.schedule).render()
    assert "| [0]: 0->1" in text  # world key (x, lock): only x changed
    assert explore(program, Options(shrink=False)).complete


def test_world_threads_are_restored_from_snapshots_not_replayed():  # type: ignore[no-untyped-def]
    from pinlab.explore.world import WorldSystem

    system = WorldSystem(locked_counter_world(True))
    system.policy = "always"  # "auto" snapshots only where a replay would cost more
    node = system.root()
    first_level = system.expand(node)
    assert len(first_level) == 2
    node = first_level[0][6]
    for _ in range(6):
        before = (system.replayed_steps, system.restores)
        children = system.expand(node)
        # the first child stays materialised; each further one is rebuilt from the
        # snapshot of this node and runs one step, whatever the depth
        assert (system.replayed_steps, system.restores) == (
            before[0],
            before[1] + len(children) - 1,
        )
        node = children[0][6]
    # backtracking to the root's other child: restore the root's snapshot, one step
    before = (system.replayed_steps, system.restores)
    sibling = first_level[1][6]
    assert system.key(sibling) == first_level[1][7]
    assert (system.replayed_steps, system.restores) == (before[0] + 1, before[1] + 1)


def test_count_all_counts_violating_states_past_the_first():  # type: ignore[no-untyped-def]
    program = long_dfs_machine(3)
    result = explore(program, Options(count_all=True))
    assert result.complete
    assert result.violating_states == 9  # x and y both in 1..3
    assert result.states == 16


def test_livelock_free_loop_terminates_with_the_cache():  # type: ignore[no-untyped-def]
    result = explore(live_lock_machine())
    assert result.complete and not result.violated
    bounded = explore(live_lock_machine(), Options(cache=False, max_steps=12))
    assert not bounded.complete and "max-steps" in bounded.limits_hit
