"""Breadth-first search of a state machine a whole level at a time, on NumPy arrays.

The sequential search takes one state at a time through Python.  Here each level is
expanded at once: a thread's steps from a (shared id, local id) pair are looked up in a
table that Python fills only for pairs not met before, children are 64-bit keys made by
adding what each step changes to the parent's key, and the new ones are found by sorting
against sorted runs of visited keys.  Children are laid out in the order the sequential
search makes them (parent, then thread, then choice) and new states keep the order of
their first appearance, so levels, counts, counterexamples and the point where a search
stops are exactly those of :meth:`Exhaustive.bfs` one state at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypeGuard

import numpy as np
from numpy.typing import NDArray

from pinlab.explore.machine import MachineSystem
from pinlab.explore.options import Options, Progress
from pinlab.explore.recorder import Recorder
from pinlab.explore.schedule import Move
from pinlab.explore.system import System
from pinlab.interleave import Violation

Arr = NDArray[np.int64]
KEY_BITS = 63  # keys are signed 64-bit: a step's change to a key may be negative
TABLE_CELLS = 1 << 26  # one machine's (shared id, local id) table, at most 512 MiB
CHOICES = np.iinfo(np.int16).max  # a child's thread and choice are kept as int16


class Overflow(Exception):
    """The states do not fit the arrays: keys too wide, or step tables too large."""


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


@dataclass(slots=True)
class _Table:
    """One machine's steps: the row of each (shared id, local id) pair, each row's steps."""

    row: Arr = field(default_factory=lambda: np.full((1, 1), -1, np.int64))
    start: Arr = field(default_factory=lambda: np.zeros(0, np.int64))
    count: Arr = field(default_factory=lambda: np.zeros(0, np.int64))
    # per step: what it adds to the shared id and to the local id, and its error or -1
    dsid: Arr = field(default_factory=lambda: np.zeros(0, np.int64))
    dlid: Arr = field(default_factory=lambda: np.zeros(0, np.int64))
    err: Arr = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass(slots=True)
class _Layout:
    """Where the ids sit in a key: the shared id lowest, then one field per thread."""

    n: int
    sbits: int
    lbits: int

    def shift(self, j: int) -> int:
        """Bit offset of field ``j`` (0: shared, ``i + 1``: thread ``i``)."""
        return 0 if j == 0 else self.sbits + (j - 1) * self.lbits

    def holds(self, nshared: int, nlocal: int) -> bool:
        """Whether every id so far fits its field."""
        return nshared <= 1 << self.sbits and nlocal <= 1 << self.lbits


def _layout(n: int, nshared: int, nlocal: int) -> _Layout:
    """Fields with a bit to spare, so that ids growing rarely force a new layout."""
    for spare in (1, 0):
        sbits, lbits = nshared.bit_length() + spare, nlocal.bit_length() + spare
        if sbits + n * lbits <= KEY_BITS:
            return _Layout(n, sbits, lbits)
    raise Overflow(f"a state of {n} threads needs more than {KEY_BITS} bits")


def _field(keys: Arr, lay: _Layout, j: int) -> Arr:
    bits = lay.sbits if j == 0 else lay.lbits
    return (keys >> lay.shift(j)) & ((1 << bits) - 1)


def _recode(keys: Arr, old: _Layout, new: _Layout) -> Arr:
    """The same states' keys under another layout."""
    out = np.zeros_like(keys)
    for j in range(old.n + 1):
        out |= _field(keys, old, j) << new.shift(j)
    return out


def _member(runs: list[Arr], keys: Arr) -> NDArray[np.bool_]:
    """Which of these sorted keys are in one of the sorted runs."""
    hit = np.zeros(len(keys), np.bool_)
    for run in runs:
        at = np.searchsorted(run, keys)
        inside = at < len(run)
        hit[inside] |= run[at[inside]] == keys[inside]
    return hit


def _insert(runs: list[Arr], keys: Arr) -> None:
    """Add sorted new keys as a run, merging runs so that each is over twice the next."""
    runs.append(keys)
    while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
        top = runs.pop()
        runs[-1] = np.sort(np.concatenate((runs[-1], top)))


