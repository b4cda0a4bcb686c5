"""The model evaluator's readers: what the guest reads from /proc, computed from model state.

Each reader returns what probes/kstate.c would see in the guest (/proc/vmstat after
stat_refresh, /proc/self/pagemap as root, /proc/self/smaps).
"""

from __future__ import annotations

from dataclasses import dataclass

from pinlab.kernel import process as P
from pinlab.kernel.fs.direct_io import PGPGIN, PGPGOUT
from pinlab.kernel.mm.hugetlb import is_vm_hugetlb_page
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.pgtable import PMD_SHIFT, PMD_SIZE, pte_pfn
from pinlab.kernel.mm.rmap import PageAnon
from pinlab.kernel.mm.types import Task, find_vma
from pinlab.kernel.mm.vmstat import (
    NR_FOLL_PIN_ACQUIRED,
    NR_FOLL_PIN_RELEASED,
    global_node_page_state,
)
from pinlab.kernel.state import Kernel
from pinlab.realkernel.ops import PAGE


class ObservationError(Exception):
    """The guest's reader would have died here (the message is its die() detail)."""


@dataclass(frozen=True, slots=True)
class Counters:
    """The /proc/vmstat lines kstate.c read_counters reads."""

    pin_acq: int
    pin_rel: int
    pgpgin: int
    pgpgout: int


def read_counters(k: Kernel) -> Counters:
    """/proc/vmstat after stat_refresh: node counters folded (v6.1 mm/vmstat.c vmstat_refresh);
    pgpgin/pgpgout are sector counts shown halved, in KiB (v6.1 mm/vmstat.c vmstat_start)."""
    vs = k.vmstat
    return Counters(
        global_node_page_state(vs, NR_FOLL_PIN_ACQUIRED),
        global_node_page_state(vs, NR_FOLL_PIN_RELEASED),
        vs.counters.get(PGPGIN, 0) // 2,
        vs.counters.get(PGPGOUT, 0) // 2,
    )


def pins_idle(k: Kernel) -> bool:
    """kstate.c pins_idle's condition: no pin held anywhere (global acquired == released)."""
    c = read_counters(k)
    return c.pin_acq == c.pin_rel


def pagemap_entries(k: Kernel, task: Task, addr: int, size: int) -> list[int]:
    """kstate.c pagemap_entry per page: the raw entry as a CAP_SYS_ADMIN reader sees it.

    The guest's guard against hidden PFNs (present with PFN 0: v6.1 fs/proc/task_mmu.c
    pagemap_read show_pfn) has no model counterpart: process.pagemap is always the
    CAP_SYS_ADMIN view, and the model's frame numbers start at 0, which x86 never hands
    out (v6.1 arch/x86/realmode/init.c reserve_real_mode reserves the first 1 MiB).
    """
    return [P.pagemap(k, task, addr + i * PAGE).raw for i in range(size // PAGE)]


def pagemap_runs(now: list[int], then: list[int]) -> str:
    """ops.c op_pagemap_cmp: s same frame, d different, n not present, f newly present; runs."""
    runs: list[tuple[str, int]] = []
    for n, t in zip(now, then, strict=True):
        now_e, then_e = P.PageMapEntry(n), P.PageMapEntry(t)
        c = (
            "n"
            if not now_e.present
            else "f"
            if not then_e.present
            else "s"
            if now_e.pfn == then_e.pfn
            else "d"
        )
        if runs and runs[-1][0] == c:
            runs[-1] = (c, runs[-1][1] + 1)
        else:
            runs.append((c, 1))
    return "".join(f"{c}{n}" for c, n in runs)


def smaps_field(k: Kernel, task: Task, addr: int, name: str) -> int:
    """/proc/self/smaps `name` (kB) of the VMA containing addr (v6.1 fs/proc/task_mmu.c).

    Only AnonHugePages is modelled: smaps_pmd_entry adds HPAGE_PMD_SIZE per
    PMD-mapped anon folio (the huge zero page is skipped: FOLL_DUMP).
    """
    if name != "AnonHugePages":
        raise ObservationError(f"smaps-field-not-modelled:{name}")
    mm = k.mms[task.mm]
    vma = find_vma(mm, addr)
    if vma is None or addr < vma.vm_start:
        raise ObservationError("smaps-field:ENOENT")
    if is_vm_hugetlb_page(vma):
        return 0
    total = 0
    for slot in range(vma.vm_start >> PMD_SHIFT, ((vma.vm_end - 1) >> PMD_SHIFT) + 1):
        pmd = mm.pgtable.pmd.get(slot, 0)
        if not pmd:
            continue
        pfn = pte_pfn(pmd)
        if pfn == k.huge_zero_pfn:
            continue
        if PageAnon(k, compound_head(k.mem, pfn)):
            total += PMD_SIZE
    return total >> 10
