"""What a probe's system calls leave behind is kernel state, and a probe runs as a thread.

Open files, rings and their queued teardown, pipes, bios in flight and extra users of an
mm live in the Kernel (so a copy or digest of it covers them); `model_thread` shrinks a
probe and runs its op list as an interleavable thread.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pinlab.interleave import Await, Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.fs.direct_io import Bio, ext4_dio_read, ext4_dio_write
from pinlab.kernel.io_uring.ring import (
    IORING_REGISTER_BUFFERS,
    ExitWork,
    flush_work,
    fput,
    io_uring_register,
    io_uring_setup,
)
from pinlab.kernel.mm import mmap as M
from pinlab.kernel.mm.pgtable import PAGE_SIZE
from pinlab.kernel.state import boot, kernel_copy, kernel_digest
from pinlab.kernel.uaccess import user_access
from pinlab.realkernel import ops as O
from pinlab.realkernel.catalog import PROBES, by_name
from pinlab.realkernel.model import run_case
from pinlab.realkernel.model_thread import cap_ops, probe_boot, probe_params, probe_thread

RW = M.PROT_READ | M.PROT_WRITE
ANON = M.MAP_PRIVATE | M.MAP_ANONYMOUS


def steps(gen: Generator[Yield, None, object]) -> Generator[object, None, None]:
    """Drive ``gen`` alone, handing back control at each of its yields."""
    try:
        while True:
            yielded = next(gen)
            assert not isinstance(yielded, Await) or yielded.ready()
            yield yielded
    except StopIteration:
        return


# ---- kernel state (Task 1) ----


def test_files_rings_and_queued_teardown_are_in_the_digest() -> None:
    """A ring's file is in k.files until its last fput, then its ring is queued work in
    k.system_unbound_wq until flush_work has run it: each change moves the digest, and
    a kernel_copy carries them."""
    k = boot("6.1")
    digests = [kernel_digest(k)]
    ring = io_uring_setup(k)
    digests.append(kernel_digest(k))
    copy = kernel_copy(k)
    assert copy.files.keys() == {ring.id} and copy.files[ring.id] is not ring
    fput(k, ring)
    assert k.files == {} and k.system_unbound_wq == [ExitWork(ring.ctx)]
    digests.append(kernel_digest(k))
    run(flush_work(k))
    assert k.system_unbound_wq == []
    assert len(set(digests)) == 3
    assert kernel_digest(k) != digests[-1]  # the ring is dying: a different state from boot's


def test_a_direct_io_bio_is_in_the_kernel_while_in_flight() -> None:
    """fs/iomap/direct-io.c: from iomap_dio_alloc_bio to its bio_put the bio is in k.bios;
    between the two, a step of another thread sees it (and its pages) there."""
    k = boot("6.1")
    task = P.new_task(k)
    addr = run(P.sys_mmap(k, task, None, 4 * PAGE_SIZE, RW, ANON))
    for i in range(4):
        run(user_access(k, task, addr + i * PAGE_SIZE, True, 1))
    mapping = k.mappings[P.ext4_create(k, 4 * PAGE_SIZE).mapping]
    mm = k.mms[task.mm]
    for io in (ext4_dio_read, ext4_dio_write):
        seen: list[list[tuple[int, int, int]]] = []
        for _ in steps(io(k, mm, mapping, 0, addr, 4 * PAGE_SIZE)):
            seen += [list(b.vecs) for b in k.bios.values() if isinstance(b, Bio)]
        assert seen and max(len(v) for v in seen) == 4
        assert k.bios == {}


def test_regular_files_are_installed_and_closed() -> None:
    k = boot("6.1")
    file = P.tmpfs_create(k, 0)
    fid = P.fd_install(k, file)
    assert P.fget(k, fid) is file and k.files == {fid: file}
    P.close_fd(k, fid)
    assert k.files == {} and file.mapping in k.mappings  # the inode stays
    with pytest.raises(KeyError):
        P.fget(k, fid)


def test_the_last_user_of_an_mm_tears_it_down() -> None:
    """kernel/fork.c mmput: a process exiting while another user holds its mm (a thread, a
    remote accessor: mmget_not_zero) leaves the mm to that user's mmput."""
    k = boot("6.1")
    task = P.new_task(k)
    addr = run(P.sys_mmap(k, task, None, PAGE_SIZE, RW, ANON))
    run(user_access(k, task, addr, True, 1))
    mm = k.mms[task.mm]
    assert P.mmget_not_zero(k, mm.id) and k.mm_users == {mm.id: 2}
    run(P.sys_exit(k, task))
    assert k.tasks == {} and k.mms == {mm.id: mm} and mm.vmas and k.mm_users == {}
    run(P.mmput(k, mm))
    assert k.mms == {} and not mm.vmas and k.mm_users == {}
    assert not P.mmget_not_zero(k, mm.id)


