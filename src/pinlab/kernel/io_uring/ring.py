"""The ring's file and its teardown, and the io_uring_register(2) entry (v6.1 io_uring/io_uring.c).

The ring fd's last fput runs io_uring_release, which only queues the exit
work; the work (cancel, wait for references, io_ring_ctx_free, which
unregisters the buffers) runs later on system_unbound_wq.  The model keeps
queued work in a WorkQueue the caller owns and runs it at `flush_work`,
the state a poller sees once the asynchronous teardown has happened.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
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
    """The io_uring fd's struct file: its reference count (f_count) and the ring behind it."""

    ctx: IoRingCtx
    f_count: int = 1


@dataclass(slots=True)
class WorkQueue:
    """v6.1 kernel/workqueue.c system_unbound_wq: rings whose exit work is queued, in order."""

    pending: list[IoRingCtx] = field(default_factory=list)


def io_uring_setup(k: Kernel) -> RingFile:
    """v6.1 io_uring/io_uring.c io_uring_create: a ring and its file (ring memory not modelled)."""
    return RingFile(IoRingCtx())


def get_file(ring: RingFile) -> None:
    """v6.1 include/linux/fs.h get_file: another fd (dup, fork's copy of the fd table)."""
    ring.f_count += 1


def io_ring_ctx_wait_and_kill(ctx: IoRingCtx, wq: WorkQueue) -> None:
    """v6.1 io_uring/io_uring.c io_ring_ctx_wait_and_kill: kill refs, queue io_ring_exit_work."""
    ctx.dying = True
    wq.pending.append(ctx)


def fput(k: Kernel, ring: RingFile, wq: WorkQueue) -> None:
    """v6.1 fs/file_table.c fput: the last reference runs ->release (io_uring_release)."""
    ring.f_count -= 1
    if ring.f_count == 0:
        io_ring_ctx_wait_and_kill(ring.ctx, wq)


def io_ring_exit_work(k: Kernel, ctx: IoRingCtx) -> Generator[Yield, None, None]:
    """v6.1 io_uring/io_uring.c io_ring_exit_work -> io_ring_ctx_free: unregister the buffers.

    Nothing is in flight to cancel or wait for (no request was ever submitted).
    """
    if ctx.buf_data:
        yield from __io_sqe_buffers_unregister(k, ctx)


def flush_work(k: Kernel, wq: WorkQueue) -> Generator[Yield, None, None]:
    """v6.1 kernel/workqueue.c: every queued work item has run (the eventual state)."""
    while wq.pending:
        yield from io_ring_exit_work(k, wq.pending.pop(0))


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
    raise ValueError(f"io_uring_register opcode {opcode} is not modelled")
