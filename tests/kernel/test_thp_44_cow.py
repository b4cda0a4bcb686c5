"""v4.4 write faults on a THP, mprotect of one, and bit 0x80 of the gup flags.

Rows are facts of the 4.4.178 tree (5.7.14 and 6.1.192 for the flag table), each
with its citation (file, function, line).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from gupstate import anon_vma, fault_thp, new_mm

from pinlab.explore import GenThread, Options, explore
from pinlab.explore.program import FinalCheck
from pinlab.interleave import Unmodelled, Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.arch.x86.mm.gup import __get_user_pages_fast
from pinlab.kernel.mm.cow import reuse_swap_page
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import (
    FOLL_FAST_ONLY,
    FOLL_MIGRATION,
    FOLL_NOFAULT,
    FOLL_SPLIT,
    FOLL_WRITE,
    foll_flags,
    foll_nofault,
    foll_split,
    require_gup_flags,
)
from pinlab.kernel.mm.huge_memory_4_4 import split_huge_page
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memmap import NO_HEAD
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, do_mprotect
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, alloc_pages, free_pages
from pinlab.kernel.mm.pgtable import (
    _PAGE_DIRTY,
    _PAGE_RW,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    PageTable,
    get_pmd,
    get_pte,
    pte_pfn,
)
from pinlab.kernel.mm.rmap import page_mapcount
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import Task
from pinlab.kernel.profiles import NotInKernel
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


def _gup_tail(k: Kernel, task: Task, thp: int) -> int:
    """get_user_pages(FOLL_WRITE) of subpage TAIL under mmap_sem, as a driver: the page."""
    mm = k.mms[task.mm]
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    got = run(get_user_pages(k, mm, thp + TAIL * PAGE_SIZE, 1, FOLL_WRITE, pages))
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
    """A 4.4 parent with a written anon THP (token 7 on subpage 0), forked once."""

    def __init__(self, gup: bool = False, small: int | None = None, child_exits: bool = False):
        self.k = k = boot("4.4", BootParams(normal_mb=8))
        self.parent = P.new_task(k)
        region = run(P.sys_mmap(k, self.parent, None, 2 * PMD_SIZE, RW, ANON))
        self.thp = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        run(user_access(k, self.parent, self.thp, True, 7))
        self.head = _pfn(k, self.parent, self.thp)
        assert get_pmd(self.pt, self.thp)
        self.gupped = _gup_tail(k, self.parent, self.thp) if gup else None
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


def test_cow_of_a_shared_thp_copies_it_to_a_new_thp() -> None:
    """v4.4 mm/huge_memory.c do_huge_pmd_wp_page: page_mapcount(head) 2 (:1174) -> a new THP
    (:1189) with the old one's contents (copy_user_huge_page :1227) mapped by a writable
    dirty PMD (:1244-1250); the old THP loses the parent's mapping and reference (:1257)."""
    f = Forked()
    k, m = f.k, f.k.mem
    f.parent_writes()
    new = _pfn(k, f.parent, f.thp)
    pmd = get_pmd(f.pt, f.thp)
    assert new not in range(f.head, f.head + NR) and new % NR == 0
    assert pmd & _PAGE_RW and pmd & _PAGE_DIRTY
    assert _pfn(k, f.child, f.thp) == f.head
    # the old THP: the child's PMD alone; the new one: the parent's
    assert (page_mapcount(k, f.head), int(m.refcount[f.head])) == (1, 1)
    assert (page_mapcount(k, new), int(m.refcount[new])) == (1, 1)
    assert int(m.head[new + TAIL]) == new
    assert (f.read(f.parent, 0), f.read(f.child, 0)) == (7, 7)
    assert (f.read(f.parent, TAIL), f.read(f.child, TAIL)) == (555, 0)


def test_write_to_a_thp_mapped_once_reuses_it_whatever_its_tail_gup_references() -> None:
    """v4.4 mm/huge_memory.c:1174-1181: page_mapcount(head) == 1 (include/linux/mm.h:447: the
    head's _mapcount, the PMD mappings; a tail's gup references are on the tail's) -> the
    same THP, young, dirty, writable (VM_FAULT_WRITE)."""
    f = Forked(gup=True, child_exits=True)
    k, m = f.k, f.k.mem
    assert int(m.mapcount[f.head + TAIL]) == 0  # the gup reference
    assert not get_pmd(f.pt, f.thp) & _PAGE_RW
    f.parent_writes()
    assert _pfn(k, f.parent, f.thp) == f.head
    assert get_pmd(f.pt, f.thp) & _PAGE_RW
    assert int(m.flags[f.head]) & k.pf.mask("PG_head")


