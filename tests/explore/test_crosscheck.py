"""Every search mode agrees with every other on random programs (issue 14, item 5).

One program, searched every way the explorer can: depth-first plain, with sleep sets,
with symmetry, without the state cache, under a preemption bound with and without the
cache; breadth-first one state at a time and on arrays.  All of them reach the same
verdict; the exhaustive ones reach the same states; the limits a search reports are
the ones it was given.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from operator import attrgetter
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pinlab.explore import Options, Program, Result, explore, levels
from tests.explore.programs import build_machine, build_world, random_spec

ALL = Options(count_all=True, shrink=False)  # count every violating state, do not shrink
# stateless searches of a tree with more schedules than this are left out (a few
# programs in a hundred; the largest trees have over a million schedules); a step of a
# generator thread costs some 300 times one of a state machine
TREE_BUDGET = 20_000
WORLD_TREE_BUDGET = 2_000
# the depth limit of stateless searches of looping programs, unless one is drawn
LOOP_DEPTH = 6

# what two walks of one tree of schedules count alike
TREE_COUNTS = attrgetter(
    "states", "violating_states", "transitions", "schedules", "complete_schedules", "max_depth"
)
Search = Callable[[Program, Options], Result]


def verdict(result: Result) -> frozenset[tuple[str, str]]:
    """The violated properties (all of them, under ``count_all``)."""
    return frozenset((c.kind, c.name) for c in result.counterexamples)


def plain(program: Program, opts: Options) -> Result:
    return explore(program, opts)


def arrays(program: Program, opts: Options) -> Result:
    """Breadth-first search of a state machine, which must run on arrays throughout."""
    with mock.patch.object(levels, "bfs", wraps=levels.bfs) as spy:
        result = explore(program, replace(opts, strategy="bfs"))
    assert spy.called and not result.notes, result.notes
    return result


def one_at_a_time(program: Program, opts: Options) -> Result:
    """Breadth-first search one state at a time, as without the arrays."""
    with mock.patch.object(levels, "applies", lambda *_a: False):
        return explore(program, replace(opts, strategy="bfs"))


def run_all(program: Program, modes: dict[str, tuple[Search, Options]]) -> dict[str, Result]:
    return {name: search(program, opts) for name, (search, opts) in modes.items()}


def same(results: dict[str, Result], what: Callable[[Result], Any], label: str) -> None:
    """``what`` is one value over all the results."""
    values = {name: what(r) for name, r in results.items()}
    assert len(set(values.values())) == 1, f"{label} differs: {values}"


def clean(result: Result) -> None:
    """Random programs raise only violations."""
    assert not result.errors and not result.unmodelled and not result.interrupted, result


def longest(spec: dict[str, Any]) -> int:
    """An upper bound on the length of a schedule of a program without loops: each
    step moves one thread on by an op (or, for generator threads, to its first yield)."""
    runs = [len(ops) + 1 for ops in spec["threads"]]
    return sum(runs) + (runs[0] if spec["sym"] else 0)


def check_exhaustive(program: Program, machine: bool, sym: bool) -> dict[str, Result]:
    """Complete searches, reduced or not: one verdict, one state count."""
    modes: dict[str, tuple[Search, Options]] = {
        "dfs": (plain, ALL),
        "dfs por": (plain, replace(ALL, por=True)),
        "bfs": (one_at_a_time, ALL),
    }
    if machine:
        modes["bfs arrays"] = (arrays, ALL)
    if sym:
        modes["dfs symmetry"] = (plain, replace(ALL, symmetry=True))
        modes["dfs por symmetry"] = (plain, replace(ALL, por=True, symmetry=True))
        modes["bfs symmetry"] = (plain, replace(ALL, strategy="bfs", symmetry=True))
    results = run_all(program, modes)
    for r in results.values():
        clean(r)
        assert r.complete and not r.limits_hit and r.preemption_bound is None, r
    same(results, verdict, "the verdict")
    # sleep sets prune transitions, never states; under symmetry ``states`` adds up
    # the orbits, so every search counts every reachable state and violating state
    same(results, lambda r: r.states, "states")
    same(results, lambda r: r.violating_states, "violating states")
    unreduced = {k: results[k] for k in ("dfs", "bfs", "bfs arrays") if k in results}
    same(unreduced, attrgetter("transitions", "schedules", "complete_schedules"), "counts")
    assert results["dfs por"].transitions <= results["dfs"].transitions
    # the first counterexample: found by every mode or by none
    first = {
        name: search(program, replace(opts, count_all=False))
        for name, (search, opts) in modes.items()
    }
    for name, r in first.items():
        clean(r)
        assert r.violated == bool(verdict(results["dfs"])), name
        assert verdict(r) <= verdict(results["dfs"]), name
        assert r.complete == (not r.violated), name
    return results


def check_preemption_bound(program: Program, dfs: Result, bound: int, loops: bool) -> None:
    """A bound no schedule needs to exceed cuts nothing that matters: the same states and
    verdict; without loops (``bound`` at least the longest schedule) it cuts nothing."""
    modes: dict[str, tuple[Search, Options]] = {
        "dfs bound": (plain, replace(ALL, preemption_bound=bound)),
        "bfs bound": (plain, replace(ALL, strategy="bfs", preemption_bound=bound)),
    }
    results = run_all(program, modes)
    results["dfs"] = dfs
    same(results, verdict, "the verdict")
    same(results, lambda r: r.states, "states")
    same(results, lambda r: r.violating_states, "violating states")
    for name in modes:
        r = results[name]
        clean(r)
        assert r.complete, (name, r)
        if not loops:
            assert not r.limits_hit and r.preemption_bound is None, (name, r)
        else:
            assert r.limits_hit in ([], [f"preemption bound {bound}"]), (name, r)
    # tight bounds: depth-first and breadth-first reach the states within k preemptions
    fewer = dfs.states
    for k in (2, 1):
        tight = {
            f"dfs bound {k}": explore(program, replace(ALL, preemption_bound=k)),
            f"bfs bound {k}": explore(program, replace(ALL, strategy="bfs", preemption_bound=k)),
        }
        for r in tight.values():
            clean(r)
            assert r.complete and r.limits_hit in ([], [f"preemption bound {k}"]), r
        same(tight, verdict, "the verdict")
        same(tight, lambda r: (r.states, r.violating_states), "states")
        assert tight[f"dfs bound {k}"].states <= fewer
        fewer = tight[f"dfs bound {k}"].states


def check_stateless(
    program: Program, machine: bool, max_steps: int | None, limit: int, budget: int
) -> None:
    """Searches without the state cache walk the tree of schedules (down to ``max_steps``):
    depth-first and breadth-first walk the same tree, which holds every state the cached
    breadth-first search reaches within ``max_steps``; a cap on schedules above the
    tree's count changes nothing, below it cuts there; a depth limit is kept."""
    tree_opts = replace(ALL, cache=False, max_steps=max_steps)
    probe = explore(program, replace(tree_opts, max_schedules=budget))
    if "max-schedules" in probe.limits_hit:
        event("stateless tree over the budget")
        return
    event(f"stateless tree {'to depth ' + str(max_steps) if max_steps else 'whole'}")
    tree = explore(program, tree_opts)
    bound = max_steps or limit  # more than the preemptions of any schedule in the tree
    modes: dict[str, tuple[Search, Options]] = {
        "dfs no cache capped above": (plain, replace(tree_opts, max_schedules=tree.schedules + 1)),
        "dfs no cache bound": (plain, replace(tree_opts, preemption_bound=bound)),
        "bfs no cache": (plain, replace(tree_opts, strategy="bfs")),
    }
    if max_steps is None:  # sleep sets may miss states under a depth limit
        modes["dfs no cache por"] = (plain, replace(tree_opts, por=True))
    results = run_all(program, modes)
    results["dfs no cache"] = tree
    results["capped at the budget"] = probe
    for r in results.values():
        clean(r)
        if max_steps is not None:
            assert r.max_depth <= max_steps, r
    # one tree, whichever way it is walked: the same counts, depth and limits
    same(results, verdict, "the verdict")
    same(results, lambda r: r.states, "states")
    same(results, lambda r: r.violating_states, "violating states")
    full = {k: v for k, v in results.items() if k != "dfs no cache por"}
    same(full, TREE_COUNTS, "counts")
    # the bound cuts nothing (it stays in the result when a depth limit cut the search)
    same(full, lambda r: (r.complete, frozenset(r.limits_hit)), "limits")
    if tree.complete:
        assert results["dfs no cache bound"].preemption_bound is None
    if max_steps is None:
        assert tree.complete and not tree.limits_hit and tree.max_depth <= limit
    else:
        assert tree.complete == ("max-steps" not in tree.limits_hit)
    if "dfs no cache por" in results:
        assert results["dfs no cache por"].transitions <= tree.transitions
    # tight bounds cut the tree the same way depth-first and breadth-first
    for k in (1, 2):
        tight = {
            f"dfs no cache bound {k}": explore(program, replace(tree_opts, preemption_bound=k)),
            f"bfs no cache bound {k}": explore(
                program, replace(tree_opts, strategy="bfs", preemption_bound=k)
            ),
        }
        for r in tight.values():
            clean(r)
            assert r.states <= tree.states and r.schedules <= tree.schedules
        same(tight, TREE_COUNTS, "counts")
        same(tight, verdict, "the verdict")
        same(tight, lambda r: (r.complete, frozenset(r.limits_hit), r.preemption_bound), "limits")
    # a cap below the count stops the search there, and says so
    if tree.schedules > 1:
        cut = explore(program, replace(tree_opts, max_schedules=tree.schedules - 1))
        assert cut.schedules == tree.schedules - 1
        assert "max-schedules" in cut.limits_hit and not cut.complete
    # the first counterexample, if any, on the same tree
    for strategy in ("dfs", "bfs"):
        first = explore(program, replace(tree_opts, strategy=strategy, count_all=False))
        assert first.violated == tree.violated and verdict(first) <= verdict(tree), strategy
    # the tree down to max_steps holds the states a cached breadth-first search reaches
    # in max_steps steps, and the same violations; a cached depth-first search, some
    cached: dict[str, tuple[Search, Options]] = {
        "bfs": (one_at_a_time, replace(ALL, max_steps=max_steps)),
    }
    if machine:
        cached["bfs arrays"] = (arrays, replace(ALL, max_steps=max_steps))
    within = run_all(program, cached)
    within["dfs no cache"] = tree
    same(within, lambda r: r.states, "states within the depth limit")
    same(within, verdict, "the verdict within the depth limit")
    same(within, lambda r: r.violating_states, "violating states within the depth limit")
    # (the cache sees a loop's states again where the tree goes on to the depth limit)
    same(
        {k: v for k, v in within.items() if k.startswith("bfs")},
        lambda r: (r.complete, frozenset(r.limits_hit), r.max_depth, r.transitions),
        "breadth-first searches within the depth limit",
    )
    dfs = explore(program, replace(ALL, max_steps=max_steps))
    assert dfs.states <= tree.states and verdict(dfs) <= verdict(tree)
    if max_steps is not None:
        assert max(r.max_depth for r in (*within.values(), dfs)) <= max_steps


