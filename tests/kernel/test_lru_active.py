"""Which LRU list a new anon page joins: active in 4.4 and 5.7, inactive in 6.1.

Rows are kernel facts (version, file, function, line); the flags are read from the
model's frame table once the faulting CPU's LRU batch is drained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.mmap import MADV_NOHUGEPAGE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, get_pmd
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import Task
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _pfn(k: Kernel, task: Task, addr: int) -> int:
    entry = P.pagemap(k, task, addr)
    assert entry.present
    return entry.pfn


def _small(k: Kernel, task: Task) -> int:
    """A write fault on a small anon page (do_anonymous_page): its frame."""
    addr = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, ANON))
    assert run(P.sys_madvise(k, task, addr, PAGE_SIZE, MADV_NOHUGEPAGE)) == 0
    run(user_access(k, task, addr, True, 1))
    return _pfn(k, task, addr)


def _thp(k: Kernel, task: Task) -> int:
    """A write fault on a PMD-aligned anon range (do_huge_pmd_anonymous_page): the head."""
    region = run(P.sys_mmap(k, task, None, 2 * PMD_SIZE, RW, ANON))
    addr = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, task, addr, True, 1))
    assert get_pmd(k.mms[task.mm].pgtable, addr)
    return _pfn(k, task, addr)


def _cow(k: Kernel, task: Task) -> int:
    """A small anon page shared by fork, then written by the child (wp_page_copy): the copy."""
    addr = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, ANON))
    assert run(P.sys_madvise(k, task, addr, PAGE_SIZE, MADV_NOHUGEPAGE)) == 0
    run(user_access(k, task, addr, True, 1))
    pid = run(P.sys_fork(k, task))
    assert pid > 0
    child = k.tasks[pid]
    run(user_access(k, child, addr, True, 2))
    new = _pfn(k, child, addr)
    assert new != _pfn(k, task, addr)
    return new


class Row(NamedTuple):
    profile: str
    fault: str
    make: Callable[[Kernel, Task], int]
    active: bool
    cite: str


ROWS = (
    Row("6.1", "anon", _small, False, "v6.1 mm/memory.c do_anonymous_page :4073 folio_add_lru_vma"),
    Row("6.1", "thp", _thp, False, "v6.1 mm/huge_memory.c __do_huge_pmd_anonymous_page :726"),
    Row("6.1", "cow", _cow, False, "v6.1 mm/memory.c wp_page_copy :3222"),
    Row("5.7", "anon", _small, True, "v5.7.14 mm/memory.c do_anonymous_page :3400"),
    Row("5.7", "thp", _thp, True, "v5.7.14 mm/huge_memory.c __do_huge_pmd_anonymous_page :645"),
    Row("5.7", "cow", _cow, True, "v5.7.14 mm/memory.c wp_page_copy :2718"),
    Row("4.4", "anon", _small, True, "v4.4.178 mm/memory.c do_anonymous_page :2784"),
    Row("4.4", "thp", _thp, True, "v4.4.178 mm/huge_memory.c __do_huge_pmd_anonymous_page :775"),
    Row("4.4", "cow", _cow, True, "v4.4.178 mm/memory.c wp_page_copy :2205"),
)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.profile}-{r.fault}")
def test_new_anon_page_joins_the_lru_active_only_before_6_1(row: Row) -> None:
    """v5.7.14 mm/swap.c:460 / v4.4.178 mm/swap.c:711 lru_cache_add_active_or_unevictable:
    SetPageActive (:466 / :717) then lru_cache_add; v6.1 mm/swap.c:539 folio_add_lru_vma
    adds the folio as it is.  The batch's drain sets PG_lru and keeps PG_active."""
    k = boot(row.profile, BootParams(normal_mb=32))
    task = P.new_task(k)
    page = row.make(k, task)
    run(lru_add_drain(k, task.cpu))
    flags = int(k.mem.flags[page])
    assert bool(flags & k.pf.mask("PG_lru")), row.cite
    assert bool(flags & k.pf.mask("PG_active")) == row.active, row.cite
