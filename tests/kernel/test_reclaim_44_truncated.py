"""v4.4.178 reclaim of a page truncate left with buffers and no mapping.

mm/vmscan.c:1150-1185 shrink_page_list: "pages which were not successfully invalidated in
truncate_complete_page" keep their buffers after leaving the page cache; reclaim drops the
buffers (try_to_release_page -> try_to_free_buffers, no mapping) and, if its isolation
reference is then the only one, unlocks the page and puts it: freed at zero (free_it), or,
if a speculative reference came in between, left off the LRU for that holder's put to free
(nr_reclaimed++, continue).  Values come out of the model.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import cache

from tests.kernel.test_reclaim_44 import _kernel, _mapping

from pinlab.explore import GenThread, Options, explore
from pinlab.explore.program import FinalCheck
from pinlab.interleave import Point, Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel.fs.buffer import attach_buffers
from pinlab.kernel.mm.filemap import filemap_remove_folio, folio_put_footprint
from pinlab.kernel.mm.page_ref import folio_put, page_ref_add_unless
from pinlab.kernel.mm.vmscan import isolate_lru_page, putback_page, shrink_page_list
from pinlab.kernel.state import Kernel
from pinlab.scenarios.harness import kernel_program


def _truncated() -> Kernel:
    """A clean, unmapped data=journal page with buffers, on the inactive LRU, removed from
    the page cache as truncate_complete_page does when its buffers could not be dropped:
    the buffers' reference is its only one."""
    k, page = _kernel(mapped=False)
    attach_buffers(k, page)
    filemap_remove_folio(k, _mapping(k), page)
    assert int(k.mem.refcount[page]) == 1
    return k


@cache
def _pfn() -> int:
    """The page (the same frame in every kernel _truncated makes)."""
    k = _truncated()
    return int(k.mem.private.nonzero()[0][0])


def test_a_truncated_page_with_buffers_is_freed() -> None:
    k, page = _truncated(), _pfn()
    assert run(isolate_lru_page(k, page, False))
    assert run(shrink_page_list(k, page, kswapd=True)) == (True, False, False)
    assert int(k.mem.refcount[page]) == 0
    assert int(k.mem.flags[page]) == 0  # freed: no PG_locked, PG_lru or PG_private left


def _reclaim(k: Kernel) -> Generator[Yield, None, None]:
    """kswapd over the page: isolate, shrink_page_list, put back what it kept."""
    assert (yield from isolate_lru_page(k, _pfn(), False))
    reclaimed, _, _ = yield from shrink_page_list(k, _pfn(), kswapd=True)
    if not reclaimed:
        yield from putback_page(k, _pfn())


def _speculative(k: Kernel) -> Generator[Yield, None, None]:
    """A speculative reference (get_page_unless_zero, as find_get_page or gup-fast take
    one), dropped again."""
    yield Point("get_page_unless_zero", writes=frozenset({("page", _pfn(), "refcount")}))
    if not page_ref_add_unless(k.mem, _pfn(), 1, 0):
        return
    yield Point("put_page", writes=folio_put_footprint(k, _pfn()))
    folio_put(k, _pfn())


def test_a_speculative_reference_between_the_count_and_the_put_frees_the_page_later() -> None:
    """Whoever drops the last reference frees the page: reclaim's put_page_testzero, or the
    speculative holder's put (a reference seen at the count check keeps the page, :1170,
    and reclaim puts it back); in every end state the page is free and off the LRU."""
    ends: set[tuple[int, int]] = set()

    def record(k: Kernel) -> bool:
        ends.add((int(k.mem.refcount[_pfn()]), int(k.mem.flags[_pfn()])))
        return True

    program = kernel_program(
        "reclaim-4.4-truncated",
        _truncated,
        (GenThread("kswapd", _reclaim), GenThread("speculative", _speculative)),
        finals=(FinalCheck("record", record),),
        checked=True,
    )
    res = explore(program, Options(strategy="dfs"))
    assert res.complete and not res.errors and not res.violated, res.errors[:1]
    assert not res.unmodelled
    assert ends == {(0, 0)}
