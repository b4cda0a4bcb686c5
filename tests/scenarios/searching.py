"""What the race tests share: the one task of a booted kernel, and an exhaustive search."""

from __future__ import annotations

from collections.abc import Callable

from pinlab.explore import FinalCheck, GenThread, Options, Result, explore
from pinlab.kernel.mm.types import MmStruct, Task
from pinlab.kernel.state import Kernel
from pinlab.scenarios.harness import kernel_program


def only_task(k: Kernel) -> Task:
    """The task a one-task setup made."""
    return next(iter(k.tasks.values()))


def only_mm(k: Kernel) -> MmStruct:
    """That task's mm."""
    return k.mms[only_task(k).mm]


def search(
    name: str,
    make: Callable[[], Kernel],
    threads: tuple[GenThread, ...],
    finals: tuple[FinalCheck, ...] = (),
) -> Result:
    """Every interleaving of ``threads`` over the kernel ``make`` builds (dfs, state cache)."""
    prog = kernel_program(name, make, threads, finals=finals)
    return explore(prog, Options(strategy="dfs", cache=True, shrink=False))
