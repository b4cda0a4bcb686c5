"""fork() and pinned pages: the fork-time copy decision per profile, and who keeps the frame.

Rows cite the kernel code that makes each decision; the observed values come
out of the model (user loads/stores, pagemap, pin_user_pages / get_user_pages).
"""

from __future__ import annotations

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.errno import ENOMEM
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import (
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import (
    HPAGE_PMD_ORDER,
    PAGE_SIZE,
    PMD_SIZE,
    get_pmd,
    get_pte,
    pte_write,
)
from pinlab.kernel.mm.rmap import PageAnonExclusive, page_mapcount
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import MMF_HAS_PINNED, Task
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
HPAGE_NR = 1 << HPAGE_PMD_ORDER


def small_anon(k: Kernel, task: Task, npages: int = 1) -> int:
    """A written, small-page, private anonymous region (LRU batch drained)."""
    addr = run(P.sys_mmap(k, task, None, npages * PAGE_SIZE, RW, ANON))
    assert run(P.sys_madvise(k, task, addr, npages * PAGE_SIZE, MADV_NOHUGEPAGE)) == 0
    for i in range(npages):
        run(user_access(k, task, addr + i * PAGE_SIZE, True, 100 + i))
    run(lru_add_drain(k, task.cpu))
    return addr


def gup(k: Kernel, task: Task, addr: int, nr: int, flags: int, pin: bool) -> list[int]:
    """pin_user_pages or get_user_pages under mmap_read_lock, as a driver calls them."""
    mm = k.mms[task.mm]
    pages = page_array(nr)
    run(mmap_read_lock(k, mm))
    try:
        call = pin_user_pages if pin else get_user_pages
        ret = run(call(k, mm, addr, nr, flags, pages))
    finally:
        mmap_read_unlock(k, mm)
    assert ret == nr
    return [int(p) for p in pages[:nr]]


def pfn_of(k: Kernel, task: Task, addr: int) -> int:
    """The frame backing `addr` (pagemap)."""
    entry = P.pagemap(k, task, addr)
    assert entry.present
    return entry.pfn


def fork(k: Kernel, task: Task) -> Task:
    """fork(2) that must succeed."""
    pid = run(P.sys_fork(k, task))
    assert pid > 0
    return k.tasks[pid]


def pte(k: Kernel, task: Task, addr: int) -> int:
    return get_pte(k.mms[task.mm].pgtable, addr)


# v6.1 mm/memory.c copy_present_pte -> include/linux/rmap.h page_try_dup_anon_rmap:
# copy now iff PageAnonExclusive && page_needs_cow_for_dma (MMF_HAS_PINNED and,
# for a small folio, refcount >= GUP_PIN_COUNTING_BIAS counting fork's own get_page).
FORK_6_1_ROWS = [
    # (case, how the page is held, expect child copy)
    ("pinned, exclusive, mm has pinned", "pin", True),
    ("1023 GUP refs + fork's own ref = 1024 + PTE, but MMF_HAS_PINNED unset", "get1023", False),
    ("unpinned, MMF_HAS_PINNED set by an earlier pin of another page", "other_pinned", False),
]


@pytest.mark.parametrize(("case", "hold", "copied"), FORK_6_1_ROWS)
def test_fork_6_1_copy_decision(case: str, hold: str, copied: bool) -> None:
    k = boot("6.1")
    parent = P.new_task(k)
    addr = small_anon(k, parent, 2)
    frame = pfn_of(k, parent, addr)
    if hold == "pin":
        gup(k, parent, addr, 1, FOLL_WRITE, pin=True)
    elif hold == "get1023":
        for _ in range(1023):
            gup(k, parent, addr, 1, 0, pin=False)
    else:
        gup(k, parent, addr + PAGE_SIZE, 1, FOLL_WRITE, pin=True)
    ref_before = int(k.mem.refcount[frame])
    child = fork(k, parent)
    child_frame = pfn_of(k, child, addr)
    assert (child_frame != frame) is copied, case
    assert run(user_access(k, child, addr, False)) == 100
    if copied:
        # The parent PTE is untouched: writable, the page still exclusive, no new ref.
        assert pte_write(pte(k, parent, addr))
        assert PageAnonExclusive(k, frame)
        assert int(k.mem.refcount[frame]) == ref_before
        assert page_mapcount(k, frame) == 1
        assert pte_write(pte(k, child, addr))
        assert PageAnonExclusive(k, child_frame)
    else:
        # Shared: both write-protected, exclusivity cleared, +1 ref and +1 mapcount.
        assert not pte_write(pte(k, parent, addr))
        assert not pte_write(pte(k, child, addr))
        assert not PageAnonExclusive(k, frame)
        assert int(k.mem.refcount[frame]) == ref_before + 1
        assert page_mapcount(k, frame) == 2


def test_fork_6_1_not_exclusive_page_is_shared_even_with_1024_refs() -> None:
    """page_try_dup_anon_rmap tests PageAnonExclusive first: a shared page is never copied."""
    k = boot("6.1")
    parent = P.new_task(k)
    addr = small_anon(k, parent, 2)
    gup(k, parent, addr + PAGE_SIZE, 1, FOLL_WRITE, pin=True)  # sets MMF_HAS_PINNED
    first_child = fork(k, parent)
    frame = pfn_of(k, parent, addr)
    assert not PageAnonExclusive(k, frame)
    for _ in range(1024):
        gup(k, parent, addr, 1, 0, pin=False)
    second_child = fork(k, parent)
    assert pfn_of(k, second_child, addr) == frame
    assert page_mapcount(k, frame) == 3
    del first_child


def test_fork_6_1_pmd_thp_with_one_pinned_subpage() -> None:
    """v6.1 mm/huge_memory.c copy_huge_pmd: -EBUSY -> split the parent's PMD, copy per PTE.

    The folio's pincount is per folio, so every subpage tests as maybe pinned
    and the child gets 512 private copies; the parent keeps its folio writable.
    """
    k = boot("6.1", BootParams(normal_mb=32))
    parent = P.new_task(k)
    region = run(P.sys_mmap(k, parent, None, 2 * PMD_SIZE, RW, ANON))
    thp = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, parent, thp, True, 7))
    mm = k.mms[parent.mm]
    assert get_pmd(mm.pgtable, thp)
    head = pfn_of(k, parent, thp)
    pinned = gup(k, parent, thp + 5 * PAGE_SIZE, 1, FOLL_WRITE, pin=True)
    assert pinned == [head + 5]
    child = fork(k, parent)
    assert not get_pmd(mm.pgtable, thp)  # parent's PMD was split
    child_frames = {pfn_of(k, child, thp + i * PAGE_SIZE) for i in range(HPAGE_NR)}
    parent_frames = [pfn_of(k, parent, thp + i * PAGE_SIZE) for i in range(HPAGE_NR)]
    assert parent_frames == [head + i for i in range(HPAGE_NR)]
    assert len(child_frames) == HPAGE_NR
    assert not child_frames & set(parent_frames)
    assert all(pte_write(pte(k, parent, thp + i * PAGE_SIZE)) for i in range(HPAGE_NR))
    assert run(user_access(k, child, thp, False)) == 7
    unpin = run(unpin_user_pages(k, pinned, 1))
    del unpin


