"""The `pinlab` entry point: bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# The console script pip installed beside the interpreter running the tests.
PINLAB = Path(sys.executable).with_name("pinlab")

# (arguments, exit status, a pattern for the one stderr line, or None when it must succeed)
ROWS = [
    ([], 2, r"pinlab: error: pinlab needs a command \(see 'pinlab --help'\)"),
    (["kernel"], 2, r"pinlab: error: pinlab kernel needs a command \(see 'pinlab kernel --help'\)"),
    (["no-such-command"], 2, r"pinlab: error: No such command.*no-such-command\W*"),
    (["dump-page", "--bogus"], 2, r"pinlab: error: No such option.*--bogus\W*"),
    (["--help"], 0, None),
    (
        ["compare", "--designs", "legacy-get,nope"],
        2,
        r"pinlab: error: --designs: unknown name 'nope' \(known: legacy-get, .*\)",
    ),
    (
        ["compare", "--scenarios", "nope"],
        2,
        r"pinlab: error: --scenarios: unknown name 'nope' \(known: reclaim-vs-gup, .*\)",
    ),
    (
        ["replay", "nope", "--design", "legacy-get", "--schedule", "x"],
        2,
        r"pinlab: error: unknown scenario 'nope' \(known: reclaim-vs-gup, .*\)",
    ),
    (
        ["replay", "reclaim-vs-gup", "--design", "legacy-get", "--schedule", "x"],
        2,
        r"pinlab: error: not a schedule .*",
    ),
    (
        ["designs", "legacy-get", "no-such-design"],
        2,
        r"pinlab: error: unknown design 'no-such-design' \(known: legacy-get, .*\)",
    ),
]


@pytest.mark.parametrize(("args", "status", "line"), ROWS)
def test_entry_point(args: list[str], status: int, line: str | None) -> None:
    run = subprocess.run([PINLAB, *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == status, run.stderr
    if line is None:
        assert run.stdout.startswith("Usage: pinlab ") and run.stderr == ""
    else:
        assert len(run.stderr.splitlines()) == 1 and run.stdout == ""
        assert re.fullmatch(line, run.stderr.strip()), run.stderr


def test_designs_lists_every_design_with_its_costs() -> None:
    from pinlab.designs import DESIGNS

    env = {**os.environ, "COLUMNS": "300"}  # one line per design
    run = subprocess.run([PINLAB, "designs"], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    rows = {line.split("│")[1].strip(): line for line in run.stdout.splitlines() if "│" in line}
    assert set(DESIGNS) <= rows.keys()
    # the false-positive column, last: legacy-get tracks nothing, a flag never misfires
    assert rows["legacy-get"].split("│")[-2].strip() == "n/a"
    assert rows["dma-pinned-flag-2018"].split("│")[-2].strip() == "0%"
