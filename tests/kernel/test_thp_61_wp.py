"""v6.1's write fault on a PMD-mapped THP that is not exclusive takes the THP's lock.

v6.1.192 mm/huge_memory.c do_huge_pmd_wp_page: PageAnonExclusive reuses at once under the
PMD lock (:1353); else folio_trylock (:1356), or hold the folio, drop the PMD lock, sleep
in folio_lock, retake the PMD lock and check the PMD again (:1357-1368); then the recheck
(:1371) and reuse only with no other reference (:1381-1390, page_move_anon_rmap under the
folio lock).  Values come out of the model.
"""

from __future__ import annotations

from collections.abc import Generator

from tests.kernel.test_thp_57_cow import TAIL, Forked, _parent, _thp_addr

from pinlab.explore import GenThread, Options, explore
from pinlab.explore.program import FinalCheck
from pinlab.interleave import Point, Yield
from pinlab.kernel import process as P
from pinlab.kernel.mm.filemap import folio_put_footprint
from pinlab.kernel.mm.locking import folio_trylock, folio_unlock
from pinlab.kernel.mm.mmap import MADV_DONTNEED
from pinlab.kernel.mm.page_ref import folio_get, folio_put
from pinlab.kernel.mm.pgtable import PMD_SHIFT, PMD_SIZE, get_pmd, pte_pfn
from pinlab.kernel.process import sys_madvise
from pinlab.kernel.state import Kernel
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import kernel_program


def _locked_61() -> Kernel:
    """A 6.1 parent whose THP its exited child shared (mapped once, not exclusive), held
    and locked by another thread, as reclaim or migration holds a folio it isolated
    (v6.1.192 mm/vmscan.c shrink_folio_list: folio_trylock on an isolated folio)."""
    k = Forked("6.1", child_exits=True).k
    head = pte_pfn(get_pmd(k.mms[_parent(k).mm].pgtable, _thp_addr(k)))
    folio_get(k, head)
    assert folio_trylock(k, head)
    return k


def _store(k: Kernel) -> Generator[Yield, None, None]:
    yield from user_access(k, _parent(k), _thp_addr(k) + TAIL * 4096, True, 2)


def _release(k: Kernel) -> Generator[Yield, None, None]:
    """The holder lets go of the THP (found by its lock: the PMD may be gone by now):
    unlocks it and drops its reference."""
    locked = k.pf.mask("PG_locked")
    head = next(p for p in range(k.mem.nr_pages) if int(k.mem.flags[p]) & locked)
    yield Point("release", writes=folio_put_footprint(k, head) | {("page", head, "flags")})
    folio_unlock(k, head)
    folio_put(k, head)


def _zap(k: Kernel) -> Generator[Yield, None, None]:
    """MADV_DONTNEED of the THP (v6.1.192 mm/madvise.c): zap_pmd_range drops the PMD."""
    yield from sys_madvise(k, _parent(k), _thp_addr(k), PMD_SIZE, MADV_DONTNEED)


def test_61_thp_fault_rechecks_the_pmd_after_sleeping_for_the_folio_lock() -> None:
    """:1357-1366: the fault slept for the folio lock holding the THP; if the PMD was zapped
    meanwhile it returns 0 and the store is retried from the top, as a fresh THP fault.
    Without the recheck it would go on with the PMD it read before: drop its hold (the
    THP's last reference: freed), find the folio not reusable and fall back to the PTE
    level, mapping a small page where the retry maps a THP."""
    seen: set[tuple[bool, bool, int]] = set()

    def record(k: Kernel) -> bool:
        pt = k.mms[_parent(k).mm].pgtable
        slot = _thp_addr(k) >> PMD_SHIFT
        entry = P.pagemap(k, _parent(k), _thp_addr(k) + TAIL * 4096)
        seen.add(
            (slot in pt.pmd, slot in pt.pte, int(k.mem.data[entry.pfn]) if entry.present else -1)
        )
        return True

    program = kernel_program(
        "thp-6.1-wp-relock-recheck",
        _locked_61,
        (GenThread("store", _store), GenThread("release", _release), GenThread("zap", _zap)),
        finals=(FinalCheck("record", record),),
        checked=True,
    )
    result = explore(program, Options(strategy="dfs"))
    assert result.complete and not result.errors, result.errors[:1]
    # a store before the zap leaves nothing mapped (the PTE table, if the zap left one,
    # maps nothing); a store after it faults in a new THP
    assert seen and all(not table or pmd for pmd, table, _ in seen), seen
    assert {(pmd, data) for pmd, _, data in seen} == {(False, -1), (True, 2)}, seen
