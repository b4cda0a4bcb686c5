"""The shared yield vocabulary: running one interleavable function alone."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pinlab.interleave import Await, Point, Violation, Yield, run_to_completion


def _counter(box: list[int], blocked: bool) -> Generator[Yield, None, int]:
    yield "start"
    yield Point("add", reads=frozenset({"x"}), writes=frozenset({"x"}))
    box[0] += 1
    yield Await("wait", lambda: not blocked)
    return box[0]


def test_runs_to_the_return_value() -> None:
    box = [41]
    assert run_to_completion(_counter(box, blocked=False)) == 42
    assert box == [42]


def test_an_await_that_cannot_become_ready_alone_is_a_deadlock() -> None:
    with pytest.raises(Violation) as err:
        run_to_completion(_counter([0], blocked=True))
    assert err.value.name == "deadlock"
    assert "wait" in err.value.detail


def test_violation_carries_its_name() -> None:
    v = Violation("BUG_ON ext4_writepage", "page has no buffers")
    assert v.name == "BUG_ON ext4_writepage"
    assert str(v) == "BUG_ON ext4_writepage: page has no buffers"
