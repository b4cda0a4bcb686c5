"""The yield vocabulary shared by interleavable code and the race explorer.

A thread is a generator.  Each value it yields marks a point where another
CPU may run; the step that follows a yield is one atomic resumption.  A
thread may yield:

- a ``str``: a plain preemption point, named by the label;
- a :class:`Point`: the same, with the footprint of the step that follows
  (what it reads and writes), which partial-order reduction needs;
- an :class:`Await`: a blocking point (``lock_page``, ``wait_on_page_writeback``,
  a spinlock); the thread may only be resumed once ``ready()`` is true.

A footprint of ``None`` means "unknown": the step conflicts with every other
step.  Footprint keys are any hashable names for shared locations, e.g.
``("page", pfn, "refcount")``.

Assertions inside threads (the kernel's ``BUG_ON``) raise :class:`Violation`; a path
the model does not cover raises :class:`Unmodelled`, which is never a verdict.

Neither the kernel model nor the explorer imports the other; both import this.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from typing import TypeVar

Footprint = frozenset[Hashable] | None
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Point:
    """A preemption point with the footprint of the step that follows it."""

    label: str
    reads: Footprint = None
    writes: Footprint = None


@dataclass(frozen=True, slots=True)
class Await:
    """A blocking point: the thread can resume only when ``ready()`` holds."""

    label: str
    ready: Callable[[], bool]
    reads: Footprint = None
    writes: Footprint = None


Yield = str | Point | Await
Interleavable = Generator[Yield, None, "object"]


class Violation(Exception):
    """An assertion inside a thread failed (the model's BUG_ON)."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name
        self.detail = detail


class Unmodelled(Exception):
    """The thread reached a kernel path the model does not cover (not a verdict, not a bug)."""

    def __init__(self, function: str, reason: str) -> None:
        super().__init__(f"unmodelled: {function}: {reason}")
        self.function = function
        self.reason = reason


def run_to_completion(gen: Generator[Yield, None, R]) -> R:
    """Drive one interleavable function alone, as if no other CPU ran.

    An ``Await`` that is not ready can never become ready when nothing else
    runs, so it is a self-deadlock and raises ``Violation("deadlock")``.
    """
    try:
        value = next(gen)
        while True:
            if isinstance(value, Await) and not value.ready():
                raise Violation("deadlock", f"blocked alone at {value.label}")
            value = gen.send(None)
    except StopIteration as stop:
        result: R = stop.value
        return result
