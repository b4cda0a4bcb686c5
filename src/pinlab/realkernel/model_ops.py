"""The model evaluator's ops: what runner/ops.c does in the guest, through the model's syscalls.

One generator per op of pinlab/realkernel/ops.py, over the booted model kernel `k` and a
Proc (the probe process, what ops.c keeps in its globals, and the case's observations).
Each op yields where the kernel functions it calls yield, so a probe's op list can run as
one thread among others (model_thread.py); alone it is driven by `run_sync`.  Whatever a
system call leaves behind (open files, rings, pipes, queued work, bios) is kernel state in
`k`; a Proc is plain data that refers to it by id.  Nothing here knows a probe's name or
expected value.
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
from pinlab.kernel.fs.splice import create_pipe, pipe_set_size, vmsplice
from pinlab.kernel.io_uring.ring import (
    IORING_REGISTER_BUFFERS,
    IORING_UNREGISTER_BUFFERS,
    flush_work,
    fput,
    io_uring_register,
    io_uring_setup,
    ring_file,
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
    pins_idle,
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
    """One probe process, as plain data: its pid in k.tasks, what ops.c keeps in its
    globals (kernel objects by id: the ring's and the pipes' files in k.files, the
    O_DIRECT file's inode in k.mappings), and the case's observations (`values`, the
    one dict a forked child shares with its parent)."""

    pid: int
    values: dict[str, str] = field(default_factory=dict)
    regions: dict[str, Region] = field(default_factory=dict)
    arena_next: int | None = None
    arena_base: int = 0
    ring: int | None = None
    begin: Counters = _NO_COUNTERS
    pipes: list[int] = field(default_factory=list)
    scratch: int | None = None
    # ops.c DIO_FILE: the inode its path names (k.mappings); opened for each transfer
    dio: int | None = None
    # the backing files op_map opened (memfd, tmpfs, ramfs, ext4): open until exit
    files: list[int] = field(default_factory=list)


def run_sync(gen: Generator[Yield, None, R]) -> R:
    """Drive an op (or any interleavable function) alone, as the evaluator does."""
    return run_to_completion(gen)


def errname(ret: int) -> str:
    """The guest's errname(): "ok" for success, else the errno's name."""
    return "ok" if ret >= 0 else ERRNO_NAMES.get(-ret, "E?")


def task_of(k: Kernel, p: Proc) -> Task:
    """The process's task."""
    return k.tasks[p.pid]


def mm_of(k: Kernel, p: Proc) -> MmStruct:
    """The process's mm (current->mm)."""
    return k.mms[k.tasks[p.pid].mm]


def emit_pins(k: Kernel, p: Proc, obs: str) -> None:
    c = read_counters(k)
    p.values[f"{obs}.acquired"] = str(c.pin_acq - p.begin.pin_acq)
    p.values[f"{obs}.released"] = str(c.pin_rel - p.begin.pin_rel)


def emit_pgpg(k: Kernel, p: Proc, obs: str) -> None:
    c = read_counters(k)
    p.values[f"{obs}.pgpgin"] = str(c.pgpgin - p.begin.pgpgin)
    p.values[f"{obs}.pgpgout"] = str(c.pgpgout - p.begin.pgpgout)


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


def _fill_file(k: Kernel, p: Proc, file: File, size: int) -> Generator[Yield, None, None]:
    """ops.c fill_file: write() `size` zero bytes, at most FILL_CHUNK per call, then fsync().

    Through the model's buffered write (vfs_write) and fsync (vfs_fsync): the
    file's page cache is populated and uptodate; ext4 writes it back clean,
    while tmpfs/memfd and ramfs fsync with noop_fsync and keep it dirty.
    """
    cpu = task_of(k, p).cpu
    done = 0
    while done < size:
        wrote = yield from vfs_write(k, file, done, min(size - done, FILL_CHUNK), 0, cpu)
        if wrote <= 0:
            raise CaseError(f"fill-file:{errname(wrote)}")
        done += wrote
    ret = yield from vfs_fsync(k, file, cpu)
    if ret:
        raise CaseError(f"fsync:{errname(ret)}")


def _backing_file(k: Kernel, kind: O.Kind) -> int:
    """memfd_create(name, 0), or open(O_CREAT) of a new file on the guest's tmpfs/ramfs/ext4
    mount: the open file's id in k.files."""
    if kind == "memfd":
        made = P.memfd_create(k, 0)
        if isinstance(made, int):
            raise CaseError(f"memfd_create:{errname(made)}")
        return P.fd_install(k, made)
    if kind == "tmpfs":
        return P.fd_install(k, P.tmpfs_create(k, 0))
    if kind == "ramfs":
        return P.fd_install(k, P.ramfs_create(k, 0))
    return P.fd_install(k, P.ext4_create(k, 0))


def op_map(k: Kernel, p: Proc, op: O.Map) -> Generator[Yield, None, None]:
    """ops.c op_map: place the region in the PROT_NONE arena and mmap it MAP_FIXED."""
    if p.arena_next is None:
        raw = yield from P.sys_mmap(
            k,
            task_of(k, p),
            None,
            ARENA + O.HPAGE,
            M.PROT_NONE,
            M.MAP_PRIVATE | M.MAP_ANONYMOUS | M.MAP_NORESERVE,
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
        fid = _backing_file(k, op.kind)
        p.files.append(fid)
        file = P.fget(k, fid)
        yield from _fill_file(k, p, file, op.size)
    addr = yield from P.sys_mmap(
        k, task_of(k, p), at, op.size, M.PROT_READ | M.PROT_WRITE, flags, file
    )
    if addr < 0:
        if op.kind == "hugetlb" and addr == -errno.ENOMEM:
            raise Unmet("no-free-hugetlb-pages")
        raise CaseError(f"mmap:{errname(addr)}")
    p.regions[op.region] = Region(addr, op.size)
    p.arena_next = addr + op.size


def op_touch(k: Kernel, p: Proc, op: O.Touch) -> Generator[Yield, None, None]:
    """A CPU store of one byte to every page of the range."""
    base = range_of(region_of(p, op.region), op.off, op.length)
    for off in range(0, op.length, O.PAGE):
        try:
            yield from user_access(k, task_of(k, p), base + off, True, 1)
        except UserFault as fault:
            raise CaseError(f"signal:{fault.signal}") from fault


_ADVICE = {
    "hugepage": M.MADV_HUGEPAGE,
    "nohugepage": M.MADV_NOHUGEPAGE,
    "dontneed": M.MADV_DONTNEED,
}
_PROT = {"none": M.PROT_NONE, "r": M.PROT_READ, "rw": M.PROT_READ | M.PROT_WRITE}


def op_madvise(k: Kernel, p: Proc, op: O.Madvise) -> Generator[Yield, None, None]:
    addr = range_of(region_of(p, op.region), op.off, op.length)
    ret = yield from P.sys_madvise(k, task_of(k, p), addr, op.length, _ADVICE[op.advice])
    if ret:
        raise CaseError(f"madvise:{errname(ret)}")


def op_mprotect(k: Kernel, p: Proc, op: O.Mprotect) -> Generator[Yield, None, None]:
    addr = range_of(region_of(p, op.region), op.off, op.length)
    ret = yield from P.sys_mprotect(k, task_of(k, p), addr, op.length, _PROT[op.prot])
    if ret:
        raise CaseError(f"mprotect:{errname(ret)}")


def op_drain(k: Kernel, p: Proc) -> Generator[Yield, None, None]:
    """ops.c drain: MADV_POPULATE_READ of a scratch page ends with lru_add_drain()."""
    if p.scratch is None:
        addr = yield from P.sys_mmap(
            k,
            task_of(k, p),
            None,
            O.PAGE,
            M.PROT_READ | M.PROT_WRITE,
            M.MAP_PRIVATE | M.MAP_ANONYMOUS,
        )
        if addr < 0:
            raise CaseError(f"drain-mmap:{errname(addr)}")
        p.scratch = addr
    ret = yield from P.sys_madvise(k, task_of(k, p), p.scratch, O.PAGE, M.MADV_POPULATE_READ)
    if ret:
        raise CaseError(f"drain-madvise:{errname(ret)}")


def op_require_thp(k: Kernel, p: Proc, op: O.RequireThp) -> None:
    addr = range_of(region_of(p, op.region), op.off, op.length)
    if smaps_field(k, task_of(k, p), addr, "AnonHugePages") * 1024 < op.length:
        raise Unmet("no-transparent-huge-page")


def op_uring_register(k: Kernel, p: Proc, op: O.UringRegister) -> Generator[Yield, None, None]:
    """ops.c op_uring_register: a ring on first use, IORING_REGISTER_BUFFERS of one iovec."""
    # only the start must be inside: partial-failure probes register past the region's end
    addr = range_of(region_of(p, op.region), op.off, 0)
    if p.ring is None:
        p.ring = io_uring_setup(k).id
    ring = ring_file(k, p.ring)
    ret = yield from io_uring_register(
        k, mm_of(k, p), ring, IORING_REGISTER_BUFFERS, [(addr, op.length)]
    )
    p.values[op.obs] = errname(ret)


def op_uring_unregister(k: Kernel, p: Proc, op: O.UringUnregister) -> Generator[Yield, None, None]:
    if p.ring is None:
        p.values[op.obs] = errname(-errno.EBADF)
        return
    ring = ring_file(k, p.ring)
    ret = yield from io_uring_register(k, mm_of(k, p), ring, IORING_UNREGISTER_BUFFERS, None)
    p.values[op.obs] = errname(ret)


def op_uring_close(k: Kernel, p: Proc) -> None:
    """ops.c op_uring_close: close(ring_fd); the ring's teardown is queued (fput)."""
    if p.ring is None:
        raise CaseError("io_uring-close:EBADF")
    fput(k, ring_file(k, p.ring))
    p.ring = None


def op_pins_settle(k: Kernel, p: Proc, op: O.PinsSettle) -> Generator[Yield, None, None]:
    """kstate.c pins_settle: the eventual state, once queued work has run; then PinsEnd."""
    yield from flush_work(k)
    if not pins_idle(k):
        raise CaseError("pins-settle:ETIMEDOUT")
    emit_pins(k, p, op.obs)


def op_pagemap_save(k: Kernel, p: Proc, op: O.PagemapSave) -> None:
    """ops.c op_pagemap_save: each page's /proc/self/pagemap entry, kept for a compare."""
    r = region_of(p, op.region)
    r.saved = pagemap_entries(k, task_of(k, p), r.addr, r.size)


def op_pagemap_cmp(k: Kernel, p: Proc, op: O.PagemapCmp) -> None:
    """ops.c op_pagemap_cmp against the entries op_pagemap_save kept."""
    r = region_of(p, op.region)
    if r.saved is None:
        raise CaseError("pagemap-cmp:EINVAL")
    p.values[op.obs] = pagemap_runs(pagemap_entries(k, task_of(k, p), r.addr, r.size), r.saved)


def op_smaps(k: Kernel, p: Proc, op: O.Smaps) -> None:
    """ops.c op_smaps: the /proc/self/smaps field (kB) of the VMA at the region's start."""
    r = region_of(p, op.region)
    p.values[op.obs] = str(smaps_field(k, task_of(k, p), r.addr, op.field))


def op_vmsplice(k: Kernel, p: Proc, op: O.Vmsplice) -> Generator[Yield, None, None]:
    """ops.c op_vmsplice: 1-byte iovecs of one page into 256-slot pipes that stay open."""
    if isinstance(op.count, O.Param):
        raise CaseError(f"unbound-parameter:{op.count.name}")
    iov = (range_of(region_of(p, op.region), op.off, 1), 1)
    left = op.count
    while left > 0:
        pipe = create_pipe(k)
        p.pipes.append(pipe.id)
        slots = pipe_set_size(pipe, 256 * O.PAGE)
        if slots < 0:
            raise CaseError(f"F_SETPIPE_SZ:{errname(slots)}")
        room = slots // O.PAGE
        while room > 0 and left > 0:
            chunk = min(left, room, 1024)
            got = yield from vmsplice(k, mm_of(k, p), pipe, [iov] * chunk)
            if got <= 0:
                raise CaseError(f"vmsplice:{errname(got)}")
            room -= got
            left -= got


def op_dio_file(k: Kernel, p: Proc, op: O.DioFile) -> None:
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
    sync() leaving nothing pending.  ops.c closes the file again; the inode
    stays, named by the process's DIO_FILE path (`Proc.dio`).
    """
    fid = P.fd_install(k, P.ext4_create(k, 0))
    mapping = k.mappings[P.fget(k, fid).mapping]
    mapping.i_size = max(mapping.i_size, op.size)
    p.dio = mapping.id
    P.close_fd(k, fid)


def op_odirect(
    k: Kernel, p: Proc, op: O.OdirectRead | O.OdirectWrite
) -> Generator[Yield, None, None]:
    """ops.c op_odirect: open(O_DIRECT), pread()/pwrite() at offset 0, close()."""
    r = region_of(p, op.region)
    if p.dio is None:
        raise CaseError("dio-open:ENOENT")
    write = isinstance(op, O.OdirectWrite)
    fid = P.fd_install(k, File(p.dio, readable=not write, writable=write))
    mapping = k.mappings[P.fget(k, fid).mapping]
    buf = range_of(r, op.off, op.length)
    if write:
        ret = yield from ext4_dio_write(k, mm_of(k, p), mapping, 0, buf, op.length)
    else:
        ret = yield from ext4_dio_read(k, mm_of(k, p), mapping, 0, buf, op.length)
    P.close_fd(k, fid)
    p.values[op.obs] = str(ret) if ret >= 0 else errname(ret)


def op_process_vm_readv(k: Kernel, p: Proc, op: O.ProcessVmReadv) -> Generator[Yield, None, None]:
    """process_vm_readv(getpid(), local = dst range, remote = src range)."""
    src, dst = region_of(p, op.src), region_of(p, op.dst)
    task = task_of(k, p)
    ret = yield from process_vm_rw(
        k,
        task,
        task,
        [(range_of(dst, op.dst_off, op.length), op.length)],
        [(range_of(src, op.src_off, op.length), op.length)],
        0,
        False,
    )
    p.values[op.obs] = str(ret) if ret >= 0 else errname(ret)
