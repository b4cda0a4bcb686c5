"""Page faults, table-driven: refcount, mapcount and PTE bits after each fault kind (v6.1).

Each row is a kernel fact with its citation (v6.1 mm/memory.c unless noted);
refcounts include the per-CPU LRU-add batch reference where the kernel holds
one (v6.1 mm/swap.c folio_add_lru; large folios flush at once).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass

import pytest

from pinlab.interleave import Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.fs import File
from pinlab.kernel.mm.mmap import (
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import (
    PAGE_SIZE,
    PMD_SIZE,
    get_pmd,
    get_pte,
    pte_dirty,
    pte_present,
    pte_write,
    pte_young,
)
from pinlab.kernel.mm.rmap import PageAnonExclusive, folio_mapcount, page_mapcount
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import Task
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import UserFault, user_access

RW = PROT_READ | PROT_WRITE


@dataclass(frozen=True)
class Row:
    """One fault kind and the state the kernel leaves."""

    name: str
    cite: str
    setup: Callable[[Kernel, Task], int]
    accesses: tuple[bool, ...]
    ref: int
    mapcount: int
    write: bool
    dirty: bool
    young: bool = True
    exclusive: bool | None = None
    zero_page: bool = False


def anon_small(k: Kernel, t: Task) -> int:
    addr = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    assert run(P.sys_madvise(k, t, addr, PAGE_SIZE, MADV_NOHUGEPAGE)) == 0
    return addr


def file_map(make: Callable[[Kernel], File], flags: int) -> Callable[[Kernel, Task], int]:
    def setup(k: Kernel, t: Task) -> int:
        f = make(k)
        return run(P.sys_mmap(k, t, None, 2 * PAGE_SIZE, RW, flags, f))

    return setup


def tmpfs(k: Kernel) -> File:
    return P.tmpfs_create(k, 2 * PAGE_SIZE)


def ext4(k: Kernel) -> File:
    f = P.ext4_create(k, 2 * PAGE_SIZE)
    k.mappings[f.mapping].store[0] = 42
    return f


def ramfs(k: Kernel) -> File:
    return P.ramfs_create(k, 2 * PAGE_SIZE)


ROWS = [
    Row(
        "anon read -> zero page",
        "do_anonymous_page: special zero-page PTE, no ref/mapcount",
        anon_small,
        (False,),
        ref=1,
        mapcount=0,
        write=False,
        dirty=False,
        zero_page=True,
    ),
    Row(
        "anon write",
        "do_anonymous_page: ref 1 + LRU batch, AnonExclusive, W|D",
        anon_small,
        (True,),
        ref=2,
        mapcount=1,
        write=True,
        dirty=True,
        exclusive=True,
    ),
    Row(
        "anon read then write",
        "do_wp_page on the zero page -> wp_page_copy (zeroed page)",
        anon_small,
        (False, True),
        ref=2,
        mapcount=1,
        write=True,
        dirty=True,
        exclusive=True,
    ),
    Row(
        "tmpfs shared read",
        "do_read_fault: shmem has no writenotify -> writable clean PTE; ref = cache + PTE + batch",
        file_map(tmpfs, MAP_SHARED),
        (False,),
        ref=3,
        mapcount=1,
        write=True,
        dirty=False,
    ),
    Row(
        "ext4 shared read",
        "do_read_fault: page_mkwrite -> writenotify -> R/O PTE",
        file_map(ext4, MAP_SHARED),
        (False,),
        ref=3,
        mapcount=1,
        write=False,
        dirty=False,
    ),
    Row(
        "ext4 shared read then write",
        "wp_page_shared -> ext4_page_mkwrite attaches buffers (+1, PG_private), wp_page_reuse W|D",
        file_map(ext4, MAP_SHARED),
        (False, True),
        ref=4,
        mapcount=1,
        write=True,
        dirty=True,
    ),
    Row(
        "ext4 shared write",
        "do_shared_fault -> page_mkwrite, finish_fault W|D",
        file_map(ext4, MAP_SHARED),
        (True,),
        ref=4,
        mapcount=1,
        write=True,
        dirty=True,
    ),
    Row(
        "ramfs shared read",
        "generic_file_vm_ops has filemap_page_mkwrite -> R/O PTE",
        file_map(ramfs, MAP_SHARED),
        (False,),
        ref=3,
        mapcount=1,
        write=False,
        dirty=False,
    ),
    Row(
        "ext4 private read",
        "do_read_fault on MAP_PRIVATE: R/O page-cache PTE",
        file_map(ext4, MAP_PRIVATE),
        (False,),
        ref=3,
        mapcount=1,
        write=False,
        dirty=False,
    ),
    Row(
        "ext4 private write",
        "do_cow_fault: new anon page (ref 1 + batch), exclusive",
        file_map(ext4, MAP_PRIVATE),
        (True,),
        ref=2,
        mapcount=1,
        write=True,
        dirty=True,
        exclusive=True,
    ),
    Row(
        "ext4 private read then write",
        "do_wp_page on a file page -> wp_page_copy",
        file_map(ext4, MAP_PRIVATE),
        (False, True),
        ref=2,
        mapcount=1,
        write=True,
        dirty=True,
        exclusive=True,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_fault_row(row: Row) -> None:
    k = boot("6.1")
    t = P.new_task(k)
    addr = row.setup(k, t)
    for write in row.accesses:
        run(user_access(k, t, addr, write, 5))
    pte = get_pte(k.mms[t.mm].pgtable, addr)
    assert pte_present(pte), row.cite
    pfn = P.pagemap(k, t, addr).pfn
    assert (pfn == k.zero_pfn) is row.zero_page, row.cite
    assert int(k.mem.refcount[pfn]) == row.ref, row.cite
    assert page_mapcount(k, pfn) == row.mapcount, row.cite
    assert pte_write(pte) is row.write, row.cite
    assert pte_dirty(pte) is row.dirty, row.cite
    assert pte_young(pte) is row.young, row.cite
    if row.exclusive is not None:
        assert PageAnonExclusive(k, pfn) is row.exclusive, row.cite


def test_lru_batch_reference_drains() -> None:
    """v6.1 mm/swap.c: the batch ref goes at lru_add_drain, and PG_lru is set then."""
    k = boot("6.1")
    t = P.new_task(k)
    addr = anon_small(k, t)
    run(user_access(k, t, addr, True, 1))
    pfn = P.pagemap(k, t, addr).pfn
    assert int(k.mem.refcount[pfn]) == 2
    assert not int(k.mem.flags[pfn]) & k.pf.mask("PG_lru")
    run(lru_add_drain(k, 0))
    assert int(k.mem.refcount[pfn]) == 1
    assert int(k.mem.flags[pfn]) & k.pf.mask("PG_lru")


@pytest.mark.parametrize(("profile", "held"), [("6.1", 14), ("5.7", 14), ("4.4", 14)])
def test_lru_batch_capacity(profile: str, held: int) -> None:
    """v6.1 PAGEVEC_SIZE 15: the 15th add flushes all 15 (0 held after it).

    v4.4 PAGEVEC_SIZE 14, flushed before adding: the 15th add flushes 14 and
    then queues itself (1 held).  Either way 14 fresh pages are held after 14 faults.
    """
    k = boot(profile)
    t = P.new_task(k)
    addr = run(P.sys_mmap(k, t, None, 15 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    run(P.sys_madvise(k, t, addr, 15 * PAGE_SIZE, MADV_NOHUGEPAGE))
    for i in range(held):
        run(user_access(k, t, addr + i * PAGE_SIZE, True, i))
    assert len(k.lru_add[0]) == held
    run(user_access(k, t, addr + held * PAGE_SIZE, True, 0))
    expected_after = 1 if k.profile.lru_add_flush_first else 0
    assert len(k.lru_add[0]) == expected_after


def test_thp_read_maps_huge_zero_page_and_write_allocates_thp() -> None:
    """v6.1 mm/huge_memory.c do_huge_pmd_anonymous_page: huge zero page on read (use_zero_page
    defaults on), a PMD-mapped THP on write; the THP flushes the LRU batch at once.

    A write to the huge zero PMD splits it (do_huge_pmd_wp_page fallback) and
    COWs one small page.
    """
    k = boot("6.1", BootParams(normal_mb=32))
    t = P.new_task(k)
    region = run(P.sys_mmap(k, t, None, 3 * PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    a = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, t, a, False))
    pt = k.mms[t.mm].pgtable
    assert P.pagemap(k, t, a).pfn == k.huge_zero_pfn
    assert get_pmd(pt, a)
    run(user_access(k, t, a, True, 3))
    assert not get_pmd(pt, a)
    assert P.pagemap(k, t, a + PAGE_SIZE).pfn == k.zero_pfn
    b = a + PMD_SIZE
    run(user_access(k, t, b, True, 4))
    head = P.pagemap(k, t, b).pfn
    assert head % 512 == 0
    assert get_pmd(pt, b)
    assert int(k.mem.refcount[head]) == 1
    assert folio_mapcount(k, head) == 1
    assert PageAnonExclusive(k, head)
    assert k.lru_add[0] == []


def test_hugetlb_private_and_shared_faults() -> None:
    """v6.1 mm/hugetlb.c hugetlb_no_page: private -> new anon page (ref 1, entire mapcount 1);
    shared -> page cache (+1, dirtied by hugetlb_add_to_page_cache) and mapped (+1)."""
    k = boot("6.1", BootParams(normal_mb=16, hugepages_2m=2))
    t = P.new_task(k)
    priv = run(P.sys_mmap(k, t, None, PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB))
    run(user_access(k, t, priv, True, 1))
    head = P.pagemap(k, t, priv).pfn
    assert int(k.mem.refcount[head]) == 1
    assert folio_mapcount(k, head) == 1
    assert PageAnonExclusive(k, head)
    shared = run(P.sys_mmap(k, t, None, PMD_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB))
    run(user_access(k, t, shared, False))
    head2 = P.pagemap(k, t, shared).pfn
    assert int(k.mem.refcount[head2]) == 2
    assert folio_mapcount(k, head2) == 1
    assert int(k.mem.flags[head2]) & k.pf.mask("PG_dirty")
    no_more = run(P.sys_mmap(k, t, None, PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB))
    assert no_more == -12  # v6.1 hugetlb_reserve_pages fails -> -ENOMEM


def test_sigbus_beyond_eof_and_sigsegv_on_write_to_readonly() -> None:
    """v6.1 mm/filemap.c filemap_fault: index >= i_size pages -> VM_FAULT_SIGBUS;
    arch/x86/mm/fault.c access_error: write to a VMA without VM_WRITE -> SIGSEGV."""
    k = boot("6.1")
    t = P.new_task(k)
    f = P.ext4_create(k, PAGE_SIZE)
    addr = run(P.sys_mmap(k, t, None, 2 * PAGE_SIZE, PROT_READ, MAP_SHARED, f))
    run(user_access(k, t, addr, False))
    with pytest.raises(UserFault) as bus:
        run(user_access(k, t, addr + PAGE_SIZE, False))
    assert bus.value.signal == "SIGBUS"
    with pytest.raises(UserFault) as segv:
        run(user_access(k, t, addr, True, 1))
    assert segv.value.signal == "SIGSEGV"


def test_fault_around_maps_cached_neighbours() -> None:
    """v6.1 mm/memory.c do_fault_around: cached uptodate pages in the 64 KiB window are
    mapped read-only with +1 ref and +1 mapcount on a read fault."""
    k = boot("6.1")
    t = P.new_task(k)
    f = P.tmpfs_create(k, 16 * PAGE_SIZE)
    first = run(P.sys_mmap(k, t, None, 16 * PAGE_SIZE, RW, MAP_SHARED, f))
    for i in range(16):
        run(user_access(k, t, first + i * PAGE_SIZE, False))
    run(lru_add_drain(k, 0))
    other = P.new_task(k)
    second = run(P.sys_mmap(k, other, None, 16 * PAGE_SIZE, PROT_READ, MAP_SHARED, f))
    run(user_access(k, other, second + 3 * PAGE_SIZE, False))
    mapped = [P.pagemap(k, other, second + i * PAGE_SIZE).present for i in range(16)]
    assert mapped[3]
    assert sum(mapped) > 1
    for i, present in enumerate(mapped):
        pfn = k.mappings[f.mapping].i_pages[i]
        assert int(k.mem.refcount[pfn]) == 2 + present


def test_thp_split_and_pte_fault_footprints_share_the_pmd_key() -> None:
    """v6.1 mm/huge_memory.c __split_huge_pmd rewrites all 512 PTEs of the slot: the split
    must conflict with a PTE-level fault at haddr + 4 KiB (explorer independence)."""
    from pinlab.interleave import Point
    from pinlab.kernel.mm.huge_memory import split_huge_pmd
    from pinlab.kernel.mm.memory import handle_pte_fault
    from pinlab.kernel.mm.pgtable import pmd_key
    from pinlab.kernel.mm.types import find_vma

    def footprints(gen: Generator[Yield, None, object]) -> set[Hashable]:
        keys: set[Hashable] = set()
        for y in gen:
            if isinstance(y, Point):
                keys |= set(y.reads or ()) | set(y.writes or ())
        return keys

    k = boot("6.1")
    t = P.new_task(k)
    addr = run(P.sys_mmap(k, t, None, 2 * PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    haddr = (addr + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, t, haddr, True, 1))
    mm = k.mms[t.mm]
    vma = find_vma(mm, haddr)
    assert vma is not None and get_pmd(mm.pgtable, haddr)
    split = footprints(split_huge_pmd(k, mm, vma, haddr))
    fault = footprints(handle_pte_fault(k, mm, vma, haddr + PAGE_SIZE, 0, 0))
    assert pmd_key(mm.id, haddr) in split & fault
