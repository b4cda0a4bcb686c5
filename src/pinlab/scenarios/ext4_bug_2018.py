"""`ext4-bug-2018`: the 2018 customer bug (../shared/seeds/002) as kernel threads on 4.4.

An ext4 file mounted data=journal (the report's backtrace, ext4_writepages ->
write_cache_pages -> __writepage -> ext4_writepage, is v4.4.178 fs/ext4/inode.c:2510's
data=journal branch), its block on disk, mapped MAP_SHARED and read-faulted.  Threads: the
driver (get_user_pages(FOLL_WRITE), the device's store, set_page_dirty_lock + put_page),
kswapd reclaiming the page, the flusher writing the file back, and kjournald2 committing
the journal (without a commit no data=journal buffer ever leaves the journal, so reclaim
could never drop it: v4.4.178 fs/jbd2/transaction.c:2022-2023).  Nothing here names the
outcome: the search finds it or not.

KSWAPD_PASSES and FLUSHER_PASSES are bounds, not a schedule: kswapd reaches the page at
the tail of its list at most that many times, the flusher writes the file back at most that
many times; kjournald commits once.
"""

from __future__ import annotations

from collections.abc import Generator

from pinlab.designs import boot_design, get_design
from pinlab.explore import GenThread
from pinlab.interleave import Point, Yield, run_to_completion
from pinlab.kernel.fs import LLONG_MAX, writepages
from pinlab.kernel.fs.jbd2 import jbd2_journal_commit_transaction
from pinlab.kernel.mm.filemap import folio_put_footprint, set_page_dirty_lock
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_FIXED, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.page_writeback import LONG_MAX, WB_SYNC_NONE, WritebackControl
from pinlab.kernel.mm.types import AddressSpace, MmStruct
from pinlab.kernel.mm.vmscan import kswapd_reclaim_page
from pinlab.kernel.process import ext4_create, fd_install, fget, new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel
from pinlab.kernel.uaccess import user_access

PAGE = 4096
ADDR = 0x7F00_0000_0000
ON_DISK = 7  # the file's block, written and fsynced before this page cache existed
DMA = 99  # what the device writes
STORED = 5  # what the user stores through the mapping, where a scenario has it store
KSWAPD_PASSES = 3
FLUSHER_PASSES = 3
BOUNDS = f"kswapd passes {KSWAPD_PASSES}, flusher passes {FLUSHER_PASSES}, one journal commit"


def mapped_ext4_page(design: str, write: bool) -> Kernel:
    """4.4 under `design`, ext4 -o data=journal, a one-page file whose block is on disk,
    mapped MAP_SHARED at ADDR by one task, which then loads from it or stores to it."""
    k = boot_design(get_design(design), BootParams(normal_mb=4))
    k.ext4_data = "journal"
    task = new_task(k)
    file = ext4_create(k, PAGE)
    k.mappings[file.mapping].store[0] = ON_DISK
    fid = fd_install(k, file)
    prot, flags = PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, prot, flags, fget(k, fid))) == ADDR
    run_to_completion(user_access(k, task, ADDR, write, STORED if write else 0))
    return k


def make_kernel(design: str) -> Kernel:
    """The page read-faulted in (no buffers: a fully mapped page is read without them,
    v4.4.178 fs/ext4/readpage.c ext4_mpage_readpages)."""
    return mapped_ext4_page(design, False)


def user_mm(k: Kernel) -> MmStruct:
    """The user's address space."""
    return next(iter(k.mms.values()))


def file_page(k: Kernel) -> int:
    """The file's one page-cache page."""
    return _mapping(k).i_pages[0]


def _mapping(k: Kernel) -> AddressSpace:
    return next(iter(k.mappings.values()))


def driver(k: Kernel) -> Generator[Yield, None, None]:
    """get_user_pages(FOLL_WRITE) under mmap_sem, the device's store, then completion."""
    mm = user_mm(k)
    pages = page_array(1)
    yield from mmap_read_lock(k, mm)
    got = yield from get_user_pages(k, mm, ADDR, 1, FOLL_WRITE, pages)
    mmap_read_unlock(k, mm)
    if got != 1:
        return
    page = int(pages[0])
    yield Point("device DMA", writes=frozenset({("page", page, "data")}))
    k.mem.data[page] = DMA
    yield from set_page_dirty_lock(k, page)
    yield Point("put_page", writes=folio_put_footprint(k, page))
    folio_put(k, page)


def kswapd(k: Kernel) -> Generator[Yield, None, None]:
    page = file_page(k)
    yield from kswapd_reclaim_page(k, page, KSWAPD_PASSES, 0)


def flusher(k: Kernel) -> Generator[Yield, None, None]:
    """wb_workfn's background writeback of the file, FLUSHER_PASSES times."""
    for _ in range(FLUSHER_PASSES):
        wbc = WritebackControl(WB_SYNC_NONE, LONG_MAX, 0, LLONG_MAX)
        yield from writepages(k, _mapping(k), wbc, 0)


def kjournald(k: Kernel) -> Generator[Yield, None, None]:
    yield from jbd2_journal_commit_transaction(k)


THREADS = (
    GenThread("driver", driver),
    GenThread("kswapd", kswapd),
    GenThread("flusher", flusher),
    GenThread("kjournald", kjournald),
)


def threads(design: str) -> tuple[GenThread, ...]:
    """The threads, the same under every design (its hooks do the rest)."""
    return THREADS
