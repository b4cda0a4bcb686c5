"""FOLL_TOUCH's folio_mark_accessed / mark_page_accessed, each kernel's own (mm/swap.py).

Rows are kernel facts: version, file, function, line.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
from tests.kernel.gupstate import anon_vma, fault_anon, fault_thp, new_mm

from pinlab.interleave import run_to_completion as run
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import FOLL_GET
from pinlab.kernel.mm.gup_unpin import put_page_api
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.swap import folio_mark_accessed, lru_add_drain
from pinlab.kernel.state import Kernel, boot

BASE = 0x7F00_0000_0000
THP = 0x7F00_0020_0000


def _bits(k: Kernel, page: int) -> set[str]:
    names = ("PG_referenced", "PG_active", "PG_lru")
    return {n for n in names if int(k.mem.flags[page]) & k.pf.mask(n)}


class Touch(NamedTuple):
    profile: str
    cite: str


TOUCH = (
    Touch("6.1", "v6.1 mm/gup.c follow_page_pte FOLL_TOUCH -> mm/swap.c folio_mark_accessed :467"),
    Touch(
        "5.7",
        "v5.7.14 mm/gup.c follow_page_pte -> mm/swap.c mark_page_accessed :373, "
        "activate_page :307 (activate_page_pvecs)",
    ),
    Touch(
        "4.4",
        "v4.4.178 mm/gup.c follow_page_pte -> mm/swap.c mark_page_accessed :605, "
        "activate_page :536",
    ),
)


@pytest.mark.parametrize("row", TOUCH, ids=lambda r: r.profile)
def test_second_gup_touch_activates_an_inactive_lru_page(row: Touch) -> None:
    """gup adds FOLL_TOUCH: the first touch sets PG_referenced; the second queues the LRU page
    in this CPU's activate batch (+1 ref, PG_referenced cleared), and the drain sets
    PG_active and drops the batch's reference."""
    k = boot(row.profile)
    mm = new_mm(k)
    page = fault_anon(k, mm, anon_vma(k, mm, BASE, 4096), BASE)
    base = int(k.mem.refcount[page])

    def touch() -> None:
        pages = page_array(1)
        run(mmap_read_lock(k, mm))
        assert run(get_user_pages(k, mm, BASE, 1, FOLL_GET, pages)) == 1
        mmap_read_unlock(k, mm)
        run(put_page_api(k, int(pages[0])))

    touch()
    assert _bits(k, page) == {"PG_referenced", "PG_lru"}, row.cite
    touch()
    assert _bits(k, page) == {"PG_lru"}, row.cite
    assert int(k.mem.refcount[page]) == base + 1, row.cite
    run(lru_add_drain(k))
    assert _bits(k, page) == {"PG_active", "PG_lru"}, row.cite
    assert int(k.mem.refcount[page]) == base, row.cite


class Large(NamedTuple):
    profile: str
    drained_at_once: bool
    cite: str


LARGE = (
    Large(
        "6.1",
        True,
        "v6.1 mm/swap.c folio_activate :361 -> folio_batch_add_and_move :249: "
        "!folio_may_be_lru_cached (include/linux/swap.h:395) moves the batch at once",
    ),
    Large("5.7", True, "v5.7.14 mm/swap.c activate_page :314: PageCompound drains the pagevec"),
    Large("4.4", False, "v4.4.178 mm/swap.c activate_page :542: only a full pagevec (14) drains"),
)


@pytest.mark.parametrize("row", LARGE, ids=lambda r: r.profile)
def test_activating_a_thp_drains_the_batch_only_where_the_kernel_does(row: Large) -> None:
    """The second touch of an inactive LRU THP: 6.1 and 5.7 activate it at once; 4.4 leaves it
    (and its batch reference) in activate_page_pvecs until a drain."""
    k = boot(row.profile)
    mm = new_mm(k)
    head = fault_thp(k, mm, anon_vma(k, mm, THP, 2 << 20), THP)
    base = int(k.mem.refcount[head])
    run(folio_mark_accessed(k, head))
    run(folio_mark_accessed(k, head))
    if row.drained_at_once:
        assert _bits(k, head) == {"PG_active", "PG_lru"}, row.cite
        assert int(k.mem.refcount[head]) == base and k.lru_activate[0] == [], row.cite
    else:
        assert _bits(k, head) == {"PG_lru"}, row.cite
        assert int(k.mem.refcount[head]) == base + 1 and k.lru_activate[0] == [head], row.cite
        run(lru_add_drain(k))
        assert _bits(k, head) == {"PG_active", "PG_lru"}, row.cite
        assert int(k.mem.refcount[head]) == base, row.cite


@pytest.mark.parametrize("profile", ["6.1", "5.7", "4.4"])
def test_touch_of_an_active_or_unevictable_page_only_references_it(profile: str) -> None:
    """v6.1 mm/swap.c:475-482, v5.7.14 :377-385, v4.4.178 :607-625: an active page, or an
    unevictable one, gets PG_referenced and is never queued for activation."""
    k = boot(profile)
    mm = new_mm(k)
    for i, extra in enumerate(("PG_active", "PG_unevictable")):
        addr = BASE + i * 4096
        page = fault_anon(k, mm, anon_vma(k, mm, addr, 4096), addr)
        k.mem.flags[page] |= k.pf.mask(extra)
        base = int(k.mem.refcount[page])
        for _ in range(3):
            run(folio_mark_accessed(k, page))
            assert int(k.mem.flags[page]) & k.pf.mask("PG_referenced")
            assert int(k.mem.refcount[page]) == base and k.lru_activate[0] == []
