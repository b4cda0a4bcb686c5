"""Threads over the kernel model as a program the race explorer searches.

The harness, not each program, decides how finely the kernel runs: a range
operation runs page by page, with a preemption point per page, unless the thread
running it is the only one not finished — then nobody could observe the pages in
between, and it runs as one step.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from pinlab.explore.program import FinalCheck, GenThread, Invariant, Params, WorldProgram
from pinlab.interleave import Footprint
from pinlab.kernel.mm.memmap import memmap_copy
from pinlab.kernel.state import Kernel, kernel_copy, kernel_digest
from pinlab.kernel.trace import render_kernel
from pinlab.kernel.walk import state_refs


def set_granularity(k: Kernel, alone: bool) -> None:
    """Before each step: page by page unless the stepping thread runs alone."""
    k.fine_grained = not alone


def audit_step(k: Kernel) -> Callable[[Footprint, Footprint], str | None]:
    """Checked mode: record the frame-table fields a step reads and writes.

    The returned check names the first ``("page", pfn, field)`` key the step wrote
    outside its declared writes, or read outside its declared reads and writes (a
    declared ``None`` is "anything"), and any frame-table write the incremental digest
    missed (its digest no longer equals the full recomputation).
    """
    k.mem.accesses()
    k.mem.audit(True)

    def check(reads: Footprint, writes: Footprint) -> str | None:
        k.mem.audit(False)
        got_reads, got_writes = k.mem.accesses()
        if writes is not None:
            for key in sorted(got_writes - writes):
                return f"wrote {key} outside its declared writes"
        if reads is not None and writes is not None:
            for key in sorted(got_reads - reads - writes):
                return f"read {key} outside its declared reads"
        if k.mem.digest() != memmap_copy(k.mem).digest():
            return "wrote the frame table behind the incremental digest's back"
        return None

    return check


def made(make_kernel: Callable[[], Kernel]) -> Kernel:
    """A kernel from ``make_kernel``, its digest already taken, so that the cost of a
    fresh start (which the explorer weighs against a restore) includes hashing it whole."""
    k = make_kernel()
    kernel_digest(k)
    return k


def kernel_program(
    name: str,
    make_kernel: Callable[[], Kernel],
    threads: tuple[GenThread, ...],
    invariants: tuple[Invariant, ...] = (),
    finals: tuple[FinalCheck, ...] = (),
    params: Params = (),
    checked: bool = False,
) -> WorldProgram:
    """A world program over a kernel built by ``make_kernel``: the whole kernel state is
    the world, keyed by its digest, and threads' locals refer into it by identity;
    ``checked`` audits every step's footprint (:func:`audit_step`); traces and failed
    properties show the kernel as :func:`render_kernel` prints it."""
    return WorldProgram(
        name,
        partial(made, make_kernel),
        threads,
        kernel_digest,
        invariants=invariants,
        finals=finals,
        params=params,
        locate=state_refs,
        before_step=set_granularity,
        audit=audit_step if checked else None,
        render=render_kernel,
        copy_world=kernel_copy,
    )
