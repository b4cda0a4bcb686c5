"""Breadth-first search of a state machine a whole level at a time, on NumPy arrays.

The sequential search takes one state at a time through Python.  Here each level is
expanded at once (:mod:`arrays`): a thread's steps from a pair of ids are looked up in
a table that Python fills only for pairs not met before, children are 64-bit keys made
by adding what each step changes to the parent's key, and the new ones are found by
sorting against sorted runs of visited keys.  Children are laid out in the order the
sequential search makes them (parent, then thread, then choice) and new states keep
the order of their first appearance.  What the sequential search would record along
the way (final checks and deadlocks where a state has no step, failing steps, failing
invariants) is then taken in that same order, each check run only when the sequential
search would reach it, so levels, counts, counterexamples and the point where a search
stops are exactly those of :func:`breadth.bfs`.  Ctrl-C keeps what was recorded up to
the check it interrupted.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from functools import partial
from typing import TypeGuard

import numpy as np
from numpy.typing import NDArray

from pinlab.explore.arrays import (
    Arr,
    Layout,
    Table,
    Unsuited,
    field_of,
    insert,
    layout,
    member,
    recode,
    rows,
)
from pinlab.explore.machine import MachineSystem
from pinlab.explore.options import Options, Progress
from pinlab.explore.recorder import Recorder
from pinlab.explore.schedule import Move
from pinlab.explore.system import System
from pinlab.interleave import Violation

__all__ = ["Unsuited", "applies", "bfs"]

TERMINAL, FAILED, BAD, JUDGE = range(4)  # the kinds of what is recorded, see _walk
# a level costs some 0.1 ms whatever its size, one state at a time some 10 us a state:
# fewer than NARROW new states a level over the last NARROW_AFTER levels go back to one
# state at a time
NARROW_AFTER, NARROW = 1024, 16
Cut = tuple[int, int, bool]  # children taken, parents popped, whether a new state ends it


def applies(system: System, opts: Options) -> TypeGuard[MachineSystem]:
    """Whether this search can run on arrays (a state machine, plain search, no caps)."""
    return (
        isinstance(system, MachineSystem)
        and not system.symmetry
        and opts.cache
        and opts.preemption_bound is None
        and opts.max_states is None
        and opts.max_schedules is None
    )


class _Search:
    """One search's tables, layout and visited keys; ``par``/``tid``/``choice`` give the
    parent index and move of every state of each level after the first."""

    def __init__(self, system: MachineSystem, opts: Options, rec: Recorder) -> None:
        self.sys, self.opts, self.rec = system, opts, rec
        self.n = system.n
        # threads running one machine share its table
        tables = {c: Table(partial(system.successor_ids, c)) for c in set(system.codes)}
        self.tables = [tables[c] for c in system.codes]
        self.errors: list[Violation] = []
        self.lay: Layout = layout(self.n, *system.id_counts())
        self.runs: list[Arr] = []
        self.par: list[Arr] = []
        self.tid: list[NDArray[np.int16]] = []
        self.choice: list[NDArray[np.int16]] = []
        # per shared id, whether an invariant fails there (-1: not judged yet)
        self.bad_sid = np.full(0, -1, np.int8)

    def node(self, key: int) -> int:
        """The system's node for a key."""
        lay = self.lay
        return self.sys.node(tuple((key >> lay.shift(j)) & lay.mask(j) for j in range(self.n + 1)))

    def path(self, depth: int, j: int) -> list[Move]:
        """The moves from the root to state ``j`` of level ``depth``."""
        out: list[Move] = []
        while depth > 0:
            out.append((int(self.tid[depth - 1][j]), int(self.choice[depth - 1][j])))
            j = int(self.par[depth - 1][j])
            depth -= 1
        out.reverse()
        return out

    def relayout(self, keys: Arr) -> Arr:
        """Widen the fields when ids outgrew them; returns the level's keys re-made."""
        nshared, nlocal = self.sys.id_counts()
        if self.lay.holds(nshared, nlocal):
            return keys
        old, self.lay = self.lay, layout(self.n, nshared, nlocal)
        if self.runs:
            self.runs = [np.sort(recode(np.concatenate(self.runs), old, self.lay))]
        return recode(keys, old, self.lay)


