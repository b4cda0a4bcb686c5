"""Side by side with SPIN on parameter sets drawn at random each run (seed in the header).

Without reduction pinlab must reach exactly pan's stored states (``-DNOREDUCE``) and
count exactly its errors under ``-c0``; verdicts must agree with pan's default build.
"""

from __future__ import annotations

import os
import random

import pytest

from pinlab.anchors import build
from pinlab.anchors.spin import missing_tools, run_spin
from pinlab.explore import Options, explore
from tests.anchors.conftest import SPIN_SEED

pytestmark = [
    pytest.mark.spin,
    # Under CI (.ci/run installs spin and gcc) a missing tool is a failure, not a skip.
    pytest.mark.skipif(
        missing_tools() is not None and not os.environ.get("CI"),
        reason=f"SPIN unavailable: {missing_tools()}",
    ),
]


def _draw(rng: random.Random) -> tuple[str, dict[str, int]]:
    if rng.random() < 0.4:
        return "hillf", {
            "K": rng.randint(0, 3),
            "ORDER": rng.randint(0, 1),
            "PRIVREF": rng.randint(0, 1),
        }
    bias = rng.randint(4, 6)
    return "pinbias", {
        "K": rng.randint(0, 3),
        "BIAS": bias,
        "R": rng.randint(1, bias),
        "PROP": rng.randint(1, 2),
        "MUT": rng.randint(0, 1),
    }


_RNG = random.Random(SPIN_SEED)
CASES = [_draw(_RNG) for _ in range(5)]


@pytest.mark.parametrize(
    ("model", "params"),
    CASES,
    ids=[f"{m}-" + "-".join(f"{k}{v}" for k, v in p.items()) for m, p in CASES],
)
def test_counts_and_verdicts_match_spin(model, params):  # type: ignore[no-untyped-def]
    print(f"SPIN case (PINLAB_SPIN_SEED={SPIN_SEED}): {model} {params}")
    program = build(model, params)
    ours = explore(program, Options(count_all=True, shrink=False, symmetry=True))
    full = run_spin(model, params, noreduce=True, count_all=True)
    assert not full.depth_limited
    assert (ours.states, ours.violating_states) == (full.stored, full.errors)
    for strategy in ("dfs", "bfs"):  # bfs runs on arrays (levels.py)
        plain = explore(program, Options(strategy=strategy, count_all=True, shrink=False))
        assert (plain.states, plain.violating_states) == (full.stored, full.errors)
    default = run_spin(model, params)
    assert ours.violated == (default.errors > 0)
