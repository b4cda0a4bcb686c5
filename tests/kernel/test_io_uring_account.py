"""io_uring buffer registration charges locked memory: one row per kernel fact, with its source.

6.1 is 6.1.192 (Debian linux-source-6.1), 5.7 is 5.7.14, 4.4 is 4.4.178; lines are where
the fact was read.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest

from pinlab.explore import GenThread, Options, explore
from pinlab.explore.program import FinalCheck
from pinlab.interleave import Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import errno
from pinlab.kernel import process as P
from pinlab.kernel.io_uring.ring import (
    IORING_REGISTER_BUFFERS,
    IORING_UNREGISTER_BUFFERS,
    RingFile,
    flush_work,
    fput,
    io_uring_setup,
    ring_file,
    ring_pages,
)
from pinlab.kernel.mm import mmap as M
from pinlab.kernel.mm.memmap import compound_head, folio_nr_pages
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import Task
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.profiles import NotInKernel
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import kernel_program

RW = M.PROT_READ | M.PROT_WRITE
ANON = M.MAP_PRIVATE | M.MAP_ANONYMOUS
MiB = 1 << 20


def new_proc(k: Kernel, privileged: bool, limit_pages: int | None) -> Task:
    """A probe-like process: root, optionally without CAP_IPC_LOCK (capset), optionally with
    RLIMIT_MEMLOCK lowered to `limit_pages` pages (setrlimit)."""
    task = P.new_task(k)
    if not privileged:
        assert run(P.drop_capability(k, task, P.CAP_IPC_LOCK)) == 0
    if limit_pages is not None:
        size = limit_pages * PAGE_SIZE
        assert run(P.sys_setrlimit(k, task, P.RLIMIT_MEMLOCK, size, size)) == 0
    return task


def small_pages(k: Kernel, task: Task, npages: int) -> int:
    """`npages` written small anon pages, LRU batch drained; their address."""
    addr = run(P.sys_mmap(k, task, None, npages * PAGE_SIZE, RW, ANON))
    assert addr > 0
    assert run(P.sys_madvise(k, task, addr, npages * PAGE_SIZE, M.MADV_NOHUGEPAGE)) == 0
    for i in range(npages):
        run(user_access(k, task, addr + i * PAGE_SIZE, True, 1 + i))
    run(lru_add_drain(k, task.cpu))
    return addr


def thps(k: Kernel, task: Task, count: int) -> int:
    """`count` adjacent PMD-mapped THPs (one write faults each in); their address."""
    addr = run(P.sys_mmap(k, task, None, (count + 1) * PMD_SIZE, RW, ANON))
    addr = (addr + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    for i in range(count):
        run(user_access(k, task, addr + i * PMD_SIZE, True, 1 + i))
    run(lru_add_drain(k, task.cpu))
    for i in range(count):
        head = compound_head(k.mem, P.pagemap(k, task, addr + i * PMD_SIZE).pfn)
        assert folio_nr_pages(k.mem, head) == PMD_SIZE // PAGE_SIZE
    return addr


def register(k: Kernel, task: Task, fd: int, iovecs: list[tuple[int, int]]) -> int:
    return run(P.sys_io_uring_register(k, task, fd, IORING_REGISTER_BUFFERS, iovecs))


def unregister(k: Kernel, task: Task, fd: int) -> int:
    return run(P.sys_io_uring_register(k, task, fd, IORING_UNREGISTER_BUFFERS, None))


def locked_vm(k: Kernel, task: Task) -> int:
    return k.user_locked_vm.get(task.uid, 0)


def pinned_vm(k: Kernel, task: Task) -> int:
    return k.mms[task.mm].pinned_vm


def pin_counters(k: Kernel) -> tuple[int, int]:
    c = k.vmstat.counters
    return c.get(NR_FOLL_PIN_ACQUIRED, 0), c.get(NR_FOLL_PIN_RELEASED, 0)


# ---- defaults: credentials and RLIMIT_MEMLOCK of a new task ----

# (profile, RLIMIT_MEMLOCK rlim_cur = rlim_max in bytes, CAP_LAST_CAP, source)
DEFAULT_ROWS = [
    (
        "6.1",
        8 * MiB,
        40,
        "6.1 include/asm-generic/resource.h:21 INIT_RLIMITS, include/uapi/linux/resource.h:79 "
        "MLOCK_LIMIT (8*1024*1024); include/uapi/linux/capability.h:420",
    ),
    (
        "5.7",
        64 << 10,
        37,
        "5.7.14 include/uapi/linux/resource.h:72 MLOCK_LIMIT max(PAGE_SIZE, 64*1024); "
        "include/uapi/linux/capability.h:371 CAP_AUDIT_READ",
    ),
    (
        "4.4",
        64 << 10,
        37,
        "4.4.178 include/uapi/linux/resource.h:71; include/uapi/linux/capability.h:355",
    ),
]


@pytest.mark.parametrize(("profile", "limit", "last_cap", "cite"), DEFAULT_ROWS)
def test_new_task_is_init_root(profile: str, limit: int, last_cap: int, cite: str) -> None:
    """kernel/cred.c:57-58 init_cred: root with CAP_FULL_SET; the guest's runner inherits it."""
    k = boot(profile)
    task = P.new_task(k)
    assert P.sys_getrlimit(k, task, P.RLIMIT_MEMLOCK) == (limit, limit), cite
    assert task.uid == 0
    assert task.cap_effective == task.cap_permitted == (1 << (last_cap + 1)) - 1, cite
    assert P.capable(task, P.CAP_IPC_LOCK)
    child = k.tasks[run(P.sys_fork(k, task))]
    # kernel/fork.c copy_creds shares the cred, copy_signal (6.1 :1748) copies the rlimits
    assert (child.uid, child.cap_effective, child.rlim_memlock) == (
        task.uid,
        task.cap_effective,
        task.rlim_memlock,
    )


