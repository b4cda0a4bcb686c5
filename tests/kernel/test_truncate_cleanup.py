"""truncate_cleanup_folio and its 5.7 / 4.4 forms: unmap a re-mapped folio, free its buffers
unless one is busy, cancel its dirty bit (mm/truncate.py, fs/buffer.py, fs/ext4.py).

Rows are kernel facts: version, file, function, line.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.fs.buffer import get_bh, put_bh
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import FOLL_GET
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SIZE, get_pte
from pinlab.kernel.mm.rmap import page_mapcount
from pinlab.kernel.mm.truncate import truncate_inode_pages_range
from pinlab.kernel.mm.vmstat import NR_FILE_DIRTY, global_node_page_state
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE


class Row(NamedTuple):
    profile: str
    busy: bool
    cite: str


UNMAP = {
    "6.1": "v6.1 mm/truncate.c truncate_cleanup_folio :174-175 folio_mapped -> "
    "mm/memory.c unmap_mapping_folio :3564; :177-178 folio_invalidate -> "
    "fs/ext4/inode.c ext4_invalidate_folio :3275 -> fs/buffer.c block_invalidate_folio :1483 "
    "-> mm/filemap.c filemap_release_folio :4015 -> ext4_release_folio :3310 -> "
    "fs/jbd2/transaction.c jbd2_journal_try_to_free_buffers :2174 -> try_to_free_buffers "
    ":2815 -> drop_buffers :2789 (buffer_busy :2782)",
    "5.7": "v5.7.14 mm/truncate.c truncate_cleanup_page :179-182 unmap_mapping_pages; "
    ":184-185 do_invalidatepage :152 -> ext4_invalidatepage :3246 -> block_invalidatepage "
    ":1503 -> try_to_release_page :3489 -> ext4_releasepage :3282 -> try_to_free_buffers "
    ":3236 -> drop_buffers :3210 (buffer_busy :3203)",
    "4.4": "v4.4.178 mm/truncate.c truncate_inode_page :151-155 unmap_mapping_range; "
    "truncate_complete_page :111-112 do_invalidatepage :81 -> ext4_da_invalidatepage :2920 -> "
    "ext4_invalidatepage :3080 -> block_invalidatepage :1533 -> try_to_release_page :2762 -> "
    "ext4_releasepage :3116 -> try_to_free_buffers :3214 -> drop_buffers :3186 "
    "(buffer_busy :3179)",
}
ROWS = tuple(Row(p, busy, cite) for p, cite in UNMAP.items() for busy in (False, True))


def _has(k: Kernel, page: int, name: str) -> bool:
    return bool(int(k.mem.flags[page]) & k.pf.mask(name))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.profile}-{'busy' if r.busy else 'idle'}")
def test_truncate_of_a_still_mapped_pinned_ext4_folio(row: Row) -> None:
    """A dirty ext4 page with buffers, mapped MAP_SHARED and gup'd, is truncated while a
    fault has mapped it again (truncate_inode_pages_range without the first
    unmap_mapping_range): it is unmapped, cleaned (NR_FILE_DIRTY back to 0) and dropped
    from the cache; its buffers go with their reference unless one is busy (b_count),
    when PG_private and that reference stay on the orphaned page."""
    k = boot(row.profile)
    t = P.new_task(k)
    f = P.ext4_create(k, PAGE_SIZE)
    addr = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_SHARED, f))
    run(user_access(k, t, addr, True, 5))
    mapping = k.mappings[f.mapping]
    page = mapping.i_pages[0]
    mm = k.mms[t.mm]
    pages = page_array(1)
    run(mmap_read_lock(k, mm))
    assert run(get_user_pages(k, mm, addr, 1, FOLL_GET, pages)) == 1
    mmap_read_unlock(k, mm)
    assert page_mapcount(k, page) == 1 and _has(k, page, "PG_private")
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 1
    if row.busy:
        get_bh(k, page)
    mapping.i_size = 0
    run(truncate_inode_pages_range(k, mapping, 0))
    assert get_pte(mm.pgtable, addr) == 0 and page_mapcount(k, page) == 0, row.cite
    assert mapping.i_pages == {} and int(k.mem.mapping[page]) == 0, row.cite
    assert not _has(k, page, "PG_dirty"), row.cite
    assert global_node_page_state(k.vmstat, NR_FILE_DIRTY) == 0, row.cite
    assert _has(k, page, "PG_private") == row.busy, row.cite
    # left: the gup reference, and the buffers' while they stay
    assert int(k.mem.refcount[page]) == 1 + row.busy, row.cite
    if row.busy:
        put_bh(k, page)
    assert k.warned == []
