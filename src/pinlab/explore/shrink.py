"""Shrink a counterexample: fewest steps, then fewest context switches, then
lexicographically first, always re-checking the same property.

The search is breadth-first over (state, last thread) on the unreduced program, up to
the length of the schedule being shrunk.  Two schedules reaching the same state with
the same last thread and the same length extend alike, so within a layer only the best
(switches, moves) per (state, last thread) is kept, and a pair reached in an earlier
layer is never better later: the first layer holding a violation of the property holds
the optimum.  If the budget runs out first, the input is returned unchanged and the
result says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Any

from pinlab.explore.program import Program
from pinlab.explore.replay import make_system
from pinlab.explore.schedule import Move
from pinlab.explore.system import outcome_kind

DEFAULT_BUDGET = 200_000


def switches(moves: list[Move] | tuple[Move, ...]) -> int:
    """Context switches: steps whose thread differs from the previous step's."""
    return sum(1 for a, b in itertools.pairwise(moves) if a[0] != b[0])


def _rank(moves: tuple[Move, ...]) -> tuple[int, int, tuple[Move, ...]]:  # for min()
    return len(moves), switches(moves), moves


def shrink(
    program: Program, kind: str, name: str, moves: list[Move], budget: int = DEFAULT_BUDGET
) -> tuple[list[Move], bool]:
    """The best schedule violating property (kind, name), no longer than ``moves``.

    The flag is False when ``moves`` comes back as it was unproven: the budget ran out, or
    the search never met the property again (a property that is not a function of the
    state, which the explorer's model forbids, or a schedule that does not reach it).
    """
    system = make_system(program)
    root = system.root()
    Entry = tuple[int, tuple[Move, ...], Any]
    layer: dict[tuple[Hashable, int], Entry] = {(system.key(root), -1): (0, (), root)}
    seen: set[tuple[Hashable, int]] = set(layer)
    hits: dict[int, list[tuple[Move, ...]]] = {}
    spent = 0
    for depth in range(len(moves) + 1):
        nxt: dict[tuple[Hashable, int], Entry] = {}
        for (_key, last), (sw, path, node) in layer.items():
            spent += 1
            if spent > budget:
                return list(moves), False
            if kind == "invariant" and any(n == name for n, _ in system.invariant(node)):
                hits.setdefault(depth, []).append(path)
            children = system.expand(node)
            if not children:
                term = system.terminal(node)
                if term is not None and (term[0], term[1]) == (kind, name):
                    hits.setdefault(depth, []).append(path)
                continue
            if depth == len(moves):
                continue
            for tid, choice, _tix, _lk, _r, _w, cnode, ckey, err in children:
                cpath = (*path, (tid, choice))
                if err is not None:
                    # only a violation is a counterexample (never an unmodelled path
                    # or an error, whatever its name)
                    if kind == "assertion" and err.name == name and outcome_kind(err) == kind:
                        hits.setdefault(depth + 1, []).append(cpath)
                    continue
                pair = (ckey, tid)
                if pair in seen:
                    continue
                csw = sw + (1 if last not in (-1, tid) else 0)
                old = nxt.get(pair)
                if old is None or (csw, cpath) < old[:2]:
                    nxt[pair] = (csw, cpath, cnode)
        if depth in hits:
            best: tuple[Move, ...] = min(hits[depth], key=_rank)
            return list(best), True
        seen.update(nxt)
        layer = nxt
    return list(moves), False
