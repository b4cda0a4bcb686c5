"""What the explorer explores: threads, the shared start state, and properties."""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pinlab.interleave import Footprint, Yield

Guard = Callable[[Any, Any], bool]
Action = Callable[[Any, Any], tuple[Any, Any]]
Params = tuple[tuple[str, int | str], ...]


@dataclass(frozen=True, slots=True)
class Invariant:
    """Checked after every step; ``reads`` is its footprint (``None``: reads everything)."""

    name: str
    check: Callable[[Any], bool]
    reads: Footprint = None


@dataclass(frozen=True, slots=True)
class FinalCheck:
    """Checked once every thread has finished."""

    name: str
    check: Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Transition:
    """One atomic step of a state-machine thread, from position ``src`` to ``dst``.

    ``guard(shared, locals)`` says whether the step can run; ``act(shared, locals)``
    returns the new ``(shared, locals)`` and may raise ``Violation``.  ``reads`` and
    ``writes`` name the shared variables the guard and action touch (``None``: unknown).
    """

    src: str
    dst: str
    label: str
    guard: Guard | None = None
    act: Action | None = None
    reads: Footprint = None
    writes: Footprint = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Machine:
    """A thread as an explicit state machine: its local state is ``(position, locals)``.

    A position with no transitions is the end; ``ends`` lists further positions where
    the thread may validly stop (a server loop), so that stopping there is no deadlock.
    """

    name: str
    start: str
    transitions: tuple[Transition, ...]
    locals: Hashable = ()
    ends: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class GenThread:
    """A thread as a generator over the world, yielding the pinlab.interleave vocabulary.

    ``reads``/``writes`` are the footprint of its first step (from the start to the first
    yield); later steps take theirs from the ``Point``/``Await`` they resume from.
    """

    name: str
    body: Callable[[Any], Generator[Yield, None, object]]
    reads: Footprint = None
    writes: Footprint = None


@dataclass(frozen=True, slots=True)
class MachineProgram:
    """A program of state-machine threads over plain hashable shared data.

    A state is the tuple ``(shared, local_0, ..., local_n-1)``; invariants and final
    checks receive that tuple.  ``symmetric`` lists half-open ranges of thread indices
    whose threads are interchangeable (same machine, nothing depends on their index).
    """

    name: str
    shared: Hashable
    threads: tuple[Machine, ...]
    invariants: tuple[Invariant, ...] = ()
    finals: tuple[FinalCheck, ...] = ()
    symmetric: tuple[tuple[int, int], ...] = ()
    params: Params = ()
    source: str = ""
    render: Callable[[Any], str] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class WorldProgram:
    """A program of generator threads over a mutable world built fresh by ``make_world``.

    ``world_key(world)`` must capture every part of the world a thread or a property can
    observe; invariants and final checks receive the world.  ``locate(world)`` keys the
    world's objects by identity (object id to a path), so that a thread's local that
    refers to one is part of the state as that reference, not as a copy.
    ``before_step(world, alone)`` is told before each step whether the stepping thread
    is the only one not finished.  ``audit`` turns on the checked mode: ``audit(world)``
    before a step returns a function that, given the step's declared reads and writes,
    says what the step touched outside them (None if nothing): a pinlab bug, since
    partial-order reduction rests on those footprints.  ``copy_world(world)``, if given,
    is an independent copy of a world: a search then makes one world and starts every
    later run from a copy of it, which must not differ from a world made afresh.
    """

    name: str
    make_world: Callable[[], Any]
    threads: tuple[GenThread, ...]
    world_key: Callable[[Any], Hashable]
    invariants: tuple[Invariant, ...] = ()
    finals: tuple[FinalCheck, ...] = ()
    symmetric: tuple[tuple[int, int], ...] = ()
    params: Params = ()
    render: Callable[[Any], str] | None = field(default=None, compare=False)
    locate: Callable[[Any], Mapping[int, Hashable]] | None = field(default=None, compare=False)
    before_step: Callable[[Any, bool], None] | None = field(default=None, compare=False)
    audit: Callable[[Any], Callable[[Footprint, Footprint], str | None]] | None = field(
        default=None, compare=False
    )
    copy_world: Callable[[Any], Any] | None = field(default=None, compare=False)


Program = MachineProgram | WorldProgram


def program_id(program: Program) -> str:
    """The readable name of a program and its parameters, e.g. ``hillf-K1-ORDER0``."""
    return program.name + "".join(f"-{k}{v}" for k, v in program.params)


def validate(program: Program) -> None:
    """Reject malformed programs early with a clear message."""
    n = len(program.threads)
    if n == 0:
        raise ValueError(f"program {program.name!r} has no threads")
    claimed: set[int] = set()
    for a, b in program.symmetric:
        if not 0 <= a < b <= n:
            raise ValueError(f"symmetric range [{a}, {b}) is outside threads 0..{n - 1}")
        if claimed & set(range(a, b)):
            raise ValueError(f"symmetric range [{a}, {b}) overlaps another range")
        claimed |= set(range(a, b))
        if isinstance(program, MachineProgram):
            first = program.threads[a]
            if any(program.threads[i] is not first for i in range(a, b)):
                raise ValueError(f"threads in symmetric range [{a}, {b}) are not one machine")
        else:
            t0 = program.threads[a]
            for t in program.threads[a + 1 : b]:
                if (t.body, t.reads, t.writes) != (t0.body, t0.reads, t0.writes):
                    raise ValueError(
                        f"threads in symmetric range [{a}, {b}) do not run one body "
                        f"({t0.name!r} and {t.name!r} differ)"
                    )
    if isinstance(program, MachineProgram):
        for m in program.threads:
            pcs = {t.src for t in m.transitions} | {t.dst for t in m.transitions} | {m.start}
            if m.ends - pcs:
                raise ValueError(
                    f"machine {m.name!r}: unknown end positions {sorted(m.ends - pcs)}"
                )