@dataclass(slots=True)
class _Level:
    """One expanded level: its parents and their children in the sequential order."""

    keys: Arr  # the parents
    total: Arr  # children per parent
    base: Arr  # where each parent's children start
    kid: Arr  # per child: its key, thread, choice, error index (-1: none), parent
    tid: NDArray[np.int16]
    choice: NDArray[np.int16]
    err: Arr
    parent: Arr
    new_keys: Arr  # the new states, in order of first appearance, and where each appears
    new_pos: Arr
    capped: bool
    at: Cut  # how far recording got (nothing of the level is counted before it starts)


def bfs(
    system: MachineSystem,
    opts: Options,
    rec: Recorder,
    progress: Progress | None,
    deadline: float | None,
) -> None:
    """Breadth-first search of ``system``, recording into ``rec`` (see the module)."""
    root = system.root()  # numbers the start's ids, so the layout below holds them
    s, res = _Search(system, opts, rec), rec.result
    rec.add_state(root)
    for name, detail in system.invariant(root):
        rec.found("invariant", name, detail, [], (), root)
    keys = np.zeros(1, np.int64)
    for j, x in enumerate(system.start_ids()):
        keys |= x << s.lay.shift(j)
    s.runs.append(keys)
    depth, mark = 0, res.states
    while len(keys) and not rec.stop:
        if progress is not None:
            progress(res.states, res.transitions, depth)
        if deadline is not None and time.monotonic() > deadline:
            rec.limit("max-time")
            return
        lv = _expand(s, keys, depth)
        try:
            cut = _walk(s, lv, depth)
        except KeyboardInterrupt:
            _count(s, lv, lv.at, depth)
            raise
        _count(s, lv, cut, depth)
        if rec.stop:
            return
        insert(s.runs, np.sort(lv.new_keys))
        s.par.append(lv.parent[lv.new_pos])
        s.tid.append(lv.tid[lv.new_pos])
        s.choice.append(lv.choice[lv.new_pos])
        keys = lv.new_keys
        depth += 1
        if depth % NARROW_AFTER == 0 and len(keys):
            if res.states - mark < NARROW * NARROW_AFTER:
                raise Unsuited(
                    f"levels {depth - NARROW_AFTER} to {depth - 1} found only "
                    f"{res.states - mark} new states"
                )
            mark = res.states


def _expand(s: _Search, keys: Arr, depth: int) -> _Level:
    """Every child of a level, in order, and which of them are new states."""
    size, ids = len(keys), s.sys.id_counts()
    sid = field_of(keys, s.lay, 0)
    found = [
        rows(s.tables[i], sid, field_of(keys, s.lay, i + 1), ids, s.errors) for i in range(s.n)
    ]
    keys = s.relayout(keys)
    counts = np.array([s.tables[i].count[r] for i, r in enumerate(found)]).reshape(s.n, size)
    total = counts.sum(axis=0)
    capped = s.opts.max_steps is not None and depth >= s.opts.max_steps
    # a level past max-steps makes no children
    base = np.zeros(size, np.int64) if capped else np.cumsum(total) - total
    nkids = 0 if capped else int(total.sum())
    kid = np.empty(nkids, np.int64)
    tid = np.empty(nkids, np.int16)
    choice = np.empty(nkids, np.int16)
    err = np.full(nkids, -1, np.int64)
    at = base.copy()
    for i, r in enumerate(found if nkids else ()):
        tab, c = s.tables[i], counts[i]
        which = np.flatnonzero(c)
        cw = c[which]
        parent = np.repeat(which, cw)
        within = np.arange(len(parent)) - np.repeat(np.cumsum(cw) - cw, cw)
        pos = at[parent] + within
        st = tab.start[r[parent]] + within
        kid[pos] = keys[parent] + (tab.dsid[st] << s.lay.shift(0))
        kid[pos] += tab.dlid[st] << s.lay.shift(i + 1)
        tid[pos], choice[pos], err[pos] = i, within, tab.err[st]
        at += c
    parent_of = np.repeat(np.arange(size), total) if nkids else np.zeros(0, np.int64)
    ok = np.flatnonzero(err < 0)
    uniq, first = np.unique(kid[ok], return_index=True)
    fresh = ~member(s.runs, uniq)
    new_pos = ok[first[fresh]]
    order = np.argsort(new_pos, kind="stable")
    return _Level(
        keys, total, base, kid, tid, choice, err, parent_of,
        uniq[fresh][order], new_pos[order], capped, (0, 0, False),
    )  # fmt: skip