class _Search:
    """One breadth-first search; ``par``/``tid``/``choice`` give each level's parents."""

    def __init__(self, system: MachineSystem, opts: Options, rec: Recorder) -> None:
        self.sys, self.opts, self.rec = system, opts, rec
        self.n = system.n
        first = sorted(set(system.codes))
        self.tables = {c: _Table() for c in first}
        self.errors: list[Violation] = []
        self.lay = _layout(self.n, *system.id_counts())
        self.runs: list[Arr] = []
        self.par: list[Arr] = []
        self.tid: list[NDArray[np.int16]] = []
        self.choice: list[NDArray[np.int16]] = []
        # per shared id, whether an invariant fails there (-1: not judged yet)
        self.bad_sid = np.full(0, -1, np.int8)

    def node(self, key: int) -> int:
        """The system's node for a key."""
        k = np.array([key], np.int64)
        return self.sys.node(tuple(int(_field(k, self.lay, j)[0]) for j in range(self.n + 1)))

    def path(self, depth: int, j: int) -> list[Move]:
        """The moves from the root to state ``j`` of level ``depth``."""
        out: list[Move] = []
        while depth > 0:
            out.append((int(self.tid[depth - 1][j]), int(self.choice[depth - 1][j])))
            j = int(self.par[depth - 1][j])
            depth -= 1
        out.reverse()
        return out

    def rows(self, i: int, sid: Arr, lid: Arr) -> tuple[_Table, Arr]:
        """Thread ``i``'s table and the row of every state, filling rows not made yet."""
        tab = self.tables[self.sys.codes[i]]
        nshared, nlocal = self.sys.id_counts()
        if tab.row.shape[0] < nshared or tab.row.shape[1] < nlocal:
            shape = (max(2 * tab.row.shape[0], nshared), max(2 * tab.row.shape[1], nlocal))
            if shape[0] * shape[1] > TABLE_CELLS:
                raise Overflow(f"a step table of {shape[0]} x {shape[1]} pairs is too large")
            grown = np.full(shape, -1, np.int64)
            grown[: tab.row.shape[0], : tab.row.shape[1]] = tab.row
            tab.row = grown
        got = tab.row[sid, lid]
        missing = got < 0
        if missing.any():
            self._fill(i, tab, np.unique(sid[missing] << 32 | lid[missing]))
            got = tab.row[sid, lid]
        return tab, got

    def _fill(self, i: int, tab: _Table, pairs: Arr) -> None:
        starts, counts, dsid, dlid, err = [], [], [], [], []
        at, nrows = len(tab.dsid), len(tab.count)
        for r, pair in enumerate(pairs.tolist()):
            sid, lid = pair >> 32, pair & 0xFFFFFFFF
            steps = self.sys.successor_ids(i, sid, lid)
            if len(steps) > CHOICES:
                raise Overflow(f"a thread has {len(steps)} enabled steps, over {CHOICES}")
            tab.row[sid, lid] = nrows + r
            starts.append(at)
            counts.append(len(steps))
            at += len(steps)
            for nsid, nlid, e in steps:
                dsid.append(nsid - sid)
                dlid.append(nlid - lid)
                if e is None:
                    err.append(-1)
                else:
                    err.append(len(self.errors))
                    self.errors.append(e)
        tab.start = np.concatenate((tab.start, np.array(starts, np.int64)))
        tab.count = np.concatenate((tab.count, np.array(counts, np.int64)))
        tab.dsid = np.concatenate((tab.dsid, np.array(dsid, np.int64)))
        tab.dlid = np.concatenate((tab.dlid, np.array(dlid, np.int64)))
        tab.err = np.concatenate((tab.err, np.array(err, np.int64)))

    def relayout(self, keys: Arr) -> Arr:
        """Widen the fields when ids outgrew them; returns the level's keys re-made."""
        nshared, nlocal = self.sys.id_counts()
        if self.lay.holds(nshared, nlocal):
            return keys
        old, self.lay = self.lay, _layout(self.n, nshared, nlocal)
        if self.runs:
            self.runs = [np.sort(_recode(np.concatenate(self.runs), old, self.lay))]
        return _recode(keys, old, self.lay)

    def judge(self, keys: Arr) -> NDArray[np.bool_]:
        """Which of these new states fail an invariant."""
        if not self.sys.invariant_reads():
            return np.zeros(len(keys), np.bool_)
        if self.sys.per_state_invariants:
            judged = [bool(self.sys.invariant(self.node(k))) for k in keys.tolist()]
            return np.array(judged, np.bool_)
        sid = _field(keys, self.lay, 0)
        if len(self.bad_sid) < self.sys.id_counts()[0]:
            grown = np.full(self.sys.id_counts()[0], -1, np.int8)
            grown[: len(self.bad_sid)] = self.bad_sid
            self.bad_sid = grown
        open_ = self.bad_sid[sid] < 0
        unjudged, first = np.unique(sid[open_], return_index=True)
        for x, k in zip(unjudged.tolist(), keys[open_][first].tolist(), strict=True):
            self.bad_sid[x] = bool(self.sys.invariant(self.node(k)))
        failing: NDArray[np.bool_] = self.bad_sid[sid] == 1
        return failing


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
    depth = 0
    while len(keys) and not rec.stop:
        if progress is not None:
            progress(res.states, res.transitions, depth)
        if deadline is not None and time.monotonic() > deadline:
            rec.limit("max-time")
            return
        keys = _level(s, keys, depth)
        depth += 1


