"""Registered buffers: pinned at register, unpinned at unregister (v6.1 io_uring/rsrc.c).

Registration charges locked memory (io_account_mem): the ring creator's user
(`ctx.user`, a uid in Kernel.user_locked_vm; set only for a ring created without
CAP_IPC_LOCK) against the registering task's RLIMIT_MEMLOCK, and the creator's mm
(`ctx.mm_account`, its pinned_vm).  The profile says when and how much: 6.1 after
pinning, a compound page's whole size once per head; 5.7 the 4 KiB page count
before pinning, and no pinned_vm.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.errno import EBUSY, EFAULT, EINVAL, ENOMEM, ENXIO, EOPNOTSUPP, EOVERFLOW
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_page, unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memmap import compound_head, folio_nr_pages, peek_head
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.types import MmStruct, Task, VmArea, find_vma

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
    """v6.1 io_uring/rsrc.h struct io_mapped_ubuf: one bvec (one 4 KiB page) per pinned page,
    and acct_pages (:52), the pages io_buffer_account_pin charged for it.  v6.5
    (profile.io_uring_coalesce_folio): one bvec, the first page, for a buffer in one folio."""

    ubuf: int
    ubuf_end: int
    bvec: list[int]
    acct_pages: int = 0


@dataclass(slots=True)
class IoRingCtx:
    """v6.1 io_uring/io_uring.c struct io_ring_ctx: the fields buffer registration uses.

    `user_bufs` is None when nothing is registered; a slot is None for a
    sparse (NULL/0) iovec, the kernel's dummy_ubuf.  `buf_data` stands for
    ctx->buf_data being allocated.  `user` is the uid of ctx->user, set only when
    the creator lacked CAP_IPC_LOCK (v6.1 io_uring.c:3686 io_uring_create; v5.7.14
    fs/io_uring.c:7990 ctx->account_mem); `mm_account` the id of the creator's mm
    (v6.1 io_uring.c:3727; none in v5.7); `sq_entries`/`cq_entries` the ring sizes.
    """

    user_bufs: list[MappedUbuf | None] | None = None
    buf_data: bool = False
    dying: bool = False
    user: int | None = None
    mm_account: int | None = None
    sq_entries: int = 0
    cq_entries: int = 0


def _current(k: Kernel, mm: MmStruct, task: Task | None) -> Task:
    """current: `task` if given, else the one task running `mm` (the model's tasks are
    single-threaded processes, so current->mm names current)."""
    if task is not None:
        return task
    owners = [t for t in k.tasks.values() if t.mm == mm.id]
    if len(owners) != 1:
        raise Unmodelled("rlimit", f"{len(owners)} tasks run mm {mm.id}: pass current")
    return owners[0]


def _locked_vm_key(uid: int) -> tuple[str, int]:
    """Footprint key of user_struct.locked_vm."""
    return ("locked_vm", uid)


def _locked_vm_sub(k: Kernel, uid: int, nr_pages: int) -> None:
    """atomic_long_sub(nr_pages, &user->locked_vm); a zero count is kept as no entry."""
    left = k.user_locked_vm.get(uid, 0) - nr_pages
    if left:
        k.user_locked_vm[uid] = left
    else:
        k.user_locked_vm.pop(uid, None)


def __io_account_mem(
    k: Kernel, current: Task, uid: int, nr_pages: int
) -> Generator[Yield, None, int]:
    """v6.1 io_uring/rsrc.c:45 __io_account_mem (v5.7.14 fs/io_uring.c:7082 io_account_mem):
    charge user->locked_vm by cmpxchg, -ENOMEM past rlimit(RLIMIT_MEMLOCK) in pages.

    rlimit() is current's rlim_cur (v6.1 include/linux/sched/signal.h:797).  The read and
    each cmpxchg are steps; a failed cmpxchg retries with the value it saw.
    """
    if not nr_pages:
        return 0
    key = _locked_vm_key(uid)
    yield Point("__io_account_mem:read", reads=frozenset({key, ("rlim", current.pid)}))
    page_limit = current.rlim_memlock[0] >> PAGE_SHIFT
    cur_pages = k.user_locked_vm.get(uid, 0)
    while True:
        new_pages = cur_pages + nr_pages
        if new_pages > page_limit:
            return -ENOMEM
        yield Point("__io_account_mem:cmpxchg", writes=frozenset({key}))
        seen = k.user_locked_vm.get(uid, 0)
        if seen == cur_pages:
            k.user_locked_vm[uid] = new_pages
            return 0
        cur_pages = seen


def __io_unaccount_mem(k: Kernel, uid: int, nr_pages: int) -> Generator[Yield, None, None]:
    """v6.1 io_uring/rsrc.h:147 __io_unaccount_mem (v5.7.14 fs/io_uring.c:7077
    io_unaccount_mem): atomic_long_sub from user->locked_vm."""
    yield Point("__io_unaccount_mem", writes=frozenset({_locked_vm_key(uid)}))
    _locked_vm_sub(k, uid, nr_pages)


def _pinned_vm_add(k: Kernel, mm_id: int, nr_pages: int) -> Generator[Yield, None, None]:
    """atomic64_add / atomic64_sub of nr_pages on ctx->mm_account->pinned_vm.

    The mm_struct outlives exit_mmap through io_uring_create's mmgrab; the model drops it
    from k.mms at exit, after which nothing can read its pinned_vm: nothing to change.
    """
    yield Point("pinned_vm", writes=frozenset({("pinned_vm", mm_id)}))
    mm = k.mms.get(mm_id)
    if mm is not None:
        mm.pinned_vm += nr_pages


def io_unaccount_mem(k: Kernel, ctx: IoRingCtx, nr_pages: int) -> Generator[Yield, None, None]:
    """v6.1 io_uring/rsrc.c:65 io_unaccount_mem: ctx->user's locked_vm, then mm_account's
    pinned_vm."""
    if ctx.user is not None:
        yield from __io_unaccount_mem(k, ctx.user, nr_pages)
    if ctx.mm_account is not None:
        yield from _pinned_vm_add(k, ctx.mm_account, -nr_pages)


def io_account_mem(
    k: Kernel, mm: MmStruct, task: Task | None, ctx: IoRingCtx, nr_pages: int
) -> Generator[Yield, None, int]:
    """v6.1 io_uring/rsrc.c:74 io_account_mem: charge ctx->user (if set) against current's
    RLIMIT_MEMLOCK, then add to mm_account's pinned_vm (:85); 0 or -ENOMEM.

    `mm` is current->mm and `task` current (None: the task running `mm`).
    """
    if ctx.user is not None:
        ret = yield from __io_account_mem(k, _current(k, mm, task), ctx.user, nr_pages)
        if ret:
            return ret
    if ctx.mm_account is not None:
        yield from _pinned_vm_add(k, ctx.mm_account, nr_pages)
    return 0


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
    profile.io_uring_vma_check "hugetlb" (5.7.14 fs/io_uring.c:7297-7305): any file but
    hugetlbfs is -EOPNOTSUPP, no other test; None (v6.5): no test at all.
    """
    how = k.profile.io_uring_vma_check
    if how is None:
        return 0
    if how == "hugetlb":
        for vma in vmas:
            if vma.vm_file is not None and not _is_file_hugepages(k, vma.vm_file):
                return -EOPNOTSUPP
        return 0
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


