"""Edges of the write-protect fault (do_wp_page), each row a kernel fact: when a page that was
shared at fork is reused or copied by the count of its references (6.1), what an unshare
fault maps, what an exclusive page's write fault keeps, and where a reused page's anon_vma
goes (5.7 / 4.4).  Observed: the frame the parent maps after its store (pagemap), the PTE's
bits, the frames' refcount, PG_lru and data tokens."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import pytest

from pinlab.interleave import Await, Point, Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_fast import get_user_pages_fast
from pinlab.kernel.mm.gup_unpin import put_page_api
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SIZE, get_pte, pte_dirty, pte_pfn, pte_write
from pinlab.kernel.mm.rmap import PageAnonExclusive, anon_mapping_value
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import Task, find_vma
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

ADDR = 0x7F00_0000_0000
RW = PROT_READ | PROT_WRITE
OLD, NEW = 11, 22  # the page's data token before and after the parent's store
PIN_BIAS = 1024  # v6.1 include/linux/mm.h GUP_PIN_COUNTING_BIAS


def _kernel(profile: str = "6.1") -> tuple[Kernel, Task]:
    """Two CPUs, one task on CPU 0 with one private anonymous page at ADDR (not faulted)."""
    k = boot(profile, BootParams(normal_mb=4, nr_cpus=2))
    task = P.new_task(k, 0)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    assert run(P.sys_mmap(k, task, ADDR, PAGE_SIZE, RW, flags)) == ADDR
    return k, task


def _pfn(k: Kernel, task: Task) -> int:
    return pte_pfn(get_pte(k.mms[task.mm].pgtable, ADDR))


def _gup(k: Kernel, task: Task, pin: bool) -> int:
    """One R/O reference on the page at ADDR: get_user_pages (FOLL_GET) or pin_user_pages."""
    mm = k.mms[task.mm]
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    call = pin_user_pages if pin else get_user_pages
    assert run(call(k, mm, ADDR, 1, 0, pages)) == 1
    mmap_read_unlock(k, mm)
    return int(pages[0])


def _lru(k: Kernel, page: int) -> bool:
    return bool(int(k.mem.flags[page]) & k.pf.mask("PG_lru"))


def _shared_then_alone(k: Kernel, task: Task, batch_cpu: int | None) -> int:
    """The parent's page once shared with a child that has exited: not PageAnonExclusive
    (fork cleared it, v6.1 include/linux/rmap.h page_try_dup_anon_rmap), mapped once.

    ``batch_cpu``: the CPU whose lru_add batch still holds the page's reference (v6.1
    mm/swap.c folio_add_lru), None: drained onto the LRU (PG_lru).  The child exits on the
    other CPU, whose lru_add_drain does not reach that batch."""
    if batch_cpu is not None:
        task.cpu = batch_cpu
    run(user_access(k, task, ADDR, True, OLD))
    page = _pfn(k, task)
    if batch_cpu is None:
        run(lru_add_drain(k, task.cpu))
    task.cpu = 0
    child = k.tasks[run(P.sys_fork(k, task))]
    child.cpu = 1 if batch_cpu in (None, 0) else 0
    run(P.sys_exit(k, child))
    assert not PageAnonExclusive(k, page)
    assert _lru(k, page) == (batch_cpu is None)
    return page


# --- 6.1: reuse of a page that is not exclusive goes by its reference count ----------------
# 6.1.192 mm/memory.c do_wp_page: PageAnonExclusive -> reuse (:3461); a count above 3 copies
# at once (:3471); a folio not on the LRU (!PG_lru) may be held by this CPU's lru_add batch:
# lru_add_drain (:3473-3478), which cannot reach another CPU's batch (:3474-3477); then a
# count above 1 (no swap cache) copies (:3479), and under the folio lock only a count of
# exactly 1 is reused (:3485), page_move_anon_rmap (:3494) making it exclusive again.


@dataclass(frozen=True)
class Reuse:
    name: str
    batch_cpu: int | None  # whose lru_add batch holds the page (None: on the LRU)
    gets: int  # get_user_pages references held over the store
    count: int  # folio_ref_count at do_wp_page's first test (:3471)
    reused: bool  # the parent still maps its page after the store
    lru_after: bool  # PG_lru on the old page after the store: lru_add_drain ran


REUSE_ROWS = (
    # :3471 2 <= 3, :3473 !PG_lru -> lru_add_drain drops the batch's ref, :3479 1, :3485 reuse
    Reuse("own-cpu-batch", 0, 0, 2, True, True),
    # :3471 3 <= 3, drained (PG_lru set), :3479 2 > 1 -> copy
    Reuse("own-cpu-batch+get", 0, 1, 3, False, True),
    # :3471 4 > 3 -> copy at once: no lru_add_drain, the batch still holds the page
    Reuse("own-cpu-batch+2get", 0, 2, 4, False, False),
    # :3473 PG_lru: no drain; :3479 1 -> reuse
    Reuse("lru", None, 0, 1, True, True),
    # :3479 2 > 1 -> copy
    Reuse("lru+get", None, 1, 2, False, True),
    # :3474-3477: lru_add_drain drains this CPU only; CPU 1's batch keeps its ref: 2 > 1, copy
    Reuse("other-cpu-batch", 1, 0, 2, False, False),
)


@pytest.mark.parametrize("row", REUSE_ROWS, ids=lambda r: r.name)
def test_6_1_reuse_of_a_page_shared_at_fork_goes_by_refcount(row: Reuse) -> None:
    k, task = _kernel()
    page = _shared_then_alone(k, task, row.batch_cpu)
    held = [_gup(k, task, pin=False) for _ in range(row.gets)]
    assert held == [page] * row.gets
    assert int(k.mem.refcount[page]) == row.count
    run(user_access(k, task, ADDR, True, NEW))
    now = _pfn(k, task)
    assert (now == page) == row.reused
    assert pte_write(get_pte(k.mms[task.mm].pgtable, ADDR))
    assert PageAnonExclusive(k, now)
    assert int(k.mem.data[now]) == NEW
    if not row.reused:
        # the old page is the get_user_pages holders' (and the batch's): it kept its data
        assert int(k.mem.data[page]) == OLD
        assert _lru(k, page) == row.lru_after
        assert int(k.mem.refcount[page]) == row.gets + (not row.lru_after)
    else:
        assert _lru(k, page)
        assert int(k.mem.refcount[page]) == 1


# --- 6.1: the count tests are taken once, in order, around a reference that comes or goes ---
# The fault is stopped between two of do_wp_page's steps while another CPU drops or takes a
# reference (a put of a get_user_pages reference; a get_user_pages_fast, which needs no lock
# the fault holds).


def _until_after_count_test(gen: Generator[Yield, None, int]) -> None:
    """Run the store until it is past do_wp_page's count test after lru_add_drain (:3479):
    at folio_trylock (:3481, passed) or at the copy's get_page (:3515, failed)."""
    stop = {"folio_trylock", "do_wp_page get_page"}
    value = next(gen)
    while not (isinstance(value, Point) and value.label in stop):
        assert not isinstance(value, Await) or value.ready()
        value = gen.send(None)


