"""Where v6.5 runs other code than 6.1.192: each row is one kernel's fact, with its source.

6.5 is the mainline v6.5 tree, 6.1 is 6.1.192 (Debian linux-source-6.1); lines are where
the fact was read.  Every test drives the model's real entry points on a booted kernel and
asserts return values, errnos, references, pins and vmstat.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import pytest

from pinlab.interleave import Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import errno
from pinlab.kernel import process as P
from pinlab.kernel.fs.ext4 import ext4_create
from pinlab.kernel.fs.shmem import tmpfs_create
from pinlab.kernel.io_uring.ring import (
    IORING_REGISTER_BUFFERS,
    IORING_UNREGISTER_BUFFERS,
    ring_file,
)
from pinlab.kernel.mm import mmap as M
from pinlab.kernel.mm.gup import (
    get_user_pages,
    get_user_pages_remote,
    get_user_pages_unlocked,
    page_array,
    pin_user_pages,
    pin_user_pages_remote,
    pin_user_pages_unlocked,
)
from pinlab.kernel.mm.gup_fast import (
    get_user_pages_fast,
    get_user_pages_fast_only,
    pin_user_pages_fast,
)
from pinlab.kernel.mm.gup_flags import (
    FOLL_FAST_ONLY,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_REMOTE,
    FOLL_TRIED,
    FOLL_WRITE,
)
from pinlab.kernel.mm.gup_page import Locked, Pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.page_alloc import pool_of
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, get_pte, pte_write
from pinlab.kernel.mm.pincount import folio_pincount
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import MmStruct, Task
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = M.PROT_READ | M.PROT_WRITE
ANON = M.MAP_PRIVATE | M.MAP_ANONYMOUS
U64 = (1 << 64) - 1
# v6.5 arch/x86/include/asm/page_64.h:89 task_size_max, 4-level paging
TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE

Gup = Callable[[Kernel, MmStruct, int, int, int, Pages], Generator[Yield, None, int]]


def _task(profile: str, params: BootParams | None = None) -> tuple[Kernel, Task, MmStruct]:
    k = boot(profile, params)
    task = P.new_task(k)
    return k, task, k.mms[task.mm]


def _written(k: Kernel, task: Task, npages: int) -> int:
    """`npages` written small anon pages, the LRU batch drained; their address."""
    addr = run(P.sys_mmap(k, task, None, npages * PAGE_SIZE, RW, ANON))
    assert run(P.sys_madvise(k, task, addr, npages * PAGE_SIZE, M.MADV_NOHUGEPAGE)) == 0
    for i in range(npages):
        run(user_access(k, task, addr + i * PAGE_SIZE, True, 1 + i))
    run(lru_add_drain(k, task.cpu))
    return addr


def _pfn(k: Kernel, task: Task, addr: int) -> int:
    return P.pagemap(k, task, addr).pfn


def _ref(k: Kernel, pfn: int) -> int:
    return int(k.mem.refcount[compound_head(k.mem, pfn)])


def _acq(k: Kernel) -> tuple[int, int]:
    c = k.vmstat.counters
    return c.get(NR_FOLL_PIN_ACQUIRED, 0), c.get(NR_FOLL_PIN_RELEASED, 0)


def _locked(k: Kernel, mm: MmStruct, gen: Generator[Yield, None, int]) -> int:
    """Run a gup that needs mmap_lock held by its caller."""
    run(mmap_read_lock(k, mm))
    ret = run(gen)
    mmap_read_unlock(k, mm)
    return ret


# ---- 1. pin_user_pages* with bad arguments ----


def _pup(k: Kernel, mm: MmStruct, addr: int, flags: int, pages: Pages) -> int:
    return _locked(k, mm, pin_user_pages(k, mm, addr, 1, flags, pages))


def _pup_remote(k: Kernel, mm: MmStruct, addr: int, flags: int, pages: Pages) -> int:
    return _locked(k, mm, pin_user_pages_remote(k, mm, addr, 1, flags, pages))


def _pup_unlocked(k: Kernel, mm: MmStruct, addr: int, flags: int, pages: Pages) -> int:
    return run(pin_user_pages_unlocked(k, mm, addr, 1, pages, flags))


def _pup_fast(k: Kernel, mm: MmStruct, addr: int, flags: int, pages: Pages) -> int:
    return run(pin_user_pages_fast(k, mm, addr, 1, flags, pages))


PinCall = Callable[[Kernel, MmStruct, int, int, Pages], int]

# (profile, entry, FOLL_GET passed by the caller: expected return, source)
BAD_PIN_ROWS: list[tuple[str, PinCall, int, str]] = [
    ("6.5", _pup, 0, "v6.5 mm/gup.c:3369-3370 pin_user_pages"),
    ("6.1", _pup, -errno.EINVAL, "6.1.192 mm/gup.c:3309-3310 pin_user_pages"),
    ("6.5", _pup_remote, 0, "v6.5 mm/gup.c:3337-3341 pin_user_pages_remote"),
    ("6.1", _pup_remote, -errno.EINVAL, "6.1.192 mm/gup.c:3272-3273 pin_user_pages_remote"),
    ("6.5", _pup_unlocked, 0, "v6.5 mm/gup.c:3389-3391 pin_user_pages_unlocked"),
    ("6.1", _pup_unlocked, -errno.EINVAL, "6.1.192 mm/gup.c:3333-3334 pin_user_pages_unlocked"),
    ("6.5", _pup_fast, -errno.EINVAL, "v6.5 mm/gup.c:3301-3302 pin_user_pages_fast"),
    ("6.1", _pup_fast, -errno.EINVAL, "6.1.192 mm/gup.c:3191-3192 pin_user_pages_fast"),
]


@pytest.mark.parametrize(("profile", "call", "expected", "cite"), BAD_PIN_ROWS)
def test_pin_with_foll_get_refused(profile: str, call: PinCall, expected: int, cite: str) -> None:
    """FOLL_GET and FOLL_PIN together: WARN_ON_ONCE, nothing taken; the value returned is
    each kernel's own."""
    k, task, mm = _task(profile)
    addr = _written(k, task, 1)
    pfn = _pfn(k, task, addr)
    before = _ref(k, pfn)
    assert call(k, mm, addr, FOLL_GET, page_array(1)) == expected, cite
    assert _ref(k, pfn) == before
    assert _acq(k) == (0, 0)
    assert k.warned, cite


