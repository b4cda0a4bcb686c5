"""Page faults: handle_mm_fault and the anonymous and file fault paths (v6.1 mm/memory.c).

Write-protect faults (do_wp_page and COW) live in cow.py, unmapping in zap.py,
fork's page-table copy in fork_copy.py; all four model v6.1 mm/memory.c.
Every function that another CPU can interleave with is a generator that
yields before each PTE read/update and refcount change, and at each lock.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.filemap import folio_put_footprint
from pinlab.kernel.mm.huge_memory import (
    do_huge_pmd_anonymous_page,
    do_huge_pmd_wp_page,
    huge_pmd_set_accessed,
    hugepage_vma_check,
    pmd_none,
)
from pinlab.kernel.mm.huge_memory_4_4 import pmd_trans_splitting
from pinlab.kernel.mm.huge_pmd_4_4 import transparent_hugepage_enabled
from pinlab.kernel.mm.locking import folio_unlock, pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head, peek_head
from pinlab.kernel.mm.page_alloc import GFP_HIGHUSER_MOVABLE, alloc_pages, free_reads, page_keys
from pinlab.kernel.mm.page_ref import folio_put, put_page
from pinlab.kernel.mm.pgtable import (
    _PAGE_DIRTY,
    _PAGE_RW,
    _PAGE_SPECIAL,
    PAGE_NONE,
    PAGE_READONLY,
    PAGE_SHARED,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PTRS_PER_PTE,
    get_pmd,
    pfn_pte,
    pmd_key,
    pmd_trans_huge,
    pte_devmap,
    pte_footprint,
    pte_key,
    pte_mkyoung,
    pte_pfn,
    pte_present,
    pte_protnone,
    pte_special,
    pte_write,
    set_pte_at,
)
from pinlab.kernel.mm.pgtable import get_pte as read_pte
from pinlab.kernel.mm.pte_alloc import pte_alloc
from pinlab.kernel.mm.rmap import linear_page_index, page_add_file_rmap, page_add_new_anon_rmap
from pinlab.kernel.mm.swap import folio_add_lru_vma
from pinlab.kernel.mm.types import (
    VM_EXEC,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    VmArea,
    vma_is_anonymous,
)
from pinlab.kernel.state import new_id

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/linux/mm_types.h enum vm_fault_reason
VM_FAULT_OOM = 0x000001
VM_FAULT_SIGBUS = 0x000002
VM_FAULT_MAJOR = 0x000004
VM_FAULT_WRITE = 0x000008
VM_FAULT_HWPOISON = 0x000010
VM_FAULT_HWPOISON_LARGE = 0x000020
VM_FAULT_SIGSEGV = 0x000040
VM_FAULT_NOPAGE = 0x000100
VM_FAULT_LOCKED = 0x000200
VM_FAULT_RETRY = 0x000400
VM_FAULT_FALLBACK = 0x000800
VM_FAULT_DONE_COW = 0x001000
VM_FAULT_NEEDDSYNC = 0x002000
VM_FAULT_COMPLETED = 0x004000
# v6.1 include/linux/mm_types.h VM_FAULT_ERROR
VM_FAULT_ERROR = (
    VM_FAULT_OOM
    | VM_FAULT_SIGBUS
    | VM_FAULT_SIGSEGV
    | VM_FAULT_HWPOISON
    | VM_FAULT_HWPOISON_LARGE
    | VM_FAULT_FALLBACK
)

# v6.1 include/linux/mm_types.h enum fault_flag
FAULT_FLAG_WRITE = 1 << 0
FAULT_FLAG_MKWRITE = 1 << 1
FAULT_FLAG_ALLOW_RETRY = 1 << 2
FAULT_FLAG_RETRY_NOWAIT = 1 << 3
FAULT_FLAG_KILLABLE = 1 << 4
FAULT_FLAG_TRIED = 1 << 5
FAULT_FLAG_USER = 1 << 6
FAULT_FLAG_REMOTE = 1 << 7
FAULT_FLAG_INSTRUCTION = 1 << 8
FAULT_FLAG_INTERRUPTIBLE = 1 << 9
FAULT_FLAG_UNSHARE = 1 << 10
FAULT_FLAG_ORIG_PTE_VALID = 1 << 11

# v6.1 mm/memory.c fault_around_bytes: rounddown_pow_of_two(65536)
FAULT_AROUND_BYTES = 65536

U64 = 0xFFFF_FFFF_FFFF_FFFF


def vm_get_page_prot(vm_flags: int) -> int:
    """v6.1 arch/x86/mm/pgprot.c protection_map: private never RW, shared writable RW."""
    if not vm_flags & (VM_READ | VM_WRITE | VM_EXEC):
        return PAGE_NONE
    if vm_flags & (VM_SHARED | VM_WRITE) == VM_SHARED | VM_WRITE:
        return PAGE_SHARED
    return PAGE_READONLY


def vma_wants_writenotify(k: Kernel, vma: VmArea) -> bool:
    """v6.1 mm/mmap.c vma_wants_writenotify: shared-writable with page_mkwrite or writeback.

    Soft-dirty tracking (VM_SOFTDIRTY cleared by clear_refs) and uffd-wp are not modelled.
    """
    if vma.vm_flags & (VM_WRITE | VM_SHARED) != VM_WRITE | VM_SHARED or vma.vm_file is None:
        return False
    fs = k.mappings[vma.vm_file].fs
    return fs.has_page_mkwrite or fs.writes_back


def vma_page_prot(k: Kernel, vma: VmArea) -> int:
    """v6.1 mm/mmap.c vma_set_page_prot: writenotify VMAs get the private (R/O) protections."""
    flags = vma.vm_flags
    if vma_wants_writenotify(k, vma):
        flags &= ~VM_SHARED
    return vm_get_page_prot(flags)


def maybe_mkwrite(pte: int, vma: VmArea) -> int:
    """v6.1 include/linux/mm.h maybe_mkwrite: writable iff the VMA has VM_WRITE."""
    return pte | _PAGE_RW if vma.vm_flags & VM_WRITE else pte


def mk_pte(k: Kernel, pfn: int, vma: VmArea) -> int:
    """v6.1 include/linux/mm.h mk_pte(page, vma->vm_page_prot)."""
    return pfn_pte(pfn, vma_page_prot(k, vma))


def is_zero_pfn(k: Kernel, pfn: int) -> bool:
    """v6.1 include/linux/pgtable.h is_zero_pfn."""
    return pfn == k.zero_pfn


def vm_normal_page(k: Kernel, vma: VmArea, addr: int, pte: int) -> int | None:
    """v6.1 mm/memory.c vm_normal_page: the struct page behind a PTE; None for special/devmap."""
    if pte_special(pte) or pte_devmap(pte):
        return None
    pfn = pte_pfn(pte)
    if is_zero_pfn(k, pfn):
        return None
    return pfn


def anon_vma_prepare(k: Kernel, vma: VmArea) -> None:
    """v6.1 mm/rmap.c __anon_vma_prepare: give the VMA an anon_vma on its first anon page."""
    if vma.anon_vma is None:
        vma.anon_vma = new_id(k)


def alloc_zeroed_user_highpage_movable(k: Kernel) -> int | None:
    """v6.1 include/linux/highmem.h alloc_zeroed_user_highpage_movable: ref 1, zeroed."""
    pfn = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
    if pfn is not None:
        k.mem.data[pfn] = 0
        k.mem.flags[pfn] |= k.pf.mask("PG_uptodate")
    return pfn


def handle_mm_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c handle_mm_fault: hugetlb VMAs to hugetlb_fault, else __handle_mm_fault.

    The caller holds mmap_lock for read; the access was already checked
    against the VMA (v6.1 arch/x86/mm/fault.c access_error, or gup's check_vma_flags).
    """
    from pinlab.kernel.mm.hugetlb import hugetlb_fault, is_vm_hugetlb_page

    if is_vm_hugetlb_page(vma):
        return (yield from hugetlb_fault(k, mm, vma, address, flags))
    return (yield from __handle_mm_fault(k, mm, vma, address, flags, cpu))


