"""The model of the kernel's fs/ directory: open files and each filesystem's fault hooks.

A file is an inode (an AddressSpace in k.mappings) plus the open mode that
mmap and write consult (v6.1 include/linux/fs.h FMODE_READ / FMODE_WRITE).  Faults,
write(2), fsync(2) and the address_space operations dispatch on the inode's
filesystem as the kernel dispatches on vm_ops, f_op and a_ops.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinlab.interleave import Unmodelled, Yield
from pinlab.kernel.mm.types import AddressSpace, FsType, MmStruct, VmArea

if TYPE_CHECKING:
    from pinlab.kernel.mm.page_writeback import WritebackControl
    from pinlab.kernel.state import Kernel


@dataclass(frozen=True, slots=True)
class File:
    """An open file: the inode's mapping id and the open mode (struct file f_mode)."""

    mapping: int
    readable: bool = True
    writable: bool = True


def new_inode(k: Kernel, fs: FsType, size: int, huge_order: int = 0) -> AddressSpace:
    """A fresh inode of `fs` with an empty page cache (v6.1 fs/inode.c new_inode)."""
    from pinlab.kernel.state import new_id

    mapping = AddressSpace(id=new_id(k), fs=fs, i_size=size, huge_order=huge_order)
    k.mappings[mapping.id] = mapping
    return mapping


# The filesystems' hooks by signature.  ext4, ramfs and shmem import this package, so the
# dispatchers below import them when called; they are plain functions, so that no
# generator here holds a module as a local (the race explorer freezes and snapshots the
# locals of every suspended frame).
# (the last argument of a fault: what the caller writes after it returns, before it yields
# again; footprint only)
FaultOp = Callable[
    ["Kernel", AddressSpace, int, int, frozenset[Hashable]],
    Generator[Yield, None, tuple[int, int]],
]
MkwriteOp = Callable[["Kernel", AddressSpace, int], Generator[Yield, None, int]]
WriteBeginOp = Callable[
    ["Kernel", AddressSpace, int, int, int], Generator[Yield, None, tuple[int, int]]
]
WriteEndOp = Callable[["Kernel", AddressSpace, int, int, int, int], Generator[Yield, None, int]]


def _vm_ops_fault(fs: FsType) -> FaultOp | None:
    """vm_ops->fault of `fs`'s files, None for one that does not fault through the page cache."""
    from pinlab.kernel.fs.ext4 import ext4_filemap_fault
    from pinlab.kernel.fs.ramfs import ramfs_fault
    from pinlab.kernel.fs.shmem import shmem_fault

    ops: dict[FsType, FaultOp] = {
        FsType.TMPFS: shmem_fault,
        FsType.RAMFS: ramfs_fault,
        FsType.EXT4: ext4_filemap_fault,
    }
    return ops.get(fs)


def _vm_ops_page_mkwrite(fs: FsType) -> MkwriteOp:
    """vm_ops->page_mkwrite of `fs`'s files: ext4's, else generic filemap_page_mkwrite."""
    from pinlab.kernel.fs.ext4 import ext4_page_mkwrite
    from pinlab.kernel.fs.ramfs import filemap_page_mkwrite

    return ext4_page_mkwrite if fs is FsType.EXT4 else filemap_page_mkwrite


def _a_ops_write_begin(fs: FsType) -> WriteBeginOp | None:
    """a_ops->write_begin of `fs`'s files, None where not modelled."""
    from pinlab.kernel.fs.ext4 import ext4_da_write_begin
    from pinlab.kernel.fs.ramfs import simple_write_begin
    from pinlab.kernel.fs.shmem import shmem_write_begin

    ops: dict[FsType, WriteBeginOp] = {
        FsType.TMPFS: shmem_write_begin,
        FsType.RAMFS: simple_write_begin,
        FsType.EXT4: ext4_da_write_begin,
    }
    return ops.get(fs)


