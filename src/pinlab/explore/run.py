"""The explorer's entry point: pick the strategy, run it, shrink what it found."""

from __future__ import annotations

import gc
import time
from dataclasses import asdict

from pinlab.explore.canon import Unfreezable
from pinlab.explore.exhaustive import Exhaustive
from pinlab.explore.options import Options, Progress
from pinlab.explore.program import Program, program_id, validate
from pinlab.explore.recorder import Recorder
from pinlab.explore.replay import make_system
from pinlab.explore.result import Result
from pinlab.explore.schedule import decode, encode
from pinlab.explore.shrink import shrink
from pinlab.explore.walk import Walk


def explore(
    program: Program, opts: Options | None = None, progress: Progress | None = None
) -> Result:
    """Explore ``program``; Ctrl-C (in the search or in shrinking) returns what was found."""
    opts = opts or Options()
    opts.validate()
    validate(program)
    exhaustive = opts.strategy in ("dfs", "bfs")
    system = make_system(program, opts.symmetry, cache=opts.cache and exhaustive)
    result = Result(
        program_id(program), opts.strategy, asdict(opts), preemption_bound=opts.preemption_bound
    )
    rec = Recorder(program, system, result, opts.count_all)
    started = time.monotonic()
    # searches allocate millions of acyclic tuples; cyclic GC passes over the growing
    # visited set would make the search quadratic
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if exhaustive:
            search = Exhaustive(system, opts, rec, progress)
            search.dfs() if opts.strategy == "dfs" else search.bfs()
        else:
            Walk(system, opts, rec, progress).run(pct=opts.strategy == "pct")
    except KeyboardInterrupt:
        result.interrupted = True
        rec.limit("interrupted")
    finally:
        if gc_was_enabled:
            gc.enable()
    reason = getattr(system, "replay_reason", None)
    if reason is not None:
        result.notes.append(f"generator threads were replayed from the start: {reason}")
    result.complete = (
        exhaustive
        and not rec.stop
        and not result.interrupted
        and not [w for w in result.limits_hit if not w.startswith("preemption bound")]
    )
    if result.complete and not rec.bounded:
        result.preemption_bound = None
    if opts.shrink and not result.interrupted:
        _shrink_all(program, result)
    result.elapsed = time.monotonic() - started
    return result


def _shrink_all(program: Program, result: Result) -> None:
    """Shrink every counterexample; Ctrl-C keeps the rest as found and marks the result."""
    try:
        for cx in result.counterexamples:
            _pid, _fp, moves = decode(cx.schedule)
            try:
                best, optimal = shrink(program, cx.kind, cx.name, moves)
            except Unfreezable as err:
                cx.shrink = f"kept as found: {err}"
                continue
            cx.shrink = "optimal" if optimal else "kept as found: not re-found within the budget"
            if best != moves:
                cx.schedule, cx.steps = encode(program, best), len(best)
    except KeyboardInterrupt:
        result.interrupted = True
        for cx in result.counterexamples:
            if cx.shrink == "off":
                cx.shrink = "kept as found: interrupted"
