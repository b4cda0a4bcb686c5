"""The model's half of `kernel check`: the probe op list interpreted over pinlab's kernel model.

Each case runs in a fresh process of a freshly booted model kernel shaped like
the guest (memory, hugetlb pool and THP mode from the QEMU command line), and
does what probes/ops.c does in the guest, op by op (model_ops.py), through the
model's system calls.  Observations are read the way the guest reads them
(model_observe.py) and formatted as the guest formats them.  Nothing here knows
a probe's name or expected value.  The interpreter is a generator, which the
evaluator runs to completion and model_thread.py runs as one thread among others.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace

from pinlab.interleave import Point, Yield
from pinlab.kernel import process as P
from pinlab.kernel.fs.splice import pipe_file, pipe_release
from pinlab.kernel.io_uring.ring import flush_work, fput, get_file, ring_file
from pinlab.kernel.mm.pgtable import HPAGE_PMD_ORDER
from pinlab.kernel.profiles import Profile, get_profile
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.realkernel import ops as O
from pinlab.realkernel.catalog import Probe
from pinlab.realkernel.evaluator import Outcome, search_threshold
from pinlab.realkernel.model_observe import ObservationError, pins_idle, read_counters
from pinlab.realkernel.model_ops import (
    CaseError,
    Proc,
    Unmet,
    emit_pgpg,
    emit_pins,
    errname,
    op_dio_file,
    op_drain,
    op_madvise,
    op_map,
    op_mprotect,
    op_odirect,
    op_pagemap_cmp,
    op_pagemap_save,
    op_pins_settle,
    op_process_vm_readv,
    op_require_thp,
    op_smaps,
    op_touch,
    op_uring_close,
    op_uring_register,
    op_uring_unregister,
    op_vmsplice,
    run_sync,
    task_of,
)
from pinlab.realkernel.qemu import CMDLINE, MEMORY_MIB


def machine_params() -> tuple[BootParams, str]:
    """The guest's machine: QEMU's memory, `hugepages=` and `transparent_hugepage=` (qemu.py)."""
    args = dict(tok.split("=", 1) for tok in CMDLINE.split() if "=" in tok)
    hugepages = int(args.get("hugepages", "0"))
    # boot() adds the hugetlb pool on top of normal memory; the guest carves it out of its RAM
    normal_mb = MEMORY_MIB - (hugepages << HPAGE_PMD_ORDER) * 4096 // (1 << 20)
    return BootParams(normal_mb=normal_mb, hugepages_2m=hugepages), args.get(
        "transparent_hugepage", "always"
    )


def op_fork(k: Kernel, p: Proc, op: O.Fork) -> Generator[Yield, None, None]:
    """fork(); the child runs the ops and exits (dropping its ring fd); then the parent goes on.

    The child shares the parent's observations; its copies of the pipe and backing-file
    fds are not modelled (only the ring's reference count).
    """
    pid = yield from P.sys_fork(k, task_of(k, p))
    if pid < 0:
        raise CaseError(f"fork:{errname(pid)}")
    child = replace(
        p,
        pid=pid,
        regions={n: replace(r) for n, r in p.regions.items()},
        pipes=list(p.pipes),
        files=list(p.files),
    )
    if child.ring is not None:
        get_file(ring_file(k, child.ring))
    try:
        yield from run_ops(k, child, op.ops)
    except Unmet as why:
        raise Unmet(f"child:{why}") from why
    except CaseError as err:
        raise CaseError(f"child:{err}") from err
    if child.ring is not None:
        fput(k, ring_file(k, child.ring))
    yield from P.sys_exit(k, task_of(k, child))


_SYNCHRONOUS = (
    O.RequireThp,
    O.PinsBegin,
    O.PinsEnd,
    O.PgpgEnd,
    O.UringClose,
    O.PagemapSave,
    O.PagemapCmp,
    O.Smaps,
    O.DioFile,
)


def run_ops(k: Kernel, p: Proc, ops: tuple[O.Op, ...]) -> Generator[Yield, None, None]:
    """Interpret the ops in process p."""
    for op in ops:
        if isinstance(op, _SYNCHRONOUS):
            # a syscall the model runs in one step, which may read any struct page
            # (/proc) or release anything (close): its own step, footprint unknown
            yield Point(type(op).__name__)
        if isinstance(op, O.Map):
            yield from op_map(k, p, op)
        elif isinstance(op, O.Touch):
            yield from op_touch(k, p, op)
        elif isinstance(op, O.Madvise):
            yield from op_madvise(k, p, op)
        elif isinstance(op, O.Mprotect):
            yield from op_mprotect(k, p, op)
        elif isinstance(op, O.Drain):
            yield from op_drain(k, p)
        elif isinstance(op, O.RequireThp):
            op_require_thp(k, p, op)
        elif isinstance(op, O.PinsBegin):
            p.begin = read_counters(k)
        elif isinstance(op, O.PinsEnd):
            emit_pins(k, p, op.obs)
        elif isinstance(op, O.PinsSettle):
            yield from op_pins_settle(k, p, op)
        elif isinstance(op, O.PgpgEnd):
            emit_pgpg(k, p, op.obs)
        elif isinstance(op, O.UringRegister):
            yield from op_uring_register(k, p, op)
        elif isinstance(op, O.UringUnregister):
            yield from op_uring_unregister(k, p, op)
        elif isinstance(op, O.UringClose):
            op_uring_close(k, p)
        elif isinstance(op, O.PagemapSave):
            op_pagemap_save(k, p, op)
        elif isinstance(op, O.PagemapCmp):
            op_pagemap_cmp(k, p, op)
        elif isinstance(op, O.Smaps):
            op_smaps(k, p, op)
        elif isinstance(op, O.Vmsplice):
            yield from op_vmsplice(k, p, op)
        elif isinstance(op, O.DioFile):
            op_dio_file(k, p, op)
        elif isinstance(op, O.OdirectRead | O.OdirectWrite):
            yield from op_odirect(k, p, op)
        elif isinstance(op, O.ProcessVmReadv):
            yield from op_process_vm_readv(k, p, op)
        elif isinstance(op, O.Fork):
            yield from op_fork(k, p, op)


def exit_process(k: Kernel, p: Proc) -> Generator[Yield, None, None]:
    """v6.1 kernel/exit.c do_exit: exit_mm, then exit_files closes the ring (its last fput
    queues io_ring_exit_work), both ends of every pipe (free_pipe_info puts the pages) and
    the backing files."""
    yield from P.sys_exit(k, task_of(k, p))
    if p.ring is not None:
        fput(k, ring_file(k, p.ring))
        p.ring = None
    for fid in p.pipes:
        pipe = pipe_file(k, fid)
        yield from pipe_release(k, pipe, reader=True)
        yield from pipe_release(k, pipe, reader=False)
    p.pipes = []
    for fid in p.files:
        P.close_fd(k, fid)
    p.files = []


def run_case_ops(k: Kernel, p: Proc, ops: tuple[O.Op, ...]) -> Generator[Yield, None, None]:
    """The case in process p, its exit, then runner.c's fence: once the process has exited,
    no pin may be held (after the queued work has run).  Raises Unmet, CaseError or
    ObservationError as the guest's case would stop."""
    yield from run_ops(k, p, ops)
    yield from exit_process(k, p)
    yield from flush_work(k)
    if not pins_idle(k):
        raise CaseError("pins-held-after-case")


def run_case(ops: tuple[O.Op, ...], profile: Profile) -> Outcome:
    """One case in a fresh process of a freshly booted model kernel, then runner.c's fence:
    once the process has exited, no pin may be held (after the queued work has run)."""
    params, thp = machine_params()
    k = boot(profile, params)
    k.thp_enabled = thp
    proc = Proc(P.new_task(k).pid)
    try:
        run_sync(run_ops(k, proc, ops))
    except Unmet as why:
        return Outcome("unmet", {}, str(why))
    except (CaseError, ObservationError) as err:
        return Outcome("error", dict(proc.values), str(err))
    run_sync(exit_process(k, proc))
    run_sync(flush_work(k))
    if not pins_idle(k):
        return Outcome("error", {}, "pins-held-after-case")
    return Outcome("ok", dict(proc.values))


@dataclass(slots=True)
class ModelEvaluator:
    """The Evaluator backed by pinlab.kernel: every probe through the same interpreter."""

    name: str = "pinlab model"

    def evaluate(self, probe: Probe, profile: str) -> Outcome:
        """The probe's outcome in the model under `profile` (searches bisect like the guest)."""
        try:
            prof = get_profile(profile)
        except KeyError as err:
            return Outcome("error", {}, f"no model profile: {err.args[0]}")
        return search_threshold(probe, lambda ops: run_case(ops, prof))
