"""When two steps of different threads commute, for partial-order reduction."""

from __future__ import annotations

from pinlab.interleave import Footprint

Reads = tuple[Footprint, ...]


def independent(r1: Footprint, w1: Footprint, r2: Footprint, w2: Footprint) -> bool:
    """Steps of two threads commute when neither writes what the other reads or writes."""
    if r1 is None or w1 is None or r2 is None or w2 is None:
        return False
    return not (w1 & r2 or w1 & w2 or w2 & r1)


def commute(w1: Footprint, w2: Footprint, invariants: Reads) -> bool:
    """No invariant reads what both steps write (an invariant counts as a reader).

    ``None`` reads (the invariant reads everything, thread positions included) make
    every pair of steps dependent.
    """
    for reads in invariants:
        if reads is None or (w1 is not None and w2 is not None and w1 & reads and w2 & reads):
            return False
    return True