def test_reuse_swap_page_of_a_thp_head_ignores_tail_gup_references() -> None:
    """v4.4 mm/swapfile.c:925 reuse_swap_page counts page_mapcount(page) (:932) alone: for a
    THP head its PMD mappings; two gup references on a tail (its _mapcount) do not count."""
    k = boot("4.4")
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    head = fault_thp(k, mm, vma, PMD_SIZE)
    k.mem.mapcount[head + TAIL] += 2  # v4.4 mm/internal.h __get_page_tail_foll, twice
    assert reuse_swap_page(k, head) == (True, 1)


def test_pinned_thp_cow_leaves_the_pinned_page_to_the_child() -> None:
    """v4.4: fork shares the gup'd THP (mapcount 2), so the parent's write copies it
    (do_huge_pmd_wp_page :1174-1189); the page the device holds is now the child's alone
    and what the device writes there the parent never sees."""
    f = Forked(gup=True)
    k, m = f.k, f.k.mem
    assert f.gupped == f.head + TAIL
    f.parent_writes(0, 555)
    assert _pfn(k, f.parent, f.thp + TAIL * PAGE_SIZE) != f.gupped
    assert _pfn(k, f.child, f.thp + TAIL * PAGE_SIZE) == f.gupped
    # the gup reference stays where get_page_foll put it: head _count, tail _mapcount
    assert (int(m.refcount[f.head]), int(m.mapcount[f.gupped])) == (2, 0)
    m.data[f.gupped] = 999  # the device's DMA through its page
    assert (f.read(f.parent, TAIL), f.read(f.child, TAIL)) == (0, 999)


def test_cow_without_a_thp_copies_to_512_small_pages() -> None:
    """v4.4 mm/huge_memory.c:1193-1206: no THP (alloc_hugepage_vma NULL) ->
    do_huge_pmd_wp_page_fallback (:1042): 512 pages, each copied (:1088), mapped writable
    and dirty by a new PTE table (:1111-1126); the THP loses the parent's mapping (:1127)
    and, after the call, both its references (:1133, put_user_huge_page :1204)."""
    f = Forked(small=NR + 8)
    k, m = f.k, f.k.mem
    f.parent_writes()
    slot = f.thp >> PMD_SHIFT
    assert slot not in f.pt.pmd
    frames = [pte_pfn(int(p)) for p in f.pt.pte[slot]]
    assert len(set(frames)) == NR and not set(frames) & set(range(f.head, f.head + NR))
    assert all(int(e) & _PAGE_RW and int(e) & _PAGE_DIRTY for e in f.pt.pte[slot])
    assert all(int(m.refcount[p]) == 1 and page_mapcount(k, p) == 1 for p in frames)
    assert (page_mapcount(k, f.head), int(m.refcount[f.head])) == (1, 1)
    assert int(m.flags[f.head]) & k.pf.mask("PG_head")
    assert (f.read(f.parent, 0), f.read(f.parent, TAIL), f.read(f.child, TAIL)) == (7, 555, 0)


def test_cow_without_memory_splits_the_thp_and_copies_one_page() -> None:
    """v4.4 mm/huge_memory.c:1198-1202: the fallback's allocations fail (VM_FAULT_OOM, its
    pages put back :1072-1081) -> split_huge_page, VM_FAULT_FALLBACK; mm/memory.c:3433-3436
    goes on to the PTEs, where do_wp_page copies the one page written."""
    f = Forked(small=10)
    k, m = f.k, f.k.mem
    f.parent_writes()
    assert not int(m.flags[f.head]) & k.pf.mask("PG_head")
    for task in (f.parent, f.child):
        assert not get_pmd(k.mms[task.mm].pgtable, f.thp)
    assert _pfn(k, f.parent, f.thp + TAIL * PAGE_SIZE) not in range(f.head, f.head + NR)
    assert _pfn(k, f.parent, f.thp) == f.head and _pfn(k, f.child, f.thp) == f.head
    assert int(m.head[f.head + TAIL]) == NO_HEAD and page_mapcount(k, f.head + TAIL) == 1
    assert (f.read(f.parent, TAIL), f.read(f.child, TAIL)) == (555, 0)


