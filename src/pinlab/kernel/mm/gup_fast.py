"""get/pin_user_pages_fast (v6.1 mm/gup.c 3000-3235): the lockless walk
(gup_fast_walk.py), then the slow path for what it left unless FOLL_FAST_ONLY.

`mm` stands for current->mm; callers do not hold mmap_lock.  A profile with x86's own
gup-fast (profile.gup_fast "x86": v4.4) runs arch/x86/mm/gup.c's walk instead
(kernel/arch/x86/mm/gup.py).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel import errno
from pinlab.kernel.arch.x86.mm import gup as x86_gup
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.mm.gup import (
    __gup_longterm_locked,
    get_user_pages_unlocked,
    is_valid_gup_args,
    mm_set_has_pinned_flag,
)
from pinlab.kernel.mm.gup_fast_walk import lockless_pages_from_mm
from pinlab.kernel.mm.gup_flags import (
    FOLL_FAST_ONLY,
    FOLL_FORCE,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_NOFAULT,
    FOLL_PIN,
    FOLL_TOUCH,
    FOLL_WRITE,
    is_valid_gup_flags,
    require_gup_flags,
)
from pinlab.kernel.mm.gup_page import Locked, Pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.page_ref import wrap_s32
from pinlab.kernel.mm.pgtable import (
    PAGE_SHIFT,
    PAGE_SIZE,
    TASK_SIZE,
)
from pinlab.kernel.mm.types import MmStruct
from pinlab.kernel.profiles import NotInKernel, require_gup_api

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

U64 = (1 << 64) - 1
# v6.1 mm/gup.c internal_get_user_pages_fast: the only flags the fast API accepts
FAST_GUP_FLAGS = (
    FOLL_WRITE | FOLL_LONGTERM | FOLL_FORCE | FOLL_PIN | FOLL_GET | FOLL_FAST_ONLY | FOLL_NOFAULT
)
# v5.7.14 mm/gup.c:2780-2781: before FOLL_FAST_ONLY (v5.8) and FOLL_NOFAULT (v5.16)
FAST_GUP_FLAGS_5_7 = FOLL_WRITE | FOLL_LONGTERM | FOLL_FORCE | FOLL_PIN | FOLL_GET
# v6.1 arch/x86/include/asm/page_64_types.h TASK_SIZE_MAX
TASK_SIZE_MAX = TASK_SIZE


def __gup_longterm_unlocked(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c __gup_longterm_unlocked: the slow path for what gup-fast left."""
    if gup_flags & FOLL_LONGTERM:
        yield from mmap_read_lock(k, mm)
        ret = yield from __gup_longterm_locked(k, mm, start, nr_pages, pages, gup_flags)
        mmap_read_unlock(k, mm)
        return ret
    return (yield from get_user_pages_unlocked(k, mm, start, nr_pages, pages, gup_flags))