# ---- 2. internal FOLL_ flags from callers of get_user_pages* ----


def _gup(k: Kernel, mm: MmStruct, addr: int, flags: int, pages: Pages) -> int:
    return _locked(k, mm, get_user_pages(k, mm, addr, 1, flags, pages))


def _gup_remote(k: Kernel, mm: MmStruct, addr: int, flags: int, pages: Pages) -> int:
    return _locked(k, mm, get_user_pages_remote(k, mm, addr, 1, flags, pages))


def _gup_unlocked(k: Kernel, mm: MmStruct, addr: int, flags: int, pages: Pages) -> int:
    return run(get_user_pages_unlocked(k, mm, addr, 1, pages, flags))


# (profile, entry, flag, expected return, references taken, source)
INTERNAL_FLAG_ROWS: list[tuple[str, PinCall, int, int, int, str]] = [
    ("6.5", _gup, FOLL_TRIED, -errno.EINVAL, 0, "v6.5 mm/gup.c:2221-2223, :2366"),
    ("6.1", _gup, FOLL_TRIED, 1, 1, "6.1.192 mm/gup.c:2171-2186 is_valid_gup_flags"),
    ("6.5", _gup, FOLL_REMOTE, -errno.EINVAL, 0, "v6.5 mm/gup.c:2221-2223"),
    ("6.1", _gup, FOLL_REMOTE, 1, 1, "6.1.192 mm/gup.c:2331"),
    ("6.5", _gup, FOLL_FAST_ONLY, -errno.EINVAL, 0, "v6.5 mm/gup.c:2221-2223"),
    ("6.1", _gup, FOLL_FAST_ONLY, 1, 1, "6.1.192 mm/gup.c:2331"),
    ("6.5", _gup_remote, FOLL_TRIED, -errno.EINVAL, 0, "v6.5 mm/gup.c:2327-2329"),
    ("6.1", _gup_remote, FOLL_TRIED, 1, 1, "6.1.192 mm/gup.c:2285"),
    ("6.5", _gup_unlocked, FOLL_REMOTE, -errno.EINVAL, 0, "v6.5 mm/gup.c:2394-2396"),
    ("6.1", _gup_unlocked, FOLL_REMOTE, 1, 1, "6.1.192 mm/gup.c:2354 (no flag check)"),
    ("6.5", _pup, FOLL_TRIED, 0, 0, "v6.5 mm/gup.c:3369-3370"),
    ("6.1", _pup, FOLL_TRIED, 1, 1024, "6.1.192 mm/gup.c:3309-3316"),
]


