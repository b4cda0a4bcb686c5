"""The state-machine backend: a state is one int, so restoring and hashing it are cheap.

Every distinct shared value and local state is numbered once, and a state packs the
shared id and each thread's local id into the fields of one int (:mod:`packing`).  The
successors of one thread depend only on its two fields; they are computed once per
distinct pair (shared by interchangeable threads) and kept, per thread, as the amount
each adds to the packed state, so the inner loop of the search is a mask, a dictionary
look-up and an addition.  States are decoded into the ``(shared, local_0, ...)`` tuple
only for properties and reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from math import factorial
from typing import Any

from pinlab.explore.canon import order_key
from pinlab.explore.packing import Packing
from pinlab.explore.program import Machine, MachineProgram, Transition
from pinlab.explore.schedule import Move
from pinlab.explore.system import Child, Info, Kids, Terminal, crash, thread_classes
from pinlab.interleave import Footprint, Violation

# one successor of a thread, in ids:
# (choice, fixed index, new shared id, new local id, reads, writes, error, transition)
Succ = tuple[int, int, int, int, Footprint, Footprint, Violation | None, Transition]
# one successor as expand uses it: (choice, fixed index, local id, reads, writes,
# what it adds to the packed state, error, whether its group must be sorted again)
Step = tuple[int, int, int, Footprint, Footprint, int, Violation | None, bool]
# a thread's successors from one pair of fields: what each adds, the move and error of
# each, whether the additions alone do not give the children (an error, or sorting), the
# steps, and the thread's local id
Entry = tuple[tuple[int, ...], tuple[Info, ...], bool, tuple[Step, ...], int]


class _Interned:
    """Distinct values numbered in order of first appearance."""

    def __init__(self, ranked: bool) -> None:
        self.values: list[Any] = []
        self._ids: dict[Any, int] = {}
        self.ranked = ranked
        # a total order on ids for canonicalisation (Python's < is partial on frozensets)
        self.rank: list[str] = []

    def id(self, value: Any) -> int:
        """The id of ``value``, numbering it if it is new."""
        got = self._ids.get(value)
        if got is None:
            got = self._ids[value] = len(self.values)
            self.values.append(value)
            if self.ranked:
                self.rank.append(order_key(value))
        return got


class MachineSystem:
    """Explores a :class:`MachineProgram`; nodes are (canonical) packed states."""

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
        self._succs: dict[tuple[int, int, int], tuple[Succ, ...]] = {}
        # numbered apart from the shared values, local ids stay small enough for their field
        self._shared_ids = _Interned(False)
        self._local_ids = _Interned(self.symmetry)
        self._local = self._local_ids.values.__getitem__
        self._rank = self._local_ids.rank.__getitem__
        # field 0 holds the shared id, field i + 1 thread i's local id
        self._packing = pk = Packing(self.n + 1)
        self._shared = pk.mask(0)
        # per thread: the mask of its two fields, and its successors by masked state
        self._threads: list[tuple[int, int, dict[int, Entry]]] = [
            (i, pk.mask(0, i + 1), {}) for i in range(self.n)
        ]
        self._infos: dict[Move, Info] = {}
        # thread index -> the threads of its symmetric group, when reducing
        self._group: list[range | None] = [None] * self.n
        groups = program.symmetric if self.symmetry else ()
        for a, b in groups:
            for i in range(a, b):
                self._group[i] = range(a, b)
        # per group: the mask of its fields, its threads, and by the group's fields their
        # canonical form (the locals sorted) and orbit size, which depend on nothing else
        self._groups: list[tuple[int, range, dict[int, int], dict[int, int]]] = [
            (pk.mask(*range(a + 1, b + 1)), range(a, b), {}, {}) for a, b in groups
        ]
        self._invariants = program.invariants
        # an invariant with a footprint reads only shared data, so it is judged once per
        # shared value: shared field -> the indices of those invariants failing there
        self._by_shared = [k for k, inv in enumerate(program.invariants) if inv.reads is not None]
        self._by_state = [k for k, inv in enumerate(program.invariants) if inv.reads is None]
        self._failing: dict[int, frozenset[int]] = {}

    def _field(self, node: int, i: int) -> int:
        """Thread ``i``'s local id."""
        return self._packing.get(node, i + 1)

    def _state(self, node: int) -> tuple[Any, ...]:
        """The ``(shared, local_0, ...)`` tuple properties and reports see."""
        sid, *lids = self._packing.ids(node)
        return (self._shared_ids.values[sid], *map(self._local, lids))

    def _start(self) -> int:
        starts = [self._local_ids.id((m.start, m.locals)) for m in self.program.threads]
        return self._packing.pack([self._shared_ids.id(self.program.shared), *starts])

    def root(self) -> int:
        """The initial state."""
        return self._canon(self._start())

    def key(self, node: int) -> Hashable:
        """Nodes are already canonical keys."""
        return node

    def _canon(self, node: int) -> int:
        for mask, threads, canon, _sizes in self._groups:
            part = node & mask
            got = canon.get(part)
            if got is None:
                lids = sorted((self._field(part, i) for i in threads), key=self._rank)
                put = self._packing.put
                got = canon[part] = sum(put(i + 1, x) for i, x in zip(threads, lids, strict=True))
            node += got - part
        return node

    def orbit_size(self, key: int) -> int:
        """How many concrete states a canonical state stands for (a multinomial per group)."""
        size = 1
        for mask, threads, _canon, sizes in self._groups:
            part = key & mask
            got = sizes.get(part)
            if got is None:
                counts = Counter(self._field(part, i) for i in threads)
                got = factorial(len(threads))
                for c in counts.values():
                    got //= factorial(c)
                sizes[part] = got
            size *= got
        return size

    def _succ(self, i: int, sid: int, lid: int) -> tuple[Succ, ...]:
        k = (self._code[i], sid, lid)
        got = self._succs.get(k)
        if got is not None:
            return got
        shared, (pc, loc) = self._shared_ids.values[sid], self._local(lid)
        out: list[Succ] = []
        for tix, t in enumerate(self._by_pc[i].get(pc, ())):
            try:
                if t.guard is not None and not t.guard(shared, loc):
                    continue
                ns, nl = (shared, loc) if t.act is None else t.act(shared, loc)
                new = (self._shared_ids.id(ns), self._local_ids.id((t.dst, nl)))
                out.append((len(out), tix, *new, t.reads, t.writes, None, t))
            except Violation as v:
                out.append((len(out), tix, sid, lid, t.reads, t.writes, v, t))
            except Exception as exc:  # an unmodelled path or a bug in pinlab (system.crash)
                out.append((len(out), tix, sid, lid, t.reads, t.writes, crash(exc), t))
        got = self._succs[k] = tuple(out)
        return got

    def _entry(self, i: int, masked: int) -> Entry:
        """Fill thread ``i``'s table for the state fields ``masked`` (only its own)."""
        put = self._packing.put
        sid, lid = self._packing.get(masked, 0), self._field(masked, i)
        was = put(0, sid) + put(i + 1, lid)
        regroup = self._group[i] is not None
        steps = tuple(
            (c, tix, lid, r, w, put(0, ns) + put(i + 1, nl) - was, err, regroup and nl != lid)
            for c, tix, ns, nl, r, w, err, _t in self._succ(i, sid, lid)
        )
        odd = any(st[6] is not None or st[7] for st in steps)
        # one tuple per move, shared by every entry, keeps the tables small
        moves = tuple(
            self._infos.setdefault((i, st[0]), ((i, st[0]), None))
            if st[6] is None
            else ((i, st[0]), st[6])
            for st in steps
        )
        adds = tuple(st[5] for st in steps)
        entry = self._threads[i][2][masked] = (adds, moves, odd, steps, lid)
        return entry

    def _entry_of(self, node: int, i: int) -> Entry:
        _i, mask, table = self._threads[i]
        return table.get(node & mask) or self._entry(i, node & mask)

    # the array search (levels.py) works in ids; these are its view of the tables
    def start_ids(self) -> tuple[int, ...]:
        """The shared id and each thread's local id at the start."""
        return self._packing.ids(self._start())

    def successor_ids(self, i: int, sid: int, lid: int) -> list[tuple[int, int, Violation | None]]:
        """Thread ``i``'s steps from these ids, in choice order: new ids, or the error."""
        return [(s[2], s[3], s[6]) for s in self._succ(i, sid, lid)]

    def id_counts(self) -> tuple[int, int]:
        """How many shared values and local states have ids so far."""
        return len(self._shared_ids.values), len(self._local_ids.values)

    def node(self, ids: tuple[int, ...]) -> int:
        """The (unreduced) node of a state given by its ids."""
        return self._packing.pack(ids)

    @property
    def codes(self) -> tuple[int, ...]:
        """Per thread, the first thread running the same machine (they share tables)."""
        return self._code

    @property
    def per_state_invariants(self) -> bool:
        """Whether some invariant may read locals, so it is judged in every state."""
        return bool(self._by_state)

    def invariant_reads(self) -> tuple[Footprint, ...]:
        """What each invariant reads (``None``: everything)."""
        return tuple(inv.reads for inv in self._invariants)

    def expand(self, node: int) -> list[Child]:
        """Every enabled (thread, choice) with its successor state."""
        out: list[Child] = []
        for i, mask, table in self._threads:
            entry = table.get(node & mask) or self._entry(i, node & mask)
            for choice, tix, lid, reads, writes, add, err, regroup in entry[3]:
                if err is not None:
                    out.append((i, choice, tix, lid, reads, writes, None, None, err))
                    continue
                child = node + add
                if regroup:
                    child = self._canon(child)
                out.append((i, choice, tix, lid, reads, writes, child, child, None))
        return out

    def successors(self, node: int) -> Kids:
        """:meth:`expand` for the plain search, as :data:`system.Kids` describes."""
        if self._groups:
            return self._odd_successors(node)
        adds: list[int] = []
        infos: list[Info] = []
        for i, mask, table in self._threads:
            more, moves, odd, _steps, _lid = table.get(node & mask) or self._entry(i, node & mask)
            if odd:
                return self._odd_successors(node)
            adds += more
            infos += moves
        # each key is made as the search takes it, to be found seen, mostly
        drawn = iter(adds)
        return map(node.__add__, drawn), drawn, None, infos

    def _odd_successors(self, node: int) -> Kids:
        """:meth:`successors` where some children are more than an addition away."""
        keys: list[int | None] = []
        infos: list[Info] = []
        for i, mask, table in self._threads:
            adds, moves, odd, steps, _lid = table.get(node & mask) or self._entry(i, node & mask)
            keys += [self._child(node, st) for st in steps] if odd else [node + a for a in adds]
            infos += moves
        drawn = iter(keys)
        return drawn, drawn, None, infos

    def _child(self, node: int, st: Step) -> int | None:
        if st[6] is not None:
            return None
        return self._canon(node + st[5]) if st[7] else node + st[5]

    def invariant(self, node: int) -> tuple[tuple[str, str], ...]:
        """Every invariant that fails in this state, each with a rendering of it."""
        if not self._invariants:
            return ()
        failed = self._failing.get(node & self._shared)
        if failed is None:
            failed = self._failing[node & self._shared] = self._fails(self._by_shared, node)
        if self._by_state:
            failed |= self._fails(self._by_state, node)
        if not failed:
            return ()
        shown = self._render(self._state(node))
        return tuple((inv.name, shown) for k, inv in enumerate(self._invariants) if k in failed)

    def _fails(self, which: list[int], node: int) -> frozenset[int]:
        if not which:
            return frozenset()
        state = self._state(node)
        return frozenset(k for k in which if not self._invariants[k].check(state))

    def _render(self, state: tuple[Any, ...]) -> str:
        if self.program.render is not None:
            return self.program.render(state)
        return repr(state[0])

    def _finished(self, i: int, local: Any) -> bool:
        m: Machine = self.program.threads[i]
        return local[0] in m.ends or local[0] not in self._by_pc[i]

    def terminal(self, node: int) -> Terminal | None:
        """For a state without enabled steps: a failing final check, a deadlock, or None."""
        state = self._state(node)
        pos = self.positions(node)
        if not all(self._finished(i, state[i + 1]) for i in range(self.n)):
            return ("deadlock", "deadlock", "every thread is blocked", pos)
        for fc in self.program.finals:
            if not fc.check(state):
                return ("final", fc.name, self._render(state), pos)
        return None

    def _position(self, i: int, local: Any) -> str:
        pc, loc = local
        ts = self._by_pc[i].get(pc, ())
        nxt = f" before {ts[0].label!r} (line {ts[0].line})" if ts else " (finished)"
        shown = f" locals={loc!r}" if loc != () else ""
        return f"{self.names[i]} at {pc}{nxt}{shown}"

    def positions(self, node: int) -> tuple[str, ...]:
        """Every thread's position, for deadlock reports and traces."""
        state = self._state(node)
        return tuple(self._position(i, state[i + 1]) for i in range(self.n))

    def _step(self, node: int, move: Move) -> tuple[int, Violation | None]:
        """One move, without canonicalising the result."""
        st = self._entry_of(node, move[0])[3][move[1]]
        return (node, st[6]) if st[6] is not None else (node + st[5], None)

    def concretise(self, moves: list[Move]) -> list[Move]:
        """Turn moves taken in canonical states into moves of the unreduced program."""
        if not self.symmetry:
            return list(moves)
        state = self._start()
        out: list[Move] = []
        for tid, choice in moves:
            real = tid
            group = self._group[tid]
            if group is not None:
                lid = self._field(self._canon(state), tid)
                real = next(i for i in group if self._field(state, i) == lid)
            out.append((real, choice))
            state, err = self._step(state, (real, choice))
            if err is not None:
                break
        return out

    def status(self, node: int, tid: int) -> tuple[int, str]:
        """How many choices thread ``tid`` has here, and its position."""
        entry = self._entry_of(node, tid)
        return len(entry[3]), self._position(tid, self._local(entry[4]))

    def step(self, node: int, move: Move) -> tuple[int, Violation | None]:
        """Run one move (assumed to fit; see :func:`status`)."""
        child, err = self._step(node, move)
        return (node, err) if err is not None else (self._canon(child), None)

    def where(self, node: int, move: Move) -> str:
        """The transition a move takes, with its source line."""
        tid, choice = move
        t = self._succ(tid, self._packing.get(node, 0), self._field(node, tid))[choice][7]
        src = f"{self.program.source}:" if self.program.source else "line "
        return f"{t.src} -> {t.dst}  {src}{t.line}  {t.label}"

    def changes(self, node: int, child: int) -> str:
        """What a step changed in the shared data and in locals."""
        parts = []
        before, after = self._state(node), self._state(child)
        old, new = before[0], after[0]
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
            a, b = before[i + 1][1], after[i + 1][1]
            if a != b:
                parts.append(f"{self.names[i]}.locals: {a!r}->{b!r}")
        return ", ".join(parts)