# (what, call on a fresh root task, expected return, source)
CRED_ROWS = [
    (
        "rlim_cur above rlim_max",
        lambda k, t: run(P.sys_setrlimit(k, t, P.RLIMIT_MEMLOCK, 2 * PAGE_SIZE, PAGE_SIZE)),
        -errno.EINVAL,
        "6.1 kernel/sys.c:1459 do_prlimit",
    ),
    (
        "unknown resource",
        lambda k, t: run(P.sys_setrlimit(k, t, P.RLIM_NLIMITS, 0, 0)),
        -errno.EINVAL,
        "6.1 kernel/sys.c:1454 do_prlimit resource >= RLIM_NLIMITS",
    ),
    (
        "raise rlim_max without CAP_SYS_RESOURCE",
        lambda k, t: (
            run(P.drop_capability(k, t, P.CAP_SYS_RESOURCE)),
            run(P.sys_setrlimit(k, t, P.RLIMIT_MEMLOCK, 0, P.RLIM_INFINITY)),
        )[1],
        -errno.EPERM,
        "6.1 kernel/sys.c:1474 do_prlimit",
    ),
    (
        "raise rlim_max with CAP_SYS_RESOURCE (root)",
        lambda k, t: run(P.sys_setrlimit(k, t, P.RLIMIT_MEMLOCK, 0, P.RLIM_INFINITY)),
        0,
        "6.1 kernel/sys.c:1474 do_prlimit",
    ),
    (
        "take back a dropped CAP_IPC_LOCK",
        lambda k, t: (
            run(P.drop_capability(k, t, P.CAP_IPC_LOCK)),
            run(P.sys_capset(k, t, P.cap_full_set(k.profile), P.cap_full_set(k.profile))),
        )[1],
        -errno.EPERM,
        "6.1 security/commoncap.c:262 cap_capset: new permitted within the old",
    ),
    (
        "effective outside permitted",
        lambda k, t: run(P.sys_capset(k, t, 1 << P.CAP_IPC_LOCK, 0)),
        -errno.EPERM,
        "6.1 security/commoncap.c:266 cap_capset",
    ),
]


@pytest.mark.parametrize(("what", "call", "want", "cite"), CRED_ROWS)
def test_setrlimit_capset(what: str, call: object, want: int, cite: str) -> None:
    k = boot("6.1")
    task = P.new_task(k)
    assert callable(call)
    assert call(k, task) == want, f"{what}: {cite}"


def test_no_io_uring_in_4_4() -> None:
    """io_uring came in v5.1: the 4.4.178 tree has no io_uring file."""
    k = boot("4.4")
    with pytest.raises(NotInKernel):
        P.sys_io_uring_setup(k, P.new_task(k))


# ---- one registration: return, locked_vm and pinned_vm ----


