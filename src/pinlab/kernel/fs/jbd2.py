"""The ext4 journal (v4.4.178 fs/jbd2/) as far as journalled data pages need it.

One journal, of the one modelled ext4 filesystem.  A page's one buffer (4 KiB blocks on
4 KiB pages, mkfs.ext4's default) carries in page->private (fs/buffer.py) whether it
has a journal_head (BH_JBD, holding one b_count: jbd2_journal_add_journal_head's get_bh,
v4.4.178 fs/jbd2/journal.c:2454) and BH_JBDDirty.  The journal keeps which buffers are
filed on the running transaction, on which list (BJ_Reserved, BJ_Metadata), and which
are on a checkpoint list (jh->b_cp_transaction).

A commit is one step taken when no handle is open (kjournald2 in
jbd2_journal_commit_transaction waits in T_LOCKED for t_updates to reach 0, :452, and
the model lets no handle start before the commit ends): so no buffer is ever owned by a
committing transaction, and do_get_write_access's frozen-copy and shadow branches
(v4.4.178 fs/jbd2/transaction.c:925-990) never arise.  The log's own block I/O and
the checkpoint write-out by jbd2 (jbd2_log_do_checkpoint) are not modelled.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pinlab.interleave import Await, Point, Yield
from pinlab.kernel.bug import bug_on
from pinlab.kernel.fs.buffer import (
    B_COUNT_SHIFT,
    BH_DIRTY,
    BH_JBD,
    BH_JBDDIRTY,
    buffer_keys,
    folio_buffers,
    mark_buffer_dirty_locked,
    try_to_free_buffers,
)
from pinlab.kernel.mm.types import AddressSpace

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v4.4.178 include/linux/jbd2.h:1460-1465 the transaction lists of a journal_head
BJ_METADATA = "BJ_Metadata"
BJ_RESERVED = "BJ_Reserved"
JOURNAL_KEY = ("journal",)


@dataclass(slots=True)
class Journal:
    """The journal: its running transaction's tid, open handles, filed and checkpointed buffers.

    ``t_buffers`` maps a folio whose buffer is filed on the running transaction to its
    list (jh->b_jlist); ``checkpoint`` lists folios whose buffer has b_cp_transaction.
    """

    t_tid: int = 1
    t_updates: int = 0
    t_buffers: dict[int, str] = field(default_factory=dict)
    checkpoint: list[int] = field(default_factory=list)


def journal_keys(folio: int) -> frozenset[Hashable]:
    """What a journal step on a folio's buffer touches: the journal and the buffer."""
    return frozenset({JOURNAL_KEY}) | buffer_keys(folio)


def _private(k: Kernel, folio: int) -> int:
    return int(k.mem.private[folio])


def buffer_jbd(k: Kernel, folio: int) -> bool:
    """v4.4.178 include/linux/jbd2.h buffer_jbd: the buffer has a journal_head."""
    return bool(_private(k, folio) & BH_JBD)


def jbd2_journal_add_journal_head(k: Kernel, folio: int) -> None:
    """v4.4.178 fs/jbd2/journal.c:2454 jbd2_journal_add_journal_head: BH_JBD and get_bh."""
    if not buffer_jbd(k, folio):
        k.mem.private[folio] = _private(k, folio) | BH_JBD
        k.mem.private[folio] += 1 << B_COUNT_SHIFT


def __journal_remove_journal_head(k: Kernel, folio: int) -> None:
    """v4.4.178 fs/jbd2/journal.c:2508 __journal_remove_journal_head (b_jcount reached 0,
    no transaction, no checkpoint): clear BH_JBD and __brelse the buffer."""
    k.mem.private[folio] = _private(k, folio) & ~BH_JBD
    k.mem.private[folio] -= 1 << B_COUNT_SHIFT


def _put_journal_head(k: Kernel, folio: int) -> None:
    """v4.4.178 fs/jbd2/journal.c:2538 jbd2_journal_put_journal_head: free an unused jh."""
    j = k.jbd2
    if folio not in j.t_buffers and folio not in j.checkpoint:
        __journal_remove_journal_head(k, folio)


def jbd2_journal_start(k: Kernel, folio: int) -> Generator[Yield, None, None]:
    """v4.4.178 fs/jbd2/transaction.c:426 jbd2__journal_start -> start_this_handle: join the
    running transaction (t_updates + 1); a commit is one step, so never waits here."""
    yield Point(
        f"jbd2_journal_start {folio}",
        reads=frozenset({JOURNAL_KEY}),
        writes=frozenset({JOURNAL_KEY}),
    )
    k.jbd2.t_updates += 1


