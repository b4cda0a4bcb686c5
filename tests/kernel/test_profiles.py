"""Kernel facts per profile, one row each with its source, checked on profile data and behaviour."""

from __future__ import annotations

import pytest

from pinlab.cli.model import anon_pinned
from pinlab.interleave import run_to_completion
from pinlab.kernel import errno
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SIZE
from pinlab.kernel.mm.pincount import page_maybe_dma_pinned
from pinlab.kernel.mm.types import MMF_HAS_PINNED
from pinlab.kernel.process import ext4_create, new_task, sys_mmap, task_mm
from pinlab.kernel.profiles import NotInKernel, get_profile
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE

# (profile, GUP_PIN_COUNTING_BIAS or None when the kernel has no FOLL_PIN, source)
BIAS_ROWS = [
    ("6.1", 1024, "v6.1 include/linux/mm.h:1267 (1U << 10)"),
    ("6.5", 1024, "v6.5 include/linux/mm.h GUP_PIN_COUNTING_BIAS"),
    ("5.7", 1024, "v5.7 include/linux/mm.h, 3faa52c03f44 'mm/gup: track FOLL_PIN pages'"),
    ("4.4", None, "v4.4 mm/gup.c: FOLL_GET only; FOLL_PIN is v5.6"),
]


@pytest.mark.parametrize(("profile", "bias", "cite"), BIAS_ROWS)
def test_pin_counting_bias(profile: str, bias: int | None, cite: str) -> None:
    p = get_profile(profile)
    assert p.has_foll_pin == (bias is not None), cite
    if bias is None:
        return
    assert p.pin_bias == bias, cite
    k = boot(profile)
    ex = anon_pinned(k)
    # After an LRU drain: the PTE's reference plus one pin's bias
    assert int(k.mem.refcount[ex.page]) == 1 + bias, cite


# (profile, least order with an exact pincount, struct page holding it, source)
PINCOUNT_ROWS = [
    ("6.1", 1, 1, "v6.1 include/linux/mm_types.h:362-365 compound_pincount in page[1]"),
    ("6.5", 1, 1, "v6.5 include/linux/mm_types.h folio->_pincount in page[1]"),
    ("5.7", 2, 2, "v5.7 include/linux/mm.h hpage_pincount_available: order > 1, page[2]"),
    ("4.4", None, None, "v4.4: no pin accounting"),
]


@pytest.mark.parametrize(("profile", "least", "where", "cite"), PINCOUNT_ROWS)
def test_exact_pincount_location(
    profile: str, least: int | None, where: int | None, cite: str
) -> None:
    p = get_profile(profile)
    assert p.exact_pincount_min_order == least, cite
    if least is None:
        assert not any(p.exact_pincount(o) for o in range(19)), cite
        return
    assert not p.exact_pincount(least - 1) and p.exact_pincount(least), cite
    assert p.pincount_page == where, cite


# (profile, flag, bit or None if the kernel lacks it, source)
FLAG_ROWS = [
    ("6.1", "PG_locked", 0, "v6.1 include/linux/page-flags.h:101"),
    ("6.1", "PG_referenced", 1, "v6.1 include/linux/page-flags.h:102"),
    ("6.1", "PG_waiters", 7, "v6.1 include/linux/page-flags.h:108 (must be bit 7)"),
    ("6.1", "PG_error", 8, "v6.1 include/linux/page-flags.h:109"),
    ("6.1", "PG_head", 16, "v6.1 include/linux/page-flags.h:117"),
    ("6.1", "PG_mappedtodisk", 17, "v6.1 include/linux/page-flags.h:118"),
    ("6.1", "PG_anon_exclusive", 17, "v6.1 include/linux/page-flags.h:152 alias"),
    ("6.1", "PG_swapbacked", 19, "v6.1 include/linux/page-flags.h:120"),
    ("6.1", "PG_arch_2", 24, "Debian config: no PAGE_IDLE_FLAG, so arch_2 follows hwpoison"),
    ("6.1", "PG_young", None, "Debian 6.1 config: CONFIG_PAGE_IDLE_FLAG not set"),
    ("6.5", "PG_anon_exclusive", 17, "v6.5 include/linux/page-flags.h:150 alias of mappedtodisk"),
    ("6.5", "PG_hwpoison", 23, "v6.5 include/linux/page-flags.h:129 (MEMORY_FAILURE)"),
    ("6.5", "PG_arch_2", None, "v6.5 include/linux/page-flags.h:135 ARCH_USES_PG_ARCH_X: arm64"),
    ("5.7", "PG_workingset", 6, "v4.20 1899ad18c607 added PG_workingset at bit 6"),
    ("5.7", "PG_waiters", 7, "v4.20 moved PG_error after PG_waiters"),
    ("5.7", "PG_head", 16, "v5.7 include/linux/page-flags.h"),
    ("5.7", "PG_anon_exclusive", None, "PG_anon_exclusive is v5.19"),
    ("5.7", "PG_arch_2", None, "PG_arch_2 is v5.10"),
    ("4.4", "PG_error", 1, "v4.4 mm/debug.c pageflag_names (enum order, BUILD_BUG_ON)"),
    ("4.4", "PG_head", 14, "v4.4: one PG_head, no PG_tail (4.4-rc1 compound_head rework)"),
    ("4.4", "PG_swapcache", 15, "v4.4: a real bit (alias of owner_priv_1 from v4.10)"),
    ("4.4", "PG_compound_lock", 23, "v4.4 CONFIG_TRANSPARENT_HUGEPAGE; removed in v4.5"),
    ("4.4", "PG_waiters", None, "PG_waiters is v4.10"),
    ("4.4", "PG_workingset", None, "PG_workingset is v4.20"),
    ("4.4", "PG_anon_exclusive", None, "PG_anon_exclusive is v5.19"),
]


