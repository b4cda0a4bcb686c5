"""`pinlab kernel ...`: fetch a real kernel and check pinlab's predictions against it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pinlab.cli.errors import BadInput
from pinlab.realkernel import fetch as fetching
from pinlab.realkernel.catalog import PROBES
from pinlab.realkernel.check import (
    Report,
    default_evaluator,
    report_json,
    run_check,
    write_atomic,
)
from pinlab.realkernel.console import fields_of, parse_frames
from pinlab.realkernel.evaluator import outcome_from_fields
from pinlab.realkernel.modules import ModuleError
from pinlab.realkernel.qemu import requested_accel
from pinlab.realkernel.toolchain import MissingTool


@click.group("kernel")
def kernel_group() -> None:
    """Run pinlab's probes in a real Linux kernel under QEMU."""


_cache_option = click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cache directory (default $PINLAB_CACHE or ~/.cache/pinlab).",
)


@kernel_group.command("fetch")
@_cache_option
@click.option(
    "--package", default=fetching.PACKAGE, show_default=True, help="Debian kernel image package."
)
@click.option(
    "--version", "version", default=fetching.VERSION, show_default=True, help="Package version."
)
def fetch_cmd(cache: Path | None, package: str, version: str) -> None:
    """Download and unpack Debian's kernel image package into the cache."""
    try:
        image = fetching.fetch(fetching.cache_dir(cache), package, version)
    except fetching.FetchError as err:
        raise BadInput(str(err)) from err
    click.echo(f"{image.source} sha256 {image.sha256}")
    click.echo(f"vmlinuz {image.vmlinuz}")
    click.echo(f"modules {image.modules}")


def _table(report: Report) -> Table:
    table = Table(title=f"{report.release} ({report.accel}, {report.seconds:.1f} s)")
    for col in ("probe", "what the kernel did", "what pinlab predicted", "match"):
        table.add_column(col, overflow="fold")
    for r in report.rows:
        predicted = r.predicted.describe() if r.predicted else "no model evaluator"
        table.add_row(r.probe, r.kernel.describe(), predicted, r.verdict)
    return table


def _image(cache: Path | None, vmlinuz: Path | None, modules: Path | None) -> fetching.KernelImage:
    try:
        if vmlinuz is not None:
            return fetching.user_kernel(vmlinuz, modules)
    except fetching.FetchError as err:
        raise BadInput(str(err)) from err
    if modules is not None:
        raise BadInput("--modules needs --vmlinuz")
    where = fetching.cache_dir(cache)
    try:
        image = fetching.cached(where)
    except fetching.FetchError as err:
        raise BadInput(str(err)) from err
    if image is None:
        raise BadInput(
            f"no {fetching.PACKAGE}={fetching.VERSION} in {where}: run `pinlab kernel fetch` first"
        )
    return image


@kernel_group.command("check")
@_cache_option
@click.option(
    "--vmlinuz",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Boot this kernel image instead of the fetched one.",
)
@click.option(
    "--modules",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Its lib/modules/<release> directory (default: drivers are built in).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the table as JSON.",
)
@click.option(
    "--console-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the raw serial console output.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(10, 3600),
    default=240.0,
    show_default=True,
    help="Seconds before the guest is killed.",
)
@click.option(
    "--no-model",
    is_flag=True,
    help="Only run the kernel side (e.g. a kernel with no model profile).",
)
def check_cmd(
    cache: Path | None,
    vmlinuz: Path | None,
    modules: Path | None,
    json_out: Path | None,
    console_log: Path | None,
    timeout: float,
    no_model: bool,
) -> None:
    """Boot the kernel once, run every probe, compare with pinlab's predictions (exit 1 if not)."""
    for option, path in (("--json", json_out), ("--console-log", console_log)):
        if path is not None and not path.parent.is_dir():
            raise BadInput(f"{option} {path}: directory {path.parent} does not exist")
    image = _image(cache, vmlinuz, modules)
    try:
        requested_accel()
    except ValueError as err:
        raise BadInput(str(err)) from err
    console = Console(stderr=True)
    seen: list[str] = [""]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("probes", total=len(PROBES))

        def on_output(text: str) -> None:
            seen[0] = text
            bar.update(task, completed=min(len(PROBES), text.count("case=")))

        try:
            evaluator = None if no_model else default_evaluator()
            report = run_check(
                image, evaluator, timeout, console_log=console_log, on_output=on_output
            )
        except (MissingTool, ModuleError) as err:
            raise BadInput(str(err)) from err
        except (RuntimeError, OSError) as err:
            raise click.ClickException(str(err)) from err
        except KeyboardInterrupt:
            bar.stop()
            _print_partial(seen[0])
            raise click.exceptions.Abort() from None
    Console().print(_table(report))
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if json_out is not None:
        write_atomic(json_out, json.dumps(report_json(report), indent=2) + "\n")
    sys.exit(0 if report.passed else 1)


def _print_partial(console_text: str) -> None:
    """On Ctrl-C: the probes whose results had arrived."""
    frames = parse_frames(console_text)
    done = [fields_of(frames.payloads[s]) for s in sorted(frames.payloads)]
    done = [f for f in done if "case" in f]
    click.echo(f"interrupted; {len(done)} of {len(PROBES)} probes had reported:", err=True)
    for f in done:
        click.echo(f"  {f['case']}: {outcome_from_fields(f).describe()}", err=True)
