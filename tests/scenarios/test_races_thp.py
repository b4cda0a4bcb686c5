"""Rechecks of a huge PMD under its lock in the 6.1 THP fault paths, each tested by a search.

Each test is a two-thread program over the 6.1 model and a property the recheck exists
to keep.  The search must hold it over every interleaving; with the recheck removed
(bench/mutation.py huge_zero_install_recheck_dropped, thp_wp_recheck_dropped) the same
search finds an interleaving that breaks it.
"""

from __future__ import annotations

from collections.abc import Generator

from pinlab.explore import FinalCheck, GenThread
from pinlab.interleave import Yield, run_to_completion
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import PMD_SIZE, get_pmd, get_pte, pte_pfn, pte_present, pte_write
from pinlab.kernel.process import new_task, sys_exit, sys_fork, sys_madvise, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from tests.scenarios.searching import only_mm, search

ADDR = 0x7F00_0000_0000  # PMD aligned
NEXT = ADDR + PMD_SIZE  # the next PMD of the same VMA
RW = PROT_READ | PROT_WRITE
FIRST = 3  # the store that made the THP at ADDR
STORE = 5  # the racing store to ADDR
CPU_STORE = 2  # the store to NEXT


def _mapped(k: Kernel, addr: int) -> int | None:
    """The frame mapped at addr in the parent, or None."""
    pt = only_mm(k).pgtable
    entry = get_pmd(pt, addr) or get_pte(pt, addr)
    return pte_pfn(entry) if pte_present(entry) else None


def _holds(k: Kernel, addr: int, value: int) -> bool:
    """addr is mapped, to a frame holding value."""
    frame = _mapped(k, addr)
    return frame is not None and int(k.mem.data[frame]) == value


def _empty_kernel() -> Kernel:
    """Two PMDs of private anonymous memory at ADDR (MADV_HUGEPAGE), nothing faulted yet."""
    k = boot("6.1", BootParams(normal_mb=8))
    task = new_task(k)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, 2 * PMD_SIZE, RW, flags)) == ADDR
    assert run_to_completion(sys_madvise(k, task, ADDR, 2 * PMD_SIZE, MADV_HUGEPAGE)) == 0
    return k


def _parent(k: Kernel) -> int:
    """The pid of the task that made the mapping (the lowest)."""
    return min(k.tasks)


# --- the huge zero page is installed only into a PMD still none --------------------------
# v6.1.192 mm/memory.c __handle_mm_fault reads the PMD without its lock (pmd_none ->
# create_huge_pmd); mm/huge_memory.c:826-828 do_huge_pmd_anonymous_page takes pmd_lock and
# sets the huge zero PMD (set_huge_zero_page :843) only if pmd_none(*vmf->pmd) still
# holds, else leaves the PMD another fault installed meanwhile (:849-852).


def read_addr(k: Kernel) -> Generator[Yield, None, None]:
    """A load from ADDR: a read fault on the empty PMD maps the huge zero page."""
    yield from user_access(k, k.tasks[_parent(k)], ADDR, False)


def write_addr(k: Kernel) -> Generator[Yield, None, None]:
    """A store to ADDR: a write fault on the empty PMD maps a new THP."""
    yield from user_access(k, k.tasks[_parent(k)], ADDR, True, STORE)


def test_huge_zero_page_is_not_installed_over_a_new_thp() -> None:
    threads = (GenThread("read", read_addr), GenThread("write", write_addr))
    finals = (FinalCheck("store-kept", lambda k: _holds(k, ADDR, STORE)),)
    res = search("huge-zero-install", _empty_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit


# --- a write fault on a write-protected THP reuses it only if the PMD is the one read ------
# v6.1.192 mm/memory.c __handle_mm_fault passes the PMD it read without the lock as
# vmf->orig_pmd; mm/huge_memory.c:1342-1346 do_huge_pmd_wp_page takes the PMD lock and
# returns 0 (the fault is retried) unless pmd_same(*vmf->pmd, orig_pmd).  Without that, a
# THP zapped meanwhile and its frames handed out again as another THP (PageAnonExclusive,
# :1363 reuse) would be mapped writable at the old address, through the stale orig_pmd.


def _shared_once_kernel() -> Kernel:
    """A THP written at ADDR, forked, the child gone: the PMD is write-protected, the THP
    mapped once, not PageAnonExclusive (fork cleared it), its count 1."""
    k = _empty_kernel()
    parent = k.tasks[_parent(k)]
    run_to_completion(user_access(k, parent, ADDR, True, FIRST))
    child = run_to_completion(sys_fork(k, parent))
    run_to_completion(sys_exit(k, k.tasks[child]))
    pmd = get_pmd(only_mm(k).pgtable, ADDR)
    assert pmd and not pte_write(pmd)
    assert int(k.mem.refcount[pte_pfn(pmd)]) == 1
    return k


def write_shared_once(k: Kernel) -> Generator[Yield, None, None]:
    """A store to ADDR: a write fault on the write-protected PMD."""
    yield from user_access(k, k.tasks[_parent(k)], ADDR, True, STORE)


def drop_thp_and_fault_next(k: Kernel) -> Generator[Yield, None, None]:
    """MADV_DONTNEED the THP at ADDR (its frames are freed), then a store to NEXT (a new
    THP: the allocator hands the same frames out again)."""
    task = k.tasks[_parent(k)]
    yield from sys_madvise(k, task, ADDR, PMD_SIZE, MADV_DONTNEED)
    yield from user_access(k, task, NEXT, True, CPU_STORE)


def _apart(k: Kernel) -> bool:
    """NEXT holds its store, and ADDR does not map NEXT's frame."""
    frame = _mapped(k, ADDR)
    return _holds(k, NEXT, CPU_STORE) and (frame is None or frame != _mapped(k, NEXT))


def test_thp_write_fault_rechecks_the_pmd_under_its_lock() -> None:
    threads = (
        GenThread("write", write_shared_once),
        GenThread("dontneed", drop_thp_and_fault_next),
    )
    finals = (
        FinalCheck("addr-apart-from-next", _apart),
        FinalCheck("addr-store-kept", lambda k: _holds(k, ADDR, STORE) or not _mapped(k, ADDR)),
    )
    res = search("thp-wp-recheck", _shared_once_kernel, threads, finals)
    assert not res.errors and not res.unmodelled, res
    assert not res.violated, res.counterexamples
    assert res.complete, res.limits_hit
