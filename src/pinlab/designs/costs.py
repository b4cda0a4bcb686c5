"""A design's measured cost: how often its pin check calls a page nobody pinned "maybe pinned"."""

from __future__ import annotations

from pinlab.designs.base import Design, boot_design
from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.page_alloc import peek_order
from pinlab.kernel.mm.page_ref import page_ref_add
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, get_pmd, get_pte, pmd_trans_huge, pte_pfn
from pinlab.kernel.process import new_task, sys_mmap
from pinlab.kernel.state import BootParams, Kernel
from pinlab.kernel.uaccess import user_access

# The grid: plain references (get_page, never a pin) on top of the page's own,
# on a small page and on a THP.
PLAIN_REFS = (0, 1, 512, 1023, 1024, 2047, 4096)
ORDERS = (0, 9)


def unpinned_folio(design: Design, order: int, refs: int) -> tuple[Kernel, int]:
    """An anonymous folio of `order` a process faulted in, holding `refs` more plain references."""
    k = boot_design(design, BootParams(normal_mb=8))
    task = new_task(k)
    # a one-page mapping cannot take a THP; a two-PMD one holds an aligned PMD
    length = PAGE_SIZE if order == 0 else 2 * PMD_SIZE
    prot, flags = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
    region = run_to_completion(sys_mmap(k, task, None, length, prot, flags))
    addr = (region + PMD_SIZE - 1) & ~(PMD_SIZE - 1) if order else region
    run_to_completion(user_access(k, task, addr, True, 1))
    pt = k.mms[task.mm].pgtable
    pmd = get_pmd(pt, addr)
    folio = compound_head(k.mem, pte_pfn(pmd if pmd_trans_huge(pmd) else get_pte(pt, addr)))
    if peek_order(k.mem, folio) != order:
        raise RuntimeError(f"profile {k.profile.name} faulted an order-{order} folio otherwise")
    page_ref_add(k.mem, folio, refs)
    return k, folio


def false_positive_rate(design: Design) -> float | None:
    """The share of the grid's unpinned folios the design reports maybe pinned (None: no check)."""
    check = design.maybe_pinned
    if check is None:
        return None
    cells = [(order, refs) for order in ORDERS for refs in PLAIN_REFS]
    hits = sum(check(*unpinned_folio(design, order, refs)) for order, refs in cells)
    return hits / len(cells)
