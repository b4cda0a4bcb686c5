"""A user-space load or store by a task, faulting as the x86 hardware and fault handler do.

v6.1 arch/x86/mm/fault.c do_user_addr_fault: no VMA or access_error ->
SIGSEGV; otherwise handle_mm_fault until the page-table walk succeeds.  The
walk sets the accessed bit, and the dirty bit on a store, as the MMU does.
A page's contents are one token (Memmap.data); a store writes `value`.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.hugetlb import (
    huge_page_order,
    huge_pte_key,
    huge_ptep_get,
    is_vm_hugetlb_page,
)
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memory import (
    FAULT_FLAG_ALLOW_RETRY,
    FAULT_FLAG_INTERRUPTIBLE,
    FAULT_FLAG_KILLABLE,
    FAULT_FLAG_TRIED,
    FAULT_FLAG_USER,
    FAULT_FLAG_WRITE,
    VM_FAULT_COMPLETED,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    handle_mm_fault,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PRESENT,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PMD_SIZE,
    get_pte,
    pte_footprint,
    pte_pfn,
    pte_write,
    set_pte_at,
)
from pinlab.kernel.mm.types import VM_EXEC, VM_READ, VM_WRITE, MmStruct, Task, VmArea, find_vma

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


# v6.1 include/linux/mm.h FAULT_FLAG_DEFAULT
FAULT_FLAG_DEFAULT = FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE | FAULT_FLAG_INTERRUPTIBLE


class UserFault(Exception):
    """The access ended in a signal (SIGSEGV, SIGBUS) or the OOM killer."""

    def __init__(self, signal: str, addr: int) -> None:
        super().__init__(f"{signal} at {addr:#x}")
        self.signal = signal
        self.addr = addr


def access_error(vma: VmArea, write: bool) -> bool:
    """v6.1 arch/x86/mm/fault.c access_error: write needs VM_WRITE; read any of R/W/X."""
    if write:
        return not vma.vm_flags & VM_WRITE
    return not vma.vm_flags & (VM_READ | VM_WRITE | VM_EXEC)


def _walk(k: Kernel, mm: MmStruct, vma: VmArea, addr: int, write: bool) -> int | None:
    """The MMU walk: the frame for `addr` if the entry allows the access (sets A/D), else None."""
    bits = _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
    if is_vm_hugetlb_page(vma):
        order = huge_page_order(k, vma)
        size = PAGE_SIZE << order
        haddr = addr & ~(size - 1)
        entry = huge_ptep_get(k, mm, order, haddr)
        table = mm.pgtable.pmd if size == PMD_SIZE else mm.pgtable.pud
        slot_shift = order + PAGE_SHIFT
        if not entry & _PAGE_PRESENT or (write and not pte_write(entry)):
            return None
        table[haddr >> slot_shift] = entry | bits
        return pte_pfn(entry) + ((addr & (size - 1)) >> PAGE_SHIFT)
    slot = addr >> PMD_SHIFT
    pmd = mm.pgtable.pmd.get(slot)
    if pmd is not None:
        if write and not pte_write(pmd):
            return None
        mm.pgtable.pmd[slot] = pmd | bits
        return pte_pfn(pmd) + ((addr & (PMD_SIZE - 1)) >> PAGE_SHIFT)
    pte = get_pte(mm.pgtable, addr)
    if not pte & _PAGE_PRESENT or (write and not pte_write(pte)):
        return None
    set_pte_at(mm.pgtable, addr, pte | bits)
    return pte_pfn(pte)


def _walk_keys(k: Kernel, mm: MmStruct, vma: VmArea | None, addr: int) -> frozenset[Hashable]:
    """The entries the MMU walk reads and may set A/D in: the PTE and its PMD, or the huge entry."""
    if vma is not None and is_vm_hugetlb_page(vma):
        order = huge_page_order(k, vma)
        haddr = addr & ~((PAGE_SIZE << order) - 1)
        return frozenset({huge_pte_key(mm, order, haddr)})
    return pte_footprint(mm.id, addr)


def _data_key(
    k: Kernel, mm: MmStruct, vma: VmArea | None, addr: int, write: bool
) -> frozenset[Hashable]:
    """A store writes the frame's contents (Memmap.data); which frame is read from the tables."""
    if not write or vma is None:
        return frozenset()
    frame = _frame(k, mm, vma, addr)
    return frozenset() if frame is None else frozenset({("page", frame, "data")})


def _frame(k: Kernel, mm: MmStruct, vma: VmArea, addr: int) -> int | None:
    """The frame currently mapped at `addr` (no A/D update), None if not present."""
    if is_vm_hugetlb_page(vma):
        order = huge_page_order(k, vma)
        size = PAGE_SIZE << order
        entry = huge_ptep_get(k, mm, order, addr & ~(size - 1))
        if not entry & _PAGE_PRESENT:
            return None
        return pte_pfn(entry) + ((addr & (size - 1)) >> PAGE_SHIFT)
    pmd = mm.pgtable.pmd.get(addr >> PMD_SHIFT)
    if pmd is not None:
        return pte_pfn(pmd) + ((addr & (PMD_SIZE - 1)) >> PAGE_SHIFT)
    pte = get_pte(mm.pgtable, addr)
    return pte_pfn(pte) if pte & _PAGE_PRESENT else None


def user_access(
    k: Kernel, task: Task, addr: int, write: bool, value: int = 0
) -> Generator[Yield, None, int]:
    """A load (returns the page's token) or a store of `value` by `task` at `addr`."""
    mm = k.mms[task.mm]
    while True:
        vma = find_vma(mm, addr)
        yield Point(
            "user access",
            reads=_walk_keys(k, mm, vma, addr),
            writes=_walk_keys(k, mm, vma, addr) | _data_key(k, mm, vma, addr, write),
        )
        vma = find_vma(mm, addr)
        frame = _walk(k, mm, vma, addr, write) if vma is not None else None
        if frame is not None:
            if write:
                k.mem.data[frame] = value
                return 0
            return int(k.mem.data[frame])
        # v6.1 arch/x86/mm/fault.c do_user_addr_fault: FAULT_FLAG_DEFAULT | USER (| WRITE)
        flags = FAULT_FLAG_DEFAULT | FAULT_FLAG_USER | (FAULT_FLAG_WRITE if write else 0)
        while True:
            yield from mmap_read_lock(k, mm)
            vma = find_vma(mm, addr)
            if vma is None or access_error(vma, write):
                mmap_read_unlock(k, mm)
                raise UserFault("SIGSEGV", addr)
            ret = yield from handle_mm_fault(k, mm, vma, addr, flags, task.cpu)
            if not ret & VM_FAULT_RETRY or not flags & FAULT_FLAG_ALLOW_RETRY:
                break
            # mmap_lock was dropped: fault again at once with FAULT_FLAG_TRIED (v6.1
            # do_user_addr_fault; v5.7.14 :1480-1484; v4.4.178 __do_page_fault :1251-1256,
            # which also clears ALLOW_RETRY: no fault there drops the lock twice)
            flags |= FAULT_FLAG_TRIED
            if k.profile.fault_retry_once:
                flags &= ~FAULT_FLAG_ALLOW_RETRY
        if not ret & (VM_FAULT_COMPLETED | VM_FAULT_RETRY):
            mmap_read_unlock(k, mm)
        if ret & VM_FAULT_OOM:
            raise UserFault("OOM", addr)
        if ret & VM_FAULT_SIGBUS:
            raise UserFault("SIGBUS", addr)
        if ret & VM_FAULT_SIGSEGV:
            raise UserFault("SIGSEGV", addr)
