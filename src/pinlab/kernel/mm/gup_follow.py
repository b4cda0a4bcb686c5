"""The get_user_pages slow path: VMA checks, page-table walk, faulting in (v6.1 mm/gup.c).

`__get_user_pages` walks [start, start + nr_pages pages) one page at a time
(a whole huge page at a time only when no page array is filled), grabbing
each page with try_grab_page, or a hugetlb page's subpages with one
try_grab_folio (follow_hugetlb_page, hugetlb.py).  Results follow the kernel's
encoding: a page is a PFN >= 0, None is the kernel's NULL ("fault it in"), a
negative int is ERR_PTR(-errno).  The whole-range steps the model takes when
nothing else runs are beside this walk, not in it (gup_ranged.py).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel import errno
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.mm.filemap import folio_mark_dirty
from pinlab.kernel.mm.gup_flags import (
    FOLL_ANON,
    FOLL_COW,
    FOLL_DUMP,
    FOLL_FORCE,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_NOWAIT,
    FOLL_PIN,
    FOLL_REMOTE,
    FOLL_TOUCH,
    FOLL_TRIED,
    FOLL_WRITE,
    foll_nofault,
    foll_split,
)
from pinlab.kernel.mm.gup_grab import (
    try_grab_page,
)
from pinlab.kernel.mm.gup_page import (
    Follow,
    Locked,
    Pages,
    can_follow_write,
    gup_must_unshare,
    gup_page_hook,
    gup_returned_hook,
    store_pages,
    vm_fault_to_errno,
)
from pinlab.kernel.mm.huge_memory import follow_trans_huge_pmd
from pinlab.kernel.mm.huge_memory_4_4 import (
    pmd_trans_splitting,
    split_huge_page_pmd,
    wait_split_huge_page,
)
from pinlab.kernel.mm.hugetlb import follow_hugetlb_page, is_vm_hugetlb_page
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.memory import (
    FAULT_FLAG_ALLOW_RETRY,
    FAULT_FLAG_KILLABLE,
    FAULT_FLAG_REMOTE,
    FAULT_FLAG_RETRY_NOWAIT,
    FAULT_FLAG_TRIED,
    FAULT_FLAG_UNSHARE,
    FAULT_FLAG_WRITE,
    VM_FAULT_COMPLETED,
    VM_FAULT_ERROR,
    VM_FAULT_RETRY,
    VM_FAULT_WRITE,
    handle_mm_fault,
    vm_normal_page,
)
from pinlab.kernel.mm.pgtable import (
    HPAGE_PMD_ORDER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    pmd_key,
    pmd_trans_huge,
    pte_devmap,
    pte_dirty,
    pte_footprint,
    pte_pfn,
    pte_present,
    pte_protnone,
    pte_write,
)
from pinlab.kernel.mm.swap import folio_mark_accessed
from pinlab.kernel.mm.types import (
    VM_IO,
    VM_MAYREAD,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    FsType,
    MmStruct,
    VmArea,
    find_vma,
    is_cow_mapping,
    vma_is_anonymous,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def vma_fs(k: Kernel, vma: VmArea) -> FsType | None:
    """The filesystem behind a file VMA (None for anonymous memory)."""
    return None if vma.vm_file is None else k.mappings[vma.vm_file].fs


def vma_needs_dirty_tracking(k: Kernel, vma: VmArea) -> bool:
    """v6.5 mm/mmap.c vma_needs_dirty_tracking: shared writable, fs wants writenotify."""
    if vma.vm_flags & (VM_WRITE | VM_SHARED) != VM_WRITE | VM_SHARED:
        return False
    fs = vma_fs(k, vma)
    return fs is not None and (fs.has_page_mkwrite or fs.writes_back)


def writable_file_mapping_allowed(k: Kernel, vma: VmArea, gup_flags: int) -> bool:
    """v6.5 mm/gup.c writable_file_mapping_allowed: no long-term write pins needing writenotify."""
    if gup_flags & (FOLL_PIN | FOLL_LONGTERM) != FOLL_PIN | FOLL_LONGTERM:
        return True
    return not vma_needs_dirty_tracking(k, vma)


def check_vma_flags(k: Kernel, vma: VmArea, gup_flags: int) -> int:
    """v6.1 mm/gup.c check_vma_flags (+ v6.5 writable_file_mapping_allowed): 0 or -errno."""
    vm_flags = vma.vm_flags
    write = bool(gup_flags & FOLL_WRITE)
    anon = vma_is_anonymous(vma)
    if vm_flags & (VM_IO | VM_PFNMAP):
        return -errno.EFAULT
    if gup_flags & FOLL_ANON and not anon:
        return -errno.EFAULT
    fs = vma_fs(k, vma)
    longterm_dax = gup_flags & FOLL_LONGTERM and fs is not None and fs.is_dax
    if longterm_dax and not k.profile.fsdax_check_after_pin:
        return -errno.EOPNOTSUPP
    if write:
        if (
            k.profile.longterm_file_write_refused
            and not anon
            and not writable_file_mapping_allowed(k, vma, gup_flags)
        ):
            return -errno.EFAULT
        if not vm_flags & VM_WRITE:
            if not gup_flags & FOLL_FORCE:
                return -errno.EFAULT
            if k.profile.hugetlb_force_write_refused and is_vm_hugetlb_page(vma):
                return -errno.EFAULT
            if not is_cow_mapping(vm_flags):
                return -errno.EFAULT
    elif not vm_flags & VM_READ:
        if not gup_flags & FOLL_FORCE:
            return -errno.EFAULT
        if not vm_flags & VM_MAYREAD:
            return -errno.EFAULT
    return 0


def no_page_table(vma: VmArea, flags: int) -> Follow:
    """v6.1 mm/gup.c no_page_table: NULL, or -EFAULT for FOLL_DUMP on anon memory."""
    if flags & FOLL_DUMP and vma_is_anonymous(vma):
        return -errno.EFAULT
    return None


def follow_page_pte(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, Follow]:
    """v6.1 mm/gup.c follow_page_pte: grab the page a present PTE maps."""
    if flags & (FOLL_PIN | FOLL_GET) == FOLL_PIN | FOLL_GET:
        warn_on_once(k, "mm/gup.c follow_page_pte FOLL_PIN|FOLL_GET")
        return -errno.EINVAL
    yield from pte_lock(k, mm, address)
    try:
        yield Point("follow_page_pte:read", reads=pte_footprint(mm.id, address))
        table = mm.pgtable.pte.get(address >> PMD_SHIFT)
        index = (address >> PAGE_SHIFT) & 511
        pte = 0 if table is None else int(table[index])
        if not pte_present(pte):
            return None if pte else no_page_table(vma, flags)
        # gup_can_follow_protnone (v6.1 include/linux/mm.h): only FOLL_FORCE
        if pte_protnone(pte) and not flags & FOLL_FORCE:
            return None
        pfn = pte_pfn(pte)
        page = vm_normal_page(k, vma, address, pte)
        if flags & FOLL_WRITE and not can_follow_write(k, pte, page, vma, flags):
            return None
        if page is None and pte_devmap(pte) and flags & (FOLL_GET | FOLL_PIN):
            page = pfn
        elif page is None:
            if flags & FOLL_DUMP:
                return -errno.EFAULT
            if pfn != k.zero_pfn:
                return -errno.EEXIST
            page = pfn
        if not pte_write(pte) and gup_must_unshare(k, flags, page, vma):
            return -errno.EMLINK
        refused = yield from gup_page_hook(k, vma, page, flags)
        if refused:
            return refused
        if not (yield from try_grab_page(k, page, flags)):
            return -errno.ENOMEM
        if flags & FOLL_TOUCH:
            folio = compound_head(k.mem, page)
            dirty = int(k.mem.flags[folio]) & k.pf.mask("PG_dirty")
            if flags & FOLL_WRITE and not pte_dirty(pte) and not dirty:
                yield from folio_mark_dirty(k, folio)
            # the model's gup runs on CPU 0, as its other LRU work (gup_longterm.py)
            yield from folio_mark_accessed(k, folio)
        return page
    finally:
        pte_unlock(k, mm, address)


def follow_page_mask(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, tuple[Follow, int]]:
    """v6.1 mm/gup.c follow_page_mask / follow_pmd_mask: (result, ctx.page_mask).

    v4.4 mm/gup.c:232-249: FOLL_SPLIT splits the THP first; a PMD found splitting
    under its lock is waited for (wait_split_huge_page); either way, and when the
    PMD stopped being huge, the PTE table is followed.
    """
    slot = address >> PMD_SHIFT
    yield Point("follow_pmd_mask:read", reads=frozenset({pmd_key(mm.id, address)}))
    pmd = mm.pgtable.pmd.get(slot, 0)
    v4_4 = k.profile.thp_tail_refs_in_mapcount
    if pmd_trans_huge(pmd) and v4_4 and foll_split(k, flags):
        yield from split_huge_page_pmd(k, mm, vma, address)
        return (yield from follow_page_pte(k, mm, vma, address, flags)), 0
    if not pmd_trans_huge(pmd):
        if slot not in mm.pgtable.pte:
            return no_page_table(vma, flags), 0
        return (yield from follow_page_pte(k, mm, vma, address, flags)), 0
    if v4_4:
        return (yield from _follow_trans_huge_4_4(k, mm, vma, address, flags))
    # pmd_lock: the model's split lock for this PMD slot
    yield from pte_lock(k, mm, address)
    if not pmd_trans_huge(mm.pgtable.pmd.get(slot, 0)):
        pte_unlock(k, mm, address)
        # v6.1 mm/gup.c:751-754 (v5.7.14 :617-620) none; :763-766 (:628-631) split
        # meanwhile: the PTEs the split left
        if slot not in mm.pgtable.pte:
            return no_page_table(vma, flags), 0
        return (yield from follow_page_pte(k, mm, vma, address, flags)), 0
    try:
        page = yield from follow_trans_huge_pmd(k, mm, vma, address, flags)
    finally:
        pte_unlock(k, mm, address)
    return page, (1 << HPAGE_PMD_ORDER) - 1


def _follow_trans_huge_4_4(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, tuple[Follow, int]]:
    """v4.4 mm/gup.c:238-249: under the PMD lock follow the huge PMD, or wait out its split."""
    slot = address >> PMD_SHIFT
    yield from pte_lock(k, mm, address)
    pmd = mm.pgtable.pmd.get(slot, 0)
    if pmd_trans_huge(pmd) and not pmd_trans_splitting(pmd):
        try:
            page = yield from follow_trans_huge_pmd(k, mm, vma, address, flags)
        finally:
            pte_unlock(k, mm, address)
        return page, (1 << HPAGE_PMD_ORDER) - 1
    pte_unlock(k, mm, address)
    if pmd_trans_huge(pmd):
        yield from wait_split_huge_page(k, vma.anon_vma)
    return (yield from follow_page_pte(k, mm, vma, address, flags)), 0


def faultin_page(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    address: int,
    flags: int,
    unshare: bool,
    locked: Locked | None,
) -> Generator[Yield, None, tuple[int, int]]:
    """v6.1 mm/gup.c faultin_page: (0 / -EBUSY / -EAGAIN / -errno, the caller's new flags).

    After a write fault that broke COW in a !VM_WRITE VMA, v5.7 adds FOLL_COW
    and v4.4 drops FOLL_WRITE (both mm/gup.c faultin_page); 6.1 changes nothing.
    """
    if foll_nofault(k, flags):
        return -errno.EFAULT, flags
    fault_flags = 0
    if flags & FOLL_WRITE:
        fault_flags |= FAULT_FLAG_WRITE
    if flags & FOLL_REMOTE:
        fault_flags |= FAULT_FLAG_REMOTE
    if locked is not None:
        fault_flags |= FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE
    if flags & FOLL_NOWAIT:
        fault_flags |= FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_RETRY_NOWAIT
    if flags & FOLL_TRIED:
        fault_flags |= FAULT_FLAG_TRIED
    if unshare:
        fault_flags |= FAULT_FLAG_UNSHARE
    ret = yield from handle_mm_fault(k, mm, vma, address, fault_flags)
    if ret & VM_FAULT_COMPLETED:
        if locked is not None:
            locked.held = False
        return -errno.EAGAIN, flags
    if ret & VM_FAULT_ERROR:
        err = vm_fault_to_errno(ret, flags)
        if err:
            return err, flags
        raise AssertionError("BUG: VM_FAULT_ERROR without an errno (v6.1 mm/gup.c faultin_page)")
    if ret & VM_FAULT_RETRY:
        if locked is not None and not fault_flags & FAULT_FLAG_RETRY_NOWAIT:
            locked.held = False
        return -errno.EBUSY, flags
    if ret & VM_FAULT_WRITE and not vma.vm_flags & VM_WRITE:
        how = k.profile.foll_force_write
        if how == "foll_cow":
            flags |= FOLL_COW
        elif how == "drop_write":
            flags &= ~FOLL_WRITE
    return 0, flags


def __get_user_pages(
    k: Kernel,
    mm: MmStruct,
    start: int,
    nr_pages: int,
    gup_flags: int,
    pages: Pages | None,
    locked: Locked | None,
) -> Generator[Yield, None, int]:
    """v6.1 mm/gup.c __get_user_pages: pages done, or -errno if the first page failed."""
    if not nr_pages:
        return 0
    ret = 0
    i = 0
    vma: VmArea | None = None
    while nr_pages:
        # the first page, or the first past a VMA's end
        if vma is None or start >= vma.vm_end:
            vma = find_vma(mm, start)
            if vma is None:
                ret = -errno.EFAULT
                break
            ret = check_vma_flags(k, vma, gup_flags)
            if ret:
                break
            if is_vm_hugetlb_page(vma):
                pos = [start, nr_pages]
                i = yield from follow_hugetlb_page(k, mm, vma, pages, pos, i, gup_flags, locked)
                start, nr_pages = pos
                if locked is not None and not locked.held:
                    break
                continue
        foll_flags = gup_flags
        while True:  # the kernel's retry label: follow, else fault in and follow again
            page, page_mask = yield from follow_page_mask(k, mm, vma, start, foll_flags)
            if page is not None and page != -errno.EMLINK:
                break
            ret, foll_flags = yield from faultin_page(
                k, mm, vma, start, foll_flags, page == -errno.EMLINK, locked
            )
            if ret:  # -EBUSY / -EAGAIN: mmap_lock dropped or retry later, no error
                yield from gup_returned_hook(k, pages, i)
                return i if i else (0 if ret in (-errno.EBUSY, -errno.EAGAIN) else ret)
        if page == -errno.EEXIST:
            # a present entry without a struct page: only a walk without pages[] goes on
            if pages is not None:
                ret = page
                break
        elif page < 0:
            ret = page
            break
        elif pages is not None:
            store_pages(pages, i, page, 1)
            page_mask = 0
        page_increm = min(1 + (~(start >> PAGE_SHIFT) & page_mask), nr_pages)
        i += page_increm
        start += page_increm * PAGE_SIZE
        nr_pages -= page_increm
    yield from gup_returned_hook(k, pages, i)
    return i if i else ret
