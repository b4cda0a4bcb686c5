"""``pinlab anchor``: run the race explorer on the SPIN-equivalent anchor programs.

Imports nothing of pinlab but the explorer, the anchors (lazily) and the shared cli
helpers, so that ``python -m pinlab.anchors`` starts fast (:mod:`pinlab.anchors.__main__`).
The exit status of a search or a replay is :func:`pinlab.explore.result.exit_code`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from pinlab.cli.errors import BadInput
from pinlab.cli.files import check_writable, write_atomic


def _defines(values: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise BadInput(f"-D wants NAME=VALUE, got {item!r}")
        try:
            out[name] = int(value)
        except ValueError:
            raise BadInput(f"-D {name}: {value!r} is not an integer") from None
    return out


class _Progress:
    """A rich status line for long searches, on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.bar.add_task("exploring", total=None)

    def __call__(self, states: int, transitions: int, depth: int) -> None:
        self.bar.update(
            self.task,
            description=f"{states:,} states  {transitions:,} transitions  "
            f"depth {depth}  (Ctrl-C stops)",
        )


@click.command("anchor")
@click.argument("model")
@click.option(
    "-D",
    "defines",
    multiple=True,
    metavar="NAME=VALUE",
    help="model parameter, as for spin -D (K, ORDER, PRIVREF / K, R, BIAS, PROP, MUT)",
)
@click.option(
    "--strategy",
    type=click.Choice(["dfs", "bfs", "random", "pct"]),
    default="dfs",
    show_default=True,
)
@click.option("--por/--no-por", default=False, help="sleep-set partial-order reduction (dfs)")
@click.option(
    "--symmetry/--no-symmetry",
    default=False,
    help="treat the K get/put threads as interchangeable; report orbits",
)
@click.option("--cache/--no-cache", default=True, help="visited-state cache")
@click.option("--count-all", is_flag=True, help="expand past violations, count violating states")
@click.option("--preemption-bound", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--pct-depth", type=int, default=3, show_default=True)
@click.option("--max-schedules", type=int, default=None)
@click.option("--max-steps", type=int, default=None, help="steps per schedule")
@click.option("--max-states", type=int, default=None)
@click.option("--max-time", type=float, default=None, help="seconds")
@click.option("--shrink/--no-shrink", default=True)
@click.option("--replay", "schedule", default=None, help="replay this schedule and print its trace")
@click.option("--json", "json_file", default=None, help="write the result as JSON to this file")
@click.option("--progress/--no-progress", default=None, help="default: when stderr is a terminal")
@click.option("--quiet", is_flag=True, help="print only the verdict line")
def anchor(
    model: str,
    defines: tuple[str, ...],
    strategy: str,
    por: bool,
    symmetry: bool,
    cache: bool,
    count_all: bool,
    preemption_bound: int | None,
    seed: int,
    pct_depth: int,
    max_schedules: int | None,
    max_steps: int | None,
    max_states: int | None,
    max_time: float | None,
    shrink: bool,
    schedule: str | None,
    json_file: str | None,
    progress: bool | None,
    quiet: bool,
) -> None:
    """Explore MODEL (hillf or pinbias).

    Exit status: 0 holds (complete search), 1 violated, 2 bad input, 3 no violation but
    inconclusive (incomplete, bounded, or an unmodelled path reached), 4 a step raised
    an error (a bug in pinlab), 130 interrupted without an error or a violation (what was
    found so far is printed).  The same rule holds for --replay.
    """
    from pinlab.anchors import build
    from pinlab.explore import Options, ScheduleError, replay
    from pinlab.explore.result import exit_code

    try:
        program = build(model, _defines(defines))
        opts = Options(
            strategy=strategy,
            por=por,
            symmetry=symmetry,
            cache=cache,
            count_all=count_all,
            preemption_bound=preemption_bound,
            seed=seed,
            pct_depth=pct_depth,
            max_schedules=max_schedules,
            max_steps=max_steps,
            max_states=max_states,
            max_time=max_time,
            shrink=shrink,
        )
        opts.validate()
    except ValueError as err:
        raise BadInput(str(err)) from None
    if json_file:
        check_writable(json_file)
    if schedule is not None:
        try:
            rep = replay(program, schedule)
        except ScheduleError as err:
            raise BadInput(str(err)) from None
        click.echo(rep.render())
        if json_file:
            write_atomic(
                json_file,
                json.dumps(
                    {
                        "schedule": rep.schedule,
                        "violations": rep.violations,
                        "passed": rep.passed,
                        "unmodelled": rep.unmodelled,
                        "error": rep.error,
                        "exit_code": exit_code(rep),
                        "memory_model": "sequential consistency",
                    },
                    indent=2,
                ),
            )
        sys.exit(exit_code(rep))
    sys.exit(_explore(program, opts, json_file, progress, quiet, count_all))


def _explore(
    program: Any, opts: Any, json_file: str | None, progress: bool | None, quiet: bool, count: bool
) -> int:
    """Search, print (unless quiet: traces, then the findings), write JSON; the exit status.

    Violations, unmodelled paths and errors are printed under their own headings and
    written apart, under ``counterexamples``, ``unmodelled`` and ``errors``; violations
    and errors come with their traces (``traces``, ``error_traces``).
    """
    from pinlab.explore import explore, replay
    from pinlab.explore.result import exit_code

    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress() if show else None
    if bar is not None:
        with bar.bar:
            result = explore(program, opts, bar)
    else:
        result = explore(program, opts)
    data: dict[str, Any] = result.to_dict()
    interrupted = result.interrupted
    try:
        if not quiet:
            orbits = f" in {result.orbits:,} orbits" if result.orbits is not None else ""
            click.echo(
                f"{result.program}: {result.strategy}, {result.states:,} states{orbits}, "
                f"{result.transitions:,} transitions, {result.schedules:,} schedules, "
                f"{'complete' if result.complete else 'incomplete'}, {result.elapsed:.2f}s"
            )
            if count:
                click.echo(f"violating states: {result.violating_states:,}")
            traces: list[str] = []
            data["traces"] = traces
            for cx in result.counterexamples:
                rendered = replay(program, cx.schedule).render()
                traces.append(rendered)
                click.echo(rendered)
            error_traces: list[str] = []
            data["error_traces"] = error_traces
            for err in result.errors:
                rendered = replay(program, err.schedule).render()
                error_traces.append(rendered)
                click.echo(rendered)
    except KeyboardInterrupt:
        interrupted = True
        click.echo("(interrupted while printing traces)")
    if not quiet:
        _print_findings(result)
    click.echo(result.verdict)
    if json_file:
        write_atomic(json_file, json.dumps(data, indent=2, sort_keys=True))
    result.interrupted = result.interrupted or interrupted
    return exit_code(result)


def _print_findings(result: Any) -> None:
    """The three kinds of findings, each under its own heading, one schedule a line."""
    if result.counterexamples:
        click.echo(f"violations: {len(result.counterexamples)}")
        for cx in result.counterexamples:
            click.echo(f"  {cx.kind} {cx.name}: {cx.schedule}")
    if result.unmodelled:
        click.echo(f"unmodelled paths (not verdicts): {len(result.unmodelled)}")
        for u in result.unmodelled:
            click.echo(f"  {u} ({u.count:,} states): {u.schedule}")
    if result.errors:
        click.echo(f"errors (bugs in pinlab): {len(result.errors)}")
        for e in result.errors:
            click.echo(f"  {e} (thread {e.thread}): {e.schedule}")
