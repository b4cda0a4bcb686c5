"""Where a profile keeps pin counts, and the "maybe DMA-pinned?" queries.

Each query is one atomic read of shared state (refcount or exact pincount):
interleavable callers yield before calling it (footprint: `pinned_footprint`).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

from pinlab.kernel.mm.memmap import compound_head, folio_order
from pinlab.kernel.mm.page_alloc import peek_order
from pinlab.kernel.mm.types import MMF_HAS_PINNED, MmStruct, VmArea
from pinlab.kernel.profiles import require_api

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def has_exact_pincount(k: Kernel, folio: int) -> bool:
    """Whether this folio's pins are counted exactly (v5.7 hpage_pincount_available, v6.1 large)."""
    return k.profile.exact_pincount(folio_order(k.mem, folio))


def folio_pincount(k: Kernel, folio: int) -> int:
    """The exact pincount at the profile's tail page (v5.7 page[2], v6.1 page[1]); 0 where none.

    A folio without an exact count (small, bias-counted, or a profile without
    FOLL_PIN) keeps its pins inside _refcount, so it has no pincount field.
    """
    if not has_exact_pincount(k, folio):
        return 0
    return int(k.mem.pincount[folio + k.profile.pincount_page])


def pinned_footprint(k: Kernel, folio: int) -> frozenset[Hashable]:
    """The locations folio_maybe_dma_pinned reads (for the caller's yield Point)."""
    if k.profile.exact_pincount(peek_order(k.mem, folio)):
        return frozenset({("page", folio + k.profile.pincount_page, "pincount")})
    return frozenset({("page", folio, "refcount")})


def _maybe_pinned(k: Kernel, folio: int) -> bool:
    """The test on a folio head: the maybe_dma_pinned hook's, or the profile's."""
    if k.hooks.maybe_dma_pinned is not None:
        return k.hooks.maybe_dma_pinned(k, folio)
    return maybe_pinned_test(k, folio)


def maybe_pinned_test(k: Kernel, folio: int) -> bool:
    """The profile's own "maybe DMA-pinned?" test on a folio head: what the hook replaces."""
    if has_exact_pincount(k, folio):
        return folio_pincount(k, folio) > 0
    # Unsigned compare: a count wrapped negative still reads as pinned (v6.1 include/linux/mm.h).
    return (int(k.mem.refcount[folio]) & 0xFFFF_FFFF) >= k.profile.pin_bias


def folio_maybe_dma_pinned(k: Kernel, folio: int) -> bool:
    """v6.1 include/linux/mm.h folio_maybe_dma_pinned: exact for large folios, bias for small."""
    require_api(k.profile, k.profile.folio_maybe_dma_pinned, "folio_maybe_dma_pinned")
    return _maybe_pinned(k, folio)


def page_maybe_dma_pinned(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/mm.h page_maybe_dma_pinned; v5.7: same test on compound_head(page)."""
    require_api(k.profile, k.profile.page_maybe_dma_pinned, "page_maybe_dma_pinned")
    return _maybe_pinned(k, compound_head(k.mem, page))


def mm_has_pinned(mm: MmStruct) -> bool:
    """test_bit(MMF_HAS_PINNED, &mm->flags) (v6.1 include/linux/sched/coredump.h)."""
    return bool(mm.flags >> MMF_HAS_PINNED & 1)


def page_needs_cow_for_dma(k: Kernel, mm: MmStruct, vma: VmArea, page: int) -> bool:
    """v6.1 include/linux/mm.h page_needs_cow_for_dma: MMF_HAS_PINNED and maybe pinned.

    The VM_BUG_ON on write_protect_seq is a CONFIG_DEBUG_VM check Debian's
    kernel does not build; `vma` is kept for the kernel's signature.
    """
    require_api(k.profile, k.profile.page_needs_cow_for_dma, "page_needs_cow_for_dma")
    if not mm_has_pinned(mm):
        return False
    return page_maybe_dma_pinned(k, page)
