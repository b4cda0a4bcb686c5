"""The arrays under the level-at-a-time search: key layout, step tables, visited runs.

A state is one signed 64-bit key: the shared id in the lowest field, then one field
per thread for its local id.  A machine's steps are tabled per (shared id, local id)
pair: the pair's row says where its steps start and how many there are, and each step
is what it adds to the two ids (or the error it raises).  Visited keys are kept as
sorted runs, each over twice the size of the next, so that adding a level and asking
which keys are new both cost a sort or a binary search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pinlab.interleave import Violation

Arr = NDArray[np.int64]
KEY_BITS = 63  # keys are signed: a step's change to a key may be negative
TABLE_CELLS = 1 << 26  # (shared id, local state) pairs of one machine's table: 256 MiB
SMALL_RUN = 1 << 12  # keys of a run merged whatever the size of the next
CHOICES = int(np.iinfo(np.int16).max)  # a child's thread and choice are kept as int16
# a machine's steps from a pair of ids: per step the new shared id, the new local id
# and the error the step raised, if any
Steps = Callable[[int, int], Sequence[tuple[int, int, Violation | None]]]


class Unsuited(Exception):
    """A search the arrays do not suit: states too wide for a key, tables too large, too
    many steps from one state, or levels too narrow to repay their fixed cost."""


@dataclass(slots=True)
class Layout:
    """Where the ids sit in a key: the shared id lowest, then one field per thread."""

    n: int
    sbits: int
    lbits: int

    def shift(self, j: int) -> int:
        """Bit offset of field ``j`` (0: shared, ``i + 1``: thread ``i``)."""
        return 0 if j == 0 else self.sbits + (j - 1) * self.lbits

    def mask(self, j: int) -> int:
        """The largest id field ``j`` holds."""
        return (1 << (self.sbits if j == 0 else self.lbits)) - 1

    def holds(self, nshared: int, nlocal: int) -> bool:
        """Whether every id so far fits its field."""
        return nshared <= 1 << self.sbits and nlocal <= 1 << self.lbits


def _bits(count: int) -> int:
    """Bits for the ids ``0 .. count - 1``."""
    return max(1, (count - 1).bit_length())


def layout(n: int, nshared: int, nlocal: int) -> Layout:
    """Fields with a bit to spare where they fit, so that growing ids rarely re-lay keys."""
    for spare in (1, 0):
        sbits, lbits = _bits(nshared) + spare, _bits(nlocal) + spare
        if sbits + n * lbits <= KEY_BITS:
            return Layout(n, sbits, lbits)
    raise Unsuited(f"a state of {n} threads needs more than {KEY_BITS} bits")


def field_of(keys: Arr, lay: Layout, j: int) -> Arr:
    """The ids in field ``j`` of these keys."""
    return (keys >> lay.shift(j)) & lay.mask(j)


def recode(keys: Arr, old: Layout, new: Layout) -> Arr:
    """The same states' keys under another layout."""
    out = np.zeros_like(keys)
    for j in range(old.n + 1):
        out |= field_of(keys, old, j) << new.shift(j)
    return out


def member(runs: list[Arr], keys: Arr) -> NDArray[np.bool_]:
    """Which of these sorted keys are in one of the sorted runs."""
    hit = np.zeros(len(keys), np.bool_)
    for run in runs:
        at = np.searchsorted(run, keys)
        inside = at < len(run)
        hit[inside] |= run[at[inside]] == keys[inside]
    return hit


def insert(runs: list[Arr], keys: Arr) -> None:
    """Add sorted new keys as a run, merging runs so that each is over twice the next
    (and small runs always: a run costs a binary search per level, small or not)."""
    runs.append(keys)
    while len(runs) > 1 and (len(runs[-2]) <= max(2 * len(runs[-1]), SMALL_RUN)):
        top = runs.pop()
        runs[-1] = np.sort(np.concatenate((runs[-1], top)))


def _grown(a: Arr, size: int, fill: int) -> Arr:
    out = np.full(size, fill, np.int64)
    out[: len(a)] = a
    return out


