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

A step that does not make a state ends in one of three outcomes, carried in the child's
``error`` slot as a :class:`Violation`: an assertion (a ``Violation`` the program
raised: a verdict), an :class:`UnmodelledStep` (the kernel model raised
:class:`Unmodelled`: the branch ends, no verdict) or a :class:`StepError` (any other
exception: a bug in pinlab).  :func:`crash` makes the last two; the searches hand each
to :meth:`Recorder.ended`, which keeps them apart.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from math import factorial
from pathlib import Path
from typing import Any, Protocol

from pinlab.explore.schedule import Move
from pinlab.interleave import Footprint, Unmodelled, Violation

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


class UnmodelledStep(Violation):
    """A step that reached a kernel path the model does not cover (:class:`Unmodelled`).

    It ends the branch (the thread is finished there and the state is not expanded) and
    is recorded as ``unmodelled: <function>: <reason>``: never a violation, never shrunk.
    Like :class:`StepError` it travels where the search keeps a failed step's
    :class:`Violation`; :func:`outcome_kind` tells the three apart.
    """

    def __init__(self, cause: Unmodelled) -> None:
        super().__init__(f"unmodelled: {cause.function}", cause.reason)
        self.function = cause.function
        self.reason = cause.reason


class StepError(Violation):
    """A step that raised any other exception: a bug in pinlab, not a verdict.

    ``location`` is ``file:line`` of the innermost frame of the traceback and
    ``function`` that frame's function (in the kernel model, the kernel function).
    """

    def __init__(self, type_name: str, message: str, location: str, function: str) -> None:
        super().__init__(f"error: {type_name}", message)
        self.type_name = type_name
        self.message = message
        self.location = location
        self.function = function

    @classmethod
    def of(cls, exc: BaseException) -> StepError:
        """The error for ``exc``, located at the innermost frame of its traceback."""
        tb = exc.__traceback__
        location, function = "?", "?"
        if tb is not None:
            while tb.tb_next is not None:
                tb = tb.tb_next
            code = tb.tb_frame.f_code
            location, function = f"{_shown(code.co_filename)}:{tb.tb_lineno}", code.co_qualname
        return cls(type(exc).__name__, str(exc), location, function)


def _shown(filename: str) -> str:
    """A source file as reports show it: relative to the directory holding ``pinlab``."""
    path = Path(filename)
    return str(path.relative_to(_SRC)) if path.is_relative_to(_SRC) else filename


_SRC = Path(__file__).resolve().parents[2]


def outcome_kind(err: Violation) -> str:
    """What a failed step is: ``"assertion"`` (a verdict), ``"unmodelled"`` or ``"error"``."""
    if isinstance(err, UnmodelledStep):
        return "unmodelled"
    if isinstance(err, StepError):
        return "error"
    return "assertion"


def crash(exc: Exception) -> Violation:
    """A step that raised ``exc`` other than a :class:`Violation`: an unmodelled path
    (:class:`Unmodelled`) or a bug in pinlab (anything else), never an assertion."""
    if isinstance(exc, Unmodelled):
        return UnmodelledStep(exc)
    return StepError.of(exc)
