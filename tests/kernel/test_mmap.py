"""mmap / munmap / mprotect / madvise: vm_flags per mapping kind and unmap invariants."""

from __future__ import annotations

import pytest

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import errno
from pinlab.kernel import process as P
from pinlab.kernel.fs import File
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MADV_POPULATE_WRITE,
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, TASK_SIZE, get_pte, pte_write
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import (
    VM_ACCOUNT,
    VM_DONTEXPAND,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NOHUGEPAGE,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WRITE,
    find_vma,
)
from pinlab.kernel.state import BootParams, boot
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE
BASE = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_SOFTDIRTY

# v6.1 mm/mmap.c do_mmap / mmap_region; fs/hugetlbfs/inode.c hugetlbfs_file_mmap.
FLAG_ROWS = [
    ("anon private", None, MAP_PRIVATE | MAP_ANONYMOUS, BASE | VM_ACCOUNT),
    (
        "anon shared (shmem_zero_setup)",
        None,
        MAP_SHARED | MAP_ANONYMOUS,
        BASE | VM_SHARED | VM_MAYSHARE,
    ),
    ("ext4 shared O_RDWR", "ext4", MAP_SHARED, BASE | VM_SHARED | VM_MAYSHARE),
    ("ext4 private", "ext4", MAP_PRIVATE, BASE | VM_ACCOUNT),
    (
        "ext4 O_RDONLY shared, PROT_READ",
        "ext4-ro",
        MAP_SHARED,
        (BASE & ~VM_WRITE & ~VM_MAYWRITE) | VM_MAYSHARE,
    ),
    ("ext4-dax shared", "dax", MAP_SHARED, BASE | VM_SHARED | VM_MAYSHARE | VM_HUGEPAGE),
    (
        "hugetlb anon private",
        None,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
        BASE | VM_HUGETLB | VM_DONTEXPAND,
    ),
]


@pytest.mark.parametrize(("name", "fs", "flags", "vm_flags"), FLAG_ROWS)
def test_vm_flags(name: str, fs: str | None, flags: int, vm_flags: int) -> None:
    k = boot("6.1", BootParams(normal_mb=16, hugepages_2m=1))
    t = P.new_task(k)
    file: File | None = None
    prot = RW
    if fs == "ext4":
        file = P.ext4_create(k, PMD_SIZE)
    elif fs == "ext4-ro":
        file = P.ext4_create(k, PMD_SIZE, writable=False)
        prot = PROT_READ
    elif fs == "dax":
        file = P.ext4_create(k, PMD_SIZE, dax=True)
    addr = run(P.sys_mmap(k, t, None, PMD_SIZE, prot, flags, file))
    assert addr > 0, name
    vma = find_vma(k.mms[t.mm], addr)
    assert vma is not None
    assert vma.vm_flags == vm_flags, name


def test_mmap_errors() -> None:
    """v6.1 mm/mmap.c: len 0 -> -EINVAL; bad MAP_TYPE -> -EINVAL; PROT_WRITE MAP_SHARED on an
    O_RDONLY file -> -EACCES; MAP_HUGETLB on a non-hugetlbfs file -> -EINVAL."""
    k = boot("6.1")
    t = P.new_task(k)
    assert run(P.sys_mmap(k, t, None, 0, RW, MAP_PRIVATE | MAP_ANONYMOUS)) == -22
    assert run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_ANONYMOUS)) == -22
    ro = P.ext4_create(k, PAGE_SIZE, writable=False)
    assert run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_SHARED, ro)) == -13
    f = P.tmpfs_create(k, PAGE_SIZE)
    assert run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_SHARED | MAP_HUGETLB, f)) == -22