@dataclass(frozen=True)
class Reg:
    """One registration of a `npages` small-page buffer by a fresh process."""

    name: str
    profile: str
    privileged: bool
    limit_pages: int | None  # RLIMIT_MEMLOCK after setrlimit, None: the default
    npages: int
    ret: int
    locked_vm: int  # the user's locked_vm after it
    pinned_vm: int  # the creator's mm's pinned_vm after it
    cite: str


REG_ROWS = [
    Reg(
        "root registers past RLIMIT_MEMLOCK",
        "6.1",
        True,
        4,
        8,
        0,
        0,
        8,
        "6.1 io_uring/io_uring.c:3686 ctx->user only without CAP_IPC_LOCK; io_uring/rsrc.c:78 "
        "io_account_mem skips the limit, :85 still adds to mm_account->pinned_vm",
    ),
    Reg(
        "unprivileged, exactly at the limit",
        "6.1",
        False,
        8,
        8,
        0,
        8,
        8,
        "6.1 io_uring/rsrc.c:57 __io_account_mem fails only new_pages > page_limit",
    ),
    Reg(
        "unprivileged, one page past the limit",
        "6.1",
        False,
        8,
        9,
        -errno.ENOMEM,
        0,
        0,
        "6.1 io_uring/rsrc.c:58 -ENOMEM; :975 acct_pages 0; :1077 pages unpinned",
    ),
    Reg(
        "unprivileged, a zero limit",
        "6.1",
        False,
        0,
        1,
        -errno.ENOMEM,
        0,
        0,
        "6.1 io_uring/rsrc.c:53 page_limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT",
    ),
    Reg(
        "5.7 root past the limit: no charge, no pinned_vm",
        "5.7",
        True,
        4,
        8,
        0,
        0,
        0,
        "5.7.14 fs/io_uring.c:7990 account_mem = !capable(CAP_IPC_LOCK); no ctx->mm_account",
    ),
    Reg(
        "5.7 unprivileged, default 64 KiB: 2 ring pages + 14 fit",
        "5.7",
        False,
        None,
        14,
        0,
        16,
        0,
        "5.7.14 fs/io_uring.c:7993 io_uring_create charges ring_pages(8, 16) = 2, "
        ":7259 the buffer's 14 pages",
    ),
    Reg(
        "5.7 unprivileged, default 64 KiB: 2 ring pages + 15 do not",
        "5.7",
        False,
        None,
        15,
        -errno.ENOMEM,
        2,
        0,
        "5.7.14 fs/io_uring.c:7259 io_account_mem -ENOMEM before pinning",
    ),
]


@pytest.mark.parametrize("row", REG_ROWS, ids=lambda r: r.name)
def test_register_charges(row: Reg) -> None:
    k = boot(row.profile)
    task = new_proc(k, row.privileged, row.limit_pages)
    addr = small_pages(k, task, row.npages)
    fd = P.sys_io_uring_setup(k, task)
    assert fd > 0
    assert register(k, task, fd, [(addr, row.npages * PAGE_SIZE)]) == row.ret, row.cite
    assert locked_vm(k, task) == row.locked_vm, row.cite
    assert pinned_vm(k, task) == row.pinned_vm, row.cite


def test_5_7_ring_pages() -> None:
    """5.7.14 fs/io_uring.c:7149 ring_pages(8 sq, 16 cq): rings_size 320 + 16*16 aligned
    to 64, + 4*8 = 608 bytes -> 1 page; 8 * 64-byte sqes -> 1 page."""
    assert ring_pages(8, 16) == 2
    # 4096 cqes alone are 64 KiB: rings_size just past 2^16 -> order 5 (32 pages), sqes 8 pages
    assert ring_pages(2048, 4096) == 32 + 32


def test_5_7_ring_charge_returned_at_close() -> None:
    """5.7.14 fs/io_uring.c:7525 io_ring_ctx_wait_and_kill returns the ring pages at the last
    fput, before the exit work runs; 6.1 charges no ring pages (io_uring_create :3627)."""
    for profile, charged in (("5.7", 2), ("6.1", 0)):
        k = boot(profile)
        task = new_proc(k, False, None)
        fd = P.sys_io_uring_setup(k, task)
        assert locked_vm(k, task) == charged, profile
        fput(k, ring_file(k, fd))
        assert locked_vm(k, task) == 0, profile


