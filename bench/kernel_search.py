"""Exhaustive search of small kernel races, and what it costs over running the threads.

Four fixed two-thread programs on the v6.1 kernel model, each built with
``pinlab.scenarios.harness.kernel_program`` (the whole kernel is the world, keyed by
``kernel_digest``; the harness runs a thread page by page while another is alive):

- ``pin-vs-fork``: A pins one faulted anonymous page with
  pin_user_pages_fast(FOLL_WRITE) and unpins it; B forks the task (sys_fork).
- ``pin-vs-munmap``: A pins and unpins that page; B munmaps it.
- ``writeback-vs-pin``: a one-page ext4 file, written, fsynced, mapped MAP_SHARED and
  dirtied by a store through the mapping; A writes it back (ext4_writepages through the
  fs ``writepages`` dispatch with a WB_SYNC_ALL writeback_control, then
  __filemap_fdatawait_range, as fsync waits); B pins the page with
  pin_user_pages_fast(FOLL_WRITE), stores through the mapping (standing in for the
  device) and unpins with unpin_user_pages_dirty_lock(make_dirty=True).
- ``two-faults``: two threads store to the same not-yet-faulted anonymous page.

Every program is searched exhaustively (``Options(strategy="dfs", cache=True)``) on a
kernel booted with 4 MiB and with 256 MiB of ZONE_NORMAL.  Per program and size: the
distinct states, the transitions, the seconds, states per second, and the overhead
factor: search seconds per transition divided by the seconds per step of the same
threads run straight through (round-robin, one ``next()`` a step, on a freshly made
kernel with ``fine_grained`` on, nothing recorded; median of 5 runs).  Each timed search
runs once, with the default way back to a state (``POLICY`` "auto"), after the same
program's untimed searches at 4 MiB under ``pinlab.explore.world.POLICY`` "always"
(always restore a snapshot) and "never" (always replay from a fresh world), which take
the one-time cost of rewriting the kernel's functions for restoring.

The memory size must not change the search, only (ideally not) its speed, and neither
may the way back to a state: the script checks that states and transitions are the same
at both sizes, and at 4 MiB under all three policies, and exits 1 (naming what differs
on stderr, after the tables) when they are not, when a search errs or is cut short, or
when a restoring search had to fall back to replaying.

``--quick`` runs the 4 MiB size only.  Ends with one JSON line: ``min_states_per_s``,
``memory_scaling`` (the least, over programs, of states/s at 256 MiB over states/s at
4 MiB; null with ``--quick``), ``max_overhead`` and per program and size the figures.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Generator
from functools import partial
from typing import Any

import pinlab.explore.world as world_backend
from pinlab.explore import GenThread, Options, Result, WorldProgram, explore
from pinlab.interleave import Await, Yield, run_to_completion
from pinlab.kernel.fs import LLONG_MAX, vfs_fsync, vfs_write, writepages
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages, unpin_user_pages_dirty_lock
from pinlab.kernel.mm.mmap import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.page_writeback import (
    LONG_MAX,
    WB_SYNC_ALL,
    WritebackControl,
    __filemap_fdatawait_range,
)
from pinlab.kernel.mm.types import Task, find_vma
from pinlab.kernel.process import (
    ext4_create,
    fd_install,
    fget,
    new_task,
    sys_fork,
    sys_mmap,
    sys_munmap,
)
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import kernel_program

PROFILE = "6.1"
SIZES = (4, 256)  # MiB of ZONE_NORMAL
PAGE = 4096
ADDR = 0x7F00_0000_0000  # where every program maps its one page (MAP_FIXED)
STRAIGHT_RUNS = 5
POLICIES = ("always", "never")  # checked against the default, "auto"


# --- worlds -----------------------------------------------------------------------


def _booted(normal_mb: int) -> tuple[Kernel, Task]:
    """A booted kernel and its one task, with nothing mapped."""
    k = boot(PROFILE, BootParams(normal_mb=normal_mb))
    return k, new_task(k)


def _map(k: Kernel, task: Task, flags: int, file_id: int | None = None) -> None:
    """mmap one read-write page at ADDR."""
    file = None if file_id is None else fget(k, file_id)
    got = run_to_completion(
        sys_mmap(k, task, ADDR, PAGE, PROT_READ | PROT_WRITE, flags | MAP_FIXED, file)
    )
    if got != ADDR:
        raise RuntimeError(f"mmap at {ADDR:#x} gave {got}")


def anon_kernel(normal_mb: int, faulted: bool) -> Kernel:
    """One private anonymous page at ADDR, faulted in by a store when ``faulted``."""
    k, task = _booted(normal_mb)
    _map(k, task, MAP_PRIVATE | MAP_ANONYMOUS)
    if faulted:
        run_to_completion(user_access(k, task, ADDR, True, 1))
    return k


def ext4_kernel(normal_mb: int) -> Kernel:
    """One page of an ext4 file: written, fsynced (clean), mapped shared, dirtied by a store."""
    k, task = _booted(normal_mb)
    fid = fd_install(k, ext4_create(k, 0))
    file = fget(k, fid)
    if run_to_completion(vfs_write(k, file, 0, PAGE, 0, task.cpu)) != PAGE:
        raise RuntimeError("write(2) of the ext4 file failed")
    if run_to_completion(vfs_fsync(k, file, task.cpu)):
        raise RuntimeError("fsync(2) of the ext4 file failed")
    _map(k, task, MAP_SHARED, fid)
    run_to_completion(user_access(k, task, ADDR, True, 1))
    return k


# --- thread bodies (module level: the explorer rebuilds and fingerprints them) -----


def _task(k: Kernel) -> Task:
    """The task the world was made with (forks add theirs after it)."""
    return next(iter(k.tasks.values()))


def pin_unpin(k: Kernel) -> Generator[Yield, None, None]:
    """pin_user_pages_fast(FOLL_WRITE) of the page at ADDR, then unpin_user_pages."""
    mm = k.mms[_task(k).mm]
    pages = page_array(1)
    got = yield from pin_user_pages_fast(k, mm, ADDR, 1, FOLL_WRITE, pages)
    yield from unpin_user_pages(k, pages, got)


def fork(k: Kernel) -> Generator[Yield, None, None]:
    """fork(2) of the task."""
    yield from sys_fork(k, _task(k))


def munmap(k: Kernel) -> Generator[Yield, None, None]:
    """munmap(2) of the page at ADDR."""
    yield from sys_munmap(k, _task(k), ADDR, PAGE)


def store1(k: Kernel) -> Generator[Yield, None, None]:
    """A CPU store of 1 to ADDR (faulting the page in if need be)."""
    yield from user_access(k, _task(k), ADDR, True, 1)


def store2(k: Kernel) -> Generator[Yield, None, None]:
    """A CPU store of 2 to ADDR (a body of its own: a partial could not be rebuilt from a
    snapshot, and the search would replay instead)."""
    yield from user_access(k, _task(k), ADDR, True, 2)


def writeback(k: Kernel) -> Generator[Yield, None, None]:
    """WB_SYNC_ALL ext4_writepages of the file mapped at ADDR, then wait for its writeback."""
    task = _task(k)
    vma = find_vma(k.mms[task.mm], ADDR)
    assert vma is not None and vma.vm_file is not None
    mapping = k.mappings[vma.vm_file]
    wbc = WritebackControl(WB_SYNC_ALL, LONG_MAX, 0, LLONG_MAX)
    yield from writepages(k, mapping, wbc, task.cpu)
    yield from __filemap_fdatawait_range(k, mapping, 0, LLONG_MAX, task.cpu)


def pin_dma_unpin_dirty(k: Kernel) -> Generator[Yield, None, None]:
    """Pin the page, store through the mapping as the device would, unpin and dirty it."""
    task = _task(k)
    mm = k.mms[task.mm]
    pages = page_array(1)
    got = yield from pin_user_pages_fast(k, mm, ADDR, 1, FOLL_WRITE, pages)
    if got == 1:
        yield from user_access(k, task, ADDR, True, 2)
        yield from unpin_user_pages_dirty_lock(k, pages, got, True)


Body = Callable[[Kernel], Generator[Yield, None, None]]
PROGRAMS: dict[str, tuple[Callable[[int], Kernel], tuple[tuple[str, Body], ...]]] = {
    "pin-vs-fork": (
        partial(anon_kernel, faulted=True),
        (("pin", pin_unpin), ("fork", fork)),
    ),
    "pin-vs-munmap": (
        partial(anon_kernel, faulted=True),
        (("pin", pin_unpin), ("munmap", munmap)),
    ),
    "writeback-vs-pin": (ext4_kernel, (("writeback", writeback), ("pin", pin_dma_unpin_dirty))),
    "two-faults": (
        partial(anon_kernel, faulted=False),
        (("fault1", store1), ("fault2", store2)),
    ),
}


def program(name: str, normal_mb: int) -> WorldProgram:
    """Program ``name`` over a kernel of ``normal_mb`` MiB."""
    make, threads = PROGRAMS[name]
    return kernel_program(
        name,
        partial(make, normal_mb),
        tuple(GenThread(t, body) for t, body in threads),
        params=(("MB", normal_mb),),
    )


# --- measuring --------------------------------------------------------------------


def straight_step_seconds(prog: WorldProgram) -> float:
    """Seconds per step of the threads run round-robin on a fresh kernel, nothing recorded
    (median of STRAIGHT_RUNS runs; only the stepping is timed)."""
    per_step = []
    for _ in range(STRAIGHT_RUNS):
        k = prog.make_world()
        k.fine_grained = True
        gens = [t.body(k) for t in prog.threads]
        waiting: list[Yield | None] = [None] * len(gens)
        live = list(range(len(gens)))
        steps = 0
        started = time.perf_counter()
        while live:
            moved = False
            for i in list(live):
                point = waiting[i]
                if isinstance(point, Await) and not point.ready():
                    continue
                steps += 1
                moved = True
                try:
                    waiting[i] = next(gens[i])
                except StopIteration:
                    live.remove(i)
            if not moved:
                raise RuntimeError(f"{prog.name}: straight run deadlocked")
        per_step.append((time.perf_counter() - started) / steps)
    return statistics.median(per_step)


def search(prog: WorldProgram, policy: str = "auto") -> tuple[Result, float]:
    """One exhaustive depth-first search with the state cache; its result and seconds."""
    world_backend.POLICY = policy
    try:
        started = time.perf_counter()
        res = explore(prog, Options(strategy="dfs", cache=True, shrink=False))
        return res, time.perf_counter() - started
    finally:
        world_backend.POLICY = "auto"


def check_result(res: Result, what: str, policy: str, problems: list[str]) -> None:
    """A search must run to the end, without an error in the model and on the snapshots
    (a note saying it fell back to replaying would make the policy check moot)."""
    if res.errors:
        problems.append(f"{what}: {res.errors[0]}")
    if not res.complete:
        problems.append(f"{what}: search incomplete ({', '.join(res.limits_hit) or 'stopped'})")
    if policy != "never":
        problems.extend(f"{what}: {note}" for note in res.notes if "replayed" in note)


def policy_checks(name: str, problems: list[str]) -> dict[str, tuple[int, int, float]]:
    """Program ``name`` at the smallest size searched always restoring and always
    replaying: (states, transitions, seconds) by policy.  Run before the timed searches,
    they also take the one-time cost of rewriting the kernel's functions for restoring."""
    prog = program(name, SIZES[0])
    got = {}
    for policy in POLICIES:
        res, seconds = search(prog, policy)
        check_result(res, f"{name} {SIZES[0]} MiB POLICY={policy}", policy, problems)
        got[policy] = (res.states, res.transitions, seconds)
    return got


