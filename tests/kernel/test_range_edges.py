"""Edges of gup's whole-range steps (gup_range.py) held to the kernel's page-by-page facts.

Rows answer bench/mutation.py survivors: the last unpin of a page already unmapped frees
it.  Each row runs both ways the model can (one whole-range step, and page by page as the
kernel does), and both must leave the kernel's state.
"""

from __future__ import annotations

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.page_alloc import pool_of
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, get_pmd
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _free(k: Kernel, pfn: int) -> bool:
    """Whether `pfn` lies in a block on the buddy allocator's free lists."""
    lists = k.free_area.blocks[pool_of(k.free_area, pfn)]
    for order, blocks in enumerate(lists):
        if any(block <= pfn < block + (1 << order) for block in blocks):
            return True
    return False


@pytest.mark.parametrize("fine", [False, True], ids=["range", "page-by-page"])
@pytest.mark.parametrize("thp", [False, True], ids=["small", "thp"])
def test_last_unpin_of_an_unmapped_page_frees_it(fine: bool, thp: bool) -> None:
    """v6.1 mm/gup.c unpin_user_pages -> gup_put_folio -> folio_put_refs: MADV_DONTNEED
    (mm/memory.c zap_pte_range / zap_huge_pmd) dropped the mapping's reference, so the pin's
    is the last one and its release frees the folio (mm/swap.c __folio_put: back to the buddy
    allocator, mm/page_alloc.c)."""
    k = boot("6.1")
    k.fine_grained = fine
    task = P.new_task(k)
    size = 2 * PMD_SIZE if thp else 4 * PAGE_SIZE
    raw = run(P.sys_mmap(k, task, None, size, RW, ANON))
    addr = (raw + PMD_SIZE - 1) & ~(PMD_SIZE - 1) if thp else raw
    advice = MADV_HUGEPAGE if thp else MADV_NOHUGEPAGE
    assert run(P.sys_madvise(k, task, raw, size, advice)) == 0
    nr = 512 if thp else 4
    for i in range(0, nr, 512 if thp else 1):
        run(user_access(k, task, addr + i * PAGE_SIZE, True, 1))
    run(lru_add_drain(k, task.cpu))
    mm = k.mms[task.mm]
    assert bool(get_pmd(mm.pgtable, addr)) == thp
    pages = page_array(nr)
    run(mmap_read_lock(k, mm))
    assert run(pin_user_pages(k, mm, addr, nr, 0, pages)) == nr
    mmap_read_unlock(k, mm)
    frames = pages.tolist()
    assert run(P.sys_madvise(k, task, addr, nr * PAGE_SIZE, MADV_DONTNEED)) == 0
    assert not any(_free(k, f) for f in frames)
    run(unpin_user_pages(k, pages, nr))
    assert all(_free(k, f) for f in frames)
    assert all(int(k.mem.refcount[f]) == 0 for f in frames)
