"""Edges of the v6.1 fault paths, each row a kernel fact: what a private write to a file
page copies, how far fault-around maps, what a write fault on a present writable PTE
sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel.fs import File
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memory import (
    FAULT_FLAG_UNSHARE,
    FAULT_FLAG_USER,
    FAULT_FLAG_WRITE,
    handle_mm_fault,
)
from pinlab.kernel.mm.mmap import (
    MADV_POPULATE_WRITE,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import (
    PAGE_SIZE,
    get_pte,
    pte_dirty,
    pte_pfn,
    pte_present,
    pte_write,
    pte_young,
)
from pinlab.kernel.mm.rmap import PageAnonExclusive, page_mapcount
from pinlab.kernel.mm.types import MmStruct, Task, find_vma
from pinlab.kernel.process import (
    ext4_create,
    new_task,
    pagemap,
    ramfs_create,
    sys_madvise,
    sys_mmap,
    tmpfs_create,
)
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

ADDR = 0x7F00_0000_0000  # PMD aligned: the start of a page table
RW = PROT_READ | PROT_WRITE
ON_DISK = 42  # the data token of the file's first page on disk


def _mm(k: Kernel, t: Task) -> MmStruct:
    return k.mms[t.mm]


# --- do_cow_fault copies the file page into the private page ----------------------------


def _private_ext4(k: Kernel, t: Task) -> File:
    """A two-page ext4 file whose first page holds ON_DISK, mapped MAP_PRIVATE at ADDR,
    nothing of it in the page cache yet."""
    f = ext4_create(k, 2 * PAGE_SIZE)
    k.mappings[f.mapping].store[0] = ON_DISK
    assert run(sys_mmap(k, t, ADDR, 2 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_FIXED, f)) == ADDR
    return f


def _pin_for_write(k: Kernel, t: Task) -> int:
    """pin_user_pages(FOLL_WRITE): faultin_page write-faults the unmapped page."""
    mm = _mm(k, t)
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    assert run(pin_user_pages(k, mm, ADDR, 1, FOLL_WRITE, pages)) == 1
    mmap_read_unlock(k, mm)
    return int(pages[0])


def _populate_write(k: Kernel, t: Task) -> int:
    """MADV_POPULATE_WRITE: a write fault with no user store after it."""
    assert run(sys_madvise(k, t, ADDR, PAGE_SIZE, MADV_POPULATE_WRITE)) == 0
    return pagemap(k, t, ADDR).pfn


@dataclass(frozen=True)
class CowRow:
    """A write fault on an unmapped page of a private file mapping, with no store after it."""

    name: str
    cite: str
    fault: Callable[[Kernel, Task], int]


COW_ROWS = [
    CowRow(
        "gup write",
        "v6.1 mm/gup.c faultin_page -> mm/memory.c do_cow_fault :4666 copy_user_highpage "
        "(cow_page <- the page cache page), finish_fault maps cow_page",
        _pin_for_write,
    ),
    CowRow(
        "populate write",
        "v6.1 mm/madvise.c madvise_populate -> faultin_vma_page_range (FOLL_WRITE) -> "
        "do_cow_fault :4666",
        _populate_write,
    ),
]


@pytest.mark.parametrize("row", COW_ROWS, ids=lambda r: r.name)
def test_private_write_fault_copies_the_file_page(row: CowRow) -> None:
    k = boot("6.1", BootParams(normal_mb=8))
    t = new_task(k)
    f = _private_ext4(k, t)
    page = row.fault(k, t)
    cached = k.mappings[f.mapping].i_pages[0]
    assert page != cached, row.cite
    assert pagemap(k, t, ADDR).pfn == page, row.cite
    assert PageAnonExclusive(k, page), row.cite
    assert int(k.mem.data[page]) == ON_DISK, row.cite
    assert int(k.mem.data[cached]) == ON_DISK, row.cite
    assert run(user_access(k, t, ADDR, False)) == ON_DISK, row.cite


# --- do_fault_around stops at the VMA's end ---------------------------------------------


@dataclass(frozen=True)
class AroundRow:
    """A read fault on a one-page VMA of a file whose neighbouring pages are all cached."""

    name: str
    cite: str
    make: Callable[[Kernel, int], File]
    pgoff: int  # the file page the VMA maps


def _tmpfs(k: Kernel, size: int) -> File:
    return tmpfs_create(k, size)


def _ramfs(k: Kernel, size: int) -> File:
    return ramfs_create(k, size)


AROUND_ROWS = [
    AroundRow(
        "tmpfs pgoff 0",
        "v6.1 mm/memory.c do_fault_around :4590: end_pgoff <= vma_pages + vm_pgoff - 1",
        _tmpfs,
        0,
    ),
    AroundRow("tmpfs pgoff 3", "same, with vm_pgoff 3: the window ends at pgoff 3", _tmpfs, 3),
    AroundRow("ramfs pgoff 2", "same for ramfs (generic_file_vm_ops ->map_pages)", _ramfs, 2),
]

NR_FILE_PAGES = 8


@pytest.mark.parametrize("row", AROUND_ROWS, ids=lambda r: r.name)
def test_fault_around_maps_nothing_past_the_vma(row: AroundRow) -> None:
    k = boot("6.1", BootParams(normal_mb=8))
    t = new_task(k)
    f = row.make(k, NR_FILE_PAGES * PAGE_SIZE)
    # every page of the file cached and uptodate, through a whole-file mapping elsewhere
    other = new_task(k)
    whole = run(sys_mmap(k, other, None, NR_FILE_PAGES * PAGE_SIZE, RW, MAP_SHARED, f))
    for i in range(NR_FILE_PAGES):
        run(user_access(k, other, whole + i * PAGE_SIZE, True, i + 1))
    cache = k.mappings[f.mapping].i_pages
    assert sorted(cache) == list(range(NR_FILE_PAGES))
    maps_before = [page_mapcount(k, cache[i]) for i in range(NR_FILE_PAGES)]
    off = row.pgoff * PAGE_SIZE
    assert run(sys_mmap(k, t, ADDR, PAGE_SIZE, PROT_READ, MAP_SHARED | MAP_FIXED, f, off)) == ADDR
    assert run(user_access(k, t, ADDR, False)) == row.pgoff + 1, row.cite
    pt = _mm(k, t).pgtable
    assert pte_pfn(get_pte(pt, ADDR)) == cache[row.pgoff], row.cite
    for i in range(1, 16):
        assert not get_pte(pt, ADDR + i * PAGE_SIZE), (row.cite, i)
    maps_after = [page_mapcount(k, cache[i]) for i in range(NR_FILE_PAGES)]
    expected = [m + (i == row.pgoff) for i, m in enumerate(maps_before)]
    assert maps_after == expected, row.cite


# --- handle_pte_fault on a present entry ----------------------------------------------
# A store whose MMU walk found the PTE none faults; another thread's read fault may
# install a writable clean PTE (shmem: no writenotify) before this fault reads it, and
# handle_pte_fault then finds a present, writable entry.


@dataclass(frozen=True)
class PresentRow:
    """A fault on a present writable clean PTE of a tmpfs shared mapping."""

    name: str
    cite: str
    flags: int
    dirty: bool


PRESENT_ROWS = [
    PresentRow(
        "write",
        "v6.1 mm/memory.c handle_pte_fault :5046-5050: FAULT_FLAG_WRITE on a writable PTE "
        "-> pte_mkdirty, pte_mkyoung, ptep_set_access_flags",
        FAULT_FLAG_WRITE | FAULT_FLAG_USER,
        True,
    ),
    PresentRow(
        "read",
        "v6.1 mm/memory.c handle_pte_fault :5052: a read fault only makes the PTE young",
        FAULT_FLAG_USER,
        False,
    ),
    PresentRow(
        "unshare",
        "v6.1 mm/memory.c handle_pte_fault :5046-5050: FAULT_FLAG_UNSHARE without "
        "FAULT_FLAG_WRITE does not dirty",
        FAULT_FLAG_UNSHARE,
        False,
    ),
]


@pytest.mark.parametrize("row", PRESENT_ROWS, ids=lambda r: r.name)
def test_fault_on_a_present_writable_pte(row: PresentRow) -> None:
    k = boot("6.1", BootParams(normal_mb=8))
    t = new_task(k)
    f = tmpfs_create(k, PAGE_SIZE)
    assert run(sys_mmap(k, t, ADDR, PAGE_SIZE, RW, MAP_SHARED | MAP_FIXED, f)) == ADDR
    run(user_access(k, t, ADDR, False))
    mm = _mm(k, t)
    before = get_pte(mm.pgtable, ADDR)
    assert pte_present(before) and pte_write(before) and not pte_dirty(before)
    vma = find_vma(mm, ADDR)
    assert vma is not None
    run(mmap_read_lock(k, mm))
    assert run(handle_mm_fault(k, mm, vma, ADDR, row.flags, t.cpu)) == 0, row.cite
    mmap_read_unlock(k, mm)
    after = get_pte(mm.pgtable, ADDR)
    assert pte_pfn(after) == pte_pfn(before), row.cite
    assert pte_write(after), row.cite
    assert pte_dirty(after) is row.dirty, row.cite
    assert pte_young(after), row.cite
