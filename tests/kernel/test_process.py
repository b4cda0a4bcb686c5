"""Processes end to end: pagemap, exit, and Hypothesis invariants over random syscalls.

After every step the frame table must agree exactly with what references it:
for anonymous memory a folio's refcount is its PTE/PMD mappings, plus the
per-CPU LRU batch, plus the pins (GUP_PIN_COUNTING_BIAS each for a small folio,
1 each plus the exact pincount for a large one, v6.1 mm/gup.c try_grab_page).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import put_page_api, unpin_user_page
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memmap import compound_head, folio_test_large
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_ref import compound_tail_refcounted
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, pte_pfn
from pinlab.kernel.mm.pincount import folio_pincount
from pinlab.kernel.mm.rmap import page_mapcount
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import Task
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import UserFault, user_access

RW = PROT_READ | PROT_WRITE
REGION = 2 * PMD_SIZE


def test_pagemap_reports_frames_and_exclusivity() -> None:
    """v6.1 fs/proc/task_mmu.c pte_to_pagemap_entry: PM_PRESENT, PFN, PM_MMAP_EXCLUSIVE
    (page_mapcount == 1), PM_FILE for page-cache pages; nothing for unmapped addresses."""
    k = boot("6.1")
    t = P.new_task(k)
    addr = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    assert not P.pagemap(k, t, addr).present
    run(user_access(k, t, addr, True, 1))
    e = P.pagemap(k, t, addr)
    assert e.present and e.exclusive and not e.file
    child = k.tasks[run(P.sys_fork(k, t))]
    assert not P.pagemap(k, t, addr).exclusive
    assert P.pagemap(k, child, addr).pfn == e.pfn
    f = P.memfd_create(k, 0)
    assert not isinstance(f, int)
    k.mappings[f.mapping].i_size = PAGE_SIZE
    m = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, 0x01, f))
    run(user_access(k, t, m, False))
    assert P.pagemap(k, t, m).file
    assert P.pagemap(k, t, 0x1000).raw == 0


def expected_refs(k: Kernel, pins: Counter[int]) -> Counter[int]:
    """References each anon folio must have: mappings + LRU batch + pins."""
    want: Counter[int] = Counter()
    for mm in k.mms.values():
        for table in mm.pgtable.pte.values():
            for pte in table[table != 0]:
                pfn = pte_pfn(int(pte))
                if pfn != k.zero_pfn:
                    want[compound_head(k.mem, pfn)] += 1
        for pmd in mm.pgtable.pmd.values():
            if pte_pfn(pmd) != k.huge_zero_pfn:
                want[pte_pfn(pmd)] += 1
    for batch in k.lru_add:
        want.update(batch)
    for page, n in pins.items():
        folio = compound_head(k.mem, page)
        large = folio_test_large(k.mem, folio)
        want[folio] += n * (1 if large or not k.profile.has_foll_pin else k.profile.pin_bias)
    return want


def expected_mapcounts(k: Kernel, pins: Counter[int]) -> Counter[int]:
    """page_mapcount each page must report: its PTE maps plus its folio's PMD maps.

    Before v4.5 (v4.4 include/linux/mm.h:447 page_mapcount, mm/internal.h:70
    __get_page_tail_foll) a PMD map counts on the head only, and each gup reference to an
    anon THP's tail counts on that tail.
    """
    old_thp = k.profile.thp_tail_refs_in_mapcount
    want: Counter[int] = Counter()
    for mm in k.mms.values():
        for table in mm.pgtable.pte.values():
            for pte in table[table != 0]:
                pfn = pte_pfn(int(pte))
                if pfn != k.zero_pfn:
                    want[pfn] += 1
        for pmd in mm.pgtable.pmd.values():
            head = pte_pfn(pmd)
            if head != k.huge_zero_pfn:
                for i in range(1 if old_thp else PMD_SIZE // PAGE_SIZE):
                    want[head + i] += 1
    if old_thp:
        for page, n in pins.items():
            head = compound_head(k.mem, page)
            if head != page and compound_tail_refcounted(k, head):
                want[page] += n
    return want


def check(k: Kernel, pins: Counter[int]) -> None:
    for page, n in expected_mapcounts(k, pins).items():
        assert page_mapcount(k, page) == n, page
    want = expected_refs(k, pins)
    live = set(np.nonzero(k.mem.refcount)[0].tolist()) - {k.zero_pfn}
    if k.huge_zero_pfn >= 0:
        live.discard(k.huge_zero_pfn)
    assert live == set(want), live ^ set(want)
    for folio, n in want.items():
        assert int(k.mem.refcount[folio]) == n, folio
    if k.profile.has_foll_pin:
        per_folio: Counter[int] = Counter()
        for page, n in pins.items():
            per_folio[compound_head(k.mem, page)] += n
        for folio, n in per_folio.items():
            if folio_test_large(k.mem, folio):
                assert folio_pincount(k, folio) == n


op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 3), st.integers(0, REGION // PAGE_SIZE - 1)),
    st.tuples(st.just("read"), st.integers(0, 3), st.integers(0, REGION // PAGE_SIZE - 1)),
    st.tuples(st.just("pin"), st.integers(0, 3), st.integers(0, REGION // PAGE_SIZE - 1)),
    st.tuples(st.just("unpin"), st.integers(0, 3), st.integers(0, 50)),
    st.tuples(st.just("fork"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("munmap"), st.integers(0, 3), st.integers(0, REGION // PAGE_SIZE - 1)),
    st.tuples(st.just("exit"), st.integers(1, 3), st.just(0)),
    st.tuples(st.just("drain"), st.just(0), st.just(0)),
)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["6.1", "5.7", "4.4"]), st.lists(op, max_size=25))
def test_random_syscalls_keep_refcounts_exact(
    profile: str, ops: list[tuple[str, int, int]]
) -> None:
    k = boot(profile, BootParams(normal_mb=24))
    first = P.new_task(k)
    base = run(P.sys_mmap(k, first, None, REGION + PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    start = (base + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    tasks: list[Task] = [first]
    pins: Counter[int] = Counter()
    pinned: list[int] = []
    for kind, who, arg in ops:
        task = tasks[who % len(tasks)]
        addr = start + arg * PAGE_SIZE
        mm = k.mms[task.mm]
        try:
            if kind in ("write", "read"):
                run(user_access(k, task, addr, kind == "write", arg))
            elif kind == "pin":
                pages = page_array(1)
                run(mmap_read_lock(k, mm))
                call = pin_user_pages if k.profile.has_foll_pin else get_user_pages
                ret = run(call(k, mm, addr, 1, FOLL_WRITE, pages))
                mmap_read_unlock(k, mm)
                if ret == 1:
                    pins[int(pages[0])] += 1
                    pinned.append(int(pages[0]))
            elif kind == "unpin" and pinned:
                page = pinned.pop(arg % len(pinned))
                pins[page] -= 1
                if not pins[page]:
                    del pins[page]
                if k.profile.has_foll_pin:
                    run(unpin_user_page(k, page))
                else:
                    run(put_page_api(k, page))
            elif kind == "fork" and len(tasks) < 4:
                tasks.append(k.tasks[run(P.sys_fork(k, task))])
            elif kind == "munmap":
                assert run(P.sys_munmap(k, task, addr, PAGE_SIZE)) == 0
            elif kind == "exit" and task is not first:
                run(P.sys_exit(k, task))
                tasks.remove(task)
            elif kind == "drain":
                run(lru_add_drain(k, 0))
        except UserFault as fault:
            # an access after munmap of that page
            assert fault.signal == "SIGSEGV"
        check(k, pins)
    for page in pinned:
        if k.profile.has_foll_pin:
            run(unpin_user_page(k, page))
        else:
            run(put_page_api(k, page))
    for task in tasks:
        run(P.sys_exit(k, task))
    run(lru_add_drain(k, 0))
    check(k, Counter())
    assert k.warned == []
