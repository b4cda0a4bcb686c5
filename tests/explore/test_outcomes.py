"""Three outcomes of a step, never mixed: a violation (a verdict), an unmodelled path (the
branch ends, no verdict) and an error (a bug in pinlab); and the exit status they give."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from pinlab.cli.explore import _explore
from pinlab.explore import (
    GenThread,
    Machine,
    MachineProgram,
    Options,
    Result,
    ScheduleError,
    Transition,
    WorldProgram,
    decode,
    encode,
    explore,
    replay,
    shrink,
)
from pinlab.explore.result import (
    BAD_INPUT,
    ERROR,
    HOLDS,
    INCONCLUSIVE,
    INTERRUPTED,
    VIOLATED,
    Counterexample,
    ErrorReport,
    UnmodelledPath,
    exit_code,
)
from pinlab.interleave import Point, Unmodelled, Violation, Yield
from tests.explore.programs import lost_update_world
from tests.explore.test_levels import both, plain

HERE = Path(__file__).name
E: frozenset[str] = frozenset()
X = frozenset({"x"})


class World:
    def __init__(self) -> None:
        self.x = 0
        self.table: dict[str, int] = {}


def lookup(table: dict[str, int], key: str) -> int:
    return table[key]  # the KeyError's innermost frame


LOOKUP_LINE = lookup.__code__.co_firstlineno + 1


def checker(w: World) -> Generator[Yield, None, None]:
    """Reads x after a preemption point: 0 is a path the model does not cover, 1 a BUG_ON."""
    yield Point("check", X, E)
    if w.x == 0:
        raise Unmodelled("check_x", "x still 0")
    if w.x == 1:
        raise Violation("BUG_ON x == 1")


def setter(w: World) -> Generator[Yield, None, None]:
    yield Point("set", E, X)
    w.x = 1


def quiet_setter(w: World) -> Generator[Yield, None, None]:
    yield Point("set", E, X)
    w.x = 2  # the checker's BUG_ON never fires


def buggy(w: World) -> Generator[Yield, None, None]:
    """A pinlab bug once x is 1: a KeyError from a helper."""
    yield Point("look", X, E)
    if w.x == 1:
        lookup(w.table, "missing")


def world(name: str, *threads: GenThread) -> WorldProgram:
    return WorldProgram(name, World, threads, lambda w: w.x)


def both_outcomes() -> WorldProgram:
    """The checker's step is unmodelled before the setter runs and violates after it."""
    return world("both", GenThread("checker", checker, E, E), GenThread("setter", setter, E, E))


def unmodelled_only() -> WorldProgram:
    return world(
        "unmodelled-only",
        GenThread("checker", checker, E, E),
        GenThread("setter", quiet_setter, E, E),
    )


def with_error() -> WorldProgram:
    return world("error", GenThread("buggy", buggy, E, E), GenThread("setter", setter, E, E))


# (strategy, por, cache): every exhaustive search records the same outcomes and counts
SEARCHES = [("dfs", False, True), ("dfs", True, True), ("dfs", False, False), ("bfs", False, True)]


@pytest.mark.parametrize(("strategy", "por", "cache"), SEARCHES)
def test_unmodelled_and_violation_are_reported_apart(strategy: str, por: bool, cache: bool) -> None:
    program = both_outcomes()
    opts = Options(strategy=strategy, por=por, cache=cache, count_all=True)
    result = explore(program, opts)
    # the checker at "check" with x == 0: the setter not started, or at "set"
    (u,) = result.unmodelled
    assert (u.function, u.reason, u.count) == ("check_x", "x still 0", 2)
    assert str(u) == "unmodelled: check_x: x still 0"
    (cx,) = result.counterexamples
    assert (cx.kind, cx.name) == ("assertion", "BUG_ON x == 1")
    assert result.violating_states == 1  # an unmodelled path is never a violation
    assert not result.errors
    assert result.complete
    assert exit_code(result) == VIOLATED
    # each schedule replays to its own outcome
    rep = replay(program, u.schedule)
    assert rep.unmodelled == ("check_x", "x still 0") and not rep.violations
    assert exit_code(rep) == INCONCLUSIVE
    assert "UNMODELLED check_x: x still 0" in rep.render()
    rep = replay(program, cx.schedule)
    assert rep.verdict == ("assertion", "BUG_ON x == 1") and rep.unmodelled is None
    assert exit_code(rep) == VIOLATED