def test_munmap_frees_anon_pages_after_drain() -> None:
    """unmap_region drains the LRU batch, zaps, and the gathered refs drop after the flush:
    private anon pages are freed; the allocator gets every page back."""
    k = boot("6.1")
    free_before = sum(len(s) << o for o, s in enumerate(k.free_area.blocks["normal"]))
    t = P.new_task(k)
    addr = run(P.sys_mmap(k, t, None, 8 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    frames = []
    for i in range(8):
        run(user_access(k, t, addr + i * PAGE_SIZE, True, i))
        frames.append(P.pagemap(k, t, addr + i * PAGE_SIZE).pfn)
    assert run(P.sys_munmap(k, t, addr, 8 * PAGE_SIZE)) == 0
    assert all(int(k.mem.refcount[p]) == 0 for p in frames)
    assert find_vma(k.mms[t.mm], addr) is None
    free_after = sum(len(s) << o for o, s in enumerate(k.free_area.blocks["normal"]))
    assert free_after == free_before


def test_partial_munmap_splits_vma_and_thp() -> None:
    """__split_vma + vma_adjust_trans_huge: unmapping the middle of a THP splits its PMD."""
    k = boot("6.1", BootParams(normal_mb=32))
    t = P.new_task(k)
    region = run(P.sys_mmap(k, t, None, 3 * PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    a = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    run(user_access(k, t, a, True, 1))
    head = P.pagemap(k, t, a).pfn
    assert run(P.sys_munmap(k, t, a + PAGE_SIZE, PAGE_SIZE)) == 0
    assert P.pagemap(k, t, a).pfn == head
    assert not P.pagemap(k, t, a + PAGE_SIZE).present
    assert P.pagemap(k, t, a + 2 * PAGE_SIZE).pfn == head + 2
    assert int(k.mem.refcount[head]) == 511
    assert len(k.mms[t.mm].vmas) == 2


def test_mprotect_readonly_then_writable_restores_exclusive_dirty_pte() -> None:
    """v6.1 mm/mprotect.c can_change_pte_writable: a dirty exclusive anon PTE is made
    writable again without a fault; a fresh (clean) zero-page PTE is not."""
    k = boot("6.1")
    t = P.new_task(k)
    addr = run(P.sys_mmap(k, t, None, 2 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    run(P.sys_madvise(k, t, addr, 2 * PAGE_SIZE, MADV_NOHUGEPAGE))
    run(user_access(k, t, addr, True, 1))
    run(user_access(k, t, addr + PAGE_SIZE, False))
    pt = k.mms[t.mm].pgtable
    assert run(P.sys_mprotect(k, t, addr, 2 * PAGE_SIZE, PROT_READ)) == 0
    assert not pte_write(get_pte(pt, addr))
    assert run(P.sys_mprotect(k, t, addr, 2 * PAGE_SIZE, RW)) == 0
    assert pte_write(get_pte(pt, addr))
    assert not pte_write(get_pte(pt, addr + PAGE_SIZE))


def test_madvise_hugepage_flags_and_thp_policy() -> None:
    """v6.1 mm/khugepaged.c hugepage_madvise: HUGEPAGE/NOHUGEPAGE toggle each other;
    NOHUGEPAGE keeps faults on small pages (hugepage_vma_check)."""
    k = boot("6.1", BootParams(normal_mb=32))
    t = P.new_task(k)
    region = run(P.sys_mmap(k, t, None, 2 * PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    a = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    assert run(P.sys_madvise(k, t, region, 2 * PMD_SIZE, MADV_HUGEPAGE)) == 0
    vma = find_vma(k.mms[t.mm], region)
    assert vma is not None and vma.vm_flags & VM_HUGEPAGE
    assert run(P.sys_madvise(k, t, region, 2 * PMD_SIZE, MADV_NOHUGEPAGE)) == 0
    assert vma.vm_flags & VM_NOHUGEPAGE and not vma.vm_flags & VM_HUGEPAGE
    run(user_access(k, t, a, True, 1))
    run(lru_add_drain(k, 0))
    pfn = P.pagemap(k, t, a).pfn
    assert int(k.mem.refcount[pfn]) == 1
    assert int(k.mem.head[pfn]) == -1 and int(k.mem.head[pfn + 1]) != pfn
    assert run(P.sys_madvise(k, t, region, PAGE_SIZE, 99)) == -22


_FIXED_ANON = 0x10 | MAP_PRIVATE | MAP_ANONYMOUS
ERRNO_ROWS = [
    # (citation, call arguments (addr, len, prot, flags), errno)
    (
        "v6.1 mm/mmap.c ksys_mmap_pgoff: no MAP_ANONYMOUS and no fd -> fget fails",
        (None, PAGE_SIZE, RW, MAP_PRIVATE),
        errno.EBADF,
    ),
    (
        "v6.1 mm/mmap.c do_mmap: anonymous MAP_SHARED_VALIDATE is not a valid type",
        (None, PAGE_SIZE, RW, 0x03 | MAP_ANONYMOUS),
        errno.EINVAL,
    ),
    (
        "v6.1 mm/mmap.c get_unmapped_area: MAP_FIXED past TASK_SIZE",
        (TASK_SIZE, 2 * PAGE_SIZE, RW, _FIXED_ANON),
        errno.ENOMEM,
    ),
    (
        "v6.1 security/commoncap.c cap_mmap_addr: below mmap_min_addr, unprivileged",
        (PAGE_SIZE, PAGE_SIZE, RW, _FIXED_ANON),
        errno.EPERM,
    ),
]


@pytest.mark.parametrize(("cite", "args", "err"), ERRNO_ROWS)
def test_mmap_errno_rows(cite: str, args: tuple[int | None, int, int, int], err: int) -> None:
    """Each row is a kernel fact about mmap's return value."""
    k = boot("6.1")
    t = P.new_task(k)
    assert run(P.sys_mmap(k, t, *args)) == -err, cite


def test_madvise_errno_rows() -> None:
    """v6.1 mm/madvise.c do_madvise: PAGE_ALIGN((size_t)-1) wraps to 0 -> -EINVAL;
    madvise_populate: check_vma_flags refusal -> -EINVAL (faultin_vma_page_range);
    MADV_DONTNEED on hugetlb is allowed with an aligned start (madvise_dontneed_free_valid_vma)."""
    k = boot("6.1", BootParams(hugepages_2m=1))
    t = P.new_task(k)
    ro = run(P.sys_mmap(k, t, None, PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS))
    assert run(P.sys_madvise(k, t, ro, 2**64 - 1, MADV_DONTNEED)) == -errno.EINVAL
    assert run(P.sys_madvise(k, t, ro, PAGE_SIZE, MADV_POPULATE_WRITE)) == -errno.EINVAL
    huge = run(P.sys_mmap(k, t, None, PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB))
    run(user_access(k, t, huge, True, 5))
    assert run(P.sys_madvise(k, t, huge, PMD_SIZE, MADV_DONTNEED)) == 0
    assert not P.pagemap(k, t, huge).present
    assert len(k.mms[t.mm].vmas) == 2


def test_dontneed_takes_the_read_lock_and_keeps_vmas() -> None:
    """v6.1 mm/madvise.c madvise_need_mmap_write(MADV_DONTNEED) == 0: a reader may hold
    mmap_lock meanwhile, and a partial DONTNEED does not split the VMA."""
    from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock

    k = boot("6.1")
    t = P.new_task(k)
    addr = run(P.sys_mmap(k, t, None, 4 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    run(user_access(k, t, addr + PAGE_SIZE, True, 9))
    mm = k.mms[t.mm]
    run(mmap_read_lock(k, mm))
    assert run(P.sys_madvise(k, t, addr + PAGE_SIZE, PAGE_SIZE, MADV_DONTNEED)) == 0
    mmap_read_unlock(k, mm)
    assert len(mm.vmas) == 1
    assert not P.pagemap(k, t, addr + PAGE_SIZE).present
