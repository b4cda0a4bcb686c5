"""The ring's file and its teardown, and the io_uring_register(2) entry (v6.1 io_uring/io_uring.c).

The ring fd's last fput runs io_uring_release, which only queues the exit
work; the work (cancel, wait for references, io_ring_ctx_free, which
unregisters the buffers) runs later on system_unbound_wq.  The ring's file
lives in the kernel's file table (`k.files`, keyed by a file id standing
for the fd) until its last fput; its ring then moves to the queued work
(`k.system_unbound_wq`) and is freed once `flush_work` has run it, the state
a poller sees once the asynchronous teardown has happened.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, overload

from pinlab.interleave import Await, Unmodelled, Yield, run_to_completion
from pinlab.kernel.errno import EFAULT, EINVAL, ENXIO
from pinlab.kernel.io_uring.rsrc import (
    IoRingCtx,
    __io_account_mem,
    __io_sqe_buffers_unregister,
    _locked_vm_sub,
    io_sqe_buffers_register,
    io_sqe_buffers_unregister,
)
from pinlab.kernel.mm.pgtable import PAGE_SIZE
from pinlab.kernel.mm.types import MmStruct, Task
from pinlab.kernel.profiles import require_api

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/uapi/linux/io_uring.h enum io_uring_register_op
IORING_REGISTER_BUFFERS = 0
IORING_UNREGISTER_BUFFERS = 1
# v6.1 io_uring/io_uring.c:100 (v5.7.14 fs/io_uring.c:91) IORING_MAX_ENTRIES
IORING_MAX_ENTRIES = 32768
# The sq entries ops.c's io_uring_setup asks for (probes/ops.c, syscall(__NR_io_uring_setup, 8))
PROBE_ENTRIES = 8

# v5.7.14 ring_pages (fs/io_uring.c:7149) on x86-64, SMP_CACHE_BYTES 64 (include/linux/cache.h:13
# L1_CACHE_BYTES; arch/x86/Kconfig.cpu:321 X86_L1_CACHE_SHIFT 6 for GENERIC_CPU): struct
# io_rings (:114) is sq and cq (struct io_uring :102, head and tail each on its own 64-byte
# line: 128 bytes each), seven u32, then cqes[] on the next line: at byte 320.
IO_RINGS_CQES_OFFSET = 320
SMP_CACHE_BYTES = 64
# v5.7.14 include/uapi/linux/io_uring.h:156 struct io_uring_cqe (u64, s32, u32)
IO_URING_CQE_SIZE = 16
# v5.7.14 fs/io_uring.c:8316 BUILD_BUG_ON(sizeof(struct io_uring_sqe) != 64)
IO_URING_SQE_SIZE = 64


@dataclass(slots=True)
class RingFile:
    """The io_uring fd's struct file: its id in k.files, reference count (f_count) and ring."""

    id: int
    ctx: IoRingCtx = field(default_factory=IoRingCtx)
    f_count: int = 1


@dataclass(slots=True)
class ExitWork:
    """v6.1 io_uring/io_uring.c ctx->exit_work queued on system_unbound_wq: the ring it frees,
    and whether a worker has taken it off the list to run it (process_one_work)."""

    ctx: IoRingCtx
    running: bool = False


def ring_file(k: Kernel, fid: int) -> RingFile:
    """The open io_uring file `fid` (v6.1 io_uring/io_uring.c io_uring_register: fdget and
    io_is_uring_fops); an id that is no open ring is the caller's error."""
    file = k.files.get(fid)
    if not isinstance(file, RingFile):
        raise KeyError(f"file {fid} is not an open io_uring ring")
    return file


def get_order(size: int) -> int:
    """v5.7.14 include/asm-generic/getorder.h:29 get_order: least order whose pages hold size."""
    order = 0
    while PAGE_SIZE << order < size:
        order += 1
    return order


def rings_size(sq_entries: int, cq_entries: int) -> int:
    """v5.7.14 fs/io_uring.c:7120 rings_size: the cqes after struct io_rings, aligned to
    SMP_CACHE_BYTES, then the u32 sq array."""
    off = IO_RINGS_CQES_OFFSET + IO_URING_CQE_SIZE * cq_entries
    off = (off + SMP_CACHE_BYTES - 1) & ~(SMP_CACHE_BYTES - 1)
    return off + 4 * sq_entries


def ring_pages(sq_entries: int, cq_entries: int) -> int:
    """v5.7.14 fs/io_uring.c:7149 ring_pages: the rings' and the sqes' pages, each a power
    of two."""
    rings = 1 << get_order(rings_size(sq_entries, cq_entries))
    return rings + (1 << get_order(IO_URING_SQE_SIZE * sq_entries))


@overload
def io_uring_setup(k: Kernel) -> RingFile: ...


@overload
def io_uring_setup(k: Kernel, task: Task, entries: int = PROBE_ENTRIES) -> RingFile | int: ...


