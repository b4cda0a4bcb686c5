"""v5.7 write faults on a PMD-mapped THP, and v4.4's fault after a huge-PMD fallback.

Before v5.8 ("thp: change CoW semantics for anon-THP") a write to a write-protected
anon THP reused it or copied it whole; v6.1 splits the PMD and COWs one small page.
Rows are facts of the 4.4.178, 5.7.14 and 6.1.192 trees, each with its citation
(file, function, line); the values come out of the model.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import Any, NamedTuple

import pytest

from pinlab.explore import GenThread, Options, explore
from pinlab.explore.program import FinalCheck
from pinlab.interleave import Point, Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.locking import folio_lock, folio_unlock, mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_alloc import __GFP_COMP, GFP_HIGHUSER_MOVABLE, alloc_pages, free_pages
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_RW,
    HPAGE_PMD_ORDER,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    PageTable,
    get_pmd,
    pte_pfn,
)
from pinlab.kernel.mm.pincount import folio_pincount, page_maybe_dma_pinned
from pinlab.kernel.mm.rmap import PageDoubleMap, page_mapcount
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import Task
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import kernel_program

NR = 512
TAIL = 5
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _pfn(k: Kernel, task: Task, addr: int) -> int:
    entry = P.pagemap(k, task, addr)
    assert entry.present
    return entry.pfn


def _pin_tail(k: Kernel, task: Task, thp: int) -> int:
    """pin_user_pages(FOLL_WRITE) of subpage TAIL under mmap_lock, as a driver: the page."""
    mm = k.mms[task.mm]
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    got = run(pin_user_pages(k, mm, thp + TAIL * PAGE_SIZE, 1, FOLL_WRITE, pages))
    mmap_read_unlock(k, mm)
    assert got == 1
    return int(pages[0])


def _starve(k: Kernel, small: int) -> None:
    """Leave the allocator ``small`` free pages, no two of them buddies: no order-9 block."""
    taken = []
    while (pfn := alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)) is not None:
        taken.append(pfn)
    even = [pfn for pfn in taken if not pfn & 1]
    assert len(even) >= small
    for pfn in even[:small]:
        free_pages(k, pfn, 0)


class Forked:
    """A parent with a written anon THP (token 7 on subpage 0), forked once."""

    def __init__(
        self,
        profile: str,
        pin: bool = False,
        small: int | None = None,
        child_exits: bool = False,
    ):
        self.k = k = boot(profile, BootParams(normal_mb=8))
        self.parent = P.new_task(k)
        region = run(P.sys_mmap(k, self.parent, None, 2 * PMD_SIZE, RW, ANON))
        self.thp = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        run(user_access(k, self.parent, self.thp, True, 7))
        self.head = _pfn(k, self.parent, self.thp)
        assert get_pmd(self.pt, self.thp)
        self.pinned = _pin_tail(k, self.parent, self.thp) if pin else None
        self.child = k.tasks[run(P.sys_fork(k, self.parent))]
        if child_exits:
            run(P.sys_exit(k, self.child))
        if small is not None:
            _starve(k, small)

    @property
    def pt(self) -> PageTable:
        """The parent's page table."""
        return self.k.mms[self.parent.mm].pgtable

    def parent_writes(self, index: int = TAIL, value: int = 555) -> None:
        run(user_access(self.k, self.parent, self.thp + index * PAGE_SIZE, True, value))
        run(lru_add_drain(self.k, self.parent.cpu))

    def read(self, task: Task, index: int) -> int:
        return run(user_access(self.k, task, self.thp + index * PAGE_SIZE, False))


# --- the parent writes to a THP it shares with its child ----------------------------------


class SharedCow(NamedTuple):
    profile: str
    copies: bool  # a new THP for the parent; else the PMD is split and one page COWed
    cite: str


