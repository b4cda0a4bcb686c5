"""The get_user_pages / pin_user_pages family: entry points and unpinning (v6.1 mm/gup.c).

`mm` stands for the kernel's current->mm (or the remote mm).  `pages` is the
caller's page array: a NumPy int64 array of at least nr_pages entries, filled
from index 0 with PFNs (see `page_array`).  Callers of get_user_pages,
pin_user_pages and *_remote hold mmap_lock for read, as in the kernel.
An API the profile's kernel did not have raises NotInKernel.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pinlab.interleave import Point, Yield
from pinlab.kernel import errno
from pinlab.kernel.bug import bug_on, warn_on_once
from pinlab.kernel.mm.filemap import folio_mark_dirty, set_page_dirty_lock
from pinlab.kernel.mm.gup_flags import (
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_PIN,
    FOLL_REMOTE,
    FOLL_TOUCH,
    FOLL_TRIED,
    is_valid_gup_flags,
    require_gup_flags,
)
from pinlab.kernel.mm.gup_grab import gup_put_folio, unpin_folio_vmstat_last
from pinlab.kernel.mm.gup_longterm import (
    check_and_migrate_cma_pages,
    check_and_migrate_movable_pages,
    check_dax_vmas,
    release_longterm_pages,
)
from pinlab.kernel.mm.gup_page import Locked, Pages
from pinlab.kernel.mm.gup_range import unpin_folios_range, unpin_range_ok
from pinlab.kernel.mm.gup_ranged import get_user_pages_ranged
from pinlab.kernel.mm.huge_memory_4_4 import put_compound_page
from pinlab.kernel.mm.locking import (
    folio_lock,
    folio_unlock,
    mmap_read_lock,
    mmap_read_unlock,
)
from pinlab.kernel.mm.memmap import compound_head, folio_nr_pages, peek_head
from pinlab.kernel.mm.pgtable import PAGE_SHIFT
from pinlab.kernel.mm.types import MMF_HAS_PINNED, MmStruct
from pinlab.kernel.profiles import require_gup_api

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

NULL_PAGE = -1
# v6.1 include/linux/err.h MAX_ERRNO: IS_ERR_VALUE covers [-4095, -1]
MAX_ERRNO = 4095


def warn_on(k: Kernel, site: str) -> None:
    """WARN_ON (v6.1 include/asm-generic/bug.h): logged every time it fires, unlike _ONCE."""
    k.warned.append(site)


def page_array(nr_pages: int) -> Pages:
    """A caller's `struct page *pages[nr_pages]`, every slot NULL."""
    return np.full(nr_pages, NULL_PAGE, np.int64)


def mm_set_has_pinned_flag(k: Kernel, mm: MmStruct) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c mm_set_has_pinned_flag: test, then set MMF_HAS_PINNED (v5.14+)."""
    if not k.profile.mmf_has_pinned:
        return
    key = frozenset({("mm", mm.id, "flags")})
    yield Point("mm_set_has_pinned_flag:test", reads=key)
    if not mm.flags >> MMF_HAS_PINNED & 1:
        yield Point("mm_set_has_pinned_flag:set", writes=key)
        mm.flags |= 1 << MMF_HAS_PINNED


def __get_user_pages_locked(
    k: Kernel,
    mm: MmStruct,
    start: int,
    nr_pages: int,
    pages: Pages | None,
    locked: Locked | None,
    flags: int,
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c __get_user_pages_locked: with `locked`, retry after mmap_lock was dropped."""
    if locked is not None:
        bug_on(not locked.held, "mm/gup.c __get_user_pages_locked *locked != 1")
    if flags & FOLL_PIN:
        yield from mm_set_has_pinned_flag(k, mm)
    if pages is not None and not flags & FOLL_PIN:
        flags |= FOLL_GET
    pages_done = 0
    lock_dropped = False
    off = 0
    while True:
        view = None if pages is None else pages[off:]
        ret = yield from get_user_pages_ranged(k, mm, start, nr_pages, flags, view, locked)
        if locked is None:
            return ret
        if ret > 0:
            nr_pages -= ret
            pages_done += ret
            if not nr_pages:
                break
        if locked.held:
            if not pages_done:
                pages_done = ret
            break
        off += ret
        start += ret << PAGE_SHIFT
        lock_dropped = True
        while True:
            yield from mmap_read_lock(k, mm)
            locked.held = True
            view = None if pages is None else pages[off:]
            ret = yield from get_user_pages_ranged(
                k, mm, start, 1, flags | FOLL_TRIED, view, locked
            )
            if locked.held:
                break
        if ret != 1:
            if not pages_done:
                pages_done = ret
            break
        nr_pages -= 1
        pages_done += 1
        if not nr_pages:
            break
        off += 1
        start += 1 << PAGE_SHIFT
    if lock_dropped and locked.held:
        mmap_read_unlock(k, mm)
        locked.held = False
    return pages_done


