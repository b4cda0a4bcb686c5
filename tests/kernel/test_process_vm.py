"""process_vm_readv/writev per profile: how each kernel holds the remote pages while copying.

Rows are facts of each version's mm/process_vm_access.c process_vm_rw_single_vec: what
reference the remote page carries at the copy (the most its refcount rises above the
start at any yield) and whether the write dirtied a file page it copied into.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pinlab.interleave import Await, Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm import mmap as M
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.pgtable import PAGE_SIZE, get_pte, pte_pfn
from pinlab.kernel.mm.process_vm_access import process_vm_rw
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import Task
from pinlab.kernel.process import ext4_create, fd_install, fget
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = M.PROT_READ | M.PROT_WRITE


def _page_of(k: Kernel, task: Task, addr: int) -> int:
    """The folio mapped at ``addr``."""
    return compound_head(k.mem, pte_pfn(get_pte(k.mms[task.mm].pgtable, addr)))


def _highest_ref(k: Kernel, page: int, gen: Generator[Yield, None, Any]) -> tuple[Any, int]:
    """Run ``gen`` alone; its result and the most ``page``'s refcount rose at any yield."""
    base = int(k.mem.refcount[page])
    top = 0
    try:
        point = next(gen)
        while True:
            assert not isinstance(point, Await) or point.ready()
            top = max(top, int(k.mem.refcount[page]) - base)
            point = gen.send(None)
    except StopIteration as stop:
        return stop.value, top


@pytest.mark.parametrize(
    ("profile", "held"),
    [
        # v4.4.178 mm/process_vm_access.c:106 get_user_pages_unlocked: one FOLL_GET ref
        ("4.4", 1),
        # v5.7.14 mm/process_vm_access.c:108 pin_user_pages_remote: GUP_PIN_COUNTING_BIAS
        ("5.7", 1024),
        # v6.1.192 mm/process_vm_access.c process_vm_rw_single_vec: pin_user_pages_remote
        ("6.1", 1024),
    ],
)
def test_readv_holds_the_remote_page_as_its_kernel_did(profile: str, held: int) -> None:
    k = boot(profile)
    task = P.new_task(k)
    addr = run(P.sys_mmap(k, task, None, 2 * PAGE_SIZE, RW, M.MAP_PRIVATE | M.MAP_ANONYMOUS))
    run(user_access(k, task, addr, True, 7))
    run(user_access(k, task, addr + PAGE_SIZE, True, 1))
    run(lru_add_drain(k, task.cpu))
    page = _page_of(k, task, addr)
    before = int(k.mem.refcount[page])
    copy = process_vm_rw(k, task, task, [(addr + PAGE_SIZE, 8)], [(addr, 8)], 0, False)
    got, top = _highest_ref(k, page, copy)
    assert (got, top, int(k.mem.refcount[page])) == (8, held, before)
    assert run(user_access(k, task, addr + PAGE_SIZE, False)) == 7


@pytest.mark.parametrize(
    "profile",
    [
        # v4.4.178 mm/process_vm_access.c:49-50: set_page_dirty_lock after the copy
        "4.4",
        # v5.7.14 mm/process_vm_access.c:129: unpin_user_pages_dirty_lock(..., vm_write)
        "5.7",
        # v6.1.192 mm/process_vm_access.c: unpin_user_pages_dirty_lock(..., vm_write)
        "6.1",
    ],
)
def test_writev_dirties_the_file_page_it_wrote(profile: str) -> None:
    k = boot(profile)
    task = P.new_task(k)
    fid = fd_install(k, ext4_create(k, PAGE_SIZE))
    local = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, M.MAP_PRIVATE | M.MAP_ANONYMOUS))
    remote = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, M.MAP_SHARED, fget(k, fid)))
    run(user_access(k, task, local, True, 5))
    assert run(user_access(k, task, remote, False)) == 0
    page = _page_of(k, task, remote)
    dirty = k.pf.mask("PG_dirty")
    assert not int(k.mem.flags[page]) & dirty  # read in from disk, clean
    copied = run(process_vm_rw(k, task, task, [(local, 8)], [(remote, 8)], 0, True))
    assert copied == 8
    assert int(k.mem.flags[page]) & dirty
    assert int(k.mem.data[page]) == 5
