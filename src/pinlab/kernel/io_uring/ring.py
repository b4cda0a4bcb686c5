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
from typing import TYPE_CHECKING

from pinlab.interleave import Await, Unmodelled, Yield
from pinlab.kernel.errno import EFAULT, EINVAL, ENXIO
from pinlab.kernel.io_uring.rsrc import (
    IoRingCtx,
    __io_sqe_buffers_unregister,
    io_sqe_buffers_register,
    io_sqe_buffers_unregister,
)
from pinlab.kernel.mm.types import MmStruct

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/uapi/linux/io_uring.h enum io_uring_register_op
IORING_REGISTER_BUFFERS = 0
IORING_UNREGISTER_BUFFERS = 1


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


def io_uring_setup(k: Kernel) -> RingFile:
    """v6.1 io_uring/io_uring.c io_uring_create: a ring and its file (ring memory not modelled).

    The file goes in k.files under a fresh id (io_uring_install_fd's fd).
    """
    from pinlab.kernel.state import new_id

    ring = RingFile(new_id(k))
    k.files[ring.id] = ring
    return ring


def get_file(ring: RingFile) -> None:
    """v6.1 include/linux/fs.h get_file: another fd (dup, fork's copy of the fd table)."""
    ring.f_count += 1


def io_ring_ctx_wait_and_kill(k: Kernel, ctx: IoRingCtx) -> None:
    """v6.1 io_uring/io_uring.c io_ring_ctx_wait_and_kill: kill refs, queue io_ring_exit_work.

    The queued work holds the ring (k.system_unbound_wq, in order) until it has run.
    """
    ctx.dying = True
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
    k: Kernel, mm: MmStruct, ring: RingFile, opcode: int, iovecs: list[tuple[int, int]] | None
) -> Generator[Yield, None, int]:
    """v6.1 io_uring/io_uring.c io_uring_register -> __io_uring_register, buffer opcodes only.

    `iovecs` None is a NULL arg; `mm` is current->mm.
    """
    ctx = ring.ctx
    if ctx.dying:
        return -ENXIO
    if opcode == IORING_REGISTER_BUFFERS:
        if iovecs is None:
            return -EFAULT
        return (yield from io_sqe_buffers_register(k, mm, ctx, iovecs))
    if opcode == IORING_UNREGISTER_BUFFERS:
        if iovecs is not None:
            return -EINVAL
        return (yield from io_sqe_buffers_unregister(k, ctx))
    raise Unmodelled("io_uring_register", f"opcode {opcode}")
