"""`hugepage-1g-overflow`: one thread pins a whole 1 GiB hugetlb page 8 times, every pin held.

A MAP_HUGETLB | MAP_HUGE_1GB private mapping, written once so its page is faulted in;
then the design's driver call (pin_user_pages or get_user_pages, FOLL_WRITE) over all
262,144 subpages, 8 times, under mmap_lock, nothing released.  The hazard,
`refcount-overflow`: some page's _refcount or pincount has wrapped past INT_MAX
(negative) in any state.

Written for the kernels with pin_user_pages.  A 4.4 driver's get_user_pages takes one
plain reference per subpage (2^21 in all, far from INT_MAX), and the model walks that
path one step per subpage (FOLL_TOUCH rules out its whole-range step), more steps than
this scenario is meant to search.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial

from pinlab.designs import boot_design, get_design
from pinlab.designs.drivers import driver_gup
from pinlab.explore import GenThread, Invariant
from pinlab.interleave import Yield, run_to_completion
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import (
    MAP_ANONYMOUS,
    MAP_HUGE_1GB,
    MAP_HUGETLB,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import HPAGE_PUD_ORDER, PUD_SIZE
from pinlab.kernel.process import new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel
from pinlab.kernel.uaccess import user_access

HAZARD = "refcount-overflow"
PROFILES = ("foll-pin-bias-v4", "5.7", "6.1")
ROUNDS = 8
NR = 1 << HPAGE_PUD_ORDER
BOUNDS = f"{ROUNDS} pins of the whole page, one thread"


def make_kernel(design: str) -> Kernel:
    """The design's kernel with one 1 GiB huge page reserved, mapped and written."""
    k = boot_design(get_design(design), BootParams(normal_mb=8, hugepages_1g=1))
    task = new_task(k)
    prot = PROT_READ | PROT_WRITE
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_1GB
    addr = run_to_completion(sys_mmap(k, task, None, PUD_SIZE, prot, flags))
    assert addr > 0, addr
    run_to_completion(user_access(k, task, addr, True, 1))
    return k


def _driver(gup: str, k: Kernel) -> Generator[Yield, None, None]:
    """ROUNDS whole-page gup calls by the design's driver, every pin held."""
    mm = next(iter(k.mms.values()))
    start = mm.vmas[0].vm_start
    for _ in range(ROUNDS):
        pages = page_array(NR)
        yield from mmap_read_lock(k, mm)
        yield from driver_gup(k, gup, mm, start, NR, FOLL_WRITE, pages)
        mmap_read_unlock(k, mm)


def no_wrapped_count(k: Kernel) -> bool:
    """No _refcount or pincount has gone negative (an atomic_t past INT_MAX)."""
    return not (k.mem.refcount < 0).any() and not (k.mem.pincount < 0).any()


def threads(design: str) -> tuple[GenThread, ...]:
    """The driver of `design`."""
    return (GenThread("driver", partial(_driver, get_design(design).gup)),)


INVARIANTS = (Invariant(HAZARD, no_wrapped_count),)
