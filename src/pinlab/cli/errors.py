"""The error every command raises for input the user can fix."""

from __future__ import annotations

import click


class BadInput(click.ClickException):
    """Input the user can fix: printed as one line, exit status 2."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        """Print the one-line error on stderr."""
        click.echo(f"pinlab: error: {self.format_message()}", err=True)
