"""The generator backend: threads are generators over a mutable world.

A node is the schedule prefix that leads to it.  The most recently materialised run is
kept, so going one step deeper costs one step.  Going back to a node is a restore, not
a replay from the start: at a node with more than one enabled step, the world and
every thread's frames (:mod:`resume`: function, yield index and live locals of each
frame) are copied into a snapshot, and a sibling is reached by rebuilding the threads
from a copy of it and running one step (:mod:`snapshots`).  A snapshot is taken where a
restore beats the cheapest other way back (``POLICY``), the costs being timed as the
search runs.  A node refers weakly to the snapshot of its longest snapshotted prefix,
and a node whose snapshot is gone is replayed from the start.  A snapshot needs the
world and every local live across a yield to be picklable (functions and classes are
kept by reference) and every frame to be rewritable (:mod:`resume_ast`); when one is
not, the search goes on by replaying from the start and says why (``replay_reason``).

A thread's position comes from introspection: for each frame of the generator and of
the generators it delegates to (``gi_yieldfrom``), the function's qualified name, the
line it is suspended at and every local frozen (:func:`canon.freeze`), plus the label it
yielded.  A local referring to an object of the world (the world itself, or what the
program's ``locate`` keys by identity) is a reference by that key, the object being
covered by ``world_key``; other lists, dicts, sets, NumPy arrays and dataclasses are
copied by value.  A local the freezer cannot capture (an arbitrary object, a closure, a
module) stops the search with an error naming it, rather than being left out of the
state, which could merge states that differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

from pinlab.explore.canon import Refs, Unfreezable, frame_locals, order_key
from pinlab.explore.program import WorldProgram
from pinlab.explore.resume import resumable
from pinlab.explore.resume_ast import CONTROL
from pinlab.explore.schedule import Move
from pinlab.explore.snapshots import (
    DONE,
    START,
    Anchor,
    CannotCopy,
    Path,
    Run,
    Snapshot,
    Store,
    restore,
    take,
)
from pinlab.explore.system import (
    Child,
    Kids,
    StepError,
    Terminal,
    crash,
    kids,
    thread_classes,
)
from pinlab.interleave import Await, Footprint, Point, Violation

# checked mode: called on the world before a step, it gives what to call after it with
# the step's declared footprint, which answers what the step touched outside it, if any
Audit = Callable[[Any], Callable[[Footprint, Footprint], str | None]]
# "auto": snapshot a branching node once coming back to it by a fresh start or the nearest
# snapshot plus replayed steps would cost more than a restore (all timed as the search
# runs); "always", "never"
POLICY = "auto"
# a schedule prefix, and a weak reference to the snapshot of its longest snapshotted
# prefix: restoring needs no search, and queued nodes do not keep snapshots alive
Node = tuple[Path, Anchor]


class WorldSystem:
    """Explores a :class:`WorldProgram`; nodes are schedule prefixes (and an anchor)."""

    def __init__(self, program: WorldProgram, symmetry: bool = False, strict: bool = True) -> None:
        self.program = program
        self.strict = strict
        self.n = len(program.threads)
        self.names = tuple(t.name for t in program.threads)
        self.symmetry = symmetry and bool(program.symmetric)
        self.classes = thread_classes(self.n, program.symmetric if self.symmetry else ())
        self._run: Run | None = None
        # invariant results of the children of the latest expansion, which the search
        # asks for right after expanding, before the first child is gone from the run
        self._inv: dict[Path, tuple[tuple[str, str], ...]] = {}
        # each thread's function as written (what a snapshot captures) and resumable
        self._written = tuple(t.body for t in program.threads)
        self._bodies = tuple(resumable(body) for body in self._written)
        self._before_step = program.before_step
        self._audit: Audit | None = program.audit
        self._snaps = Store()
        self._made: Any = None  # the world made first, kept as made (program.copy_world)
        self.policy = POLICY
        self.replay_reason: str | None = None  # why threads cannot be restored, if so
        # running means, in seconds, of one step, one restore and one fresh start
        self._t_step = self._t_restore = self._t_fresh = 0.0
        self.replayed_steps = 0
        self.restores = 0

    def _fresh(self) -> Run:
        started = time.perf_counter()
        copy_world = self.program.copy_world
        if copy_world is None:
            world = self.program.make_world()
        elif self._made is None:
            world = self.program.make_world()
            self._made = copy_world(world)  # before any thread has run on it
        else:
            world = copy_world(self._made)
        run = Run(world, [body(world) for body in self._bodies], [START] * self.n)
        self._t_fresh = _mean(self._t_fresh, time.perf_counter() - started)
        return run

    def _materialise(self, node: Node) -> Run:
        path, anchor = node
        run = self._run
        if run is None or len(run.path) > len(path) or tuple(run.path) != path[: len(run.path)]:
            snap = None if anchor is None else anchor()
            if snap is not None and (
                self.policy == "always" or self._cost(0) > self._cost(len(snap.path))
            ):
                self._snaps.touch(snap)
                run = self._restore(snap)
            else:
                run = self._fresh()
        todo = path[len(run.path) :]
        if todo:
            started = time.perf_counter()
            for move in todo:
                self._advance(run, move[0])
            self._timed_steps(time.perf_counter() - started, len(todo))
            self.replayed_steps += len(todo)
        self._run = run
        return run

    def _timed_steps(self, seconds: float, steps: int) -> None:
        self._t_step = _mean(self._t_step, seconds / steps)

    def _cost(self, base: int) -> float:
        """The cost of starting over from a snapshot at depth ``base`` (0: a fresh start)."""
        return (self._t_restore if base else self._t_fresh) - base * self._t_step

    def _worth_a_snapshot(self, path: Path, nearest: Snapshot | None) -> bool:
        """Whether coming back to ``path`` by a restore beats the cheapest other way.

        A snapshot costs about a restore to take and serves at least two restores (one
        now for each further enabled step, one later for each new state among them).
        """
        if self.policy != "auto":
            return self.policy == "always"
        starts = [self._cost(0)]
        if nearest is not None:
            starts.append(self._cost(len(nearest.path)))
        reach = min(starts) + len(path) * self._t_step
        return (not self.restores and not self._snaps) or reach > 1.5 * self._t_restore

    def _snapshot(self, run: Run) -> Anchor:
        """Keep a copy of ``run`` to come back to; None if it cannot be taken."""
        started = time.perf_counter()
        try:
            snap = take(run, self.names, self._written)
        except CannotCopy as err:
            self._give_up(str(err))
            return None
        if not self.restores:  # until a restore is timed, a copy is the best estimate
            self._t_restore = _mean(self._t_restore, time.perf_counter() - started)
        return self._snaps.keep(snap)

    def _give_up(self, why: str) -> None:
        """Replay from the start from now on: the search stays exact, only slower."""
        self.replay_reason, self.policy = why, "never"
        self._snaps.clear()

    def _restore(self, snap: Snapshot) -> Run:
        """A run rebuilt from a copy of ``snap``."""
        started = time.perf_counter()
        self.restores += 1
        run = restore(snap, self._bodies)
        self._t_restore = _mean(self._t_restore, time.perf_counter() - started)
        return run

    def _advance(self, run: Run, tid: int) -> Violation | None:
        run.path.append((tid, 0))
        if self._before_step is not None:
            alone = all(p is DONE for i, p in enumerate(run.pending) if i != tid)
            self._before_step(run.world, alone)
        _, writes = self._footprint(run, tid)
        if self._audit is not None:
            err = self._audited(run, tid, self._audit)
        else:
            err = self._step(run, tid)
        run.stale.discard(tid)
        for i, p in enumerate(run.pending):
            if i != tid and isinstance(p, Point | Await) and _touches(writes, p):
                run.stale.add(i)
        return err

    def _footprint(self, run: Run, tid: int) -> tuple[Footprint, Footprint]:
        """What the next step of thread ``tid`` reads and writes (None: anything).

        A point's footprint was worked out from the state when it was yielded; once
        another thread has written what that point read or writes, the footprint may
        no longer be the step's (a restore would work it out again), so it is unknown.
        """
        p = run.pending[tid]
        if p is START:
            first = self.program.threads[tid]
            return first.reads, first.writes
        if isinstance(p, Point | Await) and tid not in run.stale:
            return p.reads, p.writes
        return None, None

    def _step(self, run: Run, tid: int) -> Violation | None:
        """Resume thread ``tid`` to its next yield; what ended it, if it failed."""
        try:
            run.pending[tid] = next(run.gens[tid])
        except StopIteration:
            run.pending[tid] = DONE
        except Violation as v:
            run.pending[tid] = DONE
            return v
        except Exception as exc:  # an unmodelled path or a bug in pinlab (system.crash)
            run.pending[tid] = DONE
            return crash(exc)
        return None

    def _audited(self, run: Run, tid: int, audit: Audit) -> Violation | None:
        """:meth:`_advance` in checked mode: what the step touched must lie in its footprint."""
        reads, writes = self._footprint(run, tid)
        where = self._where(run, tid)
        check = audit(run.world)
        err = self._step(run, tid)
        wrong = check(reads, writes)
        if err is None and wrong is not None:
            run.pending[tid] = DONE
            return StepError("FootprintError", f"{where}: {wrong}", where, where.split(":")[0])
        return err

    def _enabled(self, run: Run, tid: int) -> bool:
        p = run.pending[tid]
        if p is DONE:
            return False
        return not isinstance(p, Await) or p.ready()

    def _thread_key(self, run: Run, tid: int, memo: dict[int, Hashable], refs: Refs) -> Hashable:
        """Thread ``tid``'s position and live locals; ``memo`` and ``refs`` (the world's
        objects by identity) are shared within one state."""
        p = run.pending[tid]
        if p is START:
            return ("start",)
        if p is DONE:
            return ("done",)
        frames: list[Hashable] = []
        gen: Any = run.gens[tid]
        while gen is not None and getattr(gen, "gi_frame", None) is not None:
            f = gen.gi_frame
            own = {k: v for k, v in f.f_locals.items() if k not in CONTROL}
            try:
                live = frame_locals(own, refs, self.strict, memo)
            except Unfreezable as err:
                raise Unfreezable(
                    f"the state cache cannot capture thread {self.names[tid]} in "
                    f"{f.f_code.co_qualname}:{f.f_lineno}: {err}; keep it in the world "
                    "(covered by world_key and locate) or explore with cache=False"
                ) from None
            frames.append((f.f_code.co_qualname, f.f_lineno, live))
            gen = gen.gi_yieldfrom
        label = p if isinstance(p, str) else p.label  # type: ignore[union-attr]
        return (label, tuple(frames))

    def _refs(self, world: Any) -> Refs:
        """The world's objects by identity (the world itself at least)."""
        if self.program.locate is None:
            return {id(world): ()}
        return self.program.locate(world)

    def _state_key(self, run: Run) -> Hashable:
        memo: dict[int, Hashable] = {}
        refs = self._refs(run.world)
        parts = [self._thread_key(run, i, memo, refs) for i in range(self.n)]
        if self.symmetry:
            for a, b in self.program.symmetric:
                parts[a:b] = sorted(parts[a:b], key=order_key)
        return (self.program.world_key(run.world), *parts)

    def _check(self, run: Run) -> tuple[tuple[str, str], ...]:
        failed = [inv.name for inv in self.program.invariants if not inv.check(run.world)]
        if not failed:
            return ()
        shown = self._render(run)
        return tuple((name, shown) for name in failed)

    def invariant_reads(self) -> tuple[Footprint, ...]:
        """What each invariant reads (``None``: everything)."""
        return tuple(inv.reads for inv in self.program.invariants)

    def _render(self, run: Run) -> str:
        if self.program.render is not None:
            return self.program.render(run.world)
        return repr(self.program.world_key(run.world))

    def root(self) -> Node:
        """The empty schedule."""
        return ((), None)

    def key(self, node: Node) -> Hashable:
        """The state reached by a schedule prefix (canonical under symmetry)."""
        return self._state_key(self._materialise(node))

    def expand(self, node: Node) -> list[Child]:
        """Run each enabled thread one step from ``node``; the first child stays materialised."""
        return self._children(node, True)

    def successors(self, node: Node) -> Kids:
        """:meth:`expand` for the plain search, which never reads the threads' own keys."""
        return kids(self._children(node, False))

    def _children(self, node: Node, keyed: bool) -> list[Child]:
        self._inv = {}
        run = self._materialise(node)
        path, anchor = node
        moves = [i for i in range(self.n) if self._enabled(run, i)]
        nearest = None if anchor is None else anchor()
        if (
            len(moves) > 1
            and (nearest is None or nearest.path != path)
            and self._worth_a_snapshot(path, nearest)
        ):
            anchor = self._snapshot(run) or anchor
            node = (path, anchor)
        info = []
        memo: dict[int, Hashable] = {}
        refs = self._refs(run.world) if keyed else {}
        for i in moves:
            fp = self._footprint(run, i)
            info.append((self._thread_key(run, i, memo, refs) if keyed else None, fp))
        out: list[Child] = []
        for idx in reversed(range(len(moves))):
            tid = moves[idx]
            run = self._materialise(node)
            started = time.perf_counter()
            err = self._advance(run, tid)
            self._timed_steps(time.perf_counter() - started, 1)
            child: Node = ((*path, (tid, 0)), anchor)
            lk, (reads, writes) = info[idx]
            if err is not None:
                self._run = None
                out.append((tid, 0, 0, lk, reads, writes, None, None, err))
                continue
            ck = self._state_key(run)
            self._inv[child[0]] = self._check(run)
            out.append((tid, 0, 0, lk, reads, writes, child, ck, None))
        out.reverse()
        return out

    def invariant(self, node: Node) -> tuple[tuple[str, str], ...]:
        """Every failing invariant at ``node``."""
        if node[0] in self._inv:
            return self._inv.pop(node[0])
        return self._check(self._materialise(node))

    def terminal(self, node: Node) -> Terminal | None:
        """For a node without enabled steps: a failing final check, a deadlock, or None."""
        run = self._materialise(node)
        pos = self.positions(node)
        if any(p is not DONE for p in run.pending):
            return ("deadlock", "deadlock", "every unfinished thread is blocked", pos)
        for fc in self.program.finals:
            if not fc.check(run.world):
                return ("final", fc.name, self._render(run), pos)
        return None

    def _position(self, run: Run, tid: int) -> str:
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

    def positions(self, node: Node) -> tuple[str, ...]:
        """Every thread's position: label, function and line of each frame."""
        run = self._materialise(node)
        return tuple(self._position(run, i) for i in range(self.n))

    def concretise(self, moves: list[Move]) -> list[Move]:
        """Moves of a world system are already concrete."""
        return list(moves)

    def status(self, node: Node, tid: int) -> tuple[int, str]:
        """1 if thread ``tid`` can run at ``node`` (0 if not), and its position."""
        run = self._materialise(node)
        return (1 if self._enabled(run, tid) else 0), self._position(run, tid)

    def step(self, node: Node, move: Move) -> tuple[Node, Violation | None]:
        """Run one move (assumed to fit; see :func:`status`)."""
        run = self._materialise(node)
        err = self._advance(run, move[0])
        if err is not None:
            self._run = None
        return ((*node[0], move), node[1]), err

    def where(self, node: Node, move: Move) -> str:
        """Function and source line the thread resumes at."""
        return self._where(self._materialise(node), move[0])

    def _where(self, run: Run, tid: int) -> str:
        p = run.pending[tid]
        if p is START:
            body = self.program.threads[tid].body
            code = getattr(body, "__code__", None)
            line = code.co_firstlineno if code is not None else 0
            return f"{getattr(body, '__qualname__', '?')}:{line} (start)"
        gen: Any = run.gens[tid]
        while gen.gi_yieldfrom is not None and getattr(gen.gi_yieldfrom, "gi_frame", None):
            gen = gen.gi_yieldfrom
        f = gen.gi_frame
        label = p if isinstance(p, str) else p.label  # type: ignore[union-attr]
        return f"{f.f_code.co_qualname}:{f.f_lineno} after {label!r}"

    def changes(self, node: Node, child: Node) -> str:
        """What the step changed: the parts of the world key (or rendered lines) that differ.

        The child's key and text are kept: a trace asks next about the step from it, and
        coming back to ``node`` once the run has gone past it would mean a restore or a
        replay from the start (which made a replayed trace quadratic in its length).
        """

        def shown(run: Run) -> tuple[Hashable, str]:
            """The world key and the text compared (none for an unrendered digest)."""
            key = self.program.world_key(run.world)
            if self.program.render is None and isinstance(key, bytes | bytearray):
                return key, ""
            return key, self._render(run)

        seen: tuple[Path, Hashable, str] | None = getattr(self, "_shown", None)
        if seen is not None and seen[0] == node[0]:
            key0, text0 = seen[1], seen[2]
        else:
            key0, text0 = shown(self._materialise(node))
        key1, text1 = shown(self._materialise(child))
        self._shown = (child[0], key1, text1)
        return diff(key0, key1, text0, text1)


