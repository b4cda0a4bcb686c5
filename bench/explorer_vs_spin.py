"""pinlab's explorer and SPIN side by side on the anchor models (issue 3 benchmark).

Both are timed end to end: pinlab as a fresh ``python -m pinlab.anchors`` process
(interpreter start-up included; it loads only the explorer and the anchors), SPIN as
``spin -a`` + ``gcc -O2 -DSAFETY`` + ``./pan`` in its default build (depth-first,
partial-order reduction).  pinlab searches breadth-first (``--strategy bfs``, which on a
state machine expands a level at a time on arrays, and finds a shortest counterexample)
without partial-order reduction (its sleep sets make the anchors slower, not faster).
Every model is timed unreduced and, when K >= 2, again with symmetry reduction over the
interchangeable get/put threads (reported as orbits; that search goes one state at a
time, as the arrays do not canonicalise); the counterexample models are
also timed depth-first (``dfs_...``).  State counts are checked against pan
``-DNOREDUCE``; for the violating models, pinlab ``--count-all`` (reachable and
violating states) against pan ``-DNOREDUCE -c0``.

Ends with one JSON line: ``first_counterexample_ratio`` and ``exhaustive_ratio`` are
the worst *unreduced* breadth-first ratios (also under ``..._unreduced``);
``..._symmetry`` are the worst with symmetry where it applies, and
``first_counterexample_ratio_dfs`` the worst depth-first.  ``--quick`` leaves out
pinbias BIAS=R=16.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pinlab.anchors.spin import missing_tools, run_spin

FIRST_CX = [
    ("hillf", {"K": 0, "ORDER": 0}),
    ("hillf", {"K": 1, "ORDER": 0}),
    ("hillf", {"K": 2, "ORDER": 0}),
    ("pinbias", {"K": 1, "R": 4, "BIAS": 4, "PROP": 1, "MUT": 1}),
    ("pinbias", {"K": 4, "R": 4, "BIAS": 4, "PROP": 2}),
    ("pinbias", {"K": 4, "R": 8, "BIAS": 8, "PROP": 1, "MUT": 1}),
]
EXHAUSTIVE = [
    ("hillf", {"K": 0, "ORDER": 1}),
    ("hillf", {"K": 1, "ORDER": 1}),
    ("hillf", {"K": 2, "ORDER": 1}),
    ("pinbias", {"K": 1, "R": 4, "BIAS": 4, "PROP": 1}),
    ("pinbias", {"K": 2, "R": 4, "BIAS": 4, "PROP": 1}),
    ("pinbias", {"K": 3, "R": 4, "BIAS": 4, "PROP": 1}),
    ("pinbias", {"K": 4, "R": 4, "BIAS": 4, "PROP": 1}),
    ("pinbias", {"K": 4, "R": 8, "BIAS": 8, "PROP": 1}),
    ("pinbias", {"K": 4, "R": 16, "BIAS": 16, "PROP": 1}),
]


def _name(model: str, params: dict[str, int]) -> str:
    return model + "".join(f" {k}={v}" for k, v in params.items())


def run_pinlab(
    model: str, params: dict[str, int], *extra: str, strategy: str = "bfs"
) -> tuple[float, dict[str, Any]]:
    """Wall time of a fresh pinlab process, and its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "pinlab.anchors",
            model,
            "--quiet",
            "--no-progress",
            "--json",
            str(out),
            "--strategy",
            strategy,
            *extra,
        ]
        for k, v in params.items():
            cmd += ["-D", f"{k}={v}"]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode not in (0, 1):  # holds, violated; 3 (incomplete) would be wrong
            raise RuntimeError(f"pinlab failed: {proc.stderr}")
        return seconds, json.loads(out.read_text())


