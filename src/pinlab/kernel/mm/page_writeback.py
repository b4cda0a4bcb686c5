"""Writeback of dirty page-cache folios: the data-integrity pass fsync(2) runs.

v6.1 mm/page-writeback.c (write_cache_pages, folio_clear_dirty_for_io,
__folio_start_writeback, do_writepages) and mm/filemap.c (folio_end_writeback,
filemap_fdatawrite_wbc, __filemap_fdatawait_range, file_write_and_wait_range).
The page-cache marks (PAGECACHE_TAG_DIRTY / TOWRITE / WRITEBACK) are not part of
the model's state: a lookup by DIRTY selects PG_dirty folios, by WRITEBACK
PG_writeback ones, and TOWRITE is the set of PG_dirty indices when the pass
starts (tag_pages_for_writeback), kept by the pass.  Under the folio lock every
caller rechecks the flag itself, so the marks only decide which folios are looked
at.  Per-zone write-pending, per-wb and memcg counters are not modelled; the
node counters NR_FILE_DIRTY, NR_WRITEBACK and NR_WRITTEN are.  Background and
cyclic (range_cyclic) writeback, and reclaim's pageout, are not modelled.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pinlab.interleave import Point, Unmodelled, Yield
from pinlab.kernel.bug import bug_on
from pinlab.kernel.errno import EIO
from pinlab.kernel.mm.filemap import (
    dirty_footprint,
    end_page_writeback_reclaim,
    folio_mapping,
    folio_mark_dirty,
    folio_put_footprint,
    folio_put_reads,
    folio_try_get,
)
from pinlab.kernel.mm.locking import folio_lock, folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import folio_nr_pages, folio_test_large
from pinlab.kernel.mm.page_alloc import order_keys, page_keys
from pinlab.kernel.mm.page_ref import folio_get, folio_put
from pinlab.kernel.mm.pgtable import (
    PAGE_SHIFT,
    get_pte,
    pte_dirty,
    pte_footprint,
    pte_mkclean,
    pte_pfn,
    pte_present,
    pte_write,
    pte_wrprotect,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import file_mapping_value, page_mapped
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.truncate import folio_wait_writeback
from pinlab.kernel.mm.types import VM_SHARED, AddressSpace
from pinlab.kernel.mm.vmstat import NR_FILE_DIRTY, mod_node_page_state

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

T = TypeVar("T")

# v6.1 include/linux/writeback.h enum writeback_sync_modes
WB_SYNC_NONE = 0
WB_SYNC_ALL = 1
# v6.1 include/vdso/limits.h LONG_MAX / LLONG_MAX (x86-64)
LONG_MAX = (1 << 63) - 1
LLONG_MAX = (1 << 63) - 1
# v6.1 mm/vmstat.c vmstat_text names of NR_WRITEBACK and NR_WRITTEN
NR_WRITEBACK = "nr_writeback"
NR_WRITTEN = "nr_written"
_ALL_BITS = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(slots=True)
class WritebackControl:
    """v6.1 include/linux/writeback.h struct writeback_control: the fields the pass reads."""

    sync_mode: int
    nr_to_write: int = LONG_MAX
    range_start: int = 0
    range_end: int = LLONG_MAX


Writepage = Callable[["Kernel", int, WritebackControl, T], Generator[Yield, None, int]]
# v6.1 include/linux/fs.h PAGECACHE_TAG_DIRTY / _WRITEBACK / _TOWRITE (XA_MARK_0 / 1 / 2)
PAGECACHE_TAG_DIRTY = 0
PAGECACHE_TAG_WRITEBACK = 1
PAGECACHE_TAG_TOWRITE = 2


def _flags(folio: int) -> frozenset[Hashable]:
    return frozenset({("page", folio, "flags")})


def _submit_reads(folio: int) -> frozenset[Hashable]:
    """What the step that clears PG_dirty for I/O, or sets PG_writeback, reads besides the
    flags, up to its next yield: folio_nr_pages, and ext4's mpage_submit_page and
    io_submit_add_bh (write_cache_pages' only ->writepage) the folio's mapping and index."""
    return order_keys(folio) | page_keys(folio, 1, ("mapping", "index"))


def _has(k: Kernel, folio: int, flag: str) -> bool:
    return bool(int(k.mem.flags[folio]) & k.pf.mask(flag))


def _tagged(
    k: Kernel,
    mapping: AddressSpace,
    tag: int,
    towrite: set[int] | None,
    index: int,
    folio: int,
) -> bool:
    """Whether the folio at `index` has mark `tag`: DIRTY the mapping's dirty_marks,
    WRITEBACK (set and cleared with it) PG_writeback, TOWRITE the pass's own set `towrite`."""
    if tag == PAGECACHE_TAG_TOWRITE:
        return towrite is not None and index in towrite
    if tag == PAGECACHE_TAG_DIRTY:
        return index in mapping.dirty_marks
    return _has(k, folio, "PG_writeback")


def _range(mapping: AddressSpace, start: int, end: int) -> dict[int, int]:
    return {i: f for i, f in mapping.i_pages.items() if start <= i <= end}


def _range_keys(mapping: AddressSpace, start: int, end: int) -> frozenset[Hashable]:
    """What a marked lookup reads: the cache, and (standing for the marks) the folios' flags."""
    keys: set[Hashable] = {("mapping", mapping.id)}
    keys |= {("page", f, "flags") for f in _range(mapping, start, end).values()}
    return frozenset(keys)


def tag_pages_for_writeback(
    k: Kernel, mapping: AddressSpace, start: int, end: int
) -> Generator[Yield, None, set[int]]:
    """v6.1 mm/page-writeback.c tag_pages_for_writeback: mark DIRTY folios in [start, end] TOWRITE.

    The marks are the pass's own set: the indices in range marked DIRTY now.
    """
    yield Point("tag_pages_for_writeback", reads=frozenset({("mapping", mapping.id)}))
    return {i for i in _range(mapping, start, end) if i in mapping.dirty_marks}


def pagevec_lookup_range_tag(
    k: Kernel,
    mapping: AddressSpace,
    index: int,
    end: int,
    tag: int,
    towrite: set[int] | None = None,
) -> Generator[Yield, None, tuple[list[int], int]]:
    """v6.1 mm/filemap.c find_get_pages_range_tag: up to PAGEVEC_SIZE tagged folios, +1 ref each.

    `_tagged` stands for the mark (TOWRITE: `towrite`).  A folio whose count is 0
    (being freed) is skipped, as folio_try_get_rcu fails.  Returns the folios
    and the index to resume from.
    """
    refs = frozenset(("page", f, "refcount") for f in _range(mapping, index, end).values())
    yield Point(
        "find_get_pages_range_tag", reads=_range_keys(mapping, index, end) | refs, writes=refs
    )
    found: list[int] = []
    for i, folio in sorted(_range(mapping, index, end).items()):
        if not _tagged(k, mapping, tag, towrite, i, folio) or not folio_try_get(k, folio):
            continue
        found.append(folio)
        if len(found) == k.profile.pagevec_size:
            return found, i + 1
    return found, end + 1


def pagevec_release(
    k: Kernel, batch: list[int], drained: bool, cpu: int
) -> Generator[Yield, None, bool]:
    """v6.1 mm/swap.c __pagevec_release: lru_add_drain once per pagevec, then drop the refs.

    Draining first lets the folios be freed now rather than from the batch
    later.  Returns the pagevec's percpu_pvec_drained.
    """
    if not batch:
        return drained
    if not drained:
        yield from lru_add_drain(k, cpu)
    for folio in batch:
        yield Point("release_pages", writes=folio_put_footprint(k, folio))
        folio_put(k, folio)
    return True


def folio_mkclean(k: Kernel, folio: int) -> Generator[Yield, None, int]:
    """v6.1 mm/rmap.c folio_mkclean: write-protect and clean each shared PTE mapping the folio.

    rmap_walk over the file's VMAs, skipping private ones (invalid_mkclean_vma);
    page_mkclean_one clears the dirty and write bits of a PTE that has either,
    under its PTE lock.  Returns how many PTEs it cleaned.
    """
    mapping = folio_mapping(k, folio)
    if not page_mapped(k, folio) or mapping is None:
        return 0
    if folio_test_large(k.mem, folio):
        raise Unmodelled("folio_mkclean", "a large page-cache folio")
    index = int(k.mem.index[folio])
    cleaned = 0
    for mm in list(k.mms.values()):
        for vma in list(mm.vmas):
            pages = (vma.vm_end - vma.vm_start) >> PAGE_SHIFT
            if vma.vm_file != mapping.id or not vma.vm_flags & VM_SHARED:
                continue
            if not vma.vm_pgoff <= index < vma.vm_pgoff + pages:
                continue
            addr = vma.vm_start + ((index - vma.vm_pgoff) << PAGE_SHIFT)
            yield from pte_lock(k, mm, addr)
            key = pte_footprint(mm.id, addr)
            # the last one goes on to folio_mark_dirty's folio_mapping
            reads = key | page_keys(folio, 1, ("head", "mapping"))
            yield Point("page_mkclean_one", reads=reads, writes=key)
            pte = get_pte(mm.pgtable, addr)
            if pte_present(pte) and pte_pfn(pte) == folio and (pte_dirty(pte) or pte_write(pte)):
                set_pte_at(mm.pgtable, addr, pte_mkclean(pte_wrprotect(pte)))
                cleaned += 1
            pte_unlock(k, mm, addr)
    return cleaned


def folio_clear_dirty_for_io(k: Kernel, folio: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/page-writeback.c folio_clear_dirty_for_io (folio locked): True if it was dirty.

    For a mapping that writes back, dirty PTEs are first moved into the folio
    (folio_mkclean, then folio_mark_dirty) so that a later store faults and
    redirties it; clearing PG_dirty then uncounts NR_FILE_DIRTY.
    """
    bug_on(not _has(k, folio, "PG_locked"), "folio_clear_dirty_for_io unlocked folio")
    mapping = folio_mapping(k, folio)
    if mapping is not None and mapping.fs.writes_back:
        if (yield from folio_mkclean(k, folio)):
            yield from folio_mark_dirty(k, folio)
        keys = dirty_footprint(mapping, folio)
        yield Point("folio_test_clear_dirty", reads=keys | _submit_reads(folio), writes=keys)
        if not _has(k, folio, "PG_dirty"):
            return False
        k.mem.flags[folio] &= ~k.pf.mask("PG_dirty") & _ALL_BITS
        mod_node_page_state(k.vmstat, NR_FILE_DIRTY, -folio_nr_pages(k.mem, folio))
        return True
    yield Point(
        "folio_test_clear_dirty", reads=_flags(folio) | _submit_reads(folio), writes=_flags(folio)
    )
    was = _has(k, folio, "PG_dirty")
    k.mem.flags[folio] &= ~k.pf.mask("PG_dirty") & _ALL_BITS
    return was


def folio_start_writeback(k: Kernel, folio: int) -> Generator[Yield, None, bool]:
    """v6.1 mm/page-writeback.c __folio_start_writeback(keep_write false): set PG_writeback.

    The first setter counts NR_WRITEBACK.  A page-cache folio (every file mapping uses
    writeback tags: AS_NO_WRITEBACK_TAGS is swap's) loses its DIRTY mark unless it was
    dirtied again (:3018).  Returns whether PG_writeback was already set.
    """
    mapping = folio_mapping(k, folio)
    keys = _flags(folio) | {("vmstat", NR_WRITEBACK)}
    if mapping is not None:
        keys |= {("mapping", mapping.id)}
    yield Point("folio_start_writeback", reads=keys | _submit_reads(folio), writes=keys)
    was = _has(k, folio, "PG_writeback")
    k.mem.flags[folio] |= k.pf.mask("PG_writeback")
    if mapping is not None and not _has(k, folio, "PG_dirty"):
        mapping.dirty_marks.discard(int(k.mem.index[folio]))
    if not was:
        mod_node_page_state(k.vmstat, NR_WRITEBACK, folio_nr_pages(k.mem, folio))
    return was


def folio_end_writeback(
    k: Kernel,
    folio: int,
    then_reads: frozenset[Hashable] = frozenset(),
    then_writes: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, None]:
    """v6.1 mm/filemap.c folio_end_writeback: clear PG_writeback and wake the waiters.

    A temporary reference keeps the folio alive across the wake-up (writeback
    holds none of its own); __folio_end_writeback moves the pages from
    NR_WRITEBACK to NR_WRITTEN.  A PG_reclaim folio is first rotated
    (filemap.end_page_writeback_reclaim).  ``then_reads``, ``then_writes``: what the caller
    reads and writes after this returns, before it yields again (footprint only).
    """
    if _has(k, folio, "PG_reclaim"):
        yield from end_page_writeback_reclaim(k, folio)
    keys = folio_put_footprint(k, folio) | {("vmstat", NR_WRITEBACK), ("vmstat", NR_WRITTEN)}
    yield Point(
        "folio_end_writeback",
        reads=keys | folio_put_reads(folio) | order_keys(folio) | then_reads,
        writes=keys | then_writes,
    )
    folio_get(k, folio)
    bug_on(not _has(k, folio, "PG_writeback"), "folio_end_writeback without writeback")
    k.mem.flags[folio] &= ~k.pf.mask("PG_writeback") & _ALL_BITS
    nr = folio_nr_pages(k.mem, folio)
    mod_node_page_state(k.vmstat, NR_WRITEBACK, -nr)
    mod_node_page_state(k.vmstat, NR_WRITTEN, nr)
    folio_put(k, folio)


def write_cache_pages(
    k: Kernel,
    mapping: AddressSpace,
    wbc: WritebackControl,
    writepage: Writepage[T],
    data: T,
    cpu: int = 0,
) -> Generator[Yield, None, int]:
    """v6.1 mm/page-writeback.c write_cache_pages: hand each dirty folio in range to writepage.

    Each looked-up folio is locked and skipped if truncated or already clean;
    under writeback it is waited on (WB_SYNC_ALL) or skipped; then
    folio_clear_dirty_for_io, and `writepage` must start writeback and unlock
    it.  WB_SYNC_ALL writes the folios dirty when the pass began (TOWRITE) and
    goes on past errors, returning the first; WB_SYNC_NONE stops at an error
    or when nr_to_write runs out.
    """
    index = wbc.range_start >> PAGE_SHIFT
    end = wbc.range_end >> PAGE_SHIFT
    towrite: set[int] | None = None
    if wbc.sync_mode == WB_SYNC_ALL:
        towrite = yield from tag_pages_for_writeback(k, mapping, index, end)
    tag = PAGECACHE_TAG_DIRTY if towrite is None else PAGECACHE_TAG_TOWRITE
    ret = 0
    done = False
    drained = False
    while not done and index <= end:
        batch, index = yield from pagevec_lookup_range_tag(k, mapping, index, end, tag, towrite)
        if not batch:
            break
        for folio in batch:
            yield from folio_lock(k, folio)
            yield Point("write_cache_pages recheck", reads=_flags(folio))
            if int(k.mem.mapping[folio]) != file_mapping_value(mapping.id) or not _has(
                k, folio, "PG_dirty"
            ):
                folio_unlock(k, folio)
                continue
            if _has(k, folio, "PG_writeback"):
                if wbc.sync_mode == WB_SYNC_NONE:
                    folio_unlock(k, folio)
                    continue
                yield from folio_wait_writeback(k, folio)
            bug_on(_has(k, folio, "PG_writeback"), "write_cache_pages PageWriteback")
            if not (yield from folio_clear_dirty_for_io(k, folio)):
                folio_unlock(k, folio)
                continue
            error = yield from writepage(k, folio, wbc, data)
            if error:
                if wbc.sync_mode != WB_SYNC_ALL:
                    ret, done = error, True
                    break
                ret = ret or error
            wbc.nr_to_write -= 1
            if wbc.nr_to_write <= 0 and wbc.sync_mode == WB_SYNC_NONE:
                done = True
                break
        drained = yield from pagevec_release(k, batch, drained, cpu)
    return ret


def do_writepages(
    k: Kernel, mapping: AddressSpace, wbc: WritebackControl, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/page-writeback.c do_writepages: ->writepages, unless nothing is left to write.

    The -ENOMEM retry under WB_SYNC_ALL cannot arise: no modelled writepages allocates.
    """
    from pinlab.kernel.fs import writepages

    if wbc.nr_to_write <= 0:
        return 0
    return (yield from writepages(k, mapping, wbc, cpu))


def filemap_fdatawrite_wbc(
    k: Kernel, mapping: AddressSpace, wbc: WritebackControl, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/filemap.c filemap_fdatawrite_wbc: only a mapping that writes back and has dirt."""
    yield Point("mapping_tagged", reads=frozenset({("mapping", mapping.id)}))
    if not mapping.fs.writes_back or not mapping.dirty_marks:
        return 0
    return (yield from do_writepages(k, mapping, wbc, cpu))


def __filemap_fdatawait_range(
    k: Kernel, mapping: AddressSpace, start: int, end: int, cpu: int
) -> Generator[Yield, None, None]:
    """v6.1 mm/filemap.c __filemap_fdatawait_range: wait on every folio under writeback in range.

    The lookup's pagevec drains the LRU-add batch on its first release, as
    write_cache_pages' does.
    """
    if end < start:
        return
    index, last = start >> PAGE_SHIFT, end >> PAGE_SHIFT
    drained = False
    while index <= last:
        batch, index = yield from pagevec_lookup_range_tag(
            k, mapping, index, last, PAGECACHE_TAG_WRITEBACK
        )
        if not batch:
            break
        for folio in batch:
            yield from folio_wait_writeback(k, folio)
            k.mem.flags[folio] &= ~k.pf.mask("PG_error") & _ALL_BITS
        drained = yield from pagevec_release(k, batch, drained, cpu)


def file_write_and_wait_range(
    k: Kernel, mapping: AddressSpace, start: int, end: int, cpu: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 mm/filemap.c file_write_and_wait_range: WB_SYNC_ALL writeback of [start, end], waited.

    Only a mapping with pages (mapping_needs_writeback) is written; write
    errors are not modelled (the virtio disk never fails), so wb_err stays 0.
    """
    if not mapping.i_pages:
        return 0
    wbc = WritebackControl(WB_SYNC_ALL, LONG_MAX, start, end)
    err = yield from filemap_fdatawrite_wbc(k, mapping, wbc, cpu)
    if err != -EIO:
        yield from __filemap_fdatawait_range(k, mapping, start, end, cpu)
    return err