def _finish(gen: Generator[Yield, None, int]) -> None:
    """Resume the stopped store and run it alone to its end."""
    try:
        while True:
            value = gen.send(None)
            assert not isinstance(value, Await) or value.ready()
    except StopIteration:
        return


def test_6_1_count_above_one_after_the_drain_copies_though_the_ref_goes_right_after() -> None:
    """:3479-3480: a count of 2 goes to copy; the decision stands when the other reference
    is put before the fault would have taken the folio lock."""
    k, task = _kernel()
    page = _shared_then_alone(k, task, None)
    held = _gup(k, task, pin=False)
    assert held == page and int(k.mem.refcount[page]) == 2
    store = user_access(k, task, ADDR, True, NEW)
    _until_after_count_test(store)
    run(put_page_api(k, held))
    assert int(k.mem.refcount[page]) == 1
    _finish(store)
    now = _pfn(k, task)
    assert now != page
    assert int(k.mem.data[now]) == NEW
    # the copy's put of the old page was its last reference: freed
    assert int(k.mem.refcount[page]) == 0


def test_6_1_reference_taken_before_the_folio_lock_makes_the_fault_copy() -> None:
    """:3485: a count of 1 passed :3479, but a gup-fast reference taken before the folio is
    locked makes the count 2 under the lock: copy, and the reference holder keeps the data it
    referenced."""
    k, task = _kernel()
    page = _shared_then_alone(k, task, None)
    assert int(k.mem.refcount[page]) == 1
    store = user_access(k, task, ADDR, True, NEW)
    _until_after_count_test(store)
    pages = page_array(1)
    assert run(get_user_pages_fast(k, k.mms[task.mm], ADDR, 1, 0, pages)) == 1
    assert int(pages[0]) == page
    _finish(store)
    now = _pfn(k, task)
    assert now != page
    assert int(k.mem.data[now]) == NEW
    assert int(k.mem.data[page]) == OLD
    assert int(k.mem.refcount[page]) == 1


