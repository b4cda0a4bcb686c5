"""5.7's FOLL_PIN grab of a small page is one atomic add: no CPU sees half a pin.

v5.7.14 mm/gup.c try_grab_compound_head (:82-126, gup-fast) multiplies refs by
GUP_PIN_COUNTING_BIAS before its one page_ref_add_unless (:107-110 via
try_get_compound_head :58 and page_cache_add_speculative, include/linux/pagemap.h:184);
try_grab_page (:148-179, the slow path) adds GUP_PIN_COUNTING_BIAS with one page_ref_add
(:165, :173).  6.1 (mm/gup.c try_grab_folio 152-168) takes try_get_folio's reference and
then adds refs * (GUP_PIN_COUNTING_BIAS - 1): two atomics, a state another CPU can see.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial

import pytest

from pinlab.explore import GenThread, Options, explore
from pinlab.interleave import Point, Yield, run_to_completion
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SIZE, get_pte, pte_pfn
from pinlab.kernel.process import new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import kernel_program

PinFn = Callable[..., Generator[Yield, None, int]]


def _kernel(profile: str) -> Kernel:
    """One task with one written private anonymous page."""
    k = boot(profile, BootParams(normal_mb=4))
    task = new_task(k)
    gen = sys_mmap(k, task, None, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    addr = run_to_completion(gen)
    run_to_completion(user_access(k, task, addr, True, 1))
    return k


def _pinner(pin: PinFn, addr: int, k: Kernel) -> Generator[Yield, None, None]:
    """Pin the page, then unpin it."""
    mm = next(iter(k.mms.values()))
    pages = page_array(1)
    got = yield from pin(k, mm, addr, 1, FOLL_WRITE, pages)
    assert got == 1
    yield from unpin_user_pages(k, pages, got)


# Refcounts the observer read, by program.
SEEN: dict[str, set[int]] = {}


def _observer(name: str, page: int, k: Kernel) -> Generator[Yield, None, None]:
    """Another CPU reading the page's _refcount (page_maybe_dma_pinned's input) twice."""
    for _ in range(2):
        yield Point("observe", reads=frozenset({("page", page, "refcount")}))
        SEEN[name].add(int(k.mem.refcount[page]))


@dataclass(frozen=True)
class Row:
    profile: str
    pin: PinFn
    half_seen: bool  # whether the observer can see the page referenced but not yet pinned
    cite: str


ROWS = [
    Row(
        "5.7",
        pin_user_pages_fast,
        False,
        "v5.7 mm/gup.c try_grab_compound_head :107-110: refs * GUP_PIN_COUNTING_BIAS in one"
        " page_ref_add_unless",
    ),
    Row("5.7", pin_user_pages, False, "v5.7 mm/gup.c try_grab_page :165,:173: one page_ref_add"),
    Row(
        "6.1",
        pin_user_pages_fast,
        True,
        "v6.1 mm/gup.c try_grab_folio :152 try_get_folio, then :167-168 folio_ref_add",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.profile}-{r.pin.__name__}" for r in ROWS])
def test_an_observer_sees_a_small_page_pinned_or_not(row: Row) -> None:
    name = f"grab-{row.profile}-{row.pin.__name__}"
    make = partial(_kernel, row.profile)
    k = make()
    mm = next(iter(k.mms.values()))
    addr = mm.vmas[0].vm_start
    page = pte_pfn(get_pte(mm.pgtable, addr))
    base = int(k.mem.refcount[page])
    SEEN[name] = set()
    threads = (
        GenThread("pin", partial(_pinner, row.pin, addr)),
        GenThread("observer", partial(_observer, name, page)),
    )
    result = explore(kernel_program(name, make, threads), Options(strategy="dfs"))
    assert not result.errors, result.errors[:1]
    assert result.conclusive, result.verdict
    bias = k.profile.pin_bias
    want = {base, base + bias} | ({base + 1} if row.half_seen else set())
    assert SEEN[name] == want, row.cite
