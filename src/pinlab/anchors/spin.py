"""Run the SPIN model checker on the anchor models and read pan's report.

End to end, as the benchmark measures it: ``spin -a``, ``gcc``, ``./pan``, each in a
fresh temporary directory.  The Promela models ship with pinlab (``anchors/pml``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PML_DIR = Path(__file__).with_name("pml")
MODELS = ("hillf", "pinbias")


@dataclass(frozen=True, slots=True)
class SpinRun:
    """What one pan run reported, and how long spin + gcc + pan took."""

    stored: int
    errors: int
    depth: int
    depth_limited: bool
    seconds: float
    output: str


def missing_tools() -> str | None:
    """Why SPIN cannot run here (``spin`` or ``gcc`` absent), or None."""
    absent = [tool for tool in ("spin", "gcc") if shutil.which(tool) is None]
    return f"{' and '.join(absent)} not installed" if absent else None


def _int(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    if m is None:
        raise RuntimeError(f"pan output lacks {pattern!r}:\n{text}")
    return int(m.group(1))


def run_spin(
    model: str,
    params: dict[str, int],
    *,
    noreduce: bool = False,
    bfs: bool = False,
    count_all: bool = False,
    max_depth: int = 1_000_000,
    timeout: float = 600.0,
) -> SpinRun:
    """Generate, compile and run pan for ``model`` with ``-D`` parameters ``params``.

    ``max_depth`` is pan's ``-m`` (the README's 1,000,000 by default); if pan reports
    its depth limit too small, the run is repeated with a ten times larger one, and
    only the final run's time is reported, as a user who set ``-m`` right would see.
    """
    run = _run_spin(model, params, noreduce, bfs, count_all, max_depth, timeout)
    while run.depth_limited and max_depth < 100_000_000:
        max_depth *= 10
        run = _run_spin(model, params, noreduce, bfs, count_all, max_depth, timeout)
    return run


def _run_spin(
    model: str,
    params: dict[str, int],
    noreduce: bool,
    bfs: bool,
    count_all: bool,
    max_depth: int,
    timeout: float,
) -> SpinRun:
    if model not in MODELS:
        raise ValueError(f"unknown SPIN model {model!r} (choose from {', '.join(MODELS)})")
    defines = [f"-D{k}={v}" for k, v in sorted(params.items())]
    cflags = ["-O2", "-DSAFETY"] + (["-DNOREDUCE"] if noreduce else []) + (["-DBFS"] if bfs else [])
    pan_args = [f"-m{max_depth}"] + (["-c0"] if count_all else [])
    with tempfile.TemporaryDirectory(prefix="pinlab-spin-") as tmp:
        src = Path(tmp) / f"{model}.pml"
        shutil.copyfile(PML_DIR / f"{model}.pml", src)
        started = time.perf_counter()
        for cmd in (["spin", *defines, "-a", src.name], ["gcc", *cflags, "-o", "pan", "pan.c"]):
            subprocess.run(cmd, cwd=tmp, check=True, capture_output=True, timeout=timeout)
        pan = subprocess.run(
            ["./pan", *pan_args], cwd=tmp, capture_output=True, text=True, timeout=timeout
        )
        seconds = time.perf_counter() - started
    out = pan.stdout
    return SpinRun(
        stored=_int(r"(\d+) states, stored", out),
        errors=_int(r"errors: (\d+)", out),
        depth=_int(r"depth reached (\d+)", out),
        depth_limited="max search depth too small" in out,
        seconds=seconds,
        output=out,
    )