def check_program(spec: dict[str, Any], machine: bool, max_steps: int | None) -> None:
    program = build_machine(spec) if machine else build_world(spec)
    loops = any(spec["loop"])
    exhaustive = check_exhaustive(program, machine, bool(spec["sym"]))
    limit = longest(spec)
    # Without loops a schedule has fewer preemptions than steps, and at most ``limit``
    # steps.  With loops schedules have no longest, but every state is within as many
    # steps of the start as breadth-first search went deep (a failing step one more),
    # so within as many preemptions.
    bound = max(1, exhaustive["bfs"].max_depth) if loops else limit
    check_preemption_bound(program, exhaustive["dfs"], bound, loops)
    if loops and max_steps is None:
        max_steps = LOOP_DEPTH
    budget = TREE_BUDGET if machine else WORLD_TREE_BUDGET
    check_stateless(program, machine, max_steps, limit, budget)


def depth_limits() -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(1, 8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), depth_limits())
# guarded choices another thread enables: a sleep set naming a step by its index among
# the enabled ones (review P0-1) loses states here; one random program in a hundred
# shows it, and the 100 examples drawn in CI happen to miss it
@example(seed=694, max_steps=None)
def test_modes_agree_on_state_machines(seed: int, max_steps: int | None) -> None:
    check_program(random_spec(random.Random(seed), seed, world=False), True, max_steps)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), depth_limits())
def test_modes_agree_on_generator_threads(seed: int, max_steps: int | None) -> None:
    check_program(random_spec(random.Random(seed), seed, world=True), False, max_steps)
