"""Edges of gup's slow path (v6.1 mm/gup.c follow_page_pte, mm/huge_memory.c
follow_trans_huge_pmd, mm/hugetlb.c follow_hugetlb_page, faultin_page), each a kernel fact.

Rows answer bench/mutation.py survivors: the unshare of a R/O pin of a page shared with a
fork child (PTE and THP), FOLL_FORCE writes that may only reuse an exclusive page, 5.7's
FOLL_COW that needs a dirty PTE, FOLL_TOUCH dirtying a clean writable PTE's page, a
present PTE without a struct page, an OOM fault and a hugetlb pin from inside a huge page.
The walks run page by page (``fine_grained``): the whole-range step stands in for them only
where it leaves the same state, and stops before each of these cases anyway.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import anon_vma, new_mm

from pinlab.interleave import Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import errno
from pinlab.kernel import process as P
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_COW, FOLL_FORCE, FOLL_GET, FOLL_WRITE
from pinlab.kernel.mm.gup_follow import follow_page_mask
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import (
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, alloc_pages
from pinlab.kernel.mm.pgtable import (
    PAGE_SIZE,
    PMD_SIZE,
    get_pmd,
    get_pte,
    pte_dirty,
    pte_pfn,
    pte_write,
)
from pinlab.kernel.mm.pincount import folio_pincount
from pinlab.kernel.mm.rmap import PageAnonExclusive
from pinlab.kernel.mm.types import VM_NOHUGEPAGE, MmStruct, Task, find_vma
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _bounded(gen: Generator[Yield, None, int], limit: int = 20_000) -> int:
    """Drive `gen` alone; a gup that never returns (the kernel would loop) fails the row."""
    try:
        for _ in range(limit):
            next(gen)
    except StopIteration as stop:
        result: int = stop.value
        return result
    pytest.fail(f"no result after {limit} steps: __get_user_pages loops")


def _gup(k: Kernel, mm: MmStruct, gen: Generator[Yield, None, int]) -> int:
    """A gup under mmap_read_lock, as its callers hold it."""
    run(mmap_read_lock(k, mm))
    try:
        return _bounded(gen)
    finally:
        mmap_read_unlock(k, mm)


def _task_with_anon(profile: str, thp: bool) -> tuple[Kernel, Task, int]:
    """A task with one written anon page (or a PMD-mapped THP) at the returned address."""
    k = boot(profile)
    k.fine_grained = True
    task = P.new_task(k)
    size = 2 * PMD_SIZE if thp else PAGE_SIZE
    raw = run(P.sys_mmap(k, task, None, size, RW, ANON))
    addr = (raw + PMD_SIZE - 1) & ~(PMD_SIZE - 1) if thp else raw
    advice = MADV_HUGEPAGE if thp else MADV_NOHUGEPAGE
    assert run(P.sys_madvise(k, task, raw, size, advice)) == 0
    run(user_access(k, task, addr, True, 7))
    return k, task, addr


def _frame(k: Kernel, task: Task, addr: int) -> int:
    return P.pagemap(k, task, addr).pfn


@pytest.mark.parametrize(
    ("thp", "cite"),
    [
        (False, "v6.1 mm/gup.c follow_page_pte: !pte_write && gup_must_unshare -> -EMLINK"),
        (True, "v6.1 mm/huge_memory.c follow_trans_huge_pmd: !pmd_write && gup_must_unshare"),
    ],
)
def test_readonly_pin_of_a_page_shared_with_a_child_unshares(thp: bool, cite: str) -> None:
    """After fork the parent's anon page is R/O and not PageAnonExclusive (v6.1 mm/memory.c
    copy_present_pte / mm/huge_memory.c copy_huge_pmd); a R/O FOLL_PIN must not pin it:
    follow_* answers -EMLINK, faultin_page (mm/gup.c) faults with FAULT_FLAG_UNSHARE, and
    the pin lands on an exclusive copy; the child keeps the shared page."""
    k, parent, addr = _task_with_anon("6.1", thp)
    assert run(P.sys_fork(k, parent)) > 0
    child = next(t for t in k.tasks.values() if t.pid != parent.pid)
    shared = _frame(k, child, addr)
    assert _frame(k, parent, addr) == shared
    mm = k.mms[parent.mm]
    pages = page_array(1)
    assert _gup(k, mm, pin_user_pages(k, mm, addr, 1, 0, pages)) == 1, cite
    pinned = int(pages[0])
    assert pinned != shared, cite
    assert _frame(k, parent, addr) == pinned, cite
    assert PageAnonExclusive(k, pinned), cite
    assert _frame(k, child, addr) == shared, cite
    assert folio_pincount(k, shared) == 0, cite


def test_force_write_breaks_cow_of_a_page_shared_with_a_child() -> None:
    """v6.1 mm/gup.c can_follow_write_pte: a FOLL_FORCE write through a R/O PTE of a private
    R/O VMA follows only an anon page that is PageAnonExclusive; a page still shared with a
    fork child is faulted (FAULT_FLAG_WRITE -> do_wp_page copies), as /proc/pid/mem writes
    must not reach the child's memory."""
    k, parent, addr = _task_with_anon("6.1", False)
    assert run(P.sys_fork(k, parent)) > 0
    child = next(t for t in k.tasks.values() if t.pid != parent.pid)
    assert run(P.sys_mprotect(k, parent, addr, PAGE_SIZE, PROT_READ)) == 0
    shared = _frame(k, child, addr)
    mm = k.mms[parent.mm]
    pages = page_array(1)
    flags = FOLL_WRITE | FOLL_FORCE
    assert _gup(k, mm, get_user_pages(k, mm, addr, 1, flags, pages)) == 1
    got = int(pages[0])
    assert got != shared
    assert _frame(k, parent, addr) == got and _frame(k, child, addr) == shared
    assert not pte_write(get_pte(mm.pgtable, addr))


