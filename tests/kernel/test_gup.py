"""Kernel-fact rows for the gup / pup family; each row cites where the kernel decides it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import (
    anon_vma,
    fault_anon,
    fault_file,
    fault_thp,
    new_mm,
    pin,
    shared_file_vma,
    unpin,
)

from pinlab.interleave import run_to_completion
from pinlab.kernel import errno
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_GET, FOLL_LONGTERM, FOLL_PIN, FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE
from pinlab.kernel.mm.pincount import folio_pincount
from pinlab.kernel.mm.types import FsType
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.profiles import NotInKernel, get_profile
from pinlab.kernel.state import boot

BASE = 0x40_0000


def _setup(profile: str, pages: int = 4):  # type: ignore[no-untyped-def]
    k = boot(profile)
    mm = new_mm(k)
    vma = anon_vma(k, mm, BASE, pages * PAGE_SIZE)
    return k, mm, vma


# (profile, expected refcount delta for one 4 KiB anon pin, citation)
SMALL_PIN_ROWS = [
    ("6.1", 1024, "v6.1 mm/gup.c try_grab_page: folio_ref_add(GUP_PIN_COUNTING_BIAS)"),
    ("6.5", 1024, "v6.5 mm/gup.c try_grab_page"),
    ("5.7", 1024, "v5.7 mm/gup.c try_grab_page: refs = GUP_PIN_COUNTING_BIAS"),
]


@pytest.mark.parametrize(("profile", "delta", "cite"), SMALL_PIN_ROWS)
def test_pin_small_anon_page_adds_bias(profile: str, delta: int, cite: str) -> None:
    k, mm, vma = _setup(profile)
    page = fault_anon(k, mm, vma, BASE)
    before = int(k.mem.refcount[page])
    ret, pages = pin(k, mm, BASE, 1)
    assert (ret, pages) == (1, [page]), cite
    assert int(k.mem.refcount[page]) - before == delta, cite
    assert k.vmstat.counters[NR_FOLL_PIN_ACQUIRED] == 1, cite
    unpin(k, pages)
    assert int(k.mem.refcount[page]) == before, cite
    assert k.vmstat.counters[NR_FOLL_PIN_RELEASED] == 1, cite


@pytest.mark.parametrize(
    ("profile", "pincount_page"),
    [("6.1", 1), ("6.5", 1), ("5.7", 2)],
    ids=["6.1 page[1] compound_pincount", "6.5 folio->_pincount", "5.7 page[2] hpage_pinned"],
)
def test_pin_thp_subpage_exact_count(profile: str, pincount_page: int) -> None:
    """v6.1 mm/huge_memory.c follow_trans_huge_pmd -> try_grab_page: ref +1, pincount +1."""
    k = boot(profile)
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    head = fault_thp(k, mm, vma, PMD_SIZE)
    before = int(k.mem.refcount[head])
    ret, pages = pin(k, mm, PMD_SIZE + 5 * PAGE_SIZE, 1)
    assert (ret, pages) == (1, [head + 5])
    assert int(k.mem.refcount[head]) == before + 1
    assert int(k.mem.pincount[head + pincount_page]) == 1
    assert folio_pincount(k, head) == 1
    assert k.profile.pincount_page == pincount_page
    unpin(k, pages)
    assert int(k.mem.refcount[head]) == before
    assert folio_pincount(k, head) == 0


def test_pin_with_foll_get_refused() -> None:
    """v6.1 mm/gup.c pin_user_pages: WARN_ON_ONCE(FOLL_GET) -> -EINVAL; get_user_pages
    refuses FOLL_PIN (is_valid_gup_flags)."""
    k, mm, vma = _setup("6.1")
    page = fault_anon(k, mm, vma, BASE)
    before = int(k.mem.refcount[page])
    assert pin(k, mm, BASE, 1, FOLL_GET)[0] == -errno.EINVAL
    run_to_completion(mmap_read_lock(k, mm))
    got = run_to_completion(get_user_pages(k, mm, BASE, 1, FOLL_PIN, page_array(1)))
    mmap_read_unlock(k, mm)
    assert got == -errno.EINVAL
    assert int(k.mem.refcount[page]) == before
    assert any("FOLL_GET" in w for w in k.warned)
    assert any("FOLL_PIN" in w for w in k.warned)


# (profile, fs or None for anon, expected return) for a FOLL_LONGTERM|FOLL_WRITE pin of a
# MAP_SHARED mapping: v6.5 mm/gup.c check_vma_flags -> writable_file_mapping_allowed.
LONGTERM_WRITE_ROWS = [
    ("6.1", FsType.EXT4, 1),
    ("6.5", FsType.EXT4, -errno.EFAULT),
    ("6.1", FsType.TMPFS, 1),
    ("6.5", FsType.TMPFS, 1),
    ("6.1", None, 1),
    ("6.5", None, 1),
]


@pytest.mark.parametrize(("profile", "fs", "expected"), LONGTERM_WRITE_ROWS)
def test_longterm_write_pin_of_shared_file(profile: str, fs: FsType | None, expected: int) -> None:
    k = boot(profile)
    mm = new_mm(k)
    if fs is None:
        vma = anon_vma(k, mm, BASE, PAGE_SIZE)
        page = fault_anon(k, mm, vma, BASE)
    else:
        vma = shared_file_vma(k, mm, BASE, PAGE_SIZE, fs)
        page = fault_file(k, mm, vma, BASE)
    ret, pages = pin(k, mm, BASE, 1, FOLL_LONGTERM | FOLL_WRITE)
    assert ret == expected
    assert pages == ([page] if expected == 1 else [])


@pytest.mark.parametrize("profile", ["6.1", "6.5"])
def test_fsdax_longterm_refused(profile: str) -> None:
    """v6.1 mm/gup.c check_vma_flags: FOLL_LONGTERM on vma_is_fsdax -> -EOPNOTSUPP."""
    k = boot(profile)
    mm = new_mm(k)
    vma = shared_file_vma(k, mm, BASE, PAGE_SIZE, FsType.EXT4_DAX)
    fault_file(k, mm, vma, BASE)
    assert pin(k, mm, BASE, 1, FOLL_LONGTERM)[0] == -errno.EOPNOTSUPP
    assert k.vmstat.counters.get(NR_FOLL_PIN_ACQUIRED, 0) == 0


def test_fsdax_longterm_5_7_pins_then_releases() -> None:
    """v5.7 mm/gup.c __gup_longterm_locked: check_dax_vmas after pinning, unpin, -EOPNOTSUPP."""
    k = boot("5.7")
    mm = new_mm(k)
    vma = shared_file_vma(k, mm, BASE, PAGE_SIZE, FsType.EXT4_DAX)
    page = fault_file(k, mm, vma, BASE)
    before = int(k.mem.refcount[page])
    assert pin(k, mm, BASE, 1, FOLL_LONGTERM)[0] == -errno.EOPNOTSUPP
    assert int(k.mem.refcount[page]) == before
    assert k.vmstat.counters[NR_FOLL_PIN_ACQUIRED] == k.vmstat.counters[NR_FOLL_PIN_RELEASED] == 1


def test_unmapped_address_efault() -> None:
    """v6.1 mm/gup.c __get_user_pages: no VMA at start -> -EFAULT."""
    k, mm, _ = _setup("6.1")
    assert pin(k, mm, 0x1000_0000, 1)[0] == -errno.EFAULT


def test_partial_range_returns_count_so_far() -> None:
    """v6.1 mm/gup.c __get_user_pages: `return i ? i : ret` once a page was pinned."""
    k, mm, vma = _setup("6.1", pages=3)
    got = [fault_anon(k, mm, vma, BASE + i * PAGE_SIZE) for i in range(3)]
    ret, pages = pin(k, mm, BASE, 5)
    assert (ret, pages) == (3, got)


def test_nr_pages_zero_returns_zero() -> None:
    """v6.1 mm/gup.c __get_user_pages: nr_pages == 0 returns 0 (MMF_HAS_PINNED already set)."""
    k, mm, _ = _setup("6.1")
    assert pin(k, mm, BASE, 0)[0] == 0
    assert mm.flags >> 27 & 1


def test_misaligned_start_uses_containing_pages() -> None:
    """v6.1 mm/gup.c __get_user_pages keeps the sub-page offset; each step covers one page."""
    k, mm, vma = _setup("6.1")
    got = [fault_anon(k, mm, vma, BASE + i * PAGE_SIZE) for i in range(3)]
    ret, pages = pin(k, mm, BASE + 123, 2)
    assert (ret, pages) == (2, got[:2])


def test_pin_user_pages_missing_in_4_4() -> None:
    k, mm, _ = _setup("4.4")
    with pytest.raises(NotInKernel, match=r"pin_user_pages\(\) does not exist in kernel 4.4"):
        run_to_completion(pin_user_pages(k, mm, BASE, 1, 0, page_array(1)))


def test_get_user_pages_4_4_plain_reference() -> None:
    """v4.4 mm/gup.c follow_page_pte: FOLL_GET -> get_page (+1), no vmstat."""
    k, mm, vma = _setup("4.4")
    page = fault_anon(k, mm, vma, BASE)
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    assert run_to_completion(get_user_pages(k, mm, BASE, 1, FOLL_WRITE, pages)) == 1
    mmap_read_unlock(k, mm)
    assert int(k.mem.refcount[page]) == 2
    assert not k.vmstat.counters


def test_zero_page_pin_is_noop_on_6_1_192() -> None:
    """6.1.192 mm/gup.c try_grab_page: backport of v6.5 c8070b787519, zero page not pinned."""
    k, mm, _ = _setup("6.1")
    zero = k.zero_pfn
    before = int(k.mem.refcount[zero])
    ret, pages = pin(k, mm, BASE, 1)
    assert (ret, pages) == (1, [zero])
    assert int(k.mem.refcount[zero]) == before
    assert k.vmstat.counters.get(NR_FOLL_PIN_ACQUIRED, 0) == 0
    assert get_profile("6.1").zero_page_pin_noop
