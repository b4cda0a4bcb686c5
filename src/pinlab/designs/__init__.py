"""Pin-tracking designs from the 2018-2020 discussions (../shared/seeds/), one module each."""

from __future__ import annotations

from pinlab.designs import (
    dma_pinned_flag_2018,
    foll_pin_5_7,
    foll_pin_6_1,
    foll_pin_bias_v4,
    legacy_get,
    page_ext_flag,
)
from pinlab.designs.base import Costs, Design, boot_design

DESIGNS: dict[str, Design] = {
    d.name: d
    for d in (
        legacy_get.DESIGN,
        dma_pinned_flag_2018.DESIGN,
        page_ext_flag.DESIGN,
        foll_pin_bias_v4.DESIGN,
        foll_pin_5_7.DESIGN,
        foll_pin_6_1.DESIGN,
    )
}


def get_design(name: str) -> Design:
    """A design by name; an unknown one raises KeyError naming the known ones."""
    try:
        return DESIGNS[name]
    except KeyError:
        known = ", ".join(DESIGNS)
        raise KeyError(f"unknown design {name!r} (known: {known})") from None


__all__ = ["DESIGNS", "Costs", "Design", "boot_design", "get_design"]
