"""v4.4.178 page_referenced over a file page mapped by some of the VMAs of its file.

mm/rmap.c:950 page_referenced counts the page's mappings first (:958 pra.mapcount =
page_mapcount) and page_referenced_one (:851) counts each one it meets down, stopping the
i_mmap walk at zero (:922-924): VMAs after the page's last mapping are not visited.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pinlab.interleave import Point, Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel.mm.mmap import MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import get_pte, pte_young
from pinlab.kernel.mm.rmap_4_4 import page_referenced
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.process import ext4_create, fd_install, fget, new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

PAGE = 4096


def _labels(gen: Generator[Yield, None, tuple[int, int]]) -> tuple[list[str], tuple[int, int]]:
    """Run a kernel generator alone: the labels of its points, and what it returned."""
    labels: list[str] = []
    try:
        while True:
            y = next(gen)
            labels.append(y.label if isinstance(y, Point) else str(y))
    except StopIteration as stop:
        return labels, stop.value


def _two_maps(faulted: tuple[bool, bool]) -> tuple[Kernel, list[int], int]:
    """4.4, a one-page ext4 file mapped MAP_SHARED twice by one task; the mappings in
    ``faulted`` (in address order, the walk's order) read-faulted: young PTEs.  The
    addresses in that order, and the page."""
    k = boot("4.4", BootParams(normal_mb=4))
    task = new_task(k)
    file = ext4_create(k, PAGE)
    fid = fd_install(k, file)
    prot = PROT_READ | PROT_WRITE
    addrs = sorted(
        run(sys_mmap(k, task, None, PAGE, prot, MAP_SHARED, fget(k, fid))) for _ in range(2)
    )
    for addr, fault in zip(addrs, faulted, strict=True):
        if fault:
            run(user_access(k, task, addr, False, 0))
    run(lru_add_drain(k, 0))
    return k, addrs, next(iter(k.mappings.values())).i_pages[0]


@pytest.mark.parametrize(
    ("faulted", "visits"),
    [
        ((True, False), 1),  # the first VMA holds the only mapping: the walk stops there
        ((False, True), 2),  # the first VMA maps nothing: the walk goes on to the second
        ((True, True), 2),
    ],
)
def test_page_referenced_stops_after_the_pages_last_mapping(
    faulted: tuple[bool, bool], visits: int
) -> None:
    k, addrs, page = _two_maps(faulted)
    mm = next(iter(k.mms.values()))
    assert [v.vm_start for v in mm.vmas] == addrs
    labels, (referenced, _flags) = _labels(page_referenced(k, page, False))
    assert labels.count("page_referenced_one") == visits
    assert referenced == sum(faulted)
    # every mapping met had its young bit tested and cleared
    assert not any(pte_young(get_pte(mm.pgtable, a)) for a in addrs)