def _a_ops_write_end(fs: FsType) -> WriteEndOp | None:
    """a_ops->write_end of `fs`'s files, None where not modelled."""
    from pinlab.kernel.fs.ext4 import ext4_da_write_end
    from pinlab.kernel.fs.ramfs import simple_write_end
    from pinlab.kernel.fs.shmem import shmem_write_end

    ops: dict[FsType, WriteEndOp] = {
        FsType.TMPFS: shmem_write_end,
        FsType.RAMFS: simple_write_end,
        FsType.EXT4: ext4_da_write_end,
    }
    return ops.get(fs)


def a_ops_dirty_folio(k: Kernel, mapping: AddressSpace, folio: int) -> bool:
    """mapping->a_ops->dirty_folio (v5.7 / v4.4 ->set_page_dirty): True if newly dirty.

    ext4: profile.ext4_dirty_op (ext4_dirty_folio, ext4_set_page_dirty, or 4.4's
    __set_page_dirty_buffers fallback); ext4 -o dax: profile.ext4_dax_dirty_op;
    hugetlbfs: noop_dirty_folio (6.1) or hugetlbfs_set_page_dirty (5.7 / 4.4); tmpfs and
    ramfs: noop_dirty_folio (6.1 mm/shmem.c:3953, fs/libfs.c:653 ram_aops) and
    __set_page_dirty_no_writeback (5.7.14 mm/shmem.c:3767, fs/ramfs/inode.c:60; 4.4.178
    :3122, :50), which do the same.
    """
    from pinlab.kernel.fs.buffer import block_dirty_folio
    from pinlab.kernel.fs.ext4 import ext4_dirty_folio
    from pinlab.kernel.mm.filemap import noop_dirty_folio

    if mapping.fs is FsType.EXT4:
        return ext4_dirty_folio(k, mapping, folio)
    if mapping.fs is FsType.EXT4_DAX:
        op = k.profile.ext4_dax_dirty_op
        if op == "noop_set_page_dirty":
            return False
        if op == "__set_page_dirty_buffers":
            return block_dirty_folio(k, mapping, folio)
        return noop_dirty_folio(k, folio)
    if mapping.fs.is_hugetlbfs and k.profile.hugetlbfs_set_page_dirty:
        # v5.7.14 fs/hugetlbfs/inode.c:899, v4.4.178 :855: SetPageDirty(head), return 0
        k.mem.flags[folio] |= k.pf.mask("PG_dirty")
        return False
    return noop_dirty_folio(k, folio)


def a_ops_invalidate_folio(
    k: Kernel, mapping: AddressSpace, folio: int, offset: int, length: int
) -> None:
    """folio_invalidate -> mapping->a_ops->invalidate_folio (v5.7 / v4.4 do_invalidatepage).

    Only ext4 folios have private data in the model; v6.1 mm/truncate.c folio_invalidate
    (:153) calls none when the aops have none (shmem, ramfs, hugetlbfs have none, and
    never set PG_private); v5.7.14 (:152) / v4.4.178 (:81) do_invalidatepage would fall
    back to block_invalidatepage.
    """
    from pinlab.kernel.fs.ext4 import ext4_invalidate_folio

    if mapping.fs is FsType.EXT4:
        ext4_invalidate_folio(k, mapping, folio, offset, length)
        return
    raise Unmodelled("folio_invalidate", f"a {mapping.fs.value} folio with private data")


def a_ops_release_folio(k: Kernel, mapping: AddressSpace | None, folio: int) -> bool:
    """mapping->a_ops->release_folio (v5.7 / v4.4 ->releasepage), else try_to_free_buffers."""
    from pinlab.kernel.fs.buffer import try_to_free_buffers
    from pinlab.kernel.fs.ext4 import ext4_release_folio

    if mapping is not None and mapping.fs is FsType.EXT4:
        return ext4_release_folio(k, mapping, folio)
    return try_to_free_buffers(k, mapping, folio)