def _walk(s: _Search, lv: _Level, depth: int) -> Cut:
    """Record the level's findings in the sequential search's order; where it stopped.

    Events are (place, kind, index), the place being twice a child's position plus one,
    or twice the position of a childless parent's (empty) children.  A shared value not
    judged before is judged at its first new state in the level (JUDGE); if it fails,
    its later new states become BAD events then.  Invariants that read locals are
    judged at every new state.
    """
    rec, sys = s.rec, s.sys
    heap = [(2 * int(lv.base[p]), TERMINAL, p) for p in np.flatnonzero(lv.total == 0).tolist()]
    heap += [(2 * q + 1, FAILED, q) for q in np.flatnonzero(lv.err >= 0).tolist()]
    later: dict[int, list[int]] = {}
    if sys.invariant_reads():
        heap += _judgements(s, lv, later)
    heapq.heapify(heap)
    while heap:
        _place, kind, j = heapq.heappop(heap)
        if kind == TERMINAL:
            lv.at = int(lv.base[j]), j + 1, False
            where = s.node(int(lv.keys[j]))
            term = sys.terminal(where)
            if term is not None:
                rec.found(term[0], term[1], term[2], s.path(depth, j), term[3], where)
        elif kind == FAILED:
            p, e = int(lv.parent[j]), s.errors[int(lv.err[j])]
            lv.at = j + 1, p + 1, False
            move = (int(lv.tid[j]), int(lv.choice[j]))
            where = s.node(int(lv.keys[p]))
            rec.ended(e, [*s.path(depth, p), move], where)
        else:
            q = int(lv.new_pos[j])
            p = int(lv.parent[q])
            lv.at = q + 1, p + 1, True
            where = s.node(int(lv.new_keys[j]))
            failed = sys.invariant(where)
            if kind == JUDGE and not sys.per_state_invariants:
                shared = int(lv.new_keys[j]) & s.lay.mask(0)
                s.bad_sid[shared] = bool(failed)
                for k in later.pop(shared, []):
                    if failed:
                        heapq.heappush(heap, (2 * int(lv.new_pos[k]) + 1, BAD, k))
            move = (int(lv.tid[q]), int(lv.choice[q]))
            for name, detail in failed:
                rec.found("invariant", name, detail, [*s.path(depth, p), move], (), where)
        if rec.stop:
            return lv.at
    return len(lv.kid), len(lv.keys), False


def _judgements(s: _Search, lv: _Level, later: dict[int, list[int]]) -> list[tuple[int, int, int]]:
    """The invariant events of the new states; fills ``later`` (see :func:`_walk`)."""
    place = 2 * lv.new_pos + 1
    if s.sys.per_state_invariants:
        return [(x, JUDGE, j) for j, x in enumerate(place.tolist())]
    nshared = s.sys.id_counts()[0]
    if len(s.bad_sid) < nshared:
        grown = np.full(nshared, -1, np.int8)
        grown[: len(s.bad_sid)] = s.bad_sid
        s.bad_sid = grown
    sid = field_of(lv.new_keys, s.lay, 0)
    state = s.bad_sid[sid]
    out = [(int(place[j]), BAD, j) for j in np.flatnonzero(state == 1).tolist()]
    unjudged = np.flatnonzero(state < 0)
    by_sid = unjudged[np.argsort(sid[unjudged], kind="stable")]
    if len(by_sid):
        starts = np.flatnonzero(np.diff(sid[by_sid], prepend=-1))
        for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(by_sid)], strict=True):
            first = int(by_sid[a])
            out.append((int(place[first]), JUDGE, first))
            if b - a > 1:
                later[int(sid[first])] = by_sid[a + 1 : b].tolist()
    return out


def _count(s: _Search, lv: _Level, cut: Cut, depth: int) -> None:
    """Add what the level contributed up to ``cut`` to the counts."""
    res = s.rec.result
    taken, popped, ends_new = cut
    errors = int(np.count_nonzero(lv.err[:taken] >= 0))
    ends = int(np.count_nonzero(lv.total[:popped] == 0))
    new = int(np.searchsorted(lv.new_pos, taken))
    res.transitions += taken
    res.states += new
    res.schedules += ends + taken - new
    res.complete_schedules += errors + ends
    if lv.capped and popped > ends:
        res.schedules += popped - ends
        s.rec.limit("max-steps")
    # the sequential search notes the depth of a new state after checking it
    if new > ends_new:
        res.max_depth = max(res.max_depth, depth + 1)
