"""Truncation: unmap file pages from every mm, then drop them from the page cache.

v6.1 mm/truncate.c truncate_setsize / truncate_pagecache / truncate_inode_pages_range
and mm/memory.c unmap_mapping_range.  Partial pages at the new EOF are not
zeroed in the model (contents are one token per page).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.mm.filemap import filemap_remove_folio
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.types import AddressSpace
from pinlab.kernel.mm.zap import tlb_finish_mmu, unmap_page_range

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def unmap_mapping_range(
    k: Kernel, mapping: AddressSpace, holebegin: int, even_cows: bool
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c unmap_mapping_range(holelen 0 = to EOF): zap every VMA of the file.

    `even_cows` also zaps private COW copies (truncate does; invalidation does not).
    """
    first = holebegin >> PAGE_SHIFT
    gather: list[int] = []
    for mm in k.mms.values():
        for vma in mm.vmas:
            if vma.vm_file != mapping.id:
                continue
            vma_last = vma.vm_pgoff + ((vma.vm_end - vma.vm_start) >> PAGE_SHIFT)
            if vma_last <= first:
                continue
            start = vma.vm_start + (max(first - vma.vm_pgoff, 0) << PAGE_SHIFT)
            yield from unmap_page_range(k, mm, vma, start, vma.vm_end, even_cows, gather)
    yield from tlb_finish_mmu(k, gather)


def truncate_inode_pages_range(
    k: Kernel, mapping: AddressSpace, lstart: int
) -> Generator[Yield, None, None]:
    """v6.1 mm/truncate.c truncate_inode_pages_range: remove cached pages from `lstart` on."""
    first = (lstart + PAGE_SIZE - 1) >> PAGE_SHIFT
    for index in sorted(i for i in mapping.i_pages if i >= first):
        folio = mapping.i_pages[index]
        yield from folio_lock(k, folio)
        private = k.pf.mask("PG_private")
        if int(k.mem.flags[folio]) & private:
            # v6.1 fs/buffer.c try_to_free_buffers -> folio_detach_private: -1 ref
            k.mem.flags[folio] &= ~private & 0xFFFF_FFFF_FFFF_FFFF
            folio_put(k, folio)
        k.mem.flags[folio] &= ~k.pf.mask("PG_dirty") & 0xFFFF_FFFF_FFFF_FFFF
        folio_unlock(k, folio)
        filemap_remove_folio(k, mapping, folio)


def truncate_setsize(k: Kernel, mapping: AddressSpace, size: int) -> Generator[Yield, None, int]:
    """v6.1 mm/truncate.c truncate_setsize + truncate_pagecache (shrinking or growing)."""
    old = mapping.i_size
    mapping.i_size = size
    if size < old:
        holebegin = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        yield from unmap_mapping_range(k, mapping, holebegin, True)
        yield from truncate_inode_pages_range(k, mapping, size)
        yield from unmap_mapping_range(k, mapping, holebegin, True)
        for index in [i for i in mapping.store if i * PAGE_SIZE >= holebegin]:
            del mapping.store[index]
    return 0
