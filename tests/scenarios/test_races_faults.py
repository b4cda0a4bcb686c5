"""Rechecks, a lock and a release in the fault and unpin paths, each tested by a search that
needs it.

Each row is a two-thread program over the 6.1 model and a property the code named in the
row exists to keep.  The search must hold it over every interleaving; with the
protecting step removed (the bench/mutation.py mutant named in each row) the same search
finds an interleaving that breaks it.  Besides each row's own property, every final
state is checked to account for every frame: a frame in use is mapped, cached, held by
an LRU batch or the zero page, and its refcount and mapcount are exactly what those
hold (no pins are left at the end of any program here).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from pinlab.explore import FinalCheck, GenThread, Options, Result, explore
from pinlab.interleave import Violation, Yield, run_to_completion
from pinlab.kernel.fs import vfs_fsync, vfs_write
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages_dirty_lock
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_PRESENT,
    _PAGE_PROTNONE,
    _PAGE_SPECIAL,
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_PFN_MASK,
    get_pte,
    pte_pfn,
    pte_present,
)
from pinlab.kernel.mm.rmap import page_mapcount
from pinlab.kernel.mm.swap import folio_in_lru_batch
from pinlab.kernel.mm.truncate import truncate_setsize
from pinlab.kernel.mm.types import AddressSpace
from pinlab.kernel.mm.vmstat import NR_FILE_DIRTY
from pinlab.kernel.process import (
    ext4_create,
    fd_install,
    fget,
    new_task,
    sys_madvise,
    sys_mmap,
)
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import UserFault, user_access
from pinlab.scenarios.harness import kernel_program
from tests.scenarios.searching import only_mm, only_task, search

ADDR = 0x7F00_0000_0000  # the page both threads work on
RW = PROT_READ | PROT_WRITE
CPU_STORE = 2
ON_DISK = 42  # the data token of the file page on disk


def _mapping(k: Kernel) -> AddressSpace:
    return next(iter(k.mappings.values()))


def _ptes(k: Kernel) -> dict[int, int]:
    """PFN -> how many present, non-special PTEs map it, over every mm."""
    out: dict[int, int] = {}
    mask = np.uint64(_PAGE_PRESENT | _PAGE_PROTNONE)
    for mm in k.mms.values():
        for table in mm.pgtable.pte.values():
            live = table[((table & mask) != 0) & ((table & np.uint64(_PAGE_SPECIAL)) == 0)]
            for pfn in ((live & np.uint64(PTE_PFN_MASK)) >> np.uint64(PAGE_SHIFT)).tolist():
                out[pfn] = out.get(pfn, 0) + 1
    return out


def _frames_accounted(k: Kernel) -> bool:
    """Every small frame in use is held by exactly its PTEs, page-cache slot, LRU batch
    entries and buffers (v6.1: each PTE a reference and a mapcount, mm/memory.c
    do_set_pte / do_anonymous_page; the page cache one, mm/filemap.c
    __filemap_add_folio; each LRU batch entry one, mm/swap.c folio_add_lru; the buffers
    one, fs/buffer.c folio_attach_private); nothing else holds a frame once the
    program's pins are released.  A frame neither free nor held this way is leaked."""
    m = k.mem
    ptes = _ptes(k)
    cached = {int(f) for space in k.mappings.values() for f in space.i_pages.values()}
    private = k.pf.mask("PG_private")
    for pfn in np.flatnonzero(m.refcount > 0).tolist():
        if pfn == k.zero_pfn:
            continue
        held = ptes.get(pfn, 0) + (pfn in cached) + folio_in_lru_batch(k, pfn)
        held += 1 if int(m.flags[pfn]) & private else 0
        if int(m.refcount[pfn]) != held or page_mapcount(k, pfn) != ptes.get(pfn, 0):
            return False
    return all(int(m.refcount[pfn]) > 0 for pfn in ptes)


ACCOUNTED = FinalCheck("frame-not-accounted-for", _frames_accounted)


