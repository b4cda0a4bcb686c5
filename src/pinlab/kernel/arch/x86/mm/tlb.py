"""TLB shootdown to the other CPUs of an mm (v4.4 arch/x86/mm/tlb.c)."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from pinlab.interleave import Await, Yield
from pinlab.kernel.arch.x86.irqflags import irqs_key
from pinlab.kernel.mm.types import MmStruct

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def flush_tlb_mm_range(k: Kernel, mm: MmStruct) -> Generator[Yield, None, None]:
    """v4.4 arch/x86/mm/tlb.c flush_tlb_mm_range (:340): returns once every other CPU of the mm ran
    the flush IPI.

    :390-391 flush_tlb_others for the rest of mm_cpumask; native_flush_tlb_others :325
    smp_call_function_many(..., wait=1) waits for each CPU's handler, which a CPU with
    interrupts off (gup-fast, irqflags.py) runs only once it enables them again.  The
    flushing CPU itself has interrupts on, so every CPU counted is another one.
    """
    yield Await("flush_tlb_others", lambda: not k.irqs_off.get(mm.id), reads=irqs_key(mm))