def __gup_longterm_locked(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, pages: Pages | None, gup_flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c __gup_longterm_locked: pin, migrate unpinnable pages away, repeat."""
    if not gup_flags & FOLL_LONGTERM:
        return (yield from __get_user_pages_locked(k, mm, start, nr_pages, pages, None, gup_flags))
    if k.profile.longterm_requires_pin and not gup_flags & FOLL_PIN:
        warn_on(k, "mm/gup.c __gup_longterm_locked FOLL_LONGTERM without FOLL_PIN")
        return -errno.EINVAL
    if k.profile.longterm_check == "cma" and pages is None:
        # v5.7.14 mm/gup.c __gup_longterm_locked 1774-1776: FOLL_LONGTERM needs pages
        return -errno.EINVAL
    while True:
        nr_pinned = yield from __get_user_pages_locked(
            k, mm, start, nr_pages, pages, None, gup_flags
        )
        if nr_pinned <= 0:
            return nr_pinned
        assert pages is not None
        if k.profile.fsdax_check_after_pin and check_dax_vmas(k, mm, start, nr_pinned):
            # v5.7.14 mm/gup.c __gup_longterm_locked 1796-1800
            yield from release_longterm_pages(k, pages, nr_pinned, gup_flags)
            return -errno.EOPNOTSUPP
        if k.profile.longterm_check == "cma":
            # v5.7.14 mm/gup.c __gup_longterm_locked 1803-1804: it pins again itself
            return (
                yield from check_and_migrate_cma_pages(k, mm, start, nr_pinned, pages, gup_flags)
            )
        rc = yield from check_and_migrate_movable_pages(k, nr_pinned, pages, gup_flags)
        if rc != -errno.EAGAIN:
            return rc if rc else nr_pinned


def __get_user_pages_remote(
    k: Kernel,
    mm: MmStruct,
    start: int,
    nr_pages: int,
    gup_flags: int,
    pages: Pages | None,
    locked: Locked | None,
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c __get_user_pages_remote: FOLL_LONGTERM only without `locked`."""
    if gup_flags & FOLL_LONGTERM:
        if locked is not None:
            warn_on_once(k, "mm/gup.c __get_user_pages_remote FOLL_LONGTERM with locked")
            return -errno.EINVAL
        flags = gup_flags | FOLL_TOUCH | FOLL_REMOTE
        return (yield from __gup_longterm_locked(k, mm, start, nr_pages, pages, flags))
    flags = gup_flags | FOLL_TOUCH | FOLL_REMOTE
    return (yield from __get_user_pages_locked(k, mm, start, nr_pages, pages, locked, flags))


def get_user_pages(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages | None
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c get_user_pages (v4.4: write/force ints, here FOLL_WRITE/FOLL_FORCE)."""
    require_gup_api(k.profile, "get_user_pages")
    require_gup_flags(k, gup_flags)
    if not is_valid_gup_flags(k, gup_flags):
        return -errno.EINVAL
    flags = gup_flags | FOLL_TOUCH
    return (yield from __gup_longterm_locked(k, mm, start, nr_pages, pages, flags))


def get_user_pages_remote(
    k: Kernel,
    mm: MmStruct,
    start: int,
    nr_pages: int,
    gup_flags: int,
    pages: Pages | None,
    locked: Locked | None = None,
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c get_user_pages_remote."""
    require_gup_api(k.profile, "get_user_pages_remote")
    require_gup_flags(k, gup_flags)
    if not is_valid_gup_flags(k, gup_flags):
        return -errno.EINVAL
    return (yield from __get_user_pages_remote(k, mm, start, nr_pages, gup_flags, pages, locked))


def get_user_pages_unlocked(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, pages: Pages | None, gup_flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c get_user_pages_unlocked: takes mmap_lock itself; no FOLL_LONGTERM."""
    require_gup_api(k.profile, "get_user_pages_unlocked")
    require_gup_flags(k, gup_flags)
    if gup_flags & FOLL_LONGTERM:
        warn_on_once(k, "mm/gup.c get_user_pages_unlocked FOLL_LONGTERM")
        return -errno.EINVAL
    yield from mmap_read_lock(k, mm)
    locked = Locked()
    ret = yield from __get_user_pages_locked(
        k, mm, start, nr_pages, pages, locked, gup_flags | FOLL_TOUCH
    )
    if locked.held:
        mmap_read_unlock(k, mm)
    return ret


def _pin_args_ok(k: Kernel, gup_flags: int, pages: Pages | None, func: str) -> bool:
    """v6.1 mm/gup.c pin_user_pages*: FOLL_GET and a NULL pages array are refused (WARN)."""
    require_gup_api(k.profile, func)
    require_gup_flags(k, gup_flags)
    if gup_flags & FOLL_GET:
        warn_on_once(k, f"mm/gup.c {func} FOLL_GET")
        return False
    if pages is None and k.profile.pin_null_pages_refused:
        warn_on_once(k, f"mm/gup.c {func} pages == NULL")
        return False
    return True


def pin_user_pages(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages | None
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c pin_user_pages: FOLL_PIN, no FOLL_TOUCH."""
    if not _pin_args_ok(k, gup_flags, pages, "pin_user_pages"):
        return -errno.EINVAL
    flags = gup_flags | FOLL_PIN
    return (yield from __gup_longterm_locked(k, mm, start, nr_pages, pages, flags))


def pin_user_pages_remote(
    k: Kernel,
    mm: MmStruct,
    start: int,
    nr_pages: int,
    gup_flags: int,
    pages: Pages | None,
    locked: Locked | None = None,
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c pin_user_pages_remote."""
    if not _pin_args_ok(k, gup_flags, pages, "pin_user_pages_remote"):
        return -errno.EINVAL
    flags = gup_flags | FOLL_PIN
    return (yield from __get_user_pages_remote(k, mm, start, nr_pages, flags, pages, locked))


def pin_user_pages_unlocked(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, pages: Pages | None, gup_flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c pin_user_pages_unlocked: get_user_pages_unlocked with FOLL_PIN."""
    if not _pin_args_ok(k, gup_flags, pages, "pin_user_pages_unlocked"):
        return -errno.EINVAL
    require_gup_api(k.profile, "get_user_pages_unlocked")
    if gup_flags & FOLL_LONGTERM:
        warn_on_once(k, "mm/gup.c get_user_pages_unlocked FOLL_LONGTERM")
        return -errno.EINVAL
    yield from mmap_read_lock(k, mm)
    locked = Locked()
    flags = gup_flags | FOLL_PIN | FOLL_TOUCH
    ret = yield from __get_user_pages_locked(k, mm, start, nr_pages, pages, locked, flags)
    if locked.held:
        mmap_read_unlock(k, mm)
    return ret


def put_page_api(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v6.1 include/linux/mm.h put_page, as a gup caller releases a FOLL_GET reference."""
    require_gup_api(k.profile, "put_page")
    head = peek_head(k.mem, page)
    if head != page and k.profile.thp_tail_refs_in_mapcount:
        # v4.4 mm/swap.c:272 put_page -> put_compound_page: the tail's _mapcount too
        yield from put_compound_page(k, page)
        return
    yield from gup_put_folio(k, head, 1, FOLL_GET, (page,))


def unpin_user_page(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c unpin_user_page (the DEBUG_VM sanity check is not built on Debian)."""
    require_gup_api(k.profile, "unpin_user_page")
    if k.profile.pin_v5_7_order:
        yield from unpin_folio_vmstat_last(k, compound_head(k.mem, page))
    else:
        yield from gup_put_folio(k, peek_head(k.mem, page), 1, FOLL_PIN, (page,))


def _folio_runs(k: Kernel, pages: Sequence[int], peek: bool = False) -> list[tuple[int, int]]:
    """v6.1 mm/gup.c gup_folio_next: runs of consecutive entries in one folio.

    ``peek``: the heads are read only to name the footprints of the steps that follow
    (memmap.peek_head); those steps read them again.
    """
    head = peek_head if peek else compound_head
    runs: list[tuple[int, int]] = []
    for page in pages:
        folio = head(k.mem, page)
        if runs and runs[-1][0] == folio:
            runs[-1] = (folio, runs[-1][1] + 1)
        else:
            runs.append((folio, 1))
    return runs


def _page_list(pages: Pages | Sequence[int], npages: int) -> list[int]:
    """The first npages entries of a page array as ints."""
    if isinstance(pages, np.ndarray):
        return [int(p) for p in pages[:npages].tolist()]
    return [int(p) for p in pages[:npages]]


def unpin_user_pages(
    k: Kernel, pages: Pages | Sequence[int], npages: int
) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c unpin_user_pages: WARN on an -errno count, else one put per folio run."""
    require_gup_api(k.profile, "unpin_user_pages")
    if -MAX_ERRNO <= npages < 0:
        warn_on(k, "mm/gup.c unpin_user_pages IS_ERR_VALUE(npages)")
        return
    if unpin_range_ok(k):
        yield "unpin_user_pages:range"
        unpin_folios_range(k, np.asarray(pages[:npages], dtype=np.int64))
        return
    if k.profile.pin_v5_7_order:
        for page in _page_list(pages, npages):
            yield from unpin_user_page(k, page)
        return
    page_list = _page_list(pages, npages)
    i = 0
    for folio, nr in _folio_runs(k, page_list, peek=True):
        yield from gup_put_folio(k, folio, nr, FOLL_PIN, page_list[i : i + nr])
        i += nr


def _dirty_then_put(
    k: Kernel, folio: int, nr: int, make_dirty: bool, run: Sequence[int] = ()
) -> Generator[Yield, None, None]:
    """The loop body of v6.1 unpin_user_pages_dirty_lock / unpin_user_page_range_dirty_lock.

    ``run``: the pages of the run when ``folio`` was only peeked at (_folio_runs): its
    compound_head is read after the first yield.
    """
    if make_dirty:
        heads = frozenset(("page", page, "head") for page in run)
        yield Point("folio_test_dirty", reads=frozenset({("page", folio, "flags")}) | heads)
        if run:
            folio = compound_head(k.mem, run[0])
        if not int(k.mem.flags[folio]) & k.pf.mask("PG_dirty"):
            yield from folio_lock(k, folio)
            yield from folio_mark_dirty(k, folio)
            folio_unlock(k, folio)
    yield from gup_put_folio(k, folio, nr, FOLL_PIN)


def unpin_user_pages_dirty_lock(
    k: Kernel, pages: Pages | Sequence[int], npages: int, make_dirty: bool
) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c unpin_user_pages_dirty_lock: dirty clean folios under the folio lock, unpin.

    v5.7 dirties and unpins page by page (set_page_dirty_lock, unpin_user_page).
    """
    require_gup_api(k.profile, "unpin_user_pages_dirty_lock")
    if not make_dirty:
        yield from unpin_user_pages(k, pages, npages)
        return
    if k.profile.pin_v5_7_order:
        for page in _page_list(pages, npages):
            head = compound_head(k.mem, page)
            yield Point("PageDirty", reads=frozenset({("page", head, "flags")}))
            if not int(k.mem.flags[head]) & k.pf.mask("PG_dirty"):
                yield from set_page_dirty_lock(k, head)
            yield from unpin_user_page(k, head)
        return
    page_list = _page_list(pages, npages)
    i = 0
    for folio, nr in _folio_runs(k, page_list, peek=True):
        yield from _dirty_then_put(k, folio, nr, True, page_list[i : i + nr])
        i += nr


def unpin_user_page_range_dirty_lock(
    k: Kernel, page: int, npages: int, make_dirty: bool
) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c unpin_user_page_range_dirty_lock: consecutive PFNs from `page`."""
    require_gup_api(k.profile, "unpin_user_page_range_dirty_lock")
    i = 0
    while i < npages:
        nxt = page + i
        folio = compound_head(k.mem, nxt)
        nr = 1
        if folio_nr_pages(k.mem, folio) > 1:
            nr = min(npages - i, folio_nr_pages(k.mem, folio) - (nxt - folio))
        yield from _dirty_then_put(k, folio, nr, make_dirty)
        i += nr
