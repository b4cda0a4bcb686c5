"""The generator backend: threads are generators over a mutable world.

Generators cannot be copied, so a node is the schedule prefix that leads to it, and a
state is restored by replaying that prefix on a fresh world.  The most recently
materialised run is kept, so going one step deeper costs one step and only backtracking
replays.  A thread's position comes from introspection: for each frame of the generator
and of the generators it delegates to (``gi_yieldfrom``), the function's qualified name,
the line it is suspended at and every local frozen by value (:func:`canon.freeze`: lists,
dicts, sets, NumPy arrays and dataclasses are copied), plus the label it yielded.  A
local referring to the world itself is covered by ``world_key``; a local the freezer
cannot capture (an arbitrary object) stops the search with an error naming it, rather
than being left out of the state, which could merge states that differ.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from dataclasses import dataclass, field
from typing import Any

from pinlab.explore.canon import Unfreezable, frame_locals, order_key
from pinlab.explore.program import WorldProgram
from pinlab.explore.schedule import Move
from pinlab.explore.system import Child, Terminal, crash, thread_classes
from pinlab.interleave import Await, Footprint, Point, Violation, Yield

Path = tuple[Move, ...]


class _Start:
    """Pending marker of a thread that has not run its first step."""


class _Done:
    """Pending marker of a thread that returned or failed."""


START, DONE = _Start(), _Done()


@dataclass(slots=True)
class _Run:
    world: Any
    gens: list[Generator[Yield, None, object]]
    pending: list[Yield | _Start | _Done]
    path: list[Move] = field(default_factory=list)


class WorldSystem:
    """Explores a :class:`WorldProgram`; nodes are schedule prefixes."""

    def __init__(self, program: WorldProgram, symmetry: bool = False, strict: bool = True) -> None:
        self.program = program
        self.strict = strict
        self.n = len(program.threads)
        self.names = tuple(t.name for t in program.threads)
        self.symmetry = symmetry and bool(program.symmetric)
        self.classes = thread_classes(self.n, program.symmetric if self.symmetry else ())
        self._run: _Run | None = None
        # invariant results of the children of the latest expansion, which the search
        # asks for right after expanding, before the first child is gone from the run
        self._inv: dict[Path, tuple[tuple[str, str], ...]] = {}
        self.replayed_steps = 0

    def _fresh(self) -> _Run:
        world = self.program.make_world()
        gens = [t.body(world) for t in self.program.threads]
        return _Run(world, gens, [START] * self.n)

    def _materialise(self, path: Path) -> _Run:
        run = self._run
        if run is None or len(run.path) > len(path) or tuple(run.path) != path[: len(run.path)]:
            run = self._fresh()
        for move in path[len(run.path) :]:
            self._advance(run, move[0])
            self.replayed_steps += 1
        self._run = run
        return run

    def _advance(self, run: _Run, tid: int) -> Violation | None:
        run.path.append((tid, 0))
        try:
            run.pending[tid] = next(run.gens[tid])
        except StopIteration:
            run.pending[tid] = DONE
        except Violation as v:
            run.pending[tid] = DONE
            return v
        except Exception as exc:  # a crash in the model is a finding, not a tool error
            run.pending[tid] = DONE
            return crash(exc)
        return None

    def _enabled(self, run: _Run, tid: int) -> bool:
        p = run.pending[tid]
        if p is DONE:
            return False
        return not isinstance(p, Await) or p.ready()

    def _thread_key(self, run: _Run, tid: int) -> Hashable:
        p = run.pending[tid]
        if p is START:
            return ("start",)
        if p is DONE:
            return ("done",)
        frames: list[Hashable] = []
        gen: Any = run.gens[tid]
        while gen is not None and getattr(gen, "gi_frame", None) is not None:
            f = gen.gi_frame
            try:
                live = frame_locals(f.f_locals, run.world, self.strict)
            except Unfreezable as err:
                raise Unfreezable(
                    f"the state cache cannot capture thread {self.names[tid]} in "
                    f"{f.f_code.co_qualname}:{f.f_lineno}: {err}; keep it in the world "
                    "(covered by world_key) or explore with cache=False"
                ) from None
            frames.append((f.f_code.co_qualname, f.f_lineno, live))
            gen = gen.gi_yieldfrom
        label = p if isinstance(p, str) else p.label  # type: ignore[union-attr]
        return (label, tuple(frames))

    def _state_key(self, run: _Run) -> Hashable:
        parts = [self._thread_key(run, i) for i in range(self.n)]
        if self.symmetry:
            for a, b in self.program.symmetric:
                parts[a:b] = sorted(parts[a:b], key=order_key)
        return (self.program.world_key(run.world), *parts)

    def _check(self, run: _Run) -> tuple[tuple[str, str], ...]:
        failed = [inv.name for inv in self.program.invariants if not inv.check(run.world)]
        if not failed:
            return ()
        shown = self._render(run)
        return tuple((name, shown) for name in failed)

    def invariant_reads(self) -> tuple[Footprint, ...]:
        """What each invariant reads (``None``: everything)."""
        return tuple(inv.reads for inv in self.program.invariants)

    def _render(self, run: _Run) -> str:
        if self.program.render is not None:
            return self.program.render(run.world)
        return repr(self.program.world_key(run.world))

    def root(self) -> Path:
        """The empty schedule."""
        return ()

    def key(self, node: Path) -> Hashable:
        """The state reached by a schedule prefix (canonical under symmetry)."""
        return self._state_key(self._materialise(node))

    def expand(self, node: Path) -> list[Child]:
        """Run each enabled thread one step from ``node``; the first child stays materialised."""
        self._inv = {}
        run = self._materialise(node)
        moves = [i for i in range(self.n) if self._enabled(run, i)]
        info = []
        for i in moves:
            p = run.pending[i]
            if p is START:
                first = self.program.threads[i]
                fp = (first.reads, first.writes)
            elif isinstance(p, Point | Await):
                fp = (p.reads, p.writes)
            else:
                fp = (None, None)
            info.append((self._thread_key(run, i), fp))
        out: list[Child] = []
        for idx in reversed(range(len(moves))):
            tid = moves[idx]
            run = self._materialise(node)
            err = self._advance(run, tid)
            child: Path = (*node, (tid, 0))
            lk, (reads, writes) = info[idx]
            if err is not None:
                self._run = None
                out.append((tid, 0, 0, lk, reads, writes, None, None, err))
                continue
            ck = self._state_key(run)
            self._inv[child] = self._check(run)
            out.append((tid, 0, 0, lk, reads, writes, child, ck, None))
        out.reverse()
        return out

    def invariant(self, node: Path) -> tuple[tuple[str, str], ...]:
        """Every failing invariant at ``node``."""
        if node in self._inv:
            return self._inv.pop(node)
        return self._check(self._materialise(node))

    def terminal(self, node: Path) -> Terminal | None:
        """For a node without enabled steps: a failing final check, a deadlock, or None."""
        run = self._materialise(node)
        pos = self.positions(node)
        if any(p is not DONE for p in run.pending):
            return ("deadlock", "deadlock", "every unfinished thread is blocked", pos)
        for fc in self.program.finals:
            if not fc.check(run.world):
                return ("final", fc.name, self._render(run), pos)
        return None

    def _position(self, run: _Run, tid: int) -> str:
        p = run.pending[tid]
        name = self.names[tid]
        if p is START:
            return f"{name} not started"
        if p is DONE:
            return f"{name} finished"
        gen: Any = run.gens[tid]
        where = []
        while gen is not None and getattr(gen, "gi_frame", None) is not None:
            f = gen.gi_frame
            where.append(f"{f.f_code.co_qualname}:{f.f_lineno}")
            gen = gen.gi_yieldfrom
        label = p if isinstance(p, str) else p.label  # type: ignore[union-attr]
        blocked = " (blocked)" if isinstance(p, Await) and not p.ready() else ""
        return f"{name} at {label!r} in {' > '.join(where)}{blocked}"

    def positions(self, node: Path) -> tuple[str, ...]:
        """Every thread's position: label, function and line of each frame."""
        run = self._materialise(node)
        return tuple(self._position(run, i) for i in range(self.n))

    def concretise(self, moves: list[Move]) -> list[Move]:
        """Moves of a world system are already concrete."""
        return list(moves)

    def status(self, node: Path, tid: int) -> tuple[int, str]:
        """1 if thread ``tid`` can run at ``node`` (0 if not), and its position."""
        run = self._materialise(node)
        return (1 if self._enabled(run, tid) else 0), self._position(run, tid)

    def step(self, node: Path, move: Move) -> tuple[Path, Violation | None]:
        """Run one move (assumed to fit; see :func:`status`)."""
        run = self._materialise(node)
        err = self._advance(run, move[0])
        if err is not None:
            self._run = None
        return (*node, move), err

    def where(self, node: Path, move: Move) -> str:
        """Function and source line the thread resumes at."""
        run = self._materialise(node)
        p = run.pending[move[0]]
        if p is START:
            body = self.program.threads[move[0]].body
            code = getattr(body, "__code__", None)
            line = code.co_firstlineno if code is not None else 0
            return f"{getattr(body, '__qualname__', '?')}:{line} (start)"
        gen: Any = run.gens[move[0]]
        while gen.gi_yieldfrom is not None and getattr(gen.gi_yieldfrom, "gi_frame", None):
            gen = gen.gi_yieldfrom
        f = gen.gi_frame
        label = p if isinstance(p, str) else p.label  # type: ignore[union-attr]
        return f"{f.f_code.co_qualname}:{f.f_lineno} after {label!r}"

    def changes(self, node: Path, child: Path) -> str:
        """What the step changed: the parts of the world key (or rendered lines) that differ."""
        run = self._materialise(node)
        key0, text0 = self.program.world_key(run.world), self._render(run)
        run = self._materialise(child)
        key1, text1 = self.program.world_key(run.world), self._render(run)
        return diff(key0, key1, text0, text1)


def diff(key0: object, key1: object, text0: str, text1: str) -> str:
    """The changed fields of two world keys, or failing that the changed rendered lines."""
    if key0 == key1:
        return ""
    if isinstance(key0, tuple) and isinstance(key1, tuple) and len(key0) == len(key1):
        names = getattr(key0, "_fields", None) or [f"[{i}]" for i in range(len(key0))]
        return ", ".join(
            f"{n}: {a!r}->{b!r}" for n, a, b in zip(names, key0, key1, strict=True) if a != b
        )
    lines0 = text0.splitlines()
    changed = [line for line in text1.splitlines() if line not in lines0]
    return "; ".join(changed) if changed else text1
