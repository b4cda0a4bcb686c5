"""Kernel-fact rows for gup-fast (v6.1 mm/gup.c 2414-3235); each row cites where it is decided."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import (
    anon_vma,
    fault_anon,
    fault_file,
    fault_thp,
    new_mm,
    shared_file_vma,
)

from pinlab.interleave import Point, Violation, run_to_completion
from pinlab.kernel import errno
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import (
    get_user_pages_fast,
    get_user_pages_fast_only,
    internal_get_user_pages_fast,
    pin_user_pages_fast,
    pin_user_pages_fast_only,
)
from pinlab.kernel.mm.gup_flags import (
    FOLL_FAST_ONLY,
    FOLL_FORCE,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_PIN,
    FOLL_TOUCH,
    FOLL_WRITE,
)
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.page_alloc import pool_of
from pinlab.kernel.mm.pgtable import _PAGE_RW, PAGE_SHIFT, PAGE_SIZE, PMD_SHIFT, PMD_SIZE
from pinlab.kernel.mm.pincount import folio_pincount
from pinlab.kernel.mm.types import MMF_HAS_PINNED, VM_NOHUGEPAGE, FsType
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.profiles import NotInKernel
from pinlab.kernel.state import BootParams, Kernel, boot, kernel_copy, kernel_digest

BASE = PMD_SIZE
U64 = (1 << 64) - 1


def _anon(profile: str, n: int = 4, params: BootParams | None = None):  # type: ignore[no-untyped-def]
    k = boot(profile, params)
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, 2 * PMD_SIZE)
    got = [fault_anon(k, mm, vma, BASE + i * PAGE_SIZE) for i in range(n)]
    return k, mm, vma, got


def _acq(k: Kernel) -> tuple[int, int]:
    c = k.vmstat.counters
    return c.get(NR_FOLL_PIN_ACQUIRED, 0), c.get(NR_FOLL_PIN_RELEASED, 0)


def _ref(k: Kernel, page: int) -> int:
    return int(k.mem.refcount[page])


def _referenced(k: Kernel, page: int) -> bool:
    return bool(int(k.mem.flags[page]) & k.pf.mask("PG_referenced"))


@pytest.mark.parametrize("fine", [False, True], ids=["range", "page-by-page"])
def test_pin_fast_small_page(fine: bool) -> None:
    """v6.1 mm/gup.c gup_pte_range -> try_grab_folio(page, 1, FOLL_PIN): ref += 1024,
    NR_FOLL_PIN_ACQUIRED += 1, folio_set_referenced; MMF_HAS_PINNED set (3052-3053)."""
    k, mm, _, got = _anon("6.1")
    k.fine_grained = fine
    before = _ref(k, got[0])
    pages = page_array(1)
    assert run_to_completion(pin_user_pages_fast(k, mm, BASE, 1, 0, pages)) == 1
    assert pages.tolist() == [got[0]]
    assert _ref(k, got[0]) == before + 1024
    assert _acq(k) == (1, 0)
    assert _referenced(k, got[0])
    assert mm.flags >> MMF_HAS_PINNED & 1


@pytest.mark.parametrize("fine", [False, True], ids=["range", "page-by-page"])
def test_pin_fast_thp_one_batched_grab(fine: bool) -> None:
    """v6.1 mm/gup.c gup_huge_pmd: record_subpages lists every subpage, one
    try_grab_folio(refs): ref += refs, compound_pincount += refs, vmstat += refs."""
    k = boot("6.1")
    k.fine_grained = fine
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, PMD_SIZE)
    head = fault_thp(k, mm, vma, BASE)
    before = _ref(k, head)
    pages = page_array(500)
    start = BASE + 12 * PAGE_SIZE
    assert run_to_completion(pin_user_pages_fast(k, mm, start, 500, 0, pages)) == 500
    assert pages.tolist() == list(range(head + 12, head + 512))
    assert _ref(k, head) == before + 500
    assert folio_pincount(k, head) == 500
    assert _acq(k) == (500, 0)
    run_to_completion(unpin_user_pages(k, pages, 500))
    assert (_ref(k, head), folio_pincount(k, head)) == (before, 0)


def test_zero_page_never_returned_by_fast_walk() -> None:
    """v6.1 mm/gup.c gup_pte_range: pte_special (the zero page) stops the walk; the slow
    path then returns it (6.1.192 try_grab_page: zero page pinned without a reference)."""
    k, mm, _, _ = _anon("6.1", n=0)
    from pinlab.kernel.mm.memory import FAULT_FLAG_USER, handle_mm_fault
    from pinlab.kernel.mm.types import find_vma

    vma = find_vma(mm, BASE)
    assert vma is not None
    vma.vm_flags |= VM_NOHUGEPAGE
    assert run_to_completion(handle_mm_fault(k, mm, vma, BASE, FAULT_FLAG_USER)) == 0
    zero_before = _ref(k, k.zero_pfn)
    pages = page_array(1)
    assert run_to_completion(pin_user_pages_fast_only(k, mm, BASE, 1, 0, pages)) == 0
    assert run_to_completion(pin_user_pages_fast(k, mm, BASE, 1, 0, pages)) == 1
    assert pages.tolist() == [k.zero_pfn]
    assert _ref(k, k.zero_pfn) == zero_before
    assert _acq(k) == (0, 0)


def test_write_protect_seq_odd_no_fast_pins() -> None:
    """v6.1 mm/gup.c lockless_pages_from_mm 3010-3013: odd write_protect_seq (fork copying)
    -> 0 pages from the fast walk; pin_user_pages_fast still gets them on the slow path."""
    k, mm, _, got = _anon("6.1")
    mm.write_protect_seq = 1
    before = _ref(k, got[0])
    pages = page_array(2)
    assert run_to_completion(pin_user_pages_fast_only(k, mm, BASE, 2, 0, pages)) == 0
    assert _ref(k, got[0]) == before
    assert not _referenced(k, got[0])
    assert run_to_completion(pin_user_pages_fast(k, mm, BASE, 2, 0, pages)) == 2
    assert _acq(k) == (2, 0)


def test_write_protect_seq_changed_unpins_all() -> None:
    """v6.1 mm/gup.c lockless_pages_from_mm 3027-3030: fork ran during the walk ->
    unpin_user_pages_lockless everything taken and return 0."""
    k, mm, _, got = _anon("6.1")
    k.fine_grained = True
    before = [_ref(k, p) for p in got]
    pages = page_array(4)
    gen = pin_user_pages_fast_only(k, mm, BASE, 4, 0, pages)
    value = next(gen)
    referenced = 0
    try:
        while True:
            if isinstance(value, Point) and value.label == "folio_set_referenced":
                referenced += 1
                if referenced == 2:
                    mm.write_protect_seq += 2
            value = gen.send(None)
    except StopIteration as stop:
        ret = stop.value
    assert ret == 0
    assert [_ref(k, p) for p in got] == before
    assert _acq(k) == (4, 4)


def test_fast_only_never_faults() -> None:
    """v6.1 mm/gup.c internal_get_user_pages_fast 3066: FOLL_FAST_ONLY returns what the
    walk got; no fault, no slow path."""
    k, mm, _, got = _anon("6.1", n=2)
    pages = page_array(4)
    assert run_to_completion(get_user_pages_fast_only(k, mm, BASE, 4, 0, pages)) == 2
    assert pages[:2].tolist() == got
    assert 4 not in {int(x) for x in pages[2:]} and mm.pgtable.pte[BASE >> PMD_SHIFT][2] == 0


def test_partial_then_slow_path_error_returns_count() -> None:
    """v6.1 mm/gup.c internal_get_user_pages_fast 3074-3082: a slow-path error after
    nr_pinned > 0 pages returns nr_pinned."""
    k = boot("6.1")
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, 2 * PAGE_SIZE)
    got = [fault_anon(k, mm, vma, BASE + i * PAGE_SIZE) for i in range(2)]
    pages = page_array(4)
    assert run_to_completion(pin_user_pages_fast(k, mm, BASE, 4, 0, pages)) == 2
    assert pages[:2].tolist() == got
    assert run_to_completion(pin_user_pages_fast(k, mm, 0x4000_0000, 1, 0, pages)) == -errno.EFAULT


def test_longterm_unpinnable_falls_back_and_migrates() -> None:
    """v6.1 mm/gup.c try_grab_folio: FOLL_LONGTERM && !is_longterm_pinnable_page -> NULL
    before any reference; the slow path (__gup_longterm_unlocked) migrates and pins."""
    k, mm, _, got = _anon("6.1", n=1, params=BootParams(normal_mb=16, movable_mb=16))
    assert pool_of(k.free_area, got[0]) == "movable"
    pages = page_array(1)
    assert run_to_completion(pin_user_pages_fast_only(k, mm, BASE, 1, FOLL_LONGTERM, pages)) == 0
    assert _acq(k) == (0, 0)
    assert run_to_completion(pin_user_pages_fast(k, mm, BASE, 1, FOLL_LONGTERM, pages)) == 1
    assert pool_of(k.free_area, int(pages[0])) == "normal"


def test_must_unshare_stops_after_grab() -> None:
    """v6.1 mm/gup.c gup_pte_range: R/O pte and gup_must_unshare -> gup_put_folio, stop;
    the grab and put both count in vmstat."""
    k, mm, _, got = _anon("6.1", n=1)
    table = mm.pgtable.pte[BASE >> PMD_SHIFT]
    table[0] &= ~np.uint64(_PAGE_RW)
    k.mem.flags[got[0]] &= ~np.uint64(k.pf.mask("PG_anon_exclusive"))
    before = _ref(k, got[0])
    pages = page_array(1)
    assert run_to_completion(pin_user_pages_fast_only(k, mm, BASE, 1, 0, pages)) == 0
    assert _ref(k, got[0]) == before
    assert _acq(k) == (1, 1)


# (profile, fs, expected pin_user_pages_fast return, fast-only return; None: the kernel
# has no pin_user_pages_fast_only) for a FOLL_LONGTERM|FOLL_WRITE pin of one page of a
# MAP_SHARED file mapping.
FILE_ROWS: list[tuple[str, FsType, int, int | None]] = [
    ("6.1", FsType.EXT4, 1, 1),  # v6.1 has no folio_fast_pin_allowed
    # v6.5 mm/gup.c:2608-2611 gup_pte_range folio_fast_pin_allowed (:2454) puts the grab back,
    # then check_vma_flags (:1056-1059) refuses; v6.5 mm/gup.c exports no
    # pin_user_pages_fast_only
    ("6.5", FsType.EXT4, -errno.EFAULT, None),
    ("6.5", FsType.TMPFS, 1, None),  # v6.5 folio_fast_pin_allowed: shmem_mapping allowed
    ("6.1", FsType.TMPFS, 1, 1),
]


@pytest.mark.parametrize(("profile", "fs", "expected", "fast_only"), FILE_ROWS)
def test_longterm_write_pin_of_shared_file_fast(
    profile: str, fs: FsType, expected: int, fast_only: int | None
) -> None:
    k = boot(profile)
    mm = new_mm(k)
    vma = shared_file_vma(k, mm, BASE, PAGE_SIZE, fs)
    page = fault_file(k, mm, vma, BASE)
    before = _ref(k, page)
    flags = FOLL_LONGTERM | FOLL_WRITE
    pages = page_array(1)
    if fast_only is None:
        with pytest.raises(NotInKernel):
            run_to_completion(pin_user_pages_fast_only(k, mm, BASE, 1, flags, pages))
    else:
        got = run_to_completion(pin_user_pages_fast_only(k, mm, BASE, 1, flags, pages))
        assert got == fast_only
        run_to_completion(unpin_user_pages(k, pages, 1))
    assert run_to_completion(pin_user_pages_fast(k, mm, BASE, 1, flags, pages)) == expected
    if expected < 0:
        # the fast walk's grab was put back; the slow path refused before grabbing
        assert _ref(k, page) == before
        assert _acq(k) == (1, 1)


# (api, gup_flags, pages given, expected return, WARN site fragment)
ARG_ROWS = [
    (pin_user_pages_fast, FOLL_GET, True, -errno.EINVAL, "FOLL_GET"),  # 3191-3192
    (pin_user_pages_fast, 0, False, -errno.EINVAL, "pages == NULL"),  # 3194-3195
    (pin_user_pages_fast_only, FOLL_GET, True, 0, "FOLL_GET"),  # 3217-3218
    (pin_user_pages_fast_only, 0, False, 0, "pages == NULL"),  # 3220-3221
    (get_user_pages_fast, FOLL_PIN, True, -errno.EINVAL, "FOLL_PIN"),  # is_valid_gup_flags
    (get_user_pages_fast, FOLL_LONGTERM, True, -errno.EINVAL, "FOLL_LONGTERM"),
    (get_user_pages_fast, FOLL_TOUCH, True, -errno.EINVAL, "internal_get_user_pages_fast"),
    (get_user_pages_fast_only, FOLL_TOUCH, True, 0, "internal_get_user_pages_fast"),  # clamp
]


@pytest.mark.parametrize(("api", "flags", "has_pages", "expected", "warn"), ARG_ROWS)
def test_argument_checks(api, flags: int, has_pages: bool, expected: int, warn: str) -> None:  # type: ignore[no-untyped-def]
    """v6.1 mm/gup.c 3106-3235 entry checks; 3047-3050 internal flag mask."""
    k, mm, _, got = _anon("6.1", n=1)
    before = _ref(k, got[0])
    pages = page_array(1) if has_pages else None
    assert run_to_completion(api(k, mm, BASE, 1, flags, pages)) == expected
    assert _ref(k, got[0]) == before
    assert any(warn in w for w in k.warned)


def test_misaligned_start_rounded_down() -> None:
    """v6.1 mm/gup.c internal_get_user_pages_fast 3058: start & PAGE_MASK."""
    k, mm, _, got = _anon("6.1")
    pages = page_array(2)
    assert run_to_completion(pin_user_pages_fast(k, mm, BASE + 123, 2, 0, pages)) == 2
    assert pages.tolist() == got[:2]


# (start, nr_pages, expected): v6.1 mm/gup.c 3058-3063, nr_pages widened from int
LENGTH_ROWS = [
    (BASE, -1, 0),  # len = 2^64 - 4096: start + len overflows -> 0
    (0, -1, -errno.EFAULT),  # no overflow, access_ok fails
    ((1 << 47) - PAGE_SIZE, 2, -errno.EFAULT),  # beyond TASK_SIZE_MAX
    (U64 & ~(PAGE_SIZE - 1), 2, 0),  # start + len wraps
]


@pytest.mark.parametrize(("start", "nr", "expected"), LENGTH_ROWS)
def test_length_checks(start: int, nr: int, expected: int) -> None:
    k, mm, _, got = _anon("6.1", n=1)
    before = _ref(k, got[0])
    assert run_to_completion(pin_user_pages_fast(k, mm, start, nr, 0, page_array(4))) == expected
    assert _ref(k, got[0]) == before


def test_zero_length_walk_on_unmapped_returns_zero() -> None:
    """v6.1 has no nr_pages == 0 shortcut: end == start, the walk stops at the none pmd."""
    k, mm, _, _ = _anon("6.1", n=0)
    assert run_to_completion(pin_user_pages_fast(k, mm, 4 * PMD_SIZE, 0, 0, page_array(1))) == 0


def test_zero_length_walk_over_present_pte_overruns() -> None:
    """v6.1 mm/gup.c gup_pte_range do/while (addr != end): with end == start the walk does
    not stop after the range, so it writes past an empty pages[]."""
    k, mm, _, _ = _anon("6.1", n=2)
    with pytest.raises(Violation, match="overrun"):
        run_to_completion(pin_user_pages_fast(k, mm, BASE, 0, 0, page_array(0)))


@pytest.mark.parametrize("fine", [False, True], ids=["range", "page-by-page"])
def test_zero_length_remainder_overruns_in_the_slow_path(fine: bool) -> None:
    """v6.1 mm/gup.c internal_get_user_pages_fast: the walk stores one page into a one-slot
    pages[], then hands nr_pages - nr_pinned (unsigned, so huge) to the slow path, whose
    __get_user_pages stores past the array."""
    k, mm, _, _ = _anon("6.1", n=1)
    k.fine_grained = fine
    with pytest.raises(Violation, match="gup pages\\[\\] overrun: entry 0 of 0"):
        run_to_completion(pin_user_pages_fast(k, mm, BASE, 0, 0, page_array(1)))


def test_get_user_pages_fast_4_4() -> None:
    """v4.4 get_user_pages_fast(start, nr_pages, write, pages): FOLL_GET, +1 per page."""
    k, mm, _, got = _anon("4.4", n=2)
    pages = page_array(2)
    assert run_to_completion(get_user_pages_fast(k, mm, BASE, 2, FOLL_WRITE, pages)) == 2
    assert [_ref(k, p) for p in got] == [2, 2]
    assert not k.vmstat.counters
    with pytest.raises(NotInKernel):
        run_to_completion(get_user_pages_fast(k, mm, BASE, 1, FOLL_FORCE, pages))
    with pytest.raises(NotInKernel):
        run_to_completion(pin_user_pages_fast(k, mm, BASE, 1, 0, pages))


def test_5_7_has_pin_fast_not_fast_only() -> None:
    """v5.7 mm/gup.c pin_user_pages_fast (bias); pin_user_pages_fast_only is v5.9."""
    k, mm, _, got = _anon("5.7", n=1)
    pages = page_array(1)
    assert run_to_completion(pin_user_pages_fast(k, mm, BASE, 1, 0, pages)) == 1
    assert _ref(k, got[0]) == 1 + 1024
    with pytest.raises(NotInKernel):
        run_to_completion(pin_user_pages_fast_only(k, mm, BASE, 1, 0, pages))


def _layout(k: Kernel, kinds: list[int]) -> int:
    """PMD slots: 0 none, 1 anon PTEs with holes, 2 R/O non-exclusive PTEs, 3 THP, 4 zero page."""
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, len(kinds) * PMD_SIZE)
    for n, kind in enumerate(kinds):
        base = BASE + n * PMD_SIZE
        if kind in (1, 2):
            for i in range(0, 40, 1 + n):
                fault_anon(k, mm, vma, base + i * PAGE_SIZE)
        if kind == 2:
            table = mm.pgtable.pte[base >> PMD_SHIFT]
            table &= ~np.uint64(_PAGE_RW)
            pfns = (table[table != 0] >> np.uint64(PAGE_SHIFT)).astype(np.int64)
            k.mem.flags[pfns] &= ~np.uint64(k.pf.mask("PG_anon_exclusive"))
        elif kind == 3:
            fault_thp(k, mm, vma, base)
        elif kind == 4:
            from pinlab.kernel.mm.memory import FAULT_FLAG_USER, handle_mm_fault

            # a read fault maps the huge zero page here (THP "always", use_zero_page)
            run_to_completion(handle_mm_fault(k, mm, vma, base, FAULT_FLAG_USER))
            k.thp_use_zero_page = False
            run_to_completion(handle_mm_fault(k, mm, vma, base + PMD_SIZE - PAGE_SIZE, 0))
    return mm.id


@settings(max_examples=40, deadline=None)
# rows drawn on purpose, beside the random ones: a write through R/O PTEs
# (__pte_access_permitted needs _PAGE_RW) and a R/O pin of non-exclusive anon pages
# (gup_must_unshare)
@example(profile="6.1", kinds=[2], first=0, nr=8, flags=FOLL_WRITE, api="get")
@example(profile="6.1", kinds=[2], first=0, nr=8, flags=0, api="pin")
@given(
    profile=st.sampled_from(["6.1", "6.5"]),
    kinds=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    first=st.integers(0, 600),
    nr=st.integers(1, 700),
    flags=st.sampled_from([0, FOLL_WRITE, FOLL_LONGTERM, FOLL_WRITE | FOLL_LONGTERM]),
    api=st.sampled_from(["pin", "get"]),
)
def test_fast_walk_range_step_matches_page_by_page(
    profile: str, kinds: list[int], first: int, nr: int, flags: int, api: str
) -> None:
    k = boot(profile)
    mm_id = _layout(k, kinds)
    slow = kernel_copy(k)
    slow.fine_grained = True
    results = []
    for kk in (k, slow):
        pages = page_array(nr)
        if api == "pin" and "pin_user_pages_fast_only" not in kk.profile.gup_apis:
            # v6.5 mm/gup.c exports no pin_user_pages_fast_only: the same fast-only pin walk
            # through internal_get_user_pages_fast (:3159), as pin_user_pages_fast starts it
            ret = run_to_completion(
                internal_get_user_pages_fast(
                    kk,
                    kk.mms[mm_id],
                    BASE + first * PAGE_SIZE,
                    nr,
                    flags | FOLL_PIN | FOLL_FAST_ONLY,
                    pages,
                )
            )
            ret = max(ret, 0)
        elif api == "pin":
            ret = run_to_completion(
                pin_user_pages_fast_only(
                    kk, kk.mms[mm_id], BASE + first * PAGE_SIZE, nr, flags, pages
                )
            )
        else:
            ret = run_to_completion(
                get_user_pages_fast_only(
                    kk, kk.mms[mm_id], BASE + first * PAGE_SIZE, nr, flags & FOLL_WRITE, pages
                )
            )
        results.append((ret, pages[: max(ret, 0)].tolist()))
    assert results[0] == results[1]
    slow.fine_grained = False
    assert kernel_digest(k) == kernel_digest(slow)


def test_debian_6_1_has_no_cma() -> None:
    """Debian's config-6.1.0-56-amd64: "# CONFIG_CMA is not set" — no CMA pageblocks to boot
    with, and is_longterm_pinnable_page (v6.1 include/linux/mm.h) refuses ZONE_MOVABLE only."""
    with pytest.raises(ValueError, match="CONFIG_CMA"):
        boot("6.1", BootParams(cma_mb=4))
    assert boot("5.7", BootParams(cma_mb=4)).profile.longterm_migrates_cma
