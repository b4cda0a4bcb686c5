"""Reverse-map accounting: mapcounts, page->mapping of anon pages, PageAnonExclusive.

v6.1 mm/rmap.c and include/linux/rmap.h.  Each function is one atomic step
on struct page; interleavable callers yield before calling it.  page->mapping
is encoded as a tagged "pointer": an anon page holds
``anon_vma_id << 2 | PAGE_MAPPING_ANON``, a page-cache page ``as_id << 2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinlab.kernel.mm.memmap import (
    HUGETLB_PAGE_DTOR,
    PAGE_MAPPING_ANON,
    compound_head,
    folio_nr_pages,
    folio_order,
    folio_test_large,
)
from pinlab.kernel.mm.pgtable import PAGE_SHIFT
from pinlab.kernel.mm.types import VmArea

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/linux/page-flags.h PAGE_MAPPING_FLAGS
PAGE_MAPPING_FLAGS = 0x3


def anon_mapping_value(anon_vma: int) -> int:
    """The page->mapping value of an anon page of `anon_vma` (PAGE_MAPPING_ANON tagged)."""
    return anon_vma << 2 | PAGE_MAPPING_ANON


def file_mapping_value(as_id: int) -> int:
    """The page->mapping value of a page-cache page of address_space `as_id`."""
    return as_id << 2


def PageAnon(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/page-flags.h PageAnon: the folio's mapping has the anon bit."""
    return bool(int(k.mem.mapping[compound_head(k.mem, page)]) & PAGE_MAPPING_ANON)


def page_mapping_id(k: Kernel, page: int) -> int | None:
    """The address_space id of a page-cache page, None for anon or unmapped (page_mapping)."""
    value = int(k.mem.mapping[compound_head(k.mem, page)])
    if value == 0 or value & PAGE_MAPPING_FLAGS:
        return None
    return value >> 2


def PageHuge(k: Kernel, page: int) -> bool:
    """v6.1 mm/hugetlb.c PageHuge: a compound page with the hugetlb destructor."""
    head = compound_head(k.mem, page)
    return folio_test_large(k.mem, head) and int(k.mem.dtor[head + 1]) == HUGETLB_PAGE_DTOR


