"""The model evaluator's ops: what runner/ops.c does in the guest, through the model's syscalls.

One function per op of pinlab/realkernel/ops.py, over a Proc (the probe process and what
ops.c keeps in its globals) in a Machine (the booted model kernel and the case's
observations).  Nothing here knows a probe's name or expected value.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TypeVar

from pinlab.interleave import Yield, run_to_completion
from pinlab.kernel import errno
from pinlab.kernel import process as P
from pinlab.kernel.fs import File, vfs_fsync, vfs_write
from pinlab.kernel.fs.direct_io import ext4_dio_read, ext4_dio_write
from pinlab.kernel.fs.splice import Pipe, pipe_set_size, vmsplice
from pinlab.kernel.io_uring.ring import (
    IORING_REGISTER_BUFFERS,
    IORING_UNREGISTER_BUFFERS,
    RingFile,
    WorkQueue,
    fput,
    io_uring_register,
    io_uring_setup,
)
from pinlab.kernel.mm import mmap as M
from pinlab.kernel.mm.process_vm_access import process_vm_rw
from pinlab.kernel.mm.types import MmStruct, Task
from pinlab.kernel.state import Kernel
from pinlab.kernel.uaccess import UserFault, user_access
from pinlab.realkernel import ops as O
from pinlab.realkernel.model_observe import (
    Counters,
    pagemap_entries,
    pagemap_runs,
    read_counters,
    smaps_field,
)

R = TypeVar("R")

# probes/ops.c ARENA: the PROT_NONE reservation regions are placed in
ARENA = 1 << 30
ERRNO_NAMES = errno.NAMES


class Unmet(Exception):
    """A precondition the case needs does not hold (the guest's unmet())."""


class CaseError(Exception):
    """The guest would have died here (die() or a fatal signal)."""


_NO_COUNTERS = Counters(0, 0, 0, 0)


@dataclass(slots=True)
class Region:
    """A mapped region: where it is, how big, and the pagemap entries saved for it."""

    addr: int
    size: int
    saved: list[int] | None = None


@dataclass(slots=True)
class Proc:
    """One probe process: the model task and what ops.c keeps in its globals."""

    task: Task
    regions: dict[str, Region] = field(default_factory=dict)
    arena_next: int | None = None
    arena_base: int = 0
    ring: RingFile | None = None
    begin: Counters = _NO_COUNTERS
    pipes: list[Pipe] = field(default_factory=list)
    scratch: int | None = None
    dio: File | None = None


@dataclass(slots=True)
class Machine:
    """The booted model kernel, its system_unbound_wq, and the case's observations."""

    k: Kernel
    wq: WorkQueue = field(default_factory=WorkQueue)
    values: dict[str, str] = field(default_factory=dict)


def run_sync(gen: Generator[Yield, None, R]) -> R:
    return run_to_completion(gen)


def errname(ret: int) -> str:
    """The guest's errname(): "ok" for success, else the errno's name."""
    return "ok" if ret >= 0 else ERRNO_NAMES.get(-ret, "E?")


def mm_of(m: Machine, p: Proc) -> MmStruct:
    return m.k.mms[p.task.mm]


def emit_pins(m: Machine, p: Proc, obs: str) -> None:
    c = read_counters(m.k)
    m.values[f"{obs}.acquired"] = str(c.pin_acq - p.begin.pin_acq)
    m.values[f"{obs}.released"] = str(c.pin_rel - p.begin.pin_rel)


def emit_pgpg(m: Machine, p: Proc, obs: str) -> None:
    c = read_counters(m.k)
    m.values[f"{obs}.pgpgin"] = str(c.pgpgin - p.begin.pgpgin)
    m.values[f"{obs}.pgpgout"] = str(c.pgpgout - p.begin.pgpgout)


def region_of(p: Proc, name: str) -> Region:
    if name not in p.regions:
        raise CaseError("unknown-region:ENOENT")
    return p.regions[name]


def range_of(r: Region, off: int, length: int) -> int:
    """ops.c range: the address of [off, off + length), which must lie inside the region."""
    if off < 0 or length < 0 or off > r.size or length > r.size - off:
        raise CaseError("range-outside-region:ERANGE")
    return r.addr + off


# probes/ops.c fill_file: the size of its static buffer of zeroes, the most one write() asks
FILL_CHUNK = 65536


def _fill_file(m: Machine, p: Proc, file: File, size: int) -> None:
    """ops.c fill_file: write() `size` zero bytes, at most FILL_CHUNK per call, then fsync().

    Through the model's buffered write (vfs_write) and fsync (vfs_fsync): the
    file's page cache is populated and uptodate; ext4 writes it back clean,
    while tmpfs/memfd and ramfs fsync with noop_fsync and keep it dirty.
    """
    done = 0
    while done < size:
        wrote = run_sync(vfs_write(m.k, file, done, min(size - done, FILL_CHUNK), 0, p.task.cpu))
        if wrote <= 0:
            raise CaseError(f"fill-file:{errname(wrote)}")
        done += wrote
    ret = run_sync(vfs_fsync(m.k, file, p.task.cpu))
    if ret:
        raise CaseError(f"fsync:{errname(ret)}")


def _backing_file(m: Machine, kind: O.Kind) -> File:
    """memfd_create(name, 0), or a new file on the guest's tmpfs/ramfs/ext4 mount."""
    k = m.k
    if kind == "memfd":
        made = P.memfd_create(k, 0)
        if isinstance(made, int):
            raise CaseError(f"memfd_create:{errname(made)}")
        return made
    create = {"tmpfs": P.tmpfs_create, "ramfs": P.ramfs_create, "ext4": P.ext4_create}[kind]
    return create(k, 0)


def op_map(m: Machine, p: Proc, op: O.Map) -> None:
    """ops.c op_map: place the region in the PROT_NONE arena and mmap it MAP_FIXED."""
    k = m.k
    if p.arena_next is None:
        raw = run_sync(
            P.sys_mmap(
                k,
                p.task,
                None,
                ARENA + O.HPAGE,
                M.PROT_NONE,
                M.MAP_PRIVATE | M.MAP_ANONYMOUS | M.MAP_NORESERVE,
            )
        )
        if raw < 0:
            raise CaseError(f"arena:{errname(raw)}")
        p.arena_base = (raw + O.HPAGE - 1) & ~(O.HPAGE - 1)
        p.arena_next = p.arena_base + O.HPAGE
    at = p.arena_next
    if op.placement == "apart":
        at = ((at + O.HPAGE - 1) & ~(O.HPAGE - 1)) + O.HPAGE
    if op.size <= 0 or op.size > ARENA or at + op.size + O.HPAGE > p.arena_base + ARENA:
        raise CaseError("arena-full:ENOMEM")
    flags = (M.MAP_SHARED if op.sharing == "shared" else M.MAP_PRIVATE) | M.MAP_FIXED
    file = None
    if op.kind == "anon":
        flags |= M.MAP_ANONYMOUS
    elif op.kind == "hugetlb":
        flags |= M.MAP_ANONYMOUS | M.MAP_HUGETLB
    else:
        file = _backing_file(m, op.kind)
        _fill_file(m, p, file, op.size)
    addr = run_sync(P.sys_mmap(k, p.task, at, op.size, M.PROT_READ | M.PROT_WRITE, flags, file))
    if addr < 0:
        if op.kind == "hugetlb" and addr == -errno.ENOMEM:
            raise Unmet("no-free-hugetlb-pages")
        raise CaseError(f"mmap:{errname(addr)}")
    p.regions[op.region] = Region(addr, op.size)
    p.arena_next = addr + op.size


def op_touch(m: Machine, p: Proc, op: O.Touch) -> None:
    """A CPU store of one byte to every page of the range."""
    base = range_of(region_of(p, op.region), op.off, op.length)
    for off in range(0, op.length, O.PAGE):
        try:
            run_sync(user_access(m.k, p.task, base + off, True, 1))
        except UserFault as fault:
            raise CaseError(f"signal:{fault.signal}") from fault


_ADVICE = {
    "hugepage": M.MADV_HUGEPAGE,
    "nohugepage": M.MADV_NOHUGEPAGE,
    "dontneed": M.MADV_DONTNEED,
}
_PROT = {"none": M.PROT_NONE, "r": M.PROT_READ, "rw": M.PROT_READ | M.PROT_WRITE}


def op_madvise(m: Machine, p: Proc, op: O.Madvise) -> None:
    addr = range_of(region_of(p, op.region), op.off, op.length)
    ret = run_sync(P.sys_madvise(m.k, p.task, addr, op.length, _ADVICE[op.advice]))
    if ret:
        raise CaseError(f"madvise:{errname(ret)}")


def op_mprotect(m: Machine, p: Proc, op: O.Mprotect) -> None:
    addr = range_of(region_of(p, op.region), op.off, op.length)
    ret = run_sync(P.sys_mprotect(m.k, p.task, addr, op.length, _PROT[op.prot]))
    if ret:
        raise CaseError(f"mprotect:{errname(ret)}")


def op_drain(m: Machine, p: Proc) -> None:
    """ops.c drain: MADV_POPULATE_READ of a scratch page ends with lru_add_drain()."""
    if p.scratch is None:
        addr = run_sync(
            P.sys_mmap(
                m.k,
                p.task,
                None,
                O.PAGE,
                M.PROT_READ | M.PROT_WRITE,
                M.MAP_PRIVATE | M.MAP_ANONYMOUS,
            )
        )
        if addr < 0:
            raise CaseError(f"drain-mmap:{errname(addr)}")
        p.scratch = addr
    ret = run_sync(P.sys_madvise(m.k, p.task, p.scratch, O.PAGE, M.MADV_POPULATE_READ))
    if ret:
        raise CaseError(f"drain-madvise:{errname(ret)}")


def op_require_thp(m: Machine, p: Proc, op: O.RequireThp) -> None:
    r = region_of(p, op.region)
    if smaps_field(m.k, p.task, range_of(r, op.off, op.length), "AnonHugePages") * 1024 < op.length:
        raise Unmet("no-transparent-huge-page")


def op_uring_register(m: Machine, p: Proc, op: O.UringRegister) -> None:
    """ops.c op_uring_register: a ring on first use, IORING_REGISTER_BUFFERS of one iovec."""
    # only the start must be inside: partial-failure probes register past the region's end
    addr = range_of(region_of(p, op.region), op.off, 0)
    if p.ring is None:
        p.ring = io_uring_setup(m.k)
    ret = run_sync(
        io_uring_register(m.k, mm_of(m, p), p.ring, IORING_REGISTER_BUFFERS, [(addr, op.length)])
    )
    m.values[op.obs] = errname(ret)


def op_uring_unregister(m: Machine, p: Proc, op: O.UringUnregister) -> None:
    if p.ring is None:
        m.values[op.obs] = errname(-errno.EBADF)
        return
    ret = run_sync(io_uring_register(m.k, mm_of(m, p), p.ring, IORING_UNREGISTER_BUFFERS, None))
    m.values[op.obs] = errname(ret)


def op_uring_close(m: Machine, p: Proc) -> None:
    if p.ring is None:
        raise CaseError("io_uring-close:EBADF")
    fput(m.k, p.ring, m.wq)
    p.ring = None


def op_pagemap_cmp(m: Machine, p: Proc, op: O.PagemapCmp) -> None:
    """ops.c op_pagemap_cmp against the entries op_pagemap_save kept."""
    r = region_of(p, op.region)
    if r.saved is None:
        raise CaseError("pagemap-cmp:EINVAL")
    m.values[op.obs] = pagemap_runs(pagemap_entries(m.k, p.task, r.addr, r.size), r.saved)


def op_vmsplice(m: Machine, p: Proc, op: O.Vmsplice) -> None:
    """ops.c op_vmsplice: 1-byte iovecs of one page into 256-slot pipes that stay open."""
    if isinstance(op.count, O.Param):
        raise CaseError(f"unbound-parameter:{op.count.name}")
    iov = (range_of(region_of(p, op.region), op.off, 1), 1)
    left = op.count
    while left > 0:
        pipe = Pipe()
        p.pipes.append(pipe)
        slots = pipe_set_size(pipe, 256 * O.PAGE)
        if slots < 0:
            raise CaseError(f"F_SETPIPE_SZ:{errname(slots)}")
        room = slots // O.PAGE
        while room > 0 and left > 0:
            chunk = min(left, room, 1024)
            got = run_sync(vmsplice(m.k, mm_of(m, p), pipe, [iov] * chunk))
            if got <= 0:
                raise CaseError(f"vmsplice:{errname(got)}")
            room -= got
            left -= got


def op_dio_file(m: Machine, p: Proc, op: O.DioFile) -> None:
    """ops.c op_dio_file: a new ext4 file of `size` zero bytes, fsync()ed, then sync().

    Only the size is modelled, not the write: the guest's write() leaves the
    file's pages cached (clean after fsync), and the model's O_DIRECT path does
    not model what iomap_dio_rw does to cached pages (v6.1 fs/iomap/direct-io.c
    __iomap_dio_rw: filemap_write_and_wait_range, and for a write
    invalidate_inode_pages2_range, again in iomap_dio_complete), so a model page
    cache here would be one that O_DIRECT never flushes or drops.  No probe can
    see the difference: the cached pages are clean, so the flush submits no bio
    (pgpgin/pgpgout unchanged); dropping clean, unmapped pages takes no pin;
    the file's blocks read as zeroes either way (absent store blocks are
    zeroes); and the write's own block I/O lands before any PinsBegin, with
    sync() leaving nothing pending.
    """
    p.dio = P.ext4_create(m.k, 0)
    mapping = m.k.mappings[p.dio.mapping]
    mapping.i_size = max(mapping.i_size, op.size)


def op_odirect(m: Machine, p: Proc, op: O.OdirectRead | O.OdirectWrite) -> None:
    """ops.c op_odirect: pread()/pwrite() at offset 0 of the O_DIRECT file."""
    r = region_of(p, op.region)
    if p.dio is None:
        raise CaseError("dio-open:ENOENT")
    mapping = m.k.mappings[p.dio.mapping]
    io = ext4_dio_write if isinstance(op, O.OdirectWrite) else ext4_dio_read
    ret = run_sync(io(m.k, mm_of(m, p), mapping, 0, range_of(r, op.off, op.length), op.length))
    m.values[op.obs] = str(ret) if ret >= 0 else errname(ret)


def op_process_vm_readv(m: Machine, p: Proc, op: O.ProcessVmReadv) -> None:
    """process_vm_readv(getpid(), local = dst range, remote = src range)."""
    src, dst = region_of(p, op.src), region_of(p, op.dst)
    ret = run_sync(
        process_vm_rw(
            m.k,
            p.task,
            p.task,
            [(range_of(dst, op.dst_off, op.length), op.length)],
            [(range_of(src, op.src_off, op.length), op.length)],
            0,
            False,
        )
    )
    m.values[op.obs] = str(ret) if ret >= 0 else errname(ret)
