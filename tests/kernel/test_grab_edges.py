"""Edges of the grab and release that ordinary pins never reach, each a kernel fact.

Rows answer bench/mutation.py survivors: gup-fast's FOLL_LONGTERM refusal of a page that
must move, a FOLL_GET of a PTE-mapped THP's subpage, the zero page's pin and unpin,
/proc/vmstat on a kernel without the pin counters, gup-fast's start and bound, and
check_vma_flags' table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import anon_vma, fault_anon, fault_thp, new_mm
from test_longterm_57 import _anon_outside_normal

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import errno
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_FORCE, FOLL_LONGTERM, FOLL_WRITE
from pinlab.kernel.mm.gup_follow import check_vma_flags
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.huge_memory import split_huge_pmd
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.page_alloc import pool_of
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, TASK_SIZE, get_pte, pte_pfn
from pinlab.kernel.mm.types import (
    VM_IO,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VmArea,
)
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.state import BootParams, boot


@pytest.mark.parametrize("fine_grained", [False, True])
def test_fast_longterm_pin_leaves_a_movable_page_to_the_slow_path(fine_grained: bool) -> None:
    """v6.1 mm/gup.c try_grab_folio :144-146: gup-fast refuses FOLL_LONGTERM of a page that
    is not longterm-pinnable (ZONE_MOVABLE), so the slow path migrates it before pinning."""
    k, mm, addr, old = _anon_outside_normal("6.1", 1)
    k.fine_grained = fine_grained
    pages = page_array(1)
    got = run(pin_user_pages_fast(k, mm, addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages))
    assert got == 1
    new = int(pages[0])
    assert new != old and pool_of(k.free_area, new) == "normal"
    assert pte_pfn(get_pte(mm.pgtable, addr)) == new


def test_get_of_a_pte_mapped_thp_subpage_counts_on_the_folio() -> None:
    """v6.1 mm/gup.c try_grab_page :228: FOLL_GET is folio_ref_inc on the folio, whichever
    subpage the PTE maps; a tail's own count stays 0 (v6.1 include/linux/mm.h)."""
    k = boot("6.1")
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    head = fault_thp(k, mm, vma, PMD_SIZE)
    run(split_huge_pmd(k, mm, vma, PMD_SIZE))
    before = int(k.mem.refcount[head])
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    got = run(get_user_pages(k, mm, PMD_SIZE + 5 * PAGE_SIZE, 1, 0, pages))
    mmap_read_unlock(k, mm)
    assert (got, int(pages[0])) == (1, head + 5)
    assert int(k.mem.refcount[head]) == before + 1
    assert int(k.mem.refcount[head + 5]) == 0


@pytest.mark.parametrize("fine_grained", [False, True])
def test_the_zero_page_is_neither_pinned_nor_unpinned(fine_grained: bool) -> None:
    """6.1.192 mm/gup.c (v6.5 c8070b787519 backported): try_grab_page / try_grab_folio take
    no pin on the zero page, and gup_put_folio drops none."""
    k = boot("6.1")
    k.fine_grained = fine_grained
    mm = new_mm(k)
    # two pages: too small a VMA for the huge zero page, which is a page like others here
    vma = anon_vma(k, mm, PMD_SIZE, 2 * PAGE_SIZE)
    before = int(k.mem.refcount[k.zero_pfn])
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    got = run(pin_user_pages(k, mm, PMD_SIZE, 1, 0, pages))
    mmap_read_unlock(k, mm)
    assert (got, int(pages[0])) == (1, k.zero_pfn)
    assert int(k.mem.refcount[k.zero_pfn]) == before
    run(unpin_user_pages(k, pages, 1))
    assert int(k.mem.refcount[k.zero_pfn]) == before
    assert fault_anon(k, mm, vma, PMD_SIZE + PAGE_SIZE) != k.zero_pfn


@pytest.mark.parametrize("fine_grained", [False, True])
def test_no_pin_counters_where_the_kernel_has_none(fine_grained: bool) -> None:
    """The 2020 series' v4 patch 07/12 (profile foll-pin-bias-v4) pins with the bias but has
    no NR_FOLL_PIN_ACQUIRED / _RELEASED yet (v5 10/12 added them); whole-range and page by
    page alike."""
    k = boot("foll-pin-bias-v4")
    k.fine_grained = fine_grained
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    page = fault_anon(k, mm, vma, PMD_SIZE)
    pages = page_array(1)
    assert run(pin_user_pages_fast(k, mm, PMD_SIZE, 1, FOLL_WRITE, pages)) == 1
    assert int(pages[0]) == page
    run(unpin_user_pages(k, pages, 1))
    assert NR_FOLL_PIN_ACQUIRED not in k.vmstat.counters
    assert NR_FOLL_PIN_RELEASED not in k.vmstat.counters


