"""PIN_LONGTERM_BENCHMARK analogue (tools/testing/selftests/mm/gup_test.c -L).

Pre-faults 1 GiB of anonymous memory through the model's fault path
(handle_mm_fault, write faults; 4 KiB pages with VM_NOHUGEPAGE, then 2 MiB
THPs), then times pin_user_pages(FOLL_LONGTERM) + unpin_user_pages over the
whole range, the same functions the model uses everywhere.  Prints ns per
page for the round trip; the last line is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import time

from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.gup import page_array, pin_user_pages
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM
from pinlab.kernel.mm.gup_unpin import unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memory import FAULT_FLAG_WRITE, handle_mm_fault
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PUD_SIZE
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import (
    VM_HUGEPAGE,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_NOHUGEPAGE,
    VM_READ,
    VM_WRITE,
    MmStruct,
    VmArea,
)
from pinlab.kernel.state import BootParams, Kernel, boot, new_id

GiB = 1 << 30
NR = GiB // PAGE_SIZE
REPEAT = 5


def prefault(thp: bool) -> tuple[Kernel, MmStruct]:
    """A 6.1 kernel with 1 GiB of anon memory write-faulted in at PUD_SIZE."""
    k = boot("6.1", BootParams(normal_mb=1024 + 128))
    mm = MmStruct(id=new_id(k))
    k.mms[mm.id] = mm
    flags = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
    flags |= VM_HUGEPAGE if thp else VM_NOHUGEPAGE
    vma = VmArea(PUD_SIZE, PUD_SIZE + GiB, flags, 0)
    mm.vmas.append(vma)
    step = 512 * PAGE_SIZE if thp else PAGE_SIZE
    for addr in range(PUD_SIZE, PUD_SIZE + GiB, step):
        ret = run_to_completion(handle_mm_fault(k, mm, vma, addr, FAULT_FLAG_WRITE))
        assert ret == 0, ret
    run_to_completion(lru_add_drain(k))
    return k, mm


def round_trip_ns(k: Kernel, mm: MmStruct) -> float:
    """Median ns per page of pin_user_pages(FOLL_LONGTERM) + unpin_user_pages over 1 GiB."""
    samples = []
    for _ in range(REPEAT):
        pages = page_array(NR)
        t0 = time.perf_counter_ns()
        run_to_completion(mmap_read_lock(k, mm))
        got = run_to_completion(pin_user_pages(k, mm, PUD_SIZE, NR, FOLL_LONGTERM, pages))
        mmap_read_unlock(k, mm)
        run_to_completion(unpin_user_pages(k, pages, got))
        samples.append((time.perf_counter_ns() - t0) / NR)
        assert got == NR, got
    return statistics.median(samples)


def main() -> None:
    """Run both cases and print the figures."""
    result = {}
    for name, thp in (("4k", False), ("thp", True)):
        t0 = time.perf_counter()
        k, mm = prefault(thp)
        print(f"{name}: pre-faulted 1 GiB in {time.perf_counter() - t0:.1f} s")
        ns = round_trip_ns(k, mm)
        print(f"{name}: pin_user_pages(FOLL_LONGTERM) + unpin_user_pages: {ns:.1f} ns/page")
        result[f"ns_per_page_{name}"] = round(ns, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
