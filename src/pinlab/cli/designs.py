"""`pinlab designs`: the pin-tracking designs, their source messages, ideas and costs."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from pinlab.cli.errors import BadInput
from pinlab.designs import DESIGNS, get_design
from pinlab.designs.costs import false_positive_rate


@click.command("designs")
@click.argument("names", nargs=-1)
def designs_cmd(names: tuple[str, ...]) -> None:
    """List the designs (or the NAMES given) with year, source, idea and costs.

    The false-positive rate is measured on the design's kernel: the share of unpinned
    folios (plain references 0..4096, small and THP) its pin check calls maybe pinned.
    """
    try:
        chosen = [get_design(n) for n in names] if names else list(DESIGNS.values())
    except KeyError as err:
        raise BadInput(str(err.args[0])) from None
    table = Table(title="pin-tracking designs")
    for col in ("design", "year", "patches", "source", "idea", "driver calls"):
        table.add_column(col, overflow="fold")
    for col in ("page bits", "bytes/pin", "always-on B/page", "false +"):
        table.add_column(col, justify="right")
    for d in chosen:
        rate = false_positive_rate(d)
        c = d.costs
        table.add_row(
            d.name,
            str(d.year),
            d.base,
            d.source,
            d.idea,
            f"{d.gup}; {d.release}",
            str(c.page_bits),
            str(c.pin_bytes),
            str(c.always_on_bytes_per_page),
            "n/a" if rate is None else f"{rate:.0%}",
        )
    Console().print(table)
