"""What gup's page-table walkers share (v6.1 mm/gup.c, mm/huge_memory.c, mm/hugetlb.c).

follow_page_pte, follow_trans_huge_pmd and follow_hugetlb_page each find a page, test
whether gup may take it (unshare, write), let a design refuse it, and store it in the
caller's array; faulting in turns a VM_FAULT_ code into an errno.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from pinlab.interleave import Unmodelled, Violation, Yield
from pinlab.kernel import errno
from pinlab.kernel.bug import warn_on_once
from pinlab.kernel.mm.gup_flags import (
    FOLL_COW,
    FOLL_FORCE,
    FOLL_HWPOISON,
    FOLL_LONGTERM,
    FOLL_PIN,
    FOLL_WRITE,
)
from pinlab.kernel.mm.gup_grab import folio_test_anon
from pinlab.kernel.mm.memmap import (
    HUGETLB_PAGE_DTOR,
    PAGE_MAPPING_ANON,
    compound_head,
    folio_test_large,
)
from pinlab.kernel.mm.pgtable import pte_dirty, pte_write
from pinlab.kernel.mm.rmap import PAGE_MAPPING_FLAGS
from pinlab.kernel.mm.types import (
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_SHARED,
    VM_WRITE,
    VmArea,
    is_cow_mapping,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# the caller's struct page *pages[]: PFNs
Pages = NDArray[np.int64]
# follow_* results: a PFN, None (NULL: fault it in) or -errno (ERR_PTR)
Follow = int | None


@dataclass(slots=True)
class Locked:
    """The caller's `int *locked`: whether it still holds mmap_lock for read."""

    held: bool = True


def page_anon_exclusive(k: Kernel, page: int) -> bool:
    """v6.1 include/linux/page-flags.h PageAnonExclusive (PG_mappedtodisk on anon pages)."""
    return bool(int(k.mem.flags[page]) & k.pf.mask("PG_anon_exclusive"))


def gup_must_unshare(
    k: Kernel, flags: int, page: int, vma: VmArea | None = None, fast: bool = False
) -> bool:
    """v6.1 include/linux/mm.h gup_must_unshare: R/O pin of a possibly shared anon page.

    Kernels before v5.19 had no PageAnonExclusive and never unshared.  v6.5
    (profile.unshare_non_anon; mm/internal.h:985-1000) also unshares a page that is not
    anon for a R/O FOLL_LONGTERM pin: always from gup-fast (`fast`: no VMA there), in a
    COW mapping from the slow path, which must pass its `vma`.
    """
    if not k.profile.page_anon_exclusive:
        return False
    if flags & (FOLL_WRITE | FOLL_PIN) != FOLL_PIN:
        return False
    head = compound_head(k.mem, page)
    if not folio_test_anon(k, head):
        if not k.profile.unshare_non_anon or not flags & FOLL_LONGTERM:
            return False
        if fast:
            return True
        if vma is None:
            raise Unmodelled(
                "gup_must_unshare",
                "v6.5 R/O long-term pin of a non-anon page: this walker passes no VMA"
                " for is_cow_mapping (mm/internal.h:992-1000)",
            )
        return is_cow_mapping(vma.vm_flags)
    if head != page and int(k.mem.dtor[head + 1]) == HUGETLB_PAGE_DTOR:
        page = head
    return not page_anon_exclusive(k, page)


def can_follow_write(k: Kernel, entry: int, page: int | None, vma: VmArea, flags: int) -> bool:
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


def gup_returned_hook(k: Kernel, pages: Pages | None, nr: int) -> Generator[Yield, None, None]:
    """The gup_returned design hook on pages[0:nr], a step per page, after the walk."""
    hook = k.hooks.gup_returned
    if hook is None or pages is None:
        return
    for j in range(nr):
        yield "gup_returned"
        hook(k, int(pages[j]))


def vm_fault_to_errno(vm_fault: int, foll_flags: int) -> int:
    """v6.1 include/linux/mm.h vm_fault_to_errno."""
    # memory.py's fault paths sit above the walkers that import this module
    from pinlab.kernel.mm.memory import (
        VM_FAULT_HWPOISON,
        VM_FAULT_HWPOISON_LARGE,
        VM_FAULT_OOM,
        VM_FAULT_SIGBUS,
        VM_FAULT_SIGSEGV,
    )

    if vm_fault & VM_FAULT_OOM:
        return -errno.ENOMEM
    if vm_fault & (VM_FAULT_HWPOISON | VM_FAULT_HWPOISON_LARGE):
        return -errno.EHWPOISON if foll_flags & FOLL_HWPOISON else -errno.EFAULT
    if vm_fault & (VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV):
        return -errno.EFAULT
    return 0


def store_pages(pages: Pages, at: int, first: int, n: int) -> None:
    """pages[at:at + n] = first, first + 1, ...; past the caller's array the kernel corrupts."""
    if at + n > pages.shape[0]:
        raise Violation("gup pages[] overrun", f"entry {at + n - 1} of {pages.shape[0]}")
    pages[at : at + n] = np.arange(first, first + n, dtype=np.int64)


def folio_fast_pin_allowed(k: Kernel, folio: int, flags: int) -> bool:
    """v6.5 mm/gup.c folio_fast_pin_allowed: refuse PIN|LONGTERM|WRITE of file folios but shmem.

    Same series as the slow path's writable_file_mapping_allowed (Lorenzo
    Stoakes, v6.5), so it follows that profile fact; 6.1 has no such check.
    """
    if not k.profile.longterm_file_write_refused:
        return True
    want = FOLL_PIN | FOLL_LONGTERM | FOLL_WRITE
    if flags & want != want:
        return True
    m = k.mem
    if int(m.flags[folio]) & k.pf.mask("PG_slab"):
        warn_on_once(k, "mm/gup.c folio_fast_pin_allowed slab folio")
        return False
    if folio_test_large(m, folio) and int(m.dtor[folio + 1]) == HUGETLB_PAGE_DTOR:
        return True
    mapping = int(m.mapping[folio])
    if not mapping:
        return False
    if mapping & PAGE_MAPPING_FLAGS:
        return bool(mapping & PAGE_MAPPING_ANON)
    space = k.mappings.get(mapping >> 2)
    return space is not None and space.fs.is_shmem