def test_fork_6_1_unpinned_thp_stays_pmd_shared() -> None:
    """v6.1 copy_huge_pmd success path: one PMD shared write-protected, entire mapcount 2."""
    k = boot("6.1", BootParams(normal_mb=32))
    parent = P.new_task(k)
    region = run(P.sys_mmap(k, parent, None, 2 * PMD_SIZE, RW, ANON))
    thp = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, parent, thp, True, 7))
    head = pfn_of(k, parent, thp)
    child = fork(k, parent)
    assert pfn_of(k, child, thp) == head
    assert not pte_write(get_pmd(k.mms[parent.mm].pgtable, thp))
    assert int(k.mem.compound_mapcount[head + 1]) + 1 == 2


def test_fork_6_1_hugetlb_pinned_page_copied_early() -> None:
    """v6.1 mm/hugetlb.c copy_hugetlb_page_range: page_try_dup_anon_rmap -EBUSY -> copy now."""
    k = boot("6.1", BootParams(normal_mb=16, hugepages_2m=4))
    parent = P.new_task(k)
    addr = run(P.sys_mmap(k, parent, None, PMD_SIZE, RW, ANON | MAP_HUGETLB))
    assert addr > 0
    run(user_access(k, parent, addr, True, 11))
    head = pfn_of(k, parent, addr)
    gup(k, parent, addr, 1, FOLL_WRITE, pin=True)
    child = fork(k, parent)
    assert pfn_of(k, child, addr) not in range(head, head + HPAGE_NR)
    assert run(user_access(k, child, addr, False)) == 11
    assert pfn_of(k, parent, addr) == head


def test_fork_must_copy_hook_replaces_the_decision() -> None:
    """hooks.fork_must_copy is consulted where the kernel decides, in every profile, and
    changes nothing else: 4.4 still write-protects the parent's PTE before deciding
    (v4.4.178 mm/memory.c copy_one_pte :892 ptep_set_wrprotect, then :906 get_page)."""
    k = boot("4.4")
    k.hooks.fork_must_copy = lambda _k, _mm, _page: True
    parent = P.new_task(k)
    addr = small_anon(k, parent)
    frame = pfn_of(k, parent, addr)
    child = fork(k, parent)
    assert pfn_of(k, child, addr) != frame
    assert not pte_write(pte(k, parent, addr))