def _touches(writes: Footprint, p: Point | Await) -> bool:
    """Whether a step that writes ``writes`` may change what point ``p`` was worked out from."""
    if writes is None or p.reads is None or p.writes is None:
        return True
    return not (writes.isdisjoint(p.reads) and writes.isdisjoint(p.writes))


def _mean(estimate: float, sample: float) -> float:
    """A running mean that a rare stall (an allocation, a page fault) cannot throw off."""
    if not estimate:
        return sample
    return estimate + (min(sample, 4 * estimate) - estimate) / 32


def diff(key0: object, key1: object, text0: str, text1: str) -> str:
    """What changed between two states, from their world keys and rendered texts.

    World keys that are tuples (or named tuples) of one length: the fields that differ.
    Otherwise, when both texts are ``key: value`` lines (each key once), per key:
    ``<key>: <old> -> <new>`` (a value made of ``name:value`` words: the words that
    differ), ``+<key>: <value>`` and ``-<key>``.  Otherwise the rendered lines that are
    new.  A world key that is a digest (bytes) is never shown.
    """
    if key0 == key1:
        return ""
    if isinstance(key0, tuple) and isinstance(key1, tuple) and len(key0) == len(key1):
        names = getattr(key0, "_fields", None) or [f"[{i}]" for i in range(len(key0))]
        return ", ".join(
            f"{n}: {a!r}->{b!r}" for n, a, b in zip(names, key0, key1, strict=True) if a != b
        )
    keyed0, keyed1 = _keyed_lines(text0), _keyed_lines(text1)
    if keyed0 is not None and keyed1 is not None:
        out = [_changed(key, keyed0.get(key), value) for key, value in keyed1.items()]
        out += [f"-{key}" for key in keyed0 if key not in keyed1]
        shown = "; ".join(part for part in out if part)
        return shown or "(the state changed, but no rendered line did)"
    lines0 = text0.splitlines()
    changed = [line for line in text1.splitlines() if line not in lines0]
    if changed:
        return "; ".join(changed)
    if isinstance(key0, bytes | bytearray) or isinstance(key1, bytes | bytearray):
        return text1 or "(the state changed; its key is a digest and it is not rendered)"
    return text1


def _keyed_lines(text: str) -> dict[str, str] | None:
    """``key: value`` lines as a dict in their order; None unless every line is one (and
    every key is given once)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if not sep or not key.strip() or key in out:
            return None
        out[key] = value
    return out or None


def _changed(key: str, old: str | None, new: str) -> str:
    """One key's change: new, or changed (word by word for ``name:value`` words), or none."""
    if old is None:
        return f"+{key}: {new}"
    if old == new:
        return ""
    words0, words1 = _named_words(old), _named_words(new)
    if words0 is None or words1 is None:
        return f"{key}: {old} -> {new}"
    parts = [
        f"+{name}: {value}" if name not in words0 else f"{name}: {words0[name]} -> {value}"
        for name, value in words1.items()
        if words0.get(name) != value
    ]
    parts += [f"-{name}" for name in words0 if name not in words1]
    return f"{key}: {', '.join(parts)}"


def _named_words(value: str) -> dict[str, str] | None:
    """A value made of space-separated ``name:value`` words, as a dict; None if it is not."""
    out: dict[str, str] = {}
    for word in value.split(" "):
        name, sep, v = word.partition(":")
        if not sep or not name or name in out:
            return None
        out[name] = v
    return out