SHARED_ROWS = [
    SharedCow(
        "4.4",
        True,
        "v4.4.178 mm/huge_memory.c:1174 page_mapcount(head) 2 -> :1189 alloc_hugepage_vma, "
        ":1227 copy_user_huge_page, :1244-1250 the new PMD, :1257-1258 the old THP's",
    ),
    SharedCow(
        "5.7",
        True,
        "v5.7.14 mm/huge_memory.c:1411 reuse_swap_page false (mapped twice) -> :1430 "
        "alloc_hugepage_vma, :1468 copy_user_huge_page, :1486-1492 the new PMD, :1498-1499 "
        "page_remove_rmap + put_page of the old THP",
    ),
    SharedCow(
        "6.1",
        False,
        "v6.1.192 mm/huge_memory.c:1379-1381 refcount 2 -> unlock_fallback, __split_huge_pmd "
        "(:1407), VM_FAULT_FALLBACK; mm/memory.c do_wp_page copies the one page",
    ),
]


@pytest.mark.parametrize("row", SHARED_ROWS, ids=[r.profile for r in SHARED_ROWS])
def test_cow_of_a_shared_thp(row: SharedCow) -> None:
    f = Forked(row.profile)
    k, m = f.k, f.k.mem
    f.parent_writes()
    assert _pfn(k, f.child, f.thp) == f.head, row.cite
    assert (f.read(f.parent, 0), f.read(f.child, 0)) == (7, 7), row.cite
    assert (f.read(f.parent, TAIL), f.read(f.child, TAIL)) == (555, 0), row.cite
    pmd = get_pmd(f.pt, f.thp)
    if row.copies:
        new = _pfn(k, f.parent, f.thp)
        assert new not in range(f.head, f.head + NR) and new % NR == 0, row.cite
        assert pte_pfn(pmd) == new, row.cite
        assert pmd & _PAGE_RW and pmd & _PAGE_DIRTY and pmd & _PAGE_ACCESSED, row.cite
        assert int(m.head[new + TAIL]) == new, row.cite
        # the old THP: the child's PMD alone; the new one: the parent's
        assert (page_mapcount(k, f.head), int(m.refcount[f.head])) == (1, 1), row.cite
        assert (page_mapcount(k, new), int(m.refcount[new])) == (1, 1), row.cite
    else:
        assert not pmd, row.cite
        assert _pfn(k, f.parent, f.thp) == f.head, row.cite
        assert _pfn(k, f.parent, f.thp + TAIL * PAGE_SIZE) not in range(f.head, f.head + NR)
        assert int(m.flags[f.head]) & k.pf.mask("PG_head"), row.cite


# --- v5.7: reuse, pins, and what happens without a THP ------------------------------------


def test_57_thp_mapped_once_is_reused_pinned_or_not() -> None:
    """v5.7.14 mm/huge_memory.c:1399 trylock_page, :1411 reuse_swap_page(page, NULL): the
    child gone, the THP is mapped once (mm/swapfile.c:1581 page_trans_huge_map_swapcount:
    busiest page 0 + entire mapcount 1), so it is reused, young, dirty and writable
    (:1413-1416), pinned or not: 5.7 COW never reads page_maybe_dma_pinned."""
    f = Forked("5.7", pin=True, child_exits=True)
    k, m = f.k, f.k.mem
    assert page_maybe_dma_pinned(k, f.head) and folio_pincount(k, f.head) == 1
    assert not get_pmd(f.pt, f.thp) & _PAGE_RW
    f.parent_writes()
    pmd = get_pmd(f.pt, f.thp)
    assert pte_pfn(pmd) == f.head
    assert pmd & _PAGE_RW and pmd & _PAGE_DIRTY and pmd & _PAGE_ACCESSED
    assert not int(m.flags[f.head]) & k.pf.mask("PG_locked")
    assert (page_mapcount(k, f.head), int(m.refcount[f.head])) == (1, 2)
    m.data[f.head + TAIL] = 999  # the device's DMA through its page
    assert f.read(f.parent, TAIL) == 999


