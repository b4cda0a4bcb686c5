"""The model of the kernel's fs/ directory: open files and each filesystem's fault hooks.

A file is an inode (an AddressSpace in k.mappings) plus the open mode that
mmap consults (v6.1 include/linux/fs.h FMODE_READ / FMODE_WRITE).  Faults
dispatch on the inode's filesystem as the kernel dispatches on vm_ops.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.mm.types import AddressSpace, FsType, MmStruct, VmArea

if TYPE_CHECKING:
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


def vm_fault_page(
    k: Kernel, mapping: AddressSpace, index: int, cpu: int
) -> Generator[Yield, None, tuple[int, int]]:
    """vma->vm_ops->fault: shmem_fault for tmpfs, filemap_fault for ramfs and ext4."""
    from pinlab.kernel.fs import ext4, ramfs, shmem

    if mapping.fs is FsType.TMPFS:
        return (yield from shmem.shmem_fault(k, mapping, index, cpu))
    if mapping.fs is FsType.RAMFS:
        return (yield from ramfs.ramfs_fault(k, mapping, index, cpu))
    if mapping.fs is FsType.EXT4:
        return (yield from ext4.ext4_filemap_fault(k, mapping, index, cpu))
    raise ValueError(f"{mapping.fs.value} does not fault through the page cache")


def do_page_mkwrite(k: Kernel, vma: VmArea, page: int) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c do_page_mkwrite: call ->page_mkwrite, return with the page locked."""
    from pinlab.kernel.fs import ext4, ramfs

    assert vma.vm_file is not None
    mapping = k.mappings[vma.vm_file]
    if mapping.fs is FsType.EXT4:
        return (yield from ext4.ext4_page_mkwrite(k, mapping, page))
    return (yield from ramfs.filemap_page_mkwrite(k, mapping, page))


def fault_dirty_shared_page(
    k: Kernel, mm: MmStruct, vma: VmArea, page: int, flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c fault_dirty_shared_page: set_page_dirty, unlock; maybe drop mmap_lock.

    When the page was newly dirtied or the fs has ->page_mkwrite, the kernel
    throttles in balance_dirty_pages_ratelimited and first drops mmap_lock if
    the fault may retry (maybe_unlock_mmap_for_io: FAULT_FLAG_ALLOW_RETRY
    without RETRY_NOWAIT or TRIED), returning VM_FAULT_COMPLETED.
    """
    from pinlab.kernel.mm.filemap import folio_mark_dirty
    from pinlab.kernel.mm.locking import folio_unlock, mmap_read_unlock
    from pinlab.kernel.mm.memmap import compound_head
    from pinlab.kernel.mm.memory import (
        FAULT_FLAG_ALLOW_RETRY,
        FAULT_FLAG_RETRY_NOWAIT,
        FAULT_FLAG_TRIED,
        VM_FAULT_COMPLETED,
    )

    folio = compound_head(k.mem, page)
    assert vma.vm_file is not None
    page_mkwrite = k.mappings[vma.vm_file].fs.has_page_mkwrite
    dirtied = yield from folio_mark_dirty(k, folio)
    folio_unlock(k, folio)
    retry_first = flags & (FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_TRIED) == FAULT_FLAG_ALLOW_RETRY
    if (dirtied or page_mkwrite) and retry_first and not flags & FAULT_FLAG_RETRY_NOWAIT:
        mmap_read_unlock(k, mm)
        return VM_FAULT_COMPLETED
    return 0


def dax_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/file.c ext4_dax_fault -> fs/dax.c dax_iomap_pte_fault."""
    from pinlab.kernel.fs import ext4

    return (yield from ext4.ext4_dax_fault(k, mm, vma, address, flags))
