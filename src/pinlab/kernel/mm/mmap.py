"""VMA lifecycle: mmap, munmap, mprotect, madvise, exit_mmap.

v6.1 mm/mmap.c, mm/mprotect.c, mm/madvise.c.

Address selection is deterministic top-down below a fixed mmap_base (the
kernel randomises it); VMA merging (vma_merge) is not modelled, so adjacent
compatible VMAs stay separate.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from pinlab.interleave import Point, Yield
from pinlab.kernel.errno import EACCES, EBADF, EEXIST, EINVAL, ENOMEM, EOVERFLOW, EPERM
from pinlab.kernel.mm.huge_memory import split_huge_pmd
from pinlab.kernel.mm.huge_memory_4_4 import split_huge_page_pmd
from pinlab.kernel.mm.huge_pmd_4_4 import change_huge_pmd as change_huge_pmd_4_4
from pinlab.kernel.mm.locking import (
    mmap_write_lock,
    mmap_write_unlock,
    pte_lock,
    pte_unlock,
)
from pinlab.kernel.mm.memory import (
    FAULT_FLAG_WRITE,
    VM_FAULT_ERROR,
    handle_mm_fault,
    vma_page_prot,
    vma_wants_writenotify,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_RW,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    TASK_SIZE,
    get_pte,
    pmd_key,
    pte_dirty,
    pte_footprint,
    pte_modify,
    pte_present,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import PageAnon, PageAnonExclusive
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import (
    VM_ACCOUNT,
    VM_DONTCOPY,
    VM_DONTEXPAND,
    VM_EXEC,
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_LOCKED,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NOHUGEPAGE,
    VM_NORESERVE,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WIPEONFORK,
    VM_WRITE,
    AddressSpace,
    MmStruct,
    VmArea,
    find_vma,
)
from pinlab.kernel.mm.zap import tlb_finish_mmu, unmap_page_range

if TYPE_CHECKING:
    from pinlab.kernel.fs import File
    from pinlab.kernel.state import Kernel


# v6.1 include/uapi/asm-generic/mman-common.h, include/uapi/linux/mman.h
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_LOCKED = 0x2000
MAP_POPULATE = 0x008000
MAP_HUGETLB = 0x040000
MAP_FIXED_NOREPLACE = 0x100000
MAP_HUGE_SHIFT = 26
MAP_HUGE_MASK = 0x3F
MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT
MAP_HUGE_1GB = 30 << MAP_HUGE_SHIFT
MADV_DONTNEED = 4
MADV_DONTFORK = 10
MADV_DOFORK = 11
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_WIPEONFORK = 18
MADV_KEEPONFORK = 19
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23

# Model choice: the top of the mmap area (the kernel's mmap_base is randomised).
MMAP_BASE = 0x7F00_0000_0000
MMAP_MIN_ADDR = 0x10000
U64 = 0xFFFF_FFFF_FFFF_FFFF


def calc_vm_prot_bits(prot: int) -> int:
    """v6.1 include/linux/mman.h calc_vm_prot_bits: PROT_* -> VM_READ/WRITE/EXEC."""
    return (
        (VM_READ if prot & PROT_READ else 0)
        | (VM_WRITE if prot & PROT_WRITE else 0)
        | (VM_EXEC if prot & PROT_EXEC else 0)
    )


def _overlaps(mm: MmStruct, start: int, end: int) -> bool:
    return any(v.vm_start < end and start < v.vm_end for v in mm.vmas)


def get_unmapped_area(mm: MmStruct, length: int, align: int) -> int:
    """v6.1 mm/mmap.c arch_get_unmapped_area_topdown: the highest free gap below mmap_base."""
    top = MMAP_BASE
    for vma in sorted(mm.vmas, key=lambda v: -v.vm_start):
        if vma.vm_start >= top:
            top = min(top, vma.vm_start)
            continue
        cand = (top - length) & ~(align - 1)
        if cand >= vma.vm_end:
            return cand
        top = vma.vm_start
    cand = (top - length) & ~(align - 1)
    return cand if cand >= MMAP_MIN_ADDR else -ENOMEM


def insert_vma(mm: MmStruct, vma: VmArea) -> None:
    """v6.1 mm/mmap.c vma_link: keep mm.vmas sorted by address."""
    mm.vmas.append(vma)
    mm.vmas.sort(key=lambda v: v.vm_start)


def _hugetlb_order(flags: int) -> int | None:
    """The huge page order MAP_HUGETLB asks for (default 2 MiB), None if unsupported."""
    from pinlab.kernel.mm.pgtable import HPAGE_PMD_ORDER, HPAGE_PUD_ORDER

    size_log = (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK
    return {0: HPAGE_PMD_ORDER, 21: HPAGE_PMD_ORDER, 30: HPAGE_PUD_ORDER}.get(size_log)


def do_mmap(
    k: Kernel,
    mm: MmStruct,
    addr: int | None,
    length: int,
    prot: int,
    flags: int,
    file: File | None,
    offset: int,
    cpu: int = 0,
) -> Generator[Yield, None, int]:
    """v6.1 mm/mmap.c ksys_mmap_pgoff + do_mmap + mmap_region: the new VMA's address or -errno."""
    from pinlab.kernel.fs.hugetlbfs import hugetlb_file_setup
    from pinlab.kernel.fs.shmem import shmem_file_setup

    if offset & (PAGE_SIZE - 1):
        return -EINVAL
    pgoff = offset >> PAGE_SHIFT
    if file is None and not flags & MAP_ANONYMOUS:
        # v6.1 mm/mmap.c ksys_mmap_pgoff: fget(fd) fails
        return -EBADF
    if flags & MAP_ANONYMOUS:
        file = None
    if flags & MAP_HUGETLB and file is None:
        order = _hugetlb_order(flags)
        if order is None:
            return -EINVAL
        hsize = PAGE_SIZE << order
        length = (length + hsize - 1) & ~(hsize - 1)
        file = hugetlb_file_setup(k, length, order)
        flags &= ~MAP_ANONYMOUS
    elif flags & MAP_HUGETLB and file is not None and not k.mappings[file.mapping].fs.is_hugetlbfs:
        return -EINVAL
    mapping = k.mappings[file.mapping] if file is not None else None
    align = PAGE_SIZE
    if mapping is not None and mapping.fs.is_hugetlbfs:
        align = PAGE_SIZE << mapping.huge_order
        length = (length + align - 1) & ~(align - 1)
    if not length:
        return -EINVAL
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if not length or length > TASK_SIZE:
        return -ENOMEM
    if pgoff + (length >> PAGE_SHIFT) < pgoff:
        return -EOVERFLOW
    map_type = flags & MAP_TYPE
    if map_type not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE):
        return -EINVAL
    # v6.1 mm/mmap.c do_mmap: anonymous MAP_SHARED_VALIDATE is not a valid type
    if file is None and map_type == MAP_SHARED_VALIDATE:
        return -EINVAL
    shared = map_type != MAP_PRIVATE
    vm_flags = calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if flags & MAP_LOCKED:
        vm_flags |= VM_LOCKED
    if file is not None:
        assert mapping is not None
        if not file.readable:
            return -EACCES
        if shared:
            if prot & PROT_WRITE and not file.writable:
                return -EACCES
            vm_flags |= VM_SHARED | VM_MAYSHARE
            if not file.writable:
                vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
        if mapping.fs.is_hugetlbfs:
            if pgoff & ((1 << mapping.huge_order) - 1):
                return -EINVAL
            vm_flags |= VM_HUGETLB | VM_DONTEXPAND
        if mapping.fs.is_dax:
            vm_flags |= VM_HUGEPAGE
    elif shared:
        vm_flags |= VM_SHARED | VM_MAYSHARE
        pgoff = 0
    yield from mmap_write_lock(k, mm)
    try:
        if addr is not None and flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            # v6.1 mm/mmap.c get_unmapped_area: beyond TASK_SIZE -ENOMEM, misaligned -EINVAL;
            # security/commoncap.c cap_mmap_addr: below mmap_min_addr -EPERM (tasks are
            # unprivileged in the model)
            if addr + length > TASK_SIZE:
                return -ENOMEM
            if addr & (align - 1):
                return -EINVAL
            if addr < MMAP_MIN_ADDR:
                return -EPERM
            if _overlaps(mm, addr, addr + length):
                if flags & MAP_FIXED_NOREPLACE:
                    return -EEXIST
                yield from do_munmap_locked(k, mm, addr, length, cpu)
        else:
            hint = addr
            addr = None
            if hint is not None:
                # v6.1 mm/mmap.c do_mmap round_hint_to_min + arch_get_unmapped_area_topdown:
                # the hint is rounded down (PAGE_ALIGN of addr is done on len only)
                hint &= ~(align - 1)
                fits = hint >= MMAP_MIN_ADDR and hint + length <= TASK_SIZE
                if fits and not _overlaps(mm, hint, hint + length):
                    addr = hint
            if addr is None:
                addr = get_unmapped_area(mm, length, align)
                if addr < 0:
                    return addr
        if file is None and not shared:
            pgoff = addr >> PAGE_SHIFT
        if file is None and shared:
            file = shmem_file_setup(k, length)
            mapping = k.mappings[file.mapping]
        if mapping is not None and mapping.fs.is_hugetlbfs:
            err = hugetlb_reserve(
                k, mapping, pgoff, length, bool(vm_flags & VM_MAYSHARE), bool(vm_flags & VM_WRITE)
            )
            if err:
                return err
        is_hugetlb_file = mapping is not None and mapping.fs.is_hugetlbfs
        if flags & MAP_NORESERVE:
            vm_flags |= VM_NORESERVE
        if not is_hugetlb_file and vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE) == VM_WRITE:
            vm_flags |= VM_ACCOUNT
        vma = VmArea(
            addr,
            addr + length,
            vm_flags | VM_SOFTDIRTY,
            pgoff,
            file.mapping if file is not None else None,
        )
        insert_vma(mm, vma)
    finally:
        mmap_write_unlock(k, mm)
    if flags & MAP_POPULATE or vm_flags & VM_LOCKED:
        yield from populate_vma_page_range(k, mm, vma, vma.vm_start, vma.vm_end, cpu)
    return addr