def internal_get_user_pages_fast(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c internal_get_user_pages_fast: fast walk, then the slow path for the rest."""
    allowed = FAST_GUP_FLAGS_5_7 if k.profile.foll_flags == "5.7" else FAST_GUP_FLAGS
    if gup_flags & ~allowed:
        warn_on_once(k, "mm/gup.c internal_get_user_pages_fast gup_flags")
        return -errno.EINVAL
    if gup_flags & FOLL_PIN:
        yield from mm_set_has_pinned_flag(k, mm)
    # The int nr_pages widens to unsigned long: a negative count becomes huge.
    nr = wrap_s32(nr_pages) & U64
    start &= ~(PAGE_SIZE - 1) & U64
    length = (nr << PAGE_SHIFT) & U64
    end = start + length
    v6_5 = k.profile.valid_gup_args
    if end > U64:
        # v6.5 mm/gup.c:3183-3184 -EOVERFLOW; 6.1.192 mm/gup.c:3060-3061 returns 0
        return -errno.EOVERFLOW if v6_5 else 0
    # access_ok (v6.1 include/asm-generic/access_ok.h __access_ok); v6.5 mm/gup.c:3185-3186
    # tests end > TASK_SIZE_MAX first, and x86-64's access_ok (v6.5
    # arch/x86/include/asm/uaccess_64.h:85-92) then passes: the same bound
    if not (length <= TASK_SIZE_MAX and start <= TASK_SIZE_MAX - length):
        return -errno.EFAULT
    nr_pinned = yield from lockless_pages_from_mm(k, mm, start, end, gup_flags, pages)
    if nr_pinned == nr or gup_flags & FOLL_FAST_ONLY:
        return nr_pinned
    rest = wrap_s32(nr - nr_pinned)
    addr = start + (nr_pinned << PAGE_SHIFT)
    if v6_5:
        # v6.5 mm/gup.c:3197-3199: __gup_longterm_locked with *locked == 0 and
        # FOLL_TOUCH | FOLL_UNLOCKABLE, FOLL_LONGTERM or not
        ret = yield from __gup_longterm_locked(
            k, mm, addr, rest, pages[nr_pinned:], gup_flags | FOLL_TOUCH, Locked(held=False)
        )
    else:
        ret = yield from __gup_longterm_unlocked(k, mm, addr, rest, gup_flags, pages[nr_pinned:])
    if ret < 0:
        return nr_pinned if nr_pinned else ret
    return ret + nr_pinned


def get_user_pages_fast(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c get_user_pages_fast: FOLL_GET references (v4.4: `int write` = FOLL_WRITE).

    A profile with x86's own gup-fast (v4.4) runs arch/x86/mm/gup.c's instead.
    """
    require_gup_api(k.profile, "get_user_pages_fast")
    require_gup_flags(k, gup_flags)
    if not k.profile.has_foll_pin and gup_flags & ~FOLL_WRITE:
        raise NotInKernel("get_user_pages_fast gup_flags beyond `int write`", k.profile)
    if k.profile.gup_fast == "x86":
        write = bool(gup_flags & FOLL_WRITE)
        return (yield from x86_gup.get_user_pages_fast(k, mm, start, nr_pages, write, pages))
    if k.profile.valid_gup_args:
        # v6.5 mm/gup.c get_user_pages_fast (:3264-3276)
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_GET)
        if flags65 is None:
            return -errno.EINVAL
        return (yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags65, pages))
    if not is_valid_gup_flags(k, gup_flags):
        return -errno.EINVAL
    return (
        yield from internal_get_user_pages_fast(k, mm, start, nr_pages, gup_flags | FOLL_GET, pages)
    )


def get_user_pages_fast_only(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c get_user_pages_fast_only: no flag check, no slow path, never < 0.

    v6.5 (:3230-3245): is_valid_gup_args (-EINVAL) and internal_get_user_pages_fast's
    return value as it is, -errno included.
    """
    require_gup_api(k.profile, "get_user_pages_fast_only")
    require_gup_flags(k, gup_flags)
    if k.profile.valid_gup_args:
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_GET | FOLL_FAST_ONLY)
        if flags65 is None:
            return -errno.EINVAL
        return (yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags65, pages))
    flags = gup_flags | FOLL_GET | FOLL_FAST_ONLY
    ret = yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags, pages)
    return max(ret, 0)


def pin_user_pages_fast(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages | None
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c pin_user_pages_fast: FOLL_GET or a NULL array is -EINVAL (WARN)."""
    require_gup_api(k.profile, "pin_user_pages_fast")
    require_gup_flags(k, gup_flags)
    if k.profile.valid_gup_args:
        # v6.5 mm/gup.c pin_user_pages_fast (:3298-3304)
        flags65 = is_valid_gup_args(k, pages, None, gup_flags, FOLL_PIN)
        if flags65 is None or pages is None:
            return -errno.EINVAL
        return (yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags65, pages))
    if gup_flags & FOLL_GET:
        warn_on_once(k, "mm/gup.c pin_user_pages_fast FOLL_GET")
        return -errno.EINVAL
    if pages is None:
        warn_on_once(k, "mm/gup.c pin_user_pages_fast pages == NULL")
        return -errno.EINVAL
    return (
        yield from internal_get_user_pages_fast(k, mm, start, nr_pages, gup_flags | FOLL_PIN, pages)
    )


def pin_user_pages_fast_only(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, gup_flags: int, pages: Pages | None
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c pin_user_pages_fast_only: bad arguments WARN and return 0; never < 0."""
    require_gup_api(k.profile, "pin_user_pages_fast_only")
    require_gup_flags(k, gup_flags)
    if gup_flags & FOLL_GET:
        warn_on_once(k, "mm/gup.c pin_user_pages_fast_only FOLL_GET")
        return 0
    if pages is None:
        warn_on_once(k, "mm/gup.c pin_user_pages_fast_only pages == NULL")
        return 0
    flags = gup_flags | FOLL_PIN | FOLL_FAST_ONLY
    ret = yield from internal_get_user_pages_fast(k, mm, start, nr_pages, flags, pages)
    return max(ret, 0)