def _level(s: _Search, keys: Arr, depth: int) -> Arr:
    """Expand one level; returns the next (empty when the search stopped)."""
    rec, res, sys, n = s.rec, s.rec.result, s.sys, s.n
    size = len(keys)
    sid = _field(keys, s.lay, 0)
    found = [s.rows(i, sid, _field(keys, s.lay, i + 1)) for i in range(n)]
    keys = s.relayout(keys)
    counts = np.array([tab.count[r] for tab, r in found]).reshape(n, size)
    total = counts.sum(axis=0)
    capped = s.opts.max_steps is not None and depth >= s.opts.max_steps
    # where each parent's children start (a level past max-steps makes none)
    base = np.zeros(size, np.int64) if capped else np.cumsum(total) - total
    nkids = 0 if capped else int(total.sum())
    kid = np.empty(nkids, np.int64)
    tid = np.empty(nkids, np.int16)
    choice = np.empty(nkids, np.int16)
    err = np.full(nkids, -1, np.int64)
    if nkids:
        at = base.copy()
        for i, (tab, r) in enumerate(found):
            c = counts[i]
            which = np.flatnonzero(c)
            cw = c[which]
            m = int(cw.sum())
            if m:
                parent = np.repeat(which, cw)
                within = np.arange(m) - np.repeat(np.cumsum(cw) - cw, cw)
                pos = at[parent] + within
                st = tab.start[r[parent]] + within
                kid[pos] = keys[parent] + (tab.dsid[st] << s.lay.shift(0))
                kid[pos] += tab.dlid[st] << s.lay.shift(i + 1)
                tid[pos], choice[pos], err[pos] = i, within, tab.err[st]
            at += c
    parent_of = np.repeat(np.arange(size), total)
    ok = np.flatnonzero(err < 0)
    uniq, first = np.unique(kid[ok], return_index=True)
    fresh = ~_member(s.runs, uniq)
    new_pos = ok[first[fresh]]
    order = np.argsort(new_pos, kind="stable")
    new_keys, new_pos = uniq[fresh][order], new_pos[order]
    bad = s.judge(new_keys)
    # what the sequential search records, in its order: (place, kind, index)
    events: list[tuple[int, int, int]] = []
    for p in np.flatnonzero(total == 0).tolist():
        events.append((2 * int(base[p]), 0, p))
    events += [(2 * q + 1, 1, q) for q in np.flatnonzero(err >= 0).tolist()]
    events += [(2 * int(new_pos[j]) + 1, 2, j) for j in np.flatnonzero(bad).tolist()]
    events.sort()
    taken, popped, stopped_new = nkids, size, 0
    for _place, kind, j in events:
        if kind == 0:
            where = s.node(int(keys[j]))
            term = sys.terminal(where)
            if term is not None:
                rec.found(term[0], term[1], term[2], s.path(depth, j), term[3], where)
            cut = int(base[j]), j + 1
        elif kind == 1:
            p, e = int(parent_of[j]), s.errors[int(err[j])]
            move = (int(tid[j]), int(choice[j]))
            where = s.node(int(keys[p]))
            rec.found("assertion", e.name, e.detail, [*s.path(depth, p), move], (), where)
            cut = j + 1, p + 1
        else:
            q = int(new_pos[j])
            p, move = int(parent_of[q]), (int(tid[q]), int(choice[q]))
            where = s.node(int(new_keys[j]))
            for name, detail in sys.invariant(where):
                rec.found("invariant", name, detail, [*s.path(depth, p), move], (), where)
            cut = q + 1, p + 1
        if rec.stop:
            (taken, popped), stopped_new = cut, kind == 2
            break
    errors = int(np.count_nonzero(err[:taken] >= 0))
    ends = int(np.count_nonzero(total[:popped] == 0))
    new = int(np.searchsorted(new_pos, taken))
    res.transitions += taken
    res.states += new
    res.schedules += errors + ends + (taken - errors - new)
    res.complete_schedules += errors + ends
    if capped and popped > ends:
        res.schedules += popped - ends
        rec.limit("max-steps")
    if new > stopped_new:
        res.max_depth = max(res.max_depth, depth + 1)
    if rec.stop:
        return keys[:0]
    _insert(s.runs, np.sort(new_keys))
    s.par.append(parent_of[new_pos])
    s.tid.append(tid[new_pos])
    s.choice.append(choice[new_pos])
    return new_keys
