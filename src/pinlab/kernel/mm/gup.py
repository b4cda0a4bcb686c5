"""The get_user_pages / pin_user_pages family: the entry points (v6.1 mm/gup.c).

`mm` stands for the kernel's current->mm (or the remote mm).  `pages` is the
caller's page array: a NumPy int64 array of at least nr_pages entries, filled
from index 0 with PFNs (see `page_array`).  Callers of get_user_pages,
pin_user_pages and *_remote hold mmap_lock for read, as in the kernel.
An API the profile's kernel did not have raises NotInKernel.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np

from pinlab.interleave import Point, Yield
from pinlab.kernel import errno
from pinlab.kernel.bug import bug_on, warn_on, warn_on_once
from pinlab.kernel.mm.gup_flags import (
    FOLL_FAST_ONLY,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_PIN,
    FOLL_REMOTE,
    FOLL_TOUCH,
    FOLL_TRIED,
    FOLL_WRITE,
    is_valid_gup_flags,
    require_gup_flags,
)
from pinlab.kernel.mm.gup_follow import __get_user_pages
from pinlab.kernel.mm.gup_longterm import (
    check_and_migrate_cma_pages,
    check_and_migrate_movable_pages,
    check_dax_vmas,
    release_longterm_pages,
)
from pinlab.kernel.mm.gup_page import Locked, Pages
from pinlab.kernel.mm.gup_ranged import get_user_pages_ranged
from pinlab.kernel.mm.locking import (
    mmap_read_lock,
    mmap_read_unlock,
)
from pinlab.kernel.mm.pgtable import PAGE_SHIFT
from pinlab.kernel.mm.types import MMF_HAS_PINNED, MmStruct
from pinlab.kernel.profiles import require_gup_api

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

NULL_PAGE = -1


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


def _gup_walk(
    k: Kernel,
    mm: MmStruct,
    start: int,
    nr_pages: int,
    flags: int,
    pages: Pages | None,
    locked: Locked | None,
) -> Generator[Yield, None, int]:
    """__get_user_pages, or beside it the whole-range steps (gup_ranged.py) where they agree.

    Those steps test gup_must_unshare on anon pages only; a R/O long-term pin that v6.5
    unshares non-anon pages for (profile.unshare_non_anon) walks page by page.
    """
    ro_longterm = flags & (FOLL_WRITE | FOLL_PIN | FOLL_LONGTERM) == FOLL_PIN | FOLL_LONGTERM
    if k.profile.unshare_non_anon and ro_longterm:
        return (yield from __get_user_pages(k, mm, start, nr_pages, flags, pages, locked))
    return (yield from get_user_pages_ranged(k, mm, start, nr_pages, flags, pages, locked))


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
        ret = yield from _gup_walk(k, mm, start, nr_pages, flags, view, locked)
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
            ret = yield from _gup_walk(k, mm, start, 1, flags | FOLL_TRIED, view, locked)
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


def _get_user_pages_locked_65(
    k: Kernel,
    mm: MmStruct,
    start: int,
    nr_pages: int,
    pages: Pages | None,
    locked: Locked | None,
    flags: int,
) -> Generator[Yield, None, int]:
    """v6.5 mm/gup.c __get_user_pages_locked (:1451-1590): with *locked == 0 it takes
    mmap_lock itself (:1465-1470) and drops it before returning (:1575-1583)."""
    if locked is None or locked.held:
        return (yield from __get_user_pages_locked(k, mm, start, nr_pages, pages, locked, flags))
    yield from mmap_read_lock(k, mm)
    locked.held = True
    ret = yield from __get_user_pages_locked(k, mm, start, nr_pages, pages, locked, flags)
    if locked.held:
        mmap_read_unlock(k, mm)
        locked.held = False
    return ret


def __gup_longterm_locked(
    k: Kernel,
    mm: MmStruct,
    start: int,
    nr_pages: int,
    pages: Pages | None,
    gup_flags: int,
    locked: Locked | None = None,
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c __gup_longterm_locked: pin, migrate unpinnable pages away, repeat.

    `locked` (v6.5 :2174-2203, FOLL_UNLOCKABLE): each pass may drop mmap_lock, and a pass
    that starts without it takes it itself; 6.1 passes none.
    """
    if not gup_flags & FOLL_LONGTERM:
        return (
            yield from _get_user_pages_locked_65(k, mm, start, nr_pages, pages, locked, gup_flags)
        )
    if k.profile.longterm_requires_pin and not gup_flags & FOLL_PIN:
        warn_on(k, "mm/gup.c __gup_longterm_locked FOLL_LONGTERM without FOLL_PIN")
        return -errno.EINVAL
    if k.profile.longterm_check == "cma" and pages is None:
        # v5.7.14 mm/gup.c __gup_longterm_locked 1774-1776: FOLL_LONGTERM needs pages
        return -errno.EINVAL
    while True:
        nr_pinned = yield from _get_user_pages_locked_65(
            k, mm, start, nr_pages, pages, locked, gup_flags
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


def is_valid_gup_args(
    k: Kernel, pages: Pages | None, locked: Locked | None, gup_flags: int, to_set: int
) -> int | None:
    """v6.5 mm/gup.c is_valid_gup_args (:2209-2260): the flags to run with, or None (WARN).

    The model's `locked` stands for FOLL_UNLOCKABLE; FOLL_HONOR_NUMA_FAULT (:2239, read only
    by gup_can_follow_protnone) and FOLL_PCI_P2PDMA are not modelled.
    """
    if gup_flags & (FOLL_PIN | FOLL_TRIED | FOLL_REMOTE | FOLL_FAST_ONLY):
        warn_on_once(k, "mm/gup.c is_valid_gup_args internal FOLL_ flag")
        return None
    flags = gup_flags | to_set
    if locked is not None and not locked.held:
        warn_on_once(k, "mm/gup.c is_valid_gup_args *locked != 1")
        return None
    if flags & (FOLL_PIN | FOLL_GET) == FOLL_PIN | FOLL_GET:
        warn_on_once(k, "mm/gup.c is_valid_gup_args FOLL_PIN|FOLL_GET")
        return None
    if flags & FOLL_LONGTERM and not flags & FOLL_PIN:
        warn_on_once(k, "mm/gup.c is_valid_gup_args FOLL_LONGTERM without FOLL_PIN")
        return None
    if flags & (FOLL_GET | FOLL_PIN) and pages is None:
        warn_on_once(k, "mm/gup.c is_valid_gup_args pages == NULL")
        return None
    return flags


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
    if k.profile.valid_gup_args:
        # v6.5 mm/gup.c get_user_pages (:2361-2372)
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_TOUCH)
        if flags65 is None:
            return -errno.EINVAL
        return (yield from __get_user_pages_locked(k, mm, start, nr_pages, pages, None, flags65))
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
    if k.profile.valid_gup_args:
        # v6.5 mm/gup.c get_user_pages_remote (:2320-2335)
        flags65 = is_valid_gup_args(k, pages, locked, gup_flags, FOLL_TOUCH | FOLL_REMOTE)
        if flags65 is None:
            return -errno.EINVAL
        return (yield from __get_user_pages_locked(k, mm, start, nr_pages, pages, locked, flags65))
    if not is_valid_gup_flags(k, gup_flags):
        return -errno.EINVAL
    return (yield from __get_user_pages_remote(k, mm, start, nr_pages, gup_flags, pages, locked))


