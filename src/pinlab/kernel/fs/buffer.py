"""Buffer heads of a block filesystem's page-cache folios (v6.1 fs/buffer.c).

A folio's buffers are one PG_private reference (folio_attach_private, v6.1
include/linux/pagemap.h) and page->private, which in the kernel points at the ring
of buffer_heads.  The model keeps there what the kernel's tests of the ring read,
summed over the ring: BH_ATTACHED (the ring exists: folio_buffers), BH_DIRTY (a
buffer has BH_Dirty) and the buffers' b_count above B_COUNT_SHIFT.  Only whole pages
are written, dirtied and invalidated, which treat every buffer alike, so the summary
is exact for them.  BH_Lock is never held by a modelled path (block I/O completes
inside its call, and ext4 writes through bios without locking buffers), nor are
BH_Uptodate, BH_Mapped, BH_Delay and BH_New modelled: a write of part of a page
reads, zeroes or dirties single fs blocks, which depends on the block size and on
per-buffer state, so it is refused.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.bug import bug_on, warn_on_once
from pinlab.kernel.mm.filemap import (
    __folio_mark_dirty,
    dirty_footprint,
    folio_cancel_dirty,
    folio_put_footprint,
)
from pinlab.kernel.mm.locking import folio_unlock
from pinlab.kernel.mm.page_alloc import order_keys
from pinlab.kernel.mm.page_ref import folio_get, folio_put
from pinlab.kernel.mm.pgtable import PAGE_SIZE
from pinlab.kernel.mm.types import AddressSpace

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

_ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF
# page->private of a folio with buffers (see the module docstring)
BH_ATTACHED = 1
BH_DIRTY = 2
# v4.4.178 include/linux/jbd2.h:320-330 BH_JBD (a journal_head is attached) and BH_JBDDirty
# (dirty for the journal, not yet for the VM): the ext4 journal's buffers (fs/jbd2.py)
BH_JBD = 4
BH_JBDDIRTY = 8
B_COUNT_SHIFT = 8


def buffer_keys(folio: int) -> frozenset[Hashable]:
    """Footprint of a folio's buffers: page->private, and its flags (PG_private)."""
    return frozenset({("page", folio, "private"), ("page", folio, "flags")})


def folio_buffers(k: Kernel, folio: int) -> bool:
    """v6.1 include/linux/buffer_head.h folio_buffers (4.4 / 5.7 page_has_buffers): a ring?"""
    return bool(int(k.mem.private[folio]) & BH_ATTACHED)


def attach_buffers(k: Kernel, folio: int) -> None:
    """v6.1 fs/buffer.c create_page_buffers -> create_empty_buffers -> folio_attach_private.

    +1 ref and PG_private; the new buffers are dirty when the folio is (v6.1
    fs/buffer.c:1553-1557; v5.7.14 :1573, v4.4.178 :1603 the same).
    """
    if folio_buffers(k, folio):
        return
    folio_get(k, folio)
    k.mem.flags[folio] |= k.pf.mask("PG_private")
    dirty = int(k.mem.flags[folio]) & k.pf.mask("PG_dirty")
    k.mem.private[folio] = BH_ATTACHED | (BH_DIRTY if dirty else 0)


def set_buffers_dirty(k: Kernel, folio: int) -> None:
    """Every buffer of the folio gets BH_Dirty (block_dirty_folio's loop); none: nothing."""
    if folio_buffers(k, folio):
        k.mem.private[folio] |= BH_DIRTY


def clear_buffers_dirty(k: Kernel, folio: int) -> None:
    """Every buffer of the folio loses BH_Dirty (discard_buffer, ext4_bio_write_page)."""
    k.mem.private[folio] = int(k.mem.private[folio]) & ~BH_DIRTY


def get_bh(k: Kernel, folio: int) -> None:
    """v6.1 include/linux/buffer_head.h get_bh on the folio's buffer: b_count + 1."""
    bug_on(not folio_buffers(k, folio), "get_bh without buffers")
    k.mem.private[folio] += 1 << B_COUNT_SHIFT


def put_bh(k: Kernel, folio: int) -> None:
    """v6.1 include/linux/buffer_head.h put_bh: b_count - 1."""
    bug_on(int(k.mem.private[folio]) >> B_COUNT_SHIFT <= 0, "put_bh with b_count 0")
    k.mem.private[folio] -= 1 << B_COUNT_SHIFT


def page_buffers(k: Kernel, folio: int) -> None:
    """v4.4.178 include/linux/buffer_head.h:137-141 page_buffers: BUG_ON(!PagePrivate(page))."""
    bug_on(not int(k.mem.flags[folio]) & k.pf.mask("PG_private"), "page_buffers !PagePrivate")


def mark_buffer_dirty_locked(k: Kernel, folio: int) -> None:
    """v4.4.178 fs/buffer.c:1158 mark_buffer_dirty, one step: a newly dirty buffer dirties its
    page (TestSetPageDirty, then __set_page_dirty's accounting and tag, :633)."""
    from pinlab.kernel.mm.filemap import folio_mapping

    if int(k.mem.private[folio]) & BH_DIRTY:
        return
    k.mem.private[folio] |= BH_DIRTY
    dirty = k.pf.mask("PG_dirty")
    if int(k.mem.flags[folio]) & dirty:
        return
    k.mem.flags[folio] |= dirty
    mapping = folio_mapping(k, folio)
    if mapping is not None:
        __folio_mark_dirty(k, mapping, folio)


