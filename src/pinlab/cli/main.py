"""The `pinlab` command: assembles the sub-command groups and maps bad input to exit 2."""

from __future__ import annotations

import sys

import click

from pinlab.cli.compare import compare_cmd, replay_cmd
from pinlab.cli.designs import designs_cmd
from pinlab.cli.explore import anchor
from pinlab.cli.kernel import kernel_group
from pinlab.cli.model import dump_page_cmd, vmstat_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def app() -> None:
    """An executable model of Linux page pinning: kernel model, race explorer, real-kernel check."""


@app.command()
def version() -> None:
    """Print pinlab's version."""
    from pinlab import __version__

    click.echo(__version__)


app.add_command(anchor)
app.add_command(kernel_group)
app.add_command(dump_page_cmd)
app.add_command(vmstat_cmd)
app.add_command(designs_cmd)
app.add_command(compare_cmd)
app.add_command(replay_cmd)


def main() -> None:
    """Entry point: usage errors and BadInput print one line and exit 2; Ctrl-C exits 130."""
    try:
        app.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("pinlab: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as err:
        # A group called without its command: name what is missing, in one line.
        path = err.ctx.command_path
        click.echo(f"pinlab: error: {path} needs a command (see '{path} --help')", err=True)
        sys.exit(2)
    except click.ClickException as err:
        click.echo(f"pinlab: error: {err.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
