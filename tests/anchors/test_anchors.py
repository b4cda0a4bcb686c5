"""The pinlab anchor programs reproduce SPIN's figures (README of the SPIN models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinlab.anchors import build, hillf, pinbias
from pinlab.anchors.spin import PML_DIR
from pinlab.explore import Options, explore, replay

SHARED = Path(__file__).resolve().parents[3] / "shared" / "anchors" / "spin"

# rows: model, -D parameters, reachable states (pan -DNOREDUCE), violating states (-c0),
# shortest counterexample in steps; source: shared/anchors/spin/README.md, figures table
README_FIGURES = [
    ("hillf", {"K": 0, "ORDER": 0}, 177, 1, 16),
    ("hillf", {"K": 1, "ORDER": 0}, 414, 2, 16),
    ("hillf", {"K": 2, "ORDER": 0}, 952, 4, 16),
    ("hillf", {"K": 0, "ORDER": 1}, 173, 0, None),
    ("hillf", {"K": 1, "ORDER": 1}, 396, 0, None),
    ("hillf", {"K": 2, "ORDER": 1}, 916, 0, None),
    ("pinbias", {"PROP": 1, "BIAS": 4, "R": 4, "K": 1}, 550, 0, None),
    ("pinbias", {"PROP": 1, "BIAS": 4, "R": 4, "K": 2}, 2750, 0, None),
    ("pinbias", {"PROP": 1, "BIAS": 4, "R": 4, "K": 3}, 13750, 0, None),
    ("pinbias", {"PROP": 1, "BIAS": 4, "R": 4, "K": 4}, 68750, 0, None),
    ("pinbias", {"PROP": 2, "BIAS": 4, "R": 4, "K": 4}, 68750, 34944, 1),
]


@pytest.mark.parametrize("strategy", ["dfs", "bfs"])  # bfs runs on arrays (levels.py)
@pytest.mark.parametrize(
    ("model", "params", "states", "violating", "shortest"),
    README_FIGURES,
    ids=[f"{m}-{p}" for m, p, *_ in README_FIGURES],
)
def test_readme_figures(model, params, states, violating, shortest, strategy):  # type: ignore[no-untyped-def]
    program = build(model, params)
    full = explore(program, Options(strategy=strategy, count_all=True, shrink=False))
    assert full.complete
    assert (full.states, full.violating_states) == (states, violating)
    if shortest is None:
        assert not full.violated
        return
    (cx,) = explore(program, Options(strategy="bfs", shrink=False)).counterexamples
    assert cx.steps == shortest
    assert replay(program, cx.schedule).reaches("invariant", cx.name)


@pytest.mark.parametrize(
    "params", [{"K": 2, "ORDER": 0}, {"K": 3, "ORDER": 1}, {"K": 4, "R": 3, "BIAS": 4, "PROP": 2}]
)
def test_symmetry_orbits_add_up_to_the_full_count(params):  # type: ignore[no-untyped-def]
    program = build("pinbias" if "R" in params else "hillf", params)
    full = explore(program, Options(count_all=True, shrink=False))
    sym = explore(program, Options(count_all=True, shrink=False, symmetry=True))
    assert sym.orbits is not None and sym.orbits < full.states
    assert (sym.states, sym.violating_states) == (full.states, full.violating_states)


def test_mutant_breaks_the_property_the_design_keeps():  # type: ignore[no-untyped-def]
    assert not explore(pinbias(K=1, R=2, MUT=0)).violated
    mutant = explore(pinbias(K=1, R=2, MUT=1))
    assert [c.name for c in mutant.counterexamples] == ["no DMA under writeback"]


def test_first_counterexample_is_shrunk_to_the_shortest():  # type: ignore[no-untyped-def]
    (cx,) = explore(hillf(K=2)).counterexamples
    assert cx.steps == 16


def test_bad_parameters_are_refused():  # type: ignore[no-untyped-def]
    for model, params, msg in [
        ("pinbias", {"BIAS": 3}, "BIAS must exceed"),
        ("pinbias", {"K": 4, "R": 60, "BIAS": 60}, "byte range"),
        ("hillf", {"ORDER": 2}, "ORDER in 0/1"),
        ("hillf", {"Z": 1}, "no parameter Z"),
    ]:
        with pytest.raises(ValueError, match=msg):
            build(model, params)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared SPIN models not present")
@pytest.mark.parametrize("name", ["hillf.pml", "pinbias.pml"])
def test_vendored_models_match_the_shared_ones(name):  # type: ignore[no-untyped-def]
    assert (PML_DIR / name).read_text() == (SHARED / name).read_text()
