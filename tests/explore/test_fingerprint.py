"""The fingerprint identifies the program's code and data, in every process alike."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pinlab.explore import (
    FinalCheck,
    GenThread,
    Machine,
    MachineProgram,
    ScheduleError,
    Transition,
    WorldProgram,
    explore,
    fingerprint,
    replay,
)
from pinlab.interleave import Point, Yield

ROOT = Path(__file__).resolve().parents[2]


class Cell:
    def __init__(self) -> None:
        self.x = 0


def adder(step: int) -> Any:
    """A lost-update body whose increment is a closure value."""

    def body(w: Cell) -> Generator[Yield, None, None]:
        tmp = w.x
        yield Point("between load and store")
        w.x = tmp + step

    body.__qualname__ = "body"
    return body


def _add_one(w: Cell) -> Generator[Yield, None, None]:
    tmp = w.x
    yield Point("between load and store")
    w.x = tmp + 1


def _add_seven(w: Cell) -> Generator[Yield, None, None]:
    tmp = w.x
    yield Point("between load and store")
    w.x = tmp + 7


_add_seven.__qualname__ = _add_one.__qualname__


def program(body: Any, want: int = 2) -> WorldProgram:
    return WorldProgram(
        "adder",
        Cell,
        (GenThread("A", body), GenThread("B", body)),
        lambda w: w.x,
        finals=(FinalCheck("x == want", lambda w: w.x == want),),
    )


@pytest.mark.parametrize(
    ("made", "changed"),
    [
        (lambda: program(adder(1)), lambda: program(adder(5))),  # closure value
        (lambda: program(_add_one), lambda: program(_add_seven)),  # constant, same name
        (lambda: program(_add_one), lambda: program(_add_one, want=3)),  # property closure
    ],
    ids=["closure", "constant", "property"],
)
def test_changed_code_or_data_refuses_the_schedule(made: Any, changed: Any) -> None:
    schedule = explore(made()).counterexamples[0].schedule
    assert replay(made(), schedule).verdict is not None
    assert fingerprint(made()) == fingerprint(made())
    with pytest.raises(ScheduleError, match="changed code"):
        replay(changed(), schedule)


def test_machine_guards_and_actions_are_fingerprinted() -> None:
    def machine(guard_value: int) -> MachineProgram:
        m = Machine("m", "a", (Transition("a", "b", "go", guard=lambda g, _l: g == guard_value),))
        return MachineProgram("guarded", 0, (m,))

    assert fingerprint(machine(0)) != fingerprint(machine(1))


WORDS = frozenset({"alpha", "beta", "gamma", "delta", "epsilon"})


def word_program() -> MachineProgram:
    """Shared state and locals are frozensets of strings (iteration order varies by hash seed)."""
    take = Machine(
        "take",
        "p",
        (
            Transition(
                "p",
                "q",
                "read the words",
                act=lambda g, _l: (g, g),
                reads=frozenset({"words"}),
                writes=frozenset(),
            ),
            Transition(
                "q",
                "r",
                "write them back without the least",
                act=lambda _g, loc: (loc - {min(loc)}, frozenset()),
                reads=frozenset(),
                writes=frozenset({"words"}),
            ),
        ),
        locals=frozenset(),
    )
    return MachineProgram(
        "words",
        WORDS,
        (take, take),
        finals=(FinalCheck("two words taken", lambda s: len(s[0]) == len(WORDS) - 2),),
    )


_FRESH = """
import sys
from pinlab.explore import fingerprint, replay
from tests.explore.test_fingerprint import word_program
p = word_program()
print(fingerprint(p), replay(p, sys.argv[1], trace=False).verdict)
"""


def test_replay_in_a_fresh_process_with_another_hash_seed() -> None:
    p = word_program()
    (cx,) = explore(p).counterexamples
    assert (cx.kind, cx.name) == ("final", "two words taken")
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", _FRESH, cx.schedule],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        )
        assert proc.stdout.split() == [fingerprint(p), "('final',", "'two", "words", "taken')"]


def test_memo_tables_filled_by_a_search_leave_the_fingerprint_alone() -> None:
    """The kernel's digest and the explorer's keys cache per type and per pickled field
    (kernel/walk.py, explore/canon.py): what a search met before must not change a
    program's fingerprint, or a schedule found after other searches would not replay in a
    fresh process."""
    import dataclasses

    from pinlab.explore.canon import _FIELD_NAMES
    from pinlab.kernel import walk
    from pinlab.kernel.state import BootParams, boot
    from pinlab.scenarios.harness import kernel_program

    def make() -> Any:
        return boot("6.1", BootParams(normal_mb=4))

    def idle(k: Any) -> Generator[Yield, None, None]:
        yield Point("idle")

    program = kernel_program("memo", make, (GenThread("idle", idle),))
    before = fingerprint(program)

    @dataclasses.dataclass
    class Met:
        x: int

    walk._FOUND[Met] = walk._FOUND.get(Met, walk._canon_of(Met))
    walk._REMEMBERED[b"met"] = ("met",)
    _FIELD_NAMES[Met] = ("x",)
    assert fingerprint(program) == before
