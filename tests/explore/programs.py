"""Small programs with known answers, and random programs built from plain-data specs."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

from pinlab.explore import (
    FinalCheck,
    GenThread,
    Invariant,
    Machine,
    MachineProgram,
    Transition,
    WorldProgram,
)
from pinlab.interleave import Await, Point, Violation, Yield

E: frozenset[str] = frozenset()


def fs(*names: str) -> frozenset[str]:
    return frozenset(names)


class X(NamedTuple):
    x: int


def lost_update_machine() -> MachineProgram:
    """Two threads each do ``tmp = x; x = tmp + 1`` as two steps."""
    m = Machine(
        "incr",
        "load",
        (
            Transition(
                "load", "store", "tmp = x", act=lambda g, _l: (g, g.x), reads=fs("x"), writes=E
            ),
            Transition(
                "store",
                "done",
                "x = tmp + 1",
                act=lambda _g, tmp: (X(tmp + 1), 0),
                reads=E,
                writes=fs("x"),
            ),
        ),
        locals=0,
    )
    return MachineProgram(
        "lost-update", X(0), (m, m), finals=(FinalCheck("x == 2", lambda s: s[0].x == 2),)
    )


class Counter:
    def __init__(self) -> None:
        self.x = 0
        self.lock: int | None = None


def _incr(w: Counter) -> Generator[Yield, None, None]:
    tmp = w.x
    yield Point("between load and store", fs("x"), fs("x"))
    w.x = tmp + 1


def lost_update_world() -> WorldProgram:
    """The lost update with generator threads over a world."""
    return WorldProgram(
        "lost-update-world",
        Counter,
        (GenThread("A", _incr), GenThread("B", _incr)),
        lambda w: w.x,
        finals=(FinalCheck("x == 2", lambda w: w.x == 2),),
    )


def _locked_incr(tid: int) -> Any:
    def body(w: Counter) -> Generator[Yield, None, None]:
        yield Await("lock", lambda: w.lock is None, fs("lock"), fs("lock"))
        w.lock = tid
        yield Point("load", fs("x"), E)
        tmp = w.x
        yield Point("store", E, fs("x"))
        w.x = tmp + 1
        yield Point("unlock", E, fs("lock"))
        w.lock = None

    body.__qualname__ = f"locked_incr_{tid}"
    return body


def locked_counter_world(locked: bool = True) -> WorldProgram:
    """A lock and a counter: with the lock the increments cannot be lost."""
    threads = (
        (GenThread("A", _locked_incr(0), E, E), GenThread("B", _locked_incr(1), E, E))
        if locked
        else (GenThread("A", _incr), GenThread("B", _incr))
    )
    return WorldProgram(
        f"counter-{'locked' if locked else 'racy'}",
        Counter,
        threads,
        lambda w: (w.x, w.lock),
        invariants=(Invariant("lock owner valid", lambda w: w.lock in (None, 0, 1), fs("lock")),),
        finals=(FinalCheck("x == 2", lambda w: w.x == 2),),
    )


class Two(NamedTuple):
    x: int
    y: int


def steps_machine(name: str, var: str, n: int) -> Machine:
    """A thread of ``n`` unblocked steps, each incrementing shared ``var``."""
    ts = tuple(
        Transition(
            f"s{i}",
            f"s{i + 1}",
            f"{var} += 1",
            act=lambda g, loc, v=var: (g._replace(**{v: getattr(g, v) + 1}), loc),
            reads=fs(var),
            writes=fs(var),
        )
        for i in range(n)
    )
    return Machine(name, "s0", ts)


def two_threads(n: int, m: int, shared_var: bool) -> MachineProgram:
    """Threads of n and m steps; on one variable, or on disjoint ones."""
    return MachineProgram(
        f"two-{n}-{m}-{'same' if shared_var else 'disjoint'}",
        Two(0, 0),
        (steps_machine("A", "x", n), steps_machine("B", "x" if shared_var else "y", m)),
        invariants=(
            Invariant("x small", lambda s: s[0].x < 100, fs("x")),
            Invariant("y small", lambda s: s[0].y < 100, fs("y")),
        ),
    )


def _steps_world(var: str, n: int) -> Any:
    def body(w: dict[str, int]) -> Generator[Yield, None, None]:
        for i in range(n):
            if i:
                yield Point(f"{var} step {i}", fs(var), fs(var))
            w[var] += 1

    body.__qualname__ = f"steps_{var}"
    return body


def disjoint_world(n: int, m: int) -> WorldProgram:
    """Generator threads of n and m steps on disjoint variables."""
    return WorldProgram(
        f"disjoint-world-{n}-{m}",
        lambda: {"x": 0, "y": 0},
        (
            GenThread("A", _steps_world("x", n), fs("x"), fs("x")),
            GenThread("B", _steps_world("y", m), fs("y"), fs("y")),
        ),
        lambda w: (w["x"], w["y"]),
    )


def long_dfs_machine(n: int) -> MachineProgram:
    """DFS runs thread A's n steps before B's first; BFS finds the 2-step violation."""
    return MachineProgram(
        f"long-dfs-{n}",
        Two(0, 0),
        (steps_machine("A", "x", n), steps_machine("B", "y", n)),
        invariants=(
            Invariant(
                "not both started", lambda s: not (s[0].x >= 1 and s[0].y >= 1), fs("x", "y")
            ),
        ),
    )


def live_lock_machine() -> MachineProgram:
    """Two threads flip a bit forever: infinite runs, finitely many states."""
    flip = Machine(
        "flip",
        "loop",
        (
            Transition(
                "loop",
                "loop",
                "x = 1 - x",
                act=lambda g, loc: (X(1 - g.x), loc),
                reads=fs("x"),
                writes=fs("x"),
            ),
        ),
        ends=frozenset({"loop"}),
    )
    return MachineProgram(
        "flip",
        X(0),
        (flip, flip),
        invariants=(Invariant("x is a bit", lambda s: s[0].x in (0, 1), fs("x")),),
    )


class Pet(NamedTuple):
    flag0: int
    flag1: int
    turn: int


def _peterson_thread(me: int, fair_wait: bool) -> Machine:
    other = 1 - me
    mine, theirs = f"flag{me}", f"flag{other}"

    def wait_guard(g: Any, _l: Any) -> bool:
        return bool(getattr(g, theirs) == 0 or g.turn == me)

    ts = [
        Transition(
            "idle",
            "set_turn",
            f"{mine} = 1",
            act=lambda g, loc: (g._replace(**{mine: 1}), loc),
            reads=E,
            writes=fs(mine),
        ),
        Transition(
            "set_turn",
            "wait",
            f"turn = {other}",
            act=lambda g, loc: (g._replace(turn=other), loc),
            reads=E,
            writes=fs("turn"),
        ),
        Transition(
            "wait",
            "cs",
            f"await {theirs} == 0 or turn == {me}",
            guard=wait_guard,
            reads=fs(theirs, "turn"),
            writes=E,
        ),
        Transition(
            "cs",
            "done",
            f"{mine} = 0",
            act=lambda g, loc: (g._replace(**{mine: 0}), loc),
            reads=E,
            writes=fs(mine),
        ),
    ]
    if not fair_wait:  # busy-wait: spin while the entry condition is false
        ts.append(
            Transition(
                "wait",
                "wait",
                "spin",
                guard=lambda g, loc: not wait_guard(g, loc),
                reads=fs(theirs, "turn"),
                writes=E,
            )
        )
    return Machine(f"P{me}", "idle", tuple(ts))


def peterson_machine(busy_wait: bool, broken: bool = False) -> MachineProgram:
    """Peterson's mutual exclusion; ``broken`` sets turn to itself (no exclusion)."""
    threads = (_peterson_thread(0, not busy_wait), _peterson_thread(1, not busy_wait))
    if broken:
        threads = tuple(
            Machine(
                m.name,
                m.start,
                tuple(
                    t
                    if t.label != f"turn = {1 - i}"
                    else Transition(
                        t.src,
                        t.dst,
                        f"turn = {i}",
                        act=lambda g, loc, i=i: (g._replace(turn=i), loc),
                        reads=E,
                        writes=fs("turn"),
                    )
                    for t in m.transitions
                ),
            )
            for i, m in enumerate(threads)
        )
    return MachineProgram(
        f"peterson-{'busy' if busy_wait else 'await'}{'-broken' if broken else ''}",
        Pet(0, 0, 0),
        threads,
        invariants=(
            Invariant(
                "mutual exclusion", lambda s: not (s[1][0] == "cs" and s[2][0] == "cs"), None
            ),
        ),
    )


