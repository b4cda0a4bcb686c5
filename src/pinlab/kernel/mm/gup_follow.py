"""The get_user_pages slow path: VMA checks, page-table walk, faulting in (v6.1 mm/gup.c).

`__get_user_pages` walks [start, start + nr_pages pages) one page at a time
(a whole huge page at a time only when no page array is filled), grabbing
each page with try_grab_page, or a hugetlb page's subpages with one
try_grab_folio.  Results follow the kernel's encoding: a page is a PFN >= 0,
None is the kernel's NULL ("fault it in"), a negative int is ERR_PTR(-errno).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from pinlab.interleave import Point, Violation, Yield
from pinlab.kernel import errno
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.mm.filemap import folio_mark_dirty
from pinlab.kernel.mm.gup_flags import (
    FOLL_ANON,
    FOLL_COW,
    FOLL_DUMP,
    FOLL_FORCE,
    FOLL_GET,
    FOLL_HWPOISON,
    FOLL_LONGTERM,
    FOLL_NOFAULT,
    FOLL_NOWAIT,
    FOLL_PIN,
    FOLL_REMOTE,
    FOLL_TOUCH,
    FOLL_TRIED,
    FOLL_WRITE,
)
from pinlab.kernel.mm.gup_grab import folio_test_anon, try_grab_folio, try_grab_page
from pinlab.kernel.mm.gup_range import range_grab, range_ok
from pinlab.kernel.mm.locking import pte_lock, pte_unlock
from pinlab.kernel.mm.memmap import HUGETLB_PAGE_DTOR, compound_head
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
    VM_FAULT_HWPOISON,
    VM_FAULT_HWPOISON_LARGE,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    VM_FAULT_WRITE,
    handle_mm_fault,
    vm_normal_page,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    HPAGE_PMD_ORDER,
    HPAGE_PUD_ORDER,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PUD_SHIFT,
    pmd_key,
    pmd_trans_huge,
    pte_devmap,
    pte_dirty,
    pte_footprint,
    pte_pfn,
    pte_present,
    pte_protnone,
    pte_write,
    pud_key,
)
from pinlab.kernel.mm.swap import folio_mark_accessed
from pinlab.kernel.mm.types import (
    VM_HUGETLB,
    VM_IO,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
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

PAGE_MASK = ~(PAGE_SIZE - 1)

Pages = NDArray[np.int64]
# follow_* results: a PFN, None (NULL: fault it in) or -errno (ERR_PTR)
Follow = int | None


@dataclass(slots=True)
class Locked:
    """The caller's `int *locked`: whether it still holds mmap_lock for read."""

    held: bool = True


def vma_fs(k: Kernel, vma: VmArea) -> FsType | None:
    """The filesystem behind a file VMA (None for anonymous memory)."""
    return None if vma.vm_file is None else k.mappings[vma.vm_file].fs


def is_vm_hugetlb_page(vma: VmArea) -> bool:
    """v6.1 include/linux/hugetlb_inline.h is_vm_hugetlb_page."""
    return bool(vma.vm_flags & VM_HUGETLB)


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


