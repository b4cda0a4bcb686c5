"""process_vm_readv / process_vm_writev: short-lived pins (v6.1 mm/process_vm_access.c).

v4.4.178 took FOLL_GET references instead, dirtying each page as it was written;
v5.7.14 pins, as v6.1 does (mm/process_vm_access.c:108).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.errno import EFAULT, EINVAL
from pinlab.kernel.mm.filemap import set_page_dirty_lock
from pinlab.kernel.mm.gup import get_user_pages_unlocked, page_array, pin_user_pages_remote
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_page import Locked
from pinlab.kernel.mm.gup_unpin import put_page_api, unpin_user_pages_dirty_lock
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.types import Task
from pinlab.kernel.uaccess import UserFault, user_access

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 mm/process_vm_access.c PVM_MAX_KMALLOC_PAGES / sizeof(struct page *): pages per loop
PVM_MAX_KMALLOC_PAGES = PAGE_SIZE * 2
MAX_PAGES_PER_LOOP = PVM_MAX_KMALLOC_PAGES // 8


def process_vm_rw_pages(
    k: Kernel,
    local: Task,
    pages: list[int],
    offset: int,
    nbytes: int,
    it: list[tuple[int, int]],
    vm_write: bool,
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 mm/process_vm_access.c process_vm_rw_pages: copy between pinned pages and local memory.

    `it` is the local iovec list, consumed from the front; contents are one
    token per page.  Returns (bytes copied, 0 or -EFAULT).
    """
    copied = 0
    # v4.4.178 mm/process_vm_access.c:49-50: set_page_dirty_lock after each page's copy
    dirty_each = vm_write and not k.profile.has_foll_pin
    while nbytes and it:
        page = pages[(offset + copied) >> PAGE_SHIFT]
        base, length = it[0]
        step = min(
            nbytes, length, PAGE_SIZE - (offset + copied) % PAGE_SIZE, PAGE_SIZE - base % PAGE_SIZE
        )
        faulted = False
        try:
            if vm_write:
                k.mem.data[page] = yield from user_access(k, local, base, False)
            else:
                yield Point(
                    "copy_page_to_iter",
                    reads=frozenset({("page", page, "data")}),
                    writes=frozenset(),
                )
                yield from user_access(k, local, base, True, int(k.mem.data[page]))
        except UserFault:
            faulted = True
        if faulted:
            if dirty_each:
                yield from set_page_dirty_lock(k, page)
            return copied, -EFAULT
        it[0] = (base + step, length - step)
        if not it[0][1]:
            it.pop(0)
        copied += step
        nbytes -= step
        if dirty_each and (not nbytes or not it or (offset + copied) % PAGE_SIZE == 0):
            yield from set_page_dirty_lock(k, page)
    return copied, 0


def process_vm_rw_single_vec(
    k: Kernel,
    local: Task,
    target: Task,
    addr: int,
    length: int,
    it: list[tuple[int, int]],
    vm_write: bool,
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 mm/process_vm_access.c process_vm_rw_single_vec: pin a chunk remotely, copy, unpin.

    Returns (bytes copied, 0 or -errno).
    """
    mm = k.mms[target.mm]
    pa = addr & ~(PAGE_SIZE - 1)
    start_offset = addr - pa
    if not length:
        return 0, 0
    nr_pages = (addr + length - 1) // PAGE_SIZE - addr // PAGE_SIZE + 1
    flags = FOLL_WRITE if vm_write else 0
    total = 0
    rc = 0
    while not rc and nr_pages and it:
        want = min(nr_pages, MAX_PAGES_PER_LOOP)
        pages = page_array(want)
        if k.profile.has_foll_pin:
            locked = Locked()
            yield from mmap_read_lock(k, mm)
            pinned = yield from pin_user_pages_remote(k, mm, pa, want, flags, pages, locked)
            if locked.held:
                mmap_read_unlock(k, mm)
        else:
            # v4.4.178 mm/process_vm_access.c:106: FOLL_GET, the mmap lock taken inside
            pinned = yield from get_user_pages_unlocked(k, mm, pa, want, pages, flags)
        if pinned <= 0:
            return total, -EFAULT
        nbytes = min(pinned * PAGE_SIZE - start_offset, length)
        got = [int(p) for p in pages[:pinned].tolist()]
        copied, rc = yield from process_vm_rw_pages(
            k, local, got, start_offset, nbytes, it, vm_write
        )
        total += copied
        length -= nbytes
        start_offset = 0
        nr_pages -= pinned
        pa += pinned * PAGE_SIZE
        if k.profile.has_foll_pin:
            yield from unpin_user_pages_dirty_lock(k, got, pinned, vm_write)
        else:
            for page in reversed(got):  # v4.4.178 mm/process_vm_access.c:122-123
                yield from put_page_api(k, page)
    return total, rc


def process_vm_rw(
    k: Kernel,
    local: Task,
    target: Task,
    lvec: list[tuple[int, int]],
    rvec: list[tuple[int, int]],
    flags: int,
    vm_write: bool,
) -> Generator[Yield, None, int]:
    """v6.1 mm/process_vm_access.c process_vm_rw -> process_vm_rw_core: bytes copied or -errno.

    The caller may access `target` (mm_access with PTRACE_MODE_ATTACH_REALCREDS).
    """
    if flags:
        return -EINVAL
    it = [(base, length) for base, length in lvec if length]
    if not it:
        return 0
    if not any(length > 0 for _, length in rvec):
        return 0
    total = 0
    rc = 0
    for base, length in rvec:
        if not it or rc:
            break
        copied, rc = yield from process_vm_rw_single_vec(
            k, local, target, base, length, it, vm_write
        )
        total += copied
    return total if total else rc