def buffer_busy(k: Kernel, folio: int) -> bool:
    """Some buffer is busy: b_count, BH_Dirty or BH_Lock (never held in the model).

    v6.1 fs/buffer.c buffer_busy (:2782), v5.7.14 (:3203), v4.4.178 (:3179), the same.
    """
    private = int(k.mem.private[folio])
    return bool(private >> B_COUNT_SHIFT or private & BH_DIRTY)


def drop_buffers(k: Kernel, folio: int) -> bool:
    """Detach the ring unless a buffer is busy: private 0, PG_private off, -1 ref.

    v6.1 fs/buffer.c drop_buffers (:2789) -> folio_detach_private; v5.7.14 (:3210) and
    v4.4.178 (:3186) -> __clear_page_buffers.  No buffer of a data page is on an inode's
    associated list (b_assoc_map: metadata of mark_buffer_dirty_inode), so nothing else.
    """
    if buffer_busy(k, folio):
        return False
    k.mem.private[folio] = 0
    k.mem.flags[folio] &= ~k.pf.mask("PG_private") & _ALL_BITS
    folio_put(k, folio)
    return True


def try_to_free_buffers(k: Kernel, mapping: AddressSpace | None, folio: int) -> bool:
    """Free the folio's buffers if none is busy; then cancel the folio's dirty bit.

    v6.1 fs/buffer.c try_to_free_buffers (:2815): locked folio; false under writeback;
    no buffers -> WARN_ON_ONCE and true (profile.free_buffers_warns_no_buffers; 5.7.14
    :3236 and 4.4.178 :3214 have no such test); drop_buffers, and when it succeeds
    folio_cancel_dirty (6.1 :2852, 5.7 cancel_dirty_page :3269, 4.4 :3247): truncate's
    discard_buffer cleaned every buffer, and with no buffers left the folio is clean.
    """
    flags = int(k.mem.flags[folio])
    bug_on(not flags & k.pf.mask("PG_locked"), "try_to_free_buffers unlocked folio")
    if flags & k.pf.mask("PG_writeback"):
        return False
    if not folio_buffers(k, folio):
        if not k.profile.free_buffers_warns_no_buffers:
            raise Unmodelled("try_to_free_buffers", "page_buffers of a page without buffers")
        warn_on_once(k, "fs/buffer.c try_to_free_buffers !folio_buffers")
        return True
    ret = drop_buffers(k, folio)
    if ret and mapping is not None:
        folio_cancel_dirty(k, mapping, folio)
    return ret


def block_invalidate_folio(
    k: Kernel, mapping: AddressSpace, folio: int, offset: int, length: int
) -> None:
    """Invalidate a whole folio's buffers: discard each, then try to release them.

    v6.1 fs/buffer.c block_invalidate_folio (:1483): BUG_ON unlocked; no buffers ->
    return; every buffer inside [offset, offset + length) is discarded (discard_buffer
    :1454: BH_Dirty and the mapping bits cleared); the whole folio -> filemap_release_folio
    (:1526).  v5.7.14 block_invalidatepage (:1503, discard_buffer :1469,
    try_to_release_page :1546) and v4.4.178 (:1533, :1499, :1576) the same.  Only the whole
    folio is modelled (truncate's partial EOF page is not zeroed either).
    """
    from pinlab.kernel.mm.filemap import filemap_release_folio

    bug_on(not int(k.mem.flags[folio]) & k.pf.mask("PG_locked"), "block_invalidate_folio")
    if not folio_buffers(k, folio):
        return
    if offset != 0 or length != PAGE_SIZE:
        raise Unmodelled("block_invalidate_folio", "invalidating part of a folio's buffers")
    clear_buffers_dirty(k, folio)
    filemap_release_folio(k, folio)


def block_dirty_folio(k: Kernel, mapping: AddressSpace, folio: int) -> bool:
    """Dirty every buffer, then the folio; True if the folio was newly dirtied.

    v6.1 fs/buffer.c block_dirty_folio (:616): under private_lock each buffer of the
    ring (if any) gets BH_Dirty, then folio_test_set_dirty; a newly dirty folio goes
    through __folio_mark_dirty(warn=1) (accounting; WARN_ON_ONCE if !uptodate) and
    __mark_inode_dirty (inode bookkeeping, not modelled).  v5.7.14 fs/buffer.c
    __set_page_dirty_buffers (:650) and v4.4.178 (:673) are the same (their !mapping
    branch cannot be taken: set_page_dirty only calls it with a mapping).
    """
    set_buffers_dirty(k, folio)
    dirty = k.pf.mask("PG_dirty")
    if int(k.mem.flags[folio]) & dirty:
        return False
    k.mem.flags[folio] |= dirty
    __folio_mark_dirty(k, mapping, folio, warn=True)
    return True


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
        writes=buffer_keys(folio) | {("page", folio, "refcount")},
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
    set_buffers_dirty(k, folio)
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
