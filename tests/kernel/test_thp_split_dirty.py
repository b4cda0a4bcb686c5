"""Splitting a dirty huge PMD: which kernels dirty the 512 PTEs, which only the page.

Rows are facts of each tree; the values come out of the model.  A write fault maps the THP
with a dirty PMD; unmapping one page in its middle splits the PMD.
"""

from __future__ import annotations

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, get_pte, pte_dirty
from pinlab.kernel.state import BootParams, boot
from pinlab.kernel.uaccess import user_access

# (profile, PTEs dirty, the page that carries PG_dirty: 0 the head, 2 a tail, cite)
ROWS = [
    (
        "4.4",
        True,
        2,
        "v4.4.178 mm/huge_memory.c:1900 __split_huge_page_map: pte_mkdirty always; the "
        "compound page is split too, each tail made PG_dirty (:1804)",
    ),
    ("5.7", False, 0, "v5.7.14 mm/huge_memory.c:2302-2303 __split_huge_pmd_locked: PG_dirty"),
    ("6.1", False, 0, "v6.1.192 mm/huge_memory.c:2179-2182 PG_dirty; :2255 no pte_mkdirty"),
    ("6.5", True, 0, "v6.5 mm/huge_memory.c:2250-2252 __split_huge_pmd_locked: pte_mkdirty"),
]


@pytest.mark.parametrize(("profile", "ptes_dirty", "page", "cite"), ROWS, ids=[r[0] for r in ROWS])
def test_split_of_a_dirty_huge_pmd(profile: str, ptes_dirty: bool, page: int, cite: str) -> None:
    k = boot(profile, BootParams(normal_mb=32))
    t = P.new_task(k)
    rw, anon = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
    region = run(P.sys_mmap(k, t, None, 3 * PMD_SIZE, rw, anon))
    thp = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, t, thp, True, 1))
    head = P.pagemap(k, t, thp).pfn
    assert run(P.sys_munmap(k, t, thp + PAGE_SIZE, PAGE_SIZE)) == 0
    pt = k.mms[t.mm].pgtable
    left = [thp, *(thp + i * PAGE_SIZE for i in range(2, 512))]
    assert {pte_dirty(get_pte(pt, a)) for a in left} == {ptes_dirty}, cite
    assert int(k.mem.flags[head + page]) & k.pf.mask("PG_dirty"), cite
