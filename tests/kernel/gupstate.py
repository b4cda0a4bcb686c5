"""Set-up helpers for the gup tests: page-table state as the v6.1 fault paths leave it.

Until the fault model covers THP and hugetlb, these build the state a write
fault would (v6.1 mm/memory.c do_anonymous_page, mm/huge_memory.c
do_huge_pmd_anonymous_page, mm/hugetlb.c hugetlb_no_page) with the LRU batch
already drained: refcount 1 (the mapping's), mapcount 1, PageAnonExclusive,
writable dirty young entry.
"""

from __future__ import annotations

from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memory import anon_vma_prepare
from pinlab.kernel.mm.page_alloc import (
    __GFP_COMP,
    GFP_HIGHUSER_MOVABLE,
    alloc_hugetlb_folio,
    alloc_pages,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_USER,
    HPAGE_PMD_ORDER,
    HPAGE_PUD_ORDER,
    PAGE_SIZE,
    PMD_SHIFT,
    PUD_SHIFT,
    pfn_pte,
    set_pte_at,
)
from pinlab.kernel.mm.rmap import hugepage_add_new_anon_rmap, page_add_new_anon_rmap
from pinlab.kernel.mm.types import (
    VM_HUGETLB,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    AddressSpace,
    FsType,
    MmStruct,
    VmArea,
)
from pinlab.kernel.state import Kernel, new_id

RW = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
PROT = _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY


def new_mm(k: Kernel) -> MmStruct:
    """An empty address space registered with the kernel."""
    mm = MmStruct(id=new_id(k))
    k.mms[mm.id] = mm
    return mm


def add_vma(
    k: Kernel, mm: MmStruct, start: int, size: int, flags: int = RW, fs: FsType | None = None
) -> VmArea:
    """A VMA; with `fs`, a file mapping of a new inode on that filesystem."""
    file = None
    if fs is not None:
        file = new_id(k)
        k.mappings[file] = AddressSpace(file, fs, size)
    vma = VmArea(start, start + size, flags, 0, file)
    mm.vmas.append(vma)
    mm.vmas.sort(key=lambda v: v.vm_start)
    return vma


def anon_vma(k: Kernel, mm: MmStruct, start: int, size: int) -> VmArea:
    """A private anonymous read-write VMA."""
    return add_vma(k, mm, start, size)


def shared_file_vma(k: Kernel, mm: MmStruct, start: int, size: int, fs: FsType) -> VmArea:
    """A MAP_SHARED read-write file VMA."""
    return add_vma(k, mm, start, size, RW | VM_SHARED | VM_MAYSHARE, fs)


def fault_anon(k: Kernel, mm: MmStruct, vma: VmArea, addr: int) -> int:
    """An anon page mapped writable at `addr`, as after a write fault and an LRU drain."""
    page = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
    assert page is not None
    anon_vma_prepare(k, vma)
    page_add_new_anon_rmap(k, page, vma, addr)
    k.mem.flags[page] |= k.pf.mask("PG_lru") | k.pf.mask("PG_uptodate")
    set_pte_at(mm.pgtable, addr, pfn_pte(page, PROT))
    return page


def fault_file(k: Kernel, mm: MmStruct, vma: VmArea, addr: int) -> int:
    """A page-cache page mapped writable at `addr` (cache ref + mapping ref)."""
    assert vma.vm_file is not None
    page = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
    assert page is not None
    index = (addr - vma.vm_start) // PAGE_SIZE
    k.mem.refcount[page] = 2
    k.mem.mapcount[page] = 0
    k.mem.mapping[page] = vma.vm_file << 2
    k.mem.index[page] = index
    k.mem.flags[page] |= k.pf.mask("PG_lru") | k.pf.mask("PG_uptodate")
    k.mappings[vma.vm_file].i_pages[index] = page
    set_pte_at(mm.pgtable, addr, pfn_pte(page, PROT))
    return page


def fault_thp(k: Kernel, mm: MmStruct, vma: VmArea, addr: int) -> int:
    """A 2 MiB anon THP mapped by a writable PMD at `addr` (PMD aligned)."""
    head = alloc_pages(k, GFP_HIGHUSER_MOVABLE | __GFP_COMP, HPAGE_PMD_ORDER)
    assert head is not None
    anon_vma_prepare(k, vma)
    page_add_new_anon_rmap(k, head, vma, addr)
    k.mem.flags[head] |= k.pf.mask("PG_lru")
    mm.pgtable.pmd[addr >> PMD_SHIFT] = pfn_pte(head, PROT) | _PAGE_PSE
    return head


def fault_hugetlb_1g(k: Kernel, mm: MmStruct, vma: VmArea, addr: int) -> int:
    """A 1 GiB hugetlb page mapped by a writable PUD at `addr` (PUD aligned)."""
    head = alloc_hugetlb_folio(k, HPAGE_PUD_ORDER)
    assert head is not None
    anon_vma_prepare(k, vma)
    hugepage_add_new_anon_rmap(k, head, vma, addr)
    mm.pgtable.pud[addr >> PUD_SHIFT] = pfn_pte(head, PROT) | _PAGE_PSE
    return head


def hugetlb_vma(k: Kernel, mm: MmStruct, start: int, size: int) -> VmArea:
    """A private hugetlb VMA."""
    return add_vma(k, mm, start, size, RW | VM_HUGETLB)


def pin(k: Kernel, mm: MmStruct, start: int, nr: int, flags: int = 0) -> tuple[int, list[int]]:
    """pin_user_pages under mmap_read_lock, as a driver calls it: (return value, pages)."""
    pages = page_array(max(nr, 1))
    run_to_completion(mmap_read_lock(k, mm))
    try:
        ret = run_to_completion(pin_user_pages(k, mm, start, nr, flags, pages))
    finally:
        mmap_read_unlock(k, mm)
    return ret, [int(p) for p in pages[: max(ret, 0)]]


def unpin(k: Kernel, pages: list[int]) -> None:
    """unpin_user_pages on a list of pages."""
    run_to_completion(unpin_user_pages(k, pages, len(pages)))