class Locks:
    def __init__(self) -> None:
        self.owner: dict[str, int | None] = {"a": None, "b": None}


def _lock_pair(me: int, first: str, second: str) -> Any:
    def take(w: Locks, lock: str) -> Generator[Yield, None, None]:
        yield Await(f"lock {lock}", lambda: w.owner[lock] is None, fs(lock), fs(lock))
        w.owner[lock] = me

    def body(w: Locks) -> Generator[Yield, None, None]:
        yield from take(w, first)
        yield from take(w, second)
        yield Point("unlock", E, fs(first, second))
        w.owner[first] = w.owner[second] = None

    body.__qualname__ = f"lock_{first}_then_{second}"
    return body


def lock_inversion_world() -> WorldProgram:
    """Thread A takes a then b, thread B takes b then a: an ABBA deadlock."""
    return WorldProgram(
        "abba",
        Locks,
        (
            GenThread("A", _lock_pair(0, "a", "b"), E, E),
            GenThread("B", _lock_pair(1, "b", "a"), E, E),
        ),
        lambda w: tuple(sorted(w.owner.items())),
    )


# ---- random programs from plain-data specs (JSON-able, rebuilt in other processes) ----

OPS = ("set", "inc", "load", "store", "copy", "assert_ne", "await_eq")
MOD = 3


