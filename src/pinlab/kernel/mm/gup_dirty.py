"""Touching pages on behalf of gup callers (FOLL_TOUCH): folio_mark_accessed (v6.1 mm/swap.c).

Dirtying (folio_mark_dirty, set_page_dirty_lock) is the page cache's, in filemap.py.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def _flags_key(folio: int) -> frozenset[Hashable]:
    """Footprint of a folio's flags word."""
    return frozenset({("page", folio, "flags")})


def mark_page_accessed(k: Kernel, folio: int) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c folio_mark_accessed, first touch: set PG_referenced.

    A second touch activates the folio through the per-CPU activate batch,
    which belongs to the LRU model (swap.py) and is not done here.
    """
    ref = k.pf.mask("PG_referenced")
    yield Point("folio_mark_accessed", reads=_flags_key(folio), writes=_flags_key(folio))
    if not int(k.mem.flags[folio]) & ref:
        k.mem.flags[folio] |= ref
