"""Releasing what get_user_pages / pin_user_pages took: put_page and the unpin_user_page*
family (v6.1 mm/gup.c, include/linux/mm.h)."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pinlab.interleave import Point, Yield
from pinlab.kernel.bug import warn_on
from pinlab.kernel.mm.filemap import folio_mark_dirty, set_page_dirty_lock
from pinlab.kernel.mm.gup_flags import FOLL_GET, FOLL_PIN
from pinlab.kernel.mm.gup_page import Pages
from pinlab.kernel.mm.gup_put import gup_put_folio, unpin_folio_vmstat_last
from pinlab.kernel.mm.gup_range import unpin_folios_range, unpin_range_ok
from pinlab.kernel.mm.huge_memory_4_4 import put_compound_page
from pinlab.kernel.mm.locking import folio_lock, folio_unlock
from pinlab.kernel.mm.memmap import compound_head, folio_nr_pages, peek_head
from pinlab.kernel.profiles import require_gup_api

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/linux/err.h MAX_ERRNO: IS_ERR_VALUE covers [-4095, -1]
MAX_ERRNO = 4095


def put_page_api(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v6.1 include/linux/mm.h put_page, as a gup caller releases a FOLL_GET reference."""
    require_gup_api(k.profile, "put_page")
    head = peek_head(k.mem, page)
    if head != page and k.profile.thp_tail_refs_in_mapcount:
        # v4.4 mm/swap.c:272 put_page -> put_compound_page: the tail's _mapcount too
        yield from put_compound_page(k, page)
        return
    yield from gup_put_folio(k, head, 1, FOLL_GET, (page,))


def unpin_user_page(k: Kernel, page: int) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c unpin_user_page (the DEBUG_VM sanity check is not built on Debian)."""
    require_gup_api(k.profile, "unpin_user_page")
    if k.profile.pin_v5_7_order:
        yield from unpin_folio_vmstat_last(k, compound_head(k.mem, page))
    else:
        yield from gup_put_folio(k, peek_head(k.mem, page), 1, FOLL_PIN, (page,))


def _folio_runs(k: Kernel, pages: Sequence[int], peek: bool = False) -> list[tuple[int, int]]:
    """v6.1 mm/gup.c gup_folio_next: runs of consecutive entries in one folio.

    ``peek``: the heads are read only to name the footprints of the steps that follow
    (memmap.peek_head); those steps read them again.
    """
    head = peek_head if peek else compound_head
    runs: list[tuple[int, int]] = []
    for page in pages:
        folio = head(k.mem, page)
        if runs and runs[-1][0] == folio:
            runs[-1] = (folio, runs[-1][1] + 1)
        else:
            runs.append((folio, 1))
    return runs


def _page_list(pages: Pages | Sequence[int], npages: int) -> list[int]:
    """The first npages entries of a page array as ints."""
    if isinstance(pages, np.ndarray):
        return [int(p) for p in pages[:npages].tolist()]
    return [int(p) for p in pages[:npages]]


def unpin_user_pages(
    k: Kernel, pages: Pages | Sequence[int], npages: int
) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c unpin_user_pages: WARN on an -errno count, else one put per folio run."""
    require_gup_api(k.profile, "unpin_user_pages")
    if -MAX_ERRNO <= npages < 0:
        warn_on(k, "mm/gup.c unpin_user_pages IS_ERR_VALUE(npages)")
        return
    if unpin_range_ok(k):
        yield "unpin_user_pages:range"
        unpin_folios_range(k, np.asarray(pages[:npages], dtype=np.int64))
        return
    if k.profile.pin_v5_7_order:
        for page in _page_list(pages, npages):
            yield from unpin_user_page(k, page)
        return
    page_list = _page_list(pages, npages)
    i = 0
    for folio, nr in _folio_runs(k, page_list, peek=True):
        yield from gup_put_folio(k, folio, nr, FOLL_PIN, page_list[i : i + nr])
        i += nr


def _dirty_then_put(
    k: Kernel, folio: int, nr: int, make_dirty: bool, run: Sequence[int] = ()
) -> Generator[Yield, None, None]:
    """The loop body of v6.1 unpin_user_pages_dirty_lock / unpin_user_page_range_dirty_lock.

    ``run``: the pages of the run when ``folio`` was only peeked at (_folio_runs): its
    compound_head is read after the first yield.
    """
    if make_dirty:
        heads = frozenset(("page", page, "head") for page in run)
        yield Point("folio_test_dirty", reads=frozenset({("page", folio, "flags")}) | heads)
        if run:
            folio = compound_head(k.mem, run[0])
        if not int(k.mem.flags[folio]) & k.pf.mask("PG_dirty"):
            yield from folio_lock(k, folio)
            yield from folio_mark_dirty(k, folio)
            folio_unlock(k, folio)
    yield from gup_put_folio(k, folio, nr, FOLL_PIN)


def unpin_user_pages_dirty_lock(
    k: Kernel, pages: Pages | Sequence[int], npages: int, make_dirty: bool
) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c unpin_user_pages_dirty_lock: dirty clean folios under the folio lock, unpin.

    v5.7 dirties and unpins page by page (set_page_dirty_lock, unpin_user_page).
    """
    require_gup_api(k.profile, "unpin_user_pages_dirty_lock")
    if not make_dirty:
        yield from unpin_user_pages(k, pages, npages)
        return
    if k.profile.pin_v5_7_order:
        for page in _page_list(pages, npages):
            head = compound_head(k.mem, page)
            yield Point("PageDirty", reads=frozenset({("page", head, "flags")}))
            if not int(k.mem.flags[head]) & k.pf.mask("PG_dirty"):
                yield from set_page_dirty_lock(k, head)
            yield from unpin_user_page(k, head)
        return
    page_list = _page_list(pages, npages)
    i = 0
    for folio, nr in _folio_runs(k, page_list, peek=True):
        yield from _dirty_then_put(k, folio, nr, True, page_list[i : i + nr])
        i += nr


def unpin_user_page_range_dirty_lock(
    k: Kernel, page: int, npages: int, make_dirty: bool
) -> Generator[Yield, None, None]:
    """v6.1 mm/gup.c unpin_user_page_range_dirty_lock: consecutive PFNs from `page`."""
    require_gup_api(k.profile, "unpin_user_page_range_dirty_lock")
    i = 0
    while i < npages:
        nxt = page + i
        folio = compound_head(k.mem, nxt)
        nr = 1
        if folio_nr_pages(k.mem, folio) > 1:
            nr = min(npages - i, folio_nr_pages(k.mem, folio) - (nxt - folio))
        yield from _dirty_then_put(k, folio, nr, make_dirty)
        i += nr
