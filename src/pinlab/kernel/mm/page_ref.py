"""Reference-count arithmetic on struct page (v6.1 include/linux/page_ref.h).

`_refcount` is an atomic_t: a signed 32-bit integer whose additions wrap
(two's complement) rather than saturate or fail; only the callers that check
(try_get_page, try_grab_page) refuse to go on from a non-positive count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.mm.memmap import HUGETLB_PAGE_DTOR, PAGE_MAPPING_ANON, Memmap, compound_head
from pinlab.kernel.mm.page_alloc import free_folio

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

INT_MAX = 2**31 - 1


def wrap_s32(value: int) -> int:
    """Reduce `value` to the signed 32-bit range as atomic_t arithmetic does."""
    return (value + 2**31) % 2**32 - 2**31


def page_ref_count(m: Memmap, page: int) -> int:
    """v6.1 include/linux/page_ref.h page_ref_count: atomic_read(&page->_refcount)."""
    return int(m.refcount[page])


def set_page_count(m: Memmap, page: int, value: int) -> None:
    """v6.1 include/linux/page_ref.h set_page_count."""
    m.refcount[page] = wrap_s32(value)


def page_ref_add_return(m: Memmap, page: int, nr: int) -> int:
    """v6.1 include/linux/page_ref.h page_ref_add_return: wraps past INT_MAX."""
    value = wrap_s32(int(m.refcount[page]) + nr)
    m.refcount[page] = value
    return value


def page_ref_add(m: Memmap, page: int, nr: int) -> None:
    """v6.1 include/linux/page_ref.h page_ref_add."""
    page_ref_add_return(m, page, nr)


def page_ref_sub_return(m: Memmap, page: int, nr: int) -> int:
    """v6.1 include/linux/page_ref.h page_ref_sub_return."""
    return page_ref_add_return(m, page, -nr)


def page_ref_sub_and_test(m: Memmap, page: int, nr: int) -> bool:
    """v6.1 include/linux/page_ref.h page_ref_sub_and_test: true when the count hits 0."""
    return page_ref_add_return(m, page, -nr) == 0


def page_ref_inc_return(m: Memmap, page: int) -> int:
    """v6.1 include/linux/page_ref.h page_ref_inc_return."""
    return page_ref_add_return(m, page, 1)


def page_ref_add_unless(m: Memmap, page: int, nr: int, unless: int) -> bool:
    """v6.1 include/linux/page_ref.h page_ref_add_unless: add unless the count is `unless`."""
    if int(m.refcount[page]) == unless:
        return False
    page_ref_add(m, page, nr)
    return True


def folio_get(k: Kernel, folio: int) -> None:
    """v6.1 include/linux/mm.h folio_get: one more reference (VM_BUG_ON only under DEBUG_VM)."""
    page_ref_add(k.mem, folio, 1)


def get_page(k: Kernel, page: int) -> None:
    """v6.1 include/linux/mm.h get_page: folio_get on the page's folio."""
    folio_get(k, compound_head(k.mem, page))


def folio_put_refs(k: Kernel, folio: int, refs: int) -> None:
    """v6.1 include/linux/mm.h folio_put_refs: drop `refs`, free the folio when it reaches 0.

    A count that goes below zero is a use-after-free in the model: Debian's
    kernel (no CONFIG_DEBUG_VM) is silent, so the model records the underflow
    instead of freeing twice.
    """
    value = page_ref_sub_return(k.mem, folio, refs)
    if value == 0:
        free_folio(k, folio)
    elif value < 0 and value + refs >= 0:
        warn_on_once(k, "page_ref underflow")


def folio_put(k: Kernel, folio: int) -> None:
    """v6.1 include/linux/mm.h folio_put."""
    folio_put_refs(k, folio, 1)


def compound_tail_refcounted(k: Kernel, head: int) -> bool:
    """v4.4 include/linux/mm.h:458 __compound_tail_refcounted: anon, not slab, not hugetlb.

    Whether a reference to one of the compound page's tails is also counted in
    that tail's _mapcount (kernels with profile.thp_tail_refs_in_mapcount).
    """
    m = k.mem
    if not int(m.mapping[head]) & PAGE_MAPPING_ANON:
        return False
    if int(m.flags[head]) & k.pf.mask("PG_slab"):
        return False
    return int(m.dtor[head + 1]) != HUGETLB_PAGE_DTOR


def put_page(k: Kernel, page: int) -> None:
    """v6.1 include/linux/mm.h put_page: folio_put on the page's folio.

    v4.4 mm/swap.c:166 put_refcounted_compound_page: a THP tail's reference is
    also taken off the tail's _mapcount, then off the head's _count (as one step
    here; huge_memory_4_4.put_compound_page has the interleaving points).
    """
    head = compound_head(k.mem, page)
    tail_ref = head != page and k.profile.thp_tail_refs_in_mapcount
    if tail_ref and compound_tail_refcounted(k, head):
        k.mem.mapcount[page] -= 1
    folio_put(k, head)