@pytest.mark.parametrize(
    ("profile", "call", "flag", "expected", "refs", "cite"), INTERNAL_FLAG_ROWS
)
def test_internal_flag_from_caller(
    profile: str, call: PinCall, flag: int, expected: int, refs: int, cite: str
) -> None:
    """v6.5 is_valid_gup_args: FOLL_PIN/TRIED/REMOTE/FAST_ONLY are gup's own (WARN_ON_ONCE)."""
    k, task, mm = _task(profile)
    addr = _written(k, task, 1)
    pfn = _pfn(k, task, addr)
    before = _ref(k, pfn)
    assert call(k, mm, addr, flag, page_array(1)) == expected, cite
    assert _ref(k, pfn) == before + refs, cite
    assert bool(k.warned) == (expected <= 0), cite


# ---- 3. FOLL_LONGTERM with a droppable mmap_lock ----


def _pup_remote_locked(k: Kernel, mm: MmStruct, addr: int, flags: int, pages: Pages) -> int:
    run(mmap_read_lock(k, mm))
    locked = Locked()
    ret = run(pin_user_pages_remote(k, mm, addr, 1, flags, pages, locked))
    if locked.held:
        mmap_read_unlock(k, mm)
    return ret


# (profile, entry, expected return, pins taken, source)
LONGTERM_LOCKED_ROWS: list[tuple[str, PinCall, int, int, str]] = [
    ("6.5", _pup_unlocked, 1, 1, "v6.5 mm/gup.c:3384-3395 -> __gup_longterm_locked(&locked=0)"),
    (
        "6.1",
        _pup_unlocked,
        -errno.EINVAL,
        0,
        "6.1.192 mm/gup.c:2367 WARN_ON_ONCE",
    ),
    ("6.5", _pup_remote_locked, 1, 1, "v6.5 mm/gup.c:3330-3343 (locked passed on)"),
    (
        "6.1",
        _pup_remote_locked,
        -errno.EINVAL,
        0,
        "6.1.192 mm/gup.c:2204 WARN_ON_ONCE",
    ),
]


@pytest.mark.parametrize(("profile", "call", "expected", "pins", "cite"), LONGTERM_LOCKED_ROWS)
def test_longterm_with_locked(
    profile: str, call: PinCall, expected: int, pins: int, cite: str
) -> None:
    """A long-term pin through an entry whose mmap_lock may be dropped."""
    k, task, mm = _task(profile)
    addr = _written(k, task, 1)
    pfn = _pfn(k, task, addr)
    before = _ref(k, pfn)
    pages = page_array(1)
    assert call(k, mm, addr, FOLL_LONGTERM | FOLL_WRITE, pages) == expected, cite
    assert _ref(k, pfn) == before + 1024 * pins
    assert _acq(k) == (pins, 0)
    assert mm.mmap_readers == 0
    if pins:
        assert int(pages[0]) == pfn


# ---- 4. get_user_pages_fast_only / internal_get_user_pages_fast ----


