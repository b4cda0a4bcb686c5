"""Each probe's op list as one interleavable thread over a kernel the explorer hands it.

`probe_thread(probe)` is a thread body ``body(k) -> Generator`` for
``pinlab.explore.GenThread``: it runs the probe's ops (without its bisection) in a new
process of the kernel ``k`` it is given, the process's exit and the runner's fence, as
`model.run_case` does alone.  The world is the Kernel: whatever the probe leaves in the
kernel (tasks, mms, open files, rings, pipes, queued work, bios) is in ``k``; what the
thread keeps besides (its regions, saved pagemap entries, observations) is plain data in
its generators' locals (`model_ops.Proc`), holding kernel objects by id.  The thread
returns the probe's `Outcome` (the explorer drops it; `run_to_completion` gives it).

So that a search stays small, `cap_ops` shrinks the probe first: every mapped region to
at most ``cap_pages`` pages (a THP or hugetlb region to one huge page, ranges in it to
``cap_pages`` pages), each range scaled with its region, vmsplice reference counts to
``cap_pages``.  `probe_params` is the BootParams shrunk probes need side by side (memory,
hugetlb pages), `probe_setup` the guest's configuration beyond memory (THP ``madvise``),
`probe_boot` both.  `fault_first_page` is a thread body too: a second thread of the
probe's process that writes to the probe's first page.

A thread body's every local is plain data, a kernel object found in ``k`` (Task,
MmStruct, files by id), the kernel itself or a module-level function, so that the
explorer can key (pinlab.explore.canon.freeze, with pinlab.kernel.walk.state_refs as
the program's ``locate``) and snapshot it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import replace

from pinlab.interleave import Await, Yield
from pinlab.kernel import process as P
from pinlab.kernel.mm.types import VM_EXEC, VM_READ, VM_WRITE, MmStruct, find_vma
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import UserFault, user_access
from pinlab.realkernel import ops as O
from pinlab.realkernel.catalog import Probe
from pinlab.realkernel.evaluator import Outcome
from pinlab.realkernel.model import machine_params, run_case_ops
from pinlab.realkernel.model_observe import ObservationError
from pinlab.realkernel.model_ops import CaseError, Proc, Unmet

# a thread body for pinlab.explore.GenThread that returns the probe's outcome
ProbeBody = Callable[[Kernel], Generator[Yield, None, Outcome]]

# the model kernel a probe thread assumes unless told otherwise: small, so states are cheap
NORMAL_MB = 4


# ---- shrinking a probe ----


def _walk(ops: tuple[O.Op, ...]) -> list[O.Op]:
    """Every op, those of forked children included."""
    out: list[O.Op] = []
    for op in ops:
        out.append(op)
        if isinstance(op, O.Fork):
            out += _walk(op.ops)
    return out


def _pages(nbytes: int) -> int:
    return -(-nbytes // O.PAGE)


class _Shape:
    """The regions of an op list: original and capped sizes, which are huge, and who follows
    whom adjacently."""

    def __init__(self, ops: tuple[O.Op, ...], cap_pages: int) -> None:
        every = _walk(ops)
        thp = {op.region for op in every if isinstance(op, O.Madvise) and op.advice == "hugepage"}
        self.window = cap_pages * O.PAGE
        self.size: dict[str, int] = {}
        self.cap: dict[str, int] = {}
        self.huge: set[str] = set()
        self.next: dict[str, str] = {}
        last: str | None = None
        for op in every:
            if not isinstance(op, O.Map):
                continue
            if op.kind == "hugetlb" or op.region in thp:
                cap = min(op.size, O.HPAGE)
                self.huge.add(op.region)
            else:
                cap = min(op.size, self.window)
            self.size[op.region], self.cap[op.region] = op.size, cap
            if last is not None and op.placement == "adjacent":
                self.next[last] = op.region
            last = op.region

    def start(self, region: str, x: int) -> int:
        """Byte offset ``x`` of a range start: its page scaled down, the offset in it kept."""
        size, cap = self.size[region], self.cap[region]
        if x >= size:
            return cap + x - size
        page, rest = divmod(x, O.PAGE)
        return page * _pages(cap) // _pages(size) * O.PAGE + rest

    def end(self, region: str, x: int) -> int:
        """Byte offset ``x`` of a range end: its page scaled up (within the capped region);
        past the end into an adjacent region, scaled in that one."""
        size, cap = self.size[region], self.cap[region]
        if x > size:
            follower = self.next.get(region)
            return cap + (x - size if follower is None else self.end(follower, x - size))
        page, rest = divmod(x, O.PAGE)
        return min(cap, -(-page * _pages(cap) // _pages(size)) * O.PAGE + rest)

    def range(self, region: str, off: int, length: int, whole: bool = False) -> tuple[int, int]:
        """The capped (offset, length) of a range; a non-empty range stays non-empty.

        In a huge region the range keeps at most the window's pages of it (unless
        ``whole``): from its start, or up to the region's end when it runs past it.
        """
        start, end = self.start(region, off), self.end(region, off + length)
        if length and end <= start:
            end = start + min(length, O.PAGE)
        cap = self.cap[region]
        if region in self.huge and not whole and min(end, cap) - start > self.window:
            if end > cap:
                start = cap - self.window
            else:
                end = start + self.window
        return start, end - start


def cap_ops(probe: Probe, cap_pages: int = 4) -> tuple[O.Op, ...]:
    """The probe's ops shrunk for a search: the search parameter bound to its upper end,
    every region at most ``cap_pages`` pages (a THP region, one given MADV_HUGEPAGE, or a
    hugetlb region: one huge page), each range scaled with its region (a register running
    past its region's end still does, by as much, or scaled in the adjacent region it
    runs into), vmsplice counts at most ``cap_pages``, the O_DIRECT file at most
    ``cap_pages`` pages.

    A range in a huge region keeps at most ``cap_pages`` of its pages (at its start, or
    at the region's end for one running past it): the first touch still maps the whole
    huge page, a pin still goes through the huge mapping.  MADV_HUGEPAGE keeps its whole
    range, which a THP needs.
    """
    if cap_pages < 1:
        raise ValueError(f"cap_pages must be at least 1, got {cap_pages}")
    ops = probe.ops
    if probe.search is not None:
        ops = O.bind(ops, probe.search.param, probe.search.hi)
    return _cap(ops, _Shape(ops, cap_pages), cap_pages)


def _cap(ops: tuple[O.Op, ...], shape: _Shape, cap_pages: int) -> tuple[O.Op, ...]:
    out: list[O.Op] = []
    for op in ops:
        if isinstance(op, O.Map):
            out.append(replace(op, size=shape.cap[op.region]))
        elif isinstance(op, O.Madvise):
            off, length = shape.range(op.region, op.off, op.length, whole=True)
            out.append(replace(op, off=off, length=length))
        elif isinstance(
            op,
            O.Touch | O.Mprotect | O.RequireThp | O.OdirectRead | O.OdirectWrite | O.UringRegister,
        ):
            off, length = shape.range(op.region, op.off, op.length)
            out.append(replace(op, off=off, length=length))
        elif isinstance(op, O.Vmsplice):
            count = op.count if isinstance(op.count, O.Param) else min(op.count, cap_pages)
            out.append(replace(op, off=shape.start(op.region, op.off), count=count))
        elif isinstance(op, O.ProcessVmReadv):
            src_off, src_len = shape.range(op.src, op.src_off, op.length)
            dst_off, dst_len = shape.range(op.dst, op.dst_off, op.length)
            out.append(replace(op, src_off=src_off, dst_off=dst_off, length=min(src_len, dst_len)))
        elif isinstance(op, O.DioFile):
            out.append(replace(op, size=min(op.size, cap_pages * O.PAGE)))
        elif isinstance(op, O.Fork):
            out.append(O.Fork(_cap(op.ops, shape, cap_pages)))
        else:
            out.append(op)
    return tuple(out)


# ---- the kernel a probe runs on ----


def probe_params(
    probes: Probe | Sequence[Probe], cap_pages: int = 4, normal_mb: int = NORMAL_MB
) -> BootParams:
    """The machine shrunk probes need, run side by side: ``normal_mb`` of memory (room for
    one THP and the probes' small pages) and their hugetlb pages; 2 MiB more for each
    further THP region; a probe that forks may copy each of its huge pages
    (copy_hugetlb_page_range, a pinned THP's every subpage): twice its hugetlb pages, and
    2 MiB more per THP region."""
    hugetlb = thp = 0
    for probe in [probes] if isinstance(probes, Probe) else probes:
        every = _walk(cap_ops(probe, cap_pages))
        copies = 2 if any(isinstance(op, O.Fork) for op in every) else 1
        hugetlb += copies * sum(
            -(-op.size // O.HPAGE) for op in every if isinstance(op, O.Map) and op.kind == "hugetlb"
        )
        thp += copies * len(
            {op.region for op in every if isinstance(op, O.Madvise) and op.advice == "hugepage"}
        )
    return BootParams(normal_mb=normal_mb + 2 * max(thp - 1, 0), hugepages_2m=hugetlb)


def probe_setup(k: Kernel) -> None:
    """The guest's configuration beyond memory (qemu.py's command line): THP mode."""
    k.thp_enabled = machine_params()[1]


def probe_boot(
    probes: Probe | Sequence[Probe],
    profile: str = "6.1",
    cap_pages: int = 4,
    normal_mb: int = NORMAL_MB,
) -> Kernel:
    """A freshly booted model kernel for shrunk probes (`probe_params`, `probe_setup`)."""
    k = boot(profile, probe_params(probes, cap_pages, normal_mb))
    probe_setup(k)
    return k


# ---- the threads ----


def run_probe(k: Kernel, ops: tuple[O.Op, ...]) -> Generator[Yield, None, Outcome]:
    """The case as one thread: a new process runs the ops and exits, then the runner's fence
    (queued work has run, no pin is held anywhere); the probe's outcome."""
    p = Proc(P.new_task(k).pid)
    try:
        yield from run_case_ops(k, p, ops)
    except Unmet as why:
        return Outcome("unmet", {}, str(why))
    except (CaseError, ObservationError) as err:
        return Outcome("error", dict(p.values), str(err))
    return Outcome("ok", dict(p.values))


def probe_thread(probe: Probe, cap_pages: int = 4) -> ProbeBody:
    """The probe's op list, shrunk by `cap_ops`, as a thread body over the kernel given to it
    (boot it with `probe_boot`); it returns the probe's Outcome."""
    ops = cap_ops(probe, cap_pages)

    def body(k: Kernel) -> Generator[Yield, None, Outcome]:
        return (yield from run_probe(k, ops))

    return body


_NO_ACCESS = VM_READ | VM_WRITE | VM_EXEC


def first_page(k: Kernel, mm: MmStruct) -> int | None:
    """Where ops.c op_map puts a process's first region (placed apart: two huge pages into the
    arena's first huge page boundary), if it is mapped there yet (a VMA that is not the
    PROT_NONE arena)."""
    arena = [v.vm_start for v in mm.vmas if not v.vm_flags & _NO_ACCESS]
    if not arena:
        return None
    addr = (min(arena) + O.HPAGE - 1 & ~(O.HPAGE - 1)) + 2 * O.HPAGE
    vma = find_vma(mm, addr)
    if vma is None or vma.vm_start > addr or not vma.vm_flags & _NO_ACCESS:
        return None
    return addr


def _target(k: Kernel) -> tuple[int, int] | None:
    """The first task (lowest pid) and its first region's first page, once mapped."""
    if not k.tasks:
        return None
    task = k.tasks[min(k.tasks)]
    addr = first_page(k, k.mms[task.mm])
    return None if addr is None else (task.pid, addr)


def _gone(k: Kernel) -> bool:
    """The probe's process has come and gone (an id was handed out, no task is left): boot
    hands out none."""
    return k.next_id > 1 and not k.tasks


def fault_first_page(k: Kernel) -> Generator[Yield, None, str]:
    """A thread of the probe's process (the first task): once its first region is mapped, a
    CPU store of one byte to the region's first page; "done", "signal:N", or "gone" when the
    process exited first.

    As a thread it is a user of the process's mm (mmget_not_zero ... mmput): the address
    space is torn down by whichever of the two lets go of it last.
    """
    yield Await(
        "probe's first region mapped",
        lambda: _target(k) is not None or _gone(k),
    )
    target = _target(k)
    if target is None:
        return "gone"
    pid, addr = target
    task = k.tasks[pid]
    mm = k.mms[task.mm]
    if not P.mmget_not_zero(k, mm.id):
        return "gone"
    outcome = "done"
    try:
        yield from user_access(k, task, addr, True, 1)
    except UserFault as fault:
        outcome = f"signal:{fault.signal}"
    yield from P.mmput(k, mm, task.cpu)
    return outcome
