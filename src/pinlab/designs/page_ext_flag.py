"""`page-ext-flag`: dma-pinned-flag-2018's flag kept in page_ext instead of page->flags.

Christopher Lameter's suggestion and John Hubbard's answer in the July 2018 v2 thread
(../shared/seeds/004_e75abcc964d7500f.txt): a dma-pinned bit in struct page_ext
(mm/page_ext.c) could be read and written safely, but "every configuration" would then
need page extensions, so 64-bit users lose memory.  Same hooks, at the same places, as
pinlab.designs.dma_pinned_flag_2018; only where the bit lives, and so the cost, differs.

=============================  ======================================  ==============
kernel function                what the design does there               hook
=============================  ======================================  ==============
__get_user_pages,              set the page_ext bit on every page       gup_returned
get_user_pages_fast            returned, after the walk
try_to_unmap_one               return early when the bit is set         unmap_refused
free of the page               the bit goes with the allocation, as     (page_alloc)
                               the flag design's does (an assumption:
                               the thread does not say)
=============================  ======================================  ==============

Cost: v4.4.178 allocates sizeof(struct page_ext) for every page once page_ext is
needed (mm/page_ext.c:141, :222); with only its flags word (no CONFIG_PAGE_OWNER,
include/linux/page_ext.h:42-50) that is 8 bytes per 4 KiB page.  The bit is
PAGE_EXT_DMA_PINNED, after v4.4's three 64-bit page_ext flags (:25-33); the thread
names no bit, and which one has no observable effect.
"""

from __future__ import annotations

from pinlab.designs.base import Costs, Design
from pinlab.designs.drivers import GET
from pinlab.kernel.hooks import Hooks
from pinlab.kernel.state import Kernel

PAGE_EXT_DMA_PINNED = 3


def set_page_ext_dma_pinned(k: Kernel, page: int) -> None:
    """set_bit(PAGE_EXT_DMA_PINNED, &lookup_page_ext(page)->flags)."""
    k.page_ext[page] = k.page_ext.get(page, 0) | 1 << PAGE_EXT_DMA_PINNED


def page_ext_dma_pinned(k: Kernel, page: int) -> bool:
    """test_bit(PAGE_EXT_DMA_PINNED, &lookup_page_ext(page)->flags)."""
    return bool(k.page_ext.get(page, 0) >> PAGE_EXT_DMA_PINNED & 1)


DESIGN = Design(
    name="page-ext-flag",
    year=2018,
    source="seed 004: page_ext as the alternative to a struct page field (v2 thread)",
    idea="dma-pinned-flag-2018's flag, kept in page_ext: no struct page bit, "
    "page_ext on for every page",
    base="4.4",
    gup=GET,
    release="set_page_dirty_lock + put_page",
    costs=Costs(page_bits=0, pin_bytes=0, always_on_bytes_per_page=8),
    hooks=Hooks(gup_returned=set_page_ext_dma_pinned, unmap_refused=page_ext_dma_pinned),
    maybe_pinned=page_ext_dma_pinned,
)