def _fast_only(k: Kernel, mm: MmStruct, addr: int, nr: int, flags: int) -> int:
    return run(get_user_pages_fast_only(k, mm, addr, nr, flags, page_array(max(nr, 1))))


def _fast(k: Kernel, mm: MmStruct, addr: int, nr: int, flags: int) -> int:
    return run(get_user_pages_fast(k, mm, addr, nr, flags, page_array(max(nr, 1))))


FastCall = Callable[[Kernel, MmStruct, int, int, int], int]

# (profile, entry, start: None = the written page, nr_pages, flags, expected, source)
FAST_ROWS: list[tuple[str, FastCall, int | None, int, int, int, str]] = [
    ("6.5", _fast_only, None, 1, FOLL_LONGTERM, -errno.EINVAL, "v6.5 mm/gup.c:3240-3242"),
    ("6.1", _fast_only, None, 1, FOLL_LONGTERM, 1, "6.1.192 mm/gup.c:3106-3130 no check"),
    ("6.5", _fast_only, U64 & ~0xFFF, 2, 0, -errno.EOVERFLOW, "v6.5 mm/gup.c:3183-3184"),
    ("6.1", _fast_only, U64 & ~0xFFF, 2, 0, 0, "6.1.192 mm/gup.c:3060-3061, :3128-3129"),
    ("6.5", _fast, U64 & ~0xFFF, 2, 0, -errno.EOVERFLOW, "v6.5 mm/gup.c:3183-3184"),
    ("6.1", _fast, U64 & ~0xFFF, 2, 0, 0, "6.1.192 mm/gup.c:3060-3061"),
    ("6.5", _fast_only, TASK_SIZE_MAX, 1, 0, -errno.EFAULT, "v6.5 mm/gup.c:3185-3186"),
    ("6.1", _fast_only, TASK_SIZE_MAX, 1, 0, 0, "6.1.192 mm/gup.c:3062-3063, clamped :3128-3129"),
]


@pytest.mark.parametrize(("profile", "call", "start", "nr", "flags", "expected", "cite"), FAST_ROWS)
def test_fast_entry_returns(
    profile: str, call: FastCall, start: int | None, nr: int, flags: int, expected: int, cite: str
) -> None:
    """gup-fast's argument checks and what get_user_pages_fast_only passes back."""
    k, task, mm = _task(profile)
    addr = _written(k, task, 1)
    pfn = _pfn(k, task, addr)
    before = _ref(k, pfn)
    assert call(k, mm, addr if start is None else start, nr, flags) == expected, cite
    assert _ref(k, pfn) == before + max(expected, 0)


# ---- 5. R/O long-term pins of pages that are not anon ----


def _zero_page(k: Kernel, task: Task) -> int:
    """A private anon page only read: the zero page is mapped."""
    addr = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, ANON))
    assert run(P.sys_madvise(k, task, addr, PAGE_SIZE, M.MADV_NOHUGEPAGE)) == 0
    run(user_access(k, task, addr, False))
    assert _pfn(k, task, addr) == k.zero_pfn
    return addr


def _private_file(k: Kernel, task: Task, shared: bool = False) -> int:
    """A page of an ext4 file mapped private (or shared) and only read: its page-cache page."""
    file = ext4_create(k, PAGE_SIZE)
    flags = M.MAP_SHARED if shared else M.MAP_PRIVATE
    addr = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, flags, file))
    run(user_access(k, task, addr, False))
    run(lru_add_drain(k, task.cpu))
    return addr


def _pin_ro(k: Kernel, mm: MmStruct, addr: int, flags: int, fast: bool) -> tuple[int, int]:
    pages = page_array(1)
    if fast:
        ret = run(pin_user_pages_fast(k, mm, addr, 1, flags, pages))
    else:
        ret = _locked(k, mm, pin_user_pages(k, mm, addr, 1, flags, pages))
    return ret, int(pages[0])


Setup = Callable[[Kernel, Task], int]