def linear_page_index(vma: VmArea, address: int) -> int:
    """v6.1 include/linux/pagemap.h linear_page_index."""
    return ((address - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff


def PageAnonExclusive(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/page-flags.h PageAnonExclusive (hugetlb: tested on the head)."""
    if PageHuge(k, page):
        page = compound_head(k.mem, page)
    return bool(int(k.mem.flags[page]) & k.pf.mask("PG_anon_exclusive"))


def SetPageAnonExclusive(k: Kernel, page: int) -> None:
    """v6.1 include/linux/page-flags.h SetPageAnonExclusive."""
    k.mem.flags[page] |= k.pf.mask("PG_anon_exclusive")


def ClearPageAnonExclusive(k: Kernel, page: int) -> None:
    """v6.1 include/linux/page-flags.h ClearPageAnonExclusive."""
    k.mem.flags[page] &= ~k.pf.mask("PG_anon_exclusive") & 0xFFFF_FFFF_FFFF_FFFF


def PageDoubleMap(k: Kernel, head: int) -> bool:
    """v6.1 include/linux/page-flags.h PageDoubleMap: the page[1] flag (profile.double_map_flag)."""
    name = k.profile.double_map_flag
    return name is not None and bool(int(k.mem.flags[head + 1]) & k.pf.mask(name))


def TestSetPageDoubleMap(k: Kernel, head: int) -> bool:
    """v6.1 TestSetPageDoubleMap: set it, return whether it was already set."""
    name = k.profile.double_map_flag
    assert name is not None
    was = PageDoubleMap(k, head)
    k.mem.flags[head + 1] |= k.pf.mask(name)
    return was


def TestClearPageDoubleMap(k: Kernel, head: int) -> bool:
    """v6.1 TestClearPageDoubleMap: clear it, return whether it was set."""
    name = k.profile.double_map_flag
    if name is None:
        return False
    was = PageDoubleMap(k, head)
    k.mem.flags[head + 1] &= ~k.pf.mask(name) & 0xFFFF_FFFF_FFFF_FFFF
    return was


def page_mapcount(k: Kernel, page: int) -> int:
    """v6.1 include/linux/mm.h page_mapcount; compound: mm/util.c __page_mapcount.

    v4.4 include/linux/mm.h:447 page_mapcount is the page's own _mapcount + 1: for
    a THP head its PMD mappings (kept here in page[1]), for a tail the gup
    references counted there (profile.thp_tail_refs_in_mapcount).
    """
    m = k.mem
    own = int(m.mapcount[page]) + 1
    head = compound_head(m, page)
    if not folio_test_large(m, head):
        return own
    if k.profile.thp_tail_refs_in_mapcount:
        return own + int(m.compound_mapcount[head + 1]) + 1 if page == head else own
    if not PageAnon(k, page) and not PageHuge(k, page):
        return own
    ret = own + int(m.compound_mapcount[head + 1]) + 1
    return ret - 1 if PageDoubleMap(k, head) else ret


def folio_mapcount(k: Kernel, folio: int) -> int:
    """v6.1 mm/util.c folio_mapcount: entire mappings plus per-page mappings.

    v4.4 (profile.thp_tail_refs_in_mapcount): a THP is mapped by PMDs only and its
    tails' _mapcount count gup references, so its mapcount is the head's.
    """
    m = k.mem
    if not folio_test_large(m, folio):
        return int(m.mapcount[folio]) + 1
    compound = int(m.compound_mapcount[folio + 1]) + 1
    if PageHuge(k, folio):
        return compound
    if k.profile.thp_tail_refs_in_mapcount:
        return compound + int(m.mapcount[folio]) + 1
    nr = folio_nr_pages(m, folio)
    total = compound + int((m.mapcount[folio : folio + nr] + 1).sum())
    if not PageAnon(k, folio):
        return total - compound * nr
    return total - nr if PageDoubleMap(k, folio) else total


def page_mapped(k: Kernel, page: int) -> bool:
    """v6.1 mm/util.c folio_mapped on the page's folio."""
    return folio_mapcount(k, compound_head(k.mem, page)) > 0


def __page_set_anon_rmap(k: Kernel, page: int, vma: VmArea, address: int, exclusive: bool) -> None:
    """v6.1 mm/rmap.c __page_set_anon_rmap: point mapping at the anon_vma, set exclusivity."""
    assert vma.anon_vma is not None, "anon_vma_prepare must run first"
    m = k.mem
    head = compound_head(m, page)
    if not int(m.mapping[head]) & PAGE_MAPPING_ANON:
        m.mapping[head] = anon_mapping_value(vma.anon_vma)
        m.index[head] = linear_page_index(vma, address)
    if exclusive and k.profile.page_anon_exclusive:
        SetPageAnonExclusive(k, page)


def page_add_new_anon_rmap(k: Kernel, page: int, vma: VmArea, address: int) -> None:
    """v6.1 mm/rmap.c page_add_new_anon_rmap: first mapping of a fresh anon page or THP."""
    m = k.mem
    m.flags[page] |= k.pf.mask("PG_swapbacked")
    if folio_test_large(m, page):
        m.compound_mapcount[page + 1] = 0
        if k.profile.exact_pincount(folio_order(m, page)):
            m.pincount[page + k.profile.pincount_page] = 0
    else:
        m.mapcount[page] = 0
    __page_set_anon_rmap(k, page, vma, address, True)


def hugepage_add_new_anon_rmap(k: Kernel, page: int, vma: VmArea, address: int) -> None:
    """v6.1 mm/rmap.c hugepage_add_new_anon_rmap: entire mapcount 0, pincount 0, exclusive."""
    m = k.mem
    m.compound_mapcount[page + 1] = 0
    if k.profile.exact_pincount(folio_order(m, page)):
        m.pincount[page + k.profile.pincount_page] = 0
    __page_set_anon_rmap(k, page, vma, address, True)


def page_dup_rmap(k: Kernel, page: int, compound: bool) -> None:
    """v6.1 include/linux/rmap.h __page_dup_rmap: one more mapping of the page or whole folio."""
    if compound:
        k.mem.compound_mapcount[page + 1] += 1
    else:
        k.mem.mapcount[page] += 1


def page_add_file_rmap(k: Kernel, page: int, vma: VmArea, compound: bool) -> None:
    """v6.1 mm/rmap.c page_add_file_rmap (PMD-mapped file THPs are not modelled)."""
    if compound and PageHuge(k, page):
        k.mem.compound_mapcount[page + 1] += 1
        return
    k.mem.mapcount[page] += 1


def page_remove_rmap(k: Kernel, page: int, vma: VmArea, compound: bool) -> None:
    """v6.1 mm/rmap.c page_remove_rmap: drop one PTE (or whole-folio) mapping.

    The last PMD mapping of a double-mapped anon THP also drops the extra
    per-subpage mapcounts (v6.1 page_remove_anon_compound_rmap).
    """
    m = k.mem
    if not compound:
        m.mapcount[page] -= 1
        return
    m.compound_mapcount[page + 1] -= 1
    last = int(m.compound_mapcount[page + 1]) < 0 and not PageHuge(k, page)
    if last and PageAnon(k, page) and TestClearPageDoubleMap(k, page):
        m.mapcount[page : page + folio_nr_pages(m, page)] -= 1


def page_move_anon_rmap(k: Kernel, page: int, vma: VmArea) -> None:
    """v6.1 mm/rmap.c page_move_anon_rmap: the folio now belongs to this VMA's anon_vma.

    v4.4 / v5.7 mm/rmap.c page_move_anon_rmap only re-points the mapping.
    """
    assert vma.anon_vma is not None
    head = compound_head(k.mem, page)
    k.mem.mapping[head] = anon_mapping_value(vma.anon_vma)
    if k.profile.page_anon_exclusive:
        SetPageAnonExclusive(k, page)
