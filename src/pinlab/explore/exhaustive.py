"""Exhaustive search: depth-first or breadth-first, with a visited-state cache, sleep
sets, symmetry (done by the system's canonical keys) and an optional preemption bound.

Sleep sets with a state cache follow Godefroid (1996, section 5.3): each cached state
keeps the sleep set it was explored with; reaching it again with a sleep set that lacks
some of those transitions explores exactly those, and the stored set shrinks to the
intersection.  Sleep sets prune transitions, never states, so every reachable state is
still visited and invariants, deadlocks and final checks are all preserved; a failing
assertion is recorded in the state it fails from even when its step is asleep there (as
is a step ending in an unmodelled path or an error: :meth:`Recorder.ended`).

A sleeping transition is named by its thread's class, the thread's local state and the
transition's fixed index among that position's transitions, which is the same in every
symmetric image of a state.  (Not the index among the *enabled* ones: another thread can
flip a guard and shift those indices, and a step never taken would inherit a sleeping
name.)  Two steps are independent when neither writes what the other reads or writes
and no invariant reads something both write: invariants count as readers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from itertools import filterfalse
from operator import length_hint
from typing import Any

from pinlab.explore import breadth
from pinlab.explore.dependence import Reads, commute, independent
from pinlab.explore.options import Options, Progress
from pinlab.explore.recorder import Recorder
from pinlab.explore.schedule import Move
from pinlab.explore.system import Info, System
from pinlab.interleave import Footprint

Sig = tuple[int, Hashable, int]
Sleep = dict[Sig, tuple[Footprint, Footprint]]
# a state being explored by the plain search: the keys of its children still to take
# (without revisits, when uncapped), ``drawn``, nodes, moves and errors, and its key
_Open = tuple[Iterator[Any], Iterator[Any], Sequence[Any] | None, Sequence[Info], Hashable]
Seen = Callable[[Any], bool] | None


class _Frame:
    """One state on the depth-first stack: its children and sleep-set bookkeeping."""

    __slots__ = (
        "children",
        "done",
        "enabled",
        "idx",
        "key",
        "last",
        "node",
        "only",
        "pre",
        "sleep",
    )

    def __init__(
        self,
        node: Any,
        key: Hashable,
        sleep: Sleep,
        last: int,
        pre: int,
        only: frozenset[Sig] | None,
    ) -> None:
        self.node, self.key, self.sleep = node, key, sleep
        self.last, self.pre, self.only = last, pre, only
        self.children: list[Any] | None = None
        self.idx = 0
        self.done: list[tuple[Sig, Footprint, Footprint]] = []
        self.enabled: frozenset[int] = frozenset()


class Exhaustive:
    """One exhaustive search over a system."""

    def __init__(
        self, system: System, opts: Options, rec: Recorder, progress: Progress | None = None
    ) -> None:
        self.sys, self.opts, self.rec, self.progress = system, opts, rec, progress
        self.deadline = None if opts.max_time is None else time.monotonic() + opts.max_time
        self.expansions = 0
        self.inv_reads: Reads = system.invariant_reads()
        self._indep: dict[tuple[Footprint, ...], bool] = {}
        # children the plain search has counted as transitions but not taken yet
        self.untaken: Callable[[], int] = lambda: 0

    def _independent(self, r1: Footprint, w1: Footprint, r2: Footprint, w2: Footprint) -> bool:
        k = (r1, w1, r2, w2)
        got = self._indep.get(k)
        if got is None:
            got = self._indep[k] = independent(r1, w1, r2, w2) and commute(w1, w2, self.inv_reads)
        return got

    def tick(self, depth: int) -> bool:
        """Progress and limits, every so many expansions; True means stop."""
        self.expansions += 1
        if self.expansions & 1023:
            return False
        res = self.rec.result
        if self.progress is not None:
            self.progress(res.states, res.transitions - self.untaken(), depth)
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.rec.limit("max-time")
            return True
        return False

    def over_states(self) -> bool:
        m = self.opts.max_states
        if m is not None and self.rec.result.states >= m:
            self.rec.limit("max-states")
            return True
        return False

    def leaf(self, complete: bool) -> None:
        res = self.rec.result
        res.schedules += 1
        if complete:
            res.complete_schedules += 1
        m = self.opts.max_schedules
        if m is not None and res.schedules >= m:
            self.rec.limit("max-schedules")
            self.rec.stop = True

    # ``path`` makes the schedule only for what is recorded: breadth-first search keeps
    # it as a linked list, and making it for every state would be quadratic
    def terminal(self, node: Any, key: Hashable, path: Callable[[], list[Move]]) -> None:
        """Record a failing final check or a deadlock in a state without steps."""
        term = self.sys.terminal(node)
        if term is not None:
            kind, name, detail, pos = term
            self.rec.found(kind, name, detail, path(), pos, key)

    def new_state(self, node: Any, key: Hashable, path: Callable[[], list[Move]]) -> None:
        """Count a new state and record the invariants failing in it."""
        self.rec.add_state(key)
        for name, detail in self.sys.invariant(node):
            self.rec.found("invariant", name, detail, path(), (), key)

    def dfs(self) -> None:
        """Depth-first search; the stack is the current schedule."""
        sys, opts, rec = self.sys, self.opts, self.rec
        por, cache, bound = opts.por, opts.cache, opts.preemption_bound
        if cache and not por and bound is None:
            self._plain_dfs()
            return
        classes = sys.classes
        max_steps = opts.max_steps
        root = sys.root()
        rkey = sys.key(root)
        # cached state -> the sleep set it was explored with (por), or its fewest
        # preemptions (bound; keyed by (state, last thread), so it cannot count states)
        visited: dict[Hashable, Any] = {}
        counted = bound is not None or not cache
        seen: set[Hashable] = {rkey}
        if cache:
            visited[rkey if bound is None else (rkey, -1)] = frozenset() if por else 0
        self.new_state(root, rkey, list)
        stack = [_Frame(root, rkey, {}, -1, 0, None)]
        path: list[Move] = []
        while stack and not rec.stop:
            fr = stack[-1]
            if fr.children is None:
                if self.tick(len(path)) or self.over_states():
                    return
                fr.children = sys.expand(fr.node)
                if not fr.children:
                    self.leaf(True)
                    self.terminal(fr.node, fr.key, path.copy)
                    stack.pop()
                    if path:
                        path.pop()
                    continue
                if max_steps is not None and len(path) >= max_steps:
                    rec.limit("max-steps")
                    self.leaf(False)
                    stack.pop()
                    if path:
                        path.pop()
                    continue
                if bound is not None:
                    fr.enabled = frozenset(c[0] for c in fr.children)
            children = fr.children
            if fr.idx >= len(children):
                if fr.only is None and por and not fr.done:
                    self.leaf(False)  # every enabled step was asleep
                stack.pop()
                if path:
                    path.pop()
                continue
            tid, choice, tix, lk, reads, writes, cnode, ckey, err = children[fr.idx]
            fr.idx += 1
            pre = fr.pre
            if bound is not None and fr.last >= 0 and fr.last != tid and fr.last in fr.enabled:
                pre += 1
                if pre > bound:
                    rec.limit(f"preemption bound {bound}")
                    rec.bounded = True
                    continue
            sig: Sig = (classes[tid], lk, tix)
            asleep = por and (sig in fr.sleep or (fr.only is not None and sig not in fr.only))
            if err is not None:
                # a failing step belongs to the state it fails in, so it is recorded
                # whatever the sleep set says (the count is per state)
                path.append((tid, choice))
                rec.ended(err, path, fr.key)
                path.pop()
                if not asleep:
                    rec.result.transitions += 1
                    self.leaf(True)
                    if por:
                        fr.done.append((sig, reads, writes))
                continue
            if asleep:
                continue
            rec.result.transitions += 1
            path.append((tid, choice))
            csleep: Sleep = {}
            if por:
                mine = (classes[tid], lk)
                indep = self._independent
                for s, (r, w) in fr.sleep.items():
                    if s[:2] != mine and indep(r, w, reads, writes):
                        csleep[s] = (r, w)
                for s, r, w in fr.done:
                    if s[:2] != mine and indep(r, w, reads, writes):
                        csleep[s] = (r, w)
                fr.done.append((sig, reads, writes))
            only: frozenset[Sig] | None = None
            if cache:
                vkey = ckey if bound is None else (ckey, tid)
                old = visited.get(vkey)
                if old is not None:
                    if por:
                        stored: frozenset[Sig] = old
                        missing = stored - csleep.keys()
                        if not missing:
                            self.leaf(False)
                            path.pop()
                            continue
                        visited[vkey] = stored & csleep.keys()
                        only = missing
                    elif bound is not None and pre < old:
                        visited[vkey] = pre
                    else:
                        self.leaf(False)
                        path.pop()
                        continue
                else:
                    visited[vkey] = frozenset(csleep) if por else pre
                    if not counted:
                        self.new_state(cnode, ckey, path.copy)
            if counted and ckey not in seen:
                seen.add(ckey)
                self.new_state(cnode, ckey, path.copy)
            rec.result.max_depth = max(rec.result.max_depth, len(path))
            stack.append(_Frame(cnode, ckey, csleep, tid, pre, only))

    def _open(self, node: Any, key: Hashable, path: list[Move], seen: Seen) -> _Open | None:
        """The children of a state about to be entered, or None when it is a leaf."""
        keys, drawn, nodes, infos = self.sys.successors(node)
        if not infos:
            self.leaf(True)
            self.terminal(node, key, path.copy)
            return None
        if self.opts.max_steps is not None and len(path) >= self.opts.max_steps:
            self.rec.limit("max-steps")
            self.leaf(False)
            return None
        # each child counts as a transition now; the search takes back those never taken
        self.rec.result.transitions += len(infos)
        return keys if seen is None else filterfalse(seen, keys), drawn, nodes, infos, key

    def _plain_dfs(self) -> None:
        """:meth:`dfs` with the cache and no sleep sets or bound: the same search in the
        same order with the same counts, without their bookkeeping (the common case)."""
        sys, rec, res = self.sys, self.rec, self.rec.result
        add_state, invariant, found, ended = rec.add_state, sys.invariant, rec.found, rec.ended
        capped = self.opts.max_schedules is not None
        limited = self.opts.max_states is not None
        root = sys.root()
        rkey = sys.key(root)
        visited = {rkey}
        self.new_state(root, rkey, list)
        path: list[Move] = []
        if self.tick(0) or self.over_states():
            return
        # uncapped, a revisit is only counted (at the end), so the frames skip them in C
        seen = None if capped else visited.__contains__
        before = res.transitions
        first = self._open(root, rkey, path, seen)
        stack = [] if first is None else [first]
        # per frame below the top, its children left (fixed until it is the top again)
        hints: list[int] = []
        below = [0]
        self.untaken = lambda: below[0] + (length_hint(stack[-1][1]) if stack else 0)
        failed = 0
        try:
            while stack and not rec.stop:
                todo, drawn, nodes, infos, key = stack[-1]
                for ckey in todo:
                    # revisits come here only when capped (a failed step has no key)
                    if ckey in visited:
                        self.leaf(False)
                        if rec.stop:
                            return
                        continue
                    j = len(infos) - length_hint(drawn) - 1
                    move, err = infos[j]
                    if err is not None:
                        failed += 1
                        path.append(move)
                        ended(err, path, key)
                        path.pop()
                        self.leaf(True)
                        if rec.stop:
                            return
                        continue
                    visited.add(ckey)
                    path.append(move)
                    cnode = ckey if nodes is None else nodes[j]
                    add_state(ckey)
                    for name, detail in invariant(cnode):
                        found("invariant", name, detail, path, (), ckey)
                    if len(path) > res.max_depth:
                        res.max_depth = len(path)
                    if rec.stop or self.tick(len(path)) or (limited and self.over_states()):
                        return
                    child = self._open(cnode, ckey, path, seen)
                    if child is None:
                        path.pop()
                        if rec.stop:
                            return
                        continue
                    hints.append(length_hint(drawn))
                    below[0] += hints[-1]
                    stack.append(child)
                    break
                else:
                    stack.pop()
                    if hints:
                        below[0] -= hints.pop()
                    if path:
                        path.pop()
        finally:
            # children never reached are no transitions; uncapped, each revisit is one
            # schedule: the children taken less new states and failed steps
            res.transitions -= sum(length_hint(f[1]) for f in stack)
            if not capped:
                res.schedules += res.transitions - before - (len(visited) - 1) - failed

    def bfs(self) -> None:
        """Breadth-first search: the first counterexample is a shortest one."""
        from pinlab.explore import levels  # NumPy's import, for breadth-first search only

        if levels.applies(self.sys, self.opts):
            try:
                levels.bfs(self.sys, self.opts, self.rec, self.progress, self.deadline)
                return
            except levels.Unsuited as why:
                self.rec.restart()
                self.rec.result.notes.append(
                    f"breadth-first search took one state at a time: {why}"
                )
        breadth.bfs(self)
