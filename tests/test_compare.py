"""`pinlab compare` and `pinlab replay` as a user runs them: the same cells for any number of
workers, every violated cell replayed in a fresh process, limits and Ctrl-C reported."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pinlab.designs import DESIGNS
from pinlab.scenarios.catalog import SCENARIOS

PINLAB = Path(sys.executable).with_name("pinlab")
SLOW_SCENARIO = "ext4-bug-2018"


def _compare(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"compare-{len(list(tmp_path.iterdir()))}.json"
    run = subprocess.run(
        [PINLAB, "compare", *args, "--json", str(out)], capture_output=True, text=True, timeout=300
    )
    assert run.stderr == "", run.stderr
    return run.returncode, json.loads(out.read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[int, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("compare")
    return {n: _compare(tmp, "--quick", "--workers", str(n)) for n in (1, 2)}


def test_quick_runs_every_design_against_the_quick_scenarios(
    quick: dict[int, tuple[int, dict[str, Any]]],
) -> None:
    status, data = quick[1]
    assert status == 0
    cells = {(c["design"], c["scenario"]) for c in data["cells"]}
    quick_scenarios = [s for s in SCENARIOS.values() if s.quick]
    assert cells == {(d, s.name) for d in list(DESIGNS)[:4] for s in quick_scenarios}
    assert all(c["verdict"] in ("violated", "holds", "n/a") for c in data["cells"])
    assert [d["name"] for d in data["designs"]] == list(DESIGNS)[:4]
    assert data["interrupted"] is False


def test_one_and_two_workers_give_the_same_cells(
    quick: dict[int, tuple[int, dict[str, Any]]],
) -> None:
    def strip(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "cells": [{**c, "seconds": None} for c in data["cells"]]}

    assert quick[1][0] == quick[2][0]
    assert strip(quick[1][1]) == strip(quick[2][1])


def test_every_violated_cell_replays_in_a_fresh_process(
    quick: dict[int, tuple[int, dict[str, Any]]],
) -> None:
    violated = [c for c in quick[1][1]["cells"] if c["verdict"] == "violated"]
    assert violated
    for c in violated:
        args = ["replay", c["scenario"], "--design", c["design"], "--schedule", c["schedule"]]
        run = subprocess.run([PINLAB, *args], capture_output=True, text=True, timeout=120)
        assert run.returncode == 1, (c, run.stdout[-2000:], run.stderr)
        assert c["detail"] in run.stdout


def test_a_cell_cut_by_the_time_limit_is_incomplete(tmp_path: Path) -> None:
    status, data = _compare(
        tmp_path, "--designs", "legacy-get", "--scenarios", SLOW_SCENARIO, "--time-limit", "2"
    )
    assert status == 3
    [cell] = data["cells"]
    assert cell["verdict"] == "incomplete" and cell["schedule"] is None


def test_ctrl_c_prints_the_cells_done_and_exits_130() -> None:
    proc = subprocess.Popen(
        [PINLAB, "compare", "--designs", "legacy-get", "--scenarios", SLOW_SCENARIO],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background ignores SIGINT, and a child inherits that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted: 0 of 1 cells done" in out, out
