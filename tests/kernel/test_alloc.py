"""The page allocator (v6.1 mm/page_alloc.c): buddy split/merge, compound pages, hugetlb pool."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pinlab.kernel.mm.memmap import folio_nr_pages, folio_order
from pinlab.kernel.mm.page_alloc import (
    __GFP_COMP,
    GFP_HIGHUSER_MOVABLE,
    alloc_hugetlb_folio,
    alloc_pages,
)
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.pgtable import HPAGE_PMD_ORDER
from pinlab.kernel.state import BootParams, Kernel, boot


def free_pages_count(k: Kernel) -> int:
    return sum(len(s) << o for o, s in enumerate(k.free_area.blocks["normal"]))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([0, 0, 0, 1, 3, 9]), min_size=1, max_size=12), st.randoms())
def test_alloc_free_roundtrip_merges_back(orders: list[int], rnd: object) -> None:
    """Freeing everything, in any order, merges the buddies back (free count restored)."""
    k = boot("6.1", BootParams(normal_mb=32))
    before = free_pages_count(k)
    got = []
    for order in orders:
        pfn = alloc_pages(k, GFP_HIGHUSER_MOVABLE | (__GFP_COMP if order else 0), order)
        assert pfn is not None
        assert pfn % (1 << order) == 0  # buddy blocks are naturally aligned
        assert int(k.mem.refcount[pfn]) == 1  # post_alloc_hook: set_page_refcounted
        if order:
            assert folio_order(k.mem, pfn) == order
            assert folio_nr_pages(k.mem, pfn) == 1 << order
        got.append(pfn)
    assert free_pages_count(k) == before - sum(1 << o for o in orders)
    rnd.shuffle(got)  # type: ignore[attr-defined]
    for pfn in got:
        folio_put(k, pfn)
    assert free_pages_count(k) == before


def test_compound_page_layout_6_1() -> None:
    """v6.1 prep_compound_page: tails point at the head; order, entire mapcount (-1) and
    pincount (0) live in page[1] (v5.18+)."""
    k = boot("6.1", BootParams(normal_mb=8))
    head = alloc_pages(k, GFP_HIGHUSER_MOVABLE | __GFP_COMP, HPAGE_PMD_ORDER)
    assert head is not None
    assert (k.mem.head[head + 1 : head + 512] == head).all()
    assert int(k.mem.order[head + 1]) == HPAGE_PMD_ORDER
    assert int(k.mem.compound_mapcount[head + 1]) == -1
    assert int(k.mem.refcount[head + 1]) == 0


def test_hugetlb_pool_returns_freed_pages() -> None:
    """v6.1 mm/hugetlb.c free_huge_page: a huge page at refcount 0 goes back to the pool."""
    k = boot("6.1", BootParams(normal_mb=8, hugepages_2m=2))
    a = alloc_hugetlb_folio(k, HPAGE_PMD_ORDER)
    b = alloc_hugetlb_folio(k, HPAGE_PMD_ORDER)
    assert a is not None and b is not None
    assert alloc_hugetlb_folio(k, HPAGE_PMD_ORDER) is None
    folio_put(k, a)
    assert k.hugetlb.free[HPAGE_PMD_ORDER] == [a]
    assert int(k.mem.flags[a]) & k.pf.mask("PG_head")
