"""Kernel versions as data: what each modelled kernel has and how it counts pins.

Behaviour lives in the kernel functions; they read these facts.  Sources are
cited per field; ../shared/reference/kernel-facts.md collects them.
"""

from __future__ import annotations

from dataclasses import dataclass

# v6.1 include/linux/page-flags.h enum pageflags, x86-64 with Debian's config
# (CONFIG_MMU, ARCH_USES_PG_UNCACHED via X86_PAT, MEMORY_FAILURE, PAGE_IDLE_FLAG,
# 64BIT; no KASAN_HW_TAGS).  PG_anon_exclusive aliases PG_mappedtodisk.
PAGEFLAGS_6_1 = (
    "PG_locked",
    "PG_referenced",
    "PG_uptodate",
    "PG_dirty",
    "PG_lru",
    "PG_active",
    "PG_workingset",
    "PG_waiters",
    "PG_error",
    "PG_slab",
    "PG_owner_priv_1",
    "PG_arch_1",
    "PG_reserved",
    "PG_private",
    "PG_private_2",
    "PG_writeback",
    "PG_head",
    "PG_mappedtodisk",
    "PG_reclaim",
    "PG_swapbacked",
    "PG_unevictable",
    "PG_mlocked",
    "PG_uncached",
    "PG_hwpoison",
    "PG_young",
    "PG_idle",
    "PG_arch_2",
)

ALIASES_6_1 = {"PG_anon_exclusive": "PG_mappedtodisk"}


@dataclass(frozen=True, slots=True)
class Profile:
    """One kernel version's pin-relevant facts."""

    name: str
    release: str
    pageflags: tuple[str, ...]
    flag_aliases: dict[str, str]
    has_foll_pin: bool
    pin_bias: int
    exact_pincount_min_order: int | None
    pincount_page: int
    refcount_guard: bool
    page_anon_exclusive: bool
    mmf_has_pinned: bool
    fork_cow_pinned: bool
    longterm_file_write_refused: bool
    zero_page_pin_noop: bool
    page_maybe_dma_pinned: bool
    folio_maybe_dma_pinned: bool
    vmstat_foll_pin: bool
    longterm_migrates_cma: bool
    longterm_migrates_movable: bool
    dump_page_style: str
    pseudo: bool = False

    def flag_bit(self, name: str) -> int:
        """Bit number of page flag `name` (aliases resolved) in this kernel."""
        real = self.flag_aliases.get(name, name)
        try:
            return self.pageflags.index(real)
        except ValueError:
            raise KeyError(f"{name} does not exist in kernel {self.name}") from None

    def has_flag(self, name: str) -> bool:
        """Whether this kernel has page flag `name`."""
        return self.flag_aliases.get(name, name) in self.pageflags

    def exact_pincount(self, order: int) -> bool:
        """Whether a folio of this order keeps an exact pincount instead of the bias."""
        least = self.exact_pincount_min_order
        return least is not None and order >= least


P6_1 = Profile(
    name="6.1",
    release="6.1.192 (Debian linux-source-6.1 6.1.192-2)",
    pageflags=PAGEFLAGS_6_1,
    flag_aliases=ALIASES_6_1,
    # v6.1 mm/gup.c pin_user_pages*(), include/linux/mm.h GUP_PIN_COUNTING_BIAS (1U << 10)
    has_foll_pin=True,
    pin_bias=1024,
    # v5.18 5232c63f46fd: compound_pincount in page[1] for every compound page (order >= 1)
    exact_pincount_min_order=1,
    pincount_page=1,
    # v5.1 8fde12ca79af; v6.1 mm/gup.c try_grab_page: WARN_ON_ONCE(page_ref_count <= 0)
    refcount_guard=True,
    # v5.19 include/linux/page-flags.h PG_anon_exclusive
    page_anon_exclusive=True,
    # v5.14 a458b76a4171 MMF_HAS_PINNED, include/linux/sched/coredump.h bit 27
    mmf_has_pinned=True,
    # v5.9 70e806e4e645; v6.1 mm/memory.c copy_present_pte -> page_try_dup_anon_rmap
    fork_cow_pinned=True,
    longterm_file_write_refused=False,
    # v6.5 "mm: Don't pin ZERO_PAGE in pin_user_pages()", backported to 6.1.192 mm/gup.c
    zero_page_pin_noop=True,
    page_maybe_dma_pinned=True,
    folio_maybe_dma_pinned=True,
    vmstat_foll_pin=True,
    longterm_migrates_cma=True,
    longterm_migrates_movable=True,
    dump_page_style="6.1",
)

PROFILES: dict[str, Profile] = {p.name: p for p in (P6_1,)}


def get_profile(name: str) -> Profile:
    """Look a profile up by name; unknown names raise KeyError naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise KeyError(f"unknown kernel profile {name!r} (known: {known})") from None