def test_write_on_the_huge_zero_page_allocates_a_cleared_thp() -> None:
    """v4.4 mm/huge_memory.c:1166 the huge zero PMD goes to the allocation, clear_huge_page
    (:1225) and a new writable PMD (:1244-1250)."""
    k = boot("4.4", BootParams(normal_mb=8))
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


# --- explorer: mprotect of a THP that split_huge_page is splitting ------------------------

ADDR = PMD_SIZE


def _race_kernel() -> Kernel:
    """A 4.4 kernel with one anon THP mapped by a writable PMD at ADDR."""
    k = boot("4.4")
    mm = new_mm(k)
    fault_thp(k, mm, anon_vma(k, mm, ADDR, PMD_SIZE), ADDR)
    return k


def _mm(k: Kernel) -> Any:
    return next(iter(k.mms.values()))


def splitter(k: Kernel) -> Generator[Yield, None, None]:
    """split_huge_page with no mmap_sem, as v4.4 mm/swap_state.c:174 add_to_swap does."""
    head = pte_pfn(_mm(k).pgtable.pmd[ADDR >> PMD_SHIFT])
    yield from split_huge_page(k, head)


def mprotect_ro(k: Kernel) -> Generator[Yield, None, None]:
    """mprotect(PROT_READ) of the whole THP."""
    assert (yield from do_mprotect(k, _mm(k), ADDR, PMD_SIZE, PROT_READ)) == 0


def gup_fast_read(k: Kernel) -> Generator[Yield, None, None]:
    """x86 __get_user_pages_fast (v4.4 arch/x86/mm/gup.c:255) of subpage TAIL, for read."""
    yield from __get_user_pages_fast(k, _mm(k), ADDR + TAIL * PAGE_SIZE, 1, False, page_array(1))


def _outcome(k: Kernel) -> tuple[int, int, int]:
    """Subpage TAIL's _count and _mapcount, and the head's _count, once all is done."""
    m = k.mem
    head = pte_pfn(int(get_pte(_mm(k).pgtable, ADDR)))
    return int(m.refcount[head + TAIL]), int(m.mapcount[head + TAIL]), int(m.refcount[head])


def test_mprotect_of_a_thp_being_split_waits_for_the_split() -> None:
    """v4.4 mm/huge_memory.c:1578 change_huge_pmd -> __pmd_trans_huge_lock (:1646): a PMD
    marked splitting is waited out (wait_split_huge_page :1652) and mprotect goes on to the
    PTEs (mm/mprotect.c:179).  Rewriting it would drop _PAGE_SPLITTING (pmd_modify keeps
    _HPAGE_CHG_MASK, arch/x86/include/asm/pgtable_types.h:103), and gup-fast, which skips a
    splitting PMD (arch/x86/mm/gup.c:172-173), would count a tail reference beside
    __split_huge_page_refcount: the reference would end on the head, not the subpage."""
    seen: set[tuple[int, int, int]] = set()

    def record(k: Kernel) -> bool:
        seen.add(_outcome(k))
        return True

    program = kernel_program(
        "thp-4.4-mprotect-split",
        _race_kernel,
        (
            GenThread("split", splitter),
            GenThread("mprotect", mprotect_ro),
            GenThread("gup-fast", gup_fast_read),
        ),
        finals=(FinalCheck("record", record),),
        checked=True,
    )
    result = explore(program, Options(strategy="dfs"))
    assert result.complete and not result.errors and not result.violated, result.errors[:1]
    # gup-fast got subpage TAIL before the split (its reference then handed to the
    # subpage), or bailed out: never a reference left on the head
    assert seen == {(2, 0, 1), (1, 0, 1)}


# --- bit 0x80 of the gup flags -------------------------------------------------------------