def test_an_unmodelled_path_does_not_stop_the_search_a_violation_does() -> None:
    result = explore(both_outcomes(), Options(strategy="dfs"))
    # depth-first meets the unmodelled path first, goes on, and stops at the violation
    assert [u.function for u in result.unmodelled] == ["check_x"]
    assert len(result.counterexamples) == 1 and not result.complete


def test_unmodelled_is_never_shrunk_as_a_counterexample() -> None:
    program = both_outcomes()
    (u,) = explore(program, Options(count_all=True)).unmodelled
    moves = decode(u.schedule)[2]
    # no property of that name, even spelled as the step's outcome, is ever found
    assert shrink(program, "assertion", "unmodelled: check_x", moves) == (moves, False)
    assert explore(program, Options(count_all=True, shrink=False)).unmodelled == [u]


@pytest.mark.parametrize(("strategy", "por", "cache"), SEARCHES)
def test_unmodelled_only_is_inconclusive(strategy: str, por: bool, cache: bool) -> None:
    result = explore(unmodelled_only(), Options(strategy=strategy, por=por, cache=cache))
    assert result.complete and not result.violated and not result.errors
    assert [(u.function, u.count) for u in result.unmodelled] == [("check_x", 2)]
    assert result.verdict == (
        "holds on the modelled paths (1 unmodelled path not explored), "
        "assuming sequential consistency"
    )
    assert exit_code(result) == INCONCLUSIVE


@pytest.mark.parametrize("strategy", ["dfs", "bfs", "random", "pct"])
def test_an_error_is_reported_with_its_location_and_replays(strategy: str) -> None:
    program = with_error()
    result = explore(program, Options(strategy=strategy, max_schedules=200, seed=3))
    (err,) = result.errors
    assert (err.type, err.message, err.function, err.thread) == (
        "KeyError",
        "'missing'",
        "lookup",
        "buggy",
    )
    assert err.location.endswith(f"{HERE}:{LOOKUP_LINE}")
    assert not result.counterexamples and not result.unmodelled
    assert result.violating_states == 0
    assert not result.complete  # the search stops at the first error
    assert exit_code(result) == ERROR
    assert result.verdict.startswith(f"error in pinlab: KeyError at {err.location} in lookup")
    rep = replay(program, err.schedule)
    assert rep.error == ("KeyError", "'missing'", err.location, "lookup")
    assert not rep.violations and exit_code(rep) == ERROR
    assert f"ERROR (a bug in pinlab) KeyError: 'missing' at {err.location} in lookup" in (
        rep.render()
    )


def test_a_replay_refuses_steps_after_an_unmodelled_path() -> None:
    program = unmodelled_only()
    (u,) = explore(program).unmodelled
    moves = decode(u.schedule)[2]
    other = 1 - moves[-1][0]
    with pytest.raises(ScheduleError, match="already ended with unmodelled: check_x"):
        replay(program, encode(program, [*moves, (other, 0)]))


def _fails(_g: Any, _l: Any) -> tuple[Any, Any]:
    raise Unmodelled("machine_step", "not covered")


def _bug(_g: Any, _l: Any) -> tuple[Any, Any]:
    return {}["gone"]  # type: ignore[no-any-return]


class G(NamedTuple):
    x: int


def machine(act: Any) -> MachineProgram:
    """Thread A may take a step that fails (unless B has set x) or end; B sets x."""
    a = Machine(
        "A",
        "a",
        (
            Transition("a", "b", "fail", guard=lambda g, _l: g.x == 0, act=act),
            Transition("a", "end", "stop"),
        ),
    )
    b = Machine("B", "a", (Transition("a", "b", "x = 1", act=lambda _g, loc: (G(1), loc)),))
    return MachineProgram(f"machine-{act.__name__}", G(0), (a, b))


@pytest.mark.parametrize("strategy", ["dfs", "bfs"])  # bfs runs on arrays
def test_state_machine_steps_have_the_same_three_outcomes(strategy: str) -> None:
    result = explore(machine(_fails), Options(strategy=strategy))
    assert [(u.function, u.reason, u.count) for u in result.unmodelled] == [
        ("machine_step", "not covered", 1)
    ]
    assert result.complete and exit_code(result) == INCONCLUSIVE
    result = explore(machine(_bug), Options(strategy=strategy))
    (err,) = result.errors
    assert (err.type, err.function, err.thread) == ("KeyError", "_bug", "A")
    assert exit_code(result) == ERROR
    assert replay(machine(_bug), err.schedule).error is not None


