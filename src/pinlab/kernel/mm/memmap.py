"""The frame table: one struct page per PFN, as a struct of NumPy arrays.

Pages and folios are named by PFN (plain ints).  The fields mirror
v6.1 include/linux/mm_types.h struct page; the per-compound fields
(order, entire mapcount, exact pincount, destructor) live in the tail page
where the profile's kernel keeps them, so dump_page and the designs read them
from the same place the kernel does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pinlab.kernel.profiles import Profile

# v6.1 include/linux/mm.h enum compound_dtor_id
NULL_COMPOUND_DTOR = 0
COMPOUND_PAGE_DTOR = 1
HUGETLB_PAGE_DTOR = 2
TRANSHUGE_PAGE_DTOR = 3

# v6.1 include/linux/page-flags.h PAGE_MAPPING_ANON: low bit of page->mapping
PAGE_MAPPING_ANON = 0x1

NO_HEAD = -1


@dataclass(slots=True)
class Memmap:
    """struct page fields for every PFN (v6.1 include/linux/mm_types.h)."""

    flags: NDArray[np.uint64]
    refcount: NDArray[np.int32]
    mapcount: NDArray[np.int32]
    head: NDArray[np.int64]
    order: NDArray[np.uint8]
    compound_mapcount: NDArray[np.int32]
    pincount: NDArray[np.int32]
    dtor: NDArray[np.uint8]
    mapping: NDArray[np.int64]
    index: NDArray[np.int64]
    private: NDArray[np.int64]
    # The page's contents, one token standing for its 4096 bytes (0 = zeroes):
    # enough to tell which frame a write landed in.
    data: NDArray[np.int64]

    @property
    def nr_pages(self) -> int:
        """Number of PFNs in the table."""
        return int(self.refcount.shape[0])


def memmap_alloc(nr_pages: int) -> Memmap:
    """A table of `nr_pages` free struct pages (v6.1 mm/mm_init.c __init_single_page)."""
    return Memmap(
        flags=np.zeros(nr_pages, np.uint64),
        refcount=np.zeros(nr_pages, np.int32),
        mapcount=np.full(nr_pages, -1, np.int32),
        head=np.full(nr_pages, NO_HEAD, np.int64),
        order=np.zeros(nr_pages, np.uint8),
        compound_mapcount=np.zeros(nr_pages, np.int32),
        pincount=np.zeros(nr_pages, np.int32),
        dtor=np.zeros(nr_pages, np.uint8),
        mapping=np.zeros(nr_pages, np.int64),
        index=np.zeros(nr_pages, np.int64),
        private=np.zeros(nr_pages, np.int64),
        data=np.zeros(nr_pages, np.int64),
    )


def memmap_copy(m: Memmap) -> Memmap:
    """An independent copy of the table."""
    return Memmap(*(getattr(m, f).copy() for f in Memmap.__slots__))


def memmap_digest_parts(m: Memmap) -> list[bytes]:
    """The table's bytes, field by field, for hashing kernel state."""
    return [getattr(m, f).tobytes() for f in Memmap.__slots__]


class PageFlags:
    """Masks of one profile's page flags, looked up once (v6.1 include/linux/page-flags.h)."""

    __slots__ = ("_masks", "profile")

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        names = set(profile.pageflags) | set(profile.flag_aliases)
        self._masks = {n: 1 << profile.flag_bit(n) for n in names}

    def mask(self, name: str) -> int:
        """The bit mask of `name`; a flag this kernel lacks raises KeyError naming it."""
        try:
            return self._masks[name]
        except KeyError:
            raise KeyError(f"{name} does not exist in kernel {self.profile.name}") from None

    def names(self, value: int) -> list[str]:
        """Flag names set in `value`, in bit order (aliases not repeated)."""
        return [n for i, n in enumerate(self.profile.pageflags) if value >> i & 1]


def compound_head(m: Memmap, page: int) -> int:
    """The head page of `page` (v6.1 include/linux/page-flags.h _compound_head)."""
    head = int(m.head[page])
    return page if head == NO_HEAD else head


def folio_order(m: Memmap, folio: int) -> int:
    """Order of the folio headed by `folio` (v6.1 include/linux/mm.h folio_order: page[1])."""
    return int(m.order[folio + 1]) if m.head[folio] == NO_HEAD and _is_large(m, folio) else 0


def _is_large(m: Memmap, folio: int) -> bool:
    """Whether `folio` heads a compound page (its page[1] points back to it)."""
    return folio + 1 < m.nr_pages and int(m.head[folio + 1]) == folio


def folio_test_large(m: Memmap, folio: int) -> bool:
    """v6.1 include/linux/page-flags.h folio_test_large: head of a compound page."""
    return _is_large(m, folio)


def folio_nr_pages(m: Memmap, folio: int) -> int:
    """v6.1 include/linux/mm.h folio_nr_pages."""
    return 1 << folio_order(m, folio)
