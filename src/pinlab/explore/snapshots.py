"""A run of generator threads, and snapshots of it to come back to.

A snapshot is a copy of the world and of every thread's frames (:mod:`resume`:
function, yield index and live locals of each frame), packed by pickle; rebuilding a
run from one restores the threads without replaying their steps.  The store keeps
snapshots least recently used first, evicted past ``SNAPSHOT_BYTES``; nodes refer to
them only weakly, so that a search's queue does not keep them alive.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from pinlab.explore.resume import NotResumable, Packed, capture, pack, rebuild, unpack
from pinlab.explore.schedule import Move
from pinlab.interleave import Yield

Path = tuple[Move, ...]
Body = Callable[[Any], Generator[Yield, None, object]]
SNAPSHOT_BYTES = 256 << 20  # the least recently used snapshots go first past this much


class _Start:
    """Pending marker of a thread that has not run its first step."""


class _Done:
    """Pending marker of a thread that returned or failed."""


START, DONE = _Start(), _Done()


@dataclass(slots=True)
class Run:
    """The world, a generator per thread (None once restored as finished), what each
    thread yielded last, the moves that led here, and the threads whose last yielded
    footprint another thread's step may have made stale (a restore yields afresh)."""

    world: Any
    gens: list[Any]
    pending: list[Yield | _Start | _Done]
    path: list[Move] = field(default_factory=list)
    stale: set[int] = field(default_factory=set)


@dataclass(slots=True, weakref_slot=True)
class Snapshot:
    """A run's path and its packed copy: the world and, per thread, "start", "done" or
    its frames (:class:`resume.Chain`)."""

    path: Path
    packed: Packed


Anchor = weakref.ReferenceType[Snapshot] | None


class CannotCopy(Exception):
    """A run that cannot be snapshotted; the message says which thread or object."""


def take(run: Run, names: tuple[str, ...], bodies: tuple[Body, ...]) -> Snapshot:
    """A snapshot of ``run``; ``bodies`` are the threads' functions as written."""
    threads: list[Any] = []
    for i, p in enumerate(run.pending):
        if p is START or p is DONE:
            threads.append("start" if p is START else "done")
            continue
        try:
            threads.append(capture(run.gens[i], bodies[i]))
        except NotResumable as err:
            raise CannotCopy(f"thread {names[i]}: {err}") from None
    try:
        packed = pack((run.world, threads))
    except Exception as err:  # pickling raises whatever an object's reduction raises
        raise CannotCopy(f"cannot copy the world and the threads' locals: {err}") from None
    return Snapshot(tuple(run.path), packed)


def restore(snap: Snapshot, bodies: tuple[Body, ...]) -> Run:
    """A run rebuilt from a copy of ``snap``; ``bodies`` are the resumable functions."""
    world, threads = unpack(snap.packed)
    run = Run(world, [], [], list(snap.path))
    for body, t in zip(bodies, threads, strict=True):
        if t == "start":
            run.gens.append(body(world))
            run.pending.append(START)
        elif t == "done":
            run.gens.append(None)
            run.pending.append(DONE)
        else:
            gen = rebuild(t)
            run.gens.append(gen)
            run.pending.append(next(gen))
    return run


class Store:
    """The snapshots kept, least recently used first."""

    def __init__(self) -> None:
        self._snaps: OrderedDict[int, Snapshot] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._snaps)

    def keep(self, snap: Snapshot) -> Anchor:
        """Keep ``snap``, evicting the least recently used past the budget."""
        self._snaps[id(snap)] = snap
        self._bytes += len(snap.packed[0])
        while self._bytes > SNAPSHOT_BYTES and len(self._snaps) > 1:
            self._bytes -= len(self._snaps.popitem(last=False)[1].packed[0])
        return weakref.ref(snap)

    def touch(self, snap: Snapshot) -> None:
        """Note that ``snap`` was just used."""
        if id(snap) in self._snaps:
            self._snaps.move_to_end(id(snap))

    def clear(self) -> None:
        """Drop every snapshot."""
        self._snaps.clear()
        self._bytes = 0
