"""FOLL_LONGTERM on 5.7: check_and_migrate_cma_pages, its put_page release, and 6.1 beside it.

Rows are facts read from the 5.7.14 tree (mm/gup.c, mm/migrate.c, mm/vmscan.c) and, for
6.1, docs/kernel-notes/gup.md §4 (6.1.192 mm/gup.c).  A page is put in CMA (5.7) or
ZONE_MOVABLE (6.1) by taking every ZONE_NORMAL page first, so that a fault's
GFP_HIGHUSER_MOVABLE falls back there, then giving back as many normal pages as the
migration is to find.

The 5.7 rows drive the steps v5.7.14 mm/gup.c __gup_longterm_locked takes (1788-1804)
one by one — pin, check_dax_vmas and release_longterm_pages, check_and_migrate_cma_pages —
so each can be looked at between them; one row goes through pin_user_pages end to end.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import anon_vma, fault_file, fault_thp, new_mm, shared_file_vma

from pinlab.interleave import Point, Unmodelled, Yield, run_to_completion
from pinlab.kernel import errno
from pinlab.kernel.mm.gup import __get_user_pages_locked, get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_PIN, FOLL_TOUCH, FOLL_WRITE
from pinlab.kernel.mm.gup_longterm import (
    check_and_migrate_cma_pages,
    check_dax_vmas,
    isolate_lru_page,
    release_longterm_pages,
)
from pinlab.kernel.mm.gup_page import Pages
from pinlab.kernel.mm.gup_unpin import put_page_api, unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_alloc import GFP_KERNEL, alloc_pages, pool_of
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import (
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    get_pte,
    pte_dirty,
    pte_pfn,
    pte_write,
    pte_young,
)
from pinlab.kernel.mm.pincount import page_maybe_dma_pinned
from pinlab.kernel.mm.swap import lru_add_drain_all
from pinlab.kernel.mm.types import FsType, MmStruct
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.process import new_task, sys_mmap, task_mm
from pinlab.kernel.profiles import NotInKernel
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import audit_step

RW = PROT_READ | PROT_WRITE
BASE = 0x40_0000
# v5.7.14 mm/migrate.c:1442 migrate_pages: at most 10 passes
PASSES = 10
# v5.7.14 include/linux/mm.h GUP_PIN_COUNTING_BIAS (1U << 10)
BIAS = 1024
HPAGE_PMD_NR = PMD_SIZE // PAGE_SIZE


def _hog(k: Kernel) -> list[int]:
    """Take every free ZONE_NORMAL page (GFP_KERNEL never falls back to CMA or ZONE_MOVABLE)."""
    hog: list[int] = []
    while (page := alloc_pages(k, GFP_KERNEL, 0)) is not None:
        hog.append(page)
    return hog


def _boot(profile: str) -> Kernel:
    """5.7 with 4 MiB of CMA; 6.1 (Debian: no CONFIG_CMA) with 4 MiB of ZONE_MOVABLE."""
    if profile == "5.7":
        return boot(profile, BootParams(normal_mb=4, cma_mb=4))
    return boot(profile, BootParams(normal_mb=4, movable_mb=4))


def _anon_outside_normal(profile: str, free: int) -> tuple[Kernel, MmStruct, int, int]:
    """One anon page written by the task (still in the fault's LRU batch) outside
    ZONE_NORMAL, then `free` normal pages given back: (kernel, mm, address, pfn)."""
    k = _boot(profile)
    hog = _hog(k)
    task = new_task(k)
    addr = run_to_completion(sys_mmap(k, task, None, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    run_to_completion(user_access(k, task, addr, True, 7))
    for page in hog[:free]:
        folio_put(k, page)
    mm = task_mm(k, task)
    page = pte_pfn(get_pte(mm.pgtable, addr))
    assert pool_of(k.free_area, page) == ("cma" if profile == "5.7" else "movable")
    return k, mm, addr, page


def _drive(gen: Generator[Yield, None, int]) -> tuple[int, list[str]]:
    """Run a kernel function alone: its return value and the labels of the points it yields."""
    labels: list[str] = []
    try:
        while True:
            step = next(gen)
            labels.append(step if isinstance(step, str) else step.label)
    except StopIteration as stop:
        return stop.value, labels


def _gup_longterm_5_7(
    k: Kernel, mm: MmStruct, start: int, nr: int, pages: Pages, gup_flags: int
) -> Generator[Yield, None, int]:
    """v5.7.14 mm/gup.c __gup_longterm_locked 1788-1804 with FOLL_LONGTERM: pin; an fsdax VMA
    releases the pages and is -EOPNOTSUPP; else check_and_migrate_cma_pages."""
    rc = yield from __get_user_pages_locked(k, mm, start, nr, pages, None, gup_flags)
    if rc < 0:
        return rc
    if check_dax_vmas(k, mm, start, rc):
        yield from release_longterm_pages(k, pages, rc, gup_flags)
        return -errno.EOPNOTSUPP
    return (yield from check_and_migrate_cma_pages(k, mm, start, rc, pages, gup_flags))


def _api_flags(pin: bool) -> int:
    """The flags pin_user_pages (FOLL_PIN, no FOLL_TOUCH) or get_user_pages (FOLL_TOUCH) pass
    on for FOLL_LONGTERM|FOLL_WRITE (v5.7.14 mm/gup.c pin_user_pages 2961-2972,
    get_user_pages 1962-1976); __get_user_pages_locked adds FOLL_GET for the latter."""
    return FOLL_LONGTERM | FOLL_WRITE | (FOLL_PIN if pin else FOLL_TOUCH)


def _counts(k: Kernel) -> tuple[int, int]:
    """(nr_foll_pin_acquired, nr_foll_pin_released)."""
    c = k.vmstat.counters
    return c.get(NR_FOLL_PIN_ACQUIRED, 0), c.get(NR_FOLL_PIN_RELEASED, 0)


@dataclass(frozen=True)
class CmaRow:
    """A 5.7 FOLL_LONGTERM|FOLL_WRITE gup of one anon page in CMA, and its release."""

    name: str
    pin: bool  # pin_user_pages (FOLL_PIN) or get_user_pages (FOLL_GET)
    free: int  # ZONE_NORMAL pages free for new_non_cma_page
    moved: bool
    ref: int  # page's refcount after the gup: PTE 1 + LRU batch 1 (putback) + pins / gets
    counts: tuple[int, int]  # (acquired, released) after the gup
    attempts: int  # __unmap_and_move steps: passes that got a new page
    remapped: bool  # the PTE was rebuilt by remove_migration_ptes: old, clean, PG_dirty set
    ref_released: int  # after unpin_user_pages / put_page and an LRU drain
    counts_released: tuple[int, int]
    cite: str


CMA_ROWS = [
    CmaRow(
        "pin-leaked-bias-blocks-migration",
        pin=True,
        free=1,
        moved=False,
        ref=1 + 1 + (BIAS - 1) + BIAS,
        counts=(2, 0),
        attempts=PASSES,
        remapped=True,
        ref_released=1 + (BIAS - 1),
        counts_released=(2, 1),
        cite="v5.7.14 mm/gup.c check_and_migrate_cma_pages:1713-1714 put_page leaves 1023 of "
        "the bias; mm/migrate.c migrate_page_move_mapping:412 page_count != 1 -> -EAGAIN every "
        "pass (migrate_pages:1442,1482-1484,1500); gup.c:1722-1725 putback, :1732 pin in place",
    ),
    CmaRow(
        "pin-no-normal-memory",
        pin=True,
        free=0,
        moved=False,
        ref=1 + 1 + (BIAS - 1) + BIAS,
        counts=(2, 0),
        attempts=0,
        remapped=False,
        ref_released=1 + (BIAS - 1),
        counts_released=(2, 1),
        cite="v5.7.14 mm/gup.c new_non_cma_page:1654 NULL; mm/migrate.c unmap_and_move:1202-1204 "
        "-ENOMEM; migrate_pages:1459-1480 stops with 1 failed; gup.c:1732 pin in place",
    ),
    CmaRow(
        "get-migrates",
        pin=False,
        free=1,
        moved=True,
        ref=1 + 1 + 1,
        counts=(0, 0),
        attempts=1,
        remapped=True,
        ref_released=1,
        counts_released=(0, 0),
        cite="v5.7.14 mm/gup.c:1713-1714 put_page drops the FOLL_GET reference; mm/migrate.c "
        "move_to_new_page -> migrate_page_move_mapping:412 count 1; unmap_and_move:1235 frees "
        "the CMA page; gup.c:1732-1739 pins the new page, the next round finds no CMA page",
    ),
    CmaRow(
        "get-no-normal-memory",
        pin=False,
        free=0,
        moved=False,
        ref=1 + 1 + 1,
        counts=(0, 0),
        attempts=0,
        remapped=False,
        ref_released=1,
        counts_released=(0, 0),
        cite="v5.7.14 mm/gup.c new_non_cma_page:1654 NULL -> migrate_pages != 0: "
        "migrate_allow false, putback (1722-1725), pinned where it is, count returned (1743)",
    ),
]


@pytest.mark.parametrize("row", CMA_ROWS, ids=[r.name for r in CMA_ROWS])
def test_5_7_longterm_gup_of_a_cma_page(row: CmaRow) -> None:
    k, mm, addr, old = _anon_outside_normal("5.7", row.free)
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    ret, labels = _drive(_gup_longterm_5_7(k, mm, addr, 1, pages, _api_flags(row.pin)))
    mmap_read_unlock(k, mm)
    assert ret == 1, row.cite
    page = int(pages[0])
    assert (page != old) is row.moved, row.cite
    assert pool_of(k.free_area, page) == ("normal" if row.moved else "cma"), row.cite
    assert pte_pfn(get_pte(mm.pgtable, addr)) == page
    if row.moved:
        assert int(k.mem.refcount[old]) == 0 and int(k.mem.mapcount[old]) == -1, row.cite
        assert int(k.mem.data[page]) == 7
    assert int(k.mem.refcount[page]) == row.ref, row.cite
    assert _counts(k) == row.counts, row.cite
    assert labels.count("__unmap_and_move") == row.attempts, row.cite
    pte = get_pte(mm.pgtable, addr)
    assert pte_write(pte)
    assert pte_dirty(pte) is pte_young(pte) is (not row.remapped), row.cite
    dirty = bool(int(k.mem.flags[page]) & k.pf.mask("PG_dirty"))
    assert dirty is row.remapped, row.cite
    if row.pin:
        run_to_completion(unpin_user_pages(k, pages, 1))
    else:
        run_to_completion(put_page_api(k, page))
    run_to_completion(lru_add_drain_all(k))
    assert int(k.mem.refcount[page]) == row.ref_released, row.cite
    assert _counts(k) == row.counts_released, row.cite
    # the leaked bias keeps the page looking pinned (v5.7.14 include/linux/mm.h
    # page_maybe_dma_pinned: refcount >= GUP_PIN_COUNTING_BIAS)
    assert page_maybe_dma_pinned(k, page) is row.pin, row.cite


def test_5_7_failed_migration_step_order() -> None:
    """v5.7.14 mm/gup.c check_and_migrate_cma_pages 1672-1740, each kernel action a step:
    the round's compound_head reads, PageLRU test, lru_add_drain_all (the fault's LRU
    batch), isolate_lru_page, put_page; ten passes of mm/migrate.c unmap_and_move
    (page_count 1189, new_non_cma_page 1202, trylock_page 1025, unmap/move/restore
    1123-1133, put_page(newpage) 1264); putback_lru_page (lru_cache_add, put_page); then
    the pin again."""
    k, mm, addr, _ = _anon_outside_normal("5.7", 1)
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    flags = _api_flags(True)
    assert run_to_completion(__get_user_pages_locked(k, mm, addr, 1, pages, None, flags)) == 1
    ret, labels = _drive(check_and_migrate_cma_pages(k, mm, addr, 1, pages, flags))
    mmap_read_unlock(k, mm)
    assert ret == 1
    attempt = [
        "unmap_and_move:page_count",
        "new_non_cma_page",
        "__unmap_and_move:trylock_page",
        "__unmap_and_move",
        "put_page",
    ]
    head = [
        "check_and_migrate_cma_pages",
        "check_and_migrate_cma_pages:PageLRU",
        "lru_add_drain",
        "isolate_lru_page",
        "put_page",
        *attempt * PASSES,
        "folio_add_lru",
        "put_page",
    ]
    assert labels[: len(head)] == head
    # the pin in place takes the bias again and stops: no second round (migrate_allow false)
    assert "check_and_migrate_cma_pages:PageLRU" not in labels[len(head) :]


# The steps gup_longterm.py yields on the 5.7 path (lru_add_drain and folio_add_lru are swap.py's).
STEPS_5_7 = {
    "check_and_migrate_cma_pages",
    "check_and_migrate_cma_pages:PageLRU",
    "isolate_lru_page",
    "put_page",
    "unmap_and_move:page_count",
    "new_non_cma_page",
    "__unmap_and_move:trylock_page",
    "__unmap_and_move",
}


@pytest.mark.parametrize("row", CMA_ROWS, ids=[r.name for r in CMA_ROWS])
def test_5_7_steps_declare_their_footprints(row: CmaRow) -> None:
    """Checked mode (scenarios.harness.audit_step) on every 5.7 check_and_migrate_cma_pages
    step: what it reads and writes of the frame table lies in the Point it yielded."""
    k, mm, addr, _ = _anon_outside_normal("5.7", row.free)
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    flags = _api_flags(row.pin)
    assert run_to_completion(__get_user_pages_locked(k, mm, addr, 1, pages, None, flags)) == 1
    gen = check_and_migrate_cma_pages(k, mm, addr, 1, pages, flags)
    errors: list[str] = []
    step = next(gen)
    while True:
        check = audit_step(k)
        try:
            following = next(gen)
        except StopIteration:
            following = None
        if isinstance(step, Point) and step.label in STEPS_5_7:
            error = check(step.reads, step.writes)
            if error:
                errors.append(f"{step.label}: {error}")
        k.mem.audit(False)
        if following is None:
            break
        step = following
    mmap_read_unlock(k, mm)
    assert not errors


def test_5_7_isolation_failure_leaves_the_page_pinned_in_cma() -> None:
    """v5.7.14 mm/gup.c check_and_migrate_cma_pages 1691-1702: a CMA page off the LRU after
    lru_add_drain_all (isolated by someone else) is not listed; with an empty list nothing is
    put and the pinned count is returned (1709, 1743)."""
    k, mm, addr, page = _anon_outside_normal("5.7", 1)
    run_to_completion(lru_add_drain_all(k))
    assert run_to_completion(isolate_lru_page(k, page)) == 0  # another isolator holds it
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    ret, labels = _drive(_gup_longterm_5_7(k, mm, addr, 1, pages, _api_flags(True)))
    mmap_read_unlock(k, mm)
    assert ret == 1 and int(pages[0]) == page
    assert labels.count("isolate_lru_page") == 1 and "put_page" not in labels
    assert int(k.mem.refcount[page]) == 1 + 1 + BIAS
    assert _counts(k) == (1, 0)


def test_5_7_thp_in_cma_migrates_and_the_pins_are_never_released() -> None:
    """v5.7.14 mm/gup.c try_grab_page: a THP (hpage_pincount_available, order > 1) takes one
    reference and one hpage_pinned_refcount per pinned subpage; put_page (1713-1714) drops the
    references, so migrate_page_move_mapping (mm/migrate.c:412) finds the expected count and the
    THP moves to a new_non_cma_page THP (gup.c:1635-1651, ZONE_NORMAL); the old one is freed
    with its pincount (unmap_and_move:1235).  NR_FOLL_PIN_RELEASED never counts the 512 dropped
    pins: acquired stays 512 above released."""
    k = _boot("5.7")
    hog = _hog(k)
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    old = fault_thp(k, mm, vma, PMD_SIZE)
    assert pool_of(k.free_area, old) == "cma"
    for page in hog:
        if page >= HPAGE_PMD_NR:  # one free 2 MiB block of ZONE_NORMAL
            folio_put(k, page)
    pages = page_array(HPAGE_PMD_NR)
    run_to_completion(mmap_read_lock(k, mm))
    gen = _gup_longterm_5_7(k, mm, PMD_SIZE, HPAGE_PMD_NR, pages, _api_flags(True))
    ret = run_to_completion(gen)
    mmap_read_unlock(k, mm)
    assert ret == HPAGE_PMD_NR
    new = int(pages[0])
    assert pages.tolist() == list(range(new, new + HPAGE_PMD_NR))
    assert pool_of(k.free_area, new) == "normal" and int(k.mem.order[new + 1]) == 9
    assert int(k.mem.refcount[old]) == 0
    assert pte_pfn(mm.pgtable.pmd[PMD_SIZE >> PMD_SHIFT]) == new
    assert int(k.mem.refcount[new]) == 1 + HPAGE_PMD_NR
    assert int(k.mem.pincount[new + 2]) == HPAGE_PMD_NR
    assert _counts(k) == (2 * HPAGE_PMD_NR, 0)
    run_to_completion(unpin_user_pages(k, pages, HPAGE_PMD_NR))
    assert int(k.mem.refcount[new]) == 1 and int(k.mem.pincount[new + 2]) == 0
    assert _counts(k) == (2 * HPAGE_PMD_NR, HPAGE_PMD_NR)


# (get/pin, refcount change the failed long-term gup leaves, (acquired, released), source)
DAX_ROWS = [
    (
        True,
        BIAS - 1,
        (1, 0),
        "v5.7.14 mm/gup.c __gup_longterm_locked:1796-1800 put_page on a FOLL_PIN page: "
        "1023 of the bias stay, nothing released",
    ),
    (
        False,
        0,
        (0, 0),
        "v5.7.14 mm/gup.c __gup_longterm_locked:1796-1800 put_page of the FOLL_GET reference",
    ),
]


@pytest.mark.parametrize(("pin", "delta", "counts", "cite"), DAX_ROWS, ids=["pin", "get"])
def test_5_7_fsdax_longterm_pins_then_puts(
    pin: bool, delta: int, counts: tuple[int, int], cite: str
) -> None:
    k = boot("5.7")
    mm = new_mm(k)
    vma = shared_file_vma(k, mm, BASE, PAGE_SIZE, FsType.EXT4_DAX)
    page = fault_file(k, mm, vma, BASE)
    before = int(k.mem.refcount[page])
    run_to_completion(mmap_read_lock(k, mm))
    gen = _gup_longterm_5_7(k, mm, BASE, 1, page_array(1), _api_flags(pin))
    assert run_to_completion(gen) == -errno.EOPNOTSUPP, cite
    mmap_read_unlock(k, mm)
    assert int(k.mem.refcount[page]) == before + delta, cite
    assert _counts(k) == counts, cite


def test_5_7_page_cache_migration_is_unmodelled() -> None:
    """v5.7.14 mm/migrate.c move_to_new_page:955-967: a page-cache page moves through its
    a_ops->migratepage, which the model does not cover for 5.7."""
    k = _boot("5.7")
    _hog(k)
    mm = new_mm(k)
    vma = shared_file_vma(k, mm, BASE, PAGE_SIZE, FsType.TMPFS)
    page = fault_file(k, mm, vma, BASE)
    assert pool_of(k.free_area, page) == "cma"
    run_to_completion(mmap_read_lock(k, mm))
    with pytest.raises(Unmodelled, match="move_to_new_page"):
        run_to_completion(_gup_longterm_5_7(k, mm, BASE, 1, page_array(1), _api_flags(True)))


# (free normal pages, pin_user_pages return, moved, (acquired, released), source)
ROWS_6_1 = [
    (
        1,
        1,
        True,
        (2, 1),
        "v6.1 mm/gup.c migrate_longterm_unpinnable_pages 2023-2087: unpin_user_page each "
        "(released +1), migrate, -EAGAIN; __gup_longterm_locked pins the new page",
    ),
    (
        0,
        -errno.ENOMEM,
        False,
        (1, 1),
        "v6.1 mm/gup.c migrate_longterm_unpinnable_pages: migrate_pages != 0 -> -ENOMEM, "
        "the pages stay unpinned",
    ),
]


@pytest.mark.parametrize(("free", "expected", "moved", "counts", "cite"), ROWS_6_1)
def test_6_1_longterm_pin_of_a_movable_page(
    free: int, expected: int, moved: bool, counts: tuple[int, int], cite: str
) -> None:
    k, mm, addr, old = _anon_outside_normal("6.1", free)
    before = int(k.mem.refcount[old])
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    ret = run_to_completion(pin_user_pages(k, mm, addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages))
    mmap_read_unlock(k, mm)
    assert ret == expected, cite
    assert _counts(k) == counts, cite
    page = pte_pfn(get_pte(mm.pgtable, addr))
    assert (page != old) is moved, cite
    if moved:
        assert int(pages[0]) == page and pool_of(k.free_area, page) == "normal"
        assert int(k.mem.refcount[old]) == 0
        run_to_completion(unpin_user_pages(k, pages, 1))
        run_to_completion(lru_add_drain_all(k))
        assert int(k.mem.refcount[page]) == 1 and not page_maybe_dma_pinned(k, page)
    else:
        assert int(k.mem.refcount[old]) == before, cite


def test_4_4_has_no_foll_longterm() -> None:
    """v4.4.178 include/linux/mm.h:2108-2123: FOLL_WRITE .. FOLL_ANON, no FOLL_LONGTERM (v5.2
    932f4a630a69); no pin_user_pages either (v5.6)."""
    k = boot("4.4")
    assert not k.profile.has_foll_longterm
    mm = new_mm(k)
    run_to_completion(mmap_read_lock(k, mm))
    with pytest.raises(NotInKernel, match="FOLL_LONGTERM"):
        run_to_completion(get_user_pages(k, mm, BASE, 1, FOLL_LONGTERM, page_array(1)))
    with pytest.raises(NotInKernel, match="pin_user_pages"):
        run_to_completion(pin_user_pages(k, mm, BASE, 1, FOLL_LONGTERM, page_array(1)))
    mmap_read_unlock(k, mm)


def test_5_7_pin_user_pages_runs_check_and_migrate_cma_pages() -> None:
    """v5.7.14 mm/gup.c pin_user_pages -> __gup_longterm_locked:1803 ->
    check_and_migrate_cma_pages: the first CMA row, end to end."""
    row = CMA_ROWS[0]
    k, mm, addr, old = _anon_outside_normal("5.7", row.free)
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    ret = run_to_completion(pin_user_pages(k, mm, addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages))
    mmap_read_unlock(k, mm)
    assert ret == 1 and int(pages[0]) == old, row.cite
    assert int(k.mem.refcount[old]) == row.ref, row.cite
    assert _counts(k) == row.counts, row.cite