@pytest.mark.parametrize(("profile", "flag", "bit", "cite"), FLAG_ROWS)
def test_page_flag_bits(profile: str, flag: str, bit: int | None, cite: str) -> None:
    p = get_profile(profile)
    k = boot(profile)
    assert p.has_flag(flag) == (bit is not None), cite
    if bit is None:
        with pytest.raises(KeyError, match=flag):
            k.pf.mask(flag)
        return
    assert p.flag_bit(flag) == bit and k.pf.mask(flag) == 1 << bit, cite


def _pin(k: Kernel, task_pid: int, addr: int, flags: int) -> tuple[int, int]:
    """pin_user_pages(addr, 1, flags) under mmap_read_lock: (return value, page)."""
    mm = task_mm(k, k.tasks[task_pid])
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    try:
        ret = run_to_completion(pin_user_pages(k, mm, addr, 1, flags, pages))
    finally:
        mmap_read_unlock(k, mm)
    return ret, int(pages[0])


# (profile, MMF_HAS_PINNED set by a pin, source)
MMF_ROWS = [
    ("6.1", True, "v6.1 include/linux/sched/coredump.h:83 bit 27; mm/gup.c mm_set_has_pinned_flag"),
    ("6.5", True, "v6.5 mm/gup.c mm_set_has_pinned_flag"),
    ("5.7", False, "MMF_HAS_PINNED is v5.14 (a458b76a4171)"),
]


@pytest.mark.parametrize(("profile", "sets", "cite"), MMF_ROWS)
def test_mmf_has_pinned(profile: str, sets: bool, cite: str) -> None:
    assert MMF_HAS_PINNED == 27
    k = boot(profile)
    assert k.profile.mmf_has_pinned == sets, cite
    ex = anon_pinned(k)
    assert ex.page >= 0
    (task,) = k.tasks.values()
    assert bool(task_mm(k, task).flags >> MMF_HAS_PINNED & 1) == sets, cite


# (profile, api, exists, source)
API_ROWS = [
    ("4.4", "pin_user_pages", False, "v4.4 mm/gup.c: pin_user_pages is v5.6"),
    ("4.4", "get_user_pages", True, "v4.4 mm/gup.c get_user_pages"),
    ("5.7", "pin_user_pages", True, "v5.7 mm/gup.c pin_user_pages"),
    ("5.7", "pin_user_pages_unlocked", False, "pin_user_pages_unlocked is v5.8"),
    ("6.1", "pin_user_pages_unlocked", True, "v6.1 mm/gup.c pin_user_pages_unlocked"),
]


@pytest.mark.parametrize(("profile", "api", "exists", "cite"), API_ROWS)
def test_api_presence(profile: str, api: str, exists: bool, cite: str) -> None:
    assert (api in get_profile(profile).gup_apis) == exists, cite


def test_pin_user_pages_under_4_4_is_not_in_kernel() -> None:
    k = boot("4.4")
    task = new_task(k)
    addr = run_to_completion(sys_mmap(k, task, None, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    with pytest.raises(NotInKernel, match=r"pin_user_pages\(\) does not exist in kernel 4.4"):
        _pin(k, task.pid, addr, FOLL_WRITE)
    mm = task_mm(k, task)
    run_to_completion(mmap_read_lock(k, mm))
    ret = run_to_completion(get_user_pages(k, mm, addr, 1, FOLL_WRITE, page_array(1)))
    mmap_read_unlock(k, mm)
    assert ret == 1


# (profile, result of a FOLL_LONGTERM|FOLL_WRITE pin of ext4 MAP_SHARED, source)
LONGTERM_FILE_ROWS = [
    ("6.1", 1, "v6.1 mm/gup.c check_vma_flags: no file-backed long-term check"),
    ("6.5", -errno.EFAULT, "v6.5 mm/gup.c check_vma_flags -> writable_file_mapping_allowed"),
]


@pytest.mark.parametrize(("profile", "expected", "cite"), LONGTERM_FILE_ROWS)
def test_longterm_writable_file_pin(profile: str, expected: int, cite: str) -> None:
    k = boot(profile)
    task = new_task(k)
    file = ext4_create(k, PAGE_SIZE)
    addr = run_to_completion(sys_mmap(k, task, None, PAGE_SIZE, RW, MAP_SHARED, file))
    run_to_completion(user_access(k, task, addr, True, 1))
    assert k.profile.longterm_file_write_refused == (expected < 0), cite
    ret, _ = _pin(k, task.pid, addr, FOLL_WRITE | FOLL_LONGTERM)
    assert ret == expected, cite


# (profile, zero page pin is a no-op, source)
ZERO_ROWS = [
    ("6.1", True, "6.1.192 mm/gup.c try_grab_page:233-234 (backport of v6.5 c8070b787519)"),
    ("5.7", False, "v5.7 mm/gup.c try_grab_page: the zero page gets the bias like any page"),
]


@pytest.mark.parametrize(("profile", "noop", "cite"), ZERO_ROWS)
def test_zero_page_pin(profile: str, noop: bool, cite: str) -> None:
    k = boot(profile)
    assert k.profile.zero_page_pin_noop == noop, cite
    task = new_task(k)
    addr = run_to_completion(sys_mmap(k, task, None, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    before = int(k.mem.refcount[k.zero_pfn])
    ret, page = _pin(k, task.pid, addr, 0)
    assert (ret, page) == (1, k.zero_pfn), "read pin of untouched anon memory: the zero page"
    after = int(k.mem.refcount[k.zero_pfn])
    assert after - before == (0 if noop else 1024), cite
    assert page_maybe_dma_pinned(k, page) == (not noop), cite
