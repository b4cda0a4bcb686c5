"""An ext4-like block filesystem: page cache over a backing store, ->page_mkwrite, and DAX.

v6.1 fs/ext4/ (inode.c ext4_page_mkwrite, readpage.c ext4_mpage_readpages,
file.c ext4_file_vm_ops / ext4_dax_vm_ops) and fs/buffer.c block_page_mkwrite.
Buffer heads are one PG_private reference (folio_attach_private, v6.1
include/linux/pagemap.h); delayed allocation, journalling and writeback I/O
are not modelled.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.fs import File, new_inode
from pinlab.kernel.mm.filemap import filemap_fault, folio_mark_dirty
from pinlab.kernel.mm.locking import folio_lock, folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, GFP_KERNEL, alloc_pages
from pinlab.kernel.mm.page_ref import folio_get
from pinlab.kernel.mm.pgtable import (
    _PAGE_DEVMAP,
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
    k: Kernel, mapping: AddressSpace, index: int, cpu: int
) -> Generator[Yield, None, tuple[int, int]]:
    """ext4_file_vm_ops.fault = filemap_fault (v6.1 fs/ext4/file.c)."""
    return (yield from filemap_fault(k, mapping, index, cpu, ext4_read_folio))


def attach_buffers(k: Kernel, folio: int) -> None:
    """v6.1 fs/buffer.c create_page_buffers -> folio_attach_private: +1 ref, PG_private."""
    private = k.pf.mask("PG_private")
    if not int(k.mem.flags[folio]) & private:
        folio_get(k, folio)
        k.mem.flags[folio] |= private


def ext4_page_mkwrite(k: Kernel, mapping: AddressSpace, page: int) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/inode.c ext4_page_mkwrite -> fs/buffer.c block_page_mkwrite.

    Lock, recheck mapping and EOF (-EFAULT -> VM_FAULT_NOPAGE), attach buffers,
    set_page_dirty; stable-page waits do not apply (no BDI_CAP_STABLE_WRITES).
    """
    from pinlab.kernel.mm.memory import VM_FAULT_LOCKED, VM_FAULT_NOPAGE

    folio = compound_head(k.mem, page)
    yield from folio_lock(k, folio)
    offset = int(k.mem.index[folio]) * PAGE_SIZE
    if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id) or offset > mapping.i_size:
        folio_unlock(k, folio)
        return VM_FAULT_NOPAGE
    yield Point("ext4_page_mkwrite", writes=frozenset({("page", folio, "refcount")}))
    attach_buffers(k, folio)
    yield from folio_mark_dirty(k, folio)
    return VM_FAULT_LOCKED


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
