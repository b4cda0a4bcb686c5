"""Sleeping and spinning locks as blocking points for the race explorer.

Each acquire is an `Await` on the lock's state, so the explorer never resumes a
thread that cannot take the lock; run alone, an unavailable lock is a
self-deadlock.  Lock state is ordinary kernel state and is hashed with it.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Await, Yield
from pinlab.kernel.mm.pgtable import PMD_SHIFT
from pinlab.kernel.mm.types import MmStruct

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def mmap_read_lock(k: Kernel, mm: MmStruct) -> Generator[Yield, None, None]:
    """v6.1 include/linux/mmap_lock.h mmap_read_lock: down_read(&mm->mmap_lock)."""
    yield Await("mmap_read_lock", lambda: not mm.mmap_writer, writes=frozenset({("mmap", mm.id)}))
    mm.mmap_readers += 1


def mmap_read_unlock(k: Kernel, mm: MmStruct) -> None:
    """v6.1 include/linux/mmap_lock.h mmap_read_unlock."""
    mm.mmap_readers -= 1


def mmap_write_lock(k: Kernel, mm: MmStruct) -> Generator[Yield, None, None]:
    """v6.1 include/linux/mmap_lock.h mmap_write_lock: down_write(&mm->mmap_lock)."""
    yield Await(
        "mmap_write_lock",
        lambda: not mm.mmap_writer and mm.mmap_readers == 0,
        writes=frozenset({("mmap", mm.id)}),
    )
    mm.mmap_writer = True


def mmap_write_unlock(k: Kernel, mm: MmStruct) -> None:
    """v6.1 include/linux/mmap_lock.h mmap_write_unlock."""
    mm.mmap_writer = False


def pte_lock(k: Kernel, mm: MmStruct, addr: int) -> Generator[Yield, None, None]:
    """v6.1 include/linux/mm.h pte_offset_map_lock: the split PTE spinlock of one table."""
    key = (mm.id, addr >> PMD_SHIFT)
    yield Await("pte_lock", lambda: key not in k.ptl, writes=frozenset({("ptl", *key)}))
    k.ptl.add(key)


def pte_unlock(k: Kernel, mm: MmStruct, addr: int) -> None:
    """v6.1 include/linux/mm.h pte_unmap_unlock."""
    k.ptl.discard((mm.id, addr >> PMD_SHIFT))


def folio_lock(
    k: Kernel, folio: int, then: frozenset[Hashable] = frozenset()
) -> Generator[Yield, None, None]:
    """v6.1 include/linux/pagemap.h folio_lock: sleep until PG_locked is clear, then set it.

    ``then``: what the caller writes after this returns, before it yields again
    (footprint only).
    """
    bit = k.pf.mask("PG_locked")
    yield Await(
        "folio_lock",
        lambda: not int(k.mem.flags[folio]) & bit,
        writes=frozenset({("page", folio, "flags")}) | then,
    )
    k.mem.flags[folio] |= bit


def folio_trylock(k: Kernel, folio: int) -> bool:
    """v6.1 include/linux/pagemap.h folio_trylock: set PG_locked unless it is set already."""
    bit = k.pf.mask("PG_locked")
    if int(k.mem.flags[folio]) & bit:
        return False
    k.mem.flags[folio] |= bit
    return True


def folio_unlock(k: Kernel, folio: int) -> None:
    """v6.1 mm/filemap.c folio_unlock."""
    k.mem.flags[folio] &= ~k.pf.mask("PG_locked") & 0xFFFF_FFFF_FFFF_FFFF