# (profile, mapping, flags, via gup-fast, unshared into a new anon page, source)
UNSHARE_ROWS: list[tuple[str, Setup, int, bool, bool, str]] = [
    ("6.5", _zero_page, FOLL_LONGTERM, False, True, "v6.5 mm/internal.h:992-1000, gup.c:642"),
    ("6.1", _zero_page, FOLL_LONGTERM, False, False, "6.1.192 include/linux/mm.h:3202-3203"),
    ("6.5", _zero_page, FOLL_LONGTERM, True, True, "v6.5 mm/gup.c:2613 (vma NULL), :3197"),
    ("6.1", _zero_page, FOLL_LONGTERM, True, False, "6.1.192 include/linux/mm.h:3202-3203"),
    ("6.5", _zero_page, 0, False, False, "v6.5 mm/internal.h:988-989: short-term pins"),
    ("6.5", _private_file, FOLL_LONGTERM, False, True, "v6.5 mm/internal.h:1000 COW mapping"),
    ("6.1", _private_file, FOLL_LONGTERM, False, False, "6.1.192 include/linux/mm.h:3202"),
    ("6.5", _private_file, FOLL_LONGTERM, True, True, "v6.5 mm/gup.c:2613, memory.c:3436"),
    ("6.5", _private_file, 0, True, False, "v6.5 mm/internal.h:988-989"),
    (
        "6.5",
        lambda k, t: _private_file(k, t, shared=True),
        FOLL_LONGTERM,
        False,
        False,
        "v6.5 mm/internal.h:1000 is_cow_mapping false for MAP_SHARED",
    ),
]


@pytest.mark.parametrize(("profile", "setup", "flags", "fast", "unshared", "cite"), UNSHARE_ROWS)
def test_readonly_longterm_pin_of_non_anon_page(
    profile: str, setup: Setup, flags: int, fast: bool, unshared: bool, cite: str
) -> None:
    """v6.5: -EMLINK, an unshare fault (do_wp_page -> wp_page_copy, mm/memory.c:3436-3447)
    maps a fresh exclusive anon copy R/O, and the copy is what gets pinned."""
    k, task, mm = _task(profile)
    addr = setup(k, task)
    old = _pfn(k, task, addr)
    old_ref = _ref(k, old)
    ret, got = _pin_ro(k, mm, addr, flags, fast)
    assert ret == 1, cite
    now = _pfn(k, task, addr)
    if unshared:
        assert got == now != old, cite
        assert not pte_write(get_pte(mm.pgtable, addr))
        run(lru_add_drain(k, task.cpu))
        # the new page's mapping and the pin (its LRU-batch reference drained)
        assert _ref(k, got) == 1 + 1024
        # gup-fast grabs the page-cache page, then puts it back (v6.5 mm/gup.c:2593, :2613-2614);
        # the zero page's grab is no pin at all (:145)
        tried = fast and old != k.zero_pfn
        assert _acq(k) == ((2, 1) if tried else (1, 0)), cite
        if old != k.zero_pfn:
            # the page cache keeps its reference; the mapping's went with the PTE
            assert _ref(k, old) == old_ref - 1
    else:
        assert got == now == old, cite
        pinned = old != k.zero_pfn
        assert _ref(k, old) == old_ref + (1024 if pinned else 0)


# (profile, the pin lands on a fresh anon copy, source)
HUGE_ZERO_ROWS = [
    (
        "6.5",
        True,
        "v6.5 mm/huge_memory.c:1473 follow_trans_huge_pmd -> gup_must_unshare (-EMLINK); "
        "do_huge_pmd_wp_page falls back for the huge zero PMD, do_wp_page copies",
    ),
    ("6.1", False, "6.1.192 include/linux/mm.h:3202-3203 gup_must_unshare: anon pages only"),
]


