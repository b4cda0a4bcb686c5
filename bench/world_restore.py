"""Generator threads restored from snapshots against replayed from the start (issue 3, item 1).

The same exhaustive searches run three times side by side, in one process, with the
generator backend's three ways back to a state: ``never`` (replay the schedule prefix
from a fresh world, as the explorer first did), ``always`` (rebuild the threads from a
snapshot of the world and of every frame's yield index and locals at each branching
node) and ``auto`` (snapshot only where a restore beats a replay, both timed as the
search runs, which is the default).  Programs:

- ``kernel-pin``: threads on the v6.1 kernel model; each pins 4 faulted anonymous
  pages with pin_user_pages_fast(FOLL_WRITE) and unpins them, ``ROUNDS`` times; the
  world key is ``kernel_digest``.  Steps cost about as much as a restore, and the
  schedules grow with ``ROUNDS``: replaying a prefix grows with them, a restore not.
- ``toy-counters``: three threads updating a 4-int list; steps cost about a
  microsecond, the world almost nothing, so replaying is cheap.

State and transition counts must not depend on the way back; the script checks that.
Ends with one JSON line: per program the seconds of each policy and the speed-ups of
``auto`` and ``always`` over ``never``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Generator
from typing import Any

import pinlab.explore.world as world_backend
from pinlab.explore import GenThread, Invariant, Options, WorldProgram, explore
from pinlab.interleave import Point, Yield, run_to_completion
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.process import new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot, kernel_digest
from pinlab.kernel.uaccess import user_access

PAGES = 4
ADDR: dict[str, int] = {}


def _kernel() -> Kernel:
    """A booted 6.1 kernel with one task whose PAGES anonymous pages are faulted in."""
    k = boot("6.1", BootParams(normal_mb=8))
    task = new_task(k)
    size = PAGES << 12
    addr = run_to_completion(
        sys_mmap(k, task, None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    )
    for off in range(0, size, 4096):
        run_to_completion(user_access(k, task, addr + off, True, 1))
    ADDR["start"] = addr
    return k


def _pinner(rounds: int) -> Callable[[Kernel], Generator[Yield, None, None]]:
    def pinner(k: Kernel) -> Generator[Yield, None, None]:
        mm = next(iter(k.mms.values()))
        for _ in range(rounds):
            pages = page_array(PAGES)
            got = yield from pin_user_pages_fast(k, mm, ADDR["start"], PAGES, FOLL_WRITE, pages)
            yield Point("dma")
            yield from unpin_user_pages(k, pages, got)

    return pinner


def kernel_pin(threads: int, rounds: int) -> WorldProgram:
    """Pinning threads on the kernel model."""
    body = _pinner(rounds)
    return WorldProgram(
        "kernel-pin",
        _kernel,
        tuple(GenThread(f"pin{i}", body) for i in range(threads)),
        kernel_digest,
        invariants=(
            Invariant("refcounts positive", lambda k: bool((k.mem.refcount[1:] >= 0).all())),
        ),
        params=(("THREADS", threads), ("ROUNDS", rounds)),
    )


class Counters:
    """The toy world."""

    def __init__(self) -> None:
        self.x = [0] * 4


def _counter(me: int, steps: int) -> Callable[[Counters], Generator[Yield, None, None]]:
    def body(w: Counters) -> Generator[Yield, None, None]:
        for i in range(steps):
            v = w.x[(me + i) % 4]
            yield Point("load")
            w.x[(me + i) % 4] = (v + 1) % 3
            yield Point("store")

    return body


def toy_counters(steps: int) -> WorldProgram:
    """Three threads on a list of counters."""
    return WorldProgram(
        "toy-counters",
        Counters,
        tuple(GenThread(f"T{i}", _counter(i, steps)) for i in range(3)),
        lambda w: tuple(w.x),
        params=(("STEPS", steps),),
    )


def run(program: WorldProgram, policy: str) -> dict[str, Any]:
    """One exhaustive search with the given way back to a state."""
    world_backend.POLICY = policy
    started = time.perf_counter()
    res = explore(program, Options(shrink=False))
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "states": res.states, "transitions": res.transitions}


def main() -> None:
    """Run every program under every policy; print a table and one JSON line."""
    quick = "--quick" in sys.argv
    rounds = (2, 4) if quick else (2, 4, 8)
    programs = [
        *(kernel_pin(2, r) for r in rounds),
        kernel_pin(3, 2),
        toy_counters(3 if quick else 4),
    ]
    out: dict[str, Any] = {}
    print(f"{'program':<34}{'policy':<8}{'seconds':>9}{'states':>9}{'transitions':>13}")
    for program in programs:
        name = program.name + "".join(f" {k}={v}" for k, v in program.params)
        rows = {p: run(program, p) for p in ("never", "always", "auto")}
        for p, r in rows.items():
            print(f"{name:<34}{p:<8}{r['seconds']:>9.2f}{r['states']:>9,}{r['transitions']:>13,}")
        counts = {(r["states"], r["transitions"]) for r in rows.values()}
        never = rows["never"]["seconds"]
        out[name] = {
            **{f"{p}_seconds": r["seconds"] for p, r in rows.items()},
            "states": rows["never"]["states"],
            "counts_agree": len(counts) == 1,
            "auto_speedup": round(never / rows["auto"]["seconds"], 2),
            "always_speedup": round(never / rows["always"]["seconds"], 2),
        }
    world_backend.POLICY = "auto"
    print(
        json.dumps({"counts_agree": all(v["counts_agree"] for v in out.values()), "programs": out})
    )


if __name__ == "__main__":
    main()
