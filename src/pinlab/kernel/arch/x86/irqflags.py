"""Interrupts off on the running CPU (v4.4 arch/x86/include/asm/irqflags.h).

Only gup-fast disables interrupts in the model.  What matters to other CPUs is
that a CPU with interrupts off does not answer a TLB-flush IPI, so the state is
kept per mm: `k.irqs_off[mm id]` counts the CPUs that have that mm loaded (are
in its mm_cpumask, as gup-fast's CPU is for current->mm) with interrupts off.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import TYPE_CHECKING

from pinlab.interleave import Point, Yield
from pinlab.kernel.mm.types import MmStruct

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def irqs_key(mm: MmStruct) -> frozenset[Hashable]:
    """Footprint of the interrupts-off state of the CPUs that have `mm` loaded."""
    return frozenset({("irqs_off", mm.id)})


def local_irq_disable(k: Kernel, mm: MmStruct) -> Generator[Yield, None, None]:
    """v4.4 arch/x86/include/asm/irqflags.h native_irq_disable (cli) on a CPU running `mm`."""
    yield Point("local_irq_disable", reads=irqs_key(mm), writes=irqs_key(mm))
    k.irqs_off[mm.id] = k.irqs_off.get(mm.id, 0) + 1


def local_irq_enable(k: Kernel, mm: MmStruct) -> Generator[Yield, None, None]:
    """v4.4 arch/x86/include/asm/irqflags.h native_irq_enable (sti): pending IPIs run now."""
    yield Point("local_irq_enable", reads=irqs_key(mm), writes=irqs_key(mm))
    left = k.irqs_off[mm.id] - 1
    if left:
        k.irqs_off[mm.id] = left
    else:
        del k.irqs_off[mm.id]
