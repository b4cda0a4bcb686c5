"""An ext4-like block filesystem: page cache over a backing store, ->page_mkwrite, and DAX.

v6.1 fs/ext4/ (inode.c ext4_page_mkwrite, ext4_da_write_begin/end,
ext4_writepages; readpage.c ext4_mpage_readpages; page-io.c ext4_bio_write_page;
fsync.c ext4_sync_file; file.c ext4_file_vm_ops / ext4_dax_vm_ops) and
fs/buffer.c (buffer.py).  Buffer heads are one PG_private reference.  The mount
is mkfs.ext4's default: delalloc, data=ordered, a journal.  Block allocation,
the journal and its commits (and their block I/O) are not modelled: a block
exists once writeback has put the page's contents in `store`.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.errno import ENOMEM
from pinlab.kernel.fs import File, new_inode
from pinlab.kernel.fs.buffer import (
    __block_write_begin,
    attach_buffers,
    block_dirty_folio,
    block_invalidate_folio,
    block_write_modelled,
    buffer_keys,
    clear_buffers_dirty,
    folio_buffers,
    generic_write_end,
    try_to_free_buffers,
)
from pinlab.kernel.fs.direct_io import BIO_MAX_VECS, PGPGOUT, Bio, submit_bio
from pinlab.kernel.fs.ext4_jdata import (
    ext4_journalled_releasepage,
    ext4_journalled_set_page_dirty,
    ext4_journalled_writepages,
    ext4_page_mkwrite_journalled,
    ext4_should_journal_data,
)
from pinlab.kernel.mm.filemap import (
    filemap_fault,
    folio_mapping,
    folio_mark_dirty,
    generic_perform_write,
    grab_cache_page_write_begin,
)
from pinlab.kernel.mm.locking import folio_lock, folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, GFP_KERNEL, alloc_pages
from pinlab.kernel.mm.page_writeback import (
    WritebackControl,
    file_write_and_wait_range,
    folio_end_writeback,
    folio_start_writeback,
    write_cache_pages,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_DEVMAP,
    PAGE_SHIFT,
    PAGE_SIZE,
    get_pte,
    pte_footprint,
    pte_mkdirty,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import file_mapping_value, linear_page_index
from pinlab.kernel.mm.types import VM_SHARED, AddressSpace, FsType, MmStruct, VmArea

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def ext4_create(k: Kernel, size: int = 0, writable: bool = True, dax: bool = False) -> File:
    """A regular file on an ext4-like filesystem (mounted -o dax when `dax`)."""
    fs = FsType.EXT4_DAX if dax else FsType.EXT4
    return File(new_inode(k, fs, size).id, writable=writable)


def ext4_read_folio(k: Kernel, mapping: AddressSpace, folio: int, index: int) -> None:
    """v6.1 fs/ext4/readpage.c ext4_mpage_readpages: read the block; mapped -> PG_mappedtodisk."""
    if index in mapping.store:
        k.mem.data[folio] = mapping.store[index]
        k.mem.flags[folio] |= k.pf.mask("PG_mappedtodisk")
    else:
        k.mem.data[folio] = 0
    k.mem.flags[folio] |= k.pf.mask("PG_uptodate")


def ext4_filemap_fault(
    k: Kernel,
    mapping: AddressSpace,
    index: int,
    cpu: int,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, tuple[int, int]]:
    """ext4_file_vm_ops.fault = filemap_fault (v6.1 fs/ext4/file.c)."""
    return (yield from filemap_fault(k, mapping, index, cpu, ext4_read_folio, then))


def ext4_page_mkwrite(k: Kernel, mapping: AddressSpace, page: int) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/inode.c ext4_page_mkwrite -> fs/buffer.c block_page_mkwrite.

    Lock, recheck mapping and EOF (-EFAULT -> VM_FAULT_NOPAGE), attach buffers,
    set_page_dirty; stable-page waits do not apply (no BDI_CAP_STABLE_WRITES).
    """
    from pinlab.kernel.mm.memory import VM_FAULT_LOCKED, VM_FAULT_NOPAGE

    folio = compound_head(k.mem, page)
    if ext4_should_journal_data(k, mapping):
        return (yield from ext4_page_mkwrite_journalled(k, mapping, folio))
    yield from folio_lock(k, folio)
    offset = int(k.mem.index[folio]) * PAGE_SIZE
    if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id) or offset > mapping.i_size:
        folio_unlock(k, folio)
        return VM_FAULT_NOPAGE
    yield Point(
        "ext4_page_mkwrite",
        writes=buffer_keys(folio) | {("page", folio, "refcount")},
    )
    attach_buffers(k, folio)
    yield from folio_mark_dirty(k, folio)
    return VM_FAULT_LOCKED


