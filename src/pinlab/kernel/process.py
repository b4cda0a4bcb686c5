"""Processes and the memory system calls, for scenarios and real-kernel probes.

Each sys_* is a generator (interleavable); `run_to_completion` drives one
alone.  Return values mirror the syscalls: an address or 0 on success, a
negative errno on failure (v6.1 mm/mmap.c, mm/mprotect.c, mm/madvise.c,
kernel/fork.c, mm/memfd.c).  Files are `File` objects; an open one is kept in
the kernel's file table (`k.files`, `fd_install`) under an id that stands for
its fd (no per-process fd tables are modelled).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.errno import EINVAL, EPERM
from pinlab.kernel.fork import dup_mm, mm_alloc
from pinlab.kernel.fs import File
from pinlab.kernel.fs.ext4 import ext4_create
from pinlab.kernel.fs.hugetlbfs import hugetlbfs_create
from pinlab.kernel.fs.ramfs import ramfs_create
from pinlab.kernel.fs.shmem import memfd_create, tmpfs_create
from pinlab.kernel.io_uring.ring import PROBE_ENTRIES, io_uring_register, io_uring_setup, ring_file
from pinlab.kernel.mm.hugetlb import huge_ptep_get, is_vm_hugetlb_page
from pinlab.kernel.mm.memory import vm_normal_page
from pinlab.kernel.mm.mmap import do_madvise, do_mmap, do_mprotect, do_munmap, exit_mmap
from pinlab.kernel.mm.pgtable import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    get_pmd,
    get_pte,
    pte_pfn,
    pte_present,
)
from pinlab.kernel.mm.rmap import PageAnon, page_mapcount
from pinlab.kernel.mm.types import VM_SOFTDIRTY, MmStruct, Task, find_vma
from pinlab.kernel.profiles import Profile
from pinlab.kernel.state import new_id

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

__all__ = [
    "File",
    "ext4_create",
    "hugetlbfs_create",
    "memfd_create",
    "ramfs_create",
    "tmpfs_create",
]

# v6.1 fs/proc/task_mmu.c pagemap entry bits
PM_PFRAME_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_FILE = 1 << 61
PM_PRESENT = 1 << 63


# v6.1 include/uapi/linux/capability.h:215 CAP_IPC_LOCK, :308 CAP_SYS_RESOURCE (same numbers
# in 5.7.14 and 4.4.178)
CAP_IPC_LOCK = 14
CAP_SYS_RESOURCE = 24
# v6.1 include/uapi/asm-generic/resource.h:35 RLIMIT_MEMLOCK, :49 RLIM_NLIMITS,
# :58 RLIM_INFINITY (~0UL)
RLIMIT_MEMLOCK = 8
RLIM_NLIMITS = 16
RLIM_INFINITY = (1 << 64) - 1


def task_mm(k: Kernel, task: Task) -> MmStruct:
    """The task's mm."""
    return k.mms[task.mm]


def cap_full_set(profile: Profile) -> int:
    """v6.1 include/linux/capability.h:86 CAP_FULL_SET: every capability up to CAP_LAST_CAP."""
    return (1 << (profile.cap_last_cap + 1)) - 1


def capable(task: Task, cap: int) -> bool:
    """v6.1 kernel/capability.c capable / ns_capable_noaudit(&init_user_ns, cap) ->
    security/commoncap.c cap_capable: `cap` in the task's cap_effective (no user namespaces
    or LSM modelled)."""
    return bool(task.cap_effective >> cap & 1)


def new_task(k: Kernel, cpu: int = 0) -> Task:
    """A process with an empty address space running on `cpu`, with init's credentials and
    limits: root with CAP_FULL_SET (v6.1 kernel/cred.c:57-58 init_cred) and INIT_RLIMITS'
    RLIMIT_MEMLOCK (include/asm-generic/resource.h:21, the profile's MLOCK_LIMIT), as the
    guest's probe runner has them (a child of /init)."""
    mm = mm_alloc(k)
    caps = cap_full_set(k.profile)
    limit = k.profile.mlock_limit
    task = Task(
        pid=new_id(k),
        mm=mm.id,
        cpu=cpu,
        cap_effective=caps,
        cap_permitted=caps,
        rlim_memlock=(limit, limit),
    )
    k.tasks[task.pid] = task
    return task


def sys_setrlimit(
    k: Kernel, task: Task, resource: int, rlim_cur: int, rlim_max: int
) -> Generator[Yield, None, int]:
    """setrlimit(2) -> v6.1 kernel/sys.c:1448 do_prlimit on current: 0 or -errno.

    -EINVAL for an unknown resource or rlim_cur > rlim_max; raising rlim_max needs
    CAP_SYS_RESOURCE, else -EPERM (:1474); no LSM hook is modelled.  RLIMIT_MEMLOCK only.
    """
    if resource >= RLIM_NLIMITS or rlim_cur > rlim_max:
        return -EINVAL
    if resource != RLIMIT_MEMLOCK:
        raise Unmodelled("do_prlimit", f"resource {resource}")
    yield Point("do_prlimit", writes=frozenset({("rlim", task.pid)}))
    if rlim_max > task.rlim_memlock[1] and not capable(task, CAP_SYS_RESOURCE):
        return -EPERM
    task.rlim_memlock = (rlim_cur, rlim_max)
    return 0


