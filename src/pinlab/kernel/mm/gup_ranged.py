"""gup's slow path with whole-range steps beside it, not inside it (see gup_range.py).

When the model runs a gup with nothing else running (``k.fine_grained`` off, no design
hook), a run of pages the slow path would follow and grab without faulting is done as
one NumPy step; the page where that stops, or what is left of a hugetlb VMA, goes
through ``__get_user_pages`` itself.  The pages, references and return values are the
slow path's (tests/kernel/test_range_equivalence.py holds them equal).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.mm.gup_follow import __get_user_pages, check_vma_flags
from pinlab.kernel.mm.gup_page import Locked, Pages
from pinlab.kernel.mm.gup_range import range_grab, range_ok
from pinlab.kernel.mm.hugetlb import is_vm_hugetlb_page
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE, PMD_SHIFT, pmd_trans_huge
from pinlab.kernel.mm.types import MmStruct, find_vma

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def _fits(pages: Pages, at: int, nr_pages: int) -> bool:
    """Does the caller's array hold the whole request (else only the page path may overrun it)?"""
    return nr_pages <= int(pages.shape[0]) - at


def _range_worth(k: Kernel, mm: MmStruct, start: int) -> bool:
    """Cheap pre-test: is the first page present at all (else the slow path faults it)?"""
    slot = start >> PMD_SHIFT
    if pmd_trans_huge(mm.pgtable.pmd.get(slot, 0)):
        return True
    table = mm.pgtable.pte.get(slot)
    return table is not None and bool(int(table[(start >> PAGE_SHIFT) & 511]) & 1)


def get_user_pages_ranged(
    k: Kernel,
    mm: MmStruct,
    start: int,
    nr_pages: int,
    gup_flags: int,
    pages: Pages | None,
    locked: Locked | None,
) -> Generator[Yield, None, int]:
    """``__get_user_pages``, with whole-range steps wherever they may stand in for it."""
    if pages is None or not range_ok(k, gup_flags):
        return (yield from __get_user_pages(k, mm, start, nr_pages, gup_flags, pages, locked))
    done = 0
    while nr_pages:
        vma = find_vma(mm, start)
        hugetlb = vma is not None and is_vm_hugetlb_page(vma)
        if (
            vma is not None
            and not check_vma_flags(k, vma, gup_flags)
            and _fits(pages, done, nr_pages)
            and (hugetlb or _range_worth(k, mm, start))
        ):
            yield "gup:range"
            n = range_grab(k, mm, vma, start, nr_pages, gup_flags, pages[done:])
            done, start, nr_pages = done + n, start + n * PAGE_SIZE, nr_pages - n
            if not nr_pages:
                break
            if (n and not hugetlb) or start >= vma.vm_end:
                continue
        # where the whole-range step stopped: one page, or the rest of a hugetlb VMA
        want = min(nr_pages, (vma.vm_end - start) >> PAGE_SHIFT) if hugetlb and vma else 1
        got = yield from __get_user_pages(k, mm, start, want, gup_flags, pages[done:], locked)
        if got <= 0:
            return done if done else got
        done, start, nr_pages = done + got, start + got * PAGE_SIZE, nr_pages - got
        if got < want or (locked is not None and not locked.held):
            break
    return done
