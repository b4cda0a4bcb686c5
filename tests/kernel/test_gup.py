"""Kernel-fact rows for the gup / pup family; each row cites where the kernel decides it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import (
    anon_vma,
    fault_anon,
    fault_file,
    fault_thp,
    hugetlb_vma,
    new_mm,
    pin,
    shared_file_vma,
    unpin,
)

from pinlab.interleave import Point, Yield, run_to_completion
from pinlab.kernel import errno, process
from pinlab.kernel.mm.gup import __gup_longterm_locked, get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_FORCE, FOLL_GET, FOLL_LONGTERM, FOLL_PIN, FOLL_WRITE
from pinlab.kernel.mm.gup_follow import check_vma_flags
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MADV_HUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import (
    PAGE_SIZE,
    PMD_SIZE,
    get_pmd,
    get_pte,
    pmd_key,
    pmd_trans_huge,
    pte_dirty,
    pte_pfn,
    pte_write,
)
from pinlab.kernel.mm.pincount import folio_pincount
from pinlab.kernel.mm.types import VM_WRITE, FsType, MmStruct
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.profiles import NotInKernel, get_profile
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

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


def test_fsdax_longterm_5_7_pins_then_puts() -> None:
    """v5.7.14 mm/gup.c __gup_longterm_locked:1796-1800: check_dax_vmas after pinning, then
    put_page (not unpin) each page, -EOPNOTSUPP: 1023 of the bias stay, nothing released."""
    k = boot("5.7")
    mm = new_mm(k)
    vma = shared_file_vma(k, mm, BASE, PAGE_SIZE, FsType.EXT4_DAX)
    page = fault_file(k, mm, vma, BASE)
    before = int(k.mem.refcount[page])
    assert pin(k, mm, BASE, 1, FOLL_LONGTERM)[0] == -errno.EOPNOTSUPP
    assert int(k.mem.refcount[page]) == before + 1023
    assert k.vmstat.counters[NR_FOLL_PIN_ACQUIRED] == 1
    assert k.vmstat.counters.get(NR_FOLL_PIN_RELEASED, 0) == 0


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


def _run_bounded(gen: Generator[Yield, None, int], limit: int = 20_000) -> int:
    """Drive `gen` alone; a livelock (the kernel would spin in __get_user_pages) fails."""
    try:
        for _ in range(limit):
            next(gen)
    except StopIteration as stop:
        result: int = stop.value
        return result
    pytest.fail(f"no result after {limit} steps: __get_user_pages livelocks")


# (profile, THP?, citation) for get_user_pages(FOLL_WRITE|FOLL_FORCE) of a private R/O
# mapping, as ptrace/proc-mem writes do: each kernel returns 1 with the COW'ed page mapped
# read-only, each by its own route after the write fault.
FORCE_WRITE_ROWS = [
    ("6.1", False, "v6.1 mm/gup.c can_follow_write_pte: exclusive anon page, private R/O VMA"),
    ("6.1", True, "v6.1 mm/huge_memory.c can_follow_write_pmd"),
    ("5.7", False, "v5.7 mm/gup.c faultin_page sets FOLL_COW; can_follow_write_pte: dirty"),
    ("5.7", True, "v5.7 mm/huge_memory.c can_follow_write_pmd (8310d48b125d): FOLL_COW, dirty"),
    ("4.4", False, "v4.4 mm/gup.c faultin_page clears FOLL_WRITE after VM_FAULT_WRITE"),
    ("4.4", True, "v4.4 mm/gup.c faultin_page clears FOLL_WRITE; follow_trans_huge_pmd reads"),
]


@pytest.mark.parametrize(("profile", "thp", "cite"), FORCE_WRITE_ROWS)
def test_force_write_to_readonly_private_mapping(profile: str, thp: bool, cite: str) -> None:
    k = boot(profile)
    task = process.new_task(k)
    size = 2 * PMD_SIZE if thp else PAGE_SIZE
    prot = PROT_READ | PROT_WRITE if thp else PROT_READ
    raw = run_to_completion(
        process.sys_mmap(k, task, None, size, prot, MAP_PRIVATE | MAP_ANONYMOUS)
    )
    addr = (raw + PMD_SIZE - 1) & ~(PMD_SIZE - 1) if thp else raw
    if thp:
        assert run_to_completion(process.sys_madvise(k, task, raw, size, MADV_HUGEPAGE)) == 0
        run_to_completion(user_access(k, task, addr, True))
        assert run_to_completion(process.sys_mprotect(k, task, raw, size, PROT_READ)) == 0
    else:
        run_to_completion(user_access(k, task, addr, False))
    mm = k.mms[task.mm]
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    ret = _run_bounded(get_user_pages(k, mm, addr, 1, FOLL_WRITE | FOLL_FORCE, pages))
    mmap_read_unlock(k, mm)
    assert ret == 1, cite
    entry = get_pmd(mm.pgtable, addr) if thp else get_pte(mm.pgtable, addr)
    assert bool(pmd_trans_huge(entry)) == thp, cite
    assert int(pages[0]) == pte_pfn(entry) and int(pages[0]) != k.zero_pfn, cite
    assert not pte_write(entry) and pte_dirty(entry), cite


def _reads_by_label(gen: Generator[Yield, None, int]) -> dict[str, list[frozenset[object]]]:
    """Run `gen` alone, collecting the read footprint of every labelled Point."""
    seen: dict[str, list[frozenset[object]]] = {}
    try:
        while True:
            step = next(gen)
            if isinstance(step, Point):
                seen.setdefault(step.label, []).append(frozenset(step.reads or ()))
    except StopIteration:
        return seen


# (pin API, PTE- or PMD-level step, citation): each step that reads a PTE or a huge PMD
# also reads the PMD slot's key, so that a concurrent split/zap/collapse of that PMD
# (which writes pgtable.pmd_key) never looks independent of it.
PMD_KEY_ROWS = [
    ("slow", "follow_pmd_mask:read", "v6.1 mm/gup.c follow_pmd_mask: pmdp_get_lockless"),
    ("slow", "follow_page_pte:read", "v6.1 mm/gup.c follow_page_pte: pte_offset_map_lock"),
    ("fast", "gup_pmd_range:read", "v6.1 mm/gup.c gup_pmd_range: pmdp_get_lockless"),
    ("fast", "gup_pte_range:read", "v6.1 mm/gup.c gup_pte_range: ptep_get_lockless"),
    ("fast", "gup_pte_range:recheck", "v6.1 mm/gup.c gup_pte_range: pmd_val != pmd_val(*pmdp)"),
]


@pytest.mark.parametrize(("api", "label", "cite"), PMD_KEY_ROWS)
def test_pte_level_steps_read_the_pmd_key(api: str, label: str, cite: str) -> None:
    k, mm, vma = _setup("6.1")
    fault_anon(k, mm, vma, BASE)
    k.fine_grained = True
    pages = page_array(1)
    if api == "slow":
        run_to_completion(mmap_read_lock(k, mm))
        seen = _reads_by_label(pin_user_pages(k, mm, BASE, 1, 0, pages))
        mmap_read_unlock(k, mm)
    else:
        seen = _reads_by_label(pin_user_pages_fast(k, mm, BASE, 1, 0, pages))
    assert seen.get(label), cite
    assert all(pmd_key(mm.id, BASE) in reads for reads in seen[label]), cite


def _twice_unpin_errno(k: Kernel, mm: MmStruct) -> None:
    for _ in range(2):
        run_to_completion(unpin_user_pages(k, page_array(1), -errno.EFAULT))


def _twice_longterm_without_pin(k: Kernel, mm: MmStruct) -> None:
    for _ in range(2):
        got = run_to_completion(__gup_longterm_locked(k, mm, BASE, 1, page_array(1), FOLL_LONGTERM))
        assert got == -errno.EINVAL


def _twice_pin_with_get(k: Kernel, mm: MmStruct) -> None:
    for _ in range(2):
        assert pin(k, mm, BASE, 1, FOLL_GET)[0] == -errno.EINVAL


# (trigger, warning site, times logged after two calls, citation)
WARN_ROWS = [
    (_twice_unpin_errno, "unpin_user_pages IS_ERR_VALUE", 2, "v6.1 mm/gup.c:445 WARN_ON"),
    (_twice_longterm_without_pin, "without FOLL_PIN", 2, "v6.1 mm/gup.c:2153 WARN_ON"),
    (_twice_pin_with_get, "pin_user_pages FOLL_GET", 1, "v6.1 mm/gup.c:3309 WARN_ON_ONCE"),
]


@pytest.mark.parametrize(("trigger", "site", "times", "cite"), WARN_ROWS)
def test_warn_on_fires_every_time_warn_on_once_once(
    trigger: Callable[[Kernel, MmStruct], None], site: str, times: int, cite: str
) -> None:
    k, mm, vma = _setup("6.1")
    fault_anon(k, mm, vma, BASE)
    trigger(k, mm)
    assert sum(site in w for w in k.warned) == times, cite


# (profile, check_vma_flags result for FOLL_WRITE|FOLL_FORCE on a private R/O hugetlb VMA)
HUGETLB_FORCE_ROWS = [
    ("6.1", -errno.EFAULT, "v6.1 mm/gup.c check_vma_flags (v6.0 1d8d14641fd9)"),
    ("5.7", 0, "v5.7 mm/gup.c check_vma_flags: no hugetlb test"),
    ("4.4", 0, "v4.4 mm/gup.c check_vma_flags: no hugetlb test"),
]


@pytest.mark.parametrize(("profile", "expected", "cite"), HUGETLB_FORCE_ROWS)
def test_force_write_hugetlb_check(profile: str, expected: int, cite: str) -> None:
    k = boot(profile)
    mm = new_mm(k)
    vma = hugetlb_vma(k, mm, PMD_SIZE, PMD_SIZE)
    vma.vm_flags &= ~VM_WRITE
    assert check_vma_flags(k, vma, FOLL_WRITE | FOLL_FORCE | FOLL_GET) == expected, cite


# (profile, pin_user_pages(pages=NULL) result, refcount added, citation)
NULL_PAGES_ROWS = [
    ("6.1", -errno.EINVAL, 0, "6.1.192 mm/gup.c pin_user_pages: WARN_ON_ONCE(!pages)"),
    ("5.7", 1, 1024, "v5.7 mm/gup.c pin_user_pages: no test; the pin is taken, not recorded"),
]


@pytest.mark.parametrize(("profile", "expected", "delta", "cite"), NULL_PAGES_ROWS)
def test_pin_with_null_pages(profile: str, expected: int, delta: int, cite: str) -> None:
    k, mm, vma = _setup(profile)
    page = fault_anon(k, mm, vma, BASE)
    before = int(k.mem.refcount[page])
    run_to_completion(mmap_read_lock(k, mm))
    ret = run_to_completion(pin_user_pages(k, mm, BASE, 1, 0, None))
    mmap_read_unlock(k, mm)
    assert ret == expected, cite
    assert int(k.mem.refcount[page]) - before == delta, cite


def _labels(gen: Generator[Yield, None, object], wanted: set[str]) -> list[str]:
    """Labels of the wanted Points `gen` yields, in order."""
    out: list[str] = []
    try:
        while True:
            step = next(gen)
            if isinstance(step, Point) and step.label in wanted:
                out.append(step.label)
    except StopIteration:
        return out


# (profile, order of the atomic steps of a THP-subpage pin and of its unpin, citation)
PIN_ORDER_ROWS = [
    (
        "6.1",
        ["pin:ref", "pin:pincount"],
        ["vmstat", "unpin:pincount", "put:ref"],
        "v6.1 mm/gup.c try_grab_page (ref, then pincount); gup_put_folio (vmstat first)",
    ),
    (
        "5.7",
        ["pin:pincount", "pin:ref"],
        ["unpin:pincount", "put:ref", "vmstat"],
        "v5.7 mm/gup.c try_grab_page (hpage_pincount_add first); unpin_user_page (vmstat last)",
    ),
]


@pytest.mark.parametrize(("profile", "pin_steps", "unpin_steps", "cite"), PIN_ORDER_ROWS)
def test_pin_unpin_step_order(
    profile: str, pin_steps: list[str], unpin_steps: list[str], cite: str
) -> None:
    k = boot(profile)
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    head = fault_thp(k, mm, vma, PMD_SIZE)
    k.fine_grained = True
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    wanted = {"pin:ref", "pin:pincount", "vmstat", "unpin:pincount", "put:ref"}
    got = _labels(pin_user_pages(k, mm, PMD_SIZE, 1, 0, pages), wanted)
    mmap_read_unlock(k, mm)
    assert got == [*pin_steps, "vmstat"], cite
    assert _labels(unpin_user_pages(k, [head], 1), wanted) == unpin_steps, cite
