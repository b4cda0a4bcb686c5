"""Rechecks of the write-protect fault and of fork's page copy, each tested by a search that
needs it.

Each row is a two-thread program over the 6.1 model and a property the recheck exists to
keep: a frame's mapcount is the number of page-table entries that map it (v6.1
mm/rmap.c page_add_*_rmap / page_remove_rmap move it with every PTE set or cleared), and
no frame fork allocated outlives fork without a holder.  The search must hold it over every
interleaving; with the recheck removed (bench/mutation.py wp_copy_recheck_dropped,
mkwrite_finish_recheck_dropped, fork_prealloc_leaked) the same search finds one that breaks it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from functools import cache

import numpy as np

from pinlab.explore import FinalCheck, GenThread
from pinlab.interleave import Yield, run_to_completion
from pinlab.kernel.fs import vfs_fsync, vfs_write
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import (
    PAGE_SHIFT,
    PMD_SHIFT,
    get_pte,
    pte_pfn,
    pte_present,
    pte_special,
    pte_write,
)
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.truncate import truncate_setsize
from pinlab.kernel.mm.types import MmStruct, Task
from pinlab.kernel.process import (
    ext4_create,
    fd_install,
    fget,
    new_task,
    sys_fork,
    sys_madvise,
    sys_mmap,
)
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from tests.scenarios.searching import search

PAGE = 4096
ADDR = 0x7F00_0000_0000
RW = PROT_READ | PROT_WRITE
OLD = 11  # the page's data token before the threads run


def _task(k: Kernel) -> Task:
    """The first task made (the parent)."""
    return k.tasks[min(k.tasks)]


def _mm(k: Kernel) -> MmStruct:
    return k.mms[_task(k).mm]


def _ptes(k: Kernel) -> Counter[int]:
    """How many present, non-special PTEs of all mms map each frame."""
    count: Counter[int] = Counter()
    for mm in k.mms.values():
        for table in mm.pgtable.pte.values():
            for raw in table[np.nonzero(table)[0]]:
                pte = int(raw)
                if pte_present(pte) and not pte_special(pte):
                    count[pte_pfn(pte)] += 1
    return count


def _mapcount_is_the_ptes(k: Kernel) -> bool:
    """Every frame's mapcount (_mapcount + 1) equals the PTEs mapping it (no huge pages here)."""
    mapped = _ptes(k)
    counted = {int(pfn): int(k.mem.mapcount[pfn]) + 1 for pfn in np.nonzero(k.mem.mapcount + 1)[0]}
    return counted == dict(mapped)


# --- wp_page_copy's recheck of the PTE under the relocked PTL ------------------------------
# v6.1.192 mm/memory.c: do_wp_page drops the PTL (:3517) and wp_page_copy allocates and
# copies (:3152-3157), then retakes it (:3190); only if the PTE is still the one the fault saw
# (:3191 pte_same) is the copy mapped and the old page's rmap dropped (:3254
# page_remove_rmap); otherwise the copy is put (:3264-3265).
# Two threads of the parent store to a page it shares with its child: the second copy must
# not be mapped over the first.


def _cow_kernel() -> Kernel:
    """A parent whose page at ADDR (data OLD) is shared with its live child, R/O in both."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, RW, flags)) == ADDR
    run_to_completion(user_access(k, task, ADDR, True, OLD))
    run_to_completion(lru_add_drain(k, task.cpu))
    assert run_to_completion(sys_fork(k, task)) > 0
    return k


def store_1(k: Kernel) -> Generator[Yield, None, None]:
    """A thread of the parent storing 1 at ADDR."""
    yield from user_access(k, _task(k), ADDR, True, 1)


def store_2(k: Kernel) -> Generator[Yield, None, None]:
    """Another thread of the parent storing 2 at ADDR."""
    yield from user_access(k, _task(k), ADDR, True, 2)


def _child_keeps_the_old_page(k: Kernel) -> bool:
    """The child still maps a page holding OLD, and the parent's page holds a store."""
    child = next(t for t in k.tasks.values() if t.parent is not None)
    pte = get_pte(k.mms[child.mm].pgtable, ADDR)
    mine = get_pte(_mm(k).pgtable, ADDR)
    return int(k.mem.data[pte_pfn(pte)]) == OLD and int(k.mem.data[pte_pfn(mine)]) in (1, 2)