def _op_footprint(op: list[Any]) -> tuple[frozenset[str], frozenset[str]]:
    kind = op[0]
    v = f"v{op[1]}"
    if kind == "set":
        return E, fs(v)
    if kind in ("inc",):
        return fs(v), fs(v)
    if kind == "load":
        return fs(v), E
    if kind == "store":
        return E, fs(v)
    if kind == "copy":
        return fs(f"v{op[2]}"), fs(v)
    return fs(v), E  # assert_ne, await_eq


def _op_transition(t: int, i: int, op: list[Any], src: str, dst: str) -> Transition:
    kind, v = op[0], op[1]
    reads, writes = _op_footprint(op)

    def put(g: tuple[int, ...], var: int, value: int) -> tuple[int, ...]:
        return (*g[:var], value % MOD, *g[var + 1 :])

    if kind == "set":
        act = lambda g, loc: (put(g, v, op[2]), loc)  # noqa: E731
    elif kind == "inc":
        act = lambda g, loc: (put(g, v, g[v] + 1), loc)  # noqa: E731
    elif kind == "load":
        act = lambda g, _l: (g, g[v])  # noqa: E731
    elif kind == "store":
        act = lambda g, loc: (put(g, v, loc + 1), 0)  # noqa: E731
    elif kind == "copy":
        act = lambda g, loc: (put(g, v, g[op[2]]), loc)  # noqa: E731
    elif kind == "assert_ne":

        def act(g: Any, loc: Any) -> tuple[Any, Any]:
            if g[v] == op[2]:
                raise Violation(f"t{t} assert v{v} != {op[2]} at op {i}")
            return g, loc
    else:
        return Transition(
            src,
            dst,
            f"await v{v} == {op[2]}",
            guard=lambda g, _l: g[v] == op[2],
            reads=reads,
            writes=writes,
        )
    return Transition(src, dst, f"{kind} {op[1:]}", act=act, reads=reads, writes=writes)


def _thread_machine(t: int, ops: list[Any], loop: bool) -> Machine:
    ts: list[Transition] = []
    for i, op in enumerate(ops):
        alts = op[1:] if op[0] == "choice" else [op]
        for alt in alts:
            ts.append(_op_transition(t, i, alt, f"p{i}", f"p{i + 1}"))
    if loop:
        ts.append(Transition(f"p{len(ops)}", "p0", "loop", reads=E, writes=E))
    return Machine(f"T{t}", "p0", tuple(ts), locals=0)


def _layout(spec: dict[str, Any]) -> list[int]:
    """Which spec thread each program thread runs (thread 0 twice when symmetric)."""
    n = len(spec["threads"])
    return ([0] if spec["sym"] else []) + list(range(n))


