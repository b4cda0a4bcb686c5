"""`pinlab compare` and `pinlab replay`: every design against every hazard scenario."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import asdict

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pinlab.cli.errors import BadInput
from pinlab.cli.files import check_writable, write_atomic
from pinlab.designs import DESIGNS, Design, get_design
from pinlab.explore.replay import replay
from pinlab.explore.result import ERROR, HOLDS, INCONCLUSIVE, INTERRUPTED, VIOLATED
from pinlab.explore.schedule import ScheduleError
from pinlab.report.compare import Cell, DesignCosts, Task, design_costs, run_cell
from pinlab.scenarios.catalog import SCENARIOS, Scenario, get_scenario

# `--quick`: at most this many designs, against the quick scenarios
QUICK_DESIGNS = 4


def _names(option: str, text: str | None, known: dict[str, object]) -> list[str]:
    """The comma-separated names of --designs / --scenarios, each checked."""
    if text is None:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in known:
            raise BadInput(f"{option}: unknown name {n!r} (known: {', '.join(known)})")
    if not names:
        raise BadInput(f"{option}: no names given")
    return names


def _exit_status(cells: list[Cell], interrupted: bool) -> int:
    """4 if a cell errored; 130 on Ctrl-C; 3 if a cell is incomplete or unmodelled; else 0."""
    verdicts = {c.verdict for c in cells}
    if "error" in verdicts:
        return ERROR
    if interrupted:
        return INTERRUPTED
    return INCONCLUSIVE if verdicts & {"incomplete", "unmodelled"} else HOLDS


def _matrix(
    cells: list[Cell], costs: list[DesignCosts], designs: list[str], scenarios: list[str]
) -> Table:
    """One row per design: its cells, then its costs."""
    by_design = {c.name: c for c in costs}
    table = Table(title="designs x hazard scenarios")
    table.add_column("design", no_wrap=True)
    for s in scenarios:
        table.add_column(f"{s}\n({get_scenario(s).hazard})")
    for col in ("page bits", "B/pin", "always-on B/page", "false +"):
        table.add_column(col, justify="right")
    by = {(c.design, c.scenario): c for c in cells}
    for d in designs:
        cost, rate = by_design[d].costs, by_design[d].false_positive_rate
        row = [by[(d, s)].verdict if (d, s) in by else "-" for s in scenarios]
        table.add_row(
            d,
            *row,
            str(cost.page_bits),
            str(cost.pin_bytes),
            str(cost.always_on_bytes_per_page),
            "n/a" if rate is None else f"{rate:.0%}",
        )
    return table


@click.command("compare")
@click.option("--designs", "designs_opt", default=None, help="comma-separated design names")
@click.option("--scenarios", "scenarios_opt", default=None, help="comma-separated scenarios")
@click.option("--quick", is_flag=True, help=f"{QUICK_DESIGNS} designs x the quick scenarios")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="default: CPUs")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--json", "json_file", default=None, help="write the cells and costs here")
def compare_cmd(
    designs_opt: str | None,
    scenarios_opt: str | None,
    quick: bool,
    workers: int | None,
    time_limit: float | None,
    json_file: str | None,
) -> None:
    """Search every design against every hazard scenario; print the matrix and the costs.

    Exit 0 when every cell is decided, 3 when some are incomplete or unmodelled, 4 on a
    pinlab error, 130 on Ctrl-C (the cells done so far are printed), 2 on bad input.
    """
    designs = _names("--designs", designs_opt, dict(DESIGNS))
    scenarios = _names("--scenarios", scenarios_opt, dict(SCENARIOS))
    if quick:
        designs = designs[:QUICK_DESIGNS]
        scenarios = [s for s in scenarios if SCENARIOS[s].quick]
        if not scenarios:
            raise BadInput("--quick: none of the chosen scenarios is a quick one")
    if json_file is not None:
        check_writable(json_file)
    deadline = None if time_limit is None else time.time() + time_limit
    tasks = [Task(d, s, deadline) for d in designs for s in scenarios]
    cells, interrupted = _run(tasks, workers or os.cpu_count() or 1)
    costs = design_costs(designs)
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # a log keeps the matrix on one line per row
    console.print(_matrix(cells, costs, designs, scenarios))
    for c in cells:
        where = escape(f"{c.design} × {c.scenario}")
        if c.verdict == "violated":
            console.print(
                f"[red]{where}[/red]: {escape(c.detail)}; replay with: pinlab replay "
                f"{c.scenario} --design {c.design} --schedule '{escape(c.schedule or '')}'",
                soft_wrap=True,
            )
        elif c.verdict in ("incomplete", "unmodelled", "error"):
            console.print(f"{where}: {c.verdict}: {escape(c.detail)}", soft_wrap=True)
    if interrupted:
        console.print(f"interrupted: {len(cells)} of {len(tasks)} cells done")
    if json_file is not None:
        data = {
            "cells": [asdict(c) for c in cells],
            "designs": [asdict(c) for c in costs],
            "interrupted": interrupted,
        }
        write_atomic(json_file, json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.exit(_exit_status(cells, interrupted))


def _indexed(item: tuple[int, Task]) -> tuple[int, Cell]:
    """A worker's job: one cell, with its place in the matrix."""
    return item[0], run_cell(item[1])


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them all."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(tasks: list[Task], workers: int) -> tuple[list[Cell], bool]:
    """The cells of `tasks` on a process pool, in task order; Ctrl-C keeps those done."""
    done: dict[int, Cell] = {}
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("cells"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # a bar is for a person watching, not for a log
    )
    interrupted = False
    # leaving the with block terminates the workers, a search under way included
    with multiprocessing.Pool(min(workers, len(tasks)), _ignore_sigint) as pool, progress:
        bar = progress.add_task("cells", total=len(tasks))
        try:
            for i, cell in pool.imap_unordered(_indexed, enumerate(tasks)):
                done[i] = cell
                progress.advance(bar)
        except KeyboardInterrupt:
            interrupted = True
    return [done[i] for i in sorted(done)], interrupted


@click.command("replay")
@click.argument("scenario")
@click.option("--design", "design_name", required=True, help="the design the schedule ran under")
@click.option("--schedule", required=True, help="a schedule printed by compare")
def replay_cmd(scenario: str, design_name: str, schedule: str) -> None:
    """Replay a counterexample of SCENARIO under --design and print its steps.

    Exit 1 when it ends in a violation again (the one compare printed), 0 when it does
    not, 4 when a step raises a pinlab error, 2 on bad input (a schedule made for another
    program included).
    """
    try:
        design: Design = get_design(design_name)
        scen: Scenario = get_scenario(scenario)
    except KeyError as err:
        raise BadInput(str(err.args[0])) from None
    if design.base not in scen.profiles:
        raise BadInput(f"{scenario} is written for {', '.join(scen.profiles)}, not {design.base}")
    try:
        run = replay(scen.program(design.name), schedule)
    except ScheduleError as err:
        raise BadInput(str(err)) from None
    for step in run.steps:
        click.echo(f"{step.index:4} {step.thread:10} {step.where}")
        for line in step.changed.splitlines():
            click.echo(f"{'':16}{line}")
    for kind, name, detail, _ in run.violations:
        click.echo(f"{kind}: {name}: {detail}")
    if run.errored:
        sys.exit(ERROR)
    sys.exit(VIOLATED if run.violated else HOLDS)