@pytest.mark.parametrize("profile", ["4.4", "5.7"])
def test_old_kernels_parent_write_moves_contents_off_the_pinned_frame(profile: str) -> None:
    """v4.4 / v5.7: no early copy at fork; do_wp_page reuses by mapcount (reuse_swap_page).

    After fork the pinned page is mapped twice, so the parent's first write
    copies: the parent moves to a new frame and the child keeps the pinned
    one.  A device writing through the pin is seen by the child, not the parent.
    """
    k = boot(profile)
    parent = P.new_task(k)
    addr = small_anon(k, parent)
    frame = pfn_of(k, parent, addr)
    pinned = gup(k, parent, addr, 1, FOLL_WRITE, pin=k.profile.has_foll_pin)
    assert pinned == [frame]
    child = fork(k, parent)
    assert pfn_of(k, child, addr) == frame
    run(user_access(k, parent, addr, True, 555))
    assert pfn_of(k, parent, addr) != frame
    assert pfn_of(k, child, addr) == frame
    k.mem.data[frame] = 999  # the device's DMA lands in the pinned frame
    assert run(user_access(k, parent, addr, False)) == 555
    assert run(user_access(k, child, addr, False)) == 999
    assert page_mapcount(k, frame) == 1


def test_6_1_parent_keeps_the_pinned_frame_after_fork_and_write() -> None:
    """The contrast: v6.1 copied for the child at fork, the parent writes in place."""
    k = boot("6.1")
    parent = P.new_task(k)
    addr = small_anon(k, parent)
    frame = pfn_of(k, parent, addr)
    gup(k, parent, addr, 1, FOLL_WRITE, pin=True)
    child = fork(k, parent)
    run(user_access(k, parent, addr, True, 555))
    assert pfn_of(k, parent, addr) == frame
    k.mem.data[frame] = 999
    assert run(user_access(k, parent, addr, False)) == 999
    assert run(user_access(k, child, addr, False)) == 100


def test_mmf_has_pinned_not_inherited() -> None:
    """v6.1 kernel/fork.c mm_init: flags & MMF_INIT_MASK; MMF_HAS_PINNED (27) is not in it."""
    k = boot("6.1")
    parent = P.new_task(k)
    addr = small_anon(k, parent)
    gup(k, parent, addr, 1, FOLL_WRITE, pin=True)
    assert k.mms[parent.mm].flags >> MMF_HAS_PINNED & 1
    child = fork(k, parent)
    assert not k.mms[child.mm].flags >> MMF_HAS_PINNED & 1


@pytest.mark.parametrize(
    ("plain_refs", "copied"),
    [
        # v6.1 mm/memory.c copy_present_pte: get_page before page_try_dup_anon_rmap, so
        # ref = 1 (PTE) + plain + 1 (fork) reaches GUP_PIN_COUNTING_BIAS 1024 at 1022
        # (include/linux/mm.h folio_maybe_dma_pinned: refcount >= 1024 for small folios).
        (1022, True),
        (1021, False),
    ],
)
def test_fork_takes_its_reference_before_the_pin_test(plain_refs: int, copied: bool) -> None:
    """With MMF_HAS_PINNED set, fork's own +1 decides the small-page 'maybe pinned' test."""
    from pinlab.kernel.mm.page_ref import page_ref_add

    k = boot("6.1")
    parent = P.new_task(k)
    addr = small_anon(k, parent)
    mm = k.mms[parent.mm]
    mm.flags |= 1 << MMF_HAS_PINNED
    frame = P.pagemap(k, parent, addr).pfn
    page_ref_add(k.mem, frame, plain_refs)
    child = k.tasks[run(P.sys_fork(k, parent))]
    assert (P.pagemap(k, child, addr).pfn != frame) is copied
    assert pte_write(get_pte(mm.pgtable, addr)) is copied


def test_hugetlb_fork_bumps_write_protect_seq_and_fails_enomem_without_pages() -> None:
    """v6.1 mm/hugetlb.c copy_hugetlb_page_range: raw_write_seqcount_begin/end for a COW
    mapping; a pinned page needs alloc_huge_page, whose -ENOSPC fails dup_mm and
    copy_mm turns into -ENOMEM (v6.1 kernel/fork.c)."""
    k = boot("6.1", BootParams(hugepages_2m=1))
    parent = P.new_task(k)
    addr = run(P.sys_mmap(k, parent, None, PMD_SIZE, RW, ANON | MAP_HUGETLB))
    run(user_access(k, parent, addr, True, 7))
    mm = k.mms[parent.mm]
    seq = mm.write_protect_seq
    gup(k, parent, addr, 1, FOLL_WRITE, pin=True)
    assert run(P.sys_fork(k, parent)) == -ENOMEM
    assert mm.write_protect_seq == seq + 2
