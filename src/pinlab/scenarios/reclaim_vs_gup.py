"""`reclaim-vs-gup`: kswapd's pass over an ext4 page while a driver takes it with gup (4.4).

The page: an ext4 (data=journal, as in seed 002) MAP_SHARED page, its block on disk, that
the user has written (writable and dirty PTE, buffers attached), whose PTE an earlier
reclaim scan made old (page_referenced run once in the setup), so that the next scan
unmaps it unless something stops it.  The driver: get_user_pages(FOLL_WRITE) under
mmap_sem, the device's write into the page the user maps, put_page.  kswapd: one pass.

The hazard, `unmapped-while-pinned`: when the device writes, the page gup returned is no
longer in the user's page table (try_to_unmap took it out while the reference was held,
the first step of seed 002's bug).  Nothing here names which design keeps it mapped.
"""

from __future__ import annotations

from collections.abc import Generator

from pinlab.explore import GenThread
from pinlab.interleave import Point, Violation, Yield, run_to_completion
from pinlab.kernel.mm.filemap import folio_put_footprint
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import get_pte, pte_pfn, pte_present
from pinlab.kernel.mm.rmap_4_4 import page_referenced
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.vmscan import kswapd_reclaim_page
from pinlab.kernel.state import Kernel
from pinlab.scenarios.ext4_bug_2018 import ADDR, DMA, file_page, mapped_ext4_page, user_mm

HAZARD = "unmapped-while-pinned"
BOUNDS = "kswapd passes 1"


def make_kernel(design: str) -> Kernel:
    """The setup above, on the design's kernel."""
    k = mapped_ext4_page(design, True)
    run_to_completion(lru_add_drain(k, 0))
    run_to_completion(page_referenced(k, file_page(k), False))
    return k


def mapped_at_addr(k: Kernel, page: int) -> bool:
    """Whether the user's PTE at ADDR maps `page`."""
    pte = get_pte(user_mm(k).pgtable, ADDR)
    return pte_present(pte) and pte_pfn(pte) == page


def driver(k: Kernel) -> Generator[Yield, None, None]:
    """get_user_pages, the device's write into the page the user maps, put_page."""
    mm, pages = user_mm(k), page_array(1)
    yield from mmap_read_lock(k, mm)
    got = yield from get_user_pages(k, mm, ADDR, 1, FOLL_WRITE, pages)
    mmap_read_unlock(k, mm)
    if got != 1:
        return
    page = int(pages[0])
    yield Point("device DMA", reads=None, writes=None)
    if not mapped_at_addr(k, page):
        raise Violation(HAZARD, f"pfn {page} left the user's page table")
    k.mem.data[page] = DMA
    yield Point("put_page", writes=folio_put_footprint(k, page))
    folio_put(k, page)


def kswapd(k: Kernel) -> Generator[Yield, None, None]:
    """One pass of kswapd over the page."""
    yield from kswapd_reclaim_page(k, file_page(k), 1, 0)


THREADS = (GenThread("driver", driver), GenThread("kswapd", kswapd))


def threads(design: str) -> tuple[GenThread, ...]:
    """The threads, the same under every design (its hooks do the rest)."""
    return THREADS
