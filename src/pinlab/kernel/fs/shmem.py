"""tmpfs / shmem / memfd: swap-backed page cache without writeback (v6.1 mm/shmem.c, mm/memfd.c)."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.fs import File, new_inode
from pinlab.kernel.mm.filemap import filemap_add_folio, filemap_get_folio
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, alloc_pages
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import HPAGE_PMD_ORDER, HPAGE_PUD_ORDER, PAGE_SIZE
from pinlab.kernel.mm.rmap import file_mapping_value
from pinlab.kernel.mm.types import AddressSpace, FsType

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/uapi/linux/memfd.h
MFD_CLOEXEC = 0x0001
MFD_ALLOW_SEALING = 0x0002
MFD_HUGETLB = 0x0004
MFD_HUGE_SHIFT = 26
MFD_HUGE_MASK = 0x3F
MFD_HUGE_2MB = 21 << MFD_HUGE_SHIFT
MFD_HUGE_1GB = 30 << MFD_HUGE_SHIFT
# v6.1 include/uapi/linux/fcntl.h F_SEAL_SEAL: a memfd without MFD_ALLOW_SEALING starts sealed
F_SEAL_SEAL = 0x0001


def shmem_file_setup(k: Kernel, size: int) -> File:
    """v6.1 mm/shmem.c shmem_file_setup: an unlinked tmpfs file (MAP_SHARED|MAP_ANONYMOUS too)."""
    return File(new_inode(k, FsType.TMPFS, size).id)


def tmpfs_create(k: Kernel, size: int = 0, writable: bool = True) -> File:
    """A regular file on a tmpfs mount, opened O_RDWR (or O_RDONLY)."""
    return File(new_inode(k, FsType.TMPFS, size).id, writable=writable)


def memfd_create(k: Kernel, flags: int) -> File | int:
    """v6.1 mm/memfd.c memfd_create: a tmpfs file, or hugetlbfs with MFD_HUGETLB; size 0."""
    from pinlab.kernel.errno import EINVAL
    from pinlab.kernel.fs.hugetlbfs import hugetlb_file_setup

    allowed = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB
    if flags & MFD_HUGETLB:
        allowed |= MFD_HUGE_MASK << MFD_HUGE_SHIFT
    if flags & ~allowed:
        return -EINVAL
    if flags & MFD_HUGETLB:
        size_log = (flags >> MFD_HUGE_SHIFT) & MFD_HUGE_MASK
        order = {0: HPAGE_PMD_ORDER, 21: HPAGE_PMD_ORDER, 30: HPAGE_PUD_ORDER}.get(size_log)
        if order is None:
            return -EINVAL
        return hugetlb_file_setup(k, 0, order)
    file = File(new_inode(k, FsType.TMPFS, 0).id)
    if not flags & MFD_ALLOW_SEALING:
        k.mappings[file.mapping].seals = F_SEAL_SEAL
    return file


def shmem_get_folio(
    k: Kernel, mapping: AddressSpace, index: int, cpu: int
) -> Generator[Yield, None, int | None]:
    """v6.1 mm/shmem.c shmem_get_folio_gfp (SGP_CACHE): cached or new zeroed folio, locked, +1.

    Returns None beyond EOF (the kernel's -EINVAL).  Swap and huge shmem
    (shmem_huge defaults to never, v6.1 mm/shmem.c) are not modelled.
    """
    if index * PAGE_SIZE >= mapping.i_size:
        return None
    folio = yield from filemap_get_folio(k, mapping, index)
    if folio is not None:
        yield from folio_lock(k, folio)
        if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id):
            folio_unlock(k, folio)
            folio_put(k, folio)
            return (yield from shmem_get_folio(k, mapping, index, cpu))
        return folio
    new = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
    if new is None:
        return None
    k.mem.flags[new] |= k.pf.mask("PG_swapbacked")
    err = yield from filemap_add_folio(k, mapping, new, index, cpu)
    if err:
        folio_put(k, new)
        return (yield from shmem_get_folio(k, mapping, index, cpu))
    k.mem.data[new] = 0
    k.mem.flags[new] |= k.pf.mask("PG_uptodate")
    return new


def shmem_fault(
    k: Kernel, mapping: AddressSpace, index: int, cpu: int
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 mm/shmem.c shmem_fault: the folio locked with +1 ref; beyond EOF -> SIGBUS."""
    from pinlab.kernel.mm.memory import VM_FAULT_LOCKED, VM_FAULT_SIGBUS

    folio = yield from shmem_get_folio(k, mapping, index, cpu)
    if folio is None:
        return VM_FAULT_SIGBUS, -1
    return VM_FAULT_LOCKED, folio
