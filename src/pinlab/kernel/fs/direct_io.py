"""O_DIRECT reads and writes of an ext4 file: plain page references, no pins (v6.1).

v6.1 fs/ext4/file.c ext4_dio_read_iter / ext4_dio_write_iter -> fs/iomap/direct-io.c
iomap_dio_rw -> iomap_dio_bio_iter -> block/bio.c bio_iov_iter_get_pages -> lib/iov_iter.c
iov_iter_get_pages2 -> get_user_pages_fast (FOLL_GET; FOLL_WRITE for a read only).
Each bio goes through block/blk-core.c submit_bio, which counts its sectors as PGPGIN or
PGPGOUT. The device transfer is immediate and the file is fully mapped (written and
fsync()ed, no holes, no unwritten extents); extending writes and the buffered fallback
(ext4_should_use_dio false: data=journal, verity, encryption) are not modelled.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.errno import EFAULT, EINVAL
from pinlab.kernel.fs.splice import IovIter, iov_iter_get_pages2
from pinlab.kernel.mm.filemap import folio_mark_dirty
from pinlab.kernel.mm.gup_flags import FOLL_GET
from pinlab.kernel.mm.gup_put import gup_put_folio
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.memmap import compound_head, peek_head
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.types import AddressSpace, MmStruct

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 block/blk-settings.c blk_set_default_limits: logical_block_size 512, dma_alignment 511
# (virtio-blk without VIRTIO_BLK_F_BLK_SIZE keeps both, v6.1 drivers/block/virtio_blk.c)
LOGICAL_BLOCK_SIZE = 512
DMA_ALIGNMENT = 511
# v6.1 include/linux/bio.h BIO_MAX_VECS
BIO_MAX_VECS = 256
# v6.1 include/linux/blk_types.h SECTOR_SHIFT
SECTOR_SHIFT = 9
# v6.1 include/linux/vm_event_item.h enum vm_event_item: block I/O in 512-byte sectors
PGPGIN = "pgpgin"
PGPGOUT = "pgpgout"


@dataclass(slots=True)
class Bio:
    """v6.1 include/linux/blk_types.h struct bio: its (page, offset, len) vectors and position.

    `id` is its key in k.bios from `bio_alloc` to `bio_put` (0: a bio kept by its
    builder only, such as ext4 writeback's, which completes as it is submitted).
    """

    pos: int
    vecs: list[tuple[int, int, int]] = field(default_factory=list)
    id: int = 0

    @property
    def size(self) -> int:
        """bi_iter.bi_size."""
        return sum(length for _, _, length in self.vecs)


def bio_alloc(k: Kernel, pos: int) -> Bio:
    """v6.1 block/bio.c bio_alloc (fs/iomap/direct-io.c iomap_dio_alloc_bio): a new bio,
    kept in k.bios under a fresh id until its last bio_put."""
    from pinlab.kernel.state import new_id

    bio = Bio(pos, id=new_id(k))
    k.bios[bio.id] = bio
    return bio


def bio_put(k: Kernel, bio: Bio) -> None:
    """v6.1 block/bio.c bio_put: the only reference is dropped, the bio is freed (leaves k.bios)."""
    del k.bios[bio.id]


def bio_iov_iter_get_pages(
    k: Kernel, mm: MmStruct, bio: Bio, it: IovIter
) -> Generator[Yield, None, int]:
    """v6.1 block/bio.c bio_iov_iter_get_pages / __bio_iov_iter_get_pages: FOLL_GET refs per page.

    Whole logical blocks only: references on pages past the trimmed size are put back.
    """
    ret = 0
    while it.count and len(bio.vecs) < BIO_MAX_VECS:
        size, pages, offset = yield from iov_iter_get_pages2(
            k, mm, it, (1 << 32) - 1 - bio.size, BIO_MAX_VECS - len(bio.vecs)
        )
        if size <= 0:
            ret = size if size else -EFAULT
            break
        trim = size & (LOGICAL_BLOCK_SIZE - 1)
        size -= trim
        used = 0
        left = size
        while left > 0:
            length = min(PAGE_SIZE - offset, left)
            bio.vecs.append((pages[used], offset, length))
            left -= length
            offset = 0
            used += 1
        it.revert(trim)
        for page in pages[used:]:
            yield from gup_put_folio(k, compound_head(k.mem, page), 1, FOLL_GET)
        if not size:
            ret = -EFAULT
            break
    return 0 if bio.vecs else ret


def bio_set_pages_dirty(k: Kernel, bio: Bio) -> Generator[Yield, None, None]:
    """v6.1 block/bio.c bio_set_pages_dirty: mark each folio dirty under its lock."""
    pages = [page for page, _, _ in bio.vecs]
    for i, page in enumerate(pages):
        folio = compound_head(k.mem, page)
        yield from folio_lock(k, folio)
        if i + 1 < len(pages):  # then the next folio's compound_head
            yield from folio_mark_dirty(k, folio, _next_reads(k, pages[i + 1]))
        else:  # then the read's submit_bio, and bio_check_pages_dirty's first test
            data = frozenset(("page", p, "data") for p in pages)
            yield from folio_mark_dirty(k, folio, _next_reads(k, pages[0]), data)
        folio_unlock(k, folio)


def _next_reads(k: Kernel, page: int) -> frozenset[Hashable]:
    """What a bio's loop reads of its next page before it yields: compound_head, PageDirty."""
    return frozenset({("page", page, "head"), ("page", peek_head(k.mem, page), "flags")})


def bio_check_pages_dirty(k: Kernel, bio: Bio) -> Generator[Yield, None, None]:
    """v6.1 block/bio.c bio_check_pages_dirty -> bio_release_pages: one put per page.

    A folio cleaned meanwhile would be re-dirtied by bio_dirty_fn before the
    puts; the end state is the same, so both branches end here.
    """
    pages = [page for page, _, _ in bio.vecs]
    for i, page in enumerate(pages):
        folio = compound_head(k.mem, page)
        if not int(k.mem.flags[folio]) & k.pf.mask("PG_dirty"):
            yield from folio_lock(k, folio)
            yield from folio_mark_dirty(k, folio)
            folio_unlock(k, folio)
        after = _next_reads(k, pages[i + 1]) if i + 1 < len(pages) else frozenset()
        yield from gup_put_folio(k, folio, 1, FOLL_GET, then_reads=after)


def count_vm_events(k: Kernel, item: str, delta: int) -> None:
    """v6.1 include/linux/vmstat.h count_vm_events: the event counter (summed over CPUs on read)."""
    k.vmstat.counters[item] = k.vmstat.counters.get(item, 0) + delta


def submit_bio(k: Kernel, mapping: AddressSpace, bio: Bio, write: bool) -> None:
    """v6.1 block/blk-core.c submit_bio: count the bio's sectors, then the virtio-blk transfer.

    Each page gets (read) or gives (write) its file block's contents, one token per page.
    """
    count_vm_events(k, PGPGOUT if write else PGPGIN, bio.size >> SECTOR_SHIFT)
    pos = bio.pos
    for page, _, length in bio.vecs:
        if write:
            mapping.store[pos >> PAGE_SHIFT] = int(k.mem.data[page])
        else:
            k.mem.data[page] = mapping.store.get(pos >> PAGE_SHIFT, 0)
        pos += length


def bio_release_pages(k: Kernel, bio: Bio) -> Generator[Yield, None, None]:
    """v6.1 block/bio.c bio_release_pages(bio, false): one put per page, nothing dirtied."""
    for page, _, _ in bio.vecs:
        yield from gup_put_folio(k, compound_head(k.mem, page), 1, FOLL_GET)


def _misaligned(pos: int, buf: int, length: int) -> bool:
    """v6.1 fs/iomap/direct-io.c iomap_dio_bio_iter: block-aligned pos/length, and
    bdev_iter_is_aligned (the user buffer against the queue's dma_alignment)."""
    return bool((pos | length) & (LOGICAL_BLOCK_SIZE - 1) or (buf | length) & DMA_ALIGNMENT)


def ext4_dio_read(
    k: Kernel, mm: MmStruct, mapping: AddressSpace, pos: int, buf: int, length: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/file.c ext4_dio_read_iter -> iomap_dio_rw: bytes read (to i_size) or -errno."""
    i_size = mapping.i_size
    if pos >= i_size or not length:
        return 0
    if _misaligned(pos, buf, length):
        return -EINVAL
    done = yield from _iomap_dio_bio_iter(k, mm, mapping, pos, buf, length, write=False)
    # v6.1 fs/iomap/direct-io.c iomap_dio_complete: a read reports data up to i_size only
    return done if done < 0 else min(done, i_size - pos)


def ext4_dio_write(
    k: Kernel, mm: MmStruct, mapping: AddressSpace, pos: int, buf: int, length: int
) -> Generator[Yield, None, int]:
    """v6.1 fs/ext4/file.c ext4_dio_write_iter -> iomap_dio_rw: an overwrite; bytes or -errno.

    The source iterator takes pages without FOLL_WRITE (lib/iov_iter.c
    __iov_iter_get_pages_alloc); completion releases them undirtied
    (fs/iomap/direct-io.c iomap_dio_bio_end_io -> bio_release_pages(bio, false)).
    """
    if pos + length > mapping.i_size:
        raise ValueError("an extending O_DIRECT write is not modelled")
    if not length:
        return 0
    if _misaligned(pos, buf, length):
        return -EINVAL
    return (yield from _iomap_dio_bio_iter(k, mm, mapping, pos, buf, length, write=True))


def _iomap_dio_bio_iter(
    k: Kernel,
    mm: MmStruct,
    mapping: AddressSpace,
    pos: int,
    buf: int,
    length: int,
    write: bool,
) -> Generator[Yield, None, int]:
    """v6.1 fs/iomap/direct-io.c iomap_dio_bio_iter: one bio after another; bytes or -errno.

    A read's pages are dirtied around the I/O (IOMAP_DIO_DIRTY: the destination is
    user memory, user_backed_iter); a write's are released undirtied at completion.
    """
    it = IovIter([(buf, length)], dest=not write)
    done = 0
    while it.count:
        bio = bio_alloc(k, pos + done)
        ret = yield from bio_iov_iter_get_pages(k, mm, bio, it)
        if ret:
            bio_put(k, bio)
            if not done:
                return ret
            break
        size = bio.size
        # iomap_dio_bio_end_io: bio_release_pages and bio_put, or for a read that dirties
        # its pages bio_check_pages_dirty, which puts the bio itself
        if write:
            submit_bio(k, mapping, bio, write=True)
            yield from bio_release_pages(k, bio)
        else:
            yield from bio_set_pages_dirty(k, bio)
            submit_bio(k, mapping, bio, write=False)
            yield from bio_check_pages_dirty(k, bio)
        bio_put(k, bio)
        done += size
    return done
