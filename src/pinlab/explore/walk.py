"""Sampling strategies: seeded random walk and PCT.

PCT (Burckhardt et al., ASPLOS 2010): threads get distinct random priorities d..d+n-1;
d-1 change points are drawn among the first k steps; at each step the highest-priority
enabled thread runs, and at the j-th change point the running thread drops to priority
j.  k is the longest run seen so far (the first run is a plain random walk), or
``max_steps`` if set.  A thread with several enabled transitions picks one at random.
"""

from __future__ import annotations

import random
import time
from collections.abc import Hashable
from typing import Any

from pinlab.explore.options import Options, Progress
from pinlab.explore.recorder import Recorder
from pinlab.explore.schedule import Move
from pinlab.explore.system import System

DEFAULT_MAX_STEPS = 10_000


def pct_plan(rng: random.Random, n: int, d: int, k: int) -> tuple[list[int], dict[int, int]]:
    """One PCT run's draws: each thread's starting priority, and each change point's step
    with the priority the thread running there drops to."""
    prio = list(range(d, d + n))
    rng.shuffle(prio)
    points = rng.sample(range(1, max(k, d) + 1), d - 1)
    return prio, {p: j + 1 for j, p in enumerate(points)}


class Walk:
    """Runs many seeded schedules from the initial state."""

    def __init__(
        self, system: System, opts: Options, rec: Recorder, progress: Progress | None = None
    ) -> None:
        self.sys, self.opts, self.rec, self.progress = system, opts, rec, progress
        self.rng = random.Random(opts.seed)
        self.seen: set[Hashable] = set()
        self.k = opts.max_steps or 0

    def _state(self, node: Any, path: list[Move]) -> bool:
        """Count a state and check invariants; True if the run must end."""
        key = self.sys.key(node)
        if key not in self.seen:
            self.seen.add(key)
            self.rec.add_state(key)
        bad = self.sys.invariant(node)
        for name, detail in bad:
            self.rec.found("invariant", name, detail, path, (), key)
        return bool(bad)

    def run(self, pct: bool) -> None:
        """Run schedules until a violation, a limit, or max_schedules (default 1000)."""
        opts, rec = self.opts, self.rec
        deadline = None if opts.max_time is None else time.monotonic() + opts.max_time
        runs = opts.max_schedules or 1000
        for i in range(runs):
            if rec.stop:
                return
            if deadline is not None and time.monotonic() > deadline:
                rec.limit("max-time")
                return
            self._one(pct and self.k > 0)
            rec.result.schedules += 1
            if self.progress is not None:
                self.progress(rec.result.states, rec.result.transitions, i + 1)
        rec.limit(f"max-schedules {runs}")

    def _one(self, pct: bool) -> None:
        sys, rng, n = self.sys, self.rng, self.sys.n
        limit = self.opts.max_steps or DEFAULT_MAX_STEPS
        prio: list[int] = []
        changes: dict[int, int] = {}
        if pct:
            prio, changes = pct_plan(rng, n, self.opts.pct_depth, self.k)
        node = sys.root()
        path: list[Move] = []
        if self._state(node, path):
            return
        for step in range(1, limit + 1):
            options = [(t, sys.status(node, t)[0]) for t in range(n)]
            enabled = [(t, c) for t, c in options if c > 0]
            if not enabled:
                self.rec.result.complete_schedules += 1
                term = sys.terminal(node)
                if term is not None:
                    self.rec.found(term[0], term[1], term[2], path, term[3], sys.key(node))
                break
            if pct:
                tid, count = max(enabled, key=lambda tc: prio[tc[0]])
                if step in changes:
                    prio[tid] = changes[step]
                move = (tid, rng.randrange(count))
            else:
                move = rng.choice([(t, c) for t, count in enabled for c in range(count)])
            path.append(move)
            self.rec.result.transitions += 1
            before = node
            node, err = sys.step(node, move)
            if err is not None:
                self.rec.ended(err, path, sys.key(before))
                break
            if self._state(node, path):
                break
        else:
            self.rec.limit("max-steps")
        self.rec.result.max_depth = max(self.rec.result.max_depth, len(path))
        self.k = max(self.k, len(path))
