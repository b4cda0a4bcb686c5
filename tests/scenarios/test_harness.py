"""The kernel harness: granularity decided per step, and footprints checked by a search."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from functools import partial

import pytest

from pinlab.explore import GenThread, Options, explore
from pinlab.interleave import Point, Yield, run_to_completion
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.process import new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import kernel_program

PAGE = 4096
PAGES = 4


def _kernel() -> Kernel:
    """A 6.1 kernel with one task and PAGES faulted anonymous pages."""
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    gen = sys_mmap(k, task, None, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    addr = run_to_completion(gen)
    for i in range(PAGES):
        run_to_completion(user_access(k, task, addr + i * PAGE, True, i + 1))
    return k


def _region(k: Kernel) -> int:
    return next(iter(k.mms.values())).vmas[0].vm_start


def pin_unpin(k: Kernel) -> Generator[Yield, None, None]:
    """pin_user_pages_fast of the whole region, then unpin_user_pages."""
    mm = next(iter(k.mms.values()))
    pages = page_array(PAGES)
    got = yield from pin_user_pages_fast(k, mm, _region(k), PAGES, FOLL_WRITE, pages)
    yield from unpin_user_pages(k, pages, got)


def _program(threads: int, checked: bool = False):  # type: ignore[no-untyped-def]
    names = tuple(GenThread(f"pin{i}", pin_unpin) for i in range(threads))
    return kernel_program("pins", _kernel, names, checked=checked)


def force_fine(k: Kernel, alone: bool) -> None:
    k.fine_grained = True


def test_a_range_operation_is_one_step_only_for_a_thread_alone() -> None:
    alone = explore(_program(1), Options(strategy="dfs"))
    fine = explore(replace(_program(1), before_step=force_fine), Options(strategy="dfs"))
    # page by page, each of the PAGES pages is grabbed and released in steps of its own
    assert fine.transitions >= alone.transitions + 2 * (PAGES - 1)
    # beside another thread, a range runs page by page from its first step
    two = explore(_program(2), Options(strategy="dfs"))
    assert two.max_depth >= 2 * fine.max_depth - alone.max_depth


def test_the_checked_mode_passes_the_kernels_footprints_and_changes_no_count() -> None:
    plain = explore(_program(2), Options(strategy="dfs"))
    checked = explore(_program(2, checked=True), Options(strategy="dfs"))
    assert not checked.errors
    assert (checked.states, checked.transitions) == (plain.states, plain.transitions)


def wrong_footprint(key_field: str, k: Kernel) -> Generator[Yield, None, None]:
    """Declares that it writes a page's pincount, then takes a reference on it."""
    pfn = _first_anon_pfn(k)
    yield Point("claims pincount", reads=frozenset(), writes=frozenset({("page", pfn, key_field)}))
    k.mem.refcount[pfn] += 1
    yield Point("undo", writes=frozenset({("page", pfn, "refcount")}))
    k.mem.refcount[pfn] -= 1


def honest(k: Kernel) -> Generator[Yield, None, None]:
    """Reads a page's refcount twice, each time declaring it."""
    pfn = _first_anon_pfn(k)
    for _ in range(2):
        yield Point("peek", reads=frozenset({("page", pfn, "refcount")}), writes=frozenset())
        assert k.mem.refcount[pfn] > 0


def _first_anon_pfn(k: Kernel) -> int:
    return int(next(p for p in range(k.mem.nr_pages) if k.mem.mapcount[p] >= 0))


@pytest.mark.parametrize(("declared", "caught"), [("pincount", True), ("refcount", False)])
def test_the_footprint_checker_catches_a_wrong_footprint(declared: str, caught: bool) -> None:
    body = partial(wrong_footprint, declared)
    threads = (GenThread("liar", body), GenThread("reader", honest))
    result = explore(
        kernel_program("liar", _kernel, threads, checked=True), Options(strategy="dfs")
    )
    assert bool(result.errors) is caught
    if caught:
        err = result.errors[0]
        assert err.type == "FootprintError"
        assert "wrong_footprint" in err.location
        assert "wrote ('page', " in err.message and "'refcount')" in err.message