def io_uring_setup(
    k: Kernel, task: Task | None = None, entries: int = PROBE_ENTRIES
) -> RingFile | int:
    """v6.1 io_uring/io_uring.c:3627 io_uring_create: a ring and its file, or -errno (ring
    memory not modelled; flags: none).

    `task` is current.  Without CAP_IPC_LOCK (ns_capable_noaudit, :3686) ctx->user is its
    user; ctx->mm_account is its mm (:3727, profile io_uring_acct_pinned_vm).  Under
    io_uring_acct_rings (v5.7.14 fs/io_uring.c:7989-7997) that user is charged ring_pages
    first, -ENOMEM past RLIMIT_MEMLOCK.  Without `task` (callers that predate credentials)
    the ring charges nothing.  The file goes in k.files under a fresh id
    (io_uring_install_fd's fd).
    """
    from pinlab.kernel.process import CAP_IPC_LOCK, capable
    from pinlab.kernel.state import new_id

    require_api(k.profile, k.profile.has_io_uring, "io_uring_setup")
    ctx = IoRingCtx()
    if task is not None:
        # :3635-3640 (IORING_SETUP_CLAMP not modelled), then roundup_pow_of_two, cq twice sq
        if not entries or entries > IORING_MAX_ENTRIES:
            return -EINVAL
        ctx.sq_entries = 1 << (entries - 1).bit_length()
        ctx.cq_entries = 2 * ctx.sq_entries
        if not capable(task, CAP_IPC_LOCK):
            ctx.user = task.uid
        if ctx.user is not None and k.profile.io_uring_acct_rings:
            # one step: io_uring_setup is not interleavable in the model
            nr = ring_pages(ctx.sq_entries, ctx.cq_entries)
            ret = run_to_completion(__io_account_mem(k, task, ctx.user, nr))
            if ret:
                return ret
        if k.profile.io_uring_acct_pinned_vm:
            ctx.mm_account = task.mm
    ring = RingFile(new_id(k), ctx)
    k.files[ring.id] = ring
    return ring


def get_file(ring: RingFile) -> None:
    """v6.1 include/linux/fs.h get_file: another fd (dup, fork's copy of the fd table)."""
    ring.f_count += 1


def io_ring_ctx_wait_and_kill(k: Kernel, ctx: IoRingCtx) -> None:
    """v6.1 io_uring/io_uring.c io_ring_ctx_wait_and_kill: kill refs, queue io_ring_exit_work.

    The queued work holds the ring (k.system_unbound_wq, in order) until it has run.  Under
    io_uring_acct_rings the ring pages are returned here (v5.7.14 fs/io_uring.c:7525), in
    the caller's step.
    """
    ctx.dying = True
    if ctx.user is not None and k.profile.io_uring_acct_rings:
        _locked_vm_sub(k, ctx.user, ring_pages(ctx.sq_entries, ctx.cq_entries))
    k.system_unbound_wq.append(ExitWork(ctx))


def fput(k: Kernel, ring: RingFile) -> None:
    """v6.1 fs/file_table.c fput: the last reference runs ->release (io_uring_release).

    The file then leaves k.files; its ring lives on in the queued exit work.
    """
    ring.f_count -= 1
    if ring.f_count == 0:
        del k.files[ring.id]
        io_ring_ctx_wait_and_kill(k, ring.ctx)


def io_ring_exit_work(k: Kernel, ctx: IoRingCtx) -> Generator[Yield, None, None]:
    """v6.1 io_uring/io_uring.c io_ring_exit_work -> io_ring_ctx_free: unregister the buffers.

    Nothing is in flight to cancel or wait for (no request was ever submitted).
    """
    if ctx.buf_data:
        yield from __io_sqe_buffers_unregister(k, ctx)


def flush_work(k: Kernel) -> Generator[Yield, None, None]:
    """v6.1 kernel/workqueue.c: every work item queued on system_unbound_wq has run (the
    eventual state).

    The caller stands in for the workers: it runs each item no worker has taken yet,
    oldest first, marked running (kernel state) until its ring is freed, then waits for
    the items another caller is running.
    """
    while k.system_unbound_wq:
        work = next((w for w in k.system_unbound_wq if not _running(w)), None)
        if work is None:
            yield Await("flush_work", lambda: not k.system_unbound_wq)
            continue
        assert isinstance(work, ExitWork)
        work.running = True
        yield from io_ring_exit_work(k, work.ctx)
        k.system_unbound_wq[:] = [w for w in k.system_unbound_wq if w is not work]


def _running(work: object) -> bool:
    """Whether a worker is running the queued item."""
    assert isinstance(work, ExitWork)
    return work.running


def io_uring_register(
    k: Kernel,
    mm: MmStruct,
    ring: RingFile,
    opcode: int,
    iovecs: list[tuple[int, int]] | None,
    task: Task | None = None,
) -> Generator[Yield, None, int]:
    """v6.1 io_uring/io_uring.c io_uring_register -> __io_uring_register, buffer opcodes only.

    `iovecs` None is a NULL arg; `mm` is current->mm; `task` is current, whose
    RLIMIT_MEMLOCK a charge reads (None: the task running `mm`).
    """
    ctx = ring.ctx
    if ctx.dying:
        return -ENXIO
    if opcode == IORING_REGISTER_BUFFERS:
        if iovecs is None:
            return -EFAULT
        return (yield from io_sqe_buffers_register(k, mm, ctx, iovecs, task))
    if opcode == IORING_UNREGISTER_BUFFERS:
        if iovecs is not None:
            return -EINVAL
        return (yield from io_sqe_buffers_unregister(k, ctx))
    raise Unmodelled("io_uring_register", f"opcode {opcode}")