def page_anon_exclusive(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/page-flags.h PageAnonExclusive (PG_mappedtodisk on anon pages)."""
    return bool(int(k.mem.flags[page]) & k.pf.mask("PG_anon_exclusive"))


def gup_must_unshare(k: Kernel, flags: int, page: int) -> bool:
    """v6.1 include/linux/mm.h gup_must_unshare: R/O pin of a possibly shared anon page.

    Kernels before v5.19 had no PageAnonExclusive and never unshared.
    """
    if not k.profile.page_anon_exclusive:
        return False
    if flags & (FOLL_WRITE | FOLL_PIN) != FOLL_PIN:
        return False
    head = compound_head(k.mem, page)
    if not folio_test_anon(k, head):
        return False
    if head != page and int(k.mem.dtor[head + 1]) == HUGETLB_PAGE_DTOR:
        page = head
    return not page_anon_exclusive(k, page)


def _can_follow_write(k: Kernel, entry: int, page: int | None, vma: VmArea, flags: int) -> bool:
    """v6.1 mm/gup.c can_follow_write_pte / mm/huge_memory.c can_follow_write_pmd.

    v5.7: pte_write || (FOLL_FORCE && FOLL_COW && pte_dirty); v4.4: pte_write only.
    """
    if pte_write(entry):
        return True
    how = k.profile.foll_force_write
    if how == "drop_write":
        return False
    if how == "foll_cow":
        return flags & (FOLL_FORCE | FOLL_COW) == FOLL_FORCE | FOLL_COW and pte_dirty(entry)
    if not flags & FOLL_FORCE:
        return False
    if vma.vm_flags & (VM_MAYSHARE | VM_SHARED):
        return False
    if not vma.vm_flags & VM_MAYWRITE:
        return False
    if vma.vm_flags & VM_WRITE:
        return False
    if page is None or not k.profile.page_anon_exclusive:
        return False
    return folio_test_anon(k, compound_head(k.mem, page)) and page_anon_exclusive(k, page)


def gup_page_hook(k: Kernel, vma: VmArea, page: int, flags: int) -> Generator[Yield, None, int]:
    """The gup_page design hook between finding the page and grabbing it: 0 or -errno."""
    hook = k.hooks.gup_page
    if hook is None:
        return 0
    yield "gup_page"
    return hook(k, vma, page, flags)


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
        if flags & FOLL_WRITE and not _can_follow_write(k, pte, page, vma, flags):
            return None
        if page is None and pte_devmap(pte) and flags & (FOLL_GET | FOLL_PIN):
            page = pfn
        elif page is None:
            if flags & FOLL_DUMP:
                return -errno.EFAULT
            if pfn != k.zero_pfn:
                return -errno.EEXIST
            page = pfn
        if not pte_write(pte) and gup_must_unshare(k, flags, page):
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


def follow_trans_huge_pmd(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, Follow]:
    """v6.1 mm/huge_memory.c follow_trans_huge_pmd: grab the THP, return the subpage."""
    slot = address >> PMD_SHIFT
    pmd = mm.pgtable.pmd[slot]
    head = pte_pfn(pmd)
    if flags & FOLL_WRITE and not _can_follow_write(k, pmd, head, vma, flags):
        return None
    if not pte_write(pmd) and gup_must_unshare(k, flags, head):
        return -errno.EMLINK
    page = head + ((address >> PAGE_SHIFT) & ((1 << HPAGE_PMD_ORDER) - 1))
    refused = yield from gup_page_hook(k, vma, page, flags)
    if refused:
        return refused
    if not (yield from try_grab_page(k, head, flags)):
        return -errno.ENOMEM
    if flags & FOLL_TOUCH:
        # v6.1 mm/huge_memory.c touch_pmd: young, and dirty for a write
        mm.pgtable.pmd[slot] = pmd | _PAGE_ACCESSED | (_PAGE_DIRTY if flags & FOLL_WRITE else 0)
    return page


def follow_page_mask(
    k: Kernel, mm: MmStruct, vma: VmArea, address: int, flags: int
) -> Generator[Yield, None, tuple[Follow, int]]:
    """v6.1 mm/gup.c follow_page_mask / follow_pmd_mask: (result, ctx.page_mask)."""
    slot = address >> PMD_SHIFT
    yield Point("follow_pmd_mask:read", reads=frozenset({pmd_key(mm.id, address)}))
    pmd = mm.pgtable.pmd.get(slot, 0)
    if not pmd_trans_huge(pmd):
        if slot not in mm.pgtable.pte:
            return no_page_table(vma, flags), 0
        return (yield from follow_page_pte(k, mm, vma, address, flags)), 0
    # pmd_lock: the model's split lock for this PMD slot
    yield from pte_lock(k, mm, address)
    try:
        if not pmd_trans_huge(mm.pgtable.pmd.get(slot, 0)):
            return no_page_table(vma, flags), 0
        page = yield from follow_trans_huge_pmd(k, mm, vma, address, flags)
    finally:
        pte_unlock(k, mm, address)
    return page, (1 << HPAGE_PMD_ORDER) - 1


def vm_fault_to_errno(vm_fault: int, foll_flags: int) -> int:
    """v6.1 include/linux/mm.h vm_fault_to_errno."""
    if vm_fault & VM_FAULT_OOM:
        return -errno.ENOMEM
    if vm_fault & (VM_FAULT_HWPOISON | VM_FAULT_HWPOISON_LARGE):
        return -errno.EHWPOISON if foll_flags & FOLL_HWPOISON else -errno.EFAULT
    if vm_fault & (VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV):
        return -errno.EFAULT
    return 0


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
    if flags & FOLL_NOFAULT:
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


def _huge_entry(mm: MmStruct, vaddr: int) -> tuple[int, int]:
    """The hugetlb entry mapping `vaddr` and its order (PUD 1 GiB or PMD 2 MiB); (0, 0) if none."""
    pud = mm.pgtable.pud.get(vaddr >> PUD_SHIFT, 0)
    if pud:
        return pud, HPAGE_PUD_ORDER
    pmd = mm.pgtable.pmd.get(vaddr >> PMD_SHIFT, 0)
    return (pmd, HPAGE_PMD_ORDER) if pmd else (0, 0)


def follow_hugetlb_page(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    pages: Pages | None,
    pos: list[int],
    i: int,
    flags: int,
    locked: Locked | None,
) -> Generator[Yield, None, int]:
    """v6.1 mm/hugetlb.c follow_hugetlb_page; pos = [vaddr, remainder], updated in place.

    6.1 grabs each huge page's subpages with one try_grab_folio(refs) (v5.12
    0fa5bc4023c1); v5.7 and the 2020 postings called try_grab_page per subpage.
    """
    vaddr, remainder = pos
    err = -errno.EFAULT
    while vaddr < vma.vm_end and remainder:
        yield from pte_lock(k, mm, vaddr)
        yield Point(
            "follow_hugetlb_page:read",
            reads=frozenset({pud_key(mm.id, vaddr), pmd_key(mm.id, vaddr)}),
        )
        entry, order = _huge_entry(mm, vaddr)
        must_fault = not pte_present(entry)
        unshare = False
        if not must_fault and not pte_write(entry):
            if flags & FOLL_WRITE:
                must_fault = True
            elif gup_must_unshare(k, flags, pte_pfn(entry)):
                must_fault = unshare = True
        if must_fault:
            pte_unlock(k, mm, vaddr)
            fault_flags = 0
            if flags & FOLL_WRITE:
                fault_flags |= FAULT_FLAG_WRITE
            elif unshare:
                fault_flags |= FAULT_FLAG_UNSHARE
            if locked is not None:
                fault_flags |= FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE
            if flags & FOLL_NOWAIT:
                fault_flags |= FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_RETRY_NOWAIT
            if flags & FOLL_TRIED:
                fault_flags |= FAULT_FLAG_TRIED
            ret = yield from handle_mm_fault(k, mm, vma, vaddr, fault_flags)
            if ret & VM_FAULT_ERROR:
                err = vm_fault_to_errno(ret, flags)
                remainder = 0
                break
            if (
                ret & VM_FAULT_RETRY
                and locked is not None
                and not fault_flags & FAULT_FLAG_RETRY_NOWAIT
            ):
                locked.held = False
                pos[:] = [vaddr, remainder]
                return i
            continue
        nr = 1 << order
        head = pte_pfn(entry)
        pfn_offset = (vaddr & ((nr << PAGE_SHIFT) - 1)) >> PAGE_SHIFT
        size = nr << PAGE_SHIFT
        if pages is None and not pfn_offset and vaddr + size < vma.vm_end and remainder >= nr:
            pte_unlock(k, mm, vaddr)
            vaddr += size
            remainder -= nr
            i += nr
            continue
        refs = min(nr - pfn_offset, remainder, (vma.vm_end - (vaddr & PAGE_MASK)) >> PAGE_SHIFT)
        refused = yield from gup_page_hook(k, vma, head + pfn_offset, flags)
        if refused:
            pte_unlock(k, mm, vaddr)
            err = refused
            break
        grabbed = yield from _hugetlb_grab(k, pages, i, head + pfn_offset, refs, flags)
        pte_unlock(k, mm, vaddr)
        if grabbed < refs:
            warn_on_once(k, "mm/hugetlb.c follow_hugetlb_page grab failed")
            i += grabbed
            remainder = 0
            err = -errno.ENOMEM
            break
        vaddr += refs << PAGE_SHIFT
        remainder -= refs
        i += refs
    pos[:] = [vaddr, remainder]
    return i if i else err


def _store(pages: Pages, at: int, first: int, n: int) -> None:
    """pages[at:at + n] = first, first + 1, ...; past the caller's array the kernel corrupts."""
    if at + n > pages.shape[0]:
        raise Violation("gup pages[] overrun", f"entry {at + n - 1} of {pages.shape[0]}")
    pages[at : at + n] = np.arange(first, first + n, dtype=np.int64)


