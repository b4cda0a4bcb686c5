"""ramfs: page cache only, generic_file_vm_ops (v6.1 fs/ramfs/, mm/filemap.c)."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.fs import File, new_inode
from pinlab.kernel.mm.filemap import filemap_fault, folio_mark_dirty
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.rmap import file_mapping_value
from pinlab.kernel.mm.types import AddressSpace, FsType

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def ramfs_create(k: Kernel, size: int = 0, writable: bool = True) -> File:
    """A regular file on a ramfs mount (v6.1 fs/ramfs/inode.c ramfs_get_inode)."""
    return File(new_inode(k, FsType.RAMFS, size).id, writable=writable)


def simple_read_folio(k: Kernel, mapping: AddressSpace, folio: int, index: int) -> None:
    """v6.1 fs/libfs.c simple_read_folio: a hole reads as zeroes, then uptodate."""
    k.mem.data[folio] = 0
    k.mem.flags[folio] |= k.pf.mask("PG_uptodate")


def ramfs_fault(
    k: Kernel, mapping: AddressSpace, index: int, cpu: int
) -> Generator[Yield, None, tuple[int, int]]:
    """generic_file_vm_ops.fault = filemap_fault (v6.1 mm/filemap.c)."""
    return (yield from filemap_fault(k, mapping, index, cpu, simple_read_folio))


def filemap_page_mkwrite(
    k: Kernel, mapping: AddressSpace, page: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/filemap.c filemap_page_mkwrite: lock, recheck mapping, mark dirty; LOCKED."""
    from pinlab.kernel.mm.memory import VM_FAULT_LOCKED, VM_FAULT_NOPAGE

    folio = compound_head(k.mem, page)
    yield from folio_lock(k, folio)
    if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id):
        folio_unlock(k, folio)
        return VM_FAULT_NOPAGE
    yield from folio_mark_dirty(k, folio)
    return VM_FAULT_LOCKED
