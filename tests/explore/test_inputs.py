"""Determinism of seeded strategies, schedule fitting errors, bad bounds, the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pinlab.explore import (
    Machine,
    MachineProgram,
    Options,
    ScheduleError,
    Transition,
    encode,
    explore,
    fingerprint,
    program_id,
    replay,
)
from pinlab.interleave import Violation
from tests.explore.programs import (
    X,
    build_machine,
    fs,
    long_dfs_machine,
    lost_update_machine,
    lost_update_world,
    peterson_machine,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("strategy", ["random", "pct"])
@pytest.mark.parametrize(
    "make", [lost_update_machine, lost_update_world, lambda: peterson_machine(False, broken=True)]
)
def test_same_seed_same_schedules_and_verdict(strategy, make):  # type: ignore[no-untyped-def]
    def run(seed: int) -> dict[str, object]:
        d = explore(
            make(), Options(strategy=strategy, seed=seed, max_schedules=50, count_all=True)
        ).to_dict()
        d.pop("elapsed")
        return d

    first = run(11)
    assert first == run(11)
    assert first["violated"]


def test_pct_depth_one_runs_threads_by_priority_without_switching():  # type: ignore[no-untyped-def]
    # max_steps gives PCT its k up front, so even the first run follows priorities
    result = explore(
        long_dfs_machine(3),
        Options(strategy="pct", pct_depth=1, max_schedules=30, max_steps=10, shrink=False),
    )
    # with no change point a thread runs to its end before the other starts
    assert result.violated
    body = result.counterexamples[0].schedule.rpartition(":")[2]
    assert body in ("0001", "1110")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_steps", 0),
        ("max_states", -1),
        ("max_schedules", 0),
        ("max_time", 0.0),
        ("preemption_bound", 0),
        ("pct_depth", 0),
    ],
)
def test_non_positive_bounds_are_refused(field, value):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="must be positive"):
        explore(lost_update_machine(), Options(**{field: value}))


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (Options(strategy="sideways"), "unknown strategy"),
        (Options(strategy="bfs", por=True), "needs --strategy dfs"),
        (Options(por=True, preemption_bound=2), "cannot be combined"),
    ],
)
def test_inconsistent_options_are_refused(opts, message):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        explore(lost_update_machine(), opts)


def _sched(body: str) -> str:
    p = lost_update_machine()
    return f"{program_id(p)}@{fingerprint(p)}:{body}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("0120", "position 2: unknown thread 2"),
        ("0000", "position 2: thread 0 cannot run here: incr at done (finished)"),
        ("01/1", "position 1: thread 1 has 1 choice"),
        ("01x!", "position 3: cannot parse"),
        ("0(1)10", "position 1: '(1)' is not canonical (write '1')"),
        ("01/(0)10", "position 1: '1/(0)' is not canonical (write '1')"),
    ],
)
def test_schedules_that_do_not_fit_name_the_position(body, message):  # type: ignore[no-untyped-def]
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        replay(lost_update_machine(), _sched(body))


def test_schedule_too_long_after_an_assertion():  # type: ignore[no-untyped-def]
    spec = {
        "id": 1,
        "vars": 2,
        "threads": [[["assert_ne", 0, 0]], [["inc", 1], ["inc", 1]]],
        "loop": [False, False],
        "sym": False,
        "invs": [],
        "finals": [],
    }
    program = build_machine(spec)
    assert replay(program, encode(program, [(0, 0)])).verdict == (
        "assertion",
        "t0 assert v0 != 0 at op 0",
    )
    with pytest.raises(ScheduleError, match="position 1: schedule too long"):
        replay(program, encode(program, [(0, 0), (1, 0)]))


def test_running_past_an_invariant_failure_is_reported():  # type: ignore[no-untyped-def]
    """v0 goes 0 -> 1 -> 2; the invariant forbids v0 = 1.  The schedule that steps on past
    that state ends clean, yet its replay names the failure it ran through."""
    spec = {
        "id": 2,
        "vars": 2,
        "threads": [[["inc", 0], ["inc", 0]]],
        "loop": [False],
        "sym": False,
        "invs": [[0, 1, 1, 0]],
        "finals": [],
    }
    program = build_machine(spec)
    cx = explore(program).counterexamples[0]
    assert replay(program, cx.schedule).verdict == ("invariant", "not v0=1 and v1=0")
    longer = replay(program, encode(program, [(0, 0), (0, 0)]))
    assert longer.verdict is None
    assert longer.passed == [(1, "not v0=1 and v1=0", longer.passed[0][2])]
    assert "VIOLATION invariant not v0=1 and v1=0 after 1 step(s)" in longer.render()


def test_schedule_of_another_program_is_refused():  # type: ignore[no-untyped-def]
    cx = explore(lost_update_machine()).counterexamples[0]
    with pytest.raises(ScheduleError, match="schedule is for program lost-update@"):
        replay(lost_update_world(), cx.schedule)
    with pytest.raises(ScheduleError, match="not a schedule"):
        replay(lost_update_machine(), "0110")
    with pytest.raises(ScheduleError, match="bad fingerprint"):
        replay(lost_update_machine(), "lost-update@xyz:0110")


def test_result_serialises_to_json():  # type: ignore[no-untyped-def]
    d = json.loads(explore(lost_update_machine(), Options(strategy="bfs")).to_json())
    assert d["violated"] and d["memory_model"] == "sequential consistency"
    assert d["counterexamples"][0]["schedule"].endswith(":0110")
    assert d["verdict"].startswith("violated (final x == 2)")


def test_preemption_bound_reports_holds_within_bound():  # type: ignore[no-untyped-def]
    result = explore(peterson_machine(False), Options(preemption_bound=1))
    assert result.complete and not result.violated
    assert "holds within preemption bound 1" in result.verdict
    # B must see x == 1 and then x == 2: A is preempted after x = 1 and after x = 2, and
    # B after its first look, so three preemptions
    program = three_preemptions()
    for bound in (1, 2):
        result = explore(program, Options(preemption_bound=bound))
        assert not result.violated and f"within preemption bound {bound}" in result.verdict
    (cx,) = explore(program, Options(preemption_bound=3)).counterexamples
    assert cx.schedule.endswith(":0101")
    assert explore(program).counterexamples[0].schedule.endswith(":0101")


def three_preemptions() -> MachineProgram:
    def setx(v: int) -> Transition:
        return Transition(
            f"a{v}",
            f"a{v + 1}",
            f"x = {v}",
            act=lambda g, loc: (X(v % 3), loc),
            reads=fs(),
            writes=fs("x"),
        )

    a = Machine("A", "a1", (setx(1), setx(2), setx(3)))
    b = Machine(
        "B",
        "b1",
        (
            Transition(
                "b1",
                "b2",
                "seen = x == 1",
                act=lambda g, _l: (g, g.x == 1),
                reads=fs("x"),
                writes=fs(),
            ),
            Transition(
                "b2",
                "b3",
                "assert not (seen and x == 2)",
                act=lambda g, loc: (g, loc) if not (loc and g.x == 2) else _fail(),
                reads=fs("x"),
                writes=fs(),
            ),
        ),
        locals=False,
    )
    return MachineProgram("three-preemptions", X(0), (a, b))


def _fail() -> tuple[object, object]:
    raise Violation("saw 1 then 2")


def test_interrupt_returns_partial_result(monkeypatch):  # type: ignore[no-untyped-def]
    from pinlab.explore import exhaustive

    calls = {"n": 0}
    real = exhaustive.Exhaustive.tick

    def tick(self, depth):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, depth)

    monkeypatch.setattr(exhaustive.Exhaustive, "tick", tick)
    result = explore(peterson_machine(True))
    assert result.interrupted and not result.complete and result.states > 0
    assert "interrupted" in result.verdict


def test_progress_reports_the_transitions_taken_so_far():  # type: ignore[no-untyped-def]
    from pinlab.anchors import pinbias

    program = pinbias(K=2, R=4, BIAS=4)
    seen: list[tuple[int, int, int]] = []
    for strategy in ("dfs", "bfs"):
        seen.clear()
        opts = Options(strategy=strategy, shrink=False)
        explore(program, opts, lambda *counts: seen.append(counts))
        assert len(seen) >= 2
        for states, transitions, depth in seen[1:]:
            # a search cut there: at that many states (dfs), or before that level (bfs)
            cut = Options(strategy=strategy, shrink=False, max_states=states)
            if strategy == "bfs":
                cut = Options(strategy=strategy, shrink=False, max_steps=depth)
            assert (explore(program, cut).transitions, strategy) == (transitions, strategy)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "pinlab.anchors", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_cli_exit_codes_json_and_replay(tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "r.json"
    bad = _cli("hillf", "-D", "K=1", "--json", str(out), "--strategy", "bfs")
    assert bad.returncode == 1
    data = json.loads(out.read_text())
    schedule = data["counterexamples"][0]["schedule"]
    assert data["counterexamples"][0]["steps"] == 16
    rep = _cli("hillf", "-D", "K=1", "--replay", schedule)
    assert rep.returncode == 1 and "VIOLATION invariant no DMA under writeback" in rep.stdout
    assert "hillf.pml:89  dma = 1" in rep.stdout
    good = _cli("hillf", "-D", "K=1", "-D", "ORDER=1")
    assert good.returncode == 0 and "holds, assuming sequential consistency" in good.stdout
    assert good.stderr == ""  # no runpy or other warning (-W error would make it fatal)
    for args, msg in [
        (("hillf", "-D", "K=x"), "not an integer"),
        (("hillf", "--max-states", "0"), "must be positive"),
        (("hillf", "-D", "K=2", "--replay", schedule), "schedule is for program"),
        (("nosuch",), "unknown model"),
    ]:
        proc = _cli(*args)
        assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--max-states", "10"),
        ("--strategy", "random", "--max-schedules", "5"),
        ("--preemption-bound", "1"),
    ],
    ids=["max-states", "random", "bounded"],
)
def test_cli_incomplete_search_without_violation_exits_3(args):  # type: ignore[no-untyped-def]
    proc = _cli("hillf", "-D", "ORDER=1", *args)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "holds," not in proc.stdout


def test_cli_refuses_an_unwritable_json_target_before_searching(tmp_path):  # type: ignore[no-untyped-def]
    # pinbias K=4 R=BIAS=16 takes tens of seconds; the refusal must come first
    started = time.monotonic()
    args = ("pinbias", "-D", "K=4", "-D", "R=16", "-D", "BIAS=16")
    proc = _cli(*args, "--json", str(tmp_path / "missing" / "r.json"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 10


def _hear_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cli_ctrl_c_prints_what_was_found_and_exits_130(tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "r.json"
    big = ("pinbias", "-D", "K=4", "-D", "R=16", "-D", "BIAS=16")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pinlab.anchors", *big, "--no-progress", "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # a test run started in the background (`cmd &` without job control) ignores
        # SIGINT, and a child would inherit that: this one must hear Ctrl-C
        preexec_fn=_hear_sigint,
    )
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "incomplete: interrupted" in stdout and "Traceback" not in stderr
    data = json.loads(out.read_text())
    assert data["interrupted"] and data["states"] > 0 and not data["complete"]


def test_entry_module_loads_only_the_explorer_and_the_anchors():  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pinlab.anchors", "hillf", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    ours = {m for m in loaded if m.startswith("pinlab.")}
    allowed = ("explore", "anchors", "interleave", "inplace", "memo", "cli")
    assert ours and all(m.split(".")[1] in allowed for m in ours), ours
    assert {m for m in ours if m.startswith("pinlab.cli.")} <= {
        "pinlab.cli.explore",
        "pinlab.cli.errors",
        "pinlab.cli.files",
    }


def test_shrink_says_when_it_kept_the_schedule_as_found(monkeypatch):  # type: ignore[no-untyped-def]
    from pinlab.explore import decode, run, shrink

    program = long_dfs_machine(6)
    raw = explore(program, Options(shrink=False)).counterexamples[0]
    moves = decode(raw.schedule)[2]
    assert shrink(program, raw.kind, raw.name, moves, budget=1) == (moves, False)
    assert shrink(program, raw.kind, raw.name, moves)[1]
    # a property the schedule never reaches is not "optimal"
    assert shrink(program, "final", "no such property", moves) == (moves, False)
    assert explore(program).counterexamples[0].shrink == "optimal"
    assert raw.shrink == "off"

    monkeypatch.setattr(run, "shrink", lambda _p, _k, _n, m: (m, False))
    (cx,) = explore(program).counterexamples
    assert cx.shrink == "kept as found: not re-found within the budget" and cx.steps == raw.steps

    def interrupt(*_args: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "shrink", interrupt)
    result = explore(program)
    assert result.interrupted
    assert [c.shrink for c in result.counterexamples] == ["kept as found: interrupted"]
    assert result.counterexamples[0].schedule == raw.schedule


def test_every_invariant_failing_in_a_state_is_named():  # type: ignore[no-untyped-def]
    """Two invariants broken by the same step: both are reported, the state counts once."""
    spec = {
        "id": 3,
        "vars": 2,
        "threads": [[["inc", 0]]],
        "loop": [False],
        "sym": False,
        "invs": [[0, 1, 1, 0], [0, 1, 0, 1]],
        "finals": [],
    }
    program = build_machine(spec)
    result = explore(program, Options(count_all=True))
    assert sorted(cx.name for cx in result.counterexamples) == [
        "not v0=1 and v0=1",
        "not v0=1 and v1=0",
    ]
    assert result.violating_states == 1
    for cx in result.counterexamples:
        assert replay(program, cx.schedule).reaches("invariant", cx.name)
