"""Waits and rechecks of writeback and truncation, each tested by a search that needs it.

Each test is a two-thread program over the 6.1 model (an ext4 file with one dirty page)
and a property the named wait or recheck exists to keep.  The search must hold the
property over every interleaving; with the wait or recheck removed it finds the
interleaving that breaks it (``bench/mutation.py`` wb_sync_all_wait_dropped,
wb_truncated_folio_recheck_dropped, truncate_writeback_wait_dropped).
"""

from __future__ import annotations

from collections.abc import Generator

from pinlab.explore import FinalCheck, GenThread
from pinlab.interleave import Point, Violation, Yield, run_to_completion
from pinlab.kernel.fs import LLONG_MAX, vfs_fsync, vfs_write, writepages
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages_dirty_lock
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_writeback import LONG_MAX, WB_SYNC_NONE, WritebackControl
from pinlab.kernel.mm.truncate import truncate_setsize
from pinlab.kernel.mm.types import AddressSpace
from pinlab.kernel.process import ext4_create, fd_install, fget, new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from tests.scenarios.searching import only_mm, only_task, search

PAGE = 4096
ADDR = 0x7F00_0000_0000
FIRST = 1  # the token the setup's write(2) leaves in the page
SECOND = 2  # the token a later write(2) puts there


def _mapping(k: Kernel) -> AddressSpace:
    return next(iter(k.mappings.values()))


def _dirty_file_kernel() -> Kernel:
    """A one-page ext4 file, written (dirty in the page cache, not yet on disk)."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    file = fget(k, fd_install(k, ext4_create(k, 0)))
    assert run_to_completion(vfs_write(k, file, 0, PAGE, FIRST, task.cpu)) == PAGE
    return k


def background_writeback(k: Kernel) -> Generator[Yield, None, None]:
    """The flusher: WB_SYNC_NONE writeback of the file (v6.1 fs/fs-writeback.c
    wb_writeback -> do_writepages), which starts writeback on the page, unlocks it and
    submits the bio after the pass (fs/ext4/inode.c ext4_writepages)."""
    wbc = WritebackControl(WB_SYNC_NONE, LONG_MAX, 0, LLONG_MAX)
    yield from writepages(k, _mapping(k), wbc, only_task(k).cpu)


def _no_block_past_eof(k: Kernel) -> bool:
    """Every block on disk lies below EOF (v6.1 fs/ext4/extents.c ext4_ext_truncate :4487,
    :4499 frees the blocks from the first one wholly past EOF)."""
    mapping = _mapping(k)
    return all(index * PAGE < mapping.i_size for index in mapping.store)


# --- fsync waits on a page under writeback that was dirtied again ---------------------
# v6.1 mm/page-writeback.c write_cache_pages :2370-2372: under WB_SYNC_ALL a locked dirty
# folio still under writeback is waited on (wait_on_page_writeback) before it is written
# again; :2377 BUG_ON(PageWriteback) right after.  A page written while the flusher's
# writeback of it is under way is dirty and under writeback when fsync comes to it.


def write_again_then_fsync(k: Kernel) -> Generator[Yield, None, None]:
    """write(2) new data over the page, fsync(2); once fsync returns the data is on disk."""
    file = fget(k, next(iter(k.files)))
    cpu = only_task(k).cpu
    assert (yield from vfs_write(k, file, 0, PAGE, SECOND, cpu)) == PAGE
    assert not (yield from vfs_fsync(k, file, cpu))
    yield Point("look at the disk", reads=None)
    if _mapping(k).store.get(0) != SECOND:
        raise Violation("fsync returned before the second write reached the disk")


def test_fsync_waits_on_writeback_of_a_page_dirtied_again() -> None:
    threads = (
        GenThread("flusher", background_writeback),
        GenThread("fsync", write_again_then_fsync),
    )
    res = search("fsync-redirtied", _dirty_file_kernel, threads)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit


# --- truncate waits on a page under writeback -----------------------------------------
# v6.1 mm/truncate.c truncate_inode_pages_range :447-450: each folio is locked and
# folio_wait_writeback'ed before truncate_inode_folio removes it (the first pass's
# mm/filemap.c find_lock_entries :2132 leaves folios under writeback to this second
# pass); ext4_setattr frees the blocks
# only after (fs/ext4/inode.c :5695 truncate_pagecache, :5701 ext4_truncate).  Without
# the wait the flusher's bio lands in a block truncate has already freed.


def truncate_to_zero(k: Kernel) -> Generator[Yield, None, None]:
    assert (yield from truncate_setsize(k, _mapping(k), 0, only_task(k).cpu)) == 0


def test_truncate_waits_on_writeback_before_freeing_blocks() -> None:
    threads = (GenThread("flusher", background_writeback), GenThread("truncate", truncate_to_zero))
    finals = (FinalCheck("block-past-eof-on-disk", _no_block_past_eof),)
    res = search("truncate-writeback", _dirty_file_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit


# --- writeback skips a page truncated after its lookup --------------------------------
# v6.1 mm/page-writeback.c write_cache_pages :2359-2363: after lock_page, a page whose
# ->mapping is no longer the file's was truncated and is skipped, even when it is dirty.
# A page pinned through a MAP_SHARED mapping outlives its truncation (the pin holds it);
# unpin_user_pages_dirty_lock then dirties it (mm/gup.c unpin_user_pages_dirty_lock
# :323, :359-360 folio_lock + folio_mark_dirty; without a mapping, mm/page-writeback.c
# folio_mark_dirty :2753, :2773 -> noop_dirty_folio :2560 sets PG_dirty).  The
# flusher's lookup, taken before the truncation, still holds it: it must not be handed to
# ->writepage.


def _pinned_dirty_file_kernel() -> Kernel:
    """The dirty one-page file, mapped MAP_SHARED at ADDR, its page pinned for write."""
    k = _dirty_file_kernel()
    task = only_task(k)
    file = fget(k, next(iter(k.files)))
    flags = MAP_SHARED | MAP_FIXED
    rw = PROT_READ | PROT_WRITE
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, rw, flags, file)) == ADDR
    mm = only_mm(k)
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    assert run_to_completion(pin_user_pages(k, mm, ADDR, 1, FOLL_WRITE, pages)) == 1
    mmap_read_unlock(k, mm)
    assert int(pages[0]) == _mapping(k).i_pages[0]
    return k


def truncate_then_unpin_dirty(k: Kernel) -> Generator[Yield, None, None]:
    """ftruncate(0), then the pin holder's I/O completes: unpin_user_pages_dirty_lock."""
    pinned = [_mapping(k).i_pages[0]]  # the setup's pin, taken on the cached page
    assert (yield from truncate_setsize(k, _mapping(k), 0, only_task(k).cpu)) == 0
    yield from unpin_user_pages_dirty_lock(k, pinned, 1, True)


def test_writeback_skips_a_page_truncated_after_its_lookup() -> None:
    threads = (
        GenThread("flusher", background_writeback),
        GenThread("truncate", truncate_then_unpin_dirty),
    )
    finals = (FinalCheck("block-past-eof-on-disk", _no_block_past_eof),)
    res = search("writeback-truncated", _pinned_dirty_file_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit
