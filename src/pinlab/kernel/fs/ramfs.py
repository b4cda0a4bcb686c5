"""ramfs: page cache only, generic_file_vm_ops and ram_aops (v6.1 fs/ramfs/, fs/libfs.c)."""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.errno import ENOMEM
from pinlab.kernel.fs import File, new_inode
from pinlab.kernel.mm.filemap import (
    filemap_fault,
    folio_mark_dirty,
    folio_put_footprint,
    grab_cache_page_write_begin,
)
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
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
    k: Kernel,
    mapping: AddressSpace,
    index: int,
    cpu: int,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, tuple[int, int]]:
    """generic_file_vm_ops.fault = filemap_fault (v6.1 mm/filemap.c)."""
    return (yield from filemap_fault(k, mapping, index, cpu, simple_read_folio, then))


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


def simple_write_begin(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, cpu: int
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 fs/libfs.c simple_write_begin: (0, the locked folio, +1 ref) or -ENOMEM.

    A new (!uptodate) folio written in part is zeroed around the write first
    (zero_user_segments); contents being one token per page, the zero token
    stands until the copy replaces it.
    """
    folio = yield from grab_cache_page_write_begin(k, mapping, pos >> PAGE_SHIFT, cpu)
    if folio is None:
        return -ENOMEM, -1
    if not int(k.mem.flags[folio]) & k.pf.mask("PG_uptodate") and length != PAGE_SIZE:
        k.mem.data[folio] = 0
    return 0, folio


def simple_write_end(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, copied: int, folio: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/libfs.c simple_write_end: uptodate, extend i_size, dirty, unlock, put; `copied`.

    The copy is never short in the model, so there is no stale tail to zero;
    set_page_dirty is noop_dirty_folio (ram_aops).  The put drops
    grab_cache_page_write_begin's reference.
    """
    yield Point(
        "simple_write_end", writes=frozenset({("mapping", mapping.id), ("page", folio, "flags")})
    )
    k.mem.flags[folio] |= k.pf.mask("PG_uptodate")
    if pos + copied > mapping.i_size:
        mapping.i_size = pos + copied
    yield from folio_mark_dirty(k, folio)
    folio_unlock(k, folio)
    yield Point("put_page", writes=folio_put_footprint(k, folio))
    folio_put(k, folio)
    return copied