def test_5_7_foll_cow_needs_a_dirty_pte() -> None:
    """v5.7.14 mm/gup.c can_follow_write_pte: pte_write || (FOLL_FORCE && FOLL_COW &&
    pte_dirty) -- the Dirty COW fix (v4.9 19be0eaffa3a): with FOLL_COW left from an earlier
    COW fault, a clean R/O PTE (a page-cache page read back in after MADV_DONTNEED) is not
    followed for writing: follow_page_pte returns NULL and the caller faults again."""
    k = boot("5.7")
    task = P.new_task(k)
    file = P.ext4_create(k, PAGE_SIZE)
    addr = run(P.sys_mmap(k, task, None, PAGE_SIZE, PROT_READ, MAP_PRIVATE, file))
    run(user_access(k, task, addr, False))
    mm = k.mms[task.mm]
    pte = get_pte(mm.pgtable, addr)
    assert not pte_write(pte) and not pte_dirty(pte)
    vma = find_vma(mm, addr)
    assert vma is not None
    flags = FOLL_WRITE | FOLL_FORCE | FOLL_COW | FOLL_GET
    run(mmap_read_lock(k, mm))
    page, _ = run(follow_page_mask(k, mm, vma, addr, flags))
    mmap_read_unlock(k, mm)
    assert page is None


def test_touch_dirties_the_page_behind_a_clean_writable_pte() -> None:
    """v6.1 mm/gup.c follow_page_pte: FOLL_TOUCH (get_user_pages adds it) with FOLL_WRITE
    through a PTE that is not dirty, of a page that is not PageDirty, set_page_dirty()s it;
    a tmpfs read fault maps a writable clean PTE (mm/shmem.c: no writenotify)."""
    k = boot("6.1")
    k.fine_grained = True
    task = P.new_task(k)
    file = P.tmpfs_create(k, PAGE_SIZE)
    addr = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, MAP_SHARED, file))
    run(user_access(k, task, addr, False))
    mm = k.mms[task.mm]
    pte = get_pte(mm.pgtable, addr)
    assert pte_write(pte) and not pte_dirty(pte)
    page = pte_pfn(pte)
    dirty = k.pf.mask("PG_dirty")
    assert not int(k.mem.flags[page]) & dirty
    pages = page_array(1)
    assert _gup(k, mm, get_user_pages(k, mm, addr, 1, FOLL_WRITE, pages)) == 1
    assert int(pages[0]) == page
    assert int(k.mem.flags[page]) & dirty


