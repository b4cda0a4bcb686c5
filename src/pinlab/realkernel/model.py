"""The model's half of `kernel check`: the probe op list interpreted over pinlab's kernel model.

Each case runs in a fresh process of a freshly booted model kernel shaped like
the guest (memory, hugetlb pool and THP mode from the QEMU command line), and
does what probes/ops.c does in the guest, op by op (model_ops.py), through the
model's system calls.  Observations are read the way the guest reads them
(model_observe.py) and formatted as the guest formats them.  Nothing here knows
a probe's name or expected value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pinlab.kernel import process as P
from pinlab.kernel.fs.splice import pipe_release
from pinlab.kernel.io_uring.ring import flush_work, fput, get_file
from pinlab.kernel.mm.pgtable import HPAGE_PMD_ORDER
from pinlab.kernel.profiles import Profile, get_profile
from pinlab.kernel.state import BootParams, boot
from pinlab.realkernel import ops as O
from pinlab.realkernel.catalog import Probe
from pinlab.realkernel.evaluator import Outcome, search_threshold
from pinlab.realkernel.model_observe import (
    ObservationError,
    pagemap_entries,
    pins_idle,
    read_counters,
    smaps_field,
)
from pinlab.realkernel.model_ops import (
    CaseError,
    Machine,
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
    op_process_vm_readv,
    op_require_thp,
    op_touch,
    op_uring_close,
    op_uring_register,
    op_uring_unregister,
    op_vmsplice,
    region_of,
    run_sync,
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


def op_fork(m: Machine, p: Proc, op: O.Fork) -> None:
    """fork(); the child runs the ops and exits (dropping its ring fd); then the parent goes on."""
    pid = run_sync(P.sys_fork(m.k, p.task))
    if pid < 0:
        raise CaseError(f"fork:{errname(pid)}")
    child = replace(
        p,
        task=m.k.tasks[pid],
        regions={n: replace(r) for n, r in p.regions.items()},
        pipes=list(p.pipes),
    )
    if child.ring is not None:
        get_file(child.ring)
    try:
        run_ops(m, child, op.ops)
    except Unmet as why:
        raise Unmet(f"child:{why}") from why
    except CaseError as err:
        raise CaseError(f"child:{err}") from err
    if child.ring is not None:
        fput(m.k, child.ring, m.wq)
    run_sync(P.sys_exit(m.k, child.task))


def run_ops(m: Machine, p: Proc, ops: tuple[O.Op, ...]) -> None:
    """Interpret the ops in process p."""
    for op in ops:
        if isinstance(op, O.Map):
            op_map(m, p, op)
        elif isinstance(op, O.Touch):
            op_touch(m, p, op)
        elif isinstance(op, O.Madvise):
            op_madvise(m, p, op)
        elif isinstance(op, O.Mprotect):
            op_mprotect(m, p, op)
        elif isinstance(op, O.Drain):
            op_drain(m, p)
        elif isinstance(op, O.RequireThp):
            op_require_thp(m, p, op)
        elif isinstance(op, O.PinsBegin):
            p.begin = read_counters(m.k)
        elif isinstance(op, O.PinsEnd):
            emit_pins(m, p, op.obs)
        elif isinstance(op, O.PinsSettle):
            run_sync(flush_work(m.k, m.wq))
            if not pins_idle(m.k):
                raise CaseError("pins-settle:ETIMEDOUT")
            emit_pins(m, p, op.obs)
        elif isinstance(op, O.PgpgEnd):
            emit_pgpg(m, p, op.obs)
        elif isinstance(op, O.UringRegister):
            op_uring_register(m, p, op)
        elif isinstance(op, O.UringUnregister):
            op_uring_unregister(m, p, op)
        elif isinstance(op, O.UringClose):
            op_uring_close(m, p)
        elif isinstance(op, O.PagemapSave):
            r = region_of(p, op.region)
            r.saved = pagemap_entries(m.k, p.task, r.addr, r.size)
        elif isinstance(op, O.PagemapCmp):
            op_pagemap_cmp(m, p, op)
        elif isinstance(op, O.Smaps):
            r = region_of(p, op.region)
            m.values[op.obs] = str(smaps_field(m.k, p.task, r.addr, op.field))
        elif isinstance(op, O.Vmsplice):
            op_vmsplice(m, p, op)
        elif isinstance(op, O.DioFile):
            op_dio_file(m, p, op)
        elif isinstance(op, O.OdirectRead | O.OdirectWrite):
            op_odirect(m, p, op)
        elif isinstance(op, O.ProcessVmReadv):
            op_process_vm_readv(m, p, op)
        elif isinstance(op, O.Fork):
            op_fork(m, p, op)


def exit_process(m: Machine, p: Proc) -> None:
    """v6.1 kernel/exit.c do_exit: exit_mm, then exit_files closes the ring (its last fput
    queues io_ring_exit_work) and both ends of every pipe (free_pipe_info puts the pages)."""
    run_sync(P.sys_exit(m.k, p.task))
    if p.ring is not None:
        fput(m.k, p.ring, m.wq)
        p.ring = None
    for pipe in p.pipes:
        run_sync(pipe_release(m.k, pipe, reader=True))
        run_sync(pipe_release(m.k, pipe, reader=False))


def run_case(ops: tuple[O.Op, ...], profile: Profile) -> Outcome:
    """One case in a fresh process of a freshly booted model kernel, then runner.c's fence:
    once the process has exited, no pin may be held (after the queued work has run)."""
    params, thp = machine_params()
    k = boot(profile, params)
    k.thp_enabled = thp
    m = Machine(k)
    proc = Proc(P.new_task(k))
    try:
        run_ops(m, proc, ops)
    except Unmet as why:
        return Outcome("unmet", {}, str(why))
    except (CaseError, ObservationError) as err:
        return Outcome("error", dict(m.values), str(err))
    exit_process(m, proc)
    run_sync(flush_work(k, m.wq))
    if not pins_idle(k):
        return Outcome("error", {}, "pins-held-after-case")
    return Outcome("ok", dict(m.values))


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