@pytest.mark.parametrize(("profile", "copied", "cite"), HUGE_ZERO_ROWS)
def test_readonly_longterm_pin_of_the_huge_zero_pmd(profile: str, copied: bool, cite: str) -> None:
    k, task, mm = _task(profile)
    k.thp_enabled = "always"
    addr = run(P.sys_mmap(k, task, None, 2 * PMD_SIZE, RW, ANON))
    addr = (addr + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, task, addr, False))
    assert k.huge_zero_pfn >= 0 and _pfn(k, task, addr) == k.huge_zero_pfn
    ret, page = _pin_ro(k, mm, addr, FOLL_LONGTERM, False)
    assert ret == 1, cite
    assert (page != k.huge_zero_pfn) == copied, cite
    if copied:
        assert _pfn(k, task, addr) == page, cite
        assert folio_pincount(k, page) == 0 and _ref(k, page) >= 1 + 1024, cite


# ---- 6. FOLL_LONGTERM's LRU drain ----

# (profile, is the bystander page drained onto the LRU, source)
DRAIN_ROWS = [
    ("6.5", False, "v6.5 mm/gup.c:2044-2047: only a folio without PG_lru drains"),
    ("6.1", True, "6.1.192 mm/gup.c:1993-2004: refcount != expected + 1 drains"),
]


@pytest.mark.parametrize(("profile", "drained", "cite"), DRAIN_ROWS)
def test_longterm_drain(profile: str, drained: bool, cite: str) -> None:
    """A ZONE_MOVABLE page on the LRU with an extra FOLL_GET reference: 6.1.192 drains the
    per-CPU batches (a bystander page just faulted gets PG_lru), v6.5 does not; migration
    fails on the extra reference either way (-ENOMEM)."""
    k, task, mm = _task(profile, BootParams(normal_mb=16, movable_mb=16))
    addr = _written(k, task, 1)
    pfn = _pfn(k, task, addr)
    assert pool_of(k.free_area, pfn) == "movable"
    assert _locked(k, mm, get_user_pages(k, mm, addr, 1, 0, page_array(1))) == 1
    other = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, ANON))
    run(user_access(k, task, other, True, 7))
    bystander = _pfn(k, task, other)
    lru = k.pf.mask("PG_lru")
    assert not int(k.mem.flags[bystander]) & lru
    pages = page_array(1)
    ret = _locked(k, mm, pin_user_pages(k, mm, addr, 1, FOLL_LONGTERM, pages))
    assert ret == -errno.ENOMEM, cite
    assert bool(int(k.mem.flags[bystander]) & lru) == drained, cite


# ---- 8. io_uring buffer registration ----


def _register(k: Kernel, task: Task, iovecs: list[tuple[int, int]]) -> tuple[int, int]:
    fd = P.sys_io_uring_setup(k, task)
    ret = run(P.sys_io_uring_register(k, task, fd, IORING_REGISTER_BUFFERS, iovecs))
    return ret, fd


def _file_buffer(k: Kernel, task: Task, kind: str) -> int:
    """One written page of a private ext4 / shared ext4 / shared tmpfs mapping."""
    file = tmpfs_create(k, PAGE_SIZE) if kind == "tmpfs" else ext4_create(k, PAGE_SIZE)
    flags = M.MAP_PRIVATE if kind == "ext4 private" else M.MAP_SHARED
    addr = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, flags, file))
    run(user_access(k, task, addr, True, 3))
    return addr


# (profile, mapping, expected register return, source)
IO_VMA_ROWS = [
    ("6.5", "ext4 private", 0, "v6.5 io_uring/rsrc.c:1030-1067 no VMA test"),
    ("6.1", "ext4 private", -errno.EOPNOTSUPP, "6.1.192 io_uring/rsrc.c:1019-1021"),
    ("6.5", "ext4 shared", -errno.EFAULT, "v6.5 mm/gup.c:1056-1059 writable_file_mapping"),
    ("6.1", "ext4 shared", -errno.EOPNOTSUPP, "6.1.192 io_uring/rsrc.c:1019-1021"),
    ("6.5", "tmpfs", 0, "v6.5 io_uring/rsrc.c:1030-1067"),
    ("6.1", "tmpfs", 0, "6.1.192 io_uring/rsrc.c:1019 vma_is_shmem"),
    ("5.7", "tmpfs", -errno.EOPNOTSUPP, "5.7.14 fs/io_uring.c:7301-7304 hugetlbfs only"),
]


