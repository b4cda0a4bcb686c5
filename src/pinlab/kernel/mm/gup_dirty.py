"""Dirtying and touching pages on behalf of gup callers (v6.1 mm/page-writeback.c, mm/swap.c).

Used by FOLL_TOUCH and the unpin_user_pages*_dirty_lock family until the
page-cache model (filemap.py) provides the filesystems' ->dirty_folio.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.memmap import compound_head, folio_nr_pages
from pinlab.kernel.mm.rmap import page_mapping_id
from pinlab.kernel.mm.types import AddressSpace
from pinlab.kernel.mm.vmstat import mod_node_page_state

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/linux/mmzone.h node_stat_item NR_FILE_DIRTY / NR_DIRTIED names
NR_FILE_DIRTY = "nr_dirty"
NR_DIRTIED = "nr_dirtied"

_ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF


def _flags_key(folio: int) -> frozenset[Hashable]:
    """Footprint of a folio's flags word."""
    return frozenset({("page", folio, "flags")})


def folio_mapping(k: Kernel, folio: int) -> AddressSpace | None:
    """v6.1 mm/util.c folio_mapping: the page cache a folio belongs to (None for anon)."""
    as_id = page_mapping_id(k, folio)
    return None if as_id is None else k.mappings.get(as_id)


def folio_mark_dirty(k: Kernel, folio: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/page-writeback.c folio_mark_dirty: True if this call dirtied the folio.

    anon, tmpfs and ramfs use noop_dirty_folio (PG_dirty only); ext4 goes
    through filemap_dirty_folio, which also accounts NR_FILE_DIRTY/NR_DIRTIED.
    """
    m = k.mem
    mapping = folio_mapping(k, folio)
    dirty = k.pf.mask("PG_dirty")
    yield Point("folio_mark_dirty", reads=_flags_key(folio), writes=_flags_key(folio))
    if mapping is not None:
        m.flags[folio] &= ~k.pf.mask("PG_reclaim") & _ALL_BITS
    if int(m.flags[folio]) & dirty:
        return False
    m.flags[folio] |= dirty
    if mapping is not None and mapping.fs.writes_back:
        nr = folio_nr_pages(m, folio)
        yield Point("folio_account_dirtied", writes=frozenset({("vmstat", NR_FILE_DIRTY)}))
        mod_node_page_state(k.vmstat, NR_FILE_DIRTY, nr)
        mod_node_page_state(k.vmstat, NR_DIRTIED, nr)
    return True


def set_page_dirty(k: Kernel, page: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/folio-compat.c set_page_dirty: folio_mark_dirty on the page's folio."""
    return (yield from folio_mark_dirty(k, compound_head(k.mem, page)))


def set_page_dirty_lock(k: Kernel, page: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/page-writeback.c set_page_dirty_lock: lock_page, set_page_dirty, unlock_page."""
    folio = compound_head(k.mem, page)
    yield from folio_lock(k, folio)
    ret = yield from folio_mark_dirty(k, folio)
    folio_unlock(k, folio)
    return ret


def mark_page_accessed(k: Kernel, folio: int) -> Generator[Yield, None, None]:
    """v6.1 mm/swap.c folio_mark_accessed, first touch: set PG_referenced.

    A second touch activates the folio through the per-CPU activate batch,
    which belongs to the LRU model (swap.py) and is not done here.
    """
    ref = k.pf.mask("PG_referenced")
    yield Point("folio_mark_accessed", reads=_flags_key(folio), writes=_flags_key(folio))
    if not int(k.mem.flags[folio]) & ref:
        k.mem.flags[folio] |= ref
