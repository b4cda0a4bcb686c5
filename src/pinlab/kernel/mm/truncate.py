"""Truncation: unmap file pages from every mm, then drop them from the page cache.

v6.1 mm/truncate.c truncate_setsize / truncate_pagecache / truncate_inode_pages_range
and mm/memory.c unmap_mapping_range.  Partial pages at the new EOF are not
zeroed in the model (contents are one token per page).  hugetlbfs truncates
in huge pages (v6.1 fs/hugetlbfs/inode.c hugetlb_vmtruncate / remove_inode_hugepages).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Await, Point, Yield
from pinlab.kernel.errno import EINVAL
from pinlab.kernel.mm.filemap import (
    filemap_get_folio,
    filemap_remove_folio,
    folio_put_footprint,
    remove_footprint,
)
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.memmap import folio_nr_pages
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.rmap import file_mapping_value
from pinlab.kernel.mm.types import AddressSpace
from pinlab.kernel.mm.vmstat import NR_FILE_DIRTY, mod_node_page_state
from pinlab.kernel.mm.zap import zap_page_range_single

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

_ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF


def unmap_mapping_range(
    k: Kernel, mapping: AddressSpace, holebegin: int, even_cows: bool, cpu: int = 0
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c unmap_mapping_range(holelen 0 = to EOF): zap every VMA of the file.

    Each VMA goes through zap_page_range_single (unmap_mapping_range_vma),
    which drains the LRU batch and flushes its own mmu_gather.  `even_cows`
    also zaps private COW copies (truncate does; invalidation does not).
    """
    first = holebegin >> PAGE_SHIFT
    for mm in list(k.mms.values()):
        for vma in list(mm.vmas):
            if vma.vm_file != mapping.id:
                continue
            vma_last = vma.vm_pgoff + ((vma.vm_end - vma.vm_start) >> PAGE_SHIFT)
            if vma_last <= first:
                continue
            start = vma.vm_start + (max(first - vma.vm_pgoff, 0) << PAGE_SHIFT)
            yield from zap_page_range_single(k, mm, vma, start, vma.vm_end, even_cows, cpu)


def folio_cancel_dirty(k: Kernel, mapping: AddressSpace, folio: int) -> None:
    """v6.1 mm/page-writeback.c __folio_cancel_dirty: clear PG_dirty, uncount NR_FILE_DIRTY."""
    dirty = k.pf.mask("PG_dirty")
    was = int(k.mem.flags[folio]) & dirty
    k.mem.flags[folio] &= ~dirty & _ALL_BITS
    if was and mapping.fs.writes_back:
        mod_node_page_state(k.vmstat, NR_FILE_DIRTY, -folio_nr_pages(k.mem, folio))


def truncate_cleanup_folio(k: Kernel, mapping: AddressSpace, folio: int) -> None:
    """v6.1 mm/truncate.c truncate_cleanup_folio (the folio is already unmapped).

    Buffers are invalidated (block_invalidate_folio -> try_to_free_buffers ->
    folio_detach_private: -1 ref), the dirty bit cancelled and
    PG_mappedtodisk cleared.
    """
    private = k.pf.mask("PG_private")
    if int(k.mem.flags[folio]) & private:
        k.mem.flags[folio] &= ~private & _ALL_BITS
        folio_put(k, folio)
    folio_cancel_dirty(k, mapping, folio)
    if k.profile.has_flag("PG_mappedtodisk"):
        k.mem.flags[folio] &= ~k.pf.mask("PG_mappedtodisk") & _ALL_BITS


def folio_wait_writeback(k: Kernel, folio: int) -> Generator[Yield, None, None]:
    """v6.1 mm/page-writeback.c folio_wait_writeback: sleep until PG_writeback is clear."""
    bit = k.pf.mask("PG_writeback")
    yield Await(
        "folio_wait_writeback",
        lambda: not int(k.mem.flags[folio]) & bit,
        reads=frozenset({("page", folio, "flags")}),
    )


def truncate_inode_pages_range(
    k: Kernel, mapping: AddressSpace, lstart: int
) -> Generator[Yield, None, None]:
    """v6.1 mm/truncate.c truncate_inode_pages_range: remove cached folios from `lstart` on.

    Each folio is looked up with a reference (find_lock_entries /
    find_get_entries), locked, waited on for writeback, cleaned up and
    removed from the cache while still locked; then unlocked and the lookup
    reference dropped.  hugetlbfs indices count huge pages.
    """
    unit = PAGE_SIZE << mapping.huge_order
    first = (lstart + unit - 1) // unit
    for index in sorted(i for i in mapping.i_pages if i >= first):
        folio = yield from filemap_get_folio(k, mapping, index)
        if folio is None:
            continue
        yield from folio_lock(k, folio)
        if int(k.mem.mapping[folio]) == file_mapping_value(mapping.id):
            yield from folio_wait_writeback(k, folio)
            yield Point("truncate_inode_folio", writes=remove_footprint(k, mapping, folio))
            truncate_cleanup_folio(k, mapping, folio)
            filemap_remove_folio(k, mapping, folio)
        folio_unlock(k, folio)
        yield Point("folio_batch_release", writes=folio_put_footprint(k, folio))
        folio_put(k, folio)


def truncate_setsize(
    k: Kernel, mapping: AddressSpace, size: int, cpu: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 mm/truncate.c truncate_setsize + truncate_pagecache (shrinking or growing).

    hugetlbfs refuses a size that is not a multiple of its page size
    (v6.1 fs/hugetlbfs/inode.c hugetlbfs_setattr: -EINVAL).
    """
    unit = PAGE_SIZE << mapping.huge_order
    if mapping.fs.is_hugetlbfs and size % unit:
        return -EINVAL
    old = mapping.i_size
    mapping.i_size = size
    if size < old:
        holebegin = (size + unit - 1) // unit * unit
        yield from unmap_mapping_range(k, mapping, holebegin, True, cpu)
        yield from truncate_inode_pages_range(k, mapping, size)
        yield from unmap_mapping_range(k, mapping, holebegin, True, cpu)
        for index in [i for i in mapping.store if i * PAGE_SIZE >= holebegin]:
            del mapping.store[index]
    return 0