def test_5_7_setup_fails_past_limit() -> None:
    """5.7.14 fs/io_uring.c:7993-7997: io_uring_create -ENOMEM when the ring pages do not fit."""
    k = boot("5.7")
    task = new_proc(k, False, 1)
    assert P.sys_io_uring_setup(k, task) == -errno.ENOMEM
    assert locked_vm(k, task) == 0 and not k.files


# ---- a failed registration leaves the counts as they were ----

# (profile, NR_FOLL_PIN_ACQUIRED and _RELEASED growth per page of the failed buffer, source)
FAIL_ROWS = [
    (
        "6.1",
        1,
        "6.1 io_uring/rsrc.c:1075-1077 io_sqe_buffer_register: io_pin_pages pins, "
        "io_buffer_account_pin fails, unpin_user_pages releases every page",
    ),
    (
        "5.7",
        0,
        "5.7.14 fs/io_uring.c:7258-7260 io_sqe_buffer_register: io_account_mem fails before "
        "pin_user_pages (:7293)",
    ),
]


@pytest.mark.parametrize(("profile", "per_page", "cite"), FAIL_ROWS)
def test_failed_register_unwinds(profile: str, per_page: int, cite: str) -> None:
    """A first buffer that fits and a second that does not: -ENOMEM, and locked_vm, pinned_vm,
    the pages' refcounts and pincounts as before; the first buffer's charge returned by
    __io_sqe_buffers_unregister (6.1 io_uring/rsrc.c:1165, 5.7.14 fs/io_uring.c:7349)."""
    k = boot(profile)
    first, second = 4, 6
    task = new_proc(k, False, None)
    limit = task.rlim_memlock[0] // PAGE_SIZE
    fd = P.sys_io_uring_setup(k, task)
    base = locked_vm(k, task)  # 5.7: the ring pages
    # the second buffer takes the user one page past the limit
    second = limit - base - first + 1
    addr = small_pages(k, task, first + second)
    pfns = [P.pagemap(k, task, addr + i * PAGE_SIZE).pfn for i in range(first + second)]
    refs = np.array(k.mem.refcount[pfns])
    pincounts = np.array(k.mem.pincount[pfns])
    acquired, released = pin_counters(k)
    iovecs = [(addr, first * PAGE_SIZE), (addr + first * PAGE_SIZE, second * PAGE_SIZE)]
    assert register(k, task, fd, iovecs) == -errno.ENOMEM, cite
    assert locked_vm(k, task) == base, cite
    assert pinned_vm(k, task) == 0, cite
    assert (np.array(k.mem.refcount[pfns]) == refs).all(), cite
    assert (np.array(k.mem.pincount[pfns]) == pincounts).all(), cite
    grown = first + per_page * second
    assert pin_counters(k) == (acquired + grown, released + grown), cite
    # nothing is registered: the table was freed (6.1 rsrc.c:1165; 5.7.14 :7349)
    assert unregister(k, task, fd) == -errno.ENXIO


# ---- unregister and teardown return the charge ----

# (how the buffer goes away, source)
RETURN_ROWS = [
    ("unregister", "6.1 io_uring/rsrc.c:147 io_buffer_unmap -> io_unaccount_mem (:65)"),
    ("close", "6.1 io_uring/io_uring.c:2756 io_ring_ctx_free -> __io_sqe_buffers_unregister"),
]


@pytest.mark.parametrize(("how", "cite"), RETURN_ROWS)
def test_unregister_returns_charge(how: str, cite: str) -> None:
    """The user's locked_vm goes back to its prior value (another ring's charge stays)."""
    k = boot("6.1")
    task = new_proc(k, False, 16)
    addr = small_pages(k, task, 7)
    other = P.sys_io_uring_setup(k, task)
    assert register(k, task, other, [(addr, 3 * PAGE_SIZE)]) == 0
    prior = (locked_vm(k, task), pinned_vm(k, task))
    assert prior == (3, 3)
    fd = P.sys_io_uring_setup(k, task)
    assert register(k, task, fd, [(addr + 3 * PAGE_SIZE, 4 * PAGE_SIZE)]) == 0
    assert (locked_vm(k, task), pinned_vm(k, task)) == (7, 7)
    if how == "unregister":
        assert unregister(k, task, fd) == 0
    else:
        fput(k, ring_file(k, fd))
        assert locked_vm(k, task) == 7  # io_ring_exit_work has not run yet
        run(flush_work(k))
    assert (locked_vm(k, task), pinned_vm(k, task)) == prior, cite