def ext4_dirty_folio(k: Kernel, mapping: AddressSpace, folio: int) -> bool:
    """ext4's a_ops dirty method (profile.ext4_dirty_op); True if the folio was newly dirty.

    v6.1 fs/ext4/inode.c ext4_dirty_folio (:3661-3666) and v5.7.14 ext4_set_page_dirty
    (:3599-3604): WARN_ON_ONCE when the folio is neither locked nor dirty, WARN_ON_ONCE when
    it has no buffers (the 2018 report's gup'd page whose buffers reclaim dropped, then
    set_page_dirty_lock: ../shared/seeds/002), then block_dirty_folio /
    __set_page_dirty_buffers, which dirties the folio without buffers all the same.
    v4.4.178 ext4_da_aops has no ->set_page_dirty: __set_page_dirty_buffers, no warning
    (the missing buffers surface later, as ext4_writepage's BUG_ON in that report).
    """
    if ext4_should_journal_data(k, mapping):
        return ext4_journalled_set_page_dirty(k, mapping, folio)
    op = k.profile.ext4_dirty_op
    if op != "__set_page_dirty_buffers":
        flags = int(k.mem.flags[folio])
        if not flags & (k.pf.mask("PG_locked") | k.pf.mask("PG_dirty")):
            warn_on_once(k, f"fs/ext4/inode.c {op} !locked && !dirty")
        if not folio_buffers(k, folio):
            warn_on_once(k, f"fs/ext4/inode.c {op} no buffers")
    return block_dirty_folio(k, mapping, folio)


def ext4_invalidate_folio(
    k: Kernel, mapping: AddressSpace, folio: int, offset: int, length: int
) -> None:
    """ext4_da_aops->invalidate_folio: block_invalidate_folio.

    v6.1 fs/ext4/inode.c ext4_invalidate_folio (:3275) and v5.7.14 ext4_invalidatepage
    (:3246) WARN_ON when the first buffer is journalled (buffer_jbd), which data=ordered
    data buffers never are; v4.4.178 ext4_da_invalidatepage (:2920) first gives back the
    delayed-allocation reservation of BH_Delay buffers (block accounting, not modelled),
    then ext4_invalidatepage (:3080), the same.
    """
    if ext4_should_journal_data(k, mapping):
        raise Unmodelled("ext4_journalled_invalidatepage", "jbd2_journal_invalidatepage")
    block_invalidate_folio(k, mapping, folio, offset, length)


def ext4_release_folio(k: Kernel, mapping: AddressSpace, folio: int) -> bool:
    """ext4_da_aops->release_folio: free the buffers unless journalled data holds them.

    v6.1 fs/ext4/inode.c ext4_release_folio (:3310), v5.7.14 / v4.4.178 ext4_releasepage
    (:3282 / :3116): PageChecked (dirty data=journal data: never, the mount is ordered)
    -> false; with a journal jbd2_journal_try_to_free_buffers (v6.1 fs/jbd2/transaction.c
    :2174, 5.7 :2115, 4.4 :1995), which skips every buffer without a journal_head (all
    data=ordered data buffers: the journal holds only metadata) and so comes to
    try_to_free_buffers.  jbd2's own buffers (metadata, checkpoint lists) are not modelled.
    """
    if ext4_should_journal_data(k, mapping):
        return ext4_journalled_releasepage(k, mapping, folio)
    return try_to_free_buffers(k, mapping, folio)


def dax_frame(k: Kernel, mapping: AddressSpace, index: int) -> int | None:
    """The persistent-memory frame holding file page `index` (allocated on first use).

    fsdax pages are ZONE_DEVICE pages whose idle refcount is 1 (v6.1
    mm/memremap.c); the model takes them from ordinary memory.
    """
    frame = mapping.i_pages.get(index)
    if frame is None:
        frame = alloc_pages(k, GFP_KERNEL, 0)
        if frame is None:
            return None
        k.mem.data[frame] = mapping.store.get(index, 0)
        k.mem.mapping[frame] = file_mapping_value(mapping.id)
        k.mem.index[frame] = index
        mapping.i_pages[index] = frame
    return frame