@pytest.mark.parametrize("fine_grained", [False, True])
def test_fast_gup_rounds_the_start_down_to_its_page(fine_grained: bool) -> None:
    """v6.1 mm/gup.c internal_get_user_pages_fast: start = untagged_addr(start) & PAGE_MASK,
    so an unaligned address takes the page it lies in, and only that one."""
    k = boot("6.1")
    k.fine_grained = fine_grained
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, 2 * PAGE_SIZE)
    first, second = (fault_anon(k, mm, vma, PMD_SIZE + i * PAGE_SIZE) for i in range(2))
    before = int(k.mem.refcount[second])
    pages = page_array(1)
    assert run(pin_user_pages_fast(k, mm, PMD_SIZE + 100, 1, 0, pages)) == 1
    assert int(pages[0]) == first
    assert int(k.mem.refcount[second]) == before


def test_fast_gup_of_the_last_user_page() -> None:
    """v6.1 include/asm-generic/access_ok.h __access_ok: size <= limit && addr <= limit -
    size, so a range that ends exactly at TASK_SIZE_MAX is allowed."""
    k = boot("6.1")
    mm = new_mm(k)
    top = TASK_SIZE - PAGE_SIZE
    vma = anon_vma(k, mm, top, PAGE_SIZE)
    page = fault_anon(k, mm, vma, top)
    pages = page_array(1)
    assert run(pin_user_pages_fast(k, mm, top, 1, 0, pages)) == 1
    assert int(pages[0]) == page


def test_5_7_pins_a_movable_page_in_place() -> None:
    """v5.7.14 mm/gup.c check_and_migrate_cma_pages migrates CMA pages only: ZONE_MOVABLE
    joined the long-term check in v5.13, so 5.7 pins a movable page where it is."""
    k = boot("5.7", BootParams(normal_mb=8, movable_mb=4))
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PAGE_SIZE)
    page = fault_anon(k, mm, vma, PMD_SIZE)
    assert pool_of(k.free_area, page) == "movable"
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    got = run(pin_user_pages(k, mm, PMD_SIZE, 1, FOLL_LONGTERM | FOLL_WRITE, pages))
    mmap_read_unlock(k, mm)
    assert (got, int(pages[0])) == (1, page)
    assert pte_pfn(get_pte(mm.pgtable, PMD_SIZE)) == page


# v6.1.192 mm/gup.c check_vma_flags (:1063): (vm_flags, gup_flags, result, line)
_R, _W, _S, _MR, _MW = VM_READ, VM_WRITE, VM_SHARED, VM_MAYREAD, VM_MAYWRITE
CHECK_VMA_ROWS = [
    (_R | _W | _MR | _MW | VM_IO, 0, -errno.EFAULT, ":1069 VM_IO"),
    (_R | _W | _MR | _MW | VM_PFNMAP, 0, -errno.EFAULT, ":1069 VM_PFNMAP"),
    (_R | _MR | _MW, FOLL_WRITE, -errno.EFAULT, ":1083 write to !VM_WRITE without FOLL_FORCE"),
    (_R | _MR | _MW, FOLL_WRITE | FOLL_FORCE, 0, ":1097 forced write to a COW mapping"),
    (_R | _S | _MR, FOLL_WRITE | FOLL_FORCE, -errno.EFAULT, ":1097 forced write, shared R/O"),
    (_MR | _MW, 0, -errno.EFAULT, ":1101 read of !VM_READ without FOLL_FORCE"),
    (_MR | _MW, FOLL_FORCE, 0, ":1100-1108 forced read with VM_MAYREAD"),
    (_MW, FOLL_FORCE, -errno.EFAULT, ":1107 forced read without VM_MAYREAD"),
]


@pytest.mark.parametrize(("vm_flags", "gup_flags", "want", "line"), CHECK_VMA_ROWS)
def test_check_vma_flags(vm_flags: int, gup_flags: int, want: int, line: str) -> None:
    k = boot("6.1")
    vma = VmArea(PMD_SIZE, 2 * PMD_SIZE, vm_flags, 0)
    assert check_vma_flags(k, vma, gup_flags) == want, line