def _search(
    name: str,
    make: Callable[[], Kernel],
    threads: tuple[GenThread, ...],
    finals: tuple[FinalCheck, ...] = (),
) -> Result:
    return search(name, make, threads, (*finals, ACCOUNTED))


def _assert_holds(res: Result) -> None:
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit


def _anon_kernel() -> Kernel:
    """One private anonymous page at ADDR, not faulted in (small pages only)."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE_SIZE, RW, flags)) == ADDR
    assert run_to_completion(sys_madvise(k, task, ADDR, PAGE_SIZE, MADV_NOHUGEPAGE)) == 0
    return k


def store(k: Kernel) -> Generator[Yield, None, None]:
    """A user store of CPU_STORE to ADDR."""
    yield from user_access(k, only_task(k), ADDR, True, CPU_STORE)


def load(k: Kernel) -> Generator[Yield, None, None]:
    """A user load from ADDR: an anonymous page reads as zero, a file page as ON_DISK."""
    try:
        got = yield from user_access(k, only_task(k), ADDR, False)
    except UserFault as fault:
        raise Violation("a load of a mapped page faulted", fault.signal) from None
    if got not in (0, CPU_STORE, ON_DISK):
        raise Violation("a load read what nobody wrote", str(got))


def _addr_holds_the_store(k: Kernel) -> bool:
    """The page mapped at ADDR holds the store made to it."""
    pte = get_pte(only_mm(k).pgtable, ADDR)
    return pte_present(pte) and int(k.mem.data[pte_pfn(pte)]) == CPU_STORE


# --- do_anonymous_page: the zero page goes in only where the PTE is still none ------------
# v6.1 mm/memory.c do_anonymous_page :4170-4174: under the PTE lock, a PTE that is no longer
# none (another thread's fault mapped a page meanwhile) is left alone.
# Mutant: zero_page_install_recheck_dropped.


def test_zero_page_install_leaves_a_racing_write_fault_mapped() -> None:
    threads = (GenThread("load", load), GenThread("store", store))
    finals = (FinalCheck("store-lost", _addr_holds_the_store),)
    res = _search("zero-page-recheck", _anon_kernel, threads, finals)
    _assert_holds(res)


# --- do_anonymous_page: the loser of two write faults frees its page --------------------
# v6.1 mm/memory.c do_anonymous_page :4212-4214 and release (:4239-4240 put_page): a fault that
# finds the PTE taken under the lock drops the page it allocated.
# Mutant: anon_fault_race_leaks_page.


def test_two_write_faults_on_one_page_leave_no_page_behind() -> None:
    threads = (GenThread("store-a", store), GenThread("store-b", store))
    finals = (FinalCheck("store-lost", _addr_holds_the_store),)
    res = _search("anon-fault-race", _anon_kernel, threads, finals)
    _assert_holds(res)


# --- handle_pte_fault: a present PTE is looked at again under the lock -------------------
# v6.1 mm/memory.c handle_pte_fault :5041-5045: the entry read without the lock must still
# be there once the lock is held, else the fault returns and the access is retried; a PTE
# zapped meanwhile is not rewritten from what is there now.
# Mutant: pte_fault_recheck_dropped.


def load_then_dontneed(k: Kernel) -> Generator[Yield, None, None]:
    """A load (maps the zero page at ADDR), then MADV_DONTNEED of ADDR."""
    yield from load(k)
    yield from sys_madvise(k, only_task(k), ADDR, PAGE_SIZE, MADV_DONTNEED)


def _pte_none_or_present(k: Kernel) -> bool:
    pte = get_pte(only_mm(k).pgtable, ADDR)
    return not pte or pte_present(pte)


def test_pte_fault_recheck_sees_a_zap() -> None:
    threads = (GenThread("load", load), GenThread("load-dontneed", load_then_dontneed))
    finals = (FinalCheck("pte-neither-none-nor-present", _pte_none_or_present),)
    res = _search("pte-recheck", _anon_kernel, threads, finals)
    _assert_holds(res)


# --- finish_fault: the file page is mapped only where the PTE is still none --------------
# v6.1 mm/memory.c finish_fault :4497-4507 (vmf_pte_changed :4428-4434): a second read fault
# on the same file page that lost the race returns VM_FAULT_NOPAGE and drops its reference
# (do_read_fault :4636-4637).
# Mutant: finish_fault_recheck_dropped.


def _file_kernel() -> Kernel:
    """A one-page ext4 file on disk (ON_DISK), not cached, mapped MAP_SHARED read-only."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    f = ext4_create(k, PAGE_SIZE)
    k.mappings[f.mapping].store[0] = ON_DISK
    flags = MAP_SHARED | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE_SIZE, PROT_READ, flags, f)) == ADDR
    return k


