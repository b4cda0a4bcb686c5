"""Building blocks for programs that mirror a Promela model step for step.

SPIN's step granularity (``./pan -d``): each guard is its own step, an ``atomic`` or
``d_step`` block whose statements SPIN merges is one step, ``else``, ``skip`` and a
``goto`` that is not merged are steps.  A finished process takes one more step, its
``-end-``, and only while it is the highest-numbered live process (pids die in reverse
order); the shared field ``nlive`` (SPIN's ``_nr_pr``) carries that rule, and since it
is a function of the threads' positions it adds no states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pinlab.explore import Transition

DEAD = "dead"


def fp(names: str) -> frozenset[str]:
    """A footprint from space-separated variable names."""
    return frozenset(names.split())


def step(
    src: str,
    dst: str,
    line: int,
    label: str,
    *,
    guard: Callable[[Any, Any], bool] | None = None,
    act: Callable[[Any, Any], tuple[Any, Any]] | None = None,
    r: str = "",
    w: str = "",
) -> Transition:
    """One Promela step at ``line`` of the model, reading ``r`` and writing ``w``."""
    return Transition(src, dst, label, guard, act, fp(r), fp(w), line)


def end_step(src: str, line: int, pid: int) -> Transition:
    """SPIN's ``-end-`` of process ``pid``: it dies once every higher pid has died."""
    return step(
        src,
        DEAD,
        line,
        "-end-",
        guard=lambda g, _l: g.nlive == pid + 1,
        act=lambda g, loc: (g._replace(nlive=g.nlive - 1), loc),
        r="nlive",
        w="nlive",
    )


def check_byte(value: int, what: str) -> None:
    """Promela ``byte`` wraps at 256; refuse parameters that would wrap."""
    if value > 255:
        raise ValueError(f"{what} can reach {value}, beyond Promela's byte range")