def _put(buf: Arr, used: int, values: list[int]) -> Arr:
    """``buf`` with ``values`` written from ``used`` on, its capacity doubled if short."""
    if used + len(values) > len(buf):
        buf = _grown(buf, max(2 * len(buf), used + len(values)), 0)
    buf[used : used + len(values)] = values
    return buf


def _empty() -> Arr:
    return np.zeros(0, np.int64)


@dataclass(slots=True)
class Table:
    """One machine's steps: the row of each pair of ids, and each row's steps.

    Local ids are numbered for all machines together, so a machine's table has a column
    only for the local states it has been met in.  ``start`` .. ``err`` are buffers of
    which the first ``nrows`` (``nsteps``) entries are used.
    """

    steps: Steps
    row: NDArray[np.int32] = field(default_factory=lambda: np.full((1, 1), -1, np.int32))
    col: Arr = field(default_factory=_empty)  # local id -> column, -1 if not met
    ncols: int = 0
    nrows: int = 0
    nsteps: int = 0
    start: Arr = field(default_factory=_empty)
    count: Arr = field(default_factory=_empty)
    dsid: Arr = field(default_factory=_empty)  # per step: what it adds to the shared id
    dlid: Arr = field(default_factory=_empty)  # ... and to the local id
    err: Arr = field(default_factory=_empty)  # ... and its index in errors, or -1


def rows(
    tab: Table, sid: Arr, lid: Arr, ids: tuple[int, int], errors: list[Violation]
) -> NDArray[np.int32]:
    """The row of each state's pair, filling rows not made yet; ``ids`` counts the ids."""
    nshared, nlocal = ids
    if len(tab.col) < nlocal:
        tab.col = _grown(tab.col, max(2 * len(tab.col), nlocal), -1)
    col = tab.col[lid]
    if (col < 0).any():
        met = np.unique(lid[col < 0])
        tab.col[met] = tab.ncols + np.arange(len(met))
        tab.ncols += len(met)
        col = tab.col[lid]
    have = tab.row.shape
    need = (max(have[0], nshared), max(have[1], tab.ncols))
    # doubled where short, so that growing is rare; exactly what is needed near the cap
    shape = tuple(h if h >= n else max(2 * h, n) for h, n in zip(have, need, strict=True))
    if shape[0] * shape[1] > TABLE_CELLS:
        shape = need
    if shape != have:
        if shape[0] * shape[1] > TABLE_CELLS:
            raise Unsuited(f"a step table of {shape[0]} x {shape[1]} pairs is too large")
        grown = np.full(shape, -1, np.int32)
        grown[: have[0], : have[1]] = tab.row
        tab.row = grown
    got = tab.row[sid, col]
    missing = got < 0
    if missing.any():
        _fill(tab, np.unique(sid[missing] << 32 | lid[missing]), errors)
        got = tab.row[sid, col]
    return got


def _fill(tab: Table, pairs: Arr, errors: list[Violation]) -> None:
    starts: list[int] = []
    counts: list[int] = []
    dsid: list[int] = []
    dlid: list[int] = []
    err: list[int] = []
    at = tab.nsteps
    for pair in pairs.tolist():
        sid, lid = pair >> 32, pair & 0xFFFFFFFF
        steps = tab.steps(sid, lid)
        if len(steps) > CHOICES:
            raise Unsuited(f"a thread has {len(steps)} enabled steps, over {CHOICES}")
        tab.row[sid, tab.col[lid]] = tab.nrows + len(starts)
        starts.append(at)
        counts.append(len(steps))
        at += len(steps)
        for nsid, nlid, e in steps:
            dsid.append(nsid - sid)
            dlid.append(nlid - lid)
            err.append(-1 if e is None else len(errors))
            if e is not None:
                errors.append(e)
    tab.start = _put(tab.start, tab.nrows, starts)
    tab.count = _put(tab.count, tab.nrows, counts)
    tab.dsid = _put(tab.dsid, tab.nsteps, dsid)
    tab.dlid = _put(tab.dlid, tab.nsteps, dlid)
    tab.err = _put(tab.err, tab.nsteps, err)
    tab.nrows += len(starts)
    tab.nsteps = at
