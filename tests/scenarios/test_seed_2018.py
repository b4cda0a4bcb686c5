"""The 2018 customer bug (../shared/seeds/002) searched for on the 4.4 model.

An ext4 file mounted data=journal (the report's backtrace, ext4_writepages ->
write_cache_pages -> __writepage -> ext4_writepage, is v4.4.178 fs/ext4/inode.c:2510's
data=journal branch), its block on disk, mapped MAP_SHARED and read-faulted.  Threads: the
driver (get_user_pages(FOLL_WRITE), the device's store, set_page_dirty_lock + put_page),
kswapd reclaiming the page, the flusher writing the file back, and kjournald2 committing
the journal (without a commit no data=journal buffer ever leaves the journal, so reclaim
could never drop it: v4.4.178 fs/jbd2/transaction.c:2022-2023).  Nothing below names the
outcome: the search finds it or not.

KSWAPD_PASSES and FLUSHER_PASSES are bounds, not a schedule: kswapd reaches the page at
the tail of its list at most that many times, the flusher writes the file back at most that
many times; kjournald commits once.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from pinlab.explore import GenThread, Options, Result, explore
from pinlab.explore.replay import replay
from pinlab.interleave import Point, Yield, run_to_completion
from pinlab.kernel.fs import LLONG_MAX, writepages
from pinlab.kernel.fs.jbd2 import jbd2_journal_commit_transaction
from pinlab.kernel.mm.filemap import folio_put_footprint, set_page_dirty_lock
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.page_writeback import LONG_MAX, WB_SYNC_NONE, WritebackControl
from pinlab.kernel.mm.types import AddressSpace, MmStruct
from pinlab.kernel.mm.vmscan import kswapd_reclaim_page
from pinlab.kernel.process import ext4_create, fd_install, fget, new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import kernel_program

PAGE = 4096
ADDR = 0x7F00_0000_0000
ON_DISK = 7  # the file's block, written and fsynced before this page cache existed
DMA = 99  # what the device writes
KSWAPD_PASSES = 3
FLUSHER_PASSES = 3
# The search to the BUG_ON visits ~120,000 states, about ten minutes on a loaded 2-CPU
# machine at today's search speed: opt-in until the explorer is faster.
SLOW = bool(os.environ.get("PINLAB_SLOW_TESTS"))


def _kernel() -> Kernel:
    """4.4, ext4 -o data=journal, a one-page file whose block is on disk, mapped MAP_SHARED
    at ADDR and read-faulted in (no buffers: a fully mapped page is read without them,
    v4.4.178 fs/ext4/readpage.c ext4_mpage_readpages)."""
    k = boot("4.4", BootParams(normal_mb=4))
    k.ext4_data = "journal"
    task = new_task(k)
    file = ext4_create(k, PAGE)
    k.mappings[file.mapping].store[0] = ON_DISK
    fid = fd_install(k, file)
    flags = MAP_SHARED | MAP_FIXED
    prot = PROT_READ | PROT_WRITE
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, prot, flags, fget(k, fid))) == ADDR
    run_to_completion(user_access(k, task, ADDR, False, 0))
    return k


def _mm(k: Kernel) -> MmStruct:
    return next(iter(k.mms.values()))


def _mapping(k: Kernel) -> AddressSpace:
    return next(iter(k.mappings.values()))


def driver(k: Kernel) -> Generator[Yield, None, None]:
    """get_user_pages(FOLL_WRITE) under mmap_sem, the device's store, then completion."""
    mm = _mm(k)
    pages = page_array(1)
    yield from mmap_read_lock(k, mm)
    got = yield from get_user_pages(k, mm, ADDR, 1, FOLL_WRITE, pages)
    mmap_read_unlock(k, mm)
    if got != 1:
        return
    page = int(pages[0])
    yield Point("device DMA", writes=frozenset({("page", page, "data")}))
    k.mem.data[page] = DMA
    yield from set_page_dirty_lock(k, page)
    yield Point("put_page", writes=folio_put_footprint(k, page))
    folio_put(k, page)


def kswapd(k: Kernel) -> Generator[Yield, None, None]:
    page = _mapping(k).i_pages[0]
    yield from kswapd_reclaim_page(k, page, KSWAPD_PASSES, 0)


def flusher(k: Kernel) -> Generator[Yield, None, None]:
    """wb_workfn's background writeback of the file, FLUSHER_PASSES times."""
    for _ in range(FLUSHER_PASSES):
        wbc = WritebackControl(WB_SYNC_NONE, LONG_MAX, 0, LLONG_MAX)
        yield from writepages(k, _mapping(k), wbc, 0)


def kjournald(k: Kernel) -> Generator[Yield, None, None]:
    yield from jbd2_journal_commit_transaction(k)


THREADS = (
    GenThread("driver", driver),
    GenThread("kswapd", kswapd),
    GenThread("flusher", flusher),
    GenThread("kjournald", kjournald),
)


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