def test_wp_page_copy_recheck_maps_one_copy_for_two_racing_stores() -> None:
    threads = (GenThread("store-1", store_1), GenThread("store-2", store_2))
    finals = (
        FinalCheck("mapcount-is-the-ptes", _mapcount_is_the_ptes),
        FinalCheck("child-keeps-old-page", _child_keeps_the_old_page),
    )
    res = search("wp-copy-recheck", _cow_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit


# --- finish_mkwrite_fault's recheck of the PTE after ->page_mkwrite --------------------------
# v6.1.192 mm/memory.c wp_page_shared drops the PTL for ->page_mkwrite (:3358-3359);
# finish_mkwrite_fault retakes it and makes the PTE writable only if it is still the one the
# fault saw (:3316-3320, else VM_FAULT_NOPAGE: the store faults again).  MADV_DONTNEED from
# another thread (mmap_lock for read, as the fault holds it; mm/madvise.c:50-63
# madvise_need_mmap_write) may zap the PTE in between.


def _shared_file_kernel() -> Kernel:
    """A one-page ext4 file, written and fsynced, mapped MAP_SHARED at ADDR and read: the
    PTE is read-only (write-notify: ext4 has ->page_mkwrite)."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    fid = fd_install(k, ext4_create(k, 0))
    file = fget(k, fid)
    assert run_to_completion(vfs_write(k, file, 0, PAGE, OLD, task.cpu)) == PAGE
    assert not run_to_completion(vfs_fsync(k, file, task.cpu))
    flags = MAP_SHARED | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, RW, flags, file)) == ADDR
    assert run_to_completion(user_access(k, task, ADDR, False)) == OLD
    pte = get_pte(_mm(k).pgtable, ADDR)
    assert pte_present(pte) and not pte_write(pte)
    return k


def dontneed(k: Kernel) -> Generator[Yield, None, None]:
    yield from sys_madvise(k, _task(k), ADDR, PAGE, MADV_DONTNEED)


def test_finish_mkwrite_fault_recheck_sees_a_zapped_pte() -> None:
    threads = (GenThread("store", store_1), GenThread("dontneed", dontneed))
    finals = (FinalCheck("mapcount-is-the-ptes", _mapcount_is_the_ptes),)
    res = search("mkwrite-recheck", _shared_file_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit


# --- copy_pte_range puts a preallocated page the retried PTE no longer needs -----------------
# v6.1.192 mm/memory.c copy_pte_range: copy_present_pte answers -EAGAIN for a maybe-pinned
# anon page with no page preallocated (:966-970, copy_present_page); the PTL is dropped, a
# page allocated (:1128-1129) and the same PTE tried again.  A PTE zapped meanwhile (pte_none
# :1065-1068) does not use it: the page is put at `out` (:1141-1143).  truncate zaps a private
# mapping's COW pages too (mm/truncate.c:775,777 truncate_pagecache: unmap_mapping_range with
# even_cows 1), under i_mmap_rwsem only, while fork holds the parent's mmap_lock.


def _pinned_cow_kernel() -> Kernel:
    """A one-page ext4 file mapped MAP_PRIVATE at ADDR, its COW copy written and pinned
    (FOLL_WRITE pin: MMF_HAS_PINNED and page_maybe_dma_pinned, so fork must copy it)."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    fid = fd_install(k, ext4_create(k, 0))
    file = fget(k, fid)
    assert run_to_completion(vfs_write(k, file, 0, PAGE, OLD, task.cpu)) == PAGE
    assert not run_to_completion(vfs_fsync(k, file, task.cpu))
    flags = MAP_PRIVATE | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, RW, flags, file)) == ADDR
    run_to_completion(user_access(k, task, ADDR, True, 1))
    mm = _mm(k)
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    assert run_to_completion(pin_user_pages(k, mm, ADDR, 1, FOLL_WRITE, pages)) == 1
    mmap_read_unlock(k, mm)
    run_to_completion(lru_add_drain(k, task.cpu))
    return k


@cache
def _setup_frames() -> frozenset[int]:
    """The frames in use once the pinned-COW kernel is made (boot and setup are deterministic)."""
    k = _pinned_cow_kernel()
    return frozenset(int(p) for p in np.nonzero(k.mem.refcount)[0])


def _held(k: Kernel) -> set[int]:
    """Frames some holder reaches: a PTE or PMD of any mm, a page cache, an LRU batch."""
    held = set(_ptes(k))
    for mm in k.mms.values():
        for pmd in mm.pgtable.pmd.values():
            base = pte_pfn(pmd)
            held |= set(range(base, base + (1 << (PMD_SHIFT - PAGE_SHIFT))))
    for mapping in k.mappings.values():
        held |= {int(p) for p in mapping.i_pages.values()}
    for batch in (*k.lru_add, *k.lru_activate, *k.lru_rotate):
        held |= set(batch)
    return held


def _no_frame_left_without_holder(k: Kernel) -> bool:
    """Every frame referenced now and not before the threads ran has a holder."""
    new = {int(p) for p in np.nonzero(k.mem.refcount)[0]} - _setup_frames()
    return new <= _held(k)


def fork_parent(k: Kernel) -> Generator[Yield, None, None]:
    assert (yield from sys_fork(k, _task(k))) > 0


def truncate_file(k: Kernel) -> Generator[Yield, None, None]:
    vma = _mm(k).vmas[0]
    assert vma.vm_file is not None
    yield from truncate_setsize(k, k.mappings[vma.vm_file], 0, _task(k).cpu)


def test_fork_puts_the_preallocated_page_a_zapped_pte_did_not_use() -> None:
    threads = (GenThread("fork", fork_parent), GenThread("truncate", truncate_file))
    finals = (FinalCheck("frame-without-holder", _no_frame_left_without_holder),)
    res = search("fork-prealloc", _pinned_cow_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit
