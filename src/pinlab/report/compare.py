"""`pinlab compare`'s cells: every design against every scenario, searched, judged, kept as data.

A cell is one exhaustive depth-first search with the state cache, of the scenario's
threads on the design's kernel, within the scenario's stated bounds and what is left
of the run's time.  Its verdict: ``violated`` (a counterexample of the scenario's
hazard, with its replayable schedule), ``holds`` (exhaustive, nothing unmodelled),
``incomplete`` (cut by the time limit or an interrupt), ``unmodelled`` (a path the model
does not cover was reached, and no violation), ``n/a`` (the scenario is not written for
the design's kernel) or ``error`` (a pinlab bug).  Cells are independent tasks: they
pickle, and give the same result whichever worker runs them.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

from pinlab.designs import Costs, get_design
from pinlab.designs.costs import false_positive_rate
from pinlab.explore import Options, explore
from pinlab.scenarios.catalog import get_scenario

VERDICTS = ("violated", "holds", "incomplete", "unmodelled", "n/a", "error")


@dataclass(frozen=True, slots=True)
class Task:
    """One cell to search; `deadline` is the run's end on the wall clock (None: no limit)."""

    design: str
    scenario: str
    deadline: float | None


@dataclass(slots=True)
class Cell:
    """A searched cell, as `compare --json` writes it."""

    design: str
    profile: str
    scenario: str
    property: str
    verdict: str
    bounds: str
    leaves: int = 0
    states: int = 0
    seconds: float = 0.0
    schedule: str | None = None
    detail: str = ""


def run_cell(task: Task) -> Cell:
    """Search one cell and judge it; a pinlab bug outside the search is an ``error`` cell."""
    try:
        return _search_cell(task)
    except Exception as err:  # the setup or the judging: a bug in pinlab, reported, not raised
        where = traceback.extract_tb(err.__traceback__)[-1]
        detail = f"{type(err).__name__} at {where.filename}:{where.lineno}: {err}"
        return Cell(task.design, "", task.scenario, "", "error", "", detail=detail)


def _search_cell(task: Task) -> Cell:
    design, scenario = get_design(task.design), get_scenario(task.scenario)
    cell = Cell(
        design.name,
        design.profile().name,
        scenario.name,
        scenario.hazard,
        "n/a",
        scenario.bounds,
    )
    if design.base not in scenario.profiles:
        cell.detail = f"written for {', '.join(scenario.profiles)}, not {design.base}"
        return cell
    left = None if task.deadline is None else task.deadline - time.time()
    if left is not None and left <= 0:
        cell.verdict, cell.detail = "incomplete", "the run's time limit passed before it started"
        return cell
    # counterexamples as found: the explorer's shrinking is bounded by states, not by the
    # run's time limit (a 100-step ext4 schedule took longer to shrink than to find)
    options = Options(strategy="dfs", cache=True, shrink=False, max_time=left)
    res = explore(scenario.program(design.name), options)
    cell.states, cell.leaves, cell.seconds = res.states, res.complete_schedules, res.elapsed
    hits = [cx for cx in res.counterexamples if cx.name.startswith(scenario.violations)]
    if res.errors:
        err = res.errors[0]
        cell.verdict, cell.detail = "error", f"{err.type} at {err.location}: {err.message}"
    elif hits:
        cell.verdict, cell.schedule, cell.detail = "violated", hits[0].schedule, hits[0].name
    elif res.counterexamples:  # another assertion fired first: that is the finding
        cx = res.counterexamples[0]
        cell.property = "kernel-bug" if cx.name.startswith("BUG_ON") else cx.name
        cell.verdict, cell.schedule, cell.detail = "violated", cx.schedule, cx.name
    elif res.unmodelled:
        path = res.unmodelled[0]
        cell.verdict, cell.detail = "unmodelled", f"{path.function}: {path.reason}"
    elif not res.complete or res.interrupted:
        cell.verdict, cell.detail = "incomplete", ", ".join(res.limits_hit) or "interrupted"
    else:
        cell.verdict = "holds"
    return cell


@dataclass(slots=True)
class DesignCosts:
    """A design's declared memory costs and measured false-positive rate."""

    name: str
    profile: str
    costs: Costs
    false_positive_rate: float | None


def design_costs(names: list[str]) -> list[DesignCosts]:
    """The costs of the designs `names`."""
    out = []
    for name in names:
        d = get_design(name)
        out.append(DesignCosts(d.name, d.profile().name, d.costs, false_positive_rate(d)))
    return out