def test_walk_without_pages_skips_a_pte_without_struct_page() -> None:
    """v6.1 mm/gup.c follow_page_pte: vm_normal_page is NULL for a devmap PTE (fsdax), and
    without FOLL_GET/FOLL_PIN follow_pfn_pte answers -EEXIST; __get_user_pages with no
    pages[] goes on to the next page: the count covers it, and nothing touches its frame."""
    k = boot("6.1")
    k.fine_grained = True
    task = P.new_task(k)
    file = P.ext4_create(k, PAGE_SIZE, dax=True)
    addr = run(P.sys_mmap(k, task, None, PAGE_SIZE, PROT_READ, MAP_SHARED, file))
    run(user_access(k, task, addr, False))
    mm = k.mms[task.mm]
    frame = pte_pfn(get_pte(mm.pgtable, addr))
    before = (int(k.mem.flags[frame]), int(k.mem.refcount[frame]))
    assert _gup(k, mm, get_user_pages(k, mm, addr, 1, 0, None)) == 1
    assert (int(k.mem.flags[frame]), int(k.mem.refcount[frame])) == before


def test_fault_out_of_memory_is_enomem() -> None:
    """v6.1 include/linux/mm.h vm_fault_to_errno: VM_FAULT_OOM -> -ENOMEM (mm/gup.c
    faultin_page); a write fault (mm/memory.c do_anonymous_page) finding no free page."""
    k = boot("6.1", BootParams(normal_mb=4))
    k.fine_grained = True
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    vma.vm_flags |= VM_NOHUGEPAGE
    while alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0) is not None:
        pass
    pages = page_array(1)
    assert _gup(k, mm, pin_user_pages(k, mm, PMD_SIZE, 1, FOLL_WRITE, pages)) == -errno.ENOMEM
    assert not get_pte(mm.pgtable, PMD_SIZE)


def test_hugetlb_pin_from_inside_a_huge_page_stops_at_its_end() -> None:
    """v6.1 mm/hugetlb.c follow_hugetlb_page: refs = min3(pages_per_huge_page - pfn_offset,
    remainder, to vm_end): a pin of 512 pages from the second subpage of a 2 MiB page takes
    511 of it (one try_grab_folio of 511: +511 refs and pincount) and the next page's head."""
    k = boot("6.1", BootParams(normal_mb=16, hugepages_2m=2))
    k.fine_grained = True
    task = P.new_task(k)
    addr = run(P.sys_mmap(k, task, None, 2 * PMD_SIZE, RW, ANON | MAP_HUGETLB))
    assert addr & (PMD_SIZE - 1) == 0
    run(user_access(k, task, addr, True, 1))
    run(user_access(k, task, addr + PMD_SIZE, True, 2))
    mm = k.mms[task.mm]
    first, second = (pte_pfn(get_pmd(mm.pgtable, a)) for a in (addr, addr + PMD_SIZE))
    refs = (int(k.mem.refcount[first]), int(k.mem.refcount[second]))
    pages = page_array(512)
    got = _gup(k, mm, pin_user_pages(k, mm, addr + PAGE_SIZE, 512, 0, pages))
    assert got == 512
    assert pages.tolist() == [*range(first + 1, first + 512), second]
    assert int(k.mem.refcount[first]) == refs[0] + 511
    assert int(k.mem.refcount[second]) == refs[1] + 1
    assert (folio_pincount(k, first), folio_pincount(k, second)) == (511, 1)