def sys_getrlimit(k: Kernel, task: Task, resource: int) -> tuple[int, int] | int:
    """getrlimit(2) (v6.1 kernel/sys.c:1511): (rlim_cur, rlim_max), or -EINVAL."""
    if resource >= RLIM_NLIMITS:
        return -EINVAL
    if resource != RLIMIT_MEMLOCK:
        raise Unmodelled("getrlimit", f"resource {resource}")
    return task.rlim_memlock


def sys_capset(
    k: Kernel, task: Task, effective: int, permitted: int
) -> Generator[Yield, None, int]:
    """capset(2) on current (v6.1 kernel/capability.c:222) -> security/commoncap.c:242
    cap_capset: 0, or -EPERM if `permitted` is not within the old permitted set (:262) or
    `effective` not within `permitted` (:266).  Bits past CAP_LAST_CAP are dropped; the
    inheritable and ambient sets are not modelled (empty)."""
    full = cap_full_set(k.profile)
    effective &= full
    permitted &= full
    if permitted & ~task.cap_permitted or effective & ~permitted:
        return -EPERM
    yield Point("commit_creds", writes=frozenset({("cred", task.pid)}))
    task.cap_effective = effective
    task.cap_permitted = permitted
    return 0


def drop_capability(k: Kernel, task: Task, cap: int) -> Generator[Yield, None, int]:
    """capset(2) clearing `cap` from the effective and permitted sets (e.g. CAP_IPC_LOCK, so
    that io_uring charges RLIMIT_MEMLOCK)."""
    bit = 1 << cap
    return (yield from sys_capset(k, task, task.cap_effective & ~bit, task.cap_permitted & ~bit))


def sys_io_uring_setup(k: Kernel, task: Task, entries: int = PROBE_ENTRIES) -> int:
    """io_uring_setup(2) by `task`: the ring's fd (its id in k.files) or -errno
    (io_uring/io_uring.c io_uring_create)."""
    ring = io_uring_setup(k, task, entries)
    return ring if isinstance(ring, int) else ring.id


def sys_io_uring_register(
    k: Kernel, task: Task, fd: int, opcode: int, iovecs: list[tuple[int, int]] | None
) -> Generator[Yield, None, int]:
    """io_uring_register(2) by `task` on ring `fd` (buffer opcodes)."""
    ring = ring_file(k, fd)
    return (yield from io_uring_register(k, task_mm(k, task), ring, opcode, iovecs, task))


def fd_install(k: Kernel, file: File) -> int:
    """v6.1 fs/file.c fd_install: the opened file goes in k.files; its fresh id is the fd."""
    fid = new_id(k)
    k.files[fid] = file
    return fid


def fget(k: Kernel, fid: int) -> File:
    """v6.1 fs/file.c fget: the open regular file (or memfd) `fid`."""
    file = k.files.get(fid)
    if not isinstance(file, File):
        raise KeyError(f"file {fid} is not an open regular file")
    return file


def close_fd(k: Kernel, fid: int) -> None:
    """v6.1 fs/file.c close_fd -> filp_close -> fput of a regular file or memfd.

    Its last reference frees it (no ->release state is modelled): it leaves k.files;
    the inode and its page cache stay (k.mappings).
    """
    fget(k, fid)
    del k.files[fid]


def sys_mmap(
    k: Kernel,
    task: Task,
    addr: int | None,
    length: int,
    prot: int,
    flags: int,
    file: File | None = None,
    offset: int = 0,
) -> Generator[Yield, None, int]:
    """mmap(2): the mapping's address or -errno."""
    return (
        yield from do_mmap(k, task_mm(k, task), addr, length, prot, flags, file, offset, task.cpu)
    )


def sys_munmap(k: Kernel, task: Task, addr: int, length: int) -> Generator[Yield, None, int]:
    """munmap(2)."""
    return (yield from do_munmap(k, task_mm(k, task), addr, length, task.cpu))


def sys_mprotect(
    k: Kernel, task: Task, addr: int, length: int, prot: int
) -> Generator[Yield, None, int]:
    """mprotect(2)."""
    return (yield from do_mprotect(k, task_mm(k, task), addr, length, prot))


def sys_madvise(
    k: Kernel, task: Task, addr: int, length: int, advice: int
) -> Generator[Yield, None, int]:
    """madvise(2)."""
    return (yield from do_madvise(k, task_mm(k, task), addr, length, advice, task.cpu))