def _result(**fields: Any) -> Result:
    return Result("p", "dfs", {}, **fields)


CX = Counterexample("assertion", "BUG_ON", "", "p@0:0", 1)
UNMODELLED = UnmodelledPath("f", "why", 1, "p@0:0", 1)
ERR = ErrorReport("KeyError", "'k'", "x.py:1", "f", "A", "p@0:0", 1)


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"complete": True}, HOLDS),
        ({"complete": True, "counterexamples": [CX]}, VIOLATED),
        ({"complete": True, "unmodelled": [UNMODELLED]}, INCONCLUSIVE),
        ({"complete": False, "limits_hit": ["max-states"]}, INCONCLUSIVE),
        ({"complete": True, "preemption_bound": 2}, INCONCLUSIVE),
        ({"complete": False, "interrupted": True}, INTERRUPTED),
        ({"complete": False, "interrupted": True, "unmodelled": [UNMODELLED]}, INTERRUPTED),
        ({"interrupted": True, "counterexamples": [CX]}, VIOLATED),
        ({"counterexamples": [CX], "unmodelled": [UNMODELLED]}, VIOLATED),
        ({"complete": True, "errors": [ERR]}, ERROR),
        ({"errors": [ERR], "counterexamples": [CX], "interrupted": True}, ERROR),
    ],
)
def test_exit_code_rule(fields: dict[str, Any], status: int) -> None:
    assert exit_code(_result(**fields)) == status
    assert BAD_INPUT == 2  # bad input never reaches a result


@pytest.mark.parametrize(
    ("make", "opts", "status"),
    [
        (lost_update_world, Options(), VIOLATED),
        (unmodelled_only, Options(), INCONCLUSIVE),
        (both_outcomes, Options(count_all=True), VIOLATED),
        (with_error, Options(), ERROR),
        (with_error, Options(max_states=2), INCONCLUSIVE),  # cut before the bug
        (unmodelled_only, Options(max_states=1), INCONCLUSIVE),
        (unmodelled_only, Options(strategy="random", max_schedules=3), INCONCLUSIVE),
        (
            lambda: world("clean", GenThread("setter", setter, E, E)),
            Options(),
            HOLDS,
        ),
    ],
)
def test_searches_give_the_exit_status(make: Any, opts: Options, status: int) -> None:
    result = explore(make(), opts)
    assert exit_code(result) == status
    assert result.to_dict()["exit_code"] == status


@pytest.mark.parametrize(
    ("make", "opts", "status", "headings"),
    [
        (
            both_outcomes,
            Options(count_all=True),
            VIOLATED,
            ["violations: 1", "unmodelled paths (not verdicts): 1"],
        ),
        (with_error, Options(), ERROR, ["errors (bugs in pinlab): 1"]),
        (unmodelled_only, Options(), INCONCLUSIVE, ["unmodelled paths (not verdicts): 1"]),
    ],
)
def test_the_report_and_json_keep_the_three_kinds_apart(  # type: ignore[no-untyped-def]
    make, opts, status, headings, tmp_path, capsys
) -> None:
    out = tmp_path / "r.json"
    program = make()
    assert _explore(program, opts, str(out), False, False, opts.count_all) == status
    printed = capsys.readouterr().out
    for heading in headings:
        assert heading in printed
    data = json.loads(out.read_text())
    assert data["exit_code"] == status
    result = explore(program, opts)
    assert [c["name"] for c in data["counterexamples"]] == [c.name for c in result.counterexamples]
    assert [(u["function"], u["count"]) for u in data["unmodelled"]] == [
        (u.function, u.count) for u in result.unmodelled
    ]
    assert [(e["type"], e["location"]) for e in data["errors"]] == [
        (e.type, e.location) for e in result.errors
    ]
    assert len(data["error_traces"]) == len(result.errors)
    for trace in data["error_traces"]:
        assert "ERROR (a bug in pinlab) KeyError" in trace


@pytest.mark.parametrize("act", [_fails, _bug])
@pytest.mark.parametrize("count_all", [False, True])
def test_breadth_first_on_arrays_records_the_outcomes_as_one_state_at_a_time(
    act: Any, count_all: bool
) -> None:
    opts = Options(strategy="bfs", count_all=count_all)
    fast, slow = both(machine(act), opts)
    assert plain(fast) == plain(slow)
    assert len(fast.unmodelled) + len(fast.errors) == 1
