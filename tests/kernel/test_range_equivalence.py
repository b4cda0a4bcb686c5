"""The whole-range gup step leaves exactly the state of the page-by-page slow path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import anon_vma, fault_anon, fault_thp, new_mm

from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.gup import get_user_pages_remote, page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.pgtable import _PAGE_RW, PAGE_SIZE, PMD_SHIFT, PMD_SIZE
from pinlab.kernel.state import Kernel, boot, kernel_copy, kernel_digest

PROFILES = ["4.4", "5.7", "6.1", "6.5", "foll-pin-bias-v4"]
NEAR_MAX = 2**31 - 1


def _build(profile: str, layout: list[int], bumps: list[int]) -> tuple[Kernel, int]:
    """Two PMD-sized slots: each is empty (0), small pages (1), R/O small pages (2) or a THP (3)."""
    k = boot(profile)
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, len(layout) * PMD_SIZE)
    for n, kind in enumerate(layout):
        base = PMD_SIZE * (n + 1)
        if kind in (1, 2):
            for i in range(0, 512, 3):
                fault_anon(k, mm, vma, base + i * PAGE_SIZE)
            if kind == 2:
                mm.pgtable.pte[base >> PMD_SHIFT] &= ~np.uint64(_PAGE_RW)
        elif kind == 3:
            fault_thp(k, mm, vma, base)
    for pfn, bump in zip(np.flatnonzero(k.mem.refcount > 0)[1:].tolist(), bumps, strict=False):
        k.mem.refcount[pfn] = NEAR_MAX - bump
    return k, mm.id


def _run(k: Kernel, mm_id: int, ops: list[tuple[int, int, int, int]]) -> list[object]:
    mm = k.mms[mm_id]
    out: list[object] = []
    held: list[list[int]] = []
    for kind, first, nr, flags in ops:
        start = PMD_SIZE + first * PAGE_SIZE
        pages = page_array(max(nr, 1))
        if kind == 0 and k.profile.has_foll_pin:
            ret = run_to_completion(pin_user_pages(k, mm, start, nr, flags, pages))
            if ret > 0:
                held.append(pages[:ret].tolist())
        elif kind == 1 and held and k.profile.has_foll_pin:
            got = held.pop()
            run_to_completion(unpin_user_pages(k, np.array(got, np.int64), len(got)))
            ret = len(got)
        else:
            flags &= ~FOLL_LONGTERM
            api = "get_user_pages_remote" in k.profile.gup_apis
            ret = (
                run_to_completion(get_user_pages_remote(k, mm, start, nr, flags, pages))
                if api
                else 0
            )
        out.append((ret, pages[: max(ret, 0)].tolist()))
    return out


@settings(max_examples=40, deadline=None)
@given(
    profile=st.sampled_from(PROFILES),
    layout=st.lists(st.integers(0, 3), min_size=1, max_size=2),
    bumps=st.lists(st.integers(0, 5000), max_size=3),
    ops=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 1023),
            st.integers(0, 1100),
            st.sampled_from([0, FOLL_WRITE, FOLL_LONGTERM, FOLL_WRITE | FOLL_LONGTERM]),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_range_step_matches_page_by_page(
    profile: str, layout: list[int], bumps: list[int], ops: list[tuple[int, int, int, int]]
) -> None:
    k, mm_id = _build(profile, layout, bumps)
    slow = kernel_copy(k)
    slow.fine_grained = True
    assert _run(k, mm_id, ops) == _run(slow, mm_id, ops)
    slow.fine_grained = False
    assert kernel_digest(k) == kernel_digest(slow)