def test_register_and_exit_leave_nothing_behind() -> None:
    """A ring with buffers registered, then exit and flush: no file, no work, no pin."""
    k = boot("6.1")
    task = P.new_task(k)
    addr = run(P.sys_mmap(k, task, None, 2 * PAGE_SIZE, RW, ANON))
    ring = io_uring_setup(k)
    iov = [(addr, 2 * PAGE_SIZE)]
    assert run(io_uring_register(k, k.mms[task.mm], ring, IORING_REGISTER_BUFFERS, iov)) == 0
    run(P.sys_exit(k, task))
    fput(k, ring)
    run(flush_work(k))
    assert (k.files, k.system_unbound_wq, k.tasks, k.mms) == ({}, [], {}, {})


# ---- probes as threads (Task 2) ----


def test_cap_keeps_each_probe_geometry() -> None:
    """Ranges scale with their regions: a hole stays the end of its region, a register past
    a region's end still runs past it (into the adjacent region when there is one)."""
    hole = cap_ops(by_name("partial-uring-hole"), 4)
    assert O.Map("b", "anon", 4 * PAGE_SIZE) in hole
    assert O.Mprotect("b", 3 * PAGE_SIZE, PAGE_SIZE, "none") in hole
    assert O.UringRegister("register", "b", 0, 4 * PAGE_SIZE) in hole
    overrun = cap_ops(by_name("partial-uring-thp-overrun"), 4)
    assert O.Map("b", "anon", O.HPAGE) in overrun  # a THP region: one huge page
    assert O.Madvise("b", "hugepage", 0, O.HPAGE) in overrun  # whole, or no THP
    assert O.UringRegister("register", "b", O.HPAGE - 4 * PAGE_SIZE, 5 * PAGE_SIZE) in overrun
    mixed = cap_ops(by_name("partial-uring-hugetlb-anon"), 2)
    assert O.Map("a", "anon", 2 * PAGE_SIZE, placement="adjacent") in mixed
    assert O.UringRegister("register", "b", O.HPAGE - 2 * PAGE_SIZE, 4 * PAGE_SIZE) in mixed
    pvm = cap_ops(by_name("process-vm-readv-pins"), 4)
    assert O.ProcessVmReadv("read", "s", 2048, 4 * PAGE_SIZE - 2048, "b", 0) in pvm
    fuzzy = cap_ops(by_name("fuzzy-threshold"), 4)
    assert O.Vmsplice("b", 0, 4) in fuzzy  # the search bound, then capped


def test_boot_params_cover_hugetlb_pages_and_fork_copies() -> None:
    assert probe_params(by_name("pins-uring-small")).hugepages_2m == 0
    assert probe_params(by_name("pins-uring-hugetlb")).hugepages_2m == 1
    assert probe_params(by_name("longterm-hugetlb-private")).hugepages_2m == 1
    assert probe_params(by_name("fork-pinned-hugetlb")).hugepages_2m == 2
    thp_fork = probe_params(by_name("fork-pinned-thp"))
    assert thp_fork.normal_mb > probe_params(by_name("pins-uring-thp")).normal_mb
    both = probe_params((by_name("pins-uring-hugetlb"), by_name("fork-pinned-hugetlb")))
    assert both.hugepages_2m == 3


@pytest.mark.parametrize("name", ["pins-uring-small", "longterm-memfd-shared", "fork-pinned-small"])
def test_uncapped_probe_thread_predicts_what_the_evaluator_does(name: str) -> None:
    """With regions as large as the probe's own, the thread gives the evaluator's outcome."""
    probe = by_name(name)
    k = probe_boot(probe, cap_pages=1 << 20, normal_mb=64)
    got = run(probe_thread(probe, cap_pages=1 << 20)(k))
    assert got == run_case(probe.ops, k.profile)


def test_every_probe_has_a_thread() -> None:
    for probe in PROBES:
        k = probe_boot(probe, cap_pages=2)
        assert run(probe_thread(probe, 2)(k)).status == "ok", probe.name
