"""v6.1 FOLL_LONGTERM pins of ZONE_MOVABLE pages: what migrating them leaves behind.

check_and_migrate_movable_pages moves each pinned folio that may not stay in
ZONE_MOVABLE to ZONE_NORMAL and the caller pins the range again.  Rows are facts of the
6.1.192 tree, each with its citation (file, function, line); the values come out of the
model (user stores through a shared tmpfs mapping and a private anon one,
pin_user_pages under mmap_lock, the page tables, the page cache and the frame table).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import pytest
from tests.scenarios.searching import search

from pinlab.explore import FinalCheck, GenThread
from pinlab.interleave import Violation, Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import errno
from pinlab.kernel import process as P
from pinlab.kernel.fs.shmem import tmpfs_create
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_PIN, FOLL_WRITE
from pinlab.kernel.mm.gup_longterm import check_and_migrate_movable_pages
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.page_alloc import pool_of
from pinlab.kernel.mm.pgtable import PAGE_SIZE, get_pte, pte_pfn
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

ADDR = 0x7F00_0000_0000
NR = 4  # pages mapped; the first three are written
RW = PROT_READ | PROT_WRITE
BIAS = 1024  # v6.1.192 include/linux/mm.h:1267 GUP_PIN_COUNTING_BIAS


class Mapped:
    """A 6.1 task with NR pages at ADDR (shared tmpfs or private anon), 10, 11, 12 stored in
    the first three: ZONE_MOVABLE frames, one after the other."""

    def __init__(self, kind: str) -> None:
        self.k = k = boot("6.1", BootParams(normal_mb=8, movable_mb=8))
        self.task = P.new_task(k)
        self.mm = k.mms[self.task.mm]
        self.file = None
        if kind == "tmpfs":
            self.file = P.fget(k, P.fd_install(k, tmpfs_create(k, NR * PAGE_SIZE)))
            flags = MAP_SHARED | MAP_FIXED
        else:
            flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
        assert run(P.sys_mmap(k, self.task, ADDR, NR * PAGE_SIZE, RW, flags, self.file)) == ADDR
        for i in range(3):
            run(user_access(k, self.task, ADDR + i * PAGE_SIZE, True, 10 + i))
        run(lru_add_drain(k, self.task.cpu))
        self.old = [self.frame(i) for i in range(3)]
        assert self.old == [self.old[0] + i for i in range(3)]
        assert {pool_of(k.free_area, p) for p in self.old} == {"movable"}

    def frame(self, index: int) -> int:
        return pte_pfn(get_pte(self.mm.pgtable, ADDR + index * PAGE_SIZE))

    def pin(self, index: int, flags: int) -> tuple[int, int]:
        """pin_user_pages of one page under mmap_read_lock: (return, page)."""
        pages = page_array(1)
        run(mmap_read_lock(self.k, self.mm))
        got = run(pin_user_pages(self.k, self.mm, ADDR + index * PAGE_SIZE, 1, flags, pages))
        mmap_read_unlock(self.k, self.mm)
        return got, int(pages[0])

    def flag(self, pfn: int, name: str) -> bool:
        return bool(int(self.k.mem.flags[pfn]) & self.k.pf.mask(name))


# --- a long-term pin of a ZONE_MOVABLE page moves it, and only it ---------------------------


class Moved(NamedTuple):
    kind: str
    cache: int  # the page cache's reference
    dirty: bool | None  # PG_dirty on the new folio (None: not asserted, see the anon row)
    cite: str


MOVED_ROWS = [
    Moved(
        "tmpfs",
        1,
        True,
        "v6.1.192 include/linux/mm.h:1818-1837 folio_expected_ref_count: +1 per page from the "
        "page cache (!anon, mapping); mm/gup.c:1993-2006 collect, :2058 unpin, :2068 "
        "migrate_pages; mm/migrate.c:361-373 folio_expected_refs (1 + nr: the cache's), :411 "
        "folio_ref_freeze succeeds, :420-422 mapping and index, :438-442 PG_dirty moves to "
        "the new folio, :446-449 xas_store: the page cache holds the new folio; :277-288 "
        "remove_migration_ptes walks the folio's rmap only",
    ),
    # PG_dirty is not asserted for anon: v6.1.192 mm/rmap.c:1992-1993 try_to_migrate_one
    # sets it from the dirty PTE and mm/migrate.c:566-567 carries it over; the model's
    # migration (one step, no migration entries) does not yet
    Moved(
        "anon",
        0,
        None,
        "v6.1.192 mm/migrate.c:393-404 folio_migrate_mapping without a mapping: refcount 1 "
        "(the isolation's) expected; :277-288 remove_migration_ptes walks the folio's rmap "
        "only; mm/gup.c:2078 -EAGAIN, __gup_longterm_locked pins the new page",
    ),
]


@pytest.mark.parametrize("row", MOVED_ROWS, ids=[r.kind for r in MOVED_ROWS])
def test_longterm_pin_migrates_the_pinned_page_only(row: Moved) -> None:
    s = Mapped(row.kind)
    k, m = s.k, s.k.mem
    got, new = s.pin(0, FOLL_LONGTERM | FOLL_WRITE)
    assert got == 1, row.cite
    assert pool_of(k.free_area, new) == "normal", row.cite
    assert s.frame(0) == new and int(m.data[new]) == 10, row.cite
    # the next frames (old + 1, old + 2) are other pages, mapped where they were
    assert [s.frame(1), s.frame(2)] == s.old[1:], row.cite
    assert [run(user_access(k, s.task, ADDR + i * PAGE_SIZE, False)) for i in range(3)] == [
        10,
        11,
        12,
    ], row.cite
    assert int(m.refcount[s.old[0]]) == 0, row.cite  # the old frame was freed
    if row.dirty is not None:
        assert s.flag(new, "PG_dirty") == row.dirty, row.cite
    if s.file is not None:
        assert k.mappings[s.file.mapping].i_pages[0] == new, row.cite
    run(lru_add_drain(k, s.task.cpu))
    assert s.flag(new, "PG_lru"), row.cite
    assert int(m.refcount[new]) == row.cache + 1 + BIAS, row.cite
    pinned = page_array(1)
    pinned[0] = new
    run(unpin_user_pages(k, pinned, 1))
    assert int(m.refcount[new]) == row.cache + 1, row.cite


# --- a page with references beyond the expected ones is not migrated ------------------------

EXTRA_REFS_CITE = (
    "v6.1.192 mm/migrate.c:411-414 folio_migrate_mapping: folio_ref_freeze(expected) fails "
    "while another pin holds references -> -EAGAIN; migrate_pages gives up after its passes; "
    "mm/gup.c:2066-2071 -> -ENOMEM, :2080-2084 unpin the rest, putback_movable_pages; "
    "__gup_longterm_locked returns it"
)


def test_longterm_pin_of_a_page_pinned_elsewhere_fails_with_enomem() -> None:
    s = Mapped("tmpfs")
    k, m = s.k, s.k.mem
    old = s.old[0]
    got, page = s.pin(0, FOLL_WRITE)  # a short-term pin, kept
    assert (got, page) == (1, old)
    before = int(m.refcount[old])
    assert before == 1 + 1 + BIAS, EXTRA_REFS_CITE
    assert s.pin(0, FOLL_LONGTERM | FOLL_WRITE)[0] == -errno.ENOMEM, EXTRA_REFS_CITE
    assert s.file is not None
    assert s.frame(0) == old and k.mappings[s.file.mapping].i_pages[0] == old, EXTRA_REFS_CITE
    run(lru_add_drain(k, s.task.cpu))
    assert int(m.refcount[old]) == before and s.flag(old, "PG_lru"), EXTRA_REFS_CITE
    assert s.flag(old, "PG_dirty"), EXTRA_REFS_CITE


# --- two long-term pins of one page: only one of them isolates it ---------------------------
# v6.1.192 mm/gup.c:2006 collect_longterm_unpinnable_pages skips a folio folio_isolate_lru
# refuses; mm/vmscan.c:2319-2335 folio_isolate_lru takes it only if folio_test_clear_lru
# (:2325) finds PG_lru, so a folio another pin has isolated (PG_lru clear) is left to it.
# Were it isolated twice, both putbacks (mm/migrate.c putback_movable_pages ->
# folio_add_lru) would batch it twice: mm/swap.c:516 folio_add_lru and :189 lru_add_fn
# VM_BUG_ON_FOLIO(folio_test_lru) on the second.


def _anon_kernel() -> Kernel:
    """One anon page written at ADDR, in ZONE_MOVABLE, on the LRU."""
    return Mapped("anon").k


def pin_and_check_once(k: Kernel) -> Generator[Yield, None, None]:
    """One round of __gup_longterm_locked's loop (v6.1.192 mm/gup.c:2148-2157) under
    mmap_read_lock: pin ADDR (FOLL_PIN), then check_and_migrate_movable_pages, which for this
    ZONE_MOVABLE page unpins it and returns -EAGAIN or -ENOMEM, and for a page the other
    round already moved to ZONE_NORMAL returns 0 (then unpin it).  The caller's retry is
    left out: a round repeated while the other pin holds the folio only adds vmstat counts."""
    mm = next(iter(k.mms.values()))
    pages = page_array(1)
    yield from mmap_read_lock(k, mm)
    got = yield from pin_user_pages(k, mm, ADDR, 1, 0, pages)
    if got == 1:
        rc = yield from check_and_migrate_movable_pages(k, 1, pages, FOLL_PIN | FOLL_LONGTERM)
        if rc == 0:
            if pool_of(k.free_area, int(pages[0])) != "normal":
                raise Violation("ZONE_MOVABLE page left pinned", f"page {int(pages[0])}")
            yield from unpin_user_pages(k, pages, 1)
        elif rc not in (-errno.EAGAIN, -errno.ENOMEM):
            raise Violation("unexpected return", f"rc {rc}")
    mmap_read_unlock(k, mm)


def _batched_once_off_lru(k: Kernel) -> bool:
    """No folio sits twice in the LRU-add batches, nor there with PG_lru set."""
    batched = [folio for batch in k.lru_add for folio in batch]
    lru = k.pf.mask("PG_lru")
    return len(batched) == len(set(batched)) and not any(
        int(k.mem.flags[folio]) & lru for folio in batched
    )


def test_a_folio_another_longterm_pin_isolated_is_not_isolated_again() -> None:
    threads = (GenThread("pin-a", pin_and_check_once), GenThread("pin-b", pin_and_check_once))
    res = search(
        "longterm-isolate-twice",
        _anon_kernel,
        threads,
        (FinalCheck("lru-batched-once", _batched_once_off_lru),),
    )
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit
