"""ext4 mounted -o data=journal in v4.4.178: ext4_journalled_aops (fs/ext4/inode.c:3411).

File data goes through the journal (fs/jbd2.py) as metadata does: ->page_mkwrite and a
writepage of a page dirtied through a mapping (PageChecked, PG_owner_priv_1 in v4.4.178
include/linux/page-flags.h:114) file its buffer with the running transaction; a commit
exposes the buffer to the VM as dirty again, and a second writepage then writes it in
place (ext4_bio_write_page).  Only v4.4.178 is modelled: other kernels raise Unmodelled.
Blocks are not allocated in the model, so only pages whose block exists (in `store`) are
handled; fs blocks are PAGE_SIZE, one buffer per page.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.bug import bug_on, warn_on_once
from pinlab.kernel.fs.buffer import (
    B_COUNT_SHIFT,
    BH_DIRTY,
    attach_buffers,
    buffer_keys,
    clear_buffers_dirty,
    mark_buffer_dirty_locked,
    page_buffers,
)
from pinlab.kernel.fs.jbd2 import (
    JOURNAL_KEY,
    jbd2_journal_dirty_metadata,
    jbd2_journal_get_write_access,
    jbd2_journal_start,
    jbd2_journal_stop,
    jbd2_journal_try_to_free_buffers,
)
from pinlab.kernel.mm.filemap import __folio_mark_dirty, dirty_footprint, folio_put_footprint
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.page_alloc import order_keys
from pinlab.kernel.mm.page_ref import folio_get, folio_put
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.rmap import file_mapping_value
from pinlab.kernel.mm.types import AddressSpace, FsType

if TYPE_CHECKING:
    from pinlab.kernel.fs.ext4 import Ext4IoSubmit
    from pinlab.kernel.mm.page_writeback import WritebackControl
    from pinlab.kernel.state import Kernel

_ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF
PG_CHECKED = "PG_owner_priv_1"


def ext4_should_journal_data(k: Kernel, mapping: AddressSpace) -> bool:
    """v4.4.178 fs/ext4/ext4_jbd2.h ext4_should_journal_data: the mount is data=journal.

    Under another kernel a data=journal mount raises Unmodelled: its paths differ.
    """
    if mapping.fs is not FsType.EXT4 or k.ext4_data != "journal":
        return False
    if k.profile.consumers != "4.4":
        raise Unmodelled("ext4_should_journal_data", f"data=journal on {k.profile.name}")
    return True


def _page(folio: int) -> frozenset[Hashable]:
    return frozenset(("page", folio, f) for f in ("flags", "private", "refcount"))


def ext4_journalled_set_page_dirty(k: Kernel, mapping: AddressSpace, folio: int) -> bool:
    """v4.4.178 fs/ext4/inode.c:3389: SetPageChecked, then __set_page_dirty_nobuffers
    (mm/page-writeback.c:2472: TestSetPageDirty; a newly dirty page WARN_ON_ONCE if neither
    private nor uptodate, is accounted and tagged dirty).  True if newly dirty."""
    k.mem.flags[folio] |= k.pf.mask(PG_CHECKED)
    dirty = k.pf.mask("PG_dirty")
    flags = int(k.mem.flags[folio])
    if flags & dirty:
        return False
    k.mem.flags[folio] |= dirty
    if not flags & (k.pf.mask("PG_private") | k.pf.mask("PG_uptodate")):
        warn_on_once(k, "mm/page-writeback.c __set_page_dirty_nobuffers !private && !uptodate")
    __folio_mark_dirty(k, mapping, folio)
    return True


def ext4_journalled_releasepage(k: Kernel, mapping: AddressSpace, folio: int) -> bool:
    """v4.4.178 fs/ext4/inode.c:3116 ext4_releasepage with a journal: PageChecked -> 0,
    else jbd2_journal_try_to_free_buffers."""
    if int(k.mem.flags[folio]) & k.pf.mask(PG_CHECKED):
        return False
    return jbd2_journal_try_to_free_buffers(k, mapping, folio)


def do_journal_get_write_access(k: Kernel, folio: int) -> None:
    """v4.4.178 fs/ext4/inode.c:904 do_journal_get_write_access on the page's buffer: a dirty
    one is cleaned, given write access, then journalled (ext4_handle_dirty_metadata)."""
    dirty = int(k.mem.private[folio]) & BH_DIRTY
    if dirty:
        k.mem.private[folio] = int(k.mem.private[folio]) & ~BH_DIRTY
    jbd2_journal_get_write_access(k, folio)
    if dirty:
        jbd2_journal_dirty_metadata(k, folio)


def _require_block(mapping: AddressSpace, folio_index: int, function: str) -> None:
    if folio_index not in mapping.store:
        raise Unmodelled(function, "a hole: block allocation (ext4_get_block) is not modelled")


def ext4_page_mkwrite_journalled(
    k: Kernel, mapping: AddressSpace, folio: int
) -> Generator[Yield, None, int]:
    """v4.4.178 fs/ext4/inode.c:5409 ext4_page_mkwrite when journalling data.

    Locked and still in the file: buffers there (all mapped) -> VM_FAULT_LOCKED (:5462-5471,
    wait_for_stable_page has nothing to wait for).  Else under a handle block_page_mkwrite
    (fs/buffer.c:2425: lock, recheck, buffers attached and mapped, block_commit_write's
    mark_buffer_dirty, set_page_dirty) and do_journal_get_write_access (:5484-5492).
    """
    from pinlab.kernel.mm.memory import VM_FAULT_LOCKED, VM_FAULT_NOPAGE

    yield from folio_lock(k, folio)
    index = int(k.mem.index[folio])
    if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id) or (
        index * PAGE_SIZE > mapping.i_size
    ):
        folio_unlock(k, folio)
        return VM_FAULT_NOPAGE
    _require_block(mapping, index, "ext4_page_mkwrite")
    if int(k.mem.flags[folio]) & k.pf.mask("PG_private"):
        return VM_FAULT_LOCKED
    folio_unlock(k, folio)
    yield from jbd2_journal_start(k, folio)
    yield from folio_lock(k, folio)
    keys = _page(folio) | dirty_footprint(mapping, folio) | {JOURNAL_KEY}
    # __folio_mark_dirty counts the folio's pages (order_keys)
    reads = keys | order_keys(folio) | {("page", folio, "mapping")}
    yield Point("block_page_mkwrite", reads=reads, writes=keys)
    if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id) or (
        index * PAGE_SIZE > mapping.i_size
    ):
        folio_unlock(k, folio)
        yield from jbd2_journal_stop(k)
        return VM_FAULT_NOPAGE  # block_page_mkwrite_return(-EFAULT)
    attach_buffers(k, folio)
    mark_buffer_dirty_locked(k, folio)
    ext4_journalled_set_page_dirty(k, mapping, folio)
    do_journal_get_write_access(k, folio)
    yield from jbd2_journal_stop(k)
    return VM_FAULT_LOCKED


def __ext4_journalled_writepage(
    k: Kernel, mapping: AddressSpace, folio: int
) -> Generator[Yield, None, int]:
    """v4.4.178 fs/ext4/inode.c:1754 __ext4_journalled_writepage (no inline data).

    ClearPageChecked, pin the buffer (bget_one), drop the page lock to start a handle,
    relock; a page truncated meanwhile ends there (:1799-1804, its buffer pin is not
    dropped); else the buffer gets write access and is journalled (write_end_fn :1811-1815),
    the handle stops, bput_one, unlock.
    """
    k.mem.flags[folio] &= ~k.pf.mask(PG_CHECKED) & _ALL_BITS
    page_buffers(k, folio)
    k.mem.private[folio] += 1 << B_COUNT_SHIFT
    folio_get(k, folio)
    folio_unlock(k, folio)
    yield from jbd2_journal_start(k, folio)
    yield from folio_lock(k, folio)
    yield Point(
        "put_page", reads=folio_put_footprint(k, folio), writes=folio_put_footprint(k, folio)
    )
    folio_put(k, folio)
    if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id):
        yield from jbd2_journal_stop(k)
        folio_unlock(k, folio)
        return 0
    keys = _page(folio) | {JOURNAL_KEY}
    yield Point("write_end_fn", reads=keys, writes=keys)
    do_journal_get_write_access(k, folio)
    jbd2_journal_dirty_metadata(k, folio)
    yield from jbd2_journal_stop(k)
    yield Point("bput_one", reads=buffer_keys(folio), writes=buffer_keys(folio))
    k.mem.private[folio] -= 1 << B_COUNT_SHIFT
    folio_unlock(k, folio)
    return 0


def ext4_bio_write_page(
    k: Kernel, mapping: AddressSpace, io: Ext4IoSubmit, folio: int, length: int
) -> Generator[Yield, None, int]:
    """v4.4.178 fs/ext4/page-io.c:417 ext4_bio_write_page (whole page, keep_towrite false).

    set_page_writeback; then the buffer, tested after it (page_buffers :461): a clean one is
    skipped (:468-476), a dirty one goes to the bio (a fresh one: no yield) and is cleaned
    (:511-523); unlock; nothing submitted -> end_page_writeback (:540-541).
    """
    from pinlab.kernel.fs.ext4 import io_submit_add_bh
    from pinlab.kernel.mm.page_writeback import folio_end_writeback, folio_start_writeback

    bug_on(bool(int(k.mem.flags[folio]) & k.pf.mask("PG_writeback")), "PageWriteback")
    yield from folio_start_writeback(k, folio)
    k.mem.flags[folio] &= ~k.pf.mask("PG_error") & _ALL_BITS
    keys = buffer_keys(folio)
    yield Point("ext4_bio_write_page buffers", reads=keys | {("page", folio, "index")}, writes=keys)
    page_buffers(k, folio)
    submit = bool(int(k.mem.private[folio]) & BH_DIRTY)
    if submit:
        yield from io_submit_add_bh(k, mapping, io, folio, length)
        clear_buffers_dirty(k, folio)
    folio_unlock(k, folio)
    if not submit:
        yield from folio_end_writeback(k, folio)
    return 0


def ext4_writepage(
    k: Kernel, folio: int, wbc: WritebackControl, mapping: AddressSpace
) -> Generator[Yield, None, int]:
    """v4.4.178 fs/ext4/inode.c:1876 ext4_writepage on a locked page cleaned for I/O.

    page_buffers (:1894) BUG_ONs a page without buffers: the 2018 report's crash.  Buffers
    are never delayed or unwritten here (no delalloc under data=journal, blocks exist);
    PageChecked -> __ext4_journalled_writepage (:1930-1934), else ext4_bio_write_page and
    ext4_io_submit (:1936-1948).
    """
    from pinlab.kernel.fs.ext4 import Ext4IoSubmit, ext4_io_submit

    keys = _page(folio) | {("page", folio, "index"), ("mapping", mapping.id)}
    yield Point("ext4_writepage", reads=keys)
    index, size = int(k.mem.index[folio]), mapping.i_size
    length = size & (PAGE_SIZE - 1) if index == size >> PAGE_SHIFT else PAGE_SIZE
    if length < PAGE_SIZE:
        raise Unmodelled("ext4_writepage", "a page straddling or past EOF")
    page_buffers(k, folio)
    if int(k.mem.flags[folio]) & k.pf.mask(PG_CHECKED):
        return (yield from __ext4_journalled_writepage(k, mapping, folio))
    io = Ext4IoSubmit()
    ret = yield from ext4_bio_write_page(k, mapping, io, folio, length)
    yield from ext4_io_submit(k, mapping, io)
    return ret


def ext4_journalled_writepages(
    k: Kernel, mapping: AddressSpace, wbc: WritebackControl, cpu: int
) -> Generator[Yield, None, int]:
    """v4.4.178 fs/ext4/inode.c:2484 ext4_writepages journalling data: nothing cached or
    tagged dirty -> 0 (:2507-2508); else write_cache_pages with __writepage, i.e.
    ext4_writepage (:2510-2516; mapping_set_error has no error to record)."""
    from pinlab.kernel.mm.page_writeback import write_cache_pages

    yield Point("mapping_tagged", reads=frozenset({("mapping", mapping.id)}))
    if not mapping.i_pages or not mapping.dirty_marks:
        return 0
    return (yield from write_cache_pages(k, mapping, wbc, ext4_writepage, mapping, cpu))