def __handle_mm_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c __handle_mm_fault: PMD level (THP), then handle_pte_fault.

    v4.4 mm/memory.c:3390 tests transparent_hugepage_enabled (:3408, under its THP scheme:
    profile.thp_tail_refs_in_mapcount) and, once the PMD was none or huge, goes through
    pte_alloc first (profile.fault_pte_alloc_early).  A PMD that was a PTE table
    stays one while the fault holds mmap_sem for read (:3466-3470: only khugepaged, with
    it held for write, makes a table huge; free_pgtables too needs it), so for it the
    recheck always passes and is not modelled.
    """
    address &= ~(PAGE_SIZE - 1)
    pt = mm.pgtable
    v4_4 = k.profile.thp_tail_refs_in_mapcount
    early = k.profile.fault_pte_alloc_early
    yield Point("pmd read", reads=frozenset({pmd_key(mm.id, address)}))
    table = address >> PMD_SHIFT in pt.pte
    if pmd_none(pt, address) and (
        thp_fault_4_4(k, vma) if v4_4 else hugepage_vma_check(k, mm, vma)
    ):
        ret = yield from do_huge_pmd_anonymous_page(k, mm, vma, address, flags, cpu)
        if not ret & VM_FAULT_FALLBACK:
            return ret
    else:
        pmd = get_pmd(pt, address)
        if pmd_trans_huge(pmd) and pmd_trans_splitting(pmd):
            # v4.4 mm/memory.c:3425 __handle_mm_fault: retry once the split is done
            return 0
        if pmd_trans_huge(pmd):
            if flags & (FAULT_FLAG_WRITE | FAULT_FLAG_UNSHARE) and not pte_write(pmd):
                ret = yield from do_huge_pmd_wp_page(k, mm, vma, address, flags, cpu)
                if not ret & VM_FAULT_FALLBACK:
                    return ret
            else:
                yield from huge_pmd_set_accessed(k, mm, address, flags, pmd)
                return 0
    if early and not table and not (yield from pte_alloc(k, mm, vma, address)):
        return 0
    return (yield from handle_pte_fault(k, mm, vma, address, flags, cpu))


def thp_fault_4_4(k: Kernel, vma: VmArea) -> bool:
    """v4.4 mm/memory.c:3408 transparent_hugepage_enabled(vma), then create_huge_pmd (:3286)
    faults a THP into an anonymous VMA only (a file's pmd_fault, DAX, is not modelled)."""
    return transparent_hugepage_enabled(k, vma) and vma_is_anonymous(vma)


def handle_pte_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c handle_pte_fault."""
    from pinlab.kernel.mm.cow import do_wp_page, do_wp_page_footprint

    key = pte_key(mm.id, address)
    yield Point("pte read", reads=pte_footprint(mm.id, address))
    if not k.profile.fault_pte_alloc_early and pmd_trans_huge(get_pmd(mm.pgtable, address)):
        # v6.1.192 mm/memory.c:4999, v5.7.14 :4186: a huge PMD another fault installed
        # since __handle_mm_fault read it; the fault is retried
        return 0
    orig = read_pte(mm.pgtable, address)
    if orig == 0:
        if vma_is_anonymous(vma):
            return (yield from do_anonymous_page(k, mm, vma, address, flags, cpu))
        return (yield from do_fault(k, mm, vma, address, flags, cpu))
    if not pte_present(orig) or pte_protnone(orig):
        # Swap entries and NUMA hinting are not modelled; PROT_NONE VMAs are
        # refused before handle_mm_fault.
        return VM_FAULT_SIGBUS
    yield from pte_lock(k, mm, address)
    # (built in one expression: a footprint kept in a local would be part of the state key)
    yield do_wp_page_footprint(
        k,
        vma,
        address,
        flags,
        orig,
        Point("pte recheck", pte_footprint(mm.id, address), frozenset({key})),
    )
    entry = read_pte(mm.pgtable, address)
    if entry != orig:
        pte_unlock(k, mm, address)
        return 0
    if flags & (FAULT_FLAG_WRITE | FAULT_FLAG_UNSHARE):
        if not pte_write(entry):
            return (yield from do_wp_page(k, mm, vma, address, flags, entry, cpu))
        if flags & FAULT_FLAG_WRITE:
            entry |= _PAGE_DIRTY
    entry = pte_mkyoung(entry)
    set_pte_at(mm.pgtable, address, entry)
    pte_unlock(k, mm, address)
    return 0


def do_anonymous_page(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c do_anonymous_page: zero page on read, fresh exclusive page on write."""
    if vma.vm_flags & VM_SHARED:
        return VM_FAULT_SIGBUS
    # a write fault allocates its page in the same step: its writes are not declared
    if not k.profile.fault_pte_alloc_early and not (
        yield from pte_alloc(k, mm, vma, address, None if flags & FAULT_FLAG_WRITE else frozenset())
    ):
        return 0
    key = pte_footprint(mm.id, address)
    if not flags & FAULT_FLAG_WRITE:
        entry = pfn_pte(k.zero_pfn, vma_page_prot(k, vma)) | _PAGE_SPECIAL
        yield from pte_lock(k, mm, address)
        yield Point("pte install zero", reads=key, writes=key)
        if read_pte(mm.pgtable, address) == 0:
            set_pte_at(mm.pgtable, address, entry)
        pte_unlock(k, mm, address)
        return 0
    anon_vma_prepare(k, vma)
    page = alloc_zeroed_user_highpage_movable(k)
    if page is None:
        return VM_FAULT_OOM
    entry = mk_pte(k, page, vma)
    if vma.vm_flags & VM_WRITE:
        entry = maybe_mkwrite(entry | _PAGE_DIRTY, vma)
    yield from pte_lock(k, mm, address)
    # the new page is this fault's alone: it is rmapped, or freed if the PTE was taken
    new = folio_put_footprint(k, page)
    yield Point("pte install anon", reads=key | new | free_reads(page), writes=key | new)
    if read_pte(mm.pgtable, address) != 0:
        pte_unlock(k, mm, address)
        put_page(k, page)
        return 0
    page_add_new_anon_rmap(k, page, vma, address)
    # v6.1 mm/memory.c:4073, v5.7.14 :3400, v4.4.178 :2784 (active in 5.7 / 4.4)
    yield from folio_add_lru_vma(k, page, vma, cpu)
    set_pte_at(mm.pgtable, address, entry)
    pte_unlock(k, mm, address)
    return 0


def do_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c do_fault: read, private write (COW) or shared write.

    fsdax files fault through ext4_dax_fault instead of the page cache
    (v6.1 fs/ext4/file.c ext4_dax_vm_ops).
    """
    from pinlab.kernel.fs import dax_fault

    assert vma.vm_file is not None
    if k.mappings[vma.vm_file].fs.is_dax:
        return (yield from dax_fault(k, mm, vma, address, flags))
    if not flags & FAULT_FLAG_WRITE:
        return (yield from do_read_fault(k, mm, vma, address, flags, cpu))
    if not vma.vm_flags & VM_SHARED:
        return (yield from do_cow_fault(k, mm, vma, address, flags, cpu))
    return (yield from do_shared_fault(k, mm, vma, address, flags, cpu))


def __do_fault(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    address: int,
    cpu: int,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 mm/memory.c __do_fault: ->fault returns the page locked with +1 reference.

    ``then``: what the caller writes after this returns, before it yields again
    (footprint only).
    """
    from pinlab.kernel.fs import vm_fault_page

    assert vma.vm_file is not None
    mapping = k.mappings[vma.vm_file]
    return (yield from vm_fault_page(k, mapping, linear_page_index(vma, address), cpu, then))


def do_set_pte(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    page: int,
    address: int,
    write: bool,
    cpu: int,
    then: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, None]:
    """v6.1 mm/memory.c do_set_pte: install a PTE for `page` (ref already taken), rmap it.

    ``then``: what the caller writes after this returns, before it yields again
    (footprint only).
    """
    entry = mk_pte(k, page, vma)
    if write:
        entry = maybe_mkwrite(entry | _PAGE_DIRTY, vma)
    if write and not vma.vm_flags & VM_SHARED:
        page_add_new_anon_rmap(k, page, vma, address)
        # v6.1 mm/memory.c:4230; v5.7.14 alloc_set_pte :3662, v4.4.178 do_cow_fault :3077
        yield from folio_add_lru_vma(k, page, vma, cpu, then)
    else:
        page_add_file_rmap(k, page, vma, False)
    set_pte_at(mm.pgtable, address, entry)


def finish_fault(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    address: int,
    page: int,
    write: bool,
    cpu: int,
    then_reads: frozenset[Hashable] = frozenset(),
    then_writes: frozenset[Hashable] = frozenset(),
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c finish_fault: under the PTE lock, map the page if the PTE is still none.

    ``then_reads``, ``then_writes``: what the caller reads and writes after this returns,
    before it yields again (footprint only).
    """
    key: frozenset[Hashable] = pte_footprint(mm.id, address) | {
        ("page", page, "refcount"),
        ("page", page, "mapcount"),
    }
    reads = key
    if write and not vma.vm_flags & VM_SHARED:
        # a private copy, this fault's alone: page_add_new_anon_rmap
        key |= page_keys(page)
        reads = key | free_reads(page)
    yield from pte_lock(k, mm, address)
    yield Point("finish_fault", reads=reads | then_reads, writes=key | then_writes)
    if read_pte(mm.pgtable, address) != 0:
        pte_unlock(k, mm, address)
        return VM_FAULT_NOPAGE
    yield from do_set_pte(k, mm, vma, page, address, write, cpu, then_writes)
    pte_unlock(k, mm, address)
    return 0


def _unlock_keys(k: Kernel, page: int) -> frozenset[Hashable]:
    """What folio_unlock(compound_head(page)) reads: the page's head, the folio's flags."""
    return frozenset({("page", page, "head"), ("page", peek_head(k.mem, page), "flags")})


def _unlock_writes(k: Kernel, page: int) -> frozenset[Hashable]:
    """What folio_unlock(compound_head(page)) writes: the folio's flags."""
    return frozenset({("page", peek_head(k.mem, page), "flags")})


def do_fault_around(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c do_fault_around: map up to 16 cached neighbours via ->map_pages."""
    from pinlab.kernel.mm.filemap import filemap_map_pages

    nr_pages = FAULT_AROUND_BYTES >> PAGE_SHIFT
    mask = ~(nr_pages * PAGE_SIZE - 1) & U64 & ~(PAGE_SIZE - 1)
    start_addr = max(address & mask, vma.vm_start)
    off = ((address - start_addr) >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)
    start_pgoff = linear_page_index(vma, address) - off
    end_pgoff = start_pgoff - ((start_addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)) + PTRS_PER_PTE - 1
    vma_pages = (vma.vm_end - vma.vm_start) >> PAGE_SHIFT
    end_pgoff = min(end_pgoff, vma_pages + vma.vm_pgoff - 1, start_pgoff + nr_pages - 1)
    return (yield from filemap_map_pages(k, mm, vma, address, start_pgoff, end_pgoff, cpu))


def should_fault_around(k: Kernel, vma: VmArea) -> bool:
    """v6.1 mm/memory.c should_fault_around: the fs has ->map_pages (not hugetlbfs, not DAX)."""
    assert vma.vm_file is not None
    fs = k.mappings[vma.vm_file].fs
    return not fs.is_hugetlbfs and not fs.is_dax and FAULT_AROUND_BYTES >> PAGE_SHIFT > 1


def do_read_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c do_read_fault: fault-around, else ->fault and finish_fault."""
    if should_fault_around(k, vma):
        ret = yield from do_fault_around(k, mm, vma, address, cpu)
        if ret:
            return ret
    ret, page = yield from __do_fault(k, mm, vma, address, cpu)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        return ret
    # then the folio is unlocked
    unlock = _unlock_keys(k, page)
    unlocks = _unlock_writes(k, page)
    ret |= yield from finish_fault(k, mm, vma, address, page, False, cpu, unlock, unlocks)
    folio_unlock(k, compound_head(k.mem, page))
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        yield Point("put_page", writes=folio_put_footprint(k, peek_head(k.mem, page)))
        put_page(k, page)
    return ret


def do_cow_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c do_cow_fault: private write to an unmapped file page gets an anon copy."""
    anon_vma_prepare(k, vma)
    cow_page = alloc_pages(k, GFP_HIGHUSER_MOVABLE, 0)
    if cow_page is None:
        return VM_FAULT_OOM
    # the copy is this fault's alone: it is filled in, or freed, after ->fault
    cow = folio_put_footprint(k, cow_page)
    ret, page = yield from __do_fault(k, mm, vma, address, cpu, cow)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        put_page(k, cow_page)
        return ret
    k.mem.data[cow_page] = k.mem.data[page]
    k.mem.flags[cow_page] |= k.pf.mask("PG_uptodate")
    # then the file folio is unlocked
    unlock, unlocks = _unlock_keys(k, page), _unlock_writes(k, page)
    ret |= yield from finish_fault(k, mm, vma, address, cow_page, True, cpu, unlock, unlocks)
    folio = compound_head(k.mem, page)
    folio_unlock(k, folio)
    yield Point("put_page", writes=folio_put_footprint(k, folio) | cow)
    folio_put(k, folio)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        put_page(k, cow_page)
    return ret


def do_shared_fault(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int, cpu: int
) -> Generator[Yield, None, int]:
    """v6.1 mm/memory.c do_shared_fault: ->page_mkwrite, map dirty+writable, dirty the page."""
    from pinlab.kernel.fs import do_page_mkwrite, fault_dirty_shared_page

    assert vma.vm_file is not None
    mapping = k.mappings[vma.vm_file]
    ret, page = yield from __do_fault(k, mm, vma, address, cpu)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        return ret
    folio = compound_head(k.mem, page)
    if mapping.fs.has_page_mkwrite:
        folio_unlock(k, folio)
        tmp = yield from do_page_mkwrite(k, vma, page)
        if not tmp or tmp & (VM_FAULT_ERROR | VM_FAULT_NOPAGE):
            yield Point("put_page", writes=folio_put_footprint(k, folio))
            folio_put(k, folio)
            return tmp
    # then the folio is unlocked, or dirtied: fault_dirty_shared_page's compound_head and
    # folio_mark_dirty's folio_mapping
    reads = _unlock_keys(k, page) | {("page", folio, "head"), ("page", folio, "mapping")}
    unlocks = _unlock_writes(k, page)
    ret |= yield from finish_fault(k, mm, vma, address, page, True, cpu, reads, unlocks)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        folio_unlock(k, folio)
        yield Point("put_page", writes=folio_put_footprint(k, folio))
        folio_put(k, folio)
        return ret
    ret |= yield from fault_dirty_shared_page(k, mm, vma, page, flags)
    return ret
