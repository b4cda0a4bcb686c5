"""Generator threads rebuilt from (function, yield index, locals) behave as if never stopped."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Generator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinlab.explore import GenThread, Options, WorldProgram, explore
from pinlab.explore.resume import NotResumable, capture, pack, rebuild, resumable, unpack
from pinlab.explore.world import WorldSystem
from pinlab.interleave import Await, Point, run_to_completion
from tests.explore.programs import build_world, random_spec

Gen = Generator[Any, None, Any]


class W:
    """A world with a value and a log of what the code did to it."""

    def __init__(self) -> None:
        self.x = 1
        self.items = [3, 1, 2]
        self.log: list[object] = []


def leaf(w: W, n: int) -> Gen:
    total = 0
    for i in range(n):
        w.log.append(("leaf", i))
        yield Point(f"leaf {i}")
        total += i + w.x
    return total


def order_of_reads(w: W) -> Gen:
    # w.x is read before the yield, so a write made while suspended must not show
    a = w.x + ((yield "p") or 0)
    w.x = 10
    b = w.x * (yield "q") if False else w.x + len((yield "r") or "ab")
    w.log.append((a, b))
    return a + b


def short_circuit(w: W) -> Gen:
    ok = w.x == 5 and (yield "never")
    other = w.x == 1 or (yield "never either")
    third = (yield "taken") or (yield "also taken")
    w.log.append((ok, other, third))


def conditional_expressions(w: W) -> Gen:
    v = (yield "a") if w.x else (yield "b")
    d = {"k": w.x, "y": (yield "in a dict")}
    w.log.append(sorted(d))
    if not (yield from leaf(w, 1)):
        w.log.append("zero")
    return v


def loops(w: W) -> Gen:
    for item in w.items:  # a list: indexed, so appends made while suspended are seen
        w.log.append(item)
        yield Point("item")
        if item == 1:
            w.items.append(9)
    for i, ch in enumerate("xy"):  # any other iterable is copied when the loop starts
        w.log.append((i, ch))
        yield "ch"
    n = 0
    while (yield "cond") is None and n < 2:
        n += 1
    else_taken = False
    for _ in range(2):
        yield "spin"
    else:
        else_taken = True
    w.log.append(else_taken)


def exceptions(w: W) -> Gen:
    try:
        yield "in try"
        w.log.append(1 // (w.x - 1))
    except ZeroDivisionError:
        w.log.append("caught")
    else:
        yield "in else"
    finally:
        w.log.append("finally")
    r = 0
    r += yield from leaf(w, 2)
    return (yield from leaf(w, 1)), r


class Device:
    """Delegation through a bound method: its self must be restored too."""

    def __init__(self) -> None:
        self.writes = 0

    def dma(self, w: W) -> Gen:
        self.writes += 1
        yield Await("device ready", lambda: w.x >= 0)
        self.writes += 1
        w.log.append(("dma", self.writes))


def methods(w: W) -> Gen:
    dev = Device()
    yield from dev.dma(w)
    yield from dev.dma(w)
    w.log.append(dev.writes)


CASES: list[Callable[[W], Gen]] = [
    order_of_reads,
    short_circuit,
    conditional_expressions,
    loops,
    exceptions,
    methods,
]


def _drive(gen: Gen, w: W, cut: int | None = None) -> tuple[list[object], object]:
    """Run to the end; at each suspension the world changes as another CPU would."""
    out: list[object] = []
    try:
        value = next(gen)
        while True:
            out.append(value.label if isinstance(value, Point | Await) else value)
            w.x += 1
            value = gen.send(None)
    except StopIteration as stop:
        return out, stop.value


@pytest.mark.parametrize("body", CASES, ids=lambda f: f.__name__)
def test_rebuilt_at_every_yield_runs_on_as_the_original(body: Callable[[W], Gen]) -> None:
    w0 = W()
    want, want_ret = _drive(body(w0), w0)
    assert resumable(body) is not body
    for cut in range(1, len(want) + 1):
        w = W()
        gen = resumable(body)(w)
        seen = [next(gen)]
        for _ in range(cut - 1):
            w.x += 1
            seen.append(gen.send(None))
        w2, chain = unpack(pack((w, capture(gen, body))))
        again = rebuild(chain)
        first = next(again)  # arriving re-yields what the original yielded there
        label = first.label if isinstance(first, Point | Await) else first
        last = seen[-1]
        assert label == (last.label if isinstance(last, Point | Await) else last)
        w2.x += 1
        rest, ret = _drive_from(again, w2)
        assert [*want[:cut], *rest] == want, f"cut after {cut} yields"
        assert (ret, w2.log, w2.x, w2.items) == (want_ret, w0.log, w0.x, w0.items)


def _drive_from(gen: Gen, w: W) -> tuple[list[object], object]:
    out: list[object] = []
    try:
        while True:
            value = gen.send(None)
            out.append(value.label if isinstance(value, Point | Await) else value)
            w.x += 1
    except StopIteration as stop:
        return out, stop.value


def test_reads_before_a_yield_keep_their_place() -> None:
    """``w.x + (yield)`` reads w.x before suspending, in the rewrite as in Python."""
    for f in (order_of_reads, resumable(order_of_reads)):
        w = W()
        gen = f(w)
        assert next(gen) == "p"
        w.x = 100
        assert gen.send(None) == "r"
        with pytest.raises(StopIteration):
            gen.send(None)
        assert w.log == [(1, 12)]


def with_block(w: W) -> Gen:
    class Lock:
        def __enter__(self) -> None:
            w.log.append("enter")

        def __exit__(self, *exc: object) -> None:
            w.log.append("exit")

    with Lock():
        yield "inside"


def in_handler(w: W) -> Gen:
    try:
        w.log.append(1 // 0)
    except ZeroDivisionError:
        yield "handling"


def chained(w: W) -> Gen:
    if 0 < (yield "c") < 2:
        w.log.append("between")


@pytest.mark.parametrize(
    ("body", "what"),
    [(with_block, "with statement"), (in_handler, "except or finally"), (chained, "chained")],
)
def test_refused_constructs_are_named_with_their_line(body: Callable[[W], Gen], what: str) -> None:
    assert resumable(body) is body
    gen = body(W())
    next(gen)
    first = inspect.getsourcelines(body)[1]
    with pytest.raises(
        NotResumable, match=rf"{body.__name__}: .*:(\d+): a yield in .*{what}"
    ) as err:
        capture(gen, body)
    line = int(err.value.args[0].split(":")[2])
    assert first < line <= first + 10


def test_a_refused_thread_is_replayed_and_the_result_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pinlab.explore.world.POLICY", "always")

    def world_key(w: W) -> tuple[int, int]:
        return (w.x, len(w.log))

    program = WorldProgram(
        "refused", W, (GenThread("A", with_block), GenThread("B", leaf_body)), world_key
    )
    plain = WorldProgram(
        "plain", W, (GenThread("A", leaf_body), GenThread("B", leaf_body)), world_key
    )
    res = explore(program, Options(shrink=False))
    assert res.complete and res.states > 1
    assert any("replayed from the start" in n and "with statement" in n for n in res.notes)
    assert explore(plain, Options(shrink=False)).notes == []


def leaf_body(w: W) -> Gen:
    return (yield from leaf(w, 2))


def test_policies_reach_the_same_states() -> None:
    """Restoring is a way back to a state, never a different search."""

    def world_key(w: W) -> tuple[object, ...]:
        return (w.x, tuple(w.items), tuple(map(repr, w.log)))

    program = WorldProgram(
        "mixed", W, (GenThread("A", loops), GenThread("B", exceptions)), world_key
    )
    counts = set()
    for policy in ("never", "always", "auto"):
        system = WorldSystem(program)
        system.policy = policy
        seen = {system.key(system.root())}
        stack = [system.root()]
        while stack:
            for child in system.expand(stack.pop()):
                if child[7] not in seen:
                    seen.add(child[7])
                    stack.append(child[6])
        counts.add(frozenset(seen))
        if policy == "always":
            assert system.restores > 0
    assert len(counts) == 1


def _kernel_generators() -> list[Callable[..., Gen]]:
    import importlib
    import pkgutil

    import pinlab.kernel

    found = []
    for info in pkgutil.walk_packages(pinlab.kernel.__path__, "pinlab.kernel."):
        module = importlib.import_module(info.name)
        for f in vars(module).values():
            if inspect.isgeneratorfunction(f) and f.__module__ == module.__name__:
                found.append(f)
    return found


def test_every_interleavable_kernel_function_can_be_rebuilt() -> None:
    """The kernel model's threads will be these functions: none may force a replay."""
    found = _kernel_generators()
    assert len(found) > 100
    refused = [f.__qualname__ for f in found if resumable(f) is f]
    assert refused == []


