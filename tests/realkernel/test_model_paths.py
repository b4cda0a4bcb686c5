"""The kernel paths the probes go through, modelled for 6.1: io_uring buffer registration,
vmsplice, O_DIRECT read and process_vm_readv, each row a fact of the cited 6.1.192 source."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pinlab.interleave import run_to_completion as run
from pinlab.kernel import errno
from pinlab.kernel import process as P
from pinlab.kernel.errno import ENXIO, EPIPE
from pinlab.kernel.fs.direct_io import ext4_dio_read
from pinlab.kernel.fs.splice import (
    PIPE_DEF_BUFFERS,
    Pipe,
    create_pipe,
    free_pipe_info,
    pipe_release,
    pipe_set_size,
    round_pipe_size,
    vmsplice,
)
from pinlab.kernel.io_uring.ring import (
    IORING_REGISTER_BUFFERS,
    IORING_UNREGISTER_BUFFERS,
    flush_work,
    fput,
    get_file,
    io_uring_register,
    io_uring_setup,
)
from pinlab.kernel.io_uring.rsrc import SZ_1G
from pinlab.kernel.mm import mmap as M
from pinlab.kernel.mm.memmap import compound_head
from pinlab.kernel.mm.page_ref import page_ref_count
from pinlab.kernel.mm.pgtable import PAGE_SIZE
from pinlab.kernel.mm.process_vm_access import process_vm_rw
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.types import MMF_HAS_PINNED, Task
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.state import Kernel, boot
from pinlab.kernel.uaccess import user_access

RW = M.PROT_READ | M.PROT_WRITE
ANON = M.MAP_PRIVATE | M.MAP_ANONYMOUS


def setup(npages: int = 16) -> tuple[Kernel, Task, int]:
    """A 6.1 kernel, a process and `npages` written small anon pages (LRU batch drained)."""
    k = boot("6.1")
    task = P.new_task(k)
    addr = run(P.sys_mmap(k, task, None, npages * PAGE_SIZE, RW, ANON))
    assert run(P.sys_madvise(k, task, addr, npages * PAGE_SIZE, M.MADV_NOHUGEPAGE)) == 0
    for i in range(npages):
        run(user_access(k, task, addr + i * PAGE_SIZE, True, 100 + i))
    run(lru_add_drain(k, task.cpu))
    return k, task, addr


def pins(k: Kernel) -> tuple[int, int]:
    c = k.vmstat.counters
    return c.get(NR_FOLL_PIN_ACQUIRED, 0), c.get(NR_FOLL_PIN_RELEASED, 0)


def frame(k: Kernel, task: Task, addr: int) -> int:
    return compound_head(k.mem, P.pagemap(k, task, addr).pfn)


# ---- io_uring (v6.1 io_uring/rsrc.c, io_uring/io_uring.c) ----


def test_register_twice_is_ebusy_and_unregister_of_nothing_enxio() -> None:
    k, task, addr = setup()
    mm, ring = k.mms[task.mm], io_uring_setup(k)
    assert run(io_uring_register(k, mm, ring, IORING_UNREGISTER_BUFFERS, None)) == -ENXIO
    iov = [(addr, 4 * PAGE_SIZE)]
    assert run(io_uring_register(k, mm, ring, IORING_REGISTER_BUFFERS, iov)) == 0
    assert run(io_uring_register(k, mm, ring, IORING_REGISTER_BUFFERS, iov)) == -errno.EBUSY
    assert pins(k) == (4, 0)
    # a non-NULL arg with UNREGISTER is -EINVAL (io_uring.c __io_uring_register)
    assert run(io_uring_register(k, mm, ring, IORING_UNREGISTER_BUFFERS, iov)) == -errno.EINVAL
    assert run(io_uring_register(k, mm, ring, IORING_UNREGISTER_BUFFERS, None)) == 0
    assert pins(k) == (4, 4)


def test_buffer_validation_errnos() -> None:
    """rsrc.c io_buffer_validate: NULL/0 is a sparse slot (no pins); len 0 or > 1 GiB: EFAULT."""
    k, task, addr = setup()
    mm = k.mms[task.mm]
    for iov, want in [
        ((0, 0), 0),
        ((0, 4096), -errno.EFAULT),
        ((addr, 0), -errno.EFAULT),
        ((addr, SZ_1G + 1), -errno.EFAULT),
    ]:
        ring = io_uring_setup(k)
        assert run(io_uring_register(k, mm, ring, IORING_REGISTER_BUFFERS, [iov])) == want
    assert pins(k) == (0, 0)


def test_second_iovec_failure_unwinds_the_first() -> None:
    """rsrc.c io_sqe_buffers_register: on error every buffer registered so far is unpinned."""
    k, task, addr = setup()
    mm, ring = k.mms[task.mm], io_uring_setup(k)
    ret = run(
        io_uring_register(k, mm, ring, IORING_REGISTER_BUFFERS, [(addr, 2 * PAGE_SIZE), (addr, 0)])
    )
    assert ret == -errno.EFAULT
    assert pins(k) == (2, 2)
    assert run(io_uring_register(k, mm, ring, IORING_UNREGISTER_BUFFERS, None)) == -ENXIO


def test_ring_teardown_waits_for_the_last_fd_and_runs_as_work() -> None:
    """fput runs io_uring_release only for the last reference; it queues io_ring_exit_work.

    The ring's file is in the kernel's file table until then; the ring is in the queued
    work (system_unbound_wq) until the work has run."""
    k, task, addr = setup()
    mm, ring = k.mms[task.mm], io_uring_setup(k)
    assert k.files == {ring.id: ring}
    assert (
        run(io_uring_register(k, mm, ring, IORING_REGISTER_BUFFERS, [(addr, 8 * PAGE_SIZE)])) == 0
    )
    get_file(ring)  # fork's copy of the fd table
    fput(k, ring)
    assert k.system_unbound_wq == [] and pins(k) == (8, 0) and ring.id in k.files
    fput(k, ring)
    assert pins(k) == (8, 0)  # queued, not run: the release is asynchronous
    assert k.files == {} and [w.ctx for w in k.system_unbound_wq] == [ring.ctx]
    run(flush_work(k))
    assert pins(k) == (8, 8) and k.system_unbound_wq == []
    assert run(io_uring_register(k, mm, ring, IORING_REGISTER_BUFFERS, [(addr, 4096)])) == -ENXIO


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 15 * PAGE_SIZE - 1), st.integers(1, 2 * PAGE_SIZE))
def test_pins_per_buffer_are_the_pages_it_spans(off: int, length: int) -> None:
    """rsrc.c io_pin_pages: nr_pages = pages spanned (a 4 KiB buffer off alignment spans two);
    unregister unpins one per bvec, so acquired == released == nr_pages."""
    k, task, addr = setup()
    length = min(length, 16 * PAGE_SIZE - off)
    mm, ring = k.mms[task.mm], io_uring_setup(k)
    base = addr + off
    spanned = (base + length + PAGE_SIZE - 1) // PAGE_SIZE - base // PAGE_SIZE
    assert run(io_uring_register(k, mm, ring, IORING_REGISTER_BUFFERS, [(base, length)])) == 0
    assert pins(k) == (spanned, 0)
    assert mm.flags >> MMF_HAS_PINNED & 1
    assert run(io_uring_register(k, mm, ring, IORING_UNREGISTER_BUFFERS, None)) == 0
    assert pins(k) == (spanned, spanned)


# ---- vmsplice (v6.1 fs/splice.c, fs/pipe.c) ----


def test_each_iovec_is_one_buffer_and_one_plain_reference() -> None:
    k, task, addr = setup()
    mm, page = k.mms[task.mm], frame(k, task, addr)
    before = page_ref_count(k.mem, page)
    pipe = create_pipe(k)
    assert k.files == {pipe.id: pipe}
    assert run(vmsplice(k, mm, pipe, [(addr, 1)] * 10)) == 10
    assert page_ref_count(k.mem, page) == before + 10
    assert len(pipe.bufs) == 10 and pins(k) == (0, 0)
    run(free_pipe_info(k, pipe))
    assert page_ref_count(k.mem, page) == before


def test_references_live_until_both_pipe_ends_are_closed() -> None:
    """fs/pipe.c pipe_release frees the pipe (free_pipe_info: a put per buffer) only when no
    reader and no writer is left; with no reader, add_to_pipe is -EPIPE and drops its page."""
    k, task, addr = setup()
    mm, page = k.mms[task.mm], frame(k, task, addr)
    before = page_ref_count(k.mem, page)
    pipe = create_pipe(k)
    assert run(vmsplice(k, mm, pipe, [(addr, 1)] * 5)) == 5
    run(pipe_release(k, pipe, reader=False))
    assert page_ref_count(k.mem, page) == before + 5 and pipe.id in k.files
    run(pipe_release(k, pipe, reader=True))
    assert page_ref_count(k.mem, page) == before and pipe.bufs == []
    assert pipe.id not in k.files  # freed with its last end
    lonely = Pipe(0, readers=0)
    assert run(vmsplice(k, mm, lonely, [(addr, 1)])) == -EPIPE
    assert page_ref_count(k.mem, page) == before


def test_full_pipe_takes_what_fits_and_drops_the_rest() -> None:
    """add_to_pipe -EAGAIN when full releases that page; iter_to_pipe returns the bytes queued."""
    k, task, addr = setup()
    mm, page = k.mms[task.mm], frame(k, task, addr)
    before = page_ref_count(k.mem, page)
    pipe = create_pipe(k)
    assert run(vmsplice(k, mm, pipe, [(addr, 1)] * (PIPE_DEF_BUFFERS + 4))) == PIPE_DEF_BUFFERS
    assert page_ref_count(k.mem, page) == before + PIPE_DEF_BUFFERS


def test_a_multi_page_iovec_gets_a_buffer_per_page() -> None:
    k, task, addr = setup()
    mm = k.mms[task.mm]
    pipe = create_pipe(k)
    assert run(vmsplice(k, mm, pipe, [(addr + 100, 3 * PAGE_SIZE)])) == 3 * PAGE_SIZE
    assert [(b.offset, b.len) for b in pipe.bufs] == [
        (100, PAGE_SIZE - 100),
        (0, PAGE_SIZE),
        (0, PAGE_SIZE),
        (0, 100),
    ]
    assert [b.page for b in pipe.bufs] == [frame(k, task, addr + i * PAGE_SIZE) for i in range(4)]


def test_pipe_sizes() -> None:
    """fs/pipe.c round_pipe_size / pipe_set_size: powers of two of pages, 0 above 2 GiB."""
    assert round_pipe_size(1) == PAGE_SIZE
    assert round_pipe_size(5000) == 2 * PAGE_SIZE
    assert round_pipe_size(256 * PAGE_SIZE) == 256 * PAGE_SIZE
    assert pipe_set_size(Pipe(0), (1 << 31) + 1) == -errno.EINVAL
    pipe = Pipe(0)
    assert pipe_set_size(pipe, 256 * PAGE_SIZE) == 256 * PAGE_SIZE and pipe.max_usage == 256


def test_unknown_vmsplice_flag_is_einval() -> None:
    """fs/splice.c vmsplice: flags beyond SPLICE_F_ALL."""
    k, task, addr = setup(1)
    assert run(vmsplice(k, k.mms[task.mm], create_pipe(k), [(addr, 1)], 0x10)) == -errno.EINVAL


# ---- O_DIRECT read (v6.1 fs/iomap/direct-io.c, block/bio.c) ----


def test_direct_read_takes_references_not_pins_and_returns_them() -> None:
    k, task, addr = setup()
    mm = k.mms[task.mm]
    file = P.ext4_create(k, 16 * PAGE_SIZE)
    mapping = k.mappings[file.mapping]
    for i in range(16):
        mapping.store[i] = 500 + i
    refs = [page_ref_count(k.mem, frame(k, task, addr + i * PAGE_SIZE)) for i in range(16)]
    assert run(ext4_dio_read(k, mm, mapping, 0, addr, 16 * PAGE_SIZE)) == 16 * PAGE_SIZE
    assert pins(k) == (0, 0)
    after = [page_ref_count(k.mem, frame(k, task, addr + i * PAGE_SIZE)) for i in range(16)]
    assert after == refs
    assert [run(user_access(k, task, addr + i * PAGE_SIZE, False)) for i in range(16)] == [
        500 + i for i in range(16)
    ]


def test_direct_read_alignment_and_eof() -> None:
    """iomap_dio_bio_iter: 512-byte logical blocks; a read at or past i_size returns 0,
    one crossing it reports only the bytes up to i_size (iomap_dio_complete)."""
    k, task, addr = setup()
    mm = k.mms[task.mm]
    mapping = k.mappings[P.ext4_create(k, 8 * PAGE_SIZE).mapping]
    assert run(ext4_dio_read(k, mm, mapping, 0, addr + 1, PAGE_SIZE)) == -errno.EINVAL
    assert run(ext4_dio_read(k, mm, mapping, 0, addr, 100)) == -errno.EINVAL
    assert run(ext4_dio_read(k, mm, mapping, 8 * PAGE_SIZE, addr, PAGE_SIZE)) == 0
    assert run(ext4_dio_read(k, mm, mapping, 6 * PAGE_SIZE, addr, 4 * PAGE_SIZE)) == 2 * PAGE_SIZE


# ---- process_vm_readv (v6.1 mm/process_vm_access.c) ----


def test_process_vm_readv_pins_copies_and_unpins() -> None:
    k, task, addr = setup(32)
    src, dst = addr, addr + 16 * PAGE_SIZE
    n = run(
        process_vm_rw(k, task, task, [(dst, 16 * PAGE_SIZE)], [(src, 16 * PAGE_SIZE)], 0, False)
    )
    assert n == 16 * PAGE_SIZE
    assert pins(k) == (16, 16)
    assert k.mms[task.mm].flags >> MMF_HAS_PINNED & 1
    assert [run(user_access(k, task, dst + i * PAGE_SIZE, False)) for i in range(16)] == [
        100 + i for i in range(16)
    ]


def test_process_vm_readv_errors() -> None:
    """Unmapped remote range: -EFAULT (pin of the first page fails); flags != 0: -EINVAL."""
    k, task, addr = setup()
    hole = addr + 64 * PAGE_SIZE
    assert (
        run(process_vm_rw(k, task, task, [(addr, PAGE_SIZE)], [(hole, PAGE_SIZE)], 0, False))
        == -errno.EFAULT
    )
    assert (
        run(process_vm_rw(k, task, task, [(addr, PAGE_SIZE)], [(addr, PAGE_SIZE)], 1, False))
        == -errno.EINVAL
    )
    assert pins(k) == (0, 0)