def test_two_read_faults_on_one_file_page_map_it_once() -> None:
    threads = (GenThread("load-a", load), GenThread("load-b", load))
    res = _search("finish-fault-recheck", _file_kernel, threads)
    _assert_holds(res)


# --- unpin_user_pages_dirty_lock dirties under the folio lock ---------------------------
# v6.1 mm/gup.c unpin_user_pages_dirty_lock :358-361: folio_lock keeps folio->mapping
# stable while folio_mark_dirty (mm/page-writeback.c :2753) reads and uses it; truncation
# removes the folio under the same lock (mm/truncate.c truncate_inode_pages_range ->
# truncate_inode_folio), cancelling its dirty accounting (folio_cancel_dirty :185).  A folio
# dirtied through a mapping it has just left would stay counted in NR_FILE_DIRTY for ever.
# Mutant: unpin_dirty_without_folio_lock.


def _pinned_file_kernel() -> Kernel:
    """A one-page ext4 file, mapped shared at ADDR, pinned for write, then fsynced clean."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    file = fget(k, fd_install(k, ext4_create(k, 0)))
    assert run_to_completion(vfs_write(k, file, 0, PAGE_SIZE, 0, task.cpu)) == PAGE_SIZE
    flags = MAP_SHARED | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE_SIZE, RW, flags, file)) == ADDR
    mm = only_mm(k)
    pages = page_array(1)
    run_to_completion(mmap_read_lock(k, mm))
    assert run_to_completion(pin_user_pages(k, mm, ADDR, 1, FOLL_WRITE, pages)) == 1
    mmap_read_unlock(k, mm)
    assert not run_to_completion(vfs_fsync(k, file, task.cpu))
    return k


def _pinned_page(k: Kernel) -> int:
    """The one page the set-up pinned: the file's page, mapped at ADDR."""
    return pte_pfn(get_pte(only_mm(k).pgtable, ADDR))


def unpin_dirty(k: Kernel) -> Generator[Yield, None, None]:
    """The DMA is over: unpin_user_pages_dirty_lock(make_dirty) of the pinned page."""
    pages = page_array(1)
    pages[0] = _pinned_page(k)
    yield from unpin_user_pages_dirty_lock(k, pages, 1, True)


def truncate_to_zero(k: Kernel) -> Generator[Yield, None, None]:
    yield from truncate_setsize(k, _mapping(k), 0, only_task(k).cpu)


def _dirty_count_matches_the_cache(k: Kernel) -> bool:
    """NR_FILE_DIRTY counts exactly the dirty folios in the page cache of ext4 files."""
    dirty = k.pf.mask("PG_dirty")
    space = _mapping(k)
    n = sum(1 for f in space.i_pages.values() if int(k.mem.flags[f]) & dirty)
    return k.vmstat.counters.get(NR_FILE_DIRTY, 0) == n


def test_unpin_dirty_lock_keeps_the_dirty_count_through_a_truncate() -> None:
    threads = (GenThread("unpin", unpin_dirty), GenThread("truncate", truncate_to_zero))
    finals = (FinalCheck("nr-file-dirty-leaked", _dirty_count_matches_the_cache),)
    prog = kernel_program("unpin-dirty-lock", _pinned_file_kernel, threads, finals=finals)
    res = explore(prog, Options(strategy="dfs", cache=True, shrink=False))
    _assert_holds(res)
