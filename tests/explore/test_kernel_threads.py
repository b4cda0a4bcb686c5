"""Every probe of the real-kernel catalog as an interleavable thread, searched by the explorer.

Each probe's op list runs as one thread (`pinlab.realkernel.model_thread.probe_thread`,
shrunk to ``CAP`` pages a region) over a freshly booted kernel, which is the whole world
(`pinlab.scenarios.harness.kernel_program`: keyed by its digest, threads' locals refer
into it by identity, and a range runs page by page while another thread is alive).
Two programs per probe:

- ``fault``: the probe, and a second thread of its process that writes to the probe's
  first page once it is mapped (`fault_first_page`);
- ``next``: the probe, and the next probe of the catalog in a process of its own.

The same program must give the same states, transitions and verdict whichever way it
is searched: depth-first or breadth-first, and with the generator backend replaying
every schedule prefix from a fresh world (``POLICY = "never"``) or restoring a
snapshot at every branching node (``"always"``, which must not fall back to replaying).
Three searches a program cover both (depth-first with either policy, breadth-first with
snapshots, the cheaper way), since each search is shared by the tests of its row.
The ``next`` programs are too big to search whole here: their depth-first searches stop
at ``NEXT_STATES`` states, in the same order under both policies, and are compared
there.  So are the ``fault`` programs of the probes in ``HEAVY`` (a fork of a pinned THP
copies 512 subpages, about 9,000 steps of the probe alone), searched whole, with
breadth-first search too, only when ``PINLAB_SLOW_TESTS`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial

import pytest

import pinlab.explore.world as world_backend
from pinlab.explore import GenThread, Options, Result, WorldProgram, explore
from pinlab.interleave import run_to_completion
from pinlab.realkernel.catalog import PROBES, Probe, by_name
from pinlab.realkernel.model_thread import fault_first_page, probe_boot, probe_thread
from pinlab.scenarios.harness import kernel_program

CAP = 1  # pages a region (a THP or hugetlb region: one huge page, ranges in it CAP pages)
SLOW = bool(os.environ.get("PINLAB_SLOW_TESTS"))
HEAVY = frozenset({"fork-pinned-thp", "fork-pinned-thp-split"})
HEAVY_STATES = 300
NEXT_STATES = 100
# probe name -> why its searches cannot be compared yet (xfail, strict: noticed when fixed)
XFAIL: dict[str, str] = {}
NAMES = [probe.name for probe in PROBES]


def rows(names: list[str], slow: frozenset[str] = frozenset()) -> list[object]:
    """The probe names as parameters: known failures xfail (strict), slow ones opt-in."""
    out: list[object] = []
    for name in names:
        marks: list[pytest.MarkDecorator] = []
        if name in XFAIL:
            marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[name]))
        if name in slow:
            marks.append(
                pytest.mark.skipif(
                    not SLOW,
                    reason="slow (tens of thousands of states a search): set "
                    "PINLAB_SLOW_TESTS=1, and pytest --timeout=0, to run",
                )
            )
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def next_probe(probe: Probe) -> Probe:
    """The probe after ``probe`` in the catalog (the first after the last)."""
    return PROBES[(NAMES.index(probe.name) + 1) % len(PROBES)]


def program(name: str, variant: str) -> WorldProgram:
    """The probe's thread and the variant's second thread over a kernel booted for both."""
    probe = by_name(name)
    probes: tuple[Probe, ...]
    if variant == "fault":
        probes = (probe,)
        second = GenThread("fault", fault_first_page)
    else:
        other = next_probe(probe)
        probes = (probe, other)
        second = GenThread(other.name, probe_thread(other, CAP))

    return kernel_program(
        f"{variant}-{name}",
        partial(probe_boot, probes, cap_pages=CAP),
        (GenThread(name, probe_thread(probe, CAP)), second),
    )


@contextmanager
def policy(way_back: str) -> Iterator[None]:
    """The generator backend's way back to a state, forced (as bench/world_restore.py does)."""
    saved = world_backend.POLICY
    world_backend.POLICY = way_back
    try:
        yield
    finally:
        world_backend.POLICY = saved


@dataclass(frozen=True)
class Summary:
    """What two searches of one program must agree on."""

    states: int
    transitions: int
    verdict: str
    complete: bool
    limits_hit: tuple[str, ...]
    violating_states: int
    violations: tuple[tuple[str, str], ...]
    unmodelled: tuple[tuple[str, str, int], ...]
    errors: tuple[str, ...]


def summary(r: Result) -> Summary:
    return Summary(
        r.states,
        r.transitions,
        r.verdict,
        r.complete,
        tuple(r.limits_hit),
        r.violating_states,
        tuple(sorted((c.kind, c.name) for c in r.counterexamples)),
        tuple(sorted((u.function, u.reason, u.count) for u in r.unmodelled)),
        tuple(sorted(str(e) for e in r.errors)),
    )


@cache
def search(name: str, variant: str, strategy: str, way_back: str, cap: int | None) -> Summary:
    """One search (kept for the other tests of the row)."""
    with policy(way_back):
        r = explore(
            program(name, variant), Options(strategy=strategy, shrink=False, max_states=cap)
        )
    replayed = [n for n in r.notes if "replayed from the start" in n]
    assert way_back == "never" or not replayed, f"snapshots were not restored: {replayed}"
    return summary(r)


@pytest.mark.parametrize("name", NAMES)
def test_probe_thread_alone_runs_the_probe_and_releases_everything(name: str) -> None:
    """Run alone, the shrunk probe succeeds, in whole-range steps as page by page, and its
    process's exit and the fence leave no task, mm, file, bio or queued work behind."""
    probe = by_name(name)
    outcomes = []
    for fine in (False, True):
        k = probe_boot(probe, cap_pages=CAP)
        k.fine_grained = fine
        outcomes.append(run_to_completion(probe_thread(probe, CAP)(k)))
        assert (k.tasks, k.mms, k.mm_users) == ({}, {}, {})
        assert (k.files, k.bios, k.system_unbound_wq) == ({}, {}, [])
    assert outcomes[0].status == "ok", outcomes[0]
    assert outcomes[1] == outcomes[0]


@pytest.mark.parametrize("name", rows(NAMES, slow=HEAVY))
def test_fault_thread_depth_and_breadth_first_agree(name: str) -> None:
    """Under one policy (snapshots: the cheaper; the next test ties it to replaying)."""
    dfs = search(name, "fault", "dfs", "always", None)
    assert search(name, "fault", "bfs", "always", None) == dfs
    assert dfs.complete and not dfs.errors, dfs


@pytest.mark.parametrize("name", rows(NAMES))
def test_fault_thread_restored_as_replayed(name: str) -> None:
    cap = HEAVY_STATES if name in HEAVY and not SLOW else None
    always = search(name, "fault", "dfs", "always", cap)
    assert search(name, "fault", "dfs", "never", cap) == always
    assert not always.errors, always


@pytest.mark.parametrize("name", rows(NAMES))
def test_next_probe_restored_as_replayed(name: str) -> None:
    always = search(name, "next", "dfs", "always", NEXT_STATES)
    assert search(name, "next", "dfs", "never", NEXT_STATES) == always
    assert not always.errors, always
