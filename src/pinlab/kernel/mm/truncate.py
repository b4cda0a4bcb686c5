"""Truncation: unmap file pages from every mm, then drop them from the page cache.

v6.1 mm/truncate.c truncate_setsize / truncate_pagecache / truncate_inode_pages_range
and mm/memory.c unmap_mapping_range.  Partial pages at the new EOF are not
zeroed in the model (contents are one token per page).  hugetlbfs truncates
in huge pages (v6.1 fs/hugetlbfs/inode.c hugetlb_vmtruncate / remove_inode_hugepages).
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Await, Point, Yield
from pinlab.kernel.errno import EINVAL
from pinlab.kernel.fs import a_ops_invalidate_folio
from pinlab.kernel.fs.buffer import buffer_keys
from pinlab.kernel.mm.filemap import (
    filemap_get_folio,
    filemap_remove_folio,
    folio_cancel_dirty,
    folio_put_footprint,
    remove_footprint,
)
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.page_alloc import order_keys
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.rmap import file_mapping_value, folio_mapcount
from pinlab.kernel.mm.types import AddressSpace
from pinlab.kernel.mm.vmstat import NR_FILE_DIRTY
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


def unmap_mapping_pages(
    k: Kernel, mapping: AddressSpace, start: int, nr: int, even_cows: bool, cpu: int = 0
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c unmap_mapping_pages: zap file pages [start, start + nr) in every VMA.

    Without `even_cows` a private VMA's anon COW copies stay (zap_skip_check_mapping).
    """
    for mm in list(k.mms.values()):
        for vma in list(mm.vmas):
            if vma.vm_file != mapping.id:
                continue
            vma_last = vma.vm_pgoff + ((vma.vm_end - vma.vm_start) >> PAGE_SHIFT)
            first, last = max(start, vma.vm_pgoff), min(start + nr, vma_last)
            if first >= last:
                continue
            begin = vma.vm_start + ((first - vma.vm_pgoff) << PAGE_SHIFT)
            stop = vma.vm_start + ((last - vma.vm_pgoff) << PAGE_SHIFT)
            yield from zap_page_range_single(k, mm, vma, begin, stop, even_cows, cpu)


def cleanup_footprint(
    k: Kernel, mapping: AddressSpace, folio: int
) -> tuple[frozenset[Hashable], frozenset[Hashable]]:
    """What cleaning up and removing a locked folio reads and writes: its mapcount (for
    folio_mapped), its buffers (page->private), the dirty counter, the cache slot, its
    mapping and count."""
    writes = remove_footprint(k, mapping, folio) | buffer_keys(folio) | {("vmstat", NR_FILE_DIRTY)}
    return writes | order_keys(folio) | {("page", folio, "mapcount")}, writes


def truncate_cleanup_folio(
    k: Kernel, mapping: AddressSpace, folio: int, cpu: int = 0
) -> Generator[Yield, None, None]:
    """Unmap a truncated, locked folio a fault mapped again; drop its buffers; clean it.

    v6.1 mm/truncate.c truncate_cleanup_folio (:172): folio_mapped -> unmap_mapping_folio
    (mm/memory.c:3564, the folio's own indices, COW copies kept); folio_needs_release ->
    folio_invalidate(0, folio_size) (:153, a_ops->invalidate_folio: ext4's frees the
    buffers unless one is busy, fs/buffer.py); folio_cancel_dirty; PG_mappedtodisk off.
    v5.7.14 truncate_cleanup_page (:177): unmap_mapping_pages(index, 1 or HPAGE_PMD_NR,
    false), page_has_private -> do_invalidatepage (:152), cancel_dirty_page, the same;
    v4.4.178 truncate_inode_page (:149) -> unmap_mapping_range(index, PAGE_CACHE_SIZE,
    even_cows 0), then truncate_complete_page (:106): do_invalidatepage (:81),
    cancel_dirty_page, ClearPageMappedToDisk and delete_from_page_cache, the same steps.
    The caller's Point declared cleanup_footprint.  A hugetlbfs folio (v6.1
    fs/hugetlbfs/inode.c remove_inode_single_folio) is not unmapped here: truncate_setsize
    zaps its VMAs first and hugetlb faults are not raced with truncation in the model.
    """
    if not mapping.fs.is_hugetlbfs and folio_mapcount(k, folio) > 0:
        yield from unmap_mapping_pages(k, mapping, int(k.mem.index[folio]), 1, False, cpu)
        reads, writes = cleanup_footprint(k, mapping, folio)
        yield Point("truncate_cleanup_folio", reads=reads, writes=writes)
    if int(k.mem.flags[folio]) & (k.pf.mask("PG_private") | k.pf.mask("PG_private_2")):
        a_ops_invalidate_folio(k, mapping, folio, 0, PAGE_SIZE)
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
    k: Kernel, mapping: AddressSpace, lstart: int, cpu: int = 0
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
            reads, writes = cleanup_footprint(k, mapping, folio)
            yield Point("truncate_inode_folio", reads=reads, writes=writes)
            yield from truncate_cleanup_folio(k, mapping, folio, cpu)
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
        yield from truncate_inode_pages_range(k, mapping, size, cpu)
        yield from unmap_mapping_range(k, mapping, holebegin, True, cpu)
        for index in [i for i in mapping.store if i * PAGE_SIZE >= holebegin]:
            del mapping.store[index]
    return 0
