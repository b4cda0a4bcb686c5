"""Race-protecting kernel code, each tested by a search that needs it.

Each row is a two-thread program over the 6.1 model and a property the code named in
the row exists to keep.  The search must hold the property over every interleaving;
with the protecting step removed, the same search finds an interleaving that breaks it
(``bench/mutation.py`` carries those edits as mutants, and tests/mutation-equivalent.md
is not allowed to excuse them).
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pinlab.explore import FinalCheck, GenThread
from pinlab.interleave import Point, Violation, Yield, run_to_completion
from pinlab.kernel.fs import LLONG_MAX, vfs_fsync, vfs_write, writepages
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.page_writeback import LONG_MAX, WB_SYNC_NONE, WritebackControl
from pinlab.kernel.mm.pgtable import get_pte, pte_pfn, pte_present
from pinlab.kernel.mm.truncate import truncate_setsize
from pinlab.kernel.process import ext4_create, fd_install, fget, new_task, sys_madvise, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import UserFault, user_access
from tests.scenarios.searching import only_mm, only_task, search

PAGE = 4096
ADDR = 0x7F00_0000_0000  # the page every program starts from
NEXT = ADDR + PAGE  # the page after it, in the same VMA and page table
RW = PROT_READ | PROT_WRITE
DMA = 99  # the token the device stands-in writes
CPU_STORE = 2


# --- gup-fast's recheck of the PTE after the speculative grab ------------------------
# v6.1 mm/gup.c gup_pte_range: after try_grab_folio, a PTE that changed meanwhile means
# the page may have been freed and reused: drop it and fall back to the slow path.


def _anon_kernel() -> Kernel:
    """Two private anonymous pages at ADDR, the first faulted in."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, 2 * PAGE, RW, flags)) == ADDR
    run_to_completion(user_access(k, task, ADDR, True, 1))
    return k


def pin_dma_unpin(k: Kernel) -> Generator[Yield, None, None]:
    """Pin the page at ADDR with gup-fast, let the device write into it, unpin."""
    pages = page_array(1)
    got = yield from pin_user_pages_fast(k, only_mm(k), ADDR, 1, FOLL_WRITE, pages)
    if got == 1:
        page = int(pages[0])
        yield Point("device DMA", writes=frozenset({("page", page, "data")}))
        k.mem.data[page] = DMA
        yield from unpin_user_pages(k, pages, 1)


def drop_and_fault_next(k: Kernel) -> Generator[Yield, None, None]:
    """MADV_DONTNEED the page (its frame is freed, the page table stays), then a store to
    the next page (the allocator hands the freed frame out again)."""
    task = only_task(k)
    yield from sys_madvise(k, task, ADDR, PAGE, MADV_DONTNEED)
    yield from user_access(k, task, NEXT, True, CPU_STORE)


def _next_keeps_its_store(k: Kernel) -> bool:
    """The page mapped at NEXT holds the store made to it, not the device's write."""
    pte = get_pte(only_mm(k).pgtable, NEXT)
    return pte_present(pte) and int(k.mem.data[pte_pfn(pte)]) == CPU_STORE


def test_gup_fast_recheck_keeps_a_dma_out_of_a_reused_frame() -> None:
    threads = (GenThread("pin", pin_dma_unpin), GenThread("dontneed", drop_and_fault_next))
    finals = (FinalCheck("dma-into-reused-frame", _next_keeps_its_store),)
    res = search("recheck", _anon_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit
    # the race is there to be lost: with the recheck removed this search finds the frame
    # freed by MADV_DONTNEED, handed to NEXT, and pinned for ADDR (bench/mutation.py
    # fast_pte_recheck_dropped)
    assert res.states > 100


# --- truncate's second unmap ----------------------------------------------------------
# v6.1 mm/truncate.c truncate_pagecache: unmap_mapping_range, truncate_inode_pages, and
# unmap_mapping_range again, for private COW pages faulted in between.


def _file_kernel() -> Kernel:
    """A one-page ext4 file, written and fsynced, mapped MAP_PRIVATE at ADDR."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    fid = fd_install(k, ext4_create(k, 0))
    file = fget(k, fid)
    assert run_to_completion(vfs_write(k, file, 0, PAGE, 0, task.cpu)) == PAGE
    assert not run_to_completion(vfs_fsync(k, file, task.cpu))
    flags = MAP_PRIVATE | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, RW, flags, file)) == ADDR
    return k


def _mapping_of(k: Kernel):  # type: ignore[no-untyped-def]
    vma = only_mm(k).vmas[0]
    assert vma.vm_file is not None
    return k.mappings[vma.vm_file]


def truncate_to_zero(k: Kernel) -> Generator[Yield, None, None]:
    yield from truncate_setsize(k, _mapping_of(k), 0, only_task(k).cpu)


def cow_store(k: Kernel) -> Generator[Yield, None, None]:
    """A store to the private file mapping: a read fault, then the COW (SIGBUS past EOF)."""
    try:
        yield from user_access(k, only_task(k), ADDR, True, CPU_STORE)
    except UserFault as fault:
        assert fault.signal == "SIGBUS"


def _nothing_mapped_past_eof(k: Kernel) -> bool:
    return not get_pte(only_mm(k).pgtable, ADDR)


def test_truncate_second_unmap_leaves_no_cow_page_past_eof() -> None:
    threads = (GenThread("truncate", truncate_to_zero), GenThread("store", cow_store))
    finals = (FinalCheck("page-past-eof-mapped", _nothing_mapped_past_eof),)
    res = search("truncate", _file_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit


# --- fsync waits for writeback already under way --------------------------------------
# v6.1 mm/filemap.c file_write_and_wait_range: __filemap_fdatawrite_range (WB_SYNC_ALL
# waits on a folio under writeback, mm/page-writeback.c write_cache_pages) and then
# __filemap_fdatawait_range: fsync must not return before the data is on the disk.


def _dirty_file_kernel() -> Kernel:
    """A one-page ext4 file, written (dirty in the page cache, not yet on disk)."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    fid = fd_install(k, ext4_create(k, 0))
    assert run_to_completion(vfs_write(k, fget(k, fid), 0, PAGE, 0, task.cpu)) == PAGE
    return k


def fsync_then_look(k: Kernel) -> Generator[Yield, None, None]:
    """fsync the file; once it returns, the page's data must be on the disk."""
    mapping = next(iter(k.mappings.values()))
    file = next(iter(k.files.values()))
    assert not (yield from vfs_fsync(k, file, only_task(k).cpu))
    yield Point("look at the disk", reads=None)
    page = mapping.i_pages[0]
    if mapping.store.get(0) != int(k.mem.data[page]):
        raise Violation("fsync returned before the data reached the disk")


def background_writeback(k: Kernel) -> Generator[Yield, None, None]:
    """The flusher: WB_SYNC_NONE writeback of the file."""
    mapping = next(iter(k.mappings.values()))
    wbc = WritebackControl(WB_SYNC_NONE, LONG_MAX, 0, LLONG_MAX)
    yield from writepages(k, mapping, wbc, only_task(k).cpu)


@pytest.mark.parametrize("order", ["fsync-first", "flusher-first"])
def test_fsync_waits_for_writeback_under_way(order: str) -> None:
    threads = (GenThread("fsync", fsync_then_look), GenThread("flusher", background_writeback))
    if order == "flusher-first":
        threads = threads[::-1]
    res = search("fsync", _dirty_file_kernel, threads)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit
