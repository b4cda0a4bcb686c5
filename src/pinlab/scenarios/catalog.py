"""The named hazard scenarios `pinlab compare` puts every design against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from pinlab.explore import GenThread, Invariant, WorldProgram
from pinlab.kernel.state import Kernel
from pinlab.scenarios import ext4_bug_2018, hugepage_1g_overflow, reclaim_vs_gup
from pinlab.scenarios.harness import kernel_program


@dataclass(frozen=True, slots=True)
class Scenario:
    """A setup run before the search, the threads searched, and the hazard judged."""

    name: str
    description: str
    profiles: tuple[str, ...]  # the kernels (a design's base profile) it is written for
    hazard: str
    # a counterexample is this hazard when its name starts with one of these
    violations: tuple[str, ...]
    bounds: str
    make_kernel: Callable[[str], Kernel]
    threads: Callable[[str], tuple[GenThread, ...]]
    quick: bool  # part of `pinlab compare --quick`
    invariants: tuple[Invariant, ...] = ()

    def program(self, design: str) -> WorldProgram:
        """The search program of this scenario under `design`."""
        make = partial(self.make_kernel, design)
        name = f"{self.name}/{design}"
        return kernel_program(name, make, self.threads(design), self.invariants)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "reclaim-vs-gup",
            "kswapd's pass over an ext4 page while a driver takes it with get_user_pages",
            ("4.4",),
            reclaim_vs_gup.HAZARD,
            (reclaim_vs_gup.HAZARD,),
            reclaim_vs_gup.BOUNDS,
            reclaim_vs_gup.make_kernel,
            reclaim_vs_gup.threads,
            quick=True,
        ),
        Scenario(
            "hugepage-1g-overflow",
            "8 whole pins of a 1 GiB hugetlb page by one thread, every pin held",
            hugepage_1g_overflow.PROFILES,
            hugepage_1g_overflow.HAZARD,
            (hugepage_1g_overflow.HAZARD,),
            hugepage_1g_overflow.BOUNDS,
            hugepage_1g_overflow.make_kernel,
            hugepage_1g_overflow.threads,
            quick=True,
            invariants=hugepage_1g_overflow.INVARIANTS,
        ),
        Scenario(
            "ext4-bug-2018",
            "seed 002: gup, reclaim's unmap and drop_buffers, set_page_dirty_lock, writeback",
            ("4.4",),
            "fs-bug-on",
            ("BUG_ON page_buffers",),
            ext4_bug_2018.BOUNDS,
            ext4_bug_2018.make_kernel,
            ext4_bug_2018.threads,
            quick=False,
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """A scenario by name; an unknown one raises KeyError naming the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise KeyError(f"unknown scenario {name!r} (known: {known})") from None
