"""The 2018 customer bug (../shared/seeds/002) searched for on the 4.4 model, without any
design (legacy-get): the scenario is pinlab.scenarios.ext4_bug_2018."""

from __future__ import annotations

import os
from functools import partial

import pytest

from pinlab.explore import GenThread, Options, Result, explore
from pinlab.explore.replay import replay
from pinlab.scenarios.ext4_bug_2018 import THREADS, make_kernel
from pinlab.scenarios.harness import kernel_program

_kernel = partial(make_kernel, "legacy-get")
# The search to the BUG_ON visits ~120,000 states, about ten minutes on a loaded 2-CPU
# machine at today's search speed: opt-in until the explorer is faster.
SLOW = bool(os.environ.get("PINLAB_SLOW_TESTS"))


def _search(threads: tuple[GenThread, ...]) -> Result:
    prog = kernel_program("seed-2018", _kernel, threads)
    return explore(prog, Options(strategy="dfs", cache=True, shrink=False))


@pytest.mark.skipif(
    not SLOW, reason="~120,000 states: set PINLAB_SLOW_TESTS=1, and pytest --timeout=0, to run"
)
def test_reclaim_racing_a_gup_pin_reaches_ext4_writepage_bug_on() -> None:
    res = _search(THREADS)
    assert not res.errors, res.errors
    bugs = [cx for cx in res.counterexamples if "page_buffers" in cx.name]
    assert bugs, (res.counterexamples, res.unmodelled)
    cx = bugs[0]
    again = replay(kernel_program("seed-2018", _kernel, THREADS), cx.schedule)
    assert again.reaches("assertion", cx.name)
    steps = [(step.thread, step.where) for step in again.steps]
    # in order: get_user_pages' grab, reclaim's unmap and buffer release (drop_buffers),
    # the driver's set_page_dirty_lock, and the flusher's ext4_writepage that fires
    want = [
        ("driver", "try_grab_page:get"),
        ("kswapd", "try_to_unmap_one"),
        ("kswapd", "try_to_release_page"),
        ("driver", "folio_mark_dirty"),
        ("flusher", "ext4_writepage"),
    ]
    at = 0
    for thread, label in want:
        hits = [i for i in range(at, len(steps)) if steps[i][0] == thread and label in steps[i][1]]
        assert hits, (thread, label, steps[at:])
        at = hits[0] + 1
    assert steps[-1][0] == "flusher" and "ext4_writepage" in steps[-1][1]


CHECKED_STATES = 1500


def test_checked_footprints_of_the_seed_threads() -> None:
    """The checked mode (tests/scenarios/test_footprints.py) over a bounded search of the same
    threads: every step's frame-table reads and writes lie in its Point's footprint."""
    prog = kernel_program("seed-2018-checked", _kernel, THREADS, checked=True)
    res = explore(prog, Options(strategy="dfs", shrink=False, max_states=CHECKED_STATES))
    assert res.states > 1
    assert not res.errors, [str(e) for e in res.errors]


def test_without_reclaim_no_bug_on() -> None:
    res = _search(tuple(t for t in THREADS if t.name != "kswapd"))
    assert not res.errors, res.errors
    assert not res.counterexamples, res.counterexamples
