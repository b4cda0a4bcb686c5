"""A user-space load or store by a task, faulting as the x86 hardware and fault handler do.

v6.1 arch/x86/mm/fault.c do_user_addr_fault: no VMA or access_error ->
SIGSEGV; otherwise handle_mm_fault until the page-table walk succeeds.  The
walk sets the accessed bit, and the dirty bit on a store, as the MMU does.
A page's contents are one token (Memmap.data); a store writes `value`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.hugetlb import huge_page_order, huge_ptep_get, is_vm_hugetlb_page
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memory import (
    FAULT_FLAG_USER,
    FAULT_FLAG_WRITE,
    VM_FAULT_OOM,
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
    pte_pfn,
    pte_write,
    set_pte_at,
)
from pinlab.kernel.mm.types import VM_EXEC, VM_READ, VM_WRITE, MmStruct, Task, VmArea, find_vma

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


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


def user_access(
    k: Kernel, task: Task, addr: int, write: bool, value: int = 0
) -> Generator[Yield, None, int]:
    """A load (returns the page's token) or a store of `value` by `task` at `addr`."""
    mm = k.mms[task.mm]
    while True:
        yield Point("user access", writes=frozenset({("pte", mm.id, addr & ~(PAGE_SIZE - 1))}))
        vma = find_vma(mm, addr)
        frame = _walk(k, mm, vma, addr, write) if vma is not None else None
        if frame is not None:
            if write:
                k.mem.data[frame] = value
                return 0
            return int(k.mem.data[frame])
        yield from mmap_read_lock(k, mm)
        vma = find_vma(mm, addr)
        if vma is None or access_error(vma, write):
            mmap_read_unlock(k, mm)
            raise UserFault("SIGSEGV", addr)
        flags = FAULT_FLAG_USER | (FAULT_FLAG_WRITE if write else 0)
        ret = yield from handle_mm_fault(k, mm, vma, addr, flags, task.cpu)
        mmap_read_unlock(k, mm)
        if ret & VM_FAULT_OOM:
            raise UserFault("OOM", addr)
        if ret & VM_FAULT_SIGBUS:
            raise UserFault("SIGBUS", addr)
        if ret & VM_FAULT_SIGSEGV:
            raise UserFault("SIGSEGV", addr)