def vm_fault_page(
    k: Kernel,
    mapping: AddressSpace,
    index: int,
    cpu: int,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, tuple[int, int]]:
    """vma->vm_ops->fault: shmem_fault for tmpfs, filemap_fault for ramfs and ext4.

    ``then``: what the caller writes after this returns, before it yields again
    (footprint only).
    """
    fault = _vm_ops_fault(mapping.fs)
    if fault is None:
        raise Unmodelled(
            "vm_fault_page", f"{mapping.fs.value} does not fault through the page cache"
        )
    return (yield from fault(k, mapping, index, cpu, then))


def do_page_mkwrite(k: Kernel, vma: VmArea, page: int) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c do_page_mkwrite: call ->page_mkwrite, return with the page locked."""
    assert vma.vm_file is not None
    mapping = k.mappings[vma.vm_file]
    page_mkwrite = _vm_ops_page_mkwrite(mapping.fs)
    return (yield from page_mkwrite(k, mapping, page))


def fault_dirty_shared_page(
    k: Kernel, mm: MmStruct, vma: VmArea, page: int, flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c fault_dirty_shared_page: set_page_dirty, unlock; maybe drop mmap_lock.

    When the page was newly dirtied or the fs has ->page_mkwrite, and the page still has
    its mapping (truncate may have taken it), the kernel throttles in
    balance_dirty_pages_ratelimited, first dropping mmap_lock if the fault may retry
    (maybe_unlock_mmap_for_io: FAULT_FLAG_ALLOW_RETRY without RETRY_NOWAIT or TRIED);
    what it returns then is the profile's (``fault_dirty_unlock``).
    """
    from pinlab.kernel.mm.filemap import folio_mark_dirty
    from pinlab.kernel.mm.locking import folio_unlock, mmap_read_unlock
    from pinlab.kernel.mm.memmap import compound_head
    from pinlab.kernel.mm.memory import (
        FAULT_FLAG_ALLOW_RETRY,
        FAULT_FLAG_RETRY_NOWAIT,
        FAULT_FLAG_TRIED,
        VM_FAULT_COMPLETED,
        VM_FAULT_RETRY,
    )

    folio = compound_head(k.mem, page)
    assert vma.vm_file is not None
    page_mkwrite = k.mappings[vma.vm_file].fs.has_page_mkwrite
    # the mapping is read before the unlock, under the folio lock (folio_raw_mapping)
    dirtied = yield from folio_mark_dirty(k, folio, frozenset({("page", folio, "mapping")}))
    mapped = int(k.mem.mapping[folio]) != 0
    folio_unlock(k, folio)
    unlock = k.profile.fault_dirty_unlock
    retry_first = flags & (FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_TRIED) == FAULT_FLAG_ALLOW_RETRY
    may_unlock = retry_first and not flags & FAULT_FLAG_RETRY_NOWAIT
    if (dirtied or page_mkwrite) and mapped and unlock is not None and may_unlock:
        mmap_read_unlock(k, mm)
        return VM_FAULT_COMPLETED if unlock == "completed" else VM_FAULT_RETRY
    return 0