def hugetlb_reserve(
    k: Kernel, mapping: AddressSpace, pgoff: int, length: int, shared: bool, write: bool
) -> int:
    """v6.1 mm/hugetlb.c hugetlb_reserve_pages: enough free huge pages, else -ENOMEM.

    Only the free count is checked; reservations are not carried forward.  A
    writable mapping grows the file to cover it (v6.1 fs/hugetlbfs/inode.c hugetlbfs_file_mmap).
    """
    order = mapping.huge_order
    first = pgoff >> order
    count = length >> (order + PAGE_SHIFT)
    need = count
    if shared:
        need = sum(1 for i in range(first, first + count) if i not in mapping.i_pages)
    if len(k.hugetlb.free.get(order, [])) < need:
        return -ENOMEM
    end = (pgoff << PAGE_SHIFT) + length
    if write and mapping.i_size < end:
        mapping.i_size = end
    return 0


def populate_vma_page_range(
    k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c populate_vma_page_range / faultin_vma_page_range: fault every page in.

    Write faults for private writable VMAs (to break COW up front), read
    faults otherwise, then lru_add_drain (v6.1 mm/gup.c:1609).
    """
    write = vma.vm_flags & (VM_WRITE | VM_SHARED) == VM_WRITE
    return (yield from faultin_range(k, mm, vma, start, end, write, cpu))


def faultin_range(
    k: Kernel, mm: MmStruct, vma: VmArea, start: int, end: int, write: bool, cpu: int
) -> Generator[Yield, None, int]:
    """Fault [start, end) in as MADV_POPULATE_(READ|WRITE) would; 0 or -EFAULT/-ENOMEM."""
    from pinlab.kernel.errno import EFAULT
    from pinlab.kernel.mm.memory import VM_FAULT_OOM
    from pinlab.kernel.mm.pgtable import get_pmd, pte_write

    flags = FAULT_FLAG_WRITE if write else 0
    addr = start
    while addr < end:
        pmd = get_pmd(mm.pgtable, addr)
        pte = get_pte(mm.pgtable, addr)
        entry = pmd or pte
        if not entry or not pte_present(entry) or (write and not pte_write(entry)):
            ret = yield from handle_mm_fault(k, mm, vma, addr, flags, cpu)
            if ret & VM_FAULT_ERROR:
                return -ENOMEM if ret & VM_FAULT_OOM else -EFAULT
            continue
        addr += PMD_SIZE - (addr & (PMD_SIZE - 1)) if pmd else PAGE_SIZE
    yield from lru_add_drain(k, cpu)
    return 0


def split_vma(mm: MmStruct, vma: VmArea, addr: int) -> VmArea:
    """v6.1 mm/mmap.c __split_vma: [vm_start, addr) stays, [addr, vm_end) is returned."""
    pgoff = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
    tail = replace(vma, vm_start=addr, vm_pgoff=pgoff)
    vma.vm_end = addr
    insert_vma(mm, tail)
    return tail


def _adjust_thp(k: Kernel, mm: MmStruct, vma: VmArea, addr: int) -> Generator[Yield, None, None]:
    """v6.1 mm/huge_memory.c vma_adjust_trans_huge: split a huge PMD straddling `addr`.

    v4.4 mm/huge_memory.c:3093 vma_adjust_trans_huge (from mm/mmap.c:821 vma_adjust)
    splits the whole THP: split_huge_page_address -> split_huge_page_pmd_mm.
    """
    if addr & (PMD_SIZE - 1) and (addr >> PMD_SHIFT) in mm.pgtable.pmd:
        if k.profile.thp_tail_refs_in_mapcount:
            yield from split_huge_page_pmd(k, mm, vma, addr)
        else:
            yield from split_huge_pmd(k, mm, vma, addr)


def vmas_in_range(
    k: Kernel, mm: MmStruct, start: int, end: int
) -> Generator[Yield, None, list[VmArea]]:
    """Split the VMAs at start/end and return those inside [start, end)."""
    for vma in list(mm.vmas):
        if vma.vm_start < start < vma.vm_end:
            yield from _adjust_thp(k, mm, vma, start)
            split_vma(mm, vma, start)
    for vma in list(mm.vmas):
        if vma.vm_start < end < vma.vm_end:
            yield from _adjust_thp(k, mm, vma, end)
            split_vma(mm, vma, end)
    return [v for v in mm.vmas if start <= v.vm_start and v.vm_end <= end]


def free_pgtables(mm: MmStruct, start: int, end: int) -> None:
    """v6.1 mm/memory.c free_pgtables: drop PTE tables no remaining VMA reaches."""
    for slot in range(start >> PMD_SHIFT, ((end - 1) >> PMD_SHIFT) + 1):
        lo, hi = slot << PMD_SHIFT, (slot + 1) << PMD_SHIFT
        if not _overlaps(mm, lo, hi):
            table = mm.pgtable.pte.get(slot)
            if table is not None and not np.any(table):
                del mm.pgtable.pte[slot]


def do_munmap_locked(
    k: Kernel, mm: MmStruct, start: int, length: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/mmap.c do_mas_munmap + unmap_region (mmap_lock held for write)."""
    if start & (PAGE_SIZE - 1) or start > TASK_SIZE or length > TASK_SIZE - start:
        return -EINVAL
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if not length:
        return -EINVAL
    end = start + length
    victims = yield from vmas_in_range(k, mm, start, end)
    if not victims:
        return 0
    yield from lru_add_drain(k, cpu)
    gather: list[int] = []
    for vma in victims:
        yield from unmap_page_range(k, mm, vma, vma.vm_start, vma.vm_end, True, gather)
    for vma in victims:
        mm.vmas.remove(vma)
    free_pgtables(mm, start, end)
    yield from tlb_finish_mmu(k, mm, gather, cpu)
    return 0


def do_munmap(
    k: Kernel, mm: MmStruct, start: int, length: int, cpu: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 mm/mmap.c __vm_munmap: take mmap_lock for write and unmap."""
    yield from mmap_write_lock(k, mm)
    try:
        return (yield from do_munmap_locked(k, mm, start, length, cpu))
    finally:
        mmap_write_unlock(k, mm)


def can_change_pte_writable(k: Kernel, vma: VmArea, pte: int) -> bool:
    """v6.1 mm/mprotect.c can_change_pte_writable: dirty, and for private an exclusive anon page."""
    from pinlab.kernel.mm.memory import vm_normal_page

    if not pte_dirty(pte):
        return False
    if vma.vm_flags & VM_SHARED:
        return True
    page = vm_normal_page(k, vma, 0, pte)
    return (
        page is not None
        and PageAnon(k, page)
        and k.profile.page_anon_exclusive
        and PageAnonExclusive(k, page)
    )


def do_mprotect(
    k: Kernel, mm: MmStruct, start: int, length: int, prot: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/mprotect.c do_mprotect_pkey + mprotect_fixup + change_protection."""
    from pinlab.kernel.mm.hugetlb import huge_page_order, huge_ptep_get, set_huge_pte_at

    if start & (PAGE_SIZE - 1):
        return -EINVAL
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    end = start + length
    if end < start:
        return -ENOMEM
    if not length:
        return 0
    yield from mmap_write_lock(k, mm)
    try:
        addr = start
        while addr < end:
            vma = find_vma(mm, addr)
            if vma is None:
                return -ENOMEM
            addr = vma.vm_end
        newflags_bits = calc_vm_prot_bits(prot)
        for vma in (yield from vmas_in_range(k, mm, start, end)):
            if newflags_bits & VM_WRITE and not vma.vm_flags & VM_MAYWRITE:
                return -EACCES
            if newflags_bits & VM_READ and not vma.vm_flags & VM_MAYREAD:
                return -EACCES
        for vma in (yield from vmas_in_range(k, mm, start, end)):
            vma.vm_flags = (vma.vm_flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | newflags_bits
            if vma.vm_flags & VM_HUGETLB:
                order = huge_page_order(k, vma)
                size = PAGE_SIZE << order
                for haddr in range(vma.vm_start, vma.vm_end, size):
                    entry = huge_ptep_get(k, mm, order, haddr)
                    if entry:
                        new = pte_modify(entry, vma_page_prot(k, vma)) & ~_PAGE_RW
                        if vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE:
                            new |= _PAGE_RW
                        set_huge_pte_at(k, mm, order, haddr, new)
                continue
            yield from change_protection(k, mm, vma)
        return 0
    finally:
        mmap_write_unlock(k, mm)


def change_protection(k: Kernel, mm: MmStruct, vma: VmArea) -> Generator[Yield, None, None]:
    """v6.1 mm/mprotect.c change_pte_range / change_huge_pmd with MM_CP_TRY_CHANGE_WRITABLE.

    v4.4 (profile.thp_tail_refs_in_mapcount): huge PMDs by huge_pmd_4_4.change_huge_pmd.
    """
    prot = vma_page_prot(k, vma)
    if vma.vm_flags & VM_SHARED:
        try_writable = vma_wants_writenotify(k, vma)
    else:
        try_writable = bool(vma.vm_flags & VM_WRITE)
    for slot in range(vma.vm_start >> PMD_SHIFT, ((vma.vm_end - 1) >> PMD_SHIFT) + 1):
        if slot in mm.pgtable.pmd and k.profile.thp_tail_refs_in_mapcount:
            # v4.4 mm/mprotect.c:162-179 change_pmd_range: a PMD that change_huge_pmd did
            # not change (it was split meanwhile) goes on to change_pte_range
            if (yield from change_huge_pmd_4_4(k, mm, vma, slot << PMD_SHIFT, prot)):
                continue
        elif slot in mm.pgtable.pmd:
            # v6.1 mm/huge_memory.c change_huge_pmd: under the PMD lock
            # (__pmd_trans_huge_lock); a PMD split meanwhile returns 0, and
            # change_pmd_range goes on to change_pte_range
            addr = slot << PMD_SHIFT
            yield from pte_lock(k, mm, addr)
            key = frozenset({pmd_key(mm.id, addr)})
            yield Point("change_huge_pmd", reads=key, writes=key)
            old = mm.pgtable.pmd.get(slot, 0)
            if old:
                new = pte_modify(old, prot)
                if try_writable and not new & _PAGE_RW and can_change_pte_writable(k, vma, old):
                    new |= _PAGE_RW
                mm.pgtable.pmd[slot] = new
            pte_unlock(k, mm, addr)
            if old:
                continue
        lo = max(vma.vm_start, slot << PMD_SHIFT)
        hi = min(vma.vm_end, (slot + 1) << PMD_SHIFT)
        if slot not in mm.pgtable.pte:
            continue
        yield from pte_lock(k, mm, lo)
        # v6.1 mm/mprotect.c change_pte_range: every PTE of the table under its lock
        keys = frozenset().union(*(pte_footprint(mm.id, a) for a in range(lo, hi, PAGE_SIZE)))
        yield Point("change_pte_range", reads=keys, writes=keys)
        for addr in range(lo, hi, PAGE_SIZE):
            old = get_pte(mm.pgtable, addr)
            if not old or not pte_present(old):
                continue
            new = pte_modify(old, prot)
            if try_writable and not new & _PAGE_RW and can_change_pte_writable(k, vma, old):
                new |= _PAGE_RW
            set_pte_at(mm.pgtable, addr, new)
        pte_unlock(k, mm, lo)


def do_madvise(
    k: Kernel, mm: MmStruct, start: int, length: int, advice: int, cpu: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 mm/madvise.c do_madvise for the advices the model knows; -EINVAL otherwise."""
    known = {
        MADV_DONTNEED,
        MADV_DONTFORK,
        MADV_DOFORK,
        MADV_HUGEPAGE,
        MADV_NOHUGEPAGE,
        MADV_WIPEONFORK,
        MADV_KEEPONFORK,
        MADV_POPULATE_READ,
        MADV_POPULATE_WRITE,
    }
    if advice not in known or start & (PAGE_SIZE - 1):
        return -EINVAL
    aligned = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & U64
    if length and not aligned:
        return -EINVAL
    end = start + aligned
    if end > U64:
        return -EINVAL
    if end == start:
        return 0
    if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        return (yield from madvise_populate(k, mm, start, end, advice == MADV_POPULATE_WRITE, cpu))
    if advice == MADV_DONTNEED:
        return (yield from madvise_dontneed(k, mm, start, end, cpu))
    yield from mmap_write_lock(k, mm)
    try:
        vmas = yield from vmas_in_range(k, mm, start, end)
        covered = sum(v.vm_end - v.vm_start for v in vmas)
        for vma in vmas:
            err = madvise_vma(k, mm, vma, advice)
            if err:
                return err
        # v6.1 mm/madvise.c madvise_walk_vmas: a hole in the range -> -ENOMEM
        return -ENOMEM if covered != end - start else 0
    finally:
        mmap_write_unlock(k, mm)


def madvise_dontneed(
    k: Kernel, mm: MmStruct, start: int, end: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/madvise.c madvise_dontneed_free under mmap_read_lock (madvise_need_mmap_write 0).

    Each VMA's part of the range is zapped with zap_page_range_single; VMAs
    are not split.  VM_LOCKED / VM_PFNMAP VMAs are refused; hugetlb VMAs need
    a huge-page-aligned start and the end is rounded down to a huge page
    (madvise_dontneed_free_valid_vma).  A hole gives -ENOMEM after the walk.
    """
    from pinlab.kernel.mm.hugetlb import huge_page_order, is_vm_hugetlb_page
    from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
    from pinlab.kernel.mm.zap import zap_page_range_single

    yield from mmap_read_lock(k, mm)
    try:
        unmapped = False
        addr = start
        for vma in sorted(mm.vmas, key=lambda v: v.vm_start):
            if vma.vm_end <= addr or vma.vm_start >= end:
                continue
            if vma.vm_start > addr:
                unmapped = True
            lo, hi = max(addr, vma.vm_start), min(end, vma.vm_end)
            if is_vm_hugetlb_page(vma):
                size = PAGE_SIZE << huge_page_order(k, vma)
                if lo & (size - 1):
                    return -EINVAL
                hi &= ~(size - 1)
            elif vma.vm_flags & (VM_LOCKED | VM_PFNMAP):
                return -EINVAL
            if lo < hi:
                yield from zap_page_range_single(k, mm, vma, lo, hi, True, cpu)
            addr = vma.vm_end
        return -ENOMEM if unmapped or addr < end else 0
    finally:
        mmap_read_unlock(k, mm)


def madvise_vma(k: Kernel, mm: MmStruct, vma: VmArea, advice: int) -> int:
    """One VMA's flag madvise (v6.1 mm/madvise.c madvise_vma_behavior, hugepage_madvise)."""
    if advice == MADV_DONTFORK:
        vma.vm_flags |= VM_DONTCOPY
    elif advice == MADV_DOFORK:
        vma.vm_flags &= ~VM_DONTCOPY
    elif advice == MADV_WIPEONFORK:
        if vma.vm_file is not None or vma.vm_flags & VM_SHARED:
            return -EINVAL
        vma.vm_flags |= VM_WIPEONFORK
    elif advice == MADV_KEEPONFORK:
        vma.vm_flags &= ~VM_WIPEONFORK
    elif advice == MADV_HUGEPAGE:
        vma.vm_flags = (vma.vm_flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
    elif advice == MADV_NOHUGEPAGE:
        vma.vm_flags = (vma.vm_flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE
    return 0


def madvise_populate(
    k: Kernel, mm: MmStruct, start: int, end: int, write: bool, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/madvise.c madvise_populate: fault in each VMA of the range (-ENOMEM on a hole)."""
    from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock

    yield from mmap_read_lock(k, mm)
    try:
        addr = start
        while addr < end:
            vma = find_vma(mm, addr)
            if vma is None:
                return -ENOMEM
            # v6.1 mm/gup.c faultin_vma_page_range: check_vma_flags failure -> -EINVAL
            if (write and not vma.vm_flags & VM_WRITE) or not vma.vm_flags & VM_READ:
                return -EINVAL
            hi = min(end, vma.vm_end)
            err = yield from faultin_range(k, mm, vma, addr, hi, write, cpu)
            if err:
                return err
            addr = hi
        return 0
    finally:
        mmap_read_unlock(k, mm)


def exit_mmap(k: Kernel, mm: MmStruct, cpu: int = 0) -> Generator[Yield, None, None]:
    """v6.1 mm/mmap.c exit_mmap: drain and unmap_vmas under mmap_read_lock, then free
    the tables and VMAs under mmap_write_lock."""
    from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock

    yield from mmap_read_lock(k, mm)
    yield from lru_add_drain(k, cpu)
    gather: list[int] = []
    for vma in list(mm.vmas):
        yield from unmap_page_range(k, mm, vma, vma.vm_start, vma.vm_end, True, gather, cpu)
    mmap_read_unlock(k, mm)
    yield from mmap_write_lock(k, mm)
    yield from tlb_finish_mmu(k, mm, gather, cpu)
    mm.vmas.clear()
    mm.pgtable.pte.clear()
    mm.pgtable.pmd.clear()
    mm.pgtable.pud.clear()
    mmap_write_unlock(k, mm)
