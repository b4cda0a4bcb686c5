"""The `pinlab` entry point: bad input is one line on stderr and exit status 2."""

from __future__ import annotations

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