def dax_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/file.c ext4_dax_fault -> fs/dax.c dax_iomap_pte_fault."""
    from pinlab.kernel.fs.ext4 import ext4_dax_fault

    return (yield from ext4_dax_fault(k, mm, vma, address, flags))


# v6.1 include/linux/fs.h MAX_RW_COUNT: INT_MAX & PAGE_MASK
MAX_RW_COUNT = 0x7FFF_F000
# v6.1 include/vdso/limits.h LLONG_MAX: fsync's "to the end of the file"
LLONG_MAX = (1 << 63) - 1


def vfs_write(
    k: Kernel, file: File, pos: int, count: int, token: int = 0, cpu: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 fs/read_write.c vfs_write -> new_sync_write -> ->write_iter, at file offset `pos`.

    The caller keeps the file position (write(2) at f_pos, pwrite(2) at pos).
    hugetlbfs has neither ->write nor ->write_iter, so its files never get
    FMODE_CAN_WRITE (v6.1 fs/hugetlbfs/inode.c hugetlbfs_file_operations, fs/open.c
    do_dentry_open).  `token` is the source's content (0: zeroes).  Bytes or -errno.
    """
    from pinlab.kernel.errno import EBADF, EINVAL
    from pinlab.kernel.fs.ext4 import ext4_file_write_iter
    from pinlab.kernel.mm.filemap import generic_file_write_iter

    if not file.writable:
        return -EBADF
    mapping = k.mappings[file.mapping]
    if mapping.fs.is_hugetlbfs:
        return -EINVAL
    if pos < 0:
        return -EINVAL  # rw_verify_area: a regular file has no unsigned offsets
    count = min(count, MAX_RW_COUNT)
    if mapping.fs is FsType.EXT4:
        return (yield from ext4_file_write_iter(k, mapping, pos, count, token, cpu))
    if mapping.fs.is_dax:
        raise Unmodelled("vfs_write", "a write(2) to an fsdax file (ext4_dax_write_iter)")
    return (yield from generic_file_write_iter(k, mapping, pos, count, token, cpu))


def vfs_fsync(k: Kernel, file: File, cpu: int = 0) -> Generator[Yield, None, int]:
    """v6.1 fs/sync.c do_fsync -> vfs_fsync -> vfs_fsync_range(0, LLONG_MAX) -> ->fsync.

    tmpfs/memfd, ramfs and hugetlbfs use noop_fsync (v6.1 mm/shmem.c
    shmem_file_operations, fs/ramfs/file-mmu.c, fs/hugetlbfs/inode.c; fs/libfs.c
    noop_fsync): nothing is written back and their folios stay dirty.  The
    I_DIRTY_TIME inode update is inode metadata, not modelled.
    """
    from pinlab.kernel.fs.ext4 import ext4_sync_file

    mapping = k.mappings[file.mapping]
    if mapping.fs is FsType.EXT4:
        return (yield from ext4_sync_file(k, mapping, 0, LLONG_MAX, cpu))
    if mapping.fs.is_dax:
        raise Unmodelled("vfs_fsync", "fsync of an fsdax file (dax_writeback_mapping_range)")
    return 0


def write_begin(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, cpu: int
) -> Generator[Yield, None, tuple[int, int]]:
    """mapping->a_ops->write_begin: (0, locked folio with the caller's +1 ref) or (-errno, -1).

    shmem_aops shmem_write_begin (v6.1 mm/shmem.c), ram_aops simple_write_begin
    (v6.1 fs/libfs.c), ext4_da_aops ext4_da_write_begin (v6.1 fs/ext4/inode.c: the
    default delalloc mount).
    """
    begin = _a_ops_write_begin(mapping.fs)
    if begin is None:
        raise Unmodelled("write_begin", f"{mapping.fs.value} has no modelled ->write_begin")
    return (yield from begin(k, mapping, pos, length, cpu))


def write_end(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, copied: int, folio: int
) -> Generator[Yield, None, int]:
    """mapping->a_ops->write_end: commit `copied` bytes, unlock and put the folio; bytes taken."""
    end = _a_ops_write_end(mapping.fs)
    if end is None:
        raise Unmodelled("write_end", f"{mapping.fs.value} has no modelled ->write_end")
    return (yield from end(k, mapping, pos, length, copied, folio))


def writepages(
    k: Kernel, mapping: AddressSpace, wbc: WritebackControl, cpu: int
) -> Generator[Yield, None, int]:
    """mapping->a_ops->writepages: ext4_writepages (v6.1 fs/ext4/inode.c ext4_da_aops).

    Only called for a mapping that writes back (filemap_fdatawrite_wbc checks
    mapping_can_writeback first).
    """
    from pinlab.kernel.fs.ext4 import ext4_writepages

    if mapping.fs is FsType.EXT4:
        return (yield from ext4_writepages(k, mapping, wbc, cpu))
    raise Unmodelled("writepages", f"{mapping.fs.value} has no modelled ->writepages")
