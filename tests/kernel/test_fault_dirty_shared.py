"""A write fault on a shared file page: what each kernel does with mmap_lock while it
throttles dirtying (fault_dirty_shared_page), and how the user fault goes on."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.locking import mmap_read_lock
from pinlab.kernel.mm.memory import (
    FAULT_FLAG_ALLOW_RETRY,
    FAULT_FLAG_KILLABLE,
    FAULT_FLAG_TRIED,
    FAULT_FLAG_USER,
    FAULT_FLAG_WRITE,
    VM_FAULT_COMPLETED,
    VM_FAULT_RETRY,
    handle_mm_fault,
)
from pinlab.kernel.mm.mmap import MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.types import MmStruct, find_vma
from pinlab.kernel.process import ext4_create, fd_install, fget, new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

ADDR = 0x7F00_0000_0000
PAGE = 4096


@dataclass(frozen=True)
class Row:
    profile: str
    ret: int  # what handle_mm_fault returns for a first write fault that may retry
    lock_held: bool  # whether the faulting task still holds mmap_lock afterwards
    cite: str


ROWS = [
    Row(
        "6.1",
        VM_FAULT_COMPLETED,
        False,
        "6.1.192 mm/memory.c fault_dirty_shared_page: maybe_unlock_mmap_for_io, "
        "return VM_FAULT_COMPLETED",
    ),
    Row(
        "6.5",
        VM_FAULT_COMPLETED,
        False,
        "v6.5 mm/memory.c:2995-3003 fault_dirty_shared_page",
    ),
    Row(
        "5.7",
        VM_FAULT_RETRY,
        False,
        "5.7.14 mm/memory.c:2583-2591 fault_dirty_shared_page: fput(fpin), VM_FAULT_RETRY",
    ),
    Row(
        "4.4",
        0,
        True,
        "4.4.178 mm/memory.c:3145-3151 do_shared_fault: balance_dirty_pages_ratelimited "
        "under mmap_sem",
    ),
]


def _shared_file(profile: str) -> tuple[Kernel, MmStruct, int]:
    k = boot(profile, BootParams(normal_mb=4))
    task = new_task(k)
    fid = fd_install(k, ext4_create(k, PAGE))
    flags = MAP_SHARED | MAP_FIXED
    prot = PROT_READ | PROT_WRITE
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, prot, flags, fget(k, fid))) == ADDR
    return k, k.mms[task.mm], task.pid


def _write_fault(k: Kernel, mm: MmStruct, extra: int) -> int:
    run_to_completion(mmap_read_lock(k, mm))
    vma = find_vma(mm, ADDR)
    assert vma is not None
    flags = FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE | FAULT_FLAG_USER | FAULT_FLAG_WRITE
    return run_to_completion(handle_mm_fault(k, mm, vma, ADDR, flags | extra))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.profile)
def test_first_write_fault_on_a_shared_file_page(row: Row) -> None:
    k, mm, _ = _shared_file(row.profile)
    ret = _write_fault(k, mm, 0)
    assert ret & (VM_FAULT_COMPLETED | VM_FAULT_RETRY) == row.ret, row.cite
    assert (mm.mmap_readers == 1) == row.lock_held, row.cite


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.profile)
def test_a_tried_fault_keeps_the_lock(row: Row) -> None:
    """maybe_unlock_mmap_for_io: never on a fault already retried (FAULT_FLAG_TRIED)."""
    k, mm, _ = _shared_file(row.profile)
    ret = _write_fault(k, mm, FAULT_FLAG_TRIED)
    assert ret & (VM_FAULT_COMPLETED | VM_FAULT_RETRY) == 0, row.cite
    assert mm.mmap_readers == 1, row.cite


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.profile)
def test_a_user_store_lands_and_leaves_mmap_lock_free(row: Row) -> None:
    """The user's fault retries at once after VM_FAULT_RETRY (mmap_lock already dropped)
    and unlocks only a lock it still holds."""
    k, mm, tid = _shared_file(row.profile)
    task = k.tasks[tid]
    run_to_completion(user_access(k, task, ADDR, True, 42))
    assert run_to_completion(user_access(k, task, ADDR, False)) == 42, row.cite
    assert mm.mmap_readers == 0, row.cite