# --- 6.1: a R/O pin unshares; the pinned copy is exclusive and reused by the next store -------
# 6.1.192 mm/gup.c follow_page_pte: a R/O FOLL_PIN of a page that is not PageAnonExclusive
# must unshare (include/linux/mm.h gup_must_unshare) -> handle_mm_fault(FAULT_FLAG_UNSHARE)
# -> do_wp_page -> wp_page_copy: the copy holds the old page's data (__wp_page_copy_user
# :3157), and for unshare its PTE is not made writable or dirty (:3203-3211; BUG_ON :3228).
# The copy is exclusive (page_add_new_anon_rmap), so the parent's store reuses it (:3461)
# whatever its count (the pin's GUP_PIN_COUNTING_BIAS): the pin sees the store.


def test_6_1_ro_pin_after_fork_unshares_into_a_read_only_copy_the_store_reuses() -> None:
    k, task = _kernel()
    run(user_access(k, task, ADDR, True, OLD))
    run(lru_add_drain(k, task.cpu))
    shared = _pfn(k, task)
    child = k.tasks[run(P.sys_fork(k, task))]
    pinned = _gup(k, task, pin=True)
    pte = get_pte(k.mms[task.mm].pgtable, ADDR)
    assert pinned == pte_pfn(pte) != shared
    assert not pte_write(pte) and not pte_dirty(pte)
    assert int(k.mem.data[pinned]) == OLD
    assert PageAnonExclusive(k, pinned)
    assert int(k.mem.refcount[pinned]) > 3  # the pin's bias, and the lru_add batch's ref
    # the child keeps the shared page and its data
    assert pte_pfn(get_pte(k.mms[child.mm].pgtable, ADDR)) == shared
    assert run(user_access(k, child, ADDR, False)) == OLD
    run(user_access(k, task, ADDR, True, NEW))
    pte = get_pte(k.mms[task.mm].pgtable, ADDR)
    assert pte_pfn(pte) == pinned and pte_write(pte)
    assert int(k.mem.data[pinned]) == NEW
    assert run(user_access(k, child, ADDR, False)) == OLD


# --- 5.7 / 4.4: reuse by mapcount moves the page to the faulting VMA's anon_vma ------------
# v5.7.14 mm/memory.c do_wp_page :2956-2966: reuse_swap_page true with total_map_swapcount 1
# -> page_move_anon_rmap (mm/rmap.c: page->mapping = vma->anon_vma | PAGE_MAPPING_ANON);
# v4.4.178 mm/memory.c do_wp_page :2417-2423 moves it whenever reuse_swap_page says reusable.
# The child's VMA has its own anon_vma (mm/rmap.c anon_vma_fork); the page was the parent's.


@pytest.mark.parametrize("profile", ["5.7", "4.4"])
def test_reused_page_moves_to_the_childs_anon_vma(profile: str) -> None:
    k, task = _kernel(profile)
    run(user_access(k, task, ADDR, True, OLD))
    page = _pfn(k, task)
    parent_vma = find_vma(k.mms[task.mm], ADDR)
    assert parent_vma is not None and parent_vma.anon_vma is not None
    assert int(k.mem.mapping[page]) == anon_mapping_value(parent_vma.anon_vma)
    child = k.tasks[run(P.sys_fork(k, task))]
    run(P.sys_exit(k, task))
    run(user_access(k, child, ADDR, True, NEW))
    assert _pfn(k, child) == page
    child_vma = find_vma(k.mms[child.mm], ADDR)
    assert child_vma is not None and child_vma.anon_vma not in (None, parent_vma.anon_vma)
    assert int(k.mem.mapping[page]) == anon_mapping_value(child_vma.anon_vma)
