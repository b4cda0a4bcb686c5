"""Buffer heads of a block filesystem's page-cache folios (v6.1 fs/buffer.c).

A folio's buffers are one PG_private reference (folio_attach_private, v6.1
include/linux/pagemap.h).  The buffers' own state bits (BH_Uptodate, BH_Dirty,
BH_Mapped, BH_Delay, BH_New) are not modelled, so only writes of whole pages
are: a write of part of a page reads, zeroes or dirties single fs blocks, which
depends on the block size and on per-buffer state.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.mm.filemap import __folio_mark_dirty, dirty_footprint, folio_put_footprint
from pinlab.kernel.mm.locking import folio_unlock
from pinlab.kernel.mm.page_alloc import order_keys
from pinlab.kernel.mm.page_ref import folio_get, folio_put
from pinlab.kernel.mm.pgtable import PAGE_SIZE
from pinlab.kernel.mm.types import AddressSpace

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def attach_buffers(k: Kernel, folio: int) -> None:
    """v6.1 fs/buffer.c create_page_buffers -> folio_attach_private: +1 ref, PG_private."""
    private = k.pf.mask("PG_private")
    if not int(k.mem.flags[folio]) & private:
        folio_get(k, folio)
        k.mem.flags[folio] |= private


def _whole_pages(function: str, pos: int, length: int) -> None:
    """Refuse a write of part of a page: its effect depends on per-block buffer state."""
    if pos & (PAGE_SIZE - 1) or length != PAGE_SIZE:
        raise Unmodelled(
            function,
            f"a write of part of a page (pos {pos}, {length} bytes): "
            "fs/buffer.c reads, zeroes and dirties single fs blocks there",
        )


def block_write_modelled(mapping: AddressSpace, pos: int, length: int) -> None:
    """Refuse, before anything changes, a buffered write the buffer model cannot follow.

    Part of a page (see _whole_pages), or a write starting past an i_size that
    ends inside a page: generic_write_end's pagecache_isize_extended (v6.1
    mm/truncate.c) then write-protects that page when the fs block size is
    below PAGE_SIZE, which the model does not know.
    """
    _whole_pages("__block_write_begin", pos, length)
    if mapping.i_size < pos and mapping.i_size & (PAGE_SIZE - 1):
        raise Unmodelled("pagecache_isize_extended", "a write past a partial last page")


def __block_write_begin(
    k: Kernel, mapping: AddressSpace, folio: int, pos: int, length: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/buffer.c __block_write_begin_int over a whole page: attach buffers, map blocks.

    A whole-page write reads nothing: every block is overwritten.  get_block
    (ext4_da_get_block_prep: reserve delayed blocks for holes) changes no
    modelled state.  Returns 0.
    """
    _whole_pages("__block_write_begin", pos, length)
    yield Point(
        "create_page_buffers",
        writes=frozenset({("page", folio, "refcount"), ("page", folio, "flags")}),
    )
    attach_buffers(k, folio)
    return 0


def mark_buffer_dirty(k: Kernel, mapping: AddressSpace, folio: int) -> Generator[Yield, None, None]:
    """v6.1 fs/buffer.c mark_buffer_dirty: the first dirty buffer dirties its folio.

    TestSetPageDirty, then __folio_mark_dirty's accounting; unlike
    folio_mark_dirty it leaves PG_reclaim alone.  __mark_inode_dirty is inode
    bookkeeping, not modelled.
    """
    keys = dirty_footprint(mapping, folio)
    # (__folio_mark_dirty's folio_nr_pages)
    yield Point("mark_buffer_dirty", reads=keys | order_keys(folio), writes=keys)
    dirty = k.pf.mask("PG_dirty")
    if int(k.mem.flags[folio]) & dirty:
        return
    k.mem.flags[folio] |= dirty
    __folio_mark_dirty(k, mapping, folio)


def block_write_end(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, copied: int, folio: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/buffer.c block_write_end -> __block_commit_write over a whole page.

    Every buffer becomes uptodate and dirty (the first dirties the folio), then
    the folio uptodate.  Returns `copied`.
    """
    _whole_pages("block_write_end", pos, copied)
    yield from mark_buffer_dirty(k, mapping, folio)
    k.mem.flags[folio] |= k.pf.mask("PG_uptodate")
    return copied


def generic_write_end(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, copied: int, folio: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/buffer.c generic_write_end: commit, extend i_size under the lock, unlock, put.

    The folio reference put is write_begin's (grab_cache_page_write_begin's);
    pagecache_isize_extended has nothing to do for a write block_write_modelled
    lets through.  mark_inode_dirty is inode bookkeeping.
    """
    block_write_modelled(mapping, pos, copied)
    copied = yield from block_write_end(k, mapping, pos, length, copied, folio)
    yield Point(
        "i_size_write", writes=frozenset({("mapping", mapping.id), ("page", folio, "flags")})
    )
    if pos + copied > mapping.i_size:
        mapping.i_size = pos + copied
    folio_unlock(k, folio)
    yield Point("put_page", writes=folio_put_footprint(k, folio))
    folio_put(k, folio)
    return copied
