"""What a shrinking truncate leaves behind (mm/truncate.py truncate_setsize): the page
cache, the PTEs and the blocks on disk below and above the new EOF.

Each row is a 6.1 kernel fact, with version, file, function and line.  The file is an
ext4 file whose pages are written and fsynced (on disk), then mapped MAP_SHARED and
read through the mapping (cached and mapped) before it is truncated.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.fs import File, vfs_fsync, vfs_write
from pinlab.kernel.mm.mmap import MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SIZE, get_pte, pte_pfn, pte_present
from pinlab.kernel.mm.truncate import truncate_setsize
from pinlab.kernel.mm.types import AddressSpace, MmStruct, Task
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE
TOKENS = (11, 12, 13)  # what write(2) put in file pages 0, 1, 2

# v6.1 mm/truncate.c truncate_pagecache :764 holebegin = round_up(newsize, PAGE_SIZE), then
# :775 / :777 unmap_mapping_range(holebegin, 0 = to EOF, even_cows 1); mm/memory.c
# unmap_mapping_range :3638 hba = holebegin >> PAGE_SHIFT -> unmap_mapping_pages ->
# unmap_mapping_range_tree :3543 zba = max(first_index, vm_pgoff), :3546-3547 zap from
# vm_start + ((zba - vm_pgoff) << PAGE_SHIFT): PTEs of file pages below holebegin stay.
UNMAP = "v6.1 mm/truncate.c truncate_pagecache :764,:775; mm/memory.c :3638,:3543,:3546"
# v6.1 mm/truncate.c truncate_inode_pages_range :375 start = (lstart + PAGE_SIZE - 1) >>
# PAGE_SHIFT (whole folios from the first page boundary at or after lstart go); :402-405
# the folio holding lstart goes to truncate_inode_partial_folio, which (:250-265) zeroes
# its tail and keeps it in the cache (a small folio: return true without removing it).
PARTIAL = "v6.1 mm/truncate.c truncate_inode_pages_range :375,:402-405; :235-265"
# v6.1 fs/ext4/inode.c ext4_setattr :5695 truncate_pagecache, :5701 ext4_truncate ->
# fs/ext4/extents.c ext4_ext_truncate :4487 last_block = (i_size + blocksize - 1) >>
# blkbits, :4499 ext4_ext_remove_space(last_block, EXT_MAX_BLOCKS - 1): every block from
# the first one wholly past EOF is freed (the model: one 4096-byte block per page).
BLOCKS = "v6.1 fs/ext4/inode.c ext4_setattr :5695,:5701; fs/ext4/extents.c :4487,:4499"


class Row(NamedTuple):
    name: str
    pages: int  # file size in pages
    pgoff: int  # first file page the VMA maps (it maps the rest of the file)
    size: int  # the new size
    cached: tuple[int, ...]  # file pages still in the page cache, each the same folio
    mapped: tuple[int, ...]  # file pages still mapped, to the same folio
    blocks: tuple[int, ...]  # file blocks still on disk, with their data
    cite: str


ROWS = (
    Row("to-a-page-boundary", 2, 0, PAGE_SIZE, (0,), (0,), (0,), f"{UNMAP}; {BLOCKS}"),
    Row("vma-at-pgoff-1", 3, 1, 2 * PAGE_SIZE, (0, 1), (1,), (0, 1), f"{UNMAP}; {BLOCKS}"),
    Row("mid-page", 2, 0, 100, (0,), (0,), (0,), f"{PARTIAL}; {UNMAP}; {BLOCKS}"),
    Row(
        "mid-page-pgoff-1",
        3,
        1,
        PAGE_SIZE + 100,
        (0, 1),
        (1,),
        (0, 1),
        f"{PARTIAL}; {UNMAP}; {BLOCKS}",
    ),
    Row("to-zero", 2, 0, 0, (), (), (), f"{UNMAP}; {BLOCKS}"),
)


class Setup(NamedTuple):
    k: Kernel
    task: Task
    mm: MmStruct
    mapping: AddressSpace
    addr: int  # where file page `pgoff` is mapped
    file: File


def _setup(pages: int, pgoff: int) -> Setup:
    """The file written, fsynced, and every page of the VMA read through it."""
    k = boot("6.1")
    task = P.new_task(k)
    file = P.fget(k, P.fd_install(k, P.ext4_create(k, 0)))
    for index in range(pages):
        assert run(vfs_write(k, file, index * PAGE_SIZE, PAGE_SIZE, TOKENS[index])) == PAGE_SIZE
    assert run(vfs_fsync(k, file)) == 0
    length = (pages - pgoff) * PAGE_SIZE
    addr = run(P.sys_mmap(k, task, None, length, RW, MAP_SHARED, file, pgoff * PAGE_SIZE))
    assert addr > 0
    for index in range(pgoff, pages):
        assert run(user_access(k, task, addr + (index - pgoff) * PAGE_SIZE, False)) == TOKENS[index]
    mapping = k.mappings[file.mapping]
    return Setup(k, task, k.mms[task.mm], mapping, addr, file)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_truncate_keeps_what_is_below_eof_and_drops_the_rest(row: Row) -> None:
    s = _setup(row.pages, row.pgoff)
    folios = dict(s.mapping.i_pages)
    assert sorted(folios) == list(range(row.pages))
    assert sorted(s.mapping.store) == list(range(row.pages))

    assert run(truncate_setsize(s.k, s.mapping, row.size)) == 0

    assert s.mapping.i_size == row.size
    assert s.mapping.i_pages == {i: folios[i] for i in row.cached}, row.cite
    for index in range(row.pgoff, row.pages):
        pte = get_pte(s.mm.pgtable, s.addr + (index - row.pgoff) * PAGE_SIZE)
        if index in row.mapped:
            assert pte_present(pte) and pte_pfn(pte) == folios[index], (index, row.cite)
        else:
            assert not pte, (index, row.cite)
    assert s.mapping.store == {i: TOKENS[i] for i in row.blocks}, row.cite


def test_regrown_file_reads_zeros_where_blocks_were_freed() -> None:
    """Shrink a two-page file to one page, grow it back: page 1 is a hole and reads as
    zeros, not as the data its freed block held (BLOCKS; v6.1 fs/ext4/readpage.c
    ext4_mpage_readpages :308 zero_user_segment of a page with no mapped block)."""
    s = _setup(2, 0)
    assert run(truncate_setsize(s.k, s.mapping, PAGE_SIZE)) == 0
    assert run(truncate_setsize(s.k, s.mapping, 2 * PAGE_SIZE)) == 0
    assert run(user_access(s.k, s.task, s.addr, False)) == TOKENS[0]
    assert run(user_access(s.k, s.task, s.addr + PAGE_SIZE, False)) == 0
