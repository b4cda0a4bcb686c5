"""Exhaustive search: depth-first or breadth-first, with a visited-state cache, sleep
sets, symmetry (done by the system's canonical keys) and an optional preemption bound.

Sleep sets with a state cache follow Godefroid (1996, section 5.3): each cached state
keeps the sleep set it was explored with; reaching it again with a sleep set that lacks
some of those transitions explores exactly those, and the stored set shrinks to the
intersection.  Sleep sets prune transitions, never states, so every reachable state is
still visited and invariants, deadlocks and final checks are all preserved.  A sleeping
transition is named by its thread's class, the thread's local state and the choice
index, which is the same in every symmetric image of a state.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable
from typing import Any

from pinlab.explore.options import Options, Progress
from pinlab.explore.recorder import Recorder
from pinlab.explore.schedule import Move
from pinlab.explore.system import System
from pinlab.interleave import Footprint

Sig = tuple[int, Hashable, int]
Sleep = dict[Sig, tuple[Footprint, Footprint]]


def independent(r1: Footprint, w1: Footprint, r2: Footprint, w2: Footprint) -> bool:
    """Steps of two threads commute when neither writes what the other reads or writes."""
    if r1 is None or w1 is None or r2 is None or w2 is None:
        return False
    return not (w1 & r2 or w1 & w2 or w2 & r1)


class _Frame:
    __slots__ = (
        "children",
        "done",
        "enabled",
        "idx",
        "key",
        "last",
        "move",
        "node",
        "only",
        "pre",
        "sleep",
    )

    def __init__(
        self,
        node: Any,
        key: Hashable,
        move: Move | None,
        sleep: Sleep,
        last: int,
        pre: int,
        only: frozenset[Sig] | None,
    ) -> None:
        self.node, self.key, self.move, self.sleep = node, key, move, sleep
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

    def _tick(self, depth: int) -> bool:
        """Progress and limits, every so many expansions; True means stop."""
        self.expansions += 1
        if self.expansions & 1023:
            return False
        res = self.rec.result
        if self.progress is not None:
            self.progress(res.states, res.transitions, depth)
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.rec.limit("max-time")
            return True
        return False

    def _over_states(self) -> bool:
        m = self.opts.max_states
        if m is not None and self.rec.result.states >= m:
            self.rec.limit("max-states")
            return True
        return False

    def _leaf(self, complete: bool) -> None:
        res = self.rec.result
        res.schedules += 1
        if complete:
            res.complete_schedules += 1
        m = self.opts.max_schedules
        if m is not None and res.schedules >= m:
            self.rec.limit("max-schedules")
            self.rec.stop = True

    def _terminal(self, node: Any, key: Hashable, path: list[Move]) -> None:
        term = self.sys.terminal(node)
        if term is not None:
            kind, name, detail, pos = term
            self.rec.found(kind, name, detail, path, pos, self.rec.weight(key))

    def _new_state(self, node: Any, key: Hashable, path: list[Move]) -> None:
        self.rec.add_state(self.sys, key)
        bad = self.sys.invariant(node)
        if bad is not None:
            self.rec.found("invariant", bad[0], bad[1], path, (), self.rec.weight(key))

    def dfs(self) -> None:
        """Depth-first search; the stack is the current schedule."""
        sys, opts, rec = self.sys, self.opts, self.rec
        por, cache, bound = opts.por, opts.cache, opts.preemption_bound
        classes = sys.classes
        max_steps = opts.max_steps
        root = sys.root()
        rkey = sys.key(root)
        visited: dict[Hashable, Any] = {}
        seen: set[Hashable] = set()
        if cache:
            visited[rkey if bound is None else (rkey, -1)] = frozenset() if por else 0
        else:
            seen.add(rkey)
        self._new_state(root, rkey, [])
        stack = [_Frame(root, rkey, None, {}, -1, 0, None)]
        path: list[Move] = []
        while stack and not rec.stop:
            fr = stack[-1]
            if fr.children is None:
                if self._tick(len(path)) or self._over_states():
                    return
                fr.children = sys.expand(fr.node)
                if not fr.children:
                    self._leaf(True)
                    self._terminal(fr.node, fr.key, path)
                    stack.pop()
                    if path:
                        path.pop()
                    continue
                if max_steps is not None and len(path) >= max_steps:
                    rec.limit("max-steps")
                    self._leaf(False)
                    stack.pop()
                    if path:
                        path.pop()
                    continue
                if bound is not None:
                    fr.enabled = frozenset(c[0] for c in fr.children)
            children = fr.children
            if fr.idx >= len(children):
                if fr.only is None and por and not fr.done:
                    self._leaf(False)  # every enabled step was asleep
                stack.pop()
                if path:
                    path.pop()
                continue
            tid, choice, lk, reads, writes, cnode, ckey, err = children[fr.idx]
            fr.idx += 1
            sig: Sig = (classes[tid], lk, choice)
            if por and (sig in fr.sleep or (fr.only is not None and sig not in fr.only)):
                continue
            rec.result.transitions += 1
            pre = fr.pre
            if bound is not None and fr.last >= 0 and fr.last != tid and fr.last in fr.enabled:
                pre += 1
                if pre > bound:
                    rec.limit(f"preemption bound {bound}")
                    rec.bounded = True
                    continue
            path.append((tid, choice))
            if err is not None:
                rec.found("assertion", err.name, err.detail, path, (), 1)
                self._leaf(True)
                path.pop()
                if por:
                    fr.done.append((sig, reads, writes))
                continue
            csleep: Sleep = {}
            if por:
                mine = (classes[tid], lk)
                for s, (r, w) in fr.sleep.items():
                    if s[:2] != mine and independent(r, w, reads, writes):
                        csleep[s] = (r, w)
                for s, r, w in fr.done:
                    if s[:2] != mine and independent(r, w, reads, writes):
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
                            self._leaf(False)
                            path.pop()
                            continue
                        visited[vkey] = stored & csleep.keys()
                        only = missing
                    elif bound is not None and pre < old:
                        visited[vkey] = pre
                    else:
                        self._leaf(False)
                        path.pop()
                        continue
                else:
                    visited[vkey] = frozenset(csleep) if por else pre
                    self._new_state(cnode, ckey, path)
            else:
                if ckey not in seen:
                    seen.add(ckey)
                    rec.add_state(sys, ckey)
                bad = sys.invariant(cnode)
                if bad is not None:
                    rec.found("invariant", bad[0], bad[1], path, (), 1)
            rec.result.max_depth = max(rec.result.max_depth, len(path))
            stack.append(_Frame(cnode, ckey, (tid, choice), csleep, tid, pre, only))

    def bfs(self) -> None:
        """Breadth-first search: the first counterexample is a shortest one."""
        sys, opts, rec = self.sys, self.opts, self.rec
        cache, bound = opts.cache, opts.preemption_bound
        root = sys.root()
        rkey = sys.key(root)
        visited: dict[Hashable, int] = {rkey if bound is None else (rkey, -1): 0}
        seen: set[Hashable] = {rkey}
        self._new_state(root, rkey, [])
        # entries: node, preemptions, last thread, path as a linked list (parent, move)
        Link = tuple[Any, Move] | None
        queue: deque[tuple[Any, Hashable, int, int, Link, int]] = deque(
            [(root, rkey, 0, -1, None, 0)]
        )

        def unlink(link: Link) -> list[Move]:
            out: list[Move] = []
            while link is not None:
                link, move = link
                out.append(move)
            out.reverse()
            return out

        while queue and not rec.stop:
            node, key, pre0, last, link, depth = queue.popleft()
            if self._tick(depth) or self._over_states():
                return
            children = sys.expand(node)
            if not children:
                self._leaf(True)
                self._terminal(node, key, unlink(link))
                continue
            if opts.max_steps is not None and depth >= opts.max_steps:
                rec.limit("max-steps")
                self._leaf(False)
                continue
            enabled = {c[0] for c in children}
            for tid, choice, _lk, _r, _w, cnode, ckey, err in children:
                rec.result.transitions += 1
                pre = pre0
                if bound is not None and last >= 0 and last != tid and last in enabled:
                    pre += 1
                    if pre > bound:
                        rec.limit(f"preemption bound {bound}")
                        rec.bounded = True
                        continue
                clink: Link = (link, (tid, choice))
                if err is not None:
                    rec.found("assertion", err.name, err.detail, unlink(clink), (), 1)
                    self._leaf(True)
                    if rec.stop:
                        return
                    continue
                if cache:
                    vkey = ckey if bound is None else (ckey, tid)
                    old = visited.get(vkey)
                    if old is not None and (bound is None or pre >= old):
                        self._leaf(False)
                        continue
                    visited[vkey] = pre
                    if old is None:
                        self._new_state(cnode, ckey, unlink(clink))
                elif ckey not in seen:
                    seen.add(ckey)
                    rec.add_state(sys, ckey)
                    bad = sys.invariant(cnode)
                    if bad is not None:
                        rec.found("invariant", bad[0], bad[1], unlink(clink), (), 1)
                else:
                    bad = sys.invariant(cnode)
                    if bad is not None:
                        rec.found("invariant", bad[0], bad[1], unlink(clink), (), 1)
                if rec.stop:
                    return
                rec.result.max_depth = max(rec.result.max_depth, depth + 1)
                queue.append((cnode, ckey, pre, tid, clink, depth + 1))
