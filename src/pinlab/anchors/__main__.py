"""``python -m pinlab.anchors MODEL ...``: the ``pinlab anchor`` command on its own.

Loads only click, the explorer and the anchors (not the kernel model or the real-kernel
referee), which is what the benchmark times and the tests run.
"""

from __future__ import annotations

import sys

import click

from pinlab.cli.explore import anchor
from pinlab.explore.result import BAD_INPUT, INTERRUPTED


def main() -> None:
    """Run the command; usage errors print one line (exit 2), Ctrl-C exits 130."""
    try:
        anchor.main(prog_name="python -m pinlab.anchors", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("pinlab: interrupted", err=True)
        sys.exit(INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("pinlab: interrupted", err=True)
        sys.exit(INTERRUPTED)
    except click.ClickException as err:
        click.echo(f"pinlab: error: {err.format_message()}", err=True)
        sys.exit(BAD_INPUT)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
