"""The 2018 flag designs on 4.4: where the flag is set, what try_to_unmap does with it, and
the race the search finds between gup's late SetPageDmaPinned and reclaim's early test
(the scenario pinlab.scenarios.reclaim_vs_gup, whose setup is described there).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pytest

from pinlab.designs import boot_design, get_design
from pinlab.explore import Options, WorldProgram, explore
from pinlab.explore.replay import replay
from pinlab.interleave import run_to_completion
from pinlab.kernel.arch.x86.mm.gup import get_user_pages_fast
from pinlab.kernel.mm.debug import dump_page
from pinlab.kernel.mm.gup import get_user_pages, page_array
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_ref import folio_put
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.vmscan import kswapd_reclaim_page
from pinlab.kernel.process import new_task, sys_mmap, sys_munmap
from pinlab.kernel.state import BootParams, Kernel
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.ext4_bug_2018 import ADDR, PAGE, file_page, user_mm
from pinlab.scenarios.harness import kernel_program
from pinlab.scenarios.reclaim_vs_gup import HAZARD, THREADS, make_kernel, mapped_at_addr

TRACKING = ("dma-pinned-flag-2018", "page-ext-flag")


def pin(k: Kernel, fast: bool = False) -> int:
    """The driver's get_user_pages (or get_user_pages_fast) of the page, run alone."""
    mm, pages = user_mm(k), page_array(1)
    if fast:
        got = run_to_completion(get_user_pages_fast(k, mm, ADDR, 1, True, pages))
    else:
        run_to_completion(mmap_read_lock(k, mm))
        got = run_to_completion(get_user_pages(k, mm, ADDR, 1, FOLL_WRITE, pages))
        mmap_read_unlock(k, mm)
    assert got == 1
    return int(pages[0])


def tracked(k: Kernel, design: str, page: int) -> bool:
    check = get_design(design).maybe_pinned
    assert check is not None
    return check(k, page)


@pytest.mark.parametrize("design", TRACKING)
@pytest.mark.parametrize("fast", [False, True], ids=["get_user_pages", "get_user_pages_fast"])
def test_every_page_gup_returns_is_marked_and_stays_marked_until_freed(
    design: str, fast: bool
) -> None:
    k = make_kernel(design)
    page = file_page(k)
    assert not tracked(k, design, page)
    assert pin(k, fast) == page
    assert tracked(k, design, page)
    folio_put(k, page)  # the driver's put_page: the patch never clears the mark there
    assert tracked(k, design, page)


@pytest.mark.parametrize("design", TRACKING)
def test_the_mark_goes_when_the_page_is_freed(design: str) -> None:
    """An anonymous page pinned, released and unmapped: freed, and the mark with it."""
    k = boot_design(get_design(design), BootParams(normal_mb=4))
    task = new_task(k)
    prot, flags = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
    assert run_to_completion(sys_mmap(k, task, ADDR, PAGE, prot, flags)) == ADDR
    run_to_completion(user_access(k, task, ADDR, True, 5))
    page = pin(k)
    folio_put(k, page)
    assert tracked(k, design, page)
    assert run_to_completion(sys_munmap(k, task, ADDR, PAGE)) == 0
    run_to_completion(lru_add_drain(k, 0))
    assert k.mem.refcount[page] == 0
    assert not tracked(k, design, page)


def test_dump_page_names_the_new_flag_on_the_patched_kernel() -> None:
    k = make_kernel("dma-pinned-flag-2018")
    page = pin(k)
    assert "dma_pinned" in dump_page(k, page)[1]
    legacy = make_kernel("legacy-get")
    assert "dma_pinned" not in dump_page(legacy, pin(legacy))[1]


@dataclass(frozen=True)
class Row:
    design: str
    stays_mapped: bool
    mutated: bool = False  # the design without its PageDmaPinned test in try_to_unmap_one


# after the pin, kswapd's pass: the design's response, or the 4.4 kernel's none
SEQUENTIAL = [
    Row("legacy-get", False),
    Row("dma-pinned-flag-2018", True),
    Row("page-ext-flag", True),
    Row("dma-pinned-flag-2018", False, mutated=True),
    Row("page-ext-flag", False, mutated=True),
]


@pytest.mark.parametrize("row", SEQUENTIAL, ids=lambda r: r.design + "-mutated" * r.mutated)
def test_reclaim_after_the_pin_returned(row: Row) -> None:
    """try_to_unmap_one's early SWAP_FAIL keeps the page mapped, with its buffers, and
    activates it (v4.4.178 mm/vmscan.c:1076-1077); without it the page is unmapped."""
    k = make_kernel(row.design)
    if row.mutated:
        k.hooks.unmap_refused = None
    page = pin(k)
    run_to_completion(kswapd_reclaim_page(k, page, 1, 0))
    assert mapped_at_addr(k, page) == row.stays_mapped
    if row.stays_mapped:
        assert k.mem.flags[page] & k.pf.mask("PG_active")
        assert k.mem.flags[page] & k.pf.mask("PG_private")


def _program(design: str) -> WorldProgram:
    return kernel_program(f"reclaim-vs-gup-{design}", partial(make_kernel, design), THREADS)


@pytest.mark.parametrize("design", ["legacy-get", *TRACKING])
def test_search_finds_reclaim_unmapping_a_page_gup_has_returned(design: str) -> None:
    """Every design lets it happen: the flag is set after gup's walk, and try_to_unmap_one
    tests it before taking the PTE lock.  With a flag, only inside that window."""
    prog = _program(design)
    res = explore(prog, Options(strategy="dfs", cache=True))
    assert not res.errors and not res.unmodelled, (res.errors, res.unmodelled)
    assert [cx.name for cx in res.counterexamples] == [HAZARD]
    steps = [(s.thread, s.where) for s in replay(prog, res.counterexamples[0].schedule).steps]

    def at(thread: str, label: str) -> int:
        return next(i for i, s in enumerate(steps) if s[0] == thread and label in s[1])

    unmap = at("kswapd", "try_to_unmap_one'")
    assert at("driver", "try_grab_page:get") < unmap
    if design in TRACKING:
        # the test came before the mark: inside the window, not after gup returned
        assert at("kswapd", "try_to_unmap_one:design") < at("driver", "gup_returned") > unmap
