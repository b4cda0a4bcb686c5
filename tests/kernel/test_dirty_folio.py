"""Dirtying through the filesystem: folio_mark_dirty / set_page_dirty -> the mapping's a_ops.

Rows are kernel facts: version, file, function, line.  The ext4 rows follow the 2018
report (../shared/seeds/002): a gup'd ext4 page whose buffers were dropped, then
set_page_dirty_lock.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.fs import vfs_fsync
from pinlab.kernel.mm.filemap import filemap_release_folio, set_page_dirty, set_page_dirty_lock
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import FOLL_GET
from pinlab.kernel.mm.locking import folio_lock, folio_unlock, mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SIZE
from pinlab.kernel.mm.vmstat import NR_FILE_DIRTY, global_node_page_state
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE


def _has(k: Kernel, page: int, name: str) -> bool:
    return bool(int(k.mem.flags[page]) & k.pf.mask(name))


def _ext4_page(profile: str) -> tuple[Kernel, int, P.File]:
    """A MAP_SHARED ext4 page stored to (buffers attached by ->page_mkwrite), then fsync'd."""
    k = boot(profile)
    t = P.new_task(k)
    f = P.ext4_create(k, PAGE_SIZE)
    addr = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_SHARED, f))
    run(user_access(k, t, addr, True, 7))
    page = k.mappings[f.mapping].i_pages[0]
    assert _has(k, page, "PG_private") and _has(k, page, "PG_dirty")
    return k, page, f


def _release(k: Kernel, page: int) -> bool:
    """Reclaim's step on a locked clean folio: filemap_release_folio (try_to_release_page)."""
    run(folio_lock(k, page))
    released = filemap_release_folio(k, page)
    folio_unlock(k, page)
    return released


class DroppedBuffers(NamedTuple):
    profile: str
    warning: str | None
    cite: str


DROPPED = (
    DroppedBuffers(
        "6.1",
        "fs/ext4/inode.c ext4_dirty_folio no buffers",
        "v6.1 mm/page-writeback.c folio_mark_dirty :2771 -> fs/ext4/inode.c ext4_dirty_folio "
        ":3664 WARN_ON_ONCE(!folio_buffers) -> fs/buffer.c block_dirty_folio :616",
    ),
    DroppedBuffers(
        "5.7",
        "fs/ext4/inode.c ext4_set_page_dirty no buffers",
        "v5.7.14 mm/page-writeback.c set_page_dirty :2572 -> fs/ext4/inode.c "
        "ext4_set_page_dirty :3602 WARN_ON_ONCE(!page_has_buffers) -> __set_page_dirty_buffers",
    ),
    DroppedBuffers(
        "4.4",
        None,
        "v4.4.178 ext4_da_aops (fs/ext4/inode.c:3427) has no ->set_page_dirty: "
        "mm/page-writeback.c set_page_dirty :2577 -> fs/buffer.c __set_page_dirty_buffers :673",
    ),
)


@pytest.mark.parametrize("row", DROPPED, ids=lambda r: r.profile)
def test_set_page_dirty_lock_of_a_gupd_ext4_page_whose_buffers_were_dropped(
    row: DroppedBuffers,
) -> None:
    """Written back (clean buffers), gup'd, its buffers dropped by reclaim's
    try_to_free_buffers (-1 ref, PG_private off), then set_page_dirty_lock: 6.1 and 5.7
    warn; every version dirties and accounts the folio and leaves it without buffers."""
    k, page, f = _ext4_page(row.profile)
    assert run(vfs_fsync(k, f)) == 0
    assert not _has(k, page, "PG_dirty")
    mm = next(iter(k.mms.values()))
    addr = mm.vmas[0].vm_start
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    assert run(get_user_pages(k, mm, addr, 1, FOLL_GET, pages)) == 1
    mmap_read_unlock(k, mm)
    refs = int(k.mem.refcount[page])
    assert _release(k, page), row.cite
    assert not _has(k, page, "PG_private") and int(k.mem.refcount[page]) == refs - 1
    assert k.warned == []
    assert run(set_page_dirty_lock(k, int(pages[0]))) is True
    assert _has(k, page, "PG_dirty") and not _has(k, page, "PG_private"), row.cite
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 1, row.cite
    assert k.warned == ([row.warning] if row.warning else []), row.cite


