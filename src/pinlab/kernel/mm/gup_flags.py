"""FOLL_* flags of the get_user_pages family (v6.1 include/linux/mm.h, values as in 6.1).

The model uses 6.1's bit values for every profile; what differs between
kernels is which flags exist (FOLL_PIN from v5.6, FOLL_LONGTERM from v5.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.profiles import NotInKernel

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

FOLL_WRITE = 0x01
FOLL_TOUCH = 0x02
FOLL_GET = 0x04
FOLL_DUMP = 0x08
FOLL_FORCE = 0x10
FOLL_NOWAIT = 0x20
FOLL_NOFAULT = 0x80
FOLL_HWPOISON = 0x100
FOLL_MIGRATION = 0x400
FOLL_TRIED = 0x800
FOLL_REMOTE = 0x2000
# v5.7 include/linux/mm.h internal flag "a COW fault was taken", v4.9 19be0eaffa3a
# (Dirty COW fix, stable 4.4.26) until v6.0 5535be309971 removed it; 6.1 has no bit 0x4000.
FOLL_COW = 0x4000
FOLL_ANON = 0x8000
FOLL_LONGTERM = 0x10000
FOLL_SPLIT_PMD = 0x20000
FOLL_PIN = 0x40000
FOLL_FAST_ONLY = 0x80000

NAMES = {
    "FOLL_WRITE": FOLL_WRITE,
    "FOLL_TOUCH": FOLL_TOUCH,
    "FOLL_GET": FOLL_GET,
    "FOLL_DUMP": FOLL_DUMP,
    "FOLL_FORCE": FOLL_FORCE,
    "FOLL_NOWAIT": FOLL_NOWAIT,
    "FOLL_NOFAULT": FOLL_NOFAULT,
    "FOLL_HWPOISON": FOLL_HWPOISON,
    "FOLL_MIGRATION": FOLL_MIGRATION,
    "FOLL_TRIED": FOLL_TRIED,
    "FOLL_REMOTE": FOLL_REMOTE,
    "FOLL_ANON": FOLL_ANON,
    "FOLL_LONGTERM": FOLL_LONGTERM,
    "FOLL_SPLIT_PMD": FOLL_SPLIT_PMD,
    "FOLL_PIN": FOLL_PIN,
    "FOLL_FAST_ONLY": FOLL_FAST_ONLY,
}


def is_valid_gup_flags(k: Kernel, gup_flags: int) -> bool:
    """v6.1 mm/gup.c is_valid_gup_flags: callers may not pass FOLL_PIN, nor FOLL_LONGTERM.

    v5.7 get_user_pages refused only FOLL_PIN; FOLL_LONGTERM with FOLL_GET was legal.
    """
    if gup_flags & FOLL_PIN:
        warn_on_once(k, "mm/gup.c is_valid_gup_flags FOLL_PIN")
        return False
    if k.profile.longterm_requires_pin and gup_flags & FOLL_LONGTERM:
        warn_on_once(k, "mm/gup.c is_valid_gup_flags FOLL_LONGTERM")
        return False
    return True


def require_gup_flags(k: Kernel, gup_flags: int) -> None:
    """Raise NotInKernel for a FOLL_PIN / FOLL_LONGTERM the profile's kernel did not define."""
    if gup_flags & FOLL_PIN and not k.profile.has_foll_pin:
        raise NotInKernel("FOLL_PIN", k.profile)
    if gup_flags & FOLL_LONGTERM and not k.profile.has_foll_longterm:
        raise NotInKernel("FOLL_LONGTERM", k.profile)