def _properties(
    spec: dict[str, Any], world: bool
) -> tuple[tuple[Invariant, ...], tuple[FinalCheck, ...]]:
    invs = []
    for a, ca, b, cb in spec["invs"]:
        check = (
            (lambda w, a=a, ca=ca, b=b, cb=cb: not (w[a] == ca and w[b] == cb))
            if world
            else (lambda s, a=a, ca=ca, b=b, cb=cb: not (s[0][a] == ca and s[0][b] == cb))
        )
        invs.append(Invariant(f"not v{a}={ca} and v{b}={cb}", check, fs(f"v{a}", f"v{b}")))
    finals = []
    for v, c in spec["finals"]:
        check = (lambda w, v=v, c=c: w[v] != c) if world else (lambda s, v=v, c=c: s[0][v] != c)
        finals.append(FinalCheck(f"final v{v} != {c}", check))
    return tuple(invs), tuple(finals)


def build_machine(spec: dict[str, Any]) -> MachineProgram:
    """A state-machine program from a spec."""
    machines = [_thread_machine(t, ops, spec["loop"][t]) for t, ops in enumerate(spec["threads"])]
    invs, finals = _properties(spec, world=False)
    return MachineProgram(
        f"random-{spec['id']}",
        tuple([0] * spec["vars"]),
        tuple(machines[i] for i in _layout(spec)),
        invs,
        finals,
        symmetric=((0, 2),) if spec["sym"] else (),
    )


def _world_body(t: int, ops: list[Any], loop: bool) -> Any:
    def body(w: list[int]) -> Generator[Yield, None, None]:
        tmp = 0
        while True:
            for i, op in enumerate(ops):
                kind, v = op[0], op[1]
                reads, writes = _op_footprint(op)
                if kind == "await_eq":
                    yield Await(f"op {i}", lambda v=v, c=op[2]: w[v] == c, reads, writes)
                    continue
                yield Point(f"op {i}", reads, writes)
                if kind == "set":
                    w[v] = op[2] % MOD
                elif kind == "inc":
                    w[v] = (w[v] + 1) % MOD
                elif kind == "load":
                    tmp = w[v]
                elif kind == "store":
                    w[v], tmp = (tmp + 1) % MOD, 0
                elif kind == "copy":
                    w[v] = w[op[2]]
                elif w[v] == op[2]:
                    raise Violation(f"t{t} assert v{v} != {op[2]} at op {i}")
            if not loop:
                return
            yield Point("loop", E, E)

    body.__qualname__ = f"T{t}"
    return body


def build_world(spec: dict[str, Any]) -> WorldProgram:
    """A generator-thread program from a spec without choices."""
    bodies = [_world_body(t, ops, spec["loop"][t]) for t, ops in enumerate(spec["threads"])]
    threads = tuple(GenThread(f"T{i}", bodies[i], E, E) for i in _layout(spec))
    invs, finals = _properties(spec, world=True)
    nvars = spec["vars"]
    return WorldProgram(
        f"random-world-{spec['id']}",
        lambda: [0] * nvars,
        threads,
        tuple,
        invs,
        finals,
        symmetric=((0, 2),) if spec["sym"] else (),
    )


def random_spec(rng: Any, ident: int, world: bool) -> dict[str, Any]:
    """A random small program spec (plain data); ``world`` specs have no choices.

    Machine specs often get a nondeterministic choice between a guarded step and
    another step: guards that another thread flips shift the enabled-choice indices,
    which is what a sleep set must not confuse.
    """

    def basic() -> list[Any]:
        kind = rng.choice(OPS)
        v = rng.randrange(2)
        if kind in ("inc", "load", "store"):
            return [kind, v]
        if kind == "copy":
            return [kind, v, 1 - v]
        return [kind, v, rng.randrange(MOD)]

    def op() -> list[Any]:
        if world or rng.random() < 0.6:
            return basic()
        alts = [["await_eq", rng.randrange(2), rng.randrange(MOD)], basic()]
        if rng.random() < 0.3:
            alts.append(basic())
        rng.shuffle(alts)
        return ["choice", *alts]

    nthreads = rng.randint(1, 3)
    return {
        "id": ident,
        "vars": 2,
        "threads": [[op() for _ in range(rng.randint(1, 4))] for _ in range(nthreads)],
        "loop": [rng.random() < 0.15 for _ in range(nthreads)],
        "sym": nthreads <= 2 and rng.random() < 0.5,
        "invs": [[0, rng.randrange(MOD), 1, rng.randrange(MOD)] for _ in range(rng.randint(0, 2))],
        "finals": [[rng.randrange(2), rng.randrange(MOD)] for _ in range(rng.randint(0, 1))],
    }