def ext4_dax_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/dax.c dax_iomap_pte_fault: map the pmem frame as a devmap PTE (no ref, no rmap).

    A private write copies into an anon page (the vmf->cow_page path).
    """
    from pinlab.kernel.mm.memory import (
        FAULT_FLAG_WRITE,
        VM_FAULT_NOPAGE,
        VM_FAULT_OOM,
        VM_FAULT_SIGBUS,
        anon_vma_prepare,
        finish_fault,
        maybe_mkwrite,
        mk_pte,
    )

    assert vma.vm_file is not None
    mapping = k.mappings[vma.vm_file]
    index = linear_page_index(vma, address)
    if index * PAGE_SIZE >= mapping.i_size:
        return VM_FAULT_SIGBUS
    frame = dax_frame(k, mapping, index)
    if frame is None:
        return VM_FAULT_OOM
    write = bool(flags & FAULT_FLAG_WRITE)
    if write and not vma.vm_flags & VM_SHARED:
        anon_vma_prepare(k, vma)
        cow = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
        if cow is None:
            return VM_FAULT_OOM
        k.mem.data[cow] = k.mem.data[frame]
        k.mem.flags[cow] |= k.pf.mask("PG_uptodate")
        ret = yield from finish_fault(k, mm, vma, address, cow, True, 0)
        return ret | VM_FAULT_NOPAGE
    entry = mk_pte(k, frame, vma) | _PAGE_DEVMAP
    if write:
        entry = maybe_mkwrite(pte_mkdirty(entry), vma)
    yield from pte_lock(k, mm, address)
    key = pte_footprint(mm.id, address)
    yield Point("dax insert pfn", reads=key, writes=key)
    if get_pte(mm.pgtable, address) == 0 or write:
        set_pte_at(mm.pgtable, address, entry)
    pte_unlock(k, mm, address)
    return VM_FAULT_NOPAGE


def ext4_file_write_iter(
    k: Kernel, mapping: AddressSpace, pos: int, count: int, token: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/file.c ext4_file_write_iter -> ext4_buffered_write_iter (no O_DIRECT).

    ext4_write_checks -> generic_write_checks stops an empty write; i_rwsem,
    inode_dio_wait (the model's O_DIRECT completes inside the call) and
    file_modified are not modelled; generic_write_sync acts only with O_SYNC.
    """
    if count <= 0:
        return 0
    return (yield from generic_perform_write(k, mapping, pos, count, token, cpu))