def get_user_pages_unlocked(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, pages: Pages | None, gup_flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c get_user_pages_unlocked: takes mmap_lock itself; no FOLL_LONGTERM."""
    require_gup_api(k.profile, "get_user_pages_unlocked")
    require_gup_flags(k, gup_flags)
    if k.profile.valid_gup_args:
        # v6.5 mm/gup.c get_user_pages_unlocked (:2389-2399): *locked == 0
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_TOUCH)
        if flags65 is None:
            return -errno.EINVAL
        return (
            yield from _get_user_pages_locked_65(
                k, mm, start, nr_pages, pages, Locked(held=False), flags65
            )
        )
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
    if k.profile.valid_gup_args:
        # v6.5 mm/gup.c pin_user_pages (:3364-3373): bad arguments return 0
        require_gup_api(k.profile, "pin_user_pages")
        require_gup_flags(k, gup_flags)
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_PIN)
        if flags65 is None:
            return 0
        return (yield from __gup_longterm_locked(k, mm, start, nr_pages, pages, flags65))
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
    """v6.1 mm/gup.c pin_user_pages_remote.

    v6.5 (:3330-3343): bad arguments return 0; FOLL_LONGTERM with `locked` is allowed.
    """
    if k.profile.valid_gup_args:
        require_gup_api(k.profile, "pin_user_pages_remote")
        require_gup_flags(k, gup_flags)
        to_set = FOLL_PIN | FOLL_TOUCH | FOLL_REMOTE
        flags65 = is_valid_gup_args(k, pages, locked, gup_flags, to_set)
        if flags65 is None:
            return 0
        return (yield from __gup_longterm_locked(k, mm, start, nr_pages, pages, flags65, locked))
    if not _pin_args_ok(k, gup_flags, pages, "pin_user_pages_remote"):
        return -errno.EINVAL
    flags = gup_flags | FOLL_PIN
    return (yield from __get_user_pages_remote(k, mm, start, nr_pages, flags, pages, locked))


def pin_user_pages_unlocked(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, pages: Pages | None, gup_flags: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c pin_user_pages_unlocked: get_user_pages_unlocked with FOLL_PIN.

    v6.5 (:3384-3395): bad arguments return 0; __gup_longterm_locked with *locked == 0, so
    FOLL_LONGTERM is allowed.
    """
    if k.profile.valid_gup_args:
        require_gup_api(k.profile, "pin_user_pages_unlocked")
        require_gup_flags(k, gup_flags)
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_PIN | FOLL_TOUCH)
        if flags65 is None:
            return 0
        unlocked = Locked(held=False)
        return (yield from __gup_longterm_locked(k, mm, start, nr_pages, pages, flags65, unlocked))
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
