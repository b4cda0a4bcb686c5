"""Registered buffers: pinned at register, unpinned at unregister (v6.1 io_uring/rsrc.c).

Memory accounting (io_buffer_account_pin / io_account_mem) is not modelled: it
only moves mm->pinned_vm and, for a ring created without CAP_IPC_LOCK,
user->locked_vm against RLIMIT_MEMLOCK; no probe observes either.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.errno import EBUSY, EFAULT, EINVAL, ENXIO, EOPNOTSUPP, EOVERFLOW
from pinlab.kernel.mm.gup import page_array, pin_user_pages, unpin_user_page, unpin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.types import MmStruct, VmArea, find_vma

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 io_uring/rsrc.c IORING_MAX_REG_BUFFERS
IORING_MAX_REG_BUFFERS = 1 << 14
# v6.1 include/linux/sizes.h SZ_1G: io_buffer_validate's length limit
SZ_1G = 1 << 30
# unsigned long on x86-64: the range check_add_overflow guards
ULONG_MAX = (1 << 64) - 1


@dataclass(slots=True)
class MappedUbuf:
    """v6.1 io_uring/rsrc.h struct io_mapped_ubuf: one bvec (one 4 KiB page) per pinned page."""

    ubuf: int
    ubuf_end: int
    bvec: list[int]


@dataclass(slots=True)
class IoRingCtx:
    """v6.1 io_uring/io_uring.c struct io_ring_ctx: the fields buffer registration uses.

    `user_bufs` is None when nothing is registered; a slot is None for a
    sparse (NULL/0) iovec, the kernel's dummy_ubuf.  `buf_data` stands for
    ctx->buf_data being allocated.
    """

    user_bufs: list[MappedUbuf | None] | None = None
    buf_data: bool = False
    dying: bool = False


def io_buffer_validate(base: int, length: int) -> int:
    """v6.1 io_uring/rsrc.c io_buffer_validate: NULL/0 is a sparse slot; 0 or -errno."""
    if not base:
        return -EFAULT if length else 0
    if not length or length > SZ_1G:
        return -EFAULT
    if base + length + PAGE_SIZE - 1 > ULONG_MAX:
        return -EOVERFLOW
    return 0


def _vma_is_shmem(k: Kernel, vma: VmArea) -> bool:
    """v6.1 mm/shmem.c vma_is_shmem: vm_ops is shmem_vm_ops (tmpfs, memfd, shared anon)."""
    return vma.vm_file is not None and k.mappings[vma.vm_file].fs.is_shmem


def _is_file_hugepages(k: Kernel, file: int) -> bool:
    """v6.1 include/linux/hugetlb.h is_file_hugepages: a hugetlbfs file (MAP_HUGETLB too)."""
    return k.mappings[file].fs.is_hugetlbfs


def io_check_vmas(k: Kernel, vmas: list[VmArea]) -> int:
    """v6.1 io_uring/rsrc.c io_pin_pages, the per-page VMA test: 0 or -errno.

    A vm_file other than page 0's is -EINVAL (6.1.16 backport of "io_uring/rsrc:
    disallow multi-source reg buffers"); a file that is neither shmem nor
    hugetlbfs is -EOPNOTSUPP.  The model compares inodes where the kernel
    compares struct file pointers: two opens of one file count as one here.
    """
    file = vmas[0].vm_file
    for vma in vmas:
        if vma.vm_file != file:
            return -EINVAL
        if file is None:
            continue
        if not _vma_is_shmem(k, vma) and not _is_file_hugepages(k, file):
            return -EOPNOTSUPP
    return 0


def io_pin_pages(
    k: Kernel, mm: MmStruct, ubuf: int, length: int
) -> Generator[Yield, None, list[int] | int]:
    """v6.1 io_uring/rsrc.c io_pin_pages: pin every page R/W long-term, then vet each page's VMA.

    Rejections after a full pin (-EINVAL mixed vm_file, -EOPNOTSUPP a file that
    is neither shmem nor hugetlbfs) and short pins (-EFAULT) unpin what was
    pinned, after mmap_lock is dropped.
    """
    end = ubuf + length
    if end > ULONG_MAX or end + PAGE_SIZE - 1 > ULONG_MAX:
        return -EOVERFLOW
    start = ubuf >> PAGE_SHIFT
    nr_pages = ((end + PAGE_SIZE - 1) >> PAGE_SHIFT) - start
    pages = page_array(nr_pages)
    ret = 0
    yield from mmap_read_lock(k, mm)
    pret = yield from pin_user_pages(k, mm, ubuf, nr_pages, FOLL_WRITE | FOLL_LONGTERM, pages)
    if pret == nr_pages:
        # __get_user_pages fills vmas[i] with the VMA of page i (mmap_lock still held)
        vmas = [find_vma(mm, (start + i) << PAGE_SHIFT) for i in range(nr_pages)]
        ret = io_check_vmas(k, [v for v in vmas if v is not None])
    else:
        ret = pret if pret < 0 else -EFAULT
    mmap_read_unlock(k, mm)
    if ret:
        if pret > 0:
            yield from unpin_user_pages(k, pages, pret)
        return ret
    return [int(p) for p in pages[:nr_pages].tolist()]


def io_sqe_buffer_register(
    k: Kernel, mm: MmStruct, base: int, length: int
) -> Generator[Yield, None, MappedUbuf | int | None]:
    """v6.1 io_uring/rsrc.c io_sqe_buffer_register: the mapped buffer, None (sparse) or -errno."""
    if not base:
        return None
    pages = yield from io_pin_pages(k, mm, base, length)
    if isinstance(pages, int):
        return pages
    return MappedUbuf(base, base + length, pages)


def io_buffer_unmap(k: Kernel, imu: MappedUbuf | None) -> Generator[Yield, None, None]:
    """v6.1 io_uring/rsrc.c io_buffer_unmap: unpin_user_page once per bvec (per 4 KiB page)."""
    if imu is None:
        return
    for page in imu.bvec:
        yield from unpin_user_page(k, page)


def __io_sqe_buffers_unregister(k: Kernel, ctx: IoRingCtx) -> Generator[Yield, None, None]:
    """v6.1 io_uring/rsrc.c __io_sqe_buffers_unregister: unmap every slot, free the table."""
    for imu in ctx.user_bufs or []:
        yield from io_buffer_unmap(k, imu)
    ctx.user_bufs = None
    ctx.buf_data = False


def io_sqe_buffers_unregister(k: Kernel, ctx: IoRingCtx) -> Generator[Yield, None, int]:
    """v6.1 io_uring/rsrc.c io_sqe_buffers_unregister: -ENXIO if none, else unpin synchronously.

    io_rsrc_ref_quiesce returns at once: no request holds the buffer table.
    """
    if not ctx.buf_data:
        return -ENXIO
    yield from __io_sqe_buffers_unregister(k, ctx)
    return 0


def io_sqe_buffers_register(
    k: Kernel, mm: MmStruct, ctx: IoRingCtx, iovecs: list[tuple[int, int]]
) -> Generator[Yield, None, int]:
    """v6.1 io_uring/rsrc.c io_sqe_buffers_register: all iovecs or none (unwound on error)."""
    if ctx.user_bufs is not None:
        return -EBUSY
    if not iovecs or len(iovecs) > IORING_MAX_REG_BUFFERS:
        return -EINVAL
    ctx.user_bufs = []
    ret = 0
    for base, length in iovecs:
        ret = io_buffer_validate(base, length)
        if ret:
            break
        imu = yield from io_sqe_buffer_register(k, mm, base, length)
        if isinstance(imu, int):
            ret = imu
            break
        ctx.user_bufs.append(imu)
    ctx.buf_data = True
    if ret:
        yield from __io_sqe_buffers_unregister(k, ctx)
    return ret