def jbd2_journal_stop(k: Kernel) -> Generator[Yield, None, None]:
    """v4.4.178 fs/jbd2/transaction.c:1633 jbd2_journal_stop: t_updates - 1 (wakes a commit)."""
    yield Point(
        "jbd2_journal_stop", reads=frozenset({JOURNAL_KEY}), writes=frozenset({JOURNAL_KEY})
    )
    k.jbd2.t_updates -= 1


def jbd2_journal_get_write_access(k: Kernel, folio: int) -> None:
    """v4.4.178 fs/jbd2/transaction.c:1076 -> do_get_write_access (:812), one atomic step.

    A jh is attached; a dirty buffer is cleaned and made BH_JBDDirty (:870-880); a buffer
    of no transaction is filed BJ_Reserved on the running one (:906-922); one already on
    it is left (:893).  The caller holds a handle and the page lock.
    """
    bug_on(not folio_buffers(k, folio), "do_get_write_access without a buffer")
    jbd2_journal_add_journal_head(k, folio)
    private = _private(k, folio)
    if private & BH_DIRTY:
        k.mem.private[folio] = (private & ~BH_DIRTY) | BH_JBDDIRTY
    k.jbd2.t_buffers.setdefault(folio, BJ_RESERVED)


def jbd2_journal_dirty_metadata(k: Kernel, folio: int) -> None:
    """v4.4.178 fs/jbd2/transaction.c:1331 jbd2_journal_dirty_metadata: BH_JBDDirty, filed
    BJ_Metadata on the running transaction (:1426, :1467).  The buffer had write access."""
    bug_on(folio not in k.jbd2.t_buffers, "jbd2_journal_dirty_metadata without write access")
    k.mem.private[folio] = _private(k, folio) | BH_JBDDIRTY
    k.jbd2.t_buffers[folio] = BJ_METADATA


def __jbd2_journal_unfile_buffer(k: Kernel, folio: int) -> None:
    """v4.4.178 fs/jbd2/transaction.c:1907 via __jbd2_journal_temp_unlink_buffer (:1858):
    off the transaction; a BH_JBDDirty buffer is exposed to the VM by mark_buffer_dirty
    (:1896-1897); the jh goes if nothing else holds it."""
    del k.jbd2.t_buffers[folio]
    private = _private(k, folio)
    if private & BH_JBDDIRTY:
        k.mem.private[folio] = private & ~BH_JBDDIRTY
        mark_buffer_dirty_locked(k, folio)
    _put_journal_head(k, folio)


def jbd2_journal_commit_transaction(k: Kernel) -> Generator[Yield, None, None]:
    """kjournald2's commit of the running transaction (v4.4.178 fs/jbd2/commit.c:368).

    Waits until no handle is open (T_LOCKED, :438-465); BJ_Reserved buffers are refiled
    (:487-503: unfiled, so a BH_JBDDirty one is marked dirty); BJ_Metadata buffers go to
    the log, then each BH_JBDDirty one leaves an older checkpoint list and joins this
    transaction's (:973-1021) and is unfiled (:1038), which marks it dirty for the VM.
    """
    j = k.jbd2
    # which buffers the commit refiles is only known when it runs: unknown footprint
    yield Await("jbd2 T_LOCKED", lambda: not k.jbd2.t_updates)
    for folio, jlist in sorted(j.t_buffers.items()):
        if jlist == BJ_METADATA and _private(k, folio) & BH_JBDDIRTY:
            if folio in j.checkpoint:
                j.checkpoint.remove(folio)
            j.checkpoint.append(folio)
        __jbd2_journal_unfile_buffer(k, folio)
    j.t_tid += 1


def __journal_try_to_free_buffer(k: Kernel, folio: int) -> None:
    """v4.4.178 fs/jbd2/transaction.c:1934: a clean buffer of no transaction leaves its
    checkpoint list (__jbd2_journal_remove_checkpoint, checkpoint.c:551) and its jh goes."""
    if _private(k, folio) & BH_DIRTY or folio in k.jbd2.t_buffers:
        return
    if folio in k.jbd2.checkpoint:
        k.jbd2.checkpoint.remove(folio)
    _put_journal_head(k, folio)


def jbd2_journal_try_to_free_buffers(k: Kernel, mapping: AddressSpace, folio: int) -> bool:
    """v4.4.178 fs/jbd2/transaction.c:1995: drop what jbd2 holds, then try_to_free_buffers.

    The page is locked (J_ASSERT :2002); a buffer still with a jh after
    __journal_try_to_free_buffer makes the page busy (:2022-2023, return 0).
    """
    bug_on(not int(k.mem.flags[folio]) & k.pf.mask("PG_locked"), "J_ASSERT(PageLocked)")
    bug_on(not folio_buffers(k, folio), "page_buffers: !PagePrivate")
    if buffer_jbd(k, folio):
        __journal_try_to_free_buffer(k, folio)
        if buffer_jbd(k, folio):
            return False
    return try_to_free_buffers(k, mapping, folio)