def _fits(pages: Pages, at: int, nr_pages: int) -> bool:
    """Does the caller's array hold the whole request (else only the page path may overrun it)?"""
    return nr_pages <= int(pages.shape[0]) - at


def _hugetlb_grab(
    k: Kernel, pages: Pages | None, i: int, first: int, refs: int, flags: int
) -> Generator[Yield, None, int]:
    """Record `refs` subpages from `first` into pages[i:] and grab them; how many were grabbed."""
    if pages is None:
        return refs
    _store(pages, i, first, refs)
    if k.profile.hugetlb_grab_batched:
        folio = yield from try_grab_folio(k, first, refs, flags)
        return refs if folio is not None else 0
    for n in range(refs):
        if not (yield from try_grab_page(k, first + n, flags)):
            return n
    return refs


def _range_worth(k: Kernel, mm: MmStruct, start: int) -> bool:
    """Cheap pre-test: is the first page present at all (else the slow path faults it)?"""
    slot = start >> PMD_SHIFT
    if pmd_trans_huge(mm.pgtable.pmd.get(slot, 0)):
        return True
    table = mm.pgtable.pte.get(slot)
    return table is not None and bool(int(table[(start >> PAGE_SHIFT) & 511]) & 1)


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
    while True:
        if vma is None or start >= vma.vm_end:
            vma = find_vma(mm, start)
            if vma is None:
                ret = -errno.EFAULT
                break
            ret = check_vma_flags(k, vma, gup_flags)
            if ret:
                break
            if is_vm_hugetlb_page(vma):
                if pages is not None and range_ok(k, gup_flags) and _fits(pages, i, nr_pages):
                    yield "gup:range"
                    done = range_grab(k, mm, vma, start, nr_pages, gup_flags, pages[i:])
                    i, start, nr_pages = i + done, start + done * PAGE_SIZE, nr_pages - done
                    if not nr_pages or start >= vma.vm_end:
                        if not nr_pages:
                            break
                        continue
                pos = [start, nr_pages]
                i = yield from follow_hugetlb_page(k, mm, vma, pages, pos, i, gup_flags, locked)
                start, nr_pages = pos
                if locked is not None and not locked.held:
                    break
                if not nr_pages:
                    break
                continue
        if (
            pages is not None
            and range_ok(k, gup_flags)
            and _fits(pages, i, nr_pages)
            and _range_worth(k, mm, start)
        ):
            yield "gup:range"
            done = range_grab(k, mm, vma, start, nr_pages, gup_flags, pages[i:])
            if done:
                i, start, nr_pages = i + done, start + done * PAGE_SIZE, nr_pages - done
                if not nr_pages:
                    break
                continue
        foll_flags = gup_flags
        while True:
            page, page_mask = yield from follow_page_mask(k, mm, vma, start, foll_flags)
            if page is None or page == -errno.EMLINK:
                ret, foll_flags = yield from faultin_page(
                    k, mm, vma, start, foll_flags, page == -errno.EMLINK, locked
                )
                if ret == 0:
                    continue
                if ret in (-errno.EBUSY, -errno.EAGAIN):
                    ret = 0
                break
            break
        if page is None or page == -errno.EMLINK:
            break
        if page == -errno.EEXIST:
            if pages is not None:
                ret = page
                break
        elif page < 0:
            ret = page
            break
        elif pages is not None:
            _store(pages, i, page, 1)
            page_mask = 0
        page_increm = min(1 + (~(start >> PAGE_SHIFT) & page_mask), nr_pages)
        i += page_increm
        start += page_increm * PAGE_SIZE
        nr_pages -= page_increm
        if not nr_pages:
            break
    return i if i else ret