def measure(model: str, params: dict[str, int], exhaustive: bool) -> dict[str, Any]:
    """One model: pinlab (unreduced, and with symmetry when K >= 2) against SPIN."""
    p_sec, res = run_pinlab(model, params)
    spin = run_spin(model, params)
    full = run_spin(model, params, noreduce=True)
    row: dict[str, Any] = {
        "model": _name(model, params),
        "mode": "exhaustive" if exhaustive else "first counterexample",
        "pinlab_seconds": round(p_sec, 3),
        "spin_seconds": round(spin.seconds, 3),
        "ratio": round(p_sec / spin.seconds, 3),
        "pinlab_violated": res["violated"],
        "spin_errors": spin.errors,
        "verdicts_agree": res["violated"] == (spin.errors > 0),
        "pinlab_states": res["states"],
        "pinlab_complete": res["complete"],
        "spin_stored_default": spin.stored,
        "spin_depth_limited": spin.depth_limited,
        "spin_stored_noreduce": full.stored,
        "counterexample_steps": [c["steps"] for c in res["counterexamples"]],
    }
    if exhaustive:
        # only a complete pinlab search saw every state
        row["states_agree"] = res["states"] == full.stored
    else:
        d_sec, dfs = run_pinlab(model, params, strategy="dfs")
        row.update(
            dfs_seconds=round(d_sec, 3),
            dfs_ratio=round(d_sec / spin.seconds, 3),
            dfs_counterexample_steps=[c["steps"] for c in dfs["counterexamples"]],
        )
        row["verdicts_agree"] = row["verdicts_agree"] and dfs["violated"] == res["violated"]
        # the full counts of a violating model: expand past violations, as pan -c0 does
        _, counted = run_pinlab(model, params, "--count-all", "--no-shrink")
        full = run_spin(model, params, noreduce=True, count_all=True)
        row.update(
            spin_stored_noreduce=full.stored,
            pinlab_states_count_all=counted["states"],
            pinlab_violating_states=counted["violating_states"],
            spin_violating_states=full.errors,
        )
        row["states_agree"] = (counted["states"], counted["violating_states"]) == (
            full.stored,
            full.errors,
        )
    if params.get("K", 0) >= 2:
        s_sec, sym = run_pinlab(model, params, "--symmetry")
        row.update(
            symmetry_seconds=round(s_sec, 3),
            symmetry_ratio=round(s_sec / spin.seconds, 3),
            symmetry_orbits=sym["orbits"],
            symmetry_counterexample_steps=[c["steps"] for c in sym["counterexamples"]],
        )
        row["verdicts_agree"] = row["verdicts_agree"] and sym["violated"] == res["violated"]
        if exhaustive:
            row["states_agree"] = row["states_agree"] and sym["states"] == full.stored
    return row


def main() -> None:
    """Run everything, print the table, end with one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip pinbias BIAS=R=16")
    args = parser.parse_args()
    if (why := missing_tools()) is not None:
        sys.exit(f"cannot benchmark against SPIN: {why}")
    rows = [measure(m, p, exhaustive=False) for m, p in FIRST_CX]
    for m, p in EXHAUSTIVE:
        if args.quick and p.get("BIAS") == 16:
            continue
        rows.append(measure(m, p, exhaustive=True))
    head = (
        f"{'model':<42}{'mode':<22}{'pinlab s':>9}{'sym s':>7}{'SPIN s':>8}"
        f"{'ratio':>7}{'sym':>6}  verdicts  states"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        states = f"{r['pinlab_states']:,}"
        if "symmetry_orbits" in r:
            states += f" ({r['symmetry_orbits']:,} orbits)"
        if r["mode"] == "exhaustive":
            states += f" / SPIN noreduce {r['spin_stored_noreduce']:,}"
        else:
            states += (
                f"; count-all {r['pinlab_states_count_all']:,} states,"
                f" {r['pinlab_violating_states']:,} violating / SPIN -c0"
                f" {r['spin_stored_noreduce']:,}, {r['spin_violating_states']:,}"
            )
        verdict = "violated" if r["pinlab_violated"] else "holds"
        agree = "agree" if r["verdicts_agree"] else "DIFFER"
        sym_s = f"{r['symmetry_seconds']:>7.2f}" if "symmetry_seconds" in r else f"{'-':>7}"
        sym_r = f"{r['symmetry_ratio']:>6.2f}" if "symmetry_ratio" in r else f"{'-':>6}"
        print(
            f"{r['model']:<42}{r['mode']:<22}{r['pinlab_seconds']:>9.2f}{sym_s}"
            f"{r['spin_seconds']:>8.2f}{r['ratio']:>7.2f}{sym_r}  {verdict} ({agree})  {states}"
        )

    def worst(mode: str, key: str) -> float:
        return max(r.get(key, r["ratio"]) for r in rows if r["mode"] == mode)

    first, exhaustive = "first counterexample", "exhaustive"
    print(
        json.dumps(
            {
                "verdicts_agree": all(r["verdicts_agree"] for r in rows),
                "states_agree": all(r["states_agree"] for r in rows),
                "first_counterexample_ratio": worst(first, "ratio"),
                "first_counterexample_ratio_unreduced": worst(first, "ratio"),
                "first_counterexample_ratio_symmetry": worst(first, "symmetry_ratio"),
                "first_counterexample_ratio_dfs": worst(first, "dfs_ratio"),
                "exhaustive_ratio": worst(exhaustive, "ratio"),
                "exhaustive_ratio_unreduced": worst(exhaustive, "ratio"),
                "exhaustive_ratio_symmetry": worst(exhaustive, "symmetry_ratio"),
                "models": rows,
            },
            separators=(",", ":"),
        )
    )


if __name__ == "__main__":
    main()
