"""Sleep sets with the state cache reach every state plain depth-first search reaches.

docs/explorer.md, "Partial-order reduction, and what it guarantees": each cached state
keeps the sleep set it was explored with; reaching it again with a sleep set that lacks
some of those transitions explores exactly those (Godefroid 1996, section 5.3), so sleep
sets prune transitions, never states.  On a program whose threads loop, the depth-first
search comes back to a state it has already entered while that state's first visit put
a step to sleep that the new path has not: pruning the revisit outright loses the states
behind that step (bench/mutation.py sleep_cache_revisit_always_pruned).  The random
programs of test_reduction.py rarely build such a revisit; this one was found by
searching random looping programs for one and shrinking it.
"""

from __future__ import annotations

from typing import Any

from pinlab.explore import Options, explore
from tests.explore.programs import build_machine

PLAIN = Options(count_all=True, shrink=False)
REDUCED = Options(count_all=True, shrink=False, por=True)

# three looping threads over v0, v1 (values mod 3); thread 2 chooses between asserting
# v1 != 1 and waiting for v0 == 0
LOOPING: dict[str, Any] = {
    "id": 248,
    "vars": 2,
    "threads": [
        [["copy", 0, 1], ["inc", 0]],
        [["await_eq", 0, 2], ["set", 1, 1]],
        [["choice", ["assert_ne", 1, 1], ["await_eq", 0, 0]], ["inc", 1]],
    ],
    "loop": [True, True, True],
    "sym": False,
    "invs": [],
    "finals": [],
}


def _verdict(result: Any) -> frozenset[tuple[str, str]]:
    return frozenset((c.kind, c.name) for c in result.counterexamples)


def test_revisit_with_a_smaller_sleep_set_explores_what_was_asleep() -> None:
    program = build_machine(LOOPING)
    plain = explore(program, PLAIN)
    reduced = explore(program, REDUCED)
    assert plain.complete and reduced.complete
    assert plain.states == 243 and plain.violating_states == 27
    assert _verdict(plain) == {("assertion", "t2 assert v1 != 1 at op 0")}
    # sleep sets prune transitions here (the reduction is at work)...
    assert reduced.transitions < plain.transitions
    # ...but never states: the same states, the same violating states, the same verdict
    assert reduced.states == plain.states
    assert reduced.violating_states == plain.violating_states
    assert _verdict(reduced) == _verdict(plain)
