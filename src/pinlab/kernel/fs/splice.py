"""vmsplice(2) into a pipe: one pipe buffer and one plain reference per page (v6.1 fs/splice.c).

Also the page-getting step shared with direct I/O, iov_iter_get_pages2 (v6.1
lib/iov_iter.c).  Pipes are those of a root caller (CAP_SYS_RESOURCE): the
per-user pipe page limits of v6.1 fs/pipe.c never bite.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pinlab.interleave import Yield
from pinlab.kernel.errno import EAGAIN, EBUSY, EINVAL, EPIPE
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import get_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import put_page_api
from pinlab.kernel.mm.pgtable import PAGE_SHIFT, PAGE_SIZE
from pinlab.kernel.mm.types import MmStruct

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# v6.1 include/linux/pipe_fs_i.h PIPE_DEF_BUFFERS
PIPE_DEF_BUFFERS = 16
# v6.1 include/uapi/linux/uio.h UIO_MAXIOV: import_iovec's segment limit
UIO_MAXIOV = 1024
# v6.1 include/linux/splice.h SPLICE_F_* (all the flags vmsplice accepts)
SPLICE_F_MOVE = 0x01
SPLICE_F_NONBLOCK = 0x02
SPLICE_F_MORE = 0x04
SPLICE_F_GIFT = 0x08
SPLICE_F_ALL = SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT
# v6.1 fs/splice.c iter_to_pipe: at most 16 pages per iov_iter_get_pages2 call
ITER_TO_PIPE_BATCH = 16


@dataclass(slots=True)
class PipeBuffer:
    """v6.1 include/linux/pipe_fs_i.h struct pipe_buffer with user_page_pipe_buf_ops."""

    page: int
    offset: int
    len: int


@dataclass(slots=True)
class Pipe:
    """v6.1 include/linux/pipe_fs_i.h struct pipe_inode_info: buffers in ring order.

    Both ends of the pipe are one entry of k.files, keyed by `id`, counting its open
    read and write ends.
    """

    id: int
    bufs: list[PipeBuffer] = field(default_factory=list)
    max_usage: int = PIPE_DEF_BUFFERS
    readers: int = 1
    writers: int = 1


def create_pipe(k: Kernel) -> Pipe:
    """v6.1 fs/pipe.c do_pipe2 -> create_pipe_files: a new pipe, one read and one write end.

    Its entry in k.files stands for both files; its id for both fds.
    """
    from pinlab.kernel.state import new_id

    pipe = Pipe(new_id(k))
    k.files[pipe.id] = pipe
    return pipe


def pipe_file(k: Kernel, fid: int) -> Pipe:
    """The open pipe `fid` (v6.1 fs/splice.c vmsplice: fdget and get_pipe_info)."""
    pipe = k.files.get(fid)
    if not isinstance(pipe, Pipe):
        raise KeyError(f"file {fid} is not an open pipe")
    return pipe


def round_pipe_size(size: int) -> int:
    """v6.1 fs/pipe.c round_pipe_size: a power of two of at least a page; 0 above 2 GiB."""
    if size > 1 << 31:
        return 0
    if size < PAGE_SIZE:
        return PAGE_SIZE
    return 1 << (size - 1).bit_length()


def pipe_set_size(pipe: Pipe, arg: int) -> int:
    """v6.1 fs/pipe.c pipe_set_size (F_SETPIPE_SZ) for root: the new capacity in bytes or -errno."""
    nr_slots = round_pipe_size(arg) >> PAGE_SHIFT
    if not nr_slots:
        return -EINVAL
    # v6.1 fs/pipe.c pipe_resize_ring: the buffers in use must fit
    if nr_slots < len(pipe.bufs):
        return -EBUSY
    pipe.max_usage = nr_slots
    return pipe.max_usage * PAGE_SIZE


@dataclass(slots=True)
class IovIter:
    """v6.1 include/linux/uio.h struct iov_iter over user iovecs: position, bytes left."""

    iov: list[tuple[int, int]]
    dest: bool
    seg: int = 0
    iov_offset: int = 0
    count: int = field(init=False)

    def __post_init__(self) -> None:
        self.count = sum(length for _, length in self.iov)

    def advance(self, nbytes: int) -> None:
        """v6.1 lib/iov_iter.c iov_iter_advance."""
        self.count -= nbytes
        while nbytes:
            room = self.iov[self.seg][1] - self.iov_offset
            step = min(room, nbytes)
            self.iov_offset += step
            nbytes -= step
            if self.iov_offset == self.iov[self.seg][1]:
                self.seg += 1
                self.iov_offset = 0

    def revert(self, nbytes: int) -> None:
        """v6.1 lib/iov_iter.c iov_iter_revert."""
        self.count += nbytes
        while nbytes:
            if self.iov_offset == 0:
                self.seg -= 1
                self.iov_offset = self.iov[self.seg][1]
            step = min(nbytes, self.iov_offset)
            self.iov_offset -= step
            nbytes -= step


def iov_iter_get_pages2(
    k: Kernel, mm: MmStruct, it: IovIter, maxsize: int, maxpages: int
) -> Generator[Yield, None, tuple[int, list[int], int]]:
    """v6.1 lib/iov_iter.c iov_iter_get_pages2: pages of the first non-empty segment only.

    Returns (bytes or -errno, pages, offset in the first page); FOLL_WRITE for
    a destination iterator; the iterator advances past what was got.
    """
    maxsize = min(maxsize, it.count)
    if not maxsize:
        return 0, [], 0
    while it.iov[it.seg][1] - it.iov_offset == 0:
        it.seg += 1
    base, length = it.iov[it.seg]
    maxsize = min(maxsize, length - it.iov_offset)
    addr = base + it.iov_offset
    start = addr % PAGE_SIZE
    addr -= start
    n = min(maxpages, (maxsize + start + PAGE_SIZE - 1) >> PAGE_SHIFT)
    pages = page_array(n)
    res = yield from get_user_pages_fast(k, mm, addr, n, FOLL_WRITE if it.dest else 0, pages)
    if res <= 0:
        return res, [], start
    maxsize = min(maxsize, res * PAGE_SIZE - start)
    it.advance(maxsize)
    return maxsize, [int(p) for p in pages[:res].tolist()], start


def pipe_buf_release(k: Kernel, buf: PipeBuffer) -> Generator[Yield, None, None]:
    """v6.1 fs/splice.c user_page_pipe_buf_ops.release (generic_pipe_buf_release): put_page."""
    yield from put_page_api(k, buf.page)


def add_to_pipe(k: Kernel, pipe: Pipe, buf: PipeBuffer) -> Generator[Yield, None, int]:
    """v6.1 fs/splice.c add_to_pipe: queue the buffer, or release it (-EPIPE, -EAGAIN when full).

    SIGPIPE to the caller is not modelled.
    """
    if not pipe.readers:
        yield from pipe_buf_release(k, buf)
        return -EPIPE
    if len(pipe.bufs) >= pipe.max_usage:
        yield from pipe_buf_release(k, buf)
        return -EAGAIN
    pipe.bufs.append(buf)
    return buf.len


def iter_to_pipe(k: Kernel, mm: MmStruct, it: IovIter, pipe: Pipe) -> Generator[Yield, None, int]:
    """v6.1 fs/splice.c iter_to_pipe: one buffer (one page reference) per page per segment."""
    total = 0
    ret = 0
    while it.count:
        left, pages, start = yield from iov_iter_get_pages2(
            k, mm, it, (1 << 64) - 1, ITER_TO_PIPE_BATCH
        )
        if left <= 0:
            ret = left
            break
        for i, page in enumerate(pages):
            size = min(left, PAGE_SIZE - start)
            ret = yield from add_to_pipe(k, pipe, PipeBuffer(page, start, size))
            if ret < 0:
                for rest in pages[i + 1 :]:
                    yield from put_page_api(k, rest)
                return total if total else ret
            total += ret
            left -= size
            start = 0
    return total if total else ret


def vmsplice(
    k: Kernel, mm: MmStruct, pipe: Pipe, iov: list[tuple[int, int]], flags: int = 0
) -> Generator[Yield, None, int]:
    """v6.1 fs/splice.c vmsplice into a pipe's write end (vmsplice_to_pipe): bytes or -errno.

    A full pipe would block; only SPLICE_F_NONBLOCK's -EAGAIN is modelled.
    """
    if flags & ~SPLICE_F_ALL:
        return -EINVAL
    if len(iov) > UIO_MAXIOV:
        return -EINVAL
    it = IovIter(list(iov), dest=False)
    if not it.count:
        return 0
    # v6.1 fs/splice.c wait_for_space
    if len(pipe.bufs) >= pipe.max_usage:
        if flags & SPLICE_F_NONBLOCK:
            return -EAGAIN
        raise RuntimeError("vmsplice would block on a full pipe: no reader is modelled")
    return (yield from iter_to_pipe(k, mm, it, pipe))


def free_pipe_info(k: Kernel, pipe: Pipe) -> Generator[Yield, None, None]:
    """v6.1 fs/pipe.c free_pipe_info: release every buffer still queued."""
    for buf in pipe.bufs:
        yield from pipe_buf_release(k, buf)
    pipe.bufs = []


def pipe_release(k: Kernel, pipe: Pipe, reader: bool) -> Generator[Yield, None, None]:
    """v6.1 fs/pipe.c pipe_release: close one end; the pipe is freed when both are closed.

    The freed pipe leaves k.files.
    """
    if reader:
        pipe.readers -= 1
    else:
        pipe.writers -= 1
    if not pipe.readers and not pipe.writers:
        yield from free_pipe_info(k, pipe)
        del k.files[pipe.id]
