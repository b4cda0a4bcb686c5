"""v4.4.178 reclaim of an ext4 data=journal page-cache page, one thread at a time.

Each row is a fact of v4.4.178 (file, function, line) run on the 4.4 model: buffer release
(fs/buffer.c, fs/jbd2/transaction.c, fs/ext4/inode.c), __remove_mapping's refcount freeze,
try_to_unmap and page_check_references over a MAP_SHARED mapping, and end_page_writeback's
rotate of a PG_reclaim page through the lru_rotate_pvecs pagevec (mm/filemap.c, mm/swap.c).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from pinlab.interleave import run_to_completion
from pinlab.kernel.fs.buffer import (
    B_COUNT_SHIFT,
    BH_ATTACHED,
    BH_DIRTY,
    attach_buffers,
    try_to_free_buffers,
)
from pinlab.kernel.fs.ext4_jdata import PG_CHECKED, ext4_journalled_releasepage
from pinlab.kernel.fs.jbd2 import (
    BH_JBD,
    jbd2_journal_add_journal_head,
    jbd2_journal_get_write_access,
    jbd2_journal_try_to_free_buffers,
)
from pinlab.kernel.mm.mmap import MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_writeback import folio_end_writeback, folio_start_writeback
from pinlab.kernel.mm.pgtable import (
    get_pte,
    pte_dirty,
    pte_mkdirty,
    pte_mkold,
    pte_young,
    set_pte_at,
)
from pinlab.kernel.mm.rmap_4_4 import SWAP_FAIL, SWAP_SUCCESS, try_to_unmap
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import VM_EXEC, AddressSpace, MmStruct, find_vma
from pinlab.kernel.mm.vmscan import (
    PAGEREF_ACTIVATE,
    PAGEREF_KEEP,
    PAGEREF_RECLAIM,
    PAGEREF_RECLAIM_CLEAN,
    __remove_mapping,
    isolate_lru_page,
    page_check_references,
)
from pinlab.kernel.process import ext4_create, fd_install, fget, new_task, sys_mmap, sys_munmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

PAGE = 4096
ADDR = 0x7F00_0000_0000


def _kernel(mapped: bool = True) -> tuple[Kernel, int]:
    """4.4, ext4 -o data=journal, a one-page file whose block is on disk, mapped MAP_SHARED and
    read-faulted (then unmapped unless `mapped`); its page drained onto the inactive LRU."""
    k = boot("4.4", BootParams(normal_mb=4))
    k.ext4_data = "journal"
    task = new_task(k)
    file = ext4_create(k, PAGE)
    k.mappings[file.mapping].store[0] = 7
    fid = fd_install(k, file)
    prot, flags = PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, prot, flags, fget(k, fid))) == ADDR
    run_to_completion(user_access(k, task, ADDR, False, 0))
    if not mapped:
        assert run_to_completion(sys_munmap(k, task, ADDR, PAGE)) == 0
    run_to_completion(lru_add_drain(k, 0))
    return k, _mapping(k).i_pages[0]


def _mapping(k: Kernel) -> AddressSpace:
    return next(iter(k.mappings.values()))


def _mm(k: Kernel) -> MmStruct:
    return next(iter(k.mms.values()))


def _has(k: Kernel, page: int, flag: str) -> bool:
    return bool(int(k.mem.flags[page]) & k.pf.mask(flag))


def _set(k: Kernel, page: int, *flags: str) -> None:
    for flag in flags:
        k.mem.flags[page] |= k.pf.mask(flag)


def _clear(k: Kernel, page: int, flag: str) -> None:
    k.mem.flags[page] &= ~k.pf.mask(flag) & 0xFFFF_FFFF_FFFF_FFFF


def _ref(k: Kernel, page: int) -> int:
    return int(k.mem.refcount[page])


# --- buffer release -------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    cite: str
    private: int  # page->private beyond BH_ATTACHED: BH_DIRTY, b_count, BH_JBD ...
    prepare: Callable[[Kernel, int], None]
    release: Callable[[Kernel, AddressSpace, int], bool]
    freed: bool


def _nothing(k: Kernel, page: int) -> None:
    pass


def _on_transaction(k: Kernel, page: int) -> None:
    jbd2_journal_get_write_access(k, page)  # filed BJ_Reserved on the running transaction


def _checkpointed(k: Kernel, page: int) -> None:
    jbd2_journal_add_journal_head(k, page)
    k.jbd2.checkpoint.append(page)


def _checked(k: Kernel, page: int) -> None:
    _set(k, page, PG_CHECKED)


RELEASE = [
    Release(
        "v4.4.178 fs/buffer.c:3214 try_to_free_buffers -> drop_buffers (:3186) ->"
        " __clear_page_buffers: no busy buffer, so PagePrivate and the buffers go",
        0,
        _nothing,
        try_to_free_buffers,
        True,
    ),
    Release(
        "v4.4.178 fs/buffer.c:3179-3183 buffer_busy: a BH_Dirty buffer keeps its page's buffers",
        BH_DIRTY,
        _nothing,
        try_to_free_buffers,
        False,
    ),
    Release(
        "v4.4.178 fs/buffer.c:3179-3183 buffer_busy: a held buffer (b_count) keeps them"
        " (BH_Lock is never held in the model; it is the same test)",
        1 << B_COUNT_SHIFT,
        _nothing,
        try_to_free_buffers,
        False,
    ),
    Release(
        "v4.4.178 fs/jbd2/transaction.c:1943 __journal_try_to_free_buffer leaves a buffer on a"
        " transaction, and :2022-2023 jbd2_journal_try_to_free_buffers then returns 0",
        0,
        _on_transaction,
        jbd2_journal_try_to_free_buffers,
        False,
    ),
    Release(
        "v4.4.178 fs/jbd2/transaction.c:1946-1951: a clean buffer only on a checkpoint list"
        " leaves it, its journal_head goes, and try_to_free_buffers (:2025) frees the buffers",
        0,
        _checkpointed,
        jbd2_journal_try_to_free_buffers,
        True,
    ),
    Release(
        "v4.4.178 fs/ext4/inode.c:3123-3124 ext4_releasepage: a PageChecked page (dirty"
        " journalled data) cannot be released",
        0,
        _checked,
        ext4_journalled_releasepage,
        False,
    ),
    Release(
        "v4.4.178 fs/ext4/inode.c:3125-3126 ext4_releasepage: not PageChecked, with a journal"
        " -> jbd2_journal_try_to_free_buffers, which frees clean buffers of no transaction",
        0,
        _nothing,
        ext4_journalled_releasepage,
        True,
    ),
]


@pytest.mark.parametrize("row", RELEASE, ids=lambda r: r.cite[:60])
def test_buffer_release(row: Release) -> None:
    k, page = _kernel(mapped=False)
    _set(k, page, "PG_locked")
    attach_buffers(k, page)
    k.mem.private[page] |= row.private
    row.prepare(k, page)
    before = _ref(k, page)
    freed = row.release(k, _mapping(k), page)
    assert freed == row.freed, row.cite
    if row.freed:
        assert not _has(k, page, "PG_private"), row.cite
        assert int(k.mem.private[page]) == 0, row.cite
        assert _ref(k, page) == before - 1, row.cite  # the buffers' page reference
        assert page not in k.jbd2.checkpoint, row.cite
    else:
        assert _has(k, page, "PG_private"), row.cite
        assert int(k.mem.private[page]) & BH_ATTACHED, row.cite
        assert _ref(k, page) == before, row.cite


def test_buffer_on_a_transaction_keeps_its_journal_head_and_checkpoint() -> None:
    """v4.4.178 fs/jbd2/transaction.c:1943-1944: a buffer on a transaction (here also on an
    older checkpoint list, as a committed buffer written to again is) is left as it is,
    checkpoint list included; :2022-2023: still buffer_jbd -> busy."""
    k, page = _kernel(mapped=False)
    _set(k, page, "PG_locked")
    attach_buffers(k, page)
    _checkpointed(k, page)
    _on_transaction(k, page)
    assert not jbd2_journal_try_to_free_buffers(k, _mapping(k), page)
    assert int(k.mem.private[page]) & BH_JBD and page in k.jbd2.t_buffers
    assert k.jbd2.checkpoint == [page]


# --- __remove_mapping -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra_ref", "dirty", "removed", "cite"),
    [
        (False, False, True, "v4.4.178 mm/vmscan.c:656 page_freeze_refs(page, 2) succeeds"),
        (True, False, False, "v4.4.178 mm/vmscan.c:656-657: a gup reference fails the freeze"),
        (False, True, False, "v4.4.178 mm/vmscan.c:659-662: PageDirty after the freeze unfreezes"),
    ],
)
def test_remove_mapping(extra_ref: bool, dirty: bool, removed: bool, cite: str) -> None:
    k, page = _kernel(mapped=False)
    assert run_to_completion(isolate_lru_page(k, page, False)), cite
    _set(k, page, "PG_locked")
    if dirty:
        _set(k, page, "PG_dirty")
    if extra_ref:
        k.mem.refcount[page] += 1  # get_user_pages' reference
    before = _ref(k, page)
    assert run_to_completion(__remove_mapping(k, page)) == removed, cite
    if removed:
        assert _ref(k, page) == 0 and 0 not in _mapping(k).i_pages, cite
    else:
        assert _ref(k, page) == before and _mapping(k).i_pages[0] == page, cite


# --- try_to_unmap ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("young", "dirty", "ret", "cite"),
    [
        (
            False,
            True,
            SWAP_SUCCESS,
            "v4.4.178 mm/rmap.c:1418-1431 try_to_unmap_one: the PTE is cleared and its dirty"
            " bit moves to the page (set_page_dirty); :1497-1498 mapcount and reference go",
        ),
        (
            False,
            False,
            SWAP_SUCCESS,
            "v4.4.178 mm/rmap.c:1418-1431: a clean PTE is cleared, the page stays clean",
        ),
        (
            True,
            False,
            SWAP_FAIL,
            "v4.4.178 mm/rmap.c:1381-1385: without TTU_IGNORE_ACCESS (kswapd's shrink_page_list"
            " passes TTU_UNMAP, mm/vmscan.c:1631) a young PTE is made old and fails the unmap",
        ),
    ],
)
def test_try_to_unmap(young: bool, dirty: bool, ret: int, cite: str) -> None:
    k, page = _kernel()
    mm = _mm(k)
    pte = pte_mkold(get_pte(mm.pgtable, ADDR))
    if young:
        pte = get_pte(mm.pgtable, ADDR)
        assert pte_young(pte), cite
    if dirty:
        pte = pte_mkdirty(pte)
    set_pte_at(mm.pgtable, ADDR, pte)
    _set(k, page, "PG_locked")
    mapcount, refs = int(k.mem.mapcount[page]), _ref(k, page)
    assert run_to_completion(try_to_unmap(k, page)) == ret, cite
    after = get_pte(mm.pgtable, ADDR)
    if ret == SWAP_SUCCESS:
        assert after == 0, cite
        assert int(k.mem.mapcount[page]) == mapcount - 1 and _ref(k, page) == refs - 1, cite
        assert _has(k, page, "PG_dirty") == dirty, cite
    else:
        assert after and not pte_young(after) and not pte_dirty(after), cite
        assert int(k.mem.mapcount[page]) == mapcount and _ref(k, page) == refs, cite
        assert not _has(k, page, "PG_dirty"), cite


# --- page_check_references ------------------------------------------------------------


@pytest.mark.parametrize(
    ("young", "referenced", "exec_vma", "want", "referenced_after", "cite"),
    [
        (
            True,
            False,
            False,
            PAGEREF_KEEP,
            True,
            "v4.4.178 mm/vmscan.c:836-851: one young PTE, PG_referenced clear: SetPageReferenced"
            " and keep it for another trip",
        ),
        (
            True,
            True,
            False,
            PAGEREF_ACTIVATE,
            True,
            "v4.4.178 mm/vmscan.c:840-841: a young PTE and PG_referenced: activate",
        ),
        (
            True,
            False,
            True,
            PAGEREF_ACTIVATE,
            True,
            "v4.4.178 mm/vmscan.c:846-847: a young PTE of a VM_EXEC mapping: activate",
        ),
        (
            False,
            True,
            False,
            PAGEREF_RECLAIM_CLEAN,
            False,
            "v4.4.178 mm/vmscan.c:854-855: no young PTE, PG_referenced (test-and-cleared at :812)"
            " on a file page: reclaim if clean",
        ),
        (
            False,
            False,
            False,
            PAGEREF_RECLAIM,
            False,
            "v4.4.178 mm/vmscan.c:857: neither: reclaim",
        ),
    ],
)
def test_page_check_references(
    young: bool, referenced: bool, exec_vma: bool, want: int, referenced_after: bool, cite: str
) -> None:
    k, page = _kernel()
    mm = _mm(k)
    pte = get_pte(mm.pgtable, ADDR)
    if not young:
        set_pte_at(mm.pgtable, ADDR, pte_mkold(pte))
    if referenced:
        _set(k, page, "PG_referenced")
    if exec_vma:
        vma = find_vma(mm, ADDR)
        assert vma is not None
        vma.vm_flags |= VM_EXEC
    _set(k, page, "PG_locked")
    assert run_to_completion(page_check_references(k, page)) == want, cite
    assert _has(k, page, "PG_referenced") == referenced_after, cite
    assert not pte_young(get_pte(mm.pgtable, ADDR)), cite  # page_referenced_one's test-and-clear


# --- end_page_writeback's rotate --------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "rotated", "cite"),
    [
        (
            "",
            True,
            "v4.4.178 mm/filemap.c:839-842 end_page_writeback: ClearPageReclaim, then"
            " mm/swap.c:476-490 rotate_reclaimable_page: page_cache_get into lru_rotate_pvecs",
        ),
        ("PG_locked", False, "v4.4.178 mm/swap.c:478: a locked page is not rotated"),
        ("PG_dirty", False, "v4.4.178 mm/swap.c:478: a dirty page is not rotated"),
        ("PG_active", False, "v4.4.178 mm/swap.c:478: an active page is not rotated"),
        ("!PG_lru", False, "v4.4.178 mm/swap.c:479: a page off the LRU is not rotated"),
    ],
)
def test_end_page_writeback_rotates(flag: str, rotated: bool, cite: str) -> None:
    k, page = _kernel(mapped=False)
    run_to_completion(folio_start_writeback(k, page))
    _set(k, page, "PG_reclaim")
    if flag == "!PG_lru":
        _clear(k, page, "PG_lru")
    elif flag:
        _set(k, page, flag)
    refs = _ref(k, page)
    run_to_completion(folio_end_writeback(k, page))
    assert not _has(k, page, "PG_reclaim") and not _has(k, page, "PG_writeback"), cite
    assert k.lru_rotate[0] == ([page] if rotated else []), cite
    assert _ref(k, page) == refs + rotated, cite
    # v4.4.178 mm/swap.c:814-821 lru_add_drain_cpu moves the pagevec: release_pages (:443)
    run_to_completion(lru_add_drain(k, 0))
    assert k.lru_rotate[0] == [] and _ref(k, page) == refs, cite
    assert not _has(k, page, "PG_reclaim"), cite


def test_end_page_writeback_without_pg_reclaim_does_not_rotate() -> None:
    """v4.4.178 mm/filemap.c:839: only a PageReclaim page is rotated."""
    k, page = _kernel(mapped=False)
    run_to_completion(folio_start_writeback(k, page))
    refs = _ref(k, page)
    run_to_completion(folio_end_writeback(k, page))
    assert k.lru_rotate[0] == [] and _ref(k, page) == refs


def test_a_full_rotate_pagevec_is_moved_at_once() -> None:
    """v4.4.178 mm/swap.c:486-487: pagevec_add leaving no room (PAGEVEC_SIZE 14,
    include/linux/pagevec.h:12) -> pagevec_move_tail, whose release_pages drops every ref."""
    k, page = _kernel(mapped=False)
    assert k.profile.pagevec_size == 14
    run_to_completion(folio_start_writeback(k, page))
    _set(k, page, "PG_reclaim")
    k.lru_rotate[0] = [page] * 13
    k.mem.refcount[page] += 13
    refs = _ref(k, page)
    run_to_completion(folio_end_writeback(k, page))
    assert k.lru_rotate[0] == [] and _ref(k, page) == refs - 13


def test_the_last_reference_in_the_rotate_pagevec_frees_the_page() -> None:
    """v4.4.178 mm/swap.c:932-952 release_pages: a page whose count the pagevec's put takes
    to 0 leaves the LRU and is freed."""
    k, page = _kernel(mapped=False)
    run_to_completion(folio_start_writeback(k, page))
    _set(k, page, "PG_reclaim")
    run_to_completion(folio_end_writeback(k, page))
    assert k.lru_rotate[0] == [page]
    k.mem.refcount[page] = 1  # every other holder let go (the model's stand-in for truncation)
    run_to_completion(lru_add_drain(k, 0))
    assert _ref(k, page) == 0 and not _has(k, page, "PG_lru")