def test_charge_decided_at_setup_limit_read_at_register() -> None:
    """ctx->user is fixed by io_uring_create (6.1 io_uring.c:3686) and ctx->mm_account is the
    creator's mm (:3727); the limit is current's at registration (rsrc.c:53 rlimit ->
    include/linux/sched/signal.h:797 task_rlimit(current))."""
    k = boot("6.1")
    parent = new_proc(k, False, 16)
    fd = P.sys_io_uring_setup(k, parent)
    child = k.tasks[run(P.sys_fork(k, parent))]
    addr = small_pages(k, child, 4)
    # the child (same user, rlimits copied) lowers its own limit: its registration fails
    assert run(P.sys_setrlimit(k, child, P.RLIMIT_MEMLOCK, 3 * PAGE_SIZE, 3 * PAGE_SIZE)) == 0
    assert register(k, child, fd, [(addr, 4 * PAGE_SIZE)]) == -errno.ENOMEM
    assert run(P.sys_setrlimit(k, child, P.RLIMIT_MEMLOCK, 4 * PAGE_SIZE, 4 * PAGE_SIZE)) == 0
    assert register(k, child, fd, [(addr, 4 * PAGE_SIZE)]) == 0
    # one user: the parent sees the charge; pinned_vm is on the ring creator's mm
    assert (locked_vm(k, parent), pinned_vm(k, parent), pinned_vm(k, child)) == (4, 4, 0)
    # a ring set up with CAP_IPC_LOCK stays uncharged after the creator drops it
    root = new_proc(k, True, 1)
    fd2 = P.sys_io_uring_setup(k, root)
    assert run(P.drop_capability(k, root, P.CAP_IPC_LOCK)) == 0
    addr2 = small_pages(k, root, 2)
    assert register(k, root, fd2, [(addr2, 2 * PAGE_SIZE)]) == 0
    assert locked_vm(k, root) == 4 and pinned_vm(k, root) == 2


def test_legacy_setup_charges_nothing() -> None:
    """io_uring_setup(k) with no creating task (callers that predate credentials): no user,
    no mm_account, so no charge either way."""
    k = boot("6.1")
    task = new_proc(k, False, 1)
    addr = small_pages(k, task, 4)
    ring = io_uring_setup(k)
    assert register(k, task, ring.id, [(addr, 4 * PAGE_SIZE)]) == 0
    assert (locked_vm(k, task), pinned_vm(k, task)) == (0, 0)


# ---- huge pages: the head page's whole size, once ----

HPAGE_NR = PMD_SIZE // PAGE_SIZE


@dataclass(frozen=True)
class Huge:
    """One registration over `thps` adjacent THPs; buffers as (first page, pages) offsets."""

    name: str
    profile: str
    thps: int
    buffers: tuple[tuple[int, int], ...]
    charged: int
    cite: str


HUGE_ROWS = [
    Huge(
        "3 pages of one THP",
        "6.1",
        1,
        ((0, 3),),
        HPAGE_NR,
        "6.1 io_uring/rsrc.c:966 io_buffer_account_pin adds page_size(hpage) >> PAGE_SHIFT",
    ),
    Huge(
        "two buffers in one THP",
        "6.1",
        1,
        ((0, 3), (10, 2)),
        HPAGE_NR,
        "6.1 io_uring/rsrc.c:961 hpage == *last_hpage (one last_hpage for every iovec, :1115) "
        "and :933 headpage_already_acct over the registered buffers",
    ),
    Huge(
        "one buffer over two THPs",
        "6.1",
        2,
        ((HPAGE_NR - 1, 2),),
        2 * HPAGE_NR,
        "6.1 io_uring/rsrc.c:947 io_buffer_account_pin: one charge per head",
    ),
    Huge(
        "THP A, THP B, A again",
        "6.1",
        2,
        ((0, 1), (HPAGE_NR, 1), (5, 1)),
        2 * HPAGE_NR,
        "6.1 io_uring/rsrc.c:933 headpage_already_acct finds A in a registered buffer",
    ),
    Huge(
        "A, then a buffer over A's end and B",
        "6.1",
        2,
        ((0, 1), (HPAGE_NR - 1, 2)),
        2 * HPAGE_NR,
        "6.1 io_uring/rsrc.c:961 last_hpage, carried from the previous iovec, skips A",
    ),
    Huge(
        "5.7: 3 pages of one THP",
        "5.7",
        1,
        ((0, 3),),
        3,
        "5.7.14 fs/io_uring.c:7254-7259 nr_pages of 4 KiB, whatever backs them",
    ),
]