def _pinning_kernel() -> Any:
    from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
    from pinlab.kernel.process import new_task, sys_mmap
    from pinlab.kernel.state import BootParams, boot
    from pinlab.kernel.uaccess import user_access

    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    prot, flags = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
    addr = run_to_completion(sys_mmap(k, task, None, 2 << 12, prot, flags))
    for off in (0, 4096):
        run_to_completion(user_access(k, task, addr + off, True, 1))
    return k


def _pin_twice(k: Any) -> Gen:
    from pinlab.kernel.mm.gup import page_array
    from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
    from pinlab.kernel.mm.gup_flags import FOLL_WRITE
    from pinlab.kernel.mm.gup_unpin import unpin_user_pages

    mm = next(iter(k.mms.values()))
    start = mm.vmas[0].vm_start
    for _ in range(2):
        pages = page_array(2)
        got = yield from pin_user_pages_fast(k, mm, start, 2, FOLL_WRITE, pages)
        yield Point("dma")
        yield from unpin_user_pages(k, pages, got)


def test_kernel_threads_restored_reach_the_states_replay_reaches() -> None:
    from pinlab.kernel.state import kernel_digest

    program = WorldProgram(
        "pin-twice",
        _pinning_kernel,
        (GenThread("A", _pin_twice), GenThread("B", _pin_twice)),
        kernel_digest,
    )
    found = {}
    for policy in ("never", "always"):
        system = WorldSystem(program)
        system.policy = policy
        root = system.root()
        seen = {system.key(root): root}
        stack = [root]
        while stack:
            for child in system.expand(stack.pop()):
                assert child[8] is None, child[8]
                if child[7] not in seen:
                    seen[child[7]] = child[6]
                    stack.append(child[6])
        found[policy] = set(seen)
        assert (system.restores > 0) == (policy == "always")
        assert system.replay_reason is None
    assert found["never"] == found["always"]
    assert len(found["never"]) > 50


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_restoring_is_the_same_search_as_replaying(seed: int) -> None:
    import pinlab.explore.world as backend

    program = build_world(random_spec(random.Random(seed), seed, world=True))
    got = {}
    for policy in ("never", "always"):
        backend.POLICY = policy
        try:
            res = explore(program, Options(count_all=True, shrink=False))
        finally:
            backend.POLICY = "auto"
        got[policy] = (
            res.states,
            res.transitions,
            res.schedules,
            res.violating_states,
            [(c.kind, c.name, c.schedule) for c in res.counterexamples],
            res.notes,
        )
    assert got["never"] == got["always"]


def test_breadth_first_order_restores_instead_of_replaying() -> None:
    """A queued node keeps a weak reference to its snapshot: prefixes are not replayed."""

    def world_key(w: W) -> tuple[object, ...]:
        return (w.x, tuple(w.items), tuple(map(repr, w.log)))

    program = WorldProgram("bfs", W, (GenThread("A", loops), GenThread("B", exceptions)), world_key)
    replayed = {}
    for policy in ("never", "always"):
        system = WorldSystem(program)
        system.policy = policy
        queue = [system.root()]
        seen = {system.key(queue[0])}
        while queue:
            node, queue = queue[0], queue[1:]
            for child in system.expand(node):
                if child[7] not in seen:
                    seen.add(child[7])
                    queue.append(child[6])
        replayed[policy] = system.replayed_steps
    # restoring replays only the steps since the last branching node, not the prefix
    assert replayed["always"] * 4 < replayed["never"], replayed
