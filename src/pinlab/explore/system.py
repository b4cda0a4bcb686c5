"""The interface both kinds of program present to the search: nodes, keys and expansion.

A *node* is what the search keeps to come back to a state (a state tuple, or a schedule
prefix for generator threads); a *key* is the hashable state used by the visited-state
cache, canonical under symmetry.  A child of a node is the tuple
``(tid, choice, tix, local_key, reads, writes, child_node, child_key, error)``: ``choice``
is the index among the thread's *enabled* steps (what a schedule records), ``tix`` the
fixed index of the step among all of the thread's steps at its position (what names a
transition in a sleep set: enabled indices shift when a guard changes).

``successors(node) -> Kids`` gives the same children in the shape the plain
depth-first search takes them (see :data:`Kids`), without what only sleep sets read.  A
system may also offer ``orbit_size(key) -> int`` when its keys are not tuples of thread
parts for :func:`orbit_size`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from math import factorial
from typing import Any, Protocol

from pinlab.explore.schedule import Move
from pinlab.interleave import Footprint, Violation

Child = tuple[int, int, int, Hashable, Footprint, Footprint, Any, Hashable, Violation | None]
Terminal = tuple[str, str, str, tuple[str, ...]]
Info = tuple[Move, Violation | None]
# an iterator of the children's keys (None where the step failed) drawing one child at a
# time from the iterator ``drawn``, so that what is left of ``drawn`` tells which child a
# key is; the children's nodes (None: the keys are the nodes); each one's move and error
Kids = tuple[Iterator[Any], Iterator[Any], Sequence[Any] | None, Sequence[Info]]


class System(Protocol):
    """What the search needs from a program."""

    n: int
    names: tuple[str, ...]
    classes: tuple[int, ...]
    symmetry: bool

    def root(self) -> Any: ...
    def key(self, node: Any) -> Hashable: ...
    def expand(self, node: Any) -> list[Child]: ...
    def successors(self, node: Any) -> Kids: ...
    def invariant(self, node: Any) -> tuple[tuple[str, str], ...]: ...
    def invariant_reads(self) -> tuple[Footprint, ...]: ...
    def terminal(self, node: Any) -> Terminal | None: ...
    def positions(self, node: Any) -> tuple[str, ...]: ...
    def concretise(self, moves: list[Move]) -> list[Move]: ...
    def step(self, node: Any, move: Move) -> tuple[Any, Violation | None]: ...
    def status(self, node: Any, tid: int) -> tuple[int, str]: ...
    def where(self, node: Any, move: Move) -> str: ...
    def changes(self, node: Any, child: Any) -> str: ...


def thread_classes(n: int, symmetric: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """Class of each thread for sleep-set signatures: interchangeable threads share one."""
    classes = list(range(n))
    for a, b in symmetric:
        for i in range(a, b):
            classes[i] = a
    return tuple(classes)


def orbit_size(key: tuple[Any, ...], symmetric: tuple[tuple[int, int], ...]) -> int:
    """How many concrete states a canonical state stands for (a multinomial per group)."""
    size = 1
    for a, b in symmetric:
        group = key[a + 1 : b + 1]
        counts: dict[object, int] = {}
        for loc in group:
            counts[loc] = counts.get(loc, 0) + 1
        size *= factorial(len(group))
        for c in counts.values():
            size //= factorial(c)
    return size


def kids(children: list[Child]) -> Kids:
    """Children from :meth:`System.expand` in the shape of :meth:`System.successors`."""
    drawn = iter([None if c[8] is not None else c[7] for c in children])
    return drawn, drawn, [c[6] for c in children], [((c[0], c[1]), c[8]) for c in children]


def crash(exc: Exception) -> Violation:
    """An unexpected exception inside a thread step, reported like an assertion."""
    return Violation(f"crash:{type(exc).__name__}", str(exc))