def test_57_pinned_shared_thp_cow_leaves_the_pinned_thp_to_the_child() -> None:
    """v5.7.14: fork shares the pinned THP (copy_huge_pmd :1102 page_dup_rmap, no pin test),
    so the parent's write copies it whole (:1411 reuse_swap_page false, :1468); the pin
    (hpage_pinned_refcount, include/linux/mm.h page_maybe_dma_pinned) stays on the THP the
    child now maps alone, and what the device writes there the parent never sees."""
    f = Forked("5.7", pin=True)
    k, m = f.k, f.k.mem
    assert f.pinned == f.head + TAIL
    f.parent_writes(0, 555)
    new = _pfn(k, f.parent, f.thp)
    assert new not in range(f.head, f.head + NR)
    assert _pfn(k, f.child, f.thp + TAIL * PAGE_SIZE) == f.pinned
    assert folio_pincount(k, f.head) == 1 and not page_maybe_dma_pinned(k, new)
    # the child's mapping and the pin
    assert (page_mapcount(k, f.head), int(m.refcount[f.head])) == (1, 2)
    m.data[f.pinned] = 999
    assert (f.read(f.parent, TAIL), f.read(f.child, TAIL)) == (0, 999)


def test_57_cow_without_a_thp_copies_to_512_small_pages() -> None:
    """v5.7.14 mm/huge_memory.c:1432-1446: no THP -> do_huge_pmd_wp_page_fallback (:1258):
    512 pages (:1279), each copied (:1301), mapped writable and dirty by a new PTE table
    (:1329-1346); the THP loses the parent's mapping (:1347) and both references (:1357,
    :1444)."""
    f = Forked("5.7", small=NR + 8)
    k, m = f.k, f.k.mem
    f.parent_writes()
    slot = f.thp >> PMD_SHIFT
    assert slot not in f.pt.pmd
    frames = [pte_pfn(int(p)) for p in f.pt.pte[slot]]
    assert len(set(frames)) == NR and not set(frames) & set(range(f.head, f.head + NR))
    assert all(int(e) & _PAGE_RW and int(e) & _PAGE_DIRTY for e in f.pt.pte[slot])
    assert all(int(m.refcount[p]) == 1 and page_mapcount(k, p) == 1 for p in frames)
    assert (page_mapcount(k, f.head), int(m.refcount[f.head])) == (1, 1)
    assert get_pmd(k.mms[f.child.mm].pgtable, f.thp)
    assert (f.read(f.parent, 0), f.read(f.parent, TAIL), f.read(f.child, TAIL)) == (7, 555, 0)


def test_57_cow_without_memory_splits_the_pmd_only() -> None:
    """v5.7.14 mm/huge_memory.c:1440-1443: the fallback runs out of memory (VM_FAULT_OOM,
    :1283-1295) -> split_huge_pmd, VM_FAULT_FALLBACK: the PMD alone is split (v4.4
    split_huge_page split the compound page, :1200), the THP stays whole, PTE-mapped in
    the parent (PageDoubleMap) and PMD-mapped in the child; do_wp_page copies one page."""
    f = Forked("5.7", small=10)
    k, m = f.k, f.k.mem
    f.parent_writes()
    assert not get_pmd(f.pt, f.thp)
    assert get_pmd(k.mms[f.child.mm].pgtable, f.thp)
    assert int(m.flags[f.head]) & k.pf.mask("PG_head") and PageDoubleMap(k, f.head)
    assert _pfn(k, f.parent, f.thp) == f.head
    assert _pfn(k, f.parent, f.thp + TAIL * PAGE_SIZE) not in range(f.head, f.head + NR)
    assert int(m.head[f.head + TAIL]) == f.head
    assert (f.read(f.parent, TAIL), f.read(f.child, TAIL)) == (555, 0)


