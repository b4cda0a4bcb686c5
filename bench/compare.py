"""How long `pinlab compare` takes, quick and full, and how much of the matrix it decides.

Runs ``pinlab compare --quick`` and then the full ``pinlab compare`` (every design against
every scenario), each as a user would, in a fresh process with ``--json``, on all CPUs;
the full run gets ``--time-limit`` (default 600 s, the issue's goal), so a cell it cannot
decide in time is counted as incomplete, not waited for.  Prints per run the seconds,
the cells and their verdicts, and the states searched; ends with one JSON line:
``quick_s``, ``full_s``, ``cells`` and ``incomplete_cells`` (of the full run), ``states``
(searched in the full run) and ``states_per_s`` (states over the full run's seconds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

PINLAB = Path(sys.executable).with_name("pinlab")


def run(args: list[str]) -> tuple[float, dict[str, Any]]:
    """One `pinlab compare` run: its wall seconds and its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compare.json"
        started = time.monotonic()
        done = subprocess.run(
            [str(PINLAB), "compare", *args, "--json", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        seconds = time.monotonic() - started
        if done.returncode not in (0, 3):
            sys.exit(f"pinlab compare {' '.join(args)}: exit {done.returncode}: {done.stderr}")
        return seconds, json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds for the full run")
    args = ap.parse_args()
    quick_s, quick = run(["--quick"])
    full_s, full = run(["--time-limit", str(args.time_limit)])
    for name, seconds, data in (("quick", quick_s, quick), ("full", full_s, full)):
        verdicts = Counter(c["verdict"] for c in data["cells"])
        states = sum(c["states"] for c in data["cells"])
        print(
            f"{name:6} {seconds:8.1f} s  {len(data['cells'])} cells  {states:,} states  "
            + ", ".join(f"{v}: {n}" for v, n in sorted(verdicts.items()))
        )
    for c in full["cells"]:
        if c["verdict"] == "incomplete":
            print(f"incomplete: {c['design']} x {c['scenario']} ({c['states']:,} states)")
    states = sum(c["states"] for c in full["cells"])
    figures = {
        "quick_s": round(quick_s, 1),
        "full_s": round(full_s, 1),
        "cells": len(full["cells"]),
        "incomplete_cells": sum(c["verdict"] == "incomplete" for c in full["cells"]),
        "states": states,
        "states_per_s": round(states / full_s, 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
