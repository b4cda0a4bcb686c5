"""The state-machine backend: a state is a plain tuple, so restoring it is free.

The successors of one thread depend only on ``(shared, local)``; they are computed once
per distinct pair and kept in a table, so the inner loop of the search is tuple slicing,
a dictionary look-up and, for interchangeable threads, sorting a short slice.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from pinlab.explore.canon import order_key
from pinlab.explore.program import Machine, MachineProgram, Transition
from pinlab.explore.schedule import Move
from pinlab.explore.system import Child, Terminal, crash, thread_classes
from pinlab.interleave import Footprint, Violation

State = tuple[Any, ...]
# one successor of a thread:
# (choice, fixed index, new_shared, new_local, reads, writes, error, transition)
Succ = tuple[int, int, Any, Any, Footprint, Footprint, Violation | None, Transition]


class MachineSystem:
    """Explores a :class:`MachineProgram`; nodes are (canonical) state tuples."""

    def __init__(self, program: MachineProgram, symmetry: bool = False) -> None:
        self.program = program
        self.n = len(program.threads)
        self.names = tuple(m.name for m in program.threads)
        self.symmetry = symmetry and bool(program.symmetric)
        self.classes = thread_classes(self.n, program.symmetric if self.symmetry else ())
        self._by_pc: list[dict[str, tuple[Transition, ...]]] = []
        for m in program.threads:
            table: dict[str, list[Transition]] = {}
            for t in m.transitions:
                table.setdefault(t.src, []).append(t)
            self._by_pc.append({pc: tuple(ts) for pc, ts in table.items()})
        # interchangeable threads run one machine and share successor tables
        first: dict[int, int] = {}
        self._code = tuple(first.setdefault(id(m), i) for i, m in enumerate(program.threads))
        self._memo: dict[tuple[int, Any, Any], tuple[Succ, ...]] = {}
        # thread index -> (start, stop) of its group in the state tuple, when symmetric
        self._group: list[tuple[int, int] | None] = [None] * self.n
        if self.symmetry:
            for a, b in program.symmetric:
                for i in range(a, b):
                    self._group[i] = (a + 1, b + 1)
        self._invariants = program.invariants
        # a total order on local states for canonicalisation (Python's < is partial on
        # frozensets), memoised: every local state is a root's or a successor's
        self._order: dict[Any, str] = {}

    def _ordered(self, local: Any) -> Any:
        if local not in self._order:
            self._order[local] = order_key(local)
        return local

    def root(self) -> State:
        """The initial state."""
        start = (
            self.program.shared,
            *(self._ordered((m.start, m.locals)) for m in self.program.threads),
        )
        return self._canon(start)

    def key(self, node: State) -> Hashable:
        """Nodes are already canonical keys."""
        return node

    def _canon(self, state: State) -> State:
        if not self.symmetry:
            return state
        rank = self._order.__getitem__
        for a, b in self.program.symmetric:
            group = sorted(state[a + 1 : b + 1], key=rank)
            state = (*state[: a + 1], *group, *state[b + 1 :])
        return state

    def _succ(self, i: int, shared: Any, local: Any) -> tuple[Succ, ...]:
        out: list[Succ] = []
        for tix, t in enumerate(self._by_pc[i].get(local[0], ())):
            try:
                if t.guard is not None and not t.guard(shared, local[1]):
                    continue
                if t.act is None:
                    ns, nl = shared, local[1]
                else:
                    ns, nl = t.act(shared, local[1])
                new = self._ordered((t.dst, nl))
                out.append((len(out), tix, ns, new, t.reads, t.writes, None, t))
            except Violation as v:
                out.append((len(out), tix, None, None, t.reads, t.writes, v, t))
            except Exception as exc:  # a crash in the model is a finding, not a tool error
                out.append((len(out), tix, None, None, t.reads, t.writes, crash(exc), t))
        return tuple(out)

    def _moves(self, state: State, i: int) -> tuple[Succ, ...]:
        k = (self._code[i], state[0], state[i + 1])
        moves = self._memo.get(k)
        if moves is None:
            moves = self._memo[k] = self._succ(i, state[0], state[i + 1])
        return moves

    def invariant_reads(self) -> tuple[Footprint, ...]:
        """What each invariant reads (``None``: everything)."""
        return tuple(inv.reads for inv in self._invariants)

    def expand(self, node: State) -> list[Child]:
        """Every enabled (thread, choice) with its successor state."""
        out: list[Child] = []
        memo = self._memo
        shared = node[0]
        code = self._code
        group = self._group
        rank = self._order.__getitem__
        for i in range(self.n):
            j = i + 1
            local = node[j]
            # _moves inlined: this loop is the search's hot path
            k = (code[i], shared, local)
            moves = memo.get(k)
            if moves is None:
                moves = memo[k] = self._succ(i, shared, local)
            if not moves:
                continue
            head = node[1:j]
            tail = node[j + 1 :]
            g = group[i]
            for choice, tix, ns, nl, reads, writes, err, _t in moves:
                if err is not None:
                    out.append((i, choice, tix, local, reads, writes, None, None, err))
                    continue
                child = (ns, *head, nl, *tail)
                if g is not None:
                    a, b = g
                    child = (*child[:a], *sorted(child[a:b], key=rank), *child[b:])
                out.append((i, choice, tix, local, reads, writes, child, child, None))
        return out

    def invariant(self, node: State) -> tuple[tuple[str, str], ...]:
        """Every invariant that fails in this state, each with a rendering of it."""
        for inv in self._invariants:
            if not inv.check(node):
                shown = self._render(node)
                return tuple((i.name, shown) for i in self._invariants if not i.check(node))
        return ()

    def _render(self, node: State) -> str:
        if self.program.render is not None:
            return self.program.render(node)
        return repr(node[0])

    def _finished(self, i: int, local: Any) -> bool:
        m: Machine = self.program.threads[i]
        return local[0] in m.ends or local[0] not in self._by_pc[i]

    def terminal(self, node: State) -> Terminal | None:
        """For a state without enabled steps: a failing final check, a deadlock, or None."""
        pos = self.positions(node)
        if not all(self._finished(i, node[i + 1]) for i in range(self.n)):
            return ("deadlock", "deadlock", "every thread is blocked", pos)
        for fc in self.program.finals:
            if not fc.check(node):
                return ("final", fc.name, self._render(node), pos)
        return None

    def _position(self, i: int, local: Any) -> str:
        pc, loc = local
        ts = self._by_pc[i].get(pc, ())
        nxt = f" before {ts[0].label!r} (line {ts[0].line})" if ts else " (finished)"
        shown = f" locals={loc!r}" if loc != () else ""
        return f"{self.names[i]} at {pc}{nxt}{shown}"

    def positions(self, node: State) -> tuple[str, ...]:
        """Every thread's position, for deadlock reports and traces."""
        return tuple(self._position(i, node[i + 1]) for i in range(self.n))

    def concretise(self, moves: list[Move]) -> list[Move]:
        """Turn moves taken in canonical states into moves of the unreduced program."""
        if not self.symmetry:
            return list(moves)
        plain = MachineSystem(self.program, symmetry=False)
        state = plain.root()
        out: list[Move] = []
        for tid, choice in moves:
            canon = self._canon(state)
            real = tid
            group = self._group[tid]
            if group is not None:
                a, b = group
                real = next(i for i in range(a - 1, b - 1) if state[i + 1] == canon[tid + 1])
            out.append((real, choice))
            nxt, err = plain.step(state, (real, choice))
            if err is not None:
                break
            state = nxt
        return out

    def status(self, node: State, tid: int) -> tuple[int, str]:
        """How many choices thread ``tid`` has here, and its position."""
        return len(self._moves(node, tid)), self._position(tid, node[tid + 1])

    def step(self, node: State, move: Move) -> tuple[State, Violation | None]:
        """Run one move (assumed to fit; see :func:`status`)."""
        tid, choice = move
        _c, _tix, ns, nl, _r, _w, err, _t = self._moves(node, tid)[choice]
        if err is not None:
            return node, err
        return self._canon((ns, *node[1 : tid + 1], nl, *node[tid + 2 :])), None

    def where(self, node: State, move: Move) -> str:
        """The transition a move takes, with its source line."""
        t = self._moves(node, move[0])[move[1]][7]
        src = f"{self.program.source}:" if self.program.source else "line "
        return f"{t.src} -> {t.dst}  {src}{t.line}  {t.label}"

    def changes(self, node: State, child: State) -> str:
        """What a step changed in the shared data and in locals."""
        parts = []
        old, new = node[0], child[0]
        fields = getattr(old, "_fields", None)
        if fields is not None:
            parts += [
                f"{f}: {getattr(old, f)!r}->{getattr(new, f)!r}"
                for f in fields
                if getattr(old, f) != getattr(new, f)
            ]
        elif old != new:
            parts.append(f"shared: {old!r}->{new!r}")
        for i in range(self.n):
            a, b = node[i + 1][1], child[i + 1][1]
            if a != b:
                parts.append(f"{self.names[i]}.locals: {a!r}->{b!r}")
        return ", ".join(parts)
