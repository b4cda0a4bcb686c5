"""The probe op list: a syscall-level sequence that both the guest and the model interpret.

Semantics (the contract for every evaluator; probes/*.c implement it in the guest):

Every case runs in a fresh process that has never pinned a page (MMF_HAS_PINNED clear), in a
guest configured as ``GUEST`` says (qemu.py sets it up; the guest reports it in its hello frame
and check.py refuses a guest that differs): one CPU (LRU batches and vmstat diffs are per CPU),
1 GiB of RAM, THP ``madvise``, 16 free 2 MiB hugetlb pages, PAGE = 4096 and HPAGE = 2 MiB
(the guest checks both against sysconf and hpage_pmd_size). Offsets and lengths are bytes.

- ``Map(region, kind, size, sharing, placement)``: a new mapping of ``size`` bytes, read/write.
  kind ``anon`` (MAP_ANONYMOUS; shared → shmem), ``hugetlb`` (MAP_ANONYMOUS|MAP_HUGETLB, 2 MiB
  pages; no free huge page → the case is *unmet*), ``memfd`` (memfd_create), ``tmpfs``,
  ``ramfs``, ``ext4`` (a file on that filesystem). File kinds are first filled with ``size``
  zero bytes by write() and fsync()ed, so their page cache is populated and clean.
  Placement ``apart``: the region starts at a 2 MiB-aligned address with at least 2 MiB of
  PROT_NONE mapping before it (so any access running off a region's end faults);
  ``adjacent``: the region starts exactly where the previously mapped region ends.
- ``Touch(region, off, length)``: a CPU write of one byte to every page of the range.
- ``Madvise(region, advice, off, length)``: madvise() with hugepage | nohugepage | dontneed.
- ``Mprotect(region, off, length, prot)``: prot none | r | rw.
- ``Drain()``: lru_add_drain() on the (only) CPU: per-CPU LRU batches release their references.
- ``RequireThp(region, off, length)``: unless the VMA at ``off`` has at least ``length`` bytes
  PMD-mapped as transparent huge pages, the case stops as *unmet*.
- ``PinsBegin()`` / ``PinsEnd(obs)``: observation ``obs.acquired`` / ``obs.released`` = change
  of /proc/vmstat nr_foll_pin_acquired / nr_foll_pin_released since the last PinsBegin (read
  after a write to /proc/sys/vm/stat_refresh; a failed write is an error).
- ``PinsSettle(obs)``: like PinsEnd, but the eventual state: the counters are polled until no
  pin is held anywhere (global acquired == released: asynchronous releases have happened);
  not within 10 s → error.
- ``PgpgEnd(obs)``: ``obs.pgpgin`` / ``obs.pgpgout`` = change of /proc/vmstat pgpgin / pgpgout
  (KiB of block I/O submitted: v6.1 block/blk-core.c submit_bio) since the last PinsBegin.
- ``UringRegister(obs, region, off, length)``: io_uring_register(IORING_REGISTER_BUFFERS) of
  one iovec; observation ``obs`` = "ok" or the errno name ("EFAULT"). One ring per process.
- ``UringUnregister(obs)``: IORING_UNREGISTER_BUFFERS; observation ``obs`` = "ok" or the errno
  name (ENXIO when nothing is registered).
- ``UringClose()``: close the ring's file descriptor (its teardown runs asynchronously).
- ``PagemapSave(region)``: remember, for every page of the region, its /proc/self/pagemap entry.
- ``PagemapCmp(obs, region)``: compare each page with the saved entry: ``s`` same frame,
  ``d`` different frame, ``n`` not present now, ``f`` present now but not when saved;
  observation = run-length string, e.g. "s4d4s8". Frame numbers themselves are never reported.
- ``Smaps(obs, region, field)``: the /proc/self/smaps field (kB) of the VMA at the region start.
- ``Vmsplice(region, off, count)``: ``count`` one-byte vmsplice() iovecs of the page at ``off``
  into pipes that stay open: ``count`` pipe buffers, each holding a plain page reference.
- ``DioFile(size)``: the ext4 file the O_DIRECT ops use is created with ``size`` zero bytes by
  write(), fsync()ed, then sync() (no writeback or journal commit is left pending).
- ``OdirectRead(obs, region, off, length)`` / ``OdirectWrite(...)``: pread() / pwrite() of
  ``length`` bytes at file offset 0 of that file opened with O_DIRECT, into / from the range;
  observation = bytes transferred or errno name.
- ``ProcessVmReadv(obs, src, src_off, length, dst, dst_off)``: process_vm_readv() on the own
  pid, remote = the src range, local = the dst range; observation = bytes read or errno name.
- ``Fork(ops)``: fork(); the child runs ``ops`` and exits, the parent waits for it and goes on.
  The child's observations are reported like the parent's; its error or unmet detail is
  prefixed ``child:``.

Every range must lie inside its region, except that a UringRegister buffer may run past the
region's end (into the PROT_NONE arena or an adjacent region). A present page whose pagemap
entry shows PFN 0 (PFNs hidden without CAP_SYS_ADMIN, v6.1 fs/proc/task_mmu.c pagemap_read)
is an error. When a case's
process has exited, the runner waits until no pin is held anywhere (its rings' asynchronous
teardown is done, v6.1 io_uring/io_uring.c io_ring_exit_work); not within 10 s → the case is
an error, so no case's pins are released inside the next one's measurement.

A count may be ``Param(name)``: the case's search variable (see probes.Search).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

Kind = Literal["anon", "hugetlb", "memfd", "tmpfs", "ramfs", "ext4"]
Sharing = Literal["private", "shared"]
Placement = Literal["apart", "adjacent"]
Advice = Literal["hugepage", "nohugepage", "dontneed"]
Prot = Literal["none", "r", "rw"]

PAGE = 4096
HPAGE = 2 << 20


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """The machine every probe assumes."""

    cpus: int = 1
    memory_mib: int = 1024
    thp: str = "madvise"
    hugepages: int = 16


GUEST = GuestConfig()


@dataclass(frozen=True, slots=True)
class Param:
    """A search variable standing for an integer."""

    name: str


Count = int | Param


@dataclass(frozen=True, slots=True)
class Map:
    region: str
    kind: Kind
    size: int
    sharing: Sharing = "private"
    placement: Placement = "apart"


@dataclass(frozen=True, slots=True)
class Touch:
    region: str
    off: int
    length: int


@dataclass(frozen=True, slots=True)
class Madvise:
    region: str
    advice: Advice
    off: int
    length: int


@dataclass(frozen=True, slots=True)
class Mprotect:
    region: str
    off: int
    length: int
    prot: Prot


@dataclass(frozen=True, slots=True)
class Drain:
    pass


@dataclass(frozen=True, slots=True)
class RequireThp:
    region: str
    off: int
    length: int


@dataclass(frozen=True, slots=True)
class PinsBegin:
    pass


@dataclass(frozen=True, slots=True)
class PinsEnd:
    obs: str


@dataclass(frozen=True, slots=True)
class PinsSettle:
    obs: str


@dataclass(frozen=True, slots=True)
class PgpgEnd:
    obs: str


@dataclass(frozen=True, slots=True)
class UringRegister:
    obs: str
    region: str
    off: int
    length: int


@dataclass(frozen=True, slots=True)
class UringUnregister:
    obs: str


@dataclass(frozen=True, slots=True)
class UringClose:
    pass


@dataclass(frozen=True, slots=True)
class PagemapSave:
    region: str


@dataclass(frozen=True, slots=True)
class PagemapCmp:
    obs: str
    region: str


@dataclass(frozen=True, slots=True)
class Smaps:
    obs: str
    region: str
    field: str


@dataclass(frozen=True, slots=True)
class Vmsplice:
    region: str
    off: int
    count: Count


@dataclass(frozen=True, slots=True)
class DioFile:
    size: int


@dataclass(frozen=True, slots=True)
class OdirectRead:
    obs: str
    region: str
    off: int
    length: int


@dataclass(frozen=True, slots=True)
class OdirectWrite:
    obs: str
    region: str
    off: int
    length: int


@dataclass(frozen=True, slots=True)
class ProcessVmReadv:
    obs: str
    src: str
    src_off: int
    length: int
    dst: str
    dst_off: int


@dataclass(frozen=True, slots=True)
class Fork:
    ops: tuple[Op, ...]


Op = (
    Map
    | Touch
    | Madvise
    | Mprotect
    | Drain
    | RequireThp
    | PinsBegin
    | PinsEnd
    | PinsSettle
    | PgpgEnd
    | UringRegister
    | UringUnregister
    | UringClose
    | PagemapSave
    | PagemapCmp
    | Smaps
    | Vmsplice
    | DioFile
    | OdirectRead
    | OdirectWrite
    | ProcessVmReadv
    | Fork
)

_NAMES: dict[type, str] = {
    Map: "map",
    Touch: "touch",
    Madvise: "madvise",
    Mprotect: "mprotect",
    Drain: "drain",
    RequireThp: "require_thp",
    PinsBegin: "pins_begin",
    PinsEnd: "pins_end",
    PinsSettle: "pins_settle",
    PgpgEnd: "pgpg_end",
    UringRegister: "uring_register",
    UringUnregister: "uring_unregister",
    UringClose: "uring_close",
    PagemapSave: "pagemap_save",
    PagemapCmp: "pagemap_cmp",
    Smaps: "smaps",
    Vmsplice: "vmsplice",
    DioFile: "dio_file",
    OdirectRead: "odirect_read",
    OdirectWrite: "odirect_write",
    ProcessVmReadv: "process_vm_readv",
}


def _token(value: object) -> str:
    """One whitespace-free token of the guest format."""
    text = f"${value.name}" if isinstance(value, Param) else str(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"op argument {value!r} is not a single token")
    return text


def encode_ops(ops: tuple[Op, ...]) -> list[str]:
    """The guest's line format: one op per line, name then the fields in declaration order."""
    lines: list[str] = []
    for op in ops:
        if isinstance(op, Fork):
            lines += ["fork", *encode_ops(op.ops), "endfork"]
            continue
        args = [_token(getattr(op, f.name)) for f in fields(op)]
        lines.append(" ".join([_NAMES[type(op)], *args]))
    return lines


def bind(ops: tuple[Op, ...], name: str, value: int) -> tuple[Op, ...]:
    """The ops with every Param(name) replaced by value."""
    out: list[Op] = []
    for op in ops:
        if isinstance(op, Fork):
            out.append(Fork(bind(op.ops, name, value)))
        elif isinstance(op, Vmsplice) and op.count == Param(name):
            out.append(Vmsplice(op.region, op.off, value))
        else:
            out.append(op)
    return tuple(out)