def test_57_write_on_the_huge_zero_page_allocates_a_cleared_thp() -> None:
    """v5.7.14 mm/huge_memory.c:1387 the huge zero PMD goes to alloc:, clear_huge_page (:1466)
    and a new writable PMD (:1486-1492); v6.1 splits it (:1339 goto fallback)."""
    k = boot("5.7", BootParams(normal_mb=8))
    task = P.new_task(k)
    region = run(P.sys_mmap(k, task, None, 2 * PMD_SIZE, RW, ANON))
    thp = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    assert run(user_access(k, task, thp, False)) == 0
    assert _pfn(k, task, thp) == k.huge_zero_pfn
    run(user_access(k, task, thp + TAIL * PAGE_SIZE, True, 3))
    new = _pfn(k, task, thp)
    pt = k.mms[task.mm].pgtable
    assert new != k.huge_zero_pfn and get_pmd(pt, thp) & _PAGE_RW
    assert page_mapcount(k, new) == 1
    assert (
        run(user_access(k, task, thp, False)),
        run(user_access(k, task, thp + TAIL * PAGE_SIZE, False)),
    ) == (0, 3)


# --- explorer: two parent threads write while a third holds the THP's page lock -----------


def _forked_57() -> Kernel:
    """Forked("5.7").k: the parent (pid of the first task) and the child share the THP."""
    return Forked("5.7").k


def _parent(k: Kernel) -> Task:
    return k.tasks[min(k.tasks)]


def _child(k: Kernel) -> Task:
    return k.tasks[max(k.tasks)]


def _thp_addr(k: Kernel) -> int:
    """The PMD-aligned address in the parent's region, where the THP is."""
    start = k.mms[_parent(k).mm].vmas[0].vm_start
    return (start + PMD_SIZE - 1) & ~(PMD_SIZE - 1)


def writer_0(k: Kernel) -> Generator[Yield, None, None]:
    """A thread of the parent storing 1 to subpage 0."""
    yield from user_access(k, _parent(k), _thp_addr(k), True, 1)


def writer_tail(k: Kernel) -> Generator[Yield, None, None]:
    """A thread of the parent storing 2 to subpage TAIL."""
    yield from user_access(k, _parent(k), _thp_addr(k) + TAIL * PAGE_SIZE, True, 2)


def page_locker(k: Kernel) -> Generator[Yield, None, None]:
    """Another holder of the shared THP's page lock for a while (as reclaim's trylock_page,
    v5.7.14 mm/vmscan.c shrink_page_list): the THP the child maps."""
    head = pte_pfn(get_pmd(k.mms[_child(k).mm].pgtable, _thp_addr(k)))
    yield from folio_lock(k, head)
    yield Point("page locked", writes=frozenset({("page", head, "flags")}))
    folio_unlock(k, head)


def test_57_cow_faults_recheck_the_pmd_after_lock_page() -> None:
    """v5.7.14 mm/huge_memory.c:1399-1408: a fault that finds the THP locked holds it, drops
    the PMD lock for lock_page, and once it has both checks the PMD again (:1404): if the
    other thread's fault has installed its copy meanwhile, it returns 0 (:1405-1407) and the
    store is retried into that copy, as it does when the PMD changed before the copy is
    installed (pmd_same :1479).  Without the recheck it would find the old THP mapped once
    (the child's) and make the parent's old PMD writable over it."""
    seen: set[tuple[Any, ...]] = set()

    def record(k: Kernel) -> bool:
        thp = _thp_addr(k)
        old = _pfn(k, _child(k), thp)
        new = _pfn(k, _parent(k), thp)
        m = k.mem
        heads = {p for p in range(m.nr_pages) if int(m.flags[p]) & k.pf.mask("PG_head")}
        seen.add(
            (
                new != old,
                heads == {old, new},
                (page_mapcount(k, old), int(m.refcount[old])),
                (page_mapcount(k, new), int(m.refcount[new])),
                bool(int(m.flags[old]) & k.pf.mask("PG_locked")),
                (int(m.data[new]), int(m.data[new + TAIL]), int(m.data[old])),
            )
        )
        return True

    program = kernel_program(
        "thp-5.7-cow-lock_page",
        _forked_57,
        (
            GenThread("store-0", writer_0),
            GenThread("store-tail", writer_tail),
            GenThread("lock_page", page_locker),
        ),
        finals=(FinalCheck("record", record),),
        checked=True,
    )
    result = explore(program, Options(strategy="dfs"))
    assert result.complete and not result.errors and not result.violated, result.errors[:1]
    assert seen == {(True, True, (1, 1), (1, 1), False, (1, 2, 7))}


