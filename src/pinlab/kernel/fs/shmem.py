"""tmpfs / shmem / memfd: swap-backed page cache without writeback (v6.1 mm/shmem.c, mm/memfd.c)."""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.errno import ENOMEM, EPERM
from pinlab.kernel.fs import File, new_inode
from pinlab.kernel.mm.filemap import (
    filemap_add_folio,
    filemap_get_folio,
    folio_mark_dirty,
    folio_put_footprint,
    mapping_gfp_mask,
)
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.page_alloc import alloc_pages
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import HPAGE_PMD_ORDER, HPAGE_PUD_ORDER, PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.rmap import file_mapping_value
from pinlab.kernel.mm.swap import folio_mark_accessed
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
# v6.1 include/uapi/linux/fcntl.h: the seals shmem_write_begin checks
F_SEAL_GROW = 0x0004
F_SEAL_WRITE = 0x0008
F_SEAL_FUTURE_WRITE = 0x0010
# v6.1 include/linux/shmem_fs.h enum sgp_type
SGP_READ, SGP_NOALLOC, SGP_CACHE, SGP_WRITE, SGP_FALLOC = range(5)


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
    k: Kernel,
    mapping: AddressSpace,
    index: int,
    cpu: int,
    sgp: int = SGP_CACHE,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, int | None]:
    """v6.1 mm/shmem.c shmem_get_folio_gfp: the cached or a new folio, locked, +1 ref.

    SGP_CACHE (faults) stops beyond EOF (the kernel's -EINVAL: None) and zeroes
    a new folio uptodate.  SGP_WRITE (write_begin) may pass EOF, marks a cached
    folio accessed and a new one referenced, and leaves a new one !uptodate
    for shmem_write_end.  None is also an allocation failure.  Swap,
    fallocate and huge shmem (shmem_huge defaults to never) are not modelled.
    ``then``: what the caller writes after this returns, before it yields again
    (footprint only).
    """
    if sgp <= SGP_CACHE and index * PAGE_SIZE >= mapping.i_size:
        return None
    folio = yield from filemap_get_folio(k, mapping, index)
    if folio is not None:
        # then the folio is unlocked and put (truncated meanwhile), or returned
        yield from folio_lock(k, folio, folio_put_footprint(k, folio) | then)
        if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id):
            folio_unlock(k, folio)
            folio_put(k, folio)
            return (yield from shmem_get_folio(k, mapping, index, cpu, sgp, then))
        if sgp == SGP_WRITE:
            yield from folio_mark_accessed(k, folio, cpu)
        return folio
    new = alloc_pages(k, mapping_gfp_mask(mapping), 0)
    if new is None:
        return None
    k.mem.flags[new] |= k.pf.mask("PG_swapbacked")
    if sgp == SGP_WRITE:
        k.mem.flags[new] |= k.pf.mask("PG_referenced")  # __folio_set_referenced
    err = yield from filemap_add_folio(k, mapping, new, index, cpu, then)
    if err:
        folio_put(k, new)
        return (yield from shmem_get_folio(k, mapping, index, cpu, sgp, then))
    if sgp != SGP_WRITE:
        k.mem.data[new] = 0
        k.mem.flags[new] |= k.pf.mask("PG_uptodate")
    return new


def shmem_write_begin(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, cpu: int
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 mm/shmem.c shmem_write_begin: seals, then shmem_get_folio(SGP_WRITE); (0, folio).

    A write seal refuses every write, F_SEAL_GROW one past EOF (-EPERM); a
    failed allocation is -ENOMEM.  No page is ever poisoned in the model.
    """
    if mapping.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
        return -EPERM, -1
    if mapping.seals & F_SEAL_GROW and pos + length > mapping.i_size:
        return -EPERM, -1
    folio = yield from shmem_get_folio(k, mapping, pos >> PAGE_SHIFT, cpu, SGP_WRITE)
    if folio is None:
        return -ENOMEM, -1
    return 0, folio


def shmem_write_end(
    k: Kernel, mapping: AddressSpace, pos: int, length: int, copied: int, folio: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/shmem.c shmem_write_end: extend i_size, uptodate, dirty, unlock, put; `copied`.

    A new folio written in part has the rest zeroed (zero_user_segments) before
    it becomes uptodate; contents being one token per page, the copied token
    stands for the page.  The put drops shmem_get_folio's reference.
    """
    yield Point(
        "shmem_write_end", writes=frozenset({("mapping", mapping.id), ("page", folio, "flags")})
    )
    if pos + copied > mapping.i_size:
        mapping.i_size = pos + copied
    k.mem.flags[folio] |= k.pf.mask("PG_uptodate")
    yield from folio_mark_dirty(k, folio)
    folio_unlock(k, folio)
    yield Point("put_page", writes=folio_put_footprint(k, folio))
    folio_put(k, folio)
    return copied


def shmem_fault(
    k: Kernel,
    mapping: AddressSpace,
    index: int,
    cpu: int,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 mm/shmem.c shmem_fault: the folio locked with +1 ref; beyond EOF -> SIGBUS."""
    from pinlab.kernel.mm.memory import VM_FAULT_LOCKED, VM_FAULT_SIGBUS

    folio = yield from shmem_get_folio(k, mapping, index, cpu, SGP_CACHE, then)
    if folio is None:
        return VM_FAULT_SIGBUS, -1
    return VM_FAULT_LOCKED, folio
