"""`dma-pinned-flag-2018`: PG_dma_pinned on every page gup returns; try_to_unmap_one backs off.

John Hubbard, "[PATCH 2/2] mm: set PG_dma_pinned on get_user_pages*()", 16 Jun 2018
(../shared/seeds/002_78cd4012e2cb9fa3.txt quotes its cover text and rmap.c hunk;
message 20180617012510.20139-3-jhubbard@nvidia.com has the whole diff, against v4.18-rc1).
It applies on top of patch 1/2, which sends every return of __get_user_pages through
its out: label.  Applied here to the 4.4 kernel of the customer bug it fixes; in 4.4's
enum pageflags (x86-64, THP, no idle tracking) the new flag follows PG_compound_lock.

=============================  ======================================  ==============
kernel function                what the patch does there                hook
=============================  ======================================  ==============
enum pageflags                 PG_dma_pinned after PG_young/PG_idle,    extra_pageflags
                               64-bit only (include/linux/page-flags.h)
__get_user_pages               at out:, SetPageDmaPinned(pages[j]) for  gup_returned
                               every page returned, after the walk
get_user_pages_fast            the same loop after the lockless walk,   gup_returned
                               before the slow path for the rest
post_alloc_hook                ClearPageDmaPinned: never cleared while  (free clears
                               the page is allocated                    every flag)
try_to_unmap_one               if (PageDmaPinned(page)) return false;   unmap_refused
                               after the huge-PMD split block
=============================  ======================================  ==============

The flag is set with set_bit on the page itself (PAGEFLAG(DmaPinned, dma_pinned,
PF_ANY)), never cleared by put_page; 4.4 clears a freed page's flags, all but
PG_hwpoison (v4.4.178 mm/page_alloc.c:817-818, include/linux/page-flags.h:612-613),
which is the patch's "until the page is freed".
try_to_unmap_one's test is a plain read before the PTE lock; gup sets the flag only
after its walk has taken the reference and dropped the PTE lock.  In 4.4 a false from
try_to_unmap_one is SWAP_FAIL, which ends the rmap walk (v4.4.178 mm/rmap.c:1729-1730)
and sends shrink_page_list to activate_locked (mm/vmscan.c:1076-1077).
"""

from __future__ import annotations

from pinlab.designs.base import Costs, Design
from pinlab.designs.drivers import GET
from pinlab.kernel.hooks import Hooks
from pinlab.kernel.state import Kernel

FLAG = "PG_dma_pinned"


def set_page_dma_pinned(k: Kernel, page: int) -> None:
    """SetPageDmaPinned(page): set_bit on the page itself (PF_ANY)."""
    k.mem.flags[page] |= k.pf.mask(FLAG)


def page_dma_pinned(k: Kernel, page: int) -> bool:
    """PageDmaPinned(page), read once."""
    return bool(int(k.mem.flags[page]) & k.pf.mask(FLAG))


DESIGN = Design(
    name="dma-pinned-flag-2018",
    year=2018,
    source="seed 002: [PATCH 2/2] mm: set PG_dma_pinned on get_user_pages*()",
    idea="a page flag set on every page gup returns, kept until the page is freed; "
    "try_to_unmap_one returns early on it",
    base="4.4",
    gup=GET,
    release="set_page_dirty_lock + put_page",
    # one new bit of page->flags on 64-bit (the patch's page-flags.h hunk); nothing else
    costs=Costs(page_bits=1, pin_bytes=0, always_on_bytes_per_page=0),
    hooks=Hooks(gup_returned=set_page_dma_pinned, unmap_refused=page_dma_pinned),
    extra_pageflags=(FLAG,),
    maybe_pinned=page_dma_pinned,
)
