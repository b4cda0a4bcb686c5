"""Reduction never changes the verdict: random programs, reduced vs unreduced search."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinlab.explore import Options, Program, Result, explore, replay
from tests.explore.programs import build_machine, build_world, random_spec

ROOT = Path(__file__).resolve().parents[2]
REDUCED = Options(count_all=True, shrink=False, por=True, symmetry=True)
PLAIN = Options(count_all=True, shrink=False)


def properties(result: Result) -> set[tuple[str, str]]:
    return {(c.kind, c.name) for c in result.counterexamples}


def check_equivalent(program: Program) -> None:
    plain = explore(program, PLAIN)
    reduced = explore(program, REDUCED)
    assert plain.complete and reduced.complete
    assert properties(reduced) == properties(plain)
    # sleep sets prune transitions, never states; orbit sizes add up to the full count
    assert reduced.states == plain.states
    assert reduced.violating_states == plain.violating_states
    assert reduced.transitions <= plain.transitions
    first_plain = explore(program, Options(shrink=False))
    first_reduced = explore(program, Options(shrink=False, por=True, symmetry=True))
    assert first_plain.violated == first_reduced.violated == plain.violated
    for result in (plain, reduced, first_reduced):
        for cx in result.counterexamples:
            assert replay(program, cx.schedule, trace=False).reaches(cx.kind, cx.name), cx


def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**32 - 1)


# review P0-1: a choice between a guarded step and another; thread 1 makes the guard
# true, which shifted the enabled-choice index the sleep set named the untaken step by
CHOICE_SHIFT = {
    "id": 1,
    "vars": 2,
    "threads": [[["choice", ["await_eq", 0, 1], ["set", 1, 2]]], [["set", 0, 1]]],
    "loop": [False, False],
    "sym": False,
    "invs": [],
    "finals": [[1, 0]],
}


def test_sleep_sets_survive_guards_that_shift_choice_indices() -> None:
    program = build_machine(CHOICE_SHIFT)
    plain = explore(program, PLAIN)
    assert properties(plain) == {("final", "final v1 != 0")}
    check_equivalent(program)
    for cache in (True, False):
        reduced = explore(program, Options(por=True, cache=cache, shrink=False))
        assert properties(reduced) == properties(plain)


def test_generator_makes_guarded_choices() -> None:
    rng = random.Random(3)
    specs = [random_spec(rng, i, world=False) for i in range(200)]
    guarded = [
        op
        for spec in specs
        for ops in spec["threads"]
        for op in ops
        if op[0] == "choice" and any(alt[0] == "await_eq" for alt in op[1:])
    ]
    assert len(guarded) > 100
    # alternatives are plain steps: no choice inside a choice
    assert all(alt[0] != "choice" for op in guarded for alt in op[1:])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seeds())
def test_reduced_search_agrees_on_state_machines(seed: int) -> None:
    check_equivalent(build_machine(random_spec(random.Random(seed), seed, world=False)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seeds())
def test_reduced_search_agrees_on_generator_threads(seed: int) -> None:
    check_equivalent(build_world(random_spec(random.Random(seed), seed, world=True)))


@settings(max_examples=60, deadline=None)
@given(seeds())
def test_both_backends_agree_on_the_same_program(seed: int) -> None:
    spec = random_spec(random.Random(seed), seed, world=True)
    machine = explore(build_machine(spec), PLAIN)
    world = explore(build_world(spec), PLAIN)
    assert properties(machine) == properties(world)


_REPLAYER = """
import json, sys
from pinlab.explore import explore, Options, replay
from tests.explore.programs import build_machine, build_world
out = []
for item in json.load(sys.stdin):
    build = build_world if item["world"] else build_machine
    program = build(item["spec"])
    rep = replay(program, item["schedule"], trace=False)
    again = explore(program, Options(strategy="random", seed=item["id"], max_schedules=20))
    ends_in = [list(v[:2]) for v in rep.violations]
    out.append([ends_in, [c.schedule for c in again.counterexamples], again.states])
print(json.dumps(out))
"""


def test_schedules_replay_in_a_fresh_process_with_another_hash_seed() -> None:
    rng = random.Random(20240601)
    items: list[dict[str, Any]] = []
    expected = []
    attempts = 0
    while len(items) < 25:
        attempts += 1
        ident = attempts
        world = attempts % 3 == 0
        spec = random_spec(rng, ident, world)
        program = build_world(spec) if world else build_machine(spec)
        result = explore(program, Options(por=True, symmetry=True))
        if not result.counterexamples:
            continue
        cx = result.counterexamples[0]
        ends_in = [list(v[:2]) for v in replay(program, cx.schedule, trace=False).violations]
        assert [cx.kind, cx.name] in ends_in
        again = explore(program, Options(strategy="random", seed=ident, max_schedules=20))
        items.append({"spec": spec, "world": world, "schedule": cx.schedule, "id": ident})
        expected.append([ends_in, [c.schedule for c in again.counterexamples], again.states])
    for hash_seed in ("1", "987654"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", _REPLAYER],
            input=json.dumps(items),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        )
        got = json.loads(proc.stdout)
        assert got == expected