@pytest.mark.parametrize("profile", ["6.1", "5.7", "4.4"])
def test_dirty_buffers_are_busy_until_written_back(profile: str) -> None:
    """block_dirty_folio / __set_page_dirty_buffers dirty every buffer (v6.1 fs/buffer.c:627,
    v5.7.14 :664, v4.4.178 :688); a dirty buffer is busy (buffer_busy v6.1 :2782, v5.7.14
    :3203, v4.4.178 :3179), so try_to_free_buffers keeps them; writeback cleans them
    (v6.1 fs/ext4/page-io.c ext4_bio_write_page :501) and then they can go."""
    k, page, f = _ext4_page(profile)
    assert not _release(k, page)
    assert _has(k, page, "PG_private") and _has(k, page, "PG_dirty")
    run(vfs_fsync(k, f))
    run(folio_lock(k, page))
    run(set_page_dirty(k, page))  # redirty under the lock: buffers dirty again
    folio_unlock(k, page)
    assert not _release(k, page)
    run(vfs_fsync(k, f))
    assert _release(k, page) and not _has(k, page, "PG_private")


class Unlocked(NamedTuple):
    profile: str
    warning: str | None
    cite: str


UNLOCKED = (
    Unlocked(
        "6.1",
        "fs/ext4/inode.c ext4_dirty_folio !locked && !dirty",
        "v6.1 fs/ext4/inode.c ext4_dirty_folio :3663",
    ),
    Unlocked(
        "5.7",
        "fs/ext4/inode.c ext4_set_page_dirty !locked && !dirty",
        "v5.7.14 fs/ext4/inode.c ext4_set_page_dirty :3601",
    ),
    Unlocked("4.4", None, "v4.4.178 fs/buffer.c __set_page_dirty_buffers :673: no test"),
)


@pytest.mark.parametrize("row", UNLOCKED, ids=lambda r: r.profile)
def test_set_page_dirty_of_a_clean_unlocked_ext4_page(row: Unlocked) -> None:
    """set_page_dirty without the page lock on a clean ext4 page: 6.1 and 5.7 warn."""
    k, page, f = _ext4_page(row.profile)
    run(vfs_fsync(k, f))
    assert run(set_page_dirty(k, page)) is True
    assert _has(k, page, "PG_dirty"), row.cite
    assert k.warned == ([row.warning] if row.warning else []), row.cite


@pytest.mark.parametrize("profile", ["6.1", "5.7", "4.4"])
@pytest.mark.parametrize("create", ["tmpfs_create", "ramfs_create"])
def test_shmem_and_ramfs_dirty_without_accounting(profile: str, create: str) -> None:
    """v6.1 noop_dirty_folio (mm/page-writeback.c:2560; mm/shmem.c:3953, fs/libfs.c:653);
    v5.7.14 / v4.4.178 __set_page_dirty_no_writeback (mm/page-writeback.c :2398 / :2405;
    mm/shmem.c :3767 / :3122, fs/ramfs/inode.c :60 / :50): PG_dirty, True once, no counters,
    no buffers."""
    k = boot(profile)
    t = P.new_task(k)
    f = getattr(P, create)(k, PAGE_SIZE)
    addr = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_SHARED, f))
    run(user_access(k, t, addr, False))
    page = k.mappings[f.mapping].i_pages[0]
    k.mem.flags[page] &= ~k.pf.mask("PG_dirty") & 0xFFFF_FFFF_FFFF_FFFF
    assert run(set_page_dirty_lock(k, page)) is True
    assert run(set_page_dirty_lock(k, page)) is False
    assert _has(k, page, "PG_dirty") and not _has(k, page, "PG_private")
    assert int(k.mem.private[page]) == 0
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 0 and k.warned == []