def timed(name: str, mb: int, problems: list[str]) -> dict[str, Any]:
    """The timed search of program ``name`` at ``mb`` MiB and its straight-through steps."""
    prog = program(name, mb)
    res, seconds = search(prog)
    check_result(res, f"{name} {mb} MiB", "auto", problems)
    step = straight_step_seconds(prog)
    per_trans = seconds / max(res.transitions, 1)
    row = {
        "states": res.states,
        "transitions": res.transitions,
        "seconds": round(seconds, 3),
        "states_per_s": round(res.states / seconds, 1),
        "overhead": round(per_trans / step, 1),
    }
    verdict = "violated" if res.violated else ("unmodelled" if res.unmodelled else "holds")
    print(
        f"{name:<18}{mb:>5}{res.states:>9,}{res.transitions:>9,}{seconds:>9.2f}"
        f"{row['states_per_s']:>10,.0f}{per_trans * 1e6:>10.0f}{step * 1e6:>9.1f}"
        f"{row['overhead']:>10.1f}  {verdict}",
        flush=True,
    )
    return row


def main() -> None:
    """Search every program at every size; print two tables and one JSON line."""
    quick = "--quick" in sys.argv
    sizes = SIZES[:1] if quick else SIZES
    problems: list[str] = []
    out: dict[str, dict[str, dict[str, Any]]] = {}
    policies: dict[str, dict[str, tuple[int, int, float]]] = {}
    started = time.perf_counter()
    head = (
        f"{'program':<18}{'MiB':>5}{'states':>9}{'trans':>9}{'seconds':>9}"
        f"{'states/s':>10}{'us/trans':>10}{'us/step':>9}{'overhead':>10}  verdict"
    )
    print(head)
    print("-" * len(head))
    for name in PROGRAMS:
        policies[name] = policy_checks(name, problems)
        out[name] = {f"{mb}MiB": timed(name, mb, problems) for mb in sizes}
        rows = list(out[name].values())
        if len({(r["states"], r["transitions"]) for r in rows}) != 1:
            counts = (f"{mb}: {r['states']}/{r['transitions']}" for mb, r in out[name].items())
            problems.append(f"{name}: states/transitions differ between sizes: {', '.join(counts)}")
    print()
    print(f"{SIZES[0]} MiB, same counts as POLICY=auto:")
    print(f"{'program':<18}{'policy':<8}{'states':>9}{'trans':>9}{'seconds':>9}  same")
    for name, got in policies.items():
        want = out[name][f"{SIZES[0]}MiB"]
        for policy, (states, transitions, seconds) in got.items():
            same = (states, transitions) == (want["states"], want["transitions"])
            if not same:
                problems.append(
                    f"{name}: POLICY={policy} gives {states} states, {transitions} transitions;"
                    f" auto gives {want['states']}, {want['transitions']}"
                )
            print(
                f"{name:<18}{policy:<8}{states:>9,}{transitions:>9,}{seconds:>9.2f}"
                f"  {'yes' if same else 'NO'}"
            )
    rows = [r for by_size in out.values() for r in by_size.values()]
    scaling = None
    if not quick:
        small, big = (f"{mb}MiB" for mb in SIZES)
        scaling = round(
            min(v[big]["states_per_s"] / v[small]["states_per_s"] for v in out.values()), 3
        )
    print()
    print(f"total {time.perf_counter() - started:.1f} s", flush=True)
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "min_states_per_s": min(r["states_per_s"] for r in rows),
                "memory_scaling": scaling,
                "max_overhead": max(r["overhead"] for r in rows),
                "programs": out,
            }
        )
    )
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