# (profile, name, citation): the flag bit 0x80 is in that kernel
FLAG_ROWS = [
    ("4.4", "FOLL_SPLIT", "v4.4.178 include/linux/mm.h:2116"),
    ("5.7", "FOLL_SPLIT", "v5.7.14 include/linux/mm.h:2783"),
    ("6.1", "FOLL_NOFAULT", "v6.1.192 include/linux/mm.h:3094"),
]


@pytest.mark.parametrize(("profile", "name", "cite"), FLAG_ROWS, ids=[r[0] for r in FLAG_ROWS])
def test_bit_0x80_is_foll_split_before_v5_16_and_foll_nofault_after(
    profile: str, name: str, cite: str
) -> None:
    k = boot(profile)
    table = foll_flags(k.profile)
    assert table[name] == 0x80 == FOLL_SPLIT == FOLL_NOFAULT, cite
    other = "FOLL_NOFAULT" if name == "FOLL_SPLIT" else "FOLL_SPLIT"
    assert other not in table, cite
    expected = (name == "FOLL_SPLIT", name == "FOLL_NOFAULT")
    assert (foll_split(k, 0x80), foll_nofault(k, 0x80)) == expected, cite


# (profile, flags, what get_user_pages' flag check raises, citation)
REFUSED_ROWS: list[tuple[str, int, type[Exception], str]] = [
    ("5.7", FOLL_SPLIT, Unmodelled, "v5.7.14 mm/gup.c:632-641 follow_pmd_mask FOLL_SPLIT"),
    ("5.7", FOLL_FAST_ONLY, NotInKernel, "v5.7.14 include/linux/mm.h:2775-2794: no 0x80000"),
    ("4.4", 0x2000, NotInKernel, "v4.4.178 include/linux/mm.h:2108-2123: no FOLL_REMOTE"),
    (
        "6.5",
        FOLL_MIGRATION,
        NotInKernel,
        "v6.5 include/linux/mm_types.h:1257-1298, mm/internal.h:934-947: no FOLL_MIGRATION",
    ),
]


@pytest.mark.parametrize(("profile", "flags", "raised", "cite"), REFUSED_ROWS)
def test_flags_a_kernel_lacks_are_refused(
    profile: str, flags: int, raised: type[Exception], cite: str
) -> None:
    k = boot(profile)
    with pytest.raises(raised):
        require_gup_flags(k, flags)
    require_gup_flags(k, FOLL_WRITE)


# --- explorer: two threads of the parent write to the shared THP at once -------------------


def _forked_kernel() -> Kernel:
    """Forked().k: the parent (pid of the first task) and the child share the THP."""
    return Forked().k


def _parent(k: Kernel) -> Task:
    return k.tasks[min(k.tasks)]


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


def test_concurrent_cow_faults_install_one_thp() -> None:
    """v4.4 mm/huge_memory.c do_huge_pmd_wp_page rechecks the PMD each time it takes the lock
    (pmd_same :1169, :1237): a fault that finds another's new THP installed returns 0 (its
    new THP put, :1240) and the store is retried, into that THP.  Without the rechecks the
    second would reuse or copy again the THP the first one already left."""
    seen: set[tuple[Any, ...]] = set()

    def record(k: Kernel) -> bool:
        parent = _parent(k)
        child = next(t for t in k.tasks.values() if t is not parent)
        thp = _thp_addr(k)
        old = _pfn(k, child, thp)
        new = _pfn(k, parent, thp)
        m = k.mem
        heads = {p for p in range(m.nr_pages) if int(m.flags[p]) & k.pf.mask("PG_head")}
        seen.add(
            (
                new != old,
                heads == {old, new},
                page_mapcount(k, old),
                page_mapcount(k, new),
                (int(m.data[new]), int(m.data[new + TAIL]), int(m.data[old])),
            )
        )
        return True

    program = kernel_program(
        "thp-4.4-cow-cow",
        _forked_kernel,
        (GenThread("store-0", writer_0), GenThread("store-tail", writer_tail)),
        finals=(FinalCheck("record", record),),
        checked=True,
    )
    result = explore(program, Options(strategy="dfs"))
    assert result.complete and not result.errors and not result.violated, result.errors[:1]
    assert seen == {(True, True, 1, 1, (1, 2, 7))}