@pytest.mark.parametrize(("profile", "kind", "expected", "cite"), IO_VMA_ROWS)
def test_io_uring_file_buffer(profile: str, kind: str, expected: int, cite: str) -> None:
    """Which file mappings io_uring registers; a refusal leaves no pin behind."""
    k, task, _ = _task(profile)
    addr = _file_buffer(k, task, kind)
    pfn = _pfn(k, task, addr)
    before = _ref(k, pfn)
    ret, _ = _register(k, task, [(addr, PAGE_SIZE)])
    assert ret == expected, cite
    acquired, released = _acq(k)
    assert acquired - released == (1 if expected == 0 else 0), cite
    assert _ref(k, pfn) == before + (1024 if expected == 0 else 0)


def test_io_uring_mixed_buffer() -> None:
    """An anon page then a tmpfs page in one buffer: 6.1.192 io_uring/rsrc.c:1013-1015
    -EINVAL; v6.5 (no VMA test) registers it."""
    for profile, expected in (("6.5", 0), ("6.1", -errno.EINVAL)):
        k, task, _ = _task(profile)
        file = tmpfs_create(k, PAGE_SIZE)
        base = run(P.sys_mmap(k, task, None, 2 * PAGE_SIZE, RW, ANON))
        assert base > 0
        assert run(P.sys_munmap(k, task, base + PAGE_SIZE, PAGE_SIZE)) == 0
        got = run(P.sys_mmap(k, task, base + PAGE_SIZE, PAGE_SIZE, RW, M.MAP_SHARED, file))
        assert got == base + PAGE_SIZE
        for i in range(2):
            run(user_access(k, task, base + i * PAGE_SIZE, True, 1 + i))
        ret, _ = _register(k, task, [(base, 2 * PAGE_SIZE)])
        assert ret == expected, profile
        acquired, released = _acq(k)
        assert acquired - released == (2 if expected == 0 else 0), profile


# (profile, bvecs kept, pins left on the THP, source)
COALESCE_ROWS = [
    ("6.5", 1, 1, "v6.5 io_uring/rsrc.c:1093-1114: one bvec, the rest unpinned"),
    ("6.1", 4, 4, "6.1.192 io_uring/rsrc.c:1083-1090: one bvec per page"),
]


@pytest.mark.parametrize(("profile", "bvecs", "pins", "cite"), COALESCE_ROWS)
def test_io_uring_buffer_in_one_thp(profile: str, bvecs: int, pins: int, cite: str) -> None:
    """Four pages of one PMD-mapped THP registered as one buffer, then unregistered."""
    k, task, _ = _task(profile)
    k.thp_enabled = "always"
    raw = run(P.sys_mmap(k, task, None, 2 * PMD_SIZE, RW, ANON))
    addr = (raw + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, task, addr, True, 1))
    run(lru_add_drain(k, task.cpu))
    head = compound_head(k.mem, _pfn(k, task, addr))
    before = int(k.mem.refcount[head])
    ret, fd = _register(k, task, [(addr, 4 * PAGE_SIZE)])
    assert ret == 0
    imu = ring_file(k, fd).ctx.user_bufs
    assert imu is not None and imu[0] is not None
    assert len(imu[0].bvec) == bvecs, cite
    assert folio_pincount(k, head) == pins, cite
    assert int(k.mem.refcount[head]) == before + pins, cite
    # account: the THP's whole size once either way (io_buffer_account_pin)
    assert imu[0].acct_pages in (0, PMD_SIZE // PAGE_SIZE)
    assert _acq(k) == (4, 4 - pins), cite
    assert run(P.sys_io_uring_register(k, task, fd, IORING_UNREGISTER_BUFFERS, None)) == 0
    assert folio_pincount(k, head) == 0
    assert int(k.mem.refcount[head]) == before
    assert _acq(k) == (4, 4)