@pytest.mark.parametrize("row", HUGE_ROWS, ids=lambda r: r.name)
def test_thp_head_accounted_once(row: Huge) -> None:
    k = boot(row.profile, None)
    task = new_proc(k, False, 4 * HPAGE_NR)
    addr = thps(k, task, row.thps)
    fd = P.sys_io_uring_setup(k, task)
    base = locked_vm(k, task)  # 5.7: the ring pages
    iovecs = [(addr + off * PAGE_SIZE, n * PAGE_SIZE) for off, n in row.buffers]
    assert register(k, task, fd, iovecs) == 0, row.cite
    assert locked_vm(k, task) - base == row.charged, row.cite
    want_pinned = row.charged if k.profile.io_uring_acct_pinned_vm else 0
    assert pinned_vm(k, task) == want_pinned, row.cite
    assert unregister(k, task, fd) == 0
    assert (locked_vm(k, task), pinned_vm(k, task)) == (base, 0), row.cite


def test_thp_charge_can_exceed_limit() -> None:
    """A one-page buffer in a THP charges 512 pages (6.1 io_uring/rsrc.c:966): -ENOMEM under a
    limit of 511 pages, where 5.7.14 (fs/io_uring.c:7259, 1 page) registers it."""
    for profile, want in (("6.1", -errno.ENOMEM), ("5.7", 0)):
        k = boot(profile)
        task = new_proc(k, False, HPAGE_NR - 1)
        addr = thps(k, task, 1)
        fd = P.sys_io_uring_setup(k, task)
        assert register(k, task, fd, [(addr, PAGE_SIZE)]) == want, profile


# ---- two registrations racing for the user's last pages ----

RACE_LIMIT = 3  # pages: room for one of two 2-page buffers


def _race_kernel() -> Kernel:
    """Two processes of one user without CAP_IPC_LOCK, each with a ring and 2 written pages."""
    k = boot("6.1", BootParams(normal_mb=4))
    for _ in range(2):
        task = new_proc(k, False, RACE_LIMIT)
        small_pages(k, task, 2)
        assert P.sys_io_uring_setup(k, task) > 0
    return k


def _racer(i: int, k: Kernel) -> Generator[Yield, None, int]:
    """Process i registers its 2 pages on its own ring."""
    task = list(k.tasks.values())[i]
    fd = next(
        f for f, r in k.files.items() if isinstance(r, RingFile) and r.ctx.mm_account == task.mm
    )
    addr = k.mms[task.mm].vmas[0].vm_start
    return (
        yield from P.sys_io_uring_register(
            k, task, fd, IORING_REGISTER_BUFFERS, [(addr, 2 * PAGE_SIZE)]
        )
    )


def _one_charge(k: Kernel) -> bool:
    """Exactly one buffer registered, charged once to the user and to its mm."""
    rings = [r for r in k.files.values() if isinstance(r, RingFile)]
    registered = [r for r in rings if r.ctx.user_bufs]
    pinned = sorted(mm.pinned_vm for mm in k.mms.values())
    return len(registered) == 1 and k.user_locked_vm.get(0, 0) == 2 and pinned == [0, 2]


@pytest.mark.parametrize("por", [False, True], ids=["all", "por"])
def test_racing_registrations_never_pass_the_limit(por: bool) -> None:
    """6.1 io_uring/rsrc.c:55-61 __io_account_mem: a read, then atomic_long_try_cmpxchg that
    retries with the value it saw; in every interleaving one registration gets the pages and
    the other -ENOMEM, never both past RLIMIT_MEMLOCK."""
    threads = tuple(GenThread(f"reg{i}", partial(_racer, i)) for i in range(2))
    program = kernel_program(
        "uring-race", _race_kernel, threads, finals=(FinalCheck("one", _one_charge),)
    )
    result = explore(program, Options(strategy="dfs", por=por))
    assert not result.errors, result.errors[:1]
    assert not result.counterexamples
    assert result.states > 1
