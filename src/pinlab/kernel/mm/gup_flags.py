"""FOLL_* flags of the get_user_pages family, and which of them each kernel defines.

The constants carry v6.1's values (include/linux/mm.h), which the flags the
kernels share keep in v4.4 and v5.7 too, save bit 0x80: FOLL_SPLIT in v4.4 and
v5.7, FOLL_NOFAULT in v6.1 (foll_split / foll_nofault read it per profile).
v6.5 renumbered every flag; the model keeps v6.1's encoding for it (FOLL_FLAGS_6_5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinlab.interleave import Unmodelled
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.profiles import NotInKernel, Profile

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

FOLL_WRITE = 0x01
FOLL_TOUCH = 0x02
FOLL_GET = 0x04
FOLL_DUMP = 0x08
FOLL_FORCE = 0x10
FOLL_NOWAIT = 0x20
# v6.1 include/linux/mm.h:3094 FOLL_NOFAULT (v5.16): do not fault pages in
FOLL_NOFAULT = 0x80
# v4.4 include/linux/mm.h:2116, v5.7 :2783 FOLL_SPLIT: split a THP before returning a page
# of it; the same bit, which v6.1 gives FOLL_NOFAULT
FOLL_SPLIT = 0x80
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

# The flags each kernel's include/linux/mm.h defines that the model names (not its
# FOLL_POPULATE 0x40, FOLL_NUMA 0x200, FOLL_MLOCK 0x1000 of v4.4 / v5.7).
# v4.4.178 :2108-2123: no FOLL_REMOTE (v4.6), FOLL_LONGTERM, FOLL_SPLIT_PMD, FOLL_PIN; its
# FOLL_COW (:2122) is stable 4.4.26's, not the mainline v4.4's that the profile models
# (profile.foll_force_write "drop_write")
FOLL_FLAGS_4_4 = {
    "FOLL_WRITE": FOLL_WRITE,
    "FOLL_TOUCH": FOLL_TOUCH,
    "FOLL_GET": FOLL_GET,
    "FOLL_DUMP": FOLL_DUMP,
    "FOLL_FORCE": FOLL_FORCE,
    "FOLL_NOWAIT": FOLL_NOWAIT,
    "FOLL_SPLIT": FOLL_SPLIT,
    "FOLL_HWPOISON": FOLL_HWPOISON,
    "FOLL_MIGRATION": FOLL_MIGRATION,
    "FOLL_TRIED": FOLL_TRIED,
    "FOLL_ANON": FOLL_ANON,
}
# v5.7.14 :2775-2794: no FOLL_FAST_ONLY (v5.8), no FOLL_NOFAULT
FOLL_FLAGS_5_7 = {
    **FOLL_FLAGS_4_4,
    "FOLL_REMOTE": FOLL_REMOTE,
    "FOLL_COW": FOLL_COW,
    "FOLL_LONGTERM": FOLL_LONGTERM,
    "FOLL_SPLIT_PMD": FOLL_SPLIT_PMD,
    "FOLL_PIN": FOLL_PIN,
}
# v6.1.192 :3087-3103: FOLL_NOFAULT on 0x80, no FOLL_SPLIT nor FOLL_COW
FOLL_FLAGS_6_1 = {
    **{n: v for n, v in FOLL_FLAGS_5_7.items() if n not in ("FOLL_SPLIT", "FOLL_COW")},
    "FOLL_NOFAULT": FOLL_NOFAULT,
    "FOLL_FAST_ONLY": FOLL_FAST_ONLY,
}
# v6.5 defines its flags as enums with new values: include/linux/mm_types.h:1257-1298 (WRITE
# 1 << 0, GET, DUMP, FORCE, NOWAIT, NOFAULT, HWPOISON, ANON, LONGTERM 1 << 8, SPLIT_PMD,
# PCI_P2PDMA, INTERRUPTIBLE, HONOR_NUMA_FAULT 1 << 12) and mm/internal.h:934-947 (TOUCH
# 1 << 16, TRIED, REMOTE, PIN, FAST_ONLY, UNLOCKABLE 1 << 21).  The names it shares with the
# model keep the model's (v6.1) encoding here; FOLL_MIGRATION is gone (v6.2), and the
# four flags new since 6.1 (PCI_P2PDMA, INTERRUPTIBLE, HONOR_NUMA_FAULT, UNLOCKABLE) are
# not modelled.
FOLL_FLAGS_6_5 = {n: v for n, v in FOLL_FLAGS_6_1.items() if n != "FOLL_MIGRATION"}
FOLL_TABLES = {
    "4.4": FOLL_FLAGS_4_4,
    "5.7": FOLL_FLAGS_5_7,
    "6.1": FOLL_FLAGS_6_1,
    "6.5": FOLL_FLAGS_6_5,
}


def foll_flags(profile: Profile) -> dict[str, int]:
    """The FOLL_* flags the profile's kernel defines, by name (profile.foll_flags)."""
    return FOLL_TABLES[profile.foll_flags]


def foll_split(k: Kernel, gup_flags: int) -> bool:
    """Whether ``gup_flags`` asks for FOLL_SPLIT in the profile's kernel (v4.4, v5.7)."""
    return bool(gup_flags & FOLL_SPLIT) and "FOLL_SPLIT" in foll_flags(k.profile)


def foll_nofault(k: Kernel, gup_flags: int) -> bool:
    """Whether ``gup_flags`` asks for FOLL_NOFAULT in the profile's kernel (v6.1, v6.5)."""
    return bool(gup_flags & FOLL_NOFAULT) and "FOLL_NOFAULT" in foll_flags(k.profile)


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
    """Raise NotInKernel for a flag bit the profile's kernel did not define, Unmodelled for
    v5.7's FOLL_SPLIT (mm/gup.c:632-641 follow_pmd_mask: the model has v4.4's only)."""
    if gup_flags & FOLL_PIN and not k.profile.has_foll_pin:
        raise NotInKernel("FOLL_PIN", k.profile)
    if gup_flags & FOLL_LONGTERM and not k.profile.has_foll_longterm:
        raise NotInKernel("FOLL_LONGTERM", k.profile)
    known = foll_flags(k.profile)
    unknown = gup_flags & ~sum(known.values())
    if unknown:
        raise NotInKernel(f"gup_flags {unknown:#x}", k.profile)
    if foll_split(k, gup_flags) and not k.profile.thp_tail_refs_in_mapcount:
        raise Unmodelled("follow_pmd_mask", "v5.7 FOLL_SPLIT")