def PageCompound(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/page-flags.h:295 PageCompound: PG_head set, or a tail page."""
    return bool(int(k.mem.flags[page]) & k.pf.mask("PG_head")) or compound_head(k.mem, page) != page


def _compound_reads(k: Kernel, pages: list[int]) -> frozenset[tuple[str, int, str]]:
    """What PageCompound, compound_head and page_size read of `pages`: each page's flags
    and head, and its head's folio order (page[1])."""
    keys: set[tuple[str, int, str]] = set()
    for page in pages:
        head = peek_head(k.mem, page)
        keys.update({("page", page, "flags"), ("page", page, "head"), ("page", head, "head")})
        keys.update({("page", head + 1, "head"), ("page", head + 1, "order")})
    return frozenset(keys)


def headpage_already_acct(
    k: Kernel, ctx: IoRingCtx, pages: list[int], nr_pages: int, hpage: int
) -> bool:
    """v6.1 io_uring/rsrc.c:919 headpage_already_acct: whether a compound page with head
    `hpage` is among the first nr_pages pages, or among the buffers registered before."""
    for page in pages[:nr_pages]:
        if PageCompound(k, page) and compound_head(k.mem, page) == hpage:
            return True
    for imu in ctx.user_bufs or []:
        for page in imu.bvec if imu is not None else []:
            if PageCompound(k, page) and compound_head(k.mem, page) == hpage:
                return True
    return False


def io_buffer_account_pin(
    k: Kernel,
    mm: MmStruct,
    task: Task | None,
    ctx: IoRingCtx,
    pages: list[int],
    imu: MappedUbuf,
    last_hpage: list[int],
) -> Generator[Yield, None, int]:
    """v6.1 io_uring/rsrc.c:947 io_buffer_account_pin: count a small page as one, a compound
    page as page_size(head) once per head (skipping `last_hpage[0]`, the previous head, and
    heads headpage_already_acct finds), then io_account_mem; 0 or -ENOMEM (acct_pages 0).
    """
    prior = [p for u in ctx.user_bufs or [] if u is not None for p in u.bvec]
    yield Point(
        "io_buffer_account_pin", reads=_compound_reads(k, pages + prior), writes=frozenset()
    )
    imu.acct_pages = 0
    for i, page in enumerate(pages):
        if not PageCompound(k, page):
            imu.acct_pages += 1
            continue
        hpage = compound_head(k.mem, page)
        if hpage == last_hpage[0]:
            continue
        last_hpage[0] = hpage
        if headpage_already_acct(k, ctx, pages, i, hpage):
            continue
        # page_size(hpage) >> PAGE_SHIFT (v6.1 include/linux/mm.h:983 page_size)
        imu.acct_pages += folio_nr_pages(k.mem, hpage)
    if not imu.acct_pages:
        return 0
    ret = yield from io_account_mem(k, mm, task, ctx, imu.acct_pages)
    if ret:
        imu.acct_pages = 0
    return ret


def _coalesce_folio(k: Kernel, pages: list[int]) -> Generator[Yield, None, list[int]]:
    """v6.5 io_uring/rsrc.c:1093-1114 io_sqe_buffer_register: consecutive pages of one folio
    keep only the first page's pin (one bvec); the others are unpinned."""
    if len(pages) < 2:
        return pages
    heads = frozenset(("page", p, "head") for p in pages)
    yield Point("io_sqe_buffer_register:page_folio", reads=heads)
    folio = compound_head(k.mem, pages[0])
    for i in range(1, len(pages)):
        if compound_head(k.mem, pages[i]) != folio or pages[i] != pages[i - 1] + 1:
            return pages
    yield from unpin_user_pages(k, pages[1:], len(pages) - 1)
    return pages[:1]


def io_sqe_buffer_register(
    k: Kernel,
    mm: MmStruct,
    ctx: IoRingCtx,
    base: int,
    length: int,
    last_hpage: list[int],
    task: Task | None = None,
) -> Generator[Yield, None, MappedUbuf | int | None]:
    """v6.1 io_uring/rsrc.c:1048 io_sqe_buffer_register: the mapped buffer, None (sparse) or
    -errno; pinned, then charged (:1075), a failed charge unpinning every page (:1077).

    Profile io_uring_buffer_acct "pages_before_pin" (v5.7.14 fs/io_uring.c:7258-7287
    io_sqe_buffer_register): the buffer's 4 KiB page count is charged to ctx->user before
    pinning, and returned if the pin fails.  `last_hpage[0]` is the caller's last_hpage
    (-1: NULL); `task` is current (None: the task running `mm`).
    """
    if not base:
        return None
    acct = k.profile.io_uring_buffer_acct
    if acct not in ("account_pin", "pages_before_pin"):
        raise Unmodelled("io_sqe_buffer_register", f"accounting {acct!r}")
    early = 0
    if acct == "pages_before_pin" and ctx.user is not None:
        early = ((base + length + PAGE_SIZE - 1) >> PAGE_SHIFT) - (base >> PAGE_SHIFT)
        ret = yield from io_account_mem(k, mm, task, ctx, early)
        if ret:
            return ret
    pages = yield from io_pin_pages(k, mm, base, length)
    if isinstance(pages, int):
        if early:
            yield from io_unaccount_mem(k, ctx, early)
        return pages
    if k.profile.io_uring_coalesce_folio:
        pages = yield from _coalesce_folio(k, pages)
    imu = MappedUbuf(base, base + length, pages, early)
    if acct == "account_pin":
        ret = yield from io_buffer_account_pin(k, mm, task, ctx, pages, imu, last_hpage)
        if ret:
            yield from unpin_user_pages(k, pages, len(pages))
            return ret
    return imu


def io_buffer_unmap(
    k: Kernel, ctx: IoRingCtx, imu: MappedUbuf | None
) -> Generator[Yield, None, None]:
    """v6.1 io_uring/rsrc.c:139 io_buffer_unmap: unpin_user_page once per bvec (per 4 KiB
    page), then return acct_pages (io_unaccount_mem, :147).

    v5.7.14 fs/io_uring.c:7161 io_sqe_buffer_unregister returns nr_bvecs when
    ctx->account_mem: the acct_pages a 5.7 registration recorded.
    """
    if imu is None:
        return
    for page in imu.bvec:
        yield from unpin_user_page(k, page)
    if imu.acct_pages:
        yield from io_unaccount_mem(k, ctx, imu.acct_pages)


def __io_sqe_buffers_unregister(k: Kernel, ctx: IoRingCtx) -> Generator[Yield, None, None]:
    """v6.1 io_uring/rsrc.c:877 __io_sqe_buffers_unregister: unmap every slot, free the table."""
    for imu in ctx.user_bufs or []:
        yield from io_buffer_unmap(k, ctx, imu)
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
    k: Kernel,
    mm: MmStruct,
    ctx: IoRingCtx,
    iovecs: list[tuple[int, int]],
    task: Task | None = None,
) -> Generator[Yield, None, int]:
    """v6.1 io_uring/rsrc.c:1112 io_sqe_buffers_register: all iovecs or none (unwound on
    error, each registered buffer's charge returned); one last_hpage for all of them."""
    if ctx.user_bufs is not None:
        return -EBUSY
    if not iovecs or len(iovecs) > IORING_MAX_REG_BUFFERS:
        return -EINVAL
    ctx.user_bufs = []
    ret = 0
    last_hpage = [-1]
    for base, length in iovecs:
        ret = io_buffer_validate(base, length)
        if ret:
            break
        imu = yield from io_sqe_buffer_register(k, mm, ctx, base, length, last_hpage, task)
        if isinstance(imu, int):
            ret = imu
            break
        ctx.user_bufs.append(imu)
    ctx.buf_data = True
    if ret:
        yield from __io_sqe_buffers_unregister(k, ctx)
    return ret