def sys_fork(k: Kernel, task: Task) -> Generator[Yield, None, int]:
    """fork(2): the child's pid, or -errno (v6.1 kernel/fork.c copy_process -> dup_mm)."""
    mm = yield from dup_mm(k, task_mm(k, task), task.cpu)
    if isinstance(mm, int):
        return mm
    # kernel/fork.c copy_creds shares the parent's cred, copy_signal (:1748) copies its rlimits
    child = Task(
        pid=new_id(k),
        mm=mm.id,
        parent=task.pid,
        cpu=task.cpu,
        uid=task.uid,
        cap_effective=task.cap_effective,
        cap_permitted=task.cap_permitted,
        rlim_memlock=task.rlim_memlock,
    )
    k.tasks[child.pid] = child
    return child.pid


def mmget_not_zero(k: Kernel, mm_id: int) -> bool:
    """v6.1 include/linux/sched/mm.h mmget_not_zero: one more user of a live mm (another thread
    of its process, a remote accessor); False once its last user has gone (being torn down).

    k.mm_users holds mm_users for an mm with users besides its task (absent: the task only).
    """
    users = k.mm_users.get(mm_id, 1)
    if mm_id not in k.mms or not users:
        return False
    k.mm_users[mm_id] = users + 1
    return True


def mmput(k: Kernel, mm: MmStruct, cpu: int = 0) -> Generator[Yield, None, None]:
    """v6.1 kernel/fork.c mmput: drop a user; the last one runs __mmput -> exit_mmap.

    While exit_mmap runs the mm has no users (k.mm_users 0): mmget_not_zero fails.
    """
    users = k.mm_users.get(mm.id, 1) - 1
    if users > 1:
        k.mm_users[mm.id] = users
        return
    if users == 1:
        del k.mm_users[mm.id]
        return
    k.mm_users[mm.id] = 0
    yield from exit_mmap(k, mm, cpu)
    del k.mms[mm.id]
    del k.mm_users[mm.id]


def sys_exit(k: Kernel, task: Task) -> Generator[Yield, None, None]:
    """exit(2): tear the address space down (v6.1 kernel/exit.c exit_mm -> mmput -> exit_mmap).

    An mm with other users (k.mm_users) is torn down by the last one's mmput instead.
    """
    mm = task_mm(k, task)
    yield from mmput(k, mm, task.cpu)
    del k.tasks[task.pid]


@dataclass(frozen=True, slots=True)
class PageMapEntry:
    """One /proc/pid/pagemap entry, decoded (v6.1 fs/proc/task_mmu.c)."""

    raw: int

    @property
    def present(self) -> bool:
        """PM_PRESENT."""
        return bool(self.raw & PM_PRESENT)

    @property
    def pfn(self) -> int:
        """The frame (0 when not present)."""
        return self.raw & PM_PFRAME_MASK

    @property
    def exclusive(self) -> bool:
        """PM_MMAP_EXCLUSIVE: page_mapcount == 1."""
        return bool(self.raw & PM_MMAP_EXCLUSIVE)

    @property
    def file(self) -> bool:
        """PM_FILE: a page-cache (or shmem) page."""
        return bool(self.raw & PM_FILE)


def pagemap(k: Kernel, task: Task, addr: int) -> PageMapEntry:
    """/proc/pid/pagemap for `addr` with CAP_SYS_ADMIN (PFNs shown), pte/pmd_to_pagemap_entry."""
    mm = task_mm(k, task)
    vma = find_vma(mm, addr)
    if vma is None:
        return PageMapEntry(0)
    flags = PM_SOFT_DIRTY if vma.vm_flags & VM_SOFTDIRTY else 0
    frame = 0
    page: int | None = None
    if is_vm_hugetlb_page(vma):
        from pinlab.kernel.mm.hugetlb import huge_page_order

        order = huge_page_order(k, vma)
        size = PAGE_SIZE << order
        entry = huge_ptep_get(k, mm, order, addr & ~(size - 1))
        if entry:
            frame = pte_pfn(entry) + ((addr & (size - 1)) >> PAGE_SHIFT)
            page = pte_pfn(entry)
    else:
        entry = get_pmd(mm.pgtable, addr)
        if entry:
            frame = pte_pfn(entry) + ((addr & (PMD_SIZE - 1)) >> PAGE_SHIFT)
            page = vm_normal_page(k, vma, addr, entry)
        else:
            entry = get_pte(mm.pgtable, addr)
            if entry and pte_present(entry):
                frame = pte_pfn(entry)
                page = vm_normal_page(k, vma, addr, entry)
    if entry:
        flags |= PM_PRESENT
    if page is not None:
        if not PageAnon(k, page):
            flags |= PM_FILE
        if page_mapcount(k, page) == 1:
            flags |= PM_MMAP_EXCLUSIVE
    return PageMapEntry(frame | flags if entry else flags)
