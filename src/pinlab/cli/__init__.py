"""pinlab's command line: thin wrappers that parse, call and print."""

from pinlab.cli.main import main

__all__ = ["main"]