def ext4_da_write_begin(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, cpu: int
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 fs/ext4/inode.c ext4_da_write_begin: (0, the locked folio with buffers) or -ENOMEM.

    Delayed allocation with room (ext4_nonda_switch false) and no inline data
    (mkfs.ext4's default features lack inline_data): grab_cache_page_write_begin,
    wait_for_stable_page (no stable writes: nothing to wait for), then
    __block_write_begin with ext4_da_get_block_prep.  ENOSPC is not modelled.
    """
    if ext4_should_journal_data(k, mapping):
        raise Unmodelled("ext4_write_begin", "a write(2) to a data=journal file")
    block_write_modelled(mapping, pos, length)
    folio = yield from grab_cache_page_write_begin(k, mapping, pos >> PAGE_SHIFT, cpu)
    if folio is None:
        return -ENOMEM, -1
    yield from __block_write_begin(k, mapping, folio, pos, length)
    return 0, folio


def ext4_da_write_end(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, copied: int, folio: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/inode.c ext4_da_write_end -> generic_write_end (i_disksize not modelled)."""
    return (yield from generic_write_end(k, mapping, pos, length, copied, folio))


@dataclass(slots=True)
class Ext4IoSubmit:
    """v6.1 fs/ext4/ext4.h struct ext4_io_submit: the write bio being built (io_bio)."""

    bio: Bio | None = None


def ext4_io_submit(
    k: Kernel,
    mapping: AddressSpace,
    io: Ext4IoSubmit,
    then_writes: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, None]:
    """v6.1 fs/ext4/page-io.c ext4_io_submit: submit the bio; it completes at once.

    submit_bio counts PGPGOUT and the virtio disk stores the pages; then
    ext4_end_bio -> ext4_finish_bio ends writeback on each folio (with
    dioread_nolock the end waits for the unwritten-extent conversion work,
    which has nothing to convert in the model).  ``then_writes``: what the caller writes
    after this returns, before it yields again (footprint only).
    """
    bio = io.bio
    if bio is None:
        return
    io.bio = None
    pages = [page for page, _, _ in bio.vecs]
    yield Point(
        "submit_bio",
        # the first folio_end_writeback tests PG_reclaim before its own yield
        reads=frozenset(("page", page, "data") for page in pages) | {("page", pages[0], "flags")},
        writes=frozenset({("vmstat", PGPGOUT), ("mapping", mapping.id)}),
    )
    submit_bio(k, mapping, bio, write=True)
    for i, page in enumerate(pages):
        if i + 1 == len(pages):
            yield from folio_end_writeback(k, page, then_writes, then_writes)
        else:  # the next one tests PG_reclaim before its own yield
            yield from folio_end_writeback(k, page, frozenset({("page", pages[i + 1], "flags")}))


def io_submit_add_bh(
    k: Kernel, mapping: AddressSpace, io: Ext4IoSubmit, folio: int, length: int
) -> Generator[Yield, None, None]:
    """v6.1 fs/ext4/page-io.c io_submit_add_bh: add the folio's blocks, or submit and start anew.

    Blocks are not allocated in the model, so a bio continues while the file
    offsets are consecutive; a full bio (BIO_MAX_VECS) is submitted first.
    """
    pos = int(k.mem.index[folio]) << PAGE_SHIFT
    bio = io.bio
    if bio is not None and (bio.pos + bio.size != pos or len(bio.vecs) >= BIO_MAX_VECS):
        # mpage_submit_page unlocks the folio next
        yield from ext4_io_submit(k, mapping, io, frozenset({("page", folio, "flags")}))
    if io.bio is None:
        io.bio = Bio(pos)
    io.bio.vecs.append((folio, 0, length))


def mpage_submit_page(
    k: Kernel, folio: int, wbc: WritebackControl, io: Ext4IoSubmit
) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/inode.c mpage_submit_page -> fs/ext4/page-io.c ext4_bio_write_page.

    The folio arrives locked with its dirty bit cleared for I/O: set writeback,
    clean the buffers below EOF into the bio, unlock; with nothing to submit
    (the folio at EOF) writeback ends at once.  Only whole pages are written:
    the blocks of a page straddling EOF depend on the fs block size.
    """
    mapping = folio_mapping(k, folio)
    assert mapping is not None  # write_cache_pages rechecked it under the folio lock
    if not int(k.mem.flags[folio]) & k.pf.mask("PG_private"):
        # v6.1 mpage_prepare_extent_to_map warns and clears PG_dirty without accounting
        raise Unmodelled("mpage_prepare_extent_to_map", "a dirty folio without buffers")
    index, size = int(k.mem.index[folio]), mapping.i_size
    length = size & (PAGE_SIZE - 1) if index == size >> PAGE_SHIFT else PAGE_SIZE
    if 0 < length < PAGE_SIZE:
        raise Unmodelled("mpage_submit_page", "writeback of the page straddling EOF")
    # v6.1 fs/ext4/page-io.c ext4_bio_write_page cleans each buffer it writes (:501) and
    # each past EOF (:478), after set_page_writeback; the folio is locked throughout, and
    # the step before (folio_clear_dirty_for_io) declares the buffers
    clear_buffers_dirty(k, folio)
    yield from folio_start_writeback(k, folio)
    k.mem.flags[folio] &= ~k.pf.mask("PG_error") & 0xFFFF_FFFF_FFFF_FFFF
    if length:
        yield from io_submit_add_bh(k, mapping, io, folio, length)
    folio_unlock(k, folio)
    if not length:
        yield from folio_end_writeback(k, folio)
    return 0


def ext4_writepages(
    k: Kernel, mapping: AddressSpace, wbc: WritebackControl, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/inode.c ext4_writepages (delalloc), per folio as write_cache_pages does it.

    The folio steps are ext4's: lock, recheck, wait on writeback, clear dirty
    for I/O, mpage_submit_page; the bio is submitted at the end
    (ext4_io_submit).  Not modelled: ext4 collects an extent's folios locked
    (mpage_prepare_extent_to_map) and clears their dirty bits only once the
    blocks are allocated under a journal handle (mpage_map_and_submit_extent).
    """
    if ext4_should_journal_data(k, mapping):
        return (yield from ext4_journalled_writepages(k, mapping, wbc, cpu))
    io = Ext4IoSubmit()
    ret = yield from write_cache_pages(k, mapping, wbc, mpage_submit_page, io, cpu)
    yield from ext4_io_submit(k, mapping, io)
    return ret


def ext4_sync_file(
    k: Kernel, mapping: AddressSpace, start: int, end: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/fsync.c ext4_sync_file: file_write_and_wait_range, then the journal.

    With a journal and data=ordered, ext4_fsync_journal then waits for the
    inode's transaction to commit and flushes the disk cache; the commit's
    journal-block writes (more pgpgout) are not modelled.
    """
    if ext4_should_journal_data(k, mapping):
        raise Unmodelled("ext4_sync_file", "data=journal: ext4_force_commit")
    return (yield from file_write_and_wait_range(k, mapping, start, end, cpu))
