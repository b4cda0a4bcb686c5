"""fork(): duplicate an mm VMA by VMA with copy_page_range (v6.1 kernel/fork.c dup_mmap)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.mm.fork_copy import copy_page_range
from pinlab.kernel.mm.locking import mmap_write_lock, mmap_write_unlock
from pinlab.kernel.mm.types import (
    VM_DONTCOPY,
    VM_LOCKED,
    VM_LOCKONFAULT,
    VM_WIPEONFORK,
    MmStruct,
)

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/linux/sched/coredump.h MMF_INIT_MASK: dumpable (bits 0-1), dump
# filter (bits 2-10), MMF_DISABLE_THP (24).  MMF_HAS_PINNED (27) is not inherited.
MMF_INIT_MASK = (1 << 11) - 1 | 1 << 24


def mm_alloc(k: Kernel, flags: int = 0) -> MmStruct:
    """v6.1 kernel/fork.c mm_alloc / mm_init: an empty mm registered in the kernel."""
    from pinlab.kernel.state import new_id

    mm = MmStruct(id=new_id(k), flags=flags)
    k.mms[mm.id] = mm
    return mm


def dup_mmap(k: Kernel, mm: MmStruct, oldmm: MmStruct, cpu: int = 0) -> Generator[Yield, None, int]:
    """v6.1 kernel/fork.c dup_mmap: copy each VMA (not DONTCOPY), then its page tables."""
    from pinlab.kernel.state import new_id

    yield from mmap_write_lock(k, oldmm)
    try:
        for mpnt in list(oldmm.vmas):
            if mpnt.vm_flags & VM_DONTCOPY:
                continue
            tmp = replace(mpnt, vm_flags=mpnt.vm_flags & ~(VM_LOCKED | VM_LOCKONFAULT))
            if mpnt.vm_flags & VM_WIPEONFORK:
                tmp.anon_vma = None
            elif mpnt.anon_vma is not None:
                # v6.1 mm/rmap.c anon_vma_fork: the child VMA gets its own anon_vma
                tmp.anon_vma = new_id(k)
            mm.vmas.append(tmp)
            if mpnt.vm_flags & VM_WIPEONFORK:
                continue
            ret = yield from copy_page_range(k, mm, oldmm, tmp, mpnt, cpu)
            if ret:
                return ret
        return 0
    finally:
        mmap_write_unlock(k, oldmm)


def dup_mm(k: Kernel, oldmm: MmStruct, cpu: int = 0) -> Generator[Yield, None, MmStruct | int]:
    """v6.1 kernel/fork.c dup_mm: a new mm with the inherited flags and copied mappings.

    Any dup_mmap failure (-ENOMEM, or hugetlb's -ENOSPC) makes dup_mm return
    NULL, which copy_mm reports as -ENOMEM (v6.1 kernel/fork.c copy_mm).
    """
    from pinlab.kernel.errno import ENOMEM
    from pinlab.kernel.mm.mmap import exit_mmap

    mm = mm_alloc(k, oldmm.flags & MMF_INIT_MASK)
    ret = yield from dup_mmap(k, mm, oldmm, cpu)
    if ret:
        yield from exit_mmap(k, mm, cpu)
        del k.mms[mm.id]
        return -ENOMEM
    return mm
