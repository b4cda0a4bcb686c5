"""The kernel's footprints pass the checked mode over catalog probes raced by a second thread.

Each program is tests/explore/test_kernel_threads.py's ``fault`` program of a probe (the
probe's ops as one thread, and a second thread of its process that writes to the probe's
first page once it is mapped) built with ``kernel_program(..., checked=True)``: every
step's frame-table reads and writes must lie in the footprint its ``Point`` declared.

Each is searched restoring a snapshot at every branching node (``POLICY = "always"``,
which yields each pending point again on the restored kernel) and replaying schedules
from the start (``"never"``, which keeps points yielded before other threads' steps: the
explorer then takes a point whose footprint another step may have changed as unknown).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import pytest

import pinlab.explore.world as world_backend
from pinlab.explore import GenThread, Options, explore
from pinlab.realkernel.catalog import by_name
from pinlab.realkernel.model_thread import fault_first_page, probe_boot, probe_thread
from pinlab.scenarios.harness import kernel_program

CAP = 1  # pages a region, as test_kernel_threads.py
MAX_STATES = 2000

# a representative probe of each kind: anon, THP, ext4 MAP_SHARED, fork, O_DIRECT,
# io_uring, vmsplice, and hugetlb, tmpfs and ramfs
PROBES = (
    "longterm-anon-private",
    "longterm-anon-shared",
    "pins-uring-thp",
    "longterm-ext4-shared",
    "partial-uring-ext4-shared",
    "fork-pinned-small",
    "fork-pinned-thp",
    "fork-unpinned-refs",
    "odirect-read-pins",
    "odirect-write-pins",
    "pins-uring-small",
    "pins-uring-close",
    "fuzzy-threshold",
    "partial-uring-hugetlb-anon",
    "longterm-memfd-private",
    "longterm-ramfs-shared",
    "process-vm-readv-pins",
)


@contextmanager
def policy(way_back: str) -> Iterator[None]:
    """The generator backend's way back to a state, forced (see the module docstring)."""
    saved = world_backend.POLICY
    world_backend.POLICY = way_back
    try:
        yield
    finally:
        world_backend.POLICY = saved


# replaying from the start is slow: a few probes of different kinds, fewer states
REPLAYED = ("longterm-anon-private", "odirect-read-pins", "pins-uring-small")
REPLAYED_STATES = 400


@pytest.mark.parametrize(
    ("name", "way_back"),
    [(name, "always") for name in PROBES] + [(name, "never") for name in REPLAYED],
)
def test_checked_fault_program_finds_no_footprint_error(name: str, way_back: str) -> None:
    probe = by_name(name)
    program = kernel_program(
        f"checked-fault-{name}",
        partial(probe_boot, (probe,), cap_pages=CAP),
        (GenThread(name, probe_thread(probe, CAP)), GenThread("fault", fault_first_page)),
        checked=True,
    )
    with policy(way_back):
        cap = MAX_STATES if way_back == "always" else REPLAYED_STATES
        result = explore(program, Options(strategy="dfs", shrink=False, max_states=cap))
    assert result.states > 1
    assert not result.errors, [str(e) for e in result.errors]
