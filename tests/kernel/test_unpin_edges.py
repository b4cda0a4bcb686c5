"""Edges of gup's page stepping and of the unpin family, each row a v6.1 kernel fact.

The pages are made by the syscalls and faults themselves (sys_mmap, MADV_HUGEPAGE,
user stores); counts are read back from the frame table and vmstat.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel.fs import vfs_fsync, vfs_write
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages, pin_user_pages_unlocked
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_page import Pages
from pinlab.kernel.mm.gup_unpin import (
    unpin_user_page_range_dirty_lock,
    unpin_user_pages,
    unpin_user_pages_dirty_lock,
)
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.mmap import (
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE
from pinlab.kernel.mm.pincount import folio_pincount
from pinlab.kernel.mm.types import MMF_HAS_PINNED, MmStruct, Task
from pinlab.kernel.mm.vmstat import NR_FILE_DIRTY, NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.process import (
    ext4_create,
    fd_install,
    fget,
    new_task,
    pagemap,
    sys_madvise,
    sys_mmap,
)
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

ADDR = 0x7F00_0000_0000  # PMD aligned
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
BIAS = 1024  # v6.1 include/linux/mm.h GUP_PIN_COUNTING_BIAS (1U << 10)


def _mm(k: Kernel, t: Task) -> MmStruct:
    return k.mms[t.mm]


def _thps(n: int) -> tuple[Kernel, Task]:
    """n written THPs from ADDR on (MADV_HUGEPAGE), each its own folio."""
    k = boot("6.1", BootParams(normal_mb=16))
    t = new_task(k)
    assert run(sys_mmap(k, t, ADDR, n * PMD_SIZE, RW, ANON)) == ADDR
    assert run(sys_madvise(k, t, ADDR, n * PMD_SIZE, MADV_HUGEPAGE)) == 0
    for i in range(n):
        run(user_access(k, t, ADDR + i * PMD_SIZE, True, i + 1))
        head = pagemap(k, t, ADDR + i * PMD_SIZE).pfn
        assert compound_head(k.mem, head + 511) == head
    return k, t


def _small_pages(n: int) -> tuple[Kernel, Task]:
    """n written small anonymous pages at ADDR."""
    k = boot("6.1", BootParams(normal_mb=8))
    t = new_task(k)
    assert run(sys_mmap(k, t, ADDR, n * PAGE_SIZE, RW, ANON)) == ADDR
    assert run(sys_madvise(k, t, ADDR, n * PAGE_SIZE, MADV_NOHUGEPAGE)) == 0
    for i in range(n):
        run(user_access(k, t, ADDR + i * PAGE_SIZE, True, i + 1))
    return k, t


# --- __get_user_pages steps over a THP, but never past the request ---------------------


@dataclass(frozen=True)
class IncremRow:
    """get_user_pages without a pages array over a THP: how many pages it says it did."""

    cite: str
    first: int  # the page of the THP the request starts at
    nr_pages: int
    fine_grained: bool
    done: int


INCREM_ROWS = [
    IncremRow(
        "v6.1 mm/gup.c __get_user_pages :1293-1295: page_increm reaches the THP's end, then "
        "is cut to nr_pages",
        1,
        2,
        False,
        2,
    ),
    IncremRow("same, page by page", 1, 2, True, 2),
    IncremRow("same, from the THP's first page", 0, 3, True, 3),
    IncremRow(
        "same, the request's last page is the THP's last: the step is exactly nr_pages",
        510,
        2,
        True,
        2,
    ),
]


@pytest.mark.parametrize("row", INCREM_ROWS, ids=lambda r: r.cite[-40:])
def test_gup_without_pages_stops_at_nr_pages_inside_a_thp(row: IncremRow) -> None:
    k, t = _thps(2)
    k.fine_grained = row.fine_grained
    mm = _mm(k, t)
    head = pagemap(k, t, ADDR).pfn
    refs = int(k.mem.refcount[head])
    run(mmap_read_lock(k, mm))
    got = run(get_user_pages(k, mm, ADDR + row.first * PAGE_SIZE, row.nr_pages, 0, None))
    mmap_read_unlock(k, mm)
    assert got == row.done, row.cite
    # without pages[] no reference is taken (v6.1 mm/gup.c __get_user_pages_locked :1448-1449:
    # FOLL_GET only with pages)
    assert int(k.mem.refcount[head]) == refs, row.cite


# --- pin_user_pages_unlocked pins ------------------------------------------------------


def test_pin_user_pages_unlocked_pins_with_the_bias() -> None:
    """v6.1 mm/gup.c pin_user_pages_unlocked :3339 sets FOLL_PIN; a small page's pin adds
    GUP_PIN_COUNTING_BIAS (mm/gup.c try_grab_page :246) and counts NR_FOLL_PIN_ACQUIRED
    (:249); __get_user_pages_locked sets MMF_HAS_PINNED (:1437)."""
    k, t = _small_pages(2)
    mm = _mm(k, t)
    pfns = [pagemap(k, t, ADDR + i * PAGE_SIZE).pfn for i in range(2)]
    before = [int(k.mem.refcount[p]) for p in pfns]
    pages = page_array(2)
    assert run(pin_user_pages_unlocked(k, mm, ADDR, 2, pages, FOLL_WRITE)) == 2
    assert pages.tolist() == pfns
    assert [int(k.mem.refcount[p]) for p in pfns] == [b + BIAS for b in before]
    assert k.vmstat.counters.get(NR_FOLL_PIN_ACQUIRED, 0) == 2
    assert mm.flags >> MMF_HAS_PINNED & 1
    run(unpin_user_pages(k, pages, 2))
    assert [int(k.mem.refcount[p]) for p in pfns] == before
    assert k.vmstat.counters.get(NR_FOLL_PIN_RELEASED, 0) == 2


# --- unpin_user_pages refuses an -errno count -----------------------------------------


@pytest.mark.parametrize("fine_grained", [False, True])
@pytest.mark.parametrize("npages", [-1, -4095])
def test_unpin_user_pages_with_an_errno_count_unpins_nothing(
    fine_grained: bool, npages: int
) -> None:
    """v6.1 mm/gup.c unpin_user_pages :445-446: WARN_ON(IS_ERR_VALUE(npages)) and return:
    a -errno passed as the count ([-MAX_ERRNO, -1], include/linux/err.h :18-22) releases
    no pin."""
    k, t = _small_pages(3)
    k.fine_grained = fine_grained
    mm = _mm(k, t)
    pages = page_array(3)
    run(mmap_read_lock(k, mm))
    assert run(pin_user_pages(k, mm, ADDR, 3, FOLL_WRITE, pages)) == 3
    mmap_read_unlock(k, mm)
    held = [int(k.mem.refcount[p]) for p in pages.tolist()]
    run(unpin_user_pages(k, pages, npages))
    assert k.warned, "WARN_ON fires"
    assert [int(k.mem.refcount[p]) for p in pages.tolist()] == held
    assert k.vmstat.counters.get(NR_FOLL_PIN_RELEASED, 0) == 0


# --- unpin_user_page_range_dirty_lock: a range that starts inside a folio ---------------


@pytest.mark.parametrize("make_dirty", [False, True])
def test_unpin_range_from_inside_a_thp_releases_each_folio_its_own_pins(
    make_dirty: bool,
) -> None:
    """v6.1 mm/gup.c gup_folio_range_next :278-280: a large folio's share of the range is
    folio_nr_pages - folio_page_idx(next), not its whole size; each folio gets back the
    pins it gave (large folios count pins in _pincount, mm/gup.c gup_put_folio :190-192)."""
    k, t = _thps(2)
    mm = _mm(k, t)
    h1 = pagemap(k, t, ADDR).pfn
    h2 = pagemap(k, t, ADDR + PMD_SIZE).pfn
    assert h2 == h1 + 512, "the allocator hands the THPs out back to back"
    refs = (int(k.mem.refcount[h1]), int(k.mem.refcount[h2]))
    pages = page_array(3)
    run(mmap_read_lock(k, mm))
    assert run(pin_user_pages(k, mm, ADDR + 510 * PAGE_SIZE, 3, FOLL_WRITE, pages)) == 3
    mmap_read_unlock(k, mm)
    assert pages.tolist() == [h1 + 510, h1 + 511, h2]
    assert (folio_pincount(k, h1), folio_pincount(k, h2)) == (2, 1)
    run(unpin_user_page_range_dirty_lock(k, h1 + 510, 3, make_dirty))
    assert (folio_pincount(k, h1), folio_pincount(k, h2)) == (0, 0)
    assert (int(k.mem.refcount[h1]), int(k.mem.refcount[h2])) == refs
    assert k.vmstat.counters.get(NR_FOLL_PIN_RELEASED, 0) == 3
    assert not k.warned, k.warned


# --- unpin_user_pages_dirty_lock dirties under the folio lock --------------------------


def _pinned_clean_ext4_page() -> tuple[Kernel, Pages]:
    """A one-page ext4 file on disk, mapped shared, pinned for write, then fsynced clean."""
    k = boot("6.1", BootParams(normal_mb=8))
    t = new_task(k)
    file = fget(k, fd_install(k, ext4_create(k, 0)))
    assert run(vfs_write(k, file, 0, PAGE_SIZE, 0, t.cpu)) == PAGE_SIZE
    assert run(sys_mmap(k, t, ADDR, PAGE_SIZE, RW, MAP_SHARED | MAP_FIXED, file)) == ADDR
    mm = _mm(k, t)
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    assert run(pin_user_pages(k, mm, ADDR, 1, FOLL_WRITE, pages)) == 1
    mmap_read_unlock(k, mm)
    assert not run(vfs_fsync(k, file, t.cpu))
    assert not int(k.mem.flags[int(pages[0])]) & k.pf.mask("PG_dirty")
    return k, pages


def test_unpin_dirty_lock_dirties_an_ext4_folio_under_its_lock() -> None:
    """v6.1 mm/gup.c unpin_user_pages_dirty_lock :358-361: a clean folio is dirtied with
    folio_lock held, so ext4_dirty_folio's WARN_ON_ONCE(!folio_test_locked &&
    !folio_test_dirty) (fs/ext4/inode.c :3662) stays quiet; the folio is dirty and counted
    in NR_FILE_DIRTY (mm/page-writeback.c __folio_mark_dirty, folio_account_dirtied)."""
    k, pages = _pinned_clean_ext4_page()
    page = int(pages[0])
    dirty_before = k.vmstat.counters.get(NR_FILE_DIRTY, 0)
    run(unpin_user_pages_dirty_lock(k, pages, 1, True))
    assert not k.warned, k.warned
    assert int(k.mem.flags[page]) & k.pf.mask("PG_dirty")
    assert not int(k.mem.flags[page]) & k.pf.mask("PG_locked")
    assert k.vmstat.counters.get(NR_FILE_DIRTY, 0) == dirty_before + 1