# --- the fault after do_huge_pmd_anonymous_page fell back ----------------------------------


def _one_thp_block(profile: str) -> Kernel:
    """A task with an empty THP-sized region and one free order-9 block: of two THP
    faults at once, one falls back (alloc_hugepage_vma NULL, VM_FAULT_FALLBACK)."""
    k = boot(profile, BootParams(normal_mb=8))
    task = P.new_task(k)
    run(P.sys_mmap(k, task, None, 2 * PMD_SIZE, RW, ANON))
    blocks = []
    while (pfn := alloc_pages(k, GFP_HIGHUSER_MOVABLE | __GFP_COMP, HPAGE_PMD_ORDER)) is not None:
        blocks.append(pfn)
    free_pages(k, blocks[0], HPAGE_PMD_ORDER)
    return k


FALLBACK_ROWS = [
    (
        "4.4",
        "v4.4.178 mm/memory.c __handle_mm_fault: after VM_FAULT_FALLBACK (:3410-3411) "
        "__pte_alloc (:3451, populated only if still none, :581), then pmd_trans_unstable "
        "(:3464) returns 0 if the PMD is huge",
    ),
    (
        "5.7",
        "v5.7.14 mm/memory.c do_anonymous_page: pte_alloc (:3331; __pte_alloc :423 populates "
        "under the PMD lock only if still none), then pmd_trans_unstable (:3335) returns 0; "
        "handle_pte_fault :4186 returns 0 on a PMD that became huge",
    ),
    (
        "6.1",
        "v6.1.192 mm/memory.c do_anonymous_page: pte_alloc (:4158; pmd_install :440-444), "
        "then pmd_trans_unstable (:4162) returns 0; handle_pte_fault :4999",
    ),
]


@pytest.mark.parametrize(("profile", "cite"), FALLBACK_ROWS, ids=[r[0] for r in FALLBACK_ROWS])
def test_fault_after_a_thp_fallback_retries_over_a_new_huge_pmd(profile: str, cite: str) -> None:
    """The fault that fell back gets a PTE table only if the PMD is still none, and ends
    with 0 if the PMD is huge by then: the other thread's THP is mapped, so the store is
    retried into that THP.  Either the THP or the PTE table wins the PMD, never both."""
    seen: set[tuple[Any, ...]] = set()

    def record(k: Kernel) -> bool:
        task = _parent(k)
        thp = _thp_addr(k)
        pt = k.mms[task.mm].pgtable
        slot = thp >> PMD_SHIFT
        a, b = _pfn(k, task, thp), _pfn(k, task, thp + TAIL * PAGE_SIZE)
        m = k.mem
        seen.add(
            (
                slot in pt.pmd,
                slot in pt.pte,
                b - a if slot in pt.pmd else None,
                (int(m.data[a]), int(m.data[b])),
            )
        )
        return True

    program = kernel_program(
        f"thp-{profile}-fallback-race",
        partial(_one_thp_block, profile),
        (GenThread("store-0", writer_0), GenThread("store-tail", writer_tail)),
        finals=(FinalCheck("record", record),),
        checked=True,
    )
    result = explore(program, Options(strategy="dfs"))
    assert result.complete and not result.errors and not result.violated, result.errors[:1]
    assert seen == {(True, False, TAIL, (1, 2)), (False, True, None, (1, 2))}, cite
