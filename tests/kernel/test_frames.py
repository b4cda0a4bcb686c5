"""Every kernel generator can be suspended at any yield and restored from its frames.

The race explorer keys a state on the frozen locals of each suspended frame
(pinlab.explore.canon) and snapshots a thread as each frame's function, yield index
and locals (pinlab.explore.resume capture / pack / rebuild).  So no live local of a
kernel generator may be a module, a lambda, a closure or a bound method, nor anything
else canon.freeze refuses; the world (the Kernel) is the exception, and so is any
object it holds, which the explorer keys by reference (canon.freeze's ``refs``).
:func:`walk_frames` steps a generator alone to completion and checks that at every
suspension; the table drives it through a broad set of kernel operations, each run
as written and in its resumable form, whose every suspension must also be captured,
copied and rebuilt into a generator that yields the same again.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Callable, Generator, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pinlab.explore.canon import Unfreezable, freeze
from pinlab.explore.resume import capture, pack, rebuild, resumable, unpack
from pinlab.explore.resume_ast import CONTROL
from pinlab.interleave import Await, Unmodelled, Violation, Yield, run_to_completion
from pinlab.kernel import process as P
from pinlab.kernel.fs import (
    File,
    vfs_fsync,
    vfs_write,
    vm_fault_page,
    write_begin,
    write_end,
    writepages,
)
from pinlab.kernel.fs.direct_io import ext4_dio_read, ext4_dio_write
from pinlab.kernel.fs.splice import create_pipe, pipe_release, vmsplice
from pinlab.kernel.io_uring.ring import (
    IORING_REGISTER_BUFFERS,
    IORING_UNREGISTER_BUFFERS,
    io_uring_register,
    io_uring_setup,
)
from pinlab.kernel.mm.gup import (
    get_user_pages,
    page_array,
    pin_user_pages,
    pin_user_pages_remote,
    pin_user_pages_unlocked,
)
from pinlab.kernel.mm.gup_fast import get_user_pages_fast, pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_FORCE, FOLL_LONGTERM, FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import put_page_api, unpin_user_pages, unpin_user_pages_dirty_lock
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.mm.page_writeback import (
    WB_SYNC_ALL,
    WB_SYNC_NONE,
    WritebackControl,
    filemap_fdatawrite_wbc,
)
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE
from pinlab.kernel.mm.process_vm_access import process_vm_rw
from pinlab.kernel.mm.swap import lru_add_drain
from pinlab.kernel.mm.truncate import truncate_setsize
from pinlab.kernel.mm.types import Task
from pinlab.kernel.state import BootParams, Kernel, boot, kernel_digest
from pinlab.kernel.uaccess import user_access

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
_SCALARS = (int, str, bytes, float, bool, type(None))

# ---------------------------------------------------------------------------------------
# the checker


Refs = dict[int, Hashable]


def world_refs(world: object) -> Refs:
    """The world and every object it holds (through dataclass fields, dicts, lists and
    tuples) by identity: its path from the world, as the explorer keys them."""
    refs: Refs = {}
    todo: list[tuple[object, tuple[Hashable, ...]]] = [] if world is None else [(world, ())]
    while todo:
        v, path = todo.pop()
        if type(v) in _SCALARS or id(v) in refs:
            continue
        refs[id(v)] = path
        if isinstance(v, dict):
            todo += [(x, (*path, key)) for key, x in v.items()]
        elif isinstance(v, list | tuple):
            todo += [(x, (*path, i)) for i, x in enumerate(v)]
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            todo += [(getattr(v, f.name), (*path, f.name)) for f in dataclasses.fields(v)]
    return refs


def _code_problem(value: object, refs: Refs, seen: set[int]) -> str | None:
    """A module, lambda, closure, bound method or nested function inside `value`, if any.

    Containers and dataclasses are searched; the world's objects (`refs`) are not entered.
    """
    if type(value) in _SCALARS or id(value) in refs or id(value) in seen:
        return None
    seen.add(id(value))
    if isinstance(value, types.ModuleType):
        return f"a module ({value.__name__})"
    if isinstance(value, types.MethodType | types.MethodWrapperType) or (
        isinstance(value, types.BuiltinMethodType)
        and not isinstance(value.__self__, types.ModuleType | type(None))
    ):
        return f"a bound method ({value.__qualname__})"
    if isinstance(value, types.FunctionType):
        if value.__name__ == "<lambda>":
            return f"a lambda ({value.__qualname__})"
        if "<locals>" in value.__qualname__ or value.__closure__:
            return f"a closure ({value.__qualname__})"
        if getattr(sys.modules.get(value.__module__), value.__qualname__, None) is not value:
            return f"a function not reachable by its name ({value.__qualname__})"
        return None
    children: list[tuple[str, object]]
    if isinstance(value, list | tuple | set | frozenset):
        children = [(f"[{i}]", x) for i, x in enumerate(value)]
    elif isinstance(value, dict):
        children = [(f"[{key!r}]", x) for key, x in value.items()]
        children += [("(a key)", key) for key in value]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = [(f".{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
    else:
        return None
    for where, child in children:
        bad = _code_problem(child, refs, seen)
        if bad is not None:
            return f"{where} {bad}" if bad.startswith(("[", ".", "(")) else f"{where}: {bad}"
    return None


def local_problem(value: object, refs: Refs | None = None) -> str | None:
    """Why a suspended kernel frame may not hold `value` as a local, or None if it may.

    `refs` (:func:`world_refs`) are the world's objects, which a local may refer to.
    """
    refs = refs or {}
    if type(value) in _SCALARS or id(value) in refs:
        return None
    bad = _code_problem(value, refs, set())
    if bad is not None:
        return bad
    try:
        freeze(value, refs)
    except Unfreezable as err:
        return f"refused by canon.freeze:{err}"
    return None


def chain_frames(gen: Any) -> Iterator[types.FrameType]:
    """The frames of a suspended generator: its own, then each it delegates to by yield from."""
    while gen is not None:
        frame = getattr(gen, "gi_frame", None)
        if frame is None:
            return
        yield frame
        gen = getattr(gen, "gi_yieldfrom", None)


def frame_problems(gen: Any, world: object = None) -> list[str]:
    """Every local of every frame of `gen`'s chain that breaks the rule, as function:line."""
    out: list[str] = []
    refs = world_refs(world)
    for frame in chain_frames(gen):
        where = f"{frame.f_code.co_qualname}:{frame.f_lineno}"
        for name, value in frame.f_locals.items():
            if name in CONTROL:
                continue  # the resumable form's own bookkeeping, not in any state key
            why = local_problem(value, refs)
            if why is not None:
                out.append(f"{where}: local {name!r} is {why}")
    return out


def _same_yield(a: Yield, b: Yield) -> bool:
    if isinstance(a, Await) and isinstance(b, Await):
        same = (a.label, a.reads, a.writes) == (b.label, b.reads, b.writes)
        return same and a.ready() == b.ready()
    return a == b


@dataclass(slots=True)
class Walk:
    """What :func:`walk_frames` saw: the result, the suspensions, the functions suspended in."""

    result: object
    steps: int = 0
    functions: set[str] = field(default_factory=set)


def _check_restore(gen: Any, world: object, body: Callable[..., Any], value: Yield) -> None:
    """As snapshots.take and restore do: capture, pack, unpack and rebuild; same yield again."""
    chain = capture(gen, body)
    _, copied = unpack(pack((world, chain)))
    again = rebuild(copied)
    try:
        got = next(again)
    finally:
        again.close()
    assert _same_yield(got, value), f"rebuilt at {value!r}, it yields {got!r}"


def walk_frames(
    gen: Generator[Yield, None, Any], world: object = None, body: Callable[..., Any] | None = None
) -> Walk:
    """Drive `gen` alone to completion, next() at every yield, checking each suspension.

    At each one every local of every frame in the chain (gen.gi_frame, then gi_yieldfrom
    repeatedly) must pass :func:`local_problem`; the world and what it holds may appear
    anywhere.  With `body`, `gen` must have been started as ``resumable(body)(...)``,
    and each suspension must also be captured (resume.capture), copied with the world
    (resume.pack / unpack) and rebuilt (resume.rebuild) into a generator whose first
    yield is the same.  An Await that is not ready is a self-deadlock, as in
    run_to_completion.  Exceptions from `gen` propagate.
    """
    walk = Walk(None)
    try:
        value = next(gen)
        while True:
            walk.steps += 1
            walk.functions.update(f.f_code.co_qualname for f in chain_frames(gen))
            problems = frame_problems(gen, world)
            if problems:
                pytest.fail(f"suspended at {value!r}:\n  " + "\n  ".join(problems))
            if body is not None:
                _check_restore(gen, world, body, value)
            if isinstance(value, Await) and not value.ready():
                raise Violation("deadlock", f"blocked alone at {value.label}")
            value = gen.send(None)
    except StopIteration as stop:
        walk.result = stop.value
    return walk


# ---------------------------------------------------------------------------------------
# set-up: the state an operation starts from, built by running the model's syscalls


def run(gen: Generator[Yield, None, Any]) -> Any:
    return run_to_completion(gen)


def mmap(
    k: Kernel, task: Task, size: int, flags: int = ANON, file: File | None = None, prot: int = RW
) -> int:
    addr = run(P.sys_mmap(k, task, None, size, prot, flags, file))
    assert addr > 0, addr
    return int(addr)


def touch(k: Kernel, task: Task, addr: int, size: int, write: bool = True) -> None:
    for off in range(0, size, PAGE_SIZE):
        run(user_access(k, task, addr + off, write, 1))


def filled(k: Kernel, kind: str, size: int) -> File:
    """A file of `size` zero bytes written with write(2), then fsync(2) (ops.c fill_file)."""
    create = {"tmpfs": P.tmpfs_create, "ramfs": P.ramfs_create, "ext4": P.ext4_create}[kind]
    f = create(k, 0)
    assert run(vfs_write(k, f, 0, size, 0)) == size
    assert run(vfs_fsync(k, f)) == 0
    return f


def aligned(addr: int) -> int:
    return (addr + PMD_SIZE - 1) & ~(PMD_SIZE - 1)


def pinned(k: Kernel, task: Task, addr: int, n: int, flags: int = FOLL_WRITE) -> list[int]:
    pages = page_array(n)
    assert run(pin_user_pages_fast(k, k.mms[task.mm], addr, n, flags, pages)) == n
    return [int(p) for p in pages[:n]]


# ---------------------------------------------------------------------------------------
# operations: module-level generator functions, walked like the kernel's own


def touch_pages(
    k: Kernel, task: Task, addr: int, n: int, write: bool
) -> Generator[Yield, None, int]:
    """A load or store to each of `n` pages (faults, COW, zero page, fault-around)."""
    total = 0
    for i in range(n):
        total += yield from user_access(k, task, addr + i * PAGE_SIZE, write, i + 1)
    return total


def read_then_write(k: Kernel, task: Task, addr: int) -> Generator[Yield, None, int]:
    """A load (zero page / read fault), then a store (write-protect fault, COW)."""
    yield from user_access(k, task, addr, False)
    return (yield from user_access(k, task, addr, True, 5))


def pin_unpin(
    k: Kernel, task: Task, addr: int, n: int, flags: int, dirty: bool
) -> Generator[Yield, None, int]:
    """pin_user_pages under mmap_read_lock (faulting in what is missing), then unpin."""
    mm = k.mms[task.mm]
    pages = page_array(n)
    yield from mmap_read_lock(k, mm)
    got = yield from pin_user_pages(k, mm, addr, n, flags, pages)
    mmap_read_unlock(k, mm)
    if got > 0:
        yield from unpin_user_pages_dirty_lock(k, pages, got, dirty)
    return got


def pin_fast_unpin(
    k: Kernel, task: Task, addr: int, n: int, flags: int
) -> Generator[Yield, None, int]:
    """pin_user_pages_fast (its slow path if the tables lack the pages), then unpin."""
    pages = page_array(n)
    got = yield from pin_user_pages_fast(k, k.mms[task.mm], addr, n, flags, pages)
    if got > 0:
        yield from unpin_user_pages(k, pages, got)
    return got


def gup_put(
    k: Kernel, task: Task, addr: int, n: int, flags: int, fast: bool
) -> Generator[Yield, None, int]:
    """get_user_pages(_fast): FOLL_GET references, dropped with put_page."""
    mm = k.mms[task.mm]
    pages = page_array(n)
    if fast:
        got = yield from get_user_pages_fast(k, mm, addr, n, flags, pages)
    else:
        yield from mmap_read_lock(k, mm)
        got = yield from get_user_pages(k, mm, addr, n, flags, pages)
        mmap_read_unlock(k, mm)
    for i in range(max(got, 0)):
        yield from put_page_api(k, int(pages[i]))
    return got


def pin_remote_unlocked(k: Kernel, task: Task, addr: int, n: int) -> Generator[Yield, None, int]:
    """pin_user_pages_remote (may drop mmap_lock) and pin_user_pages_unlocked."""
    mm = k.mms[task.mm]
    pages = page_array(n)
    yield from mmap_read_lock(k, mm)
    got = yield from pin_user_pages_remote(k, mm, addr, n, FOLL_WRITE, pages)
    mmap_read_unlock(k, mm)
    yield from unpin_user_pages(k, pages, max(got, 0))
    more = yield from pin_user_pages_unlocked(k, mm, addr, n, pages, FOLL_WRITE)
    yield from unpin_user_pages(k, pages, max(more, 0))
    return got + more


def fork_then_write(k: Kernel, task: Task, addr: int, n: int) -> Generator[Yield, None, int]:
    """fork(2), then both parent and child store to every page (COW either way)."""
    pid = yield from P.sys_fork(k, task)
    assert pid > 0
    child = k.tasks[pid]
    yield from touch_pages(k, task, addr, n, True)
    yield from touch_pages(k, child, addr, n, True)
    yield from P.sys_exit(k, child)
    return pid


def write_sync(k: Kernel, file: File, pos: int, count: int) -> Generator[Yield, None, int]:
    """write(2) (write_begin / write_end), then fsync(2) (writepages, wait on writeback)."""
    wrote = yield from vfs_write(k, file, pos, count, 7)
    ret = yield from vfs_fsync(k, file)
    return wrote if ret == 0 else ret


def writeback_none(k: Kernel, file: File) -> Generator[Yield, None, int]:
    """WB_SYNC_NONE writeback (write_cache_pages by the DIRTY mark), then WB_SYNC_ALL."""
    mapping = k.mappings[file.mapping]
    ret = yield from filemap_fdatawrite_wbc(k, mapping, WritebackControl(WB_SYNC_NONE), 0)
    ret2 = yield from filemap_fdatawrite_wbc(k, mapping, WritebackControl(WB_SYNC_ALL), 0)
    return ret or ret2


def store_then_fsync(
    k: Kernel, task: Task, addr: int, n: int, file: File
) -> Generator[Yield, None, int]:
    """Stores through a shared file mapping (page_mkwrite), then fsync(2) (folio_mkclean)."""
    yield from touch_pages(k, task, addr, n, True)
    return (yield from vfs_fsync(k, file))


def truncate(k: Kernel, file: File, size: int) -> Generator[Yield, None, int]:
    """truncate(2) to `size`: unmap the tail, drop its cached folios."""
    return (yield from truncate_setsize(k, k.mappings[file.mapping], size))


def odirect(
    k: Kernel, task: Task, file: File, buf: int, length: int
) -> Generator[Yield, None, int]:
    """O_DIRECT pwrite(2) from, then pread(2) into, a user buffer (FOLL_GET bios)."""
    mm = k.mms[task.mm]
    mapping = k.mappings[file.mapping]
    wrote = yield from ext4_dio_write(k, mm, mapping, 0, buf, length)
    read = yield from ext4_dio_read(k, mm, mapping, 0, buf, length)
    return wrote + read


def uring(k: Kernel, task: Task, addr: int, length: int) -> Generator[Yield, None, int]:
    """IORING_REGISTER_BUFFERS of one iovec (FOLL_LONGTERM pins), then unregister."""
    mm = k.mms[task.mm]
    ring = io_uring_setup(k)
    ret = yield from io_uring_register(k, mm, ring, IORING_REGISTER_BUFFERS, [(addr, length)])
    ret2 = yield from io_uring_register(k, mm, ring, IORING_UNREGISTER_BUFFERS, None)
    return ret or ret2


def splice_pages(k: Kernel, task: Task, addr: int, n: int) -> Generator[Yield, None, int]:
    """vmsplice(2) of `n` one-byte iovecs into a pipe (FOLL_GET), then close both ends."""
    pipe = create_pipe(k)
    got = yield from vmsplice(
        k, k.mms[task.mm], pipe, [(addr + i * PAGE_SIZE, 1) for i in range(n)]
    )
    yield from pipe_release(k, pipe, True)
    yield from pipe_release(k, pipe, False)
    return got


def vm_rw(k: Kernel, task: Task, src: int, dst: int, length: int) -> Generator[Yield, None, int]:
    """process_vm_readv(2) on itself (short FOLL_PIN pins, dirtied on release)."""
    return (yield from process_vm_rw(k, task, task, [(dst, length)], [(src, length)], 0, False))


def madvise_round(k: Kernel, task: Task, addr: int, size: int) -> Generator[Yield, None, int]:
    """MADV_POPULATE_WRITE, MADV_POPULATE_READ, MADV_DONTNEED, then a drain of the LRU batch."""
    a = yield from P.sys_madvise(k, task, addr, size, MADV_POPULATE_WRITE)
    b = yield from P.sys_madvise(k, task, addr, size, MADV_POPULATE_READ)
    c = yield from P.sys_madvise(k, task, addr, size, MADV_DONTNEED)
    yield from lru_add_drain(k, task.cpu)
    return a or b or c


def mprotect_round(k: Kernel, task: Task, addr: int, size: int) -> Generator[Yield, None, int]:
    """mprotect(2) read-only (write-protect), half back to read-write, and a store there."""
    a = yield from P.sys_mprotect(k, task, addr, size, PROT_READ)
    b = yield from P.sys_mprotect(k, task, addr, size // 2, RW)
    yield from user_access(k, task, addr, True, 3)
    return a or b


def munmap_all(k: Kernel, task: Task, addr: int, size: int) -> Generator[Yield, None, int]:
    """munmap(2) of faulted (and partly pinned) pages; then exit(2)."""
    ret = yield from P.sys_munmap(k, task, addr, size)
    yield from P.sys_exit(k, task)
    return ret


# ---------------------------------------------------------------------------------------
# design hooks: module-level functions in the world (k.hooks), held by the gup frames


def _gup_page(k: Kernel, vma: Any, page: int, flags: int) -> int:
    return 0


def _pin_record(k: Kernel, folio: int, refs: int) -> bool:
    return True


def _pin_release(k: Kernel, folio: int, refs: int) -> None:
    return None


# ---------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class Row:
    """One operation: `setup(k)` builds the state and returns the arguments after `k`."""

    name: str
    setup: Callable[[Kernel], tuple[Any, ...]]
    op: Callable[..., Generator[Yield, None, Any]]
    through: tuple[str, ...] = ()  # functions the walk must suspend in
    profile: str = "6.1"
    params: BootParams | None = None
    unmodelled: str | None = None  # the kernel function that must raise Unmodelled


def _anon(k: Kernel, pages: int = 4, faulted: bool = False) -> tuple[Task, int]:
    task = P.new_task(k)
    addr = mmap(k, task, pages * PAGE_SIZE)
    if faulted:
        touch(k, task, addr, pages * PAGE_SIZE)
    return task, addr


def _thp(k: Kernel, faulted: bool = True) -> tuple[Task, int]:
    task = P.new_task(k)
    addr = aligned(mmap(k, task, 2 * PMD_SIZE))
    if faulted:
        touch(k, task, addr, PAGE_SIZE)
    return task, addr


def _hugetlb(k: Kernel, faulted: bool) -> tuple[Task, int]:
    task = P.new_task(k)
    addr = mmap(k, task, PMD_SIZE, ANON | MAP_HUGETLB)
    if faulted:
        touch(k, task, addr, PAGE_SIZE)
    return task, addr


def _shared_file(k: Kernel, kind: str, pages: int, faulted: bool) -> tuple[Task, int, File]:
    task = P.new_task(k)
    f = filled(k, kind, pages * PAGE_SIZE)
    addr = mmap(k, task, pages * PAGE_SIZE, MAP_SHARED, f)
    if faulted:
        touch(k, task, addr, pages * PAGE_SIZE)
    return task, addr, f


def _uncached_ext4(k: Kernel) -> tuple[Task, int]:
    """A shared mapping of an ext4 file with blocks (zeroes) but nothing in its page cache."""
    task = P.new_task(k)
    f = P.ext4_create(k, 0)
    k.mappings[f.mapping].i_size = 2 * PAGE_SIZE
    return task, mmap(k, task, 2 * PAGE_SIZE, MAP_SHARED, f)


def _private_file(k: Kernel, kind: str, pages: int, prot: int = RW) -> tuple[Task, int]:
    task = P.new_task(k)
    f = filled(k, kind, pages * PAGE_SIZE)
    return task, mmap(k, task, pages * PAGE_SIZE, MAP_PRIVATE, f, prot)


def _hooked(k: Kernel) -> tuple[Any, ...]:
    task, addr = _anon(k, 3, faulted=True)
    k.hooks.gup_page = _gup_page
    k.hooks.pin_record = _pin_record
    k.hooks.pin_release = _pin_release
    return task, addr, 3, FOLL_WRITE, False


def _pinned_fork(k: Kernel) -> tuple[Any, ...]:
    task, addr = _anon(k, 3, faulted=True)
    pinned(k, task, addr, 1)
    return task, addr, 3


def _pinned_ext4(k: Kernel) -> tuple[Any, ...]:
    task, addr, f = _shared_file(k, "ext4", 3, faulted=False)
    return task, addr, 3, f


def _dirty_ext4(k: Kernel) -> tuple[Any, ...]:
    task, addr, f = _shared_file(k, "ext4", 3, faulted=True)
    pinned(k, task, addr, 1)
    return (f,)


def _truncated(kind: str) -> Callable[[Kernel], tuple[Any, ...]]:
    def setup(k: Kernel) -> tuple[Any, ...]:
        task, addr, f = _shared_file(k, kind, 4, faulted=True)
        pinned(k, task, addr + 3 * PAGE_SIZE, 1)
        return f, PAGE_SIZE

    return setup


def _dio(k: Kernel) -> tuple[Any, ...]:
    task, buf = _anon(k, 2)
    f = P.ext4_create(k, 0)
    k.mappings[f.mapping].i_size = 2 * PAGE_SIZE
    return task, f, buf, 2 * PAGE_SIZE


def _dax_write(k: Kernel) -> tuple[Any, ...]:
    return P.ext4_create(k, PAGE_SIZE, dax=True), 0, PAGE_SIZE


def _dax_fault(k: Kernel) -> tuple[Any, ...]:
    f = P.ext4_create(k, PAGE_SIZE, dax=True)
    return k.mappings[f.mapping], 0, 0


def _hugetlbfs_write_begin(k: Kernel) -> tuple[Any, ...]:
    f = P.hugetlbfs_create(k, PMD_SIZE)
    return k.mappings[f.mapping], 0, PAGE_SIZE, 0


def _hugetlbfs_write_end(k: Kernel) -> tuple[Any, ...]:
    f = P.hugetlbfs_create(k, PMD_SIZE)
    return k.mappings[f.mapping], 0, PAGE_SIZE, PAGE_SIZE, 1


def _tmpfs_writepages(k: Kernel) -> tuple[Any, ...]:
    f = filled(k, "tmpfs", PAGE_SIZE)
    return k.mappings[f.mapping], WritebackControl(WB_SYNC_ALL), 0


def _munmapped(k: Kernel) -> tuple[Any, ...]:
    task, addr = _thp(k)
    touch(k, task, addr + PMD_SIZE, 2 * PAGE_SIZE)
    pinned(k, task, addr, 1)
    return task, addr, 2 * PMD_SIZE


def _madvised(k: Kernel) -> tuple[Any, ...]:
    task, addr = _thp(k, faulted=False)
    assert run(P.sys_madvise(k, task, addr, PMD_SIZE, MADV_HUGEPAGE)) == 0
    return task, addr, PMD_SIZE + 4 * PAGE_SIZE


def _two_regions(k: Kernel) -> tuple[Any, ...]:
    task, src = _anon(k, 2, faulted=True)
    dst = mmap(k, task, 2 * PAGE_SIZE)
    return task, src, dst, 2 * PAGE_SIZE


HUGE = BootParams(hugepages_2m=2)
ROWS = [
    Row(
        "anon write fault",
        lambda k: (*_anon(k), 4, True),
        touch_pages,
        ("do_anonymous_page", "__handle_mm_fault"),
    ),
    Row("anon zero page then COW", lambda k: _anon(k)[:2], read_then_write, ("do_wp_page",)),
    Row(
        "THP write fault",
        lambda k: (*_thp(k, faulted=False), 2, True),
        touch_pages,
        ("do_huge_pmd_anonymous_page",),
    ),
    Row(
        "hugetlb fault",
        lambda k: (*_hugetlb(k, False), 2, True),
        touch_pages,
        ("hugetlb_fault",),
        params=HUGE,
    ),
    Row(
        "tmpfs shared write fault",
        lambda k: (*_shared_file(k, "tmpfs", 2, False)[:2], 2, True),
        touch_pages,
        ("vm_fault_page", "shmem_fault", "do_shared_fault"),
    ),
    Row(
        "ramfs shared write fault",
        lambda k: (*_shared_file(k, "ramfs", 2, False)[:2], 2, True),
        touch_pages,
        ("do_page_mkwrite", "filemap_page_mkwrite"),
    ),
    Row(
        "ext4 shared write fault",
        lambda k: (*_shared_file(k, "ext4", 2, False)[:2], 2, True),
        touch_pages,
        ("do_page_mkwrite", "ext4_page_mkwrite"),
    ),
    Row(
        "ext4 read fault (fault-around)",
        lambda k: (*_shared_file(k, "ext4", 4, False)[:2], 2, False),
        touch_pages,
        ("do_read_fault", "filemap_map_pages"),
    ),
    Row(
        "ext4 read fault, uncached",
        lambda k: (*_uncached_ext4(k), 2, False),
        touch_pages,
        ("vm_fault_page", "ext4_filemap_fault"),
    ),
    Row(
        "memfd private COW fault",
        lambda k: _private_file(k, "tmpfs", 2),
        read_then_write,
        ("do_read_fault",),
    ),
    Row(
        "pin_user_pages faulting anon in",
        lambda k: (*_anon(k), 4, FOLL_WRITE | FOLL_LONGTERM, True),
        pin_unpin,
        ("faultin_page", "__get_user_pages"),
    ),
    Row(
        "pin_user_pages FOLL_FORCE on read-only private ramfs",
        lambda k: (*_private_file(k, "ramfs", 2, PROT_READ), 2, FOLL_WRITE | FOLL_FORCE, False),
        pin_unpin,
        ("faultin_page",),
    ),
    Row(
        "pin_user_pages of THP",
        lambda k: (*_thp(k), 3, FOLL_WRITE, False),
        pin_unpin,
        ("follow_trans_huge_pmd",),
    ),
    Row(
        "pin_user_pages faulting hugetlb in",
        lambda k: (*_hugetlb(k, False), 3, FOLL_WRITE, True),
        pin_unpin,
        ("follow_hugetlb_page", "hugetlb_fault"),
        params=HUGE,
    ),
    Row(
        "pin_user_pages of ext4 shared, dirty unpin",
        lambda k: (*_shared_file(k, "ext4", 2, False)[:2], 2, FOLL_WRITE, True),
        pin_unpin,
        ("faultin_page", "do_page_mkwrite"),
    ),
    Row(
        "pin_user_pages_fast of faulted anon",
        lambda k: (*_anon(k, faulted=True), 4, FOLL_WRITE),
        pin_fast_unpin,
        ("pin_user_pages_fast",),
    ),
    Row(
        "pin_user_pages_fast falling back",
        lambda k: (*_anon(k), 2, FOLL_WRITE | FOLL_LONGTERM),
        pin_fast_unpin,
        ("faultin_page",),
    ),
    Row(
        "get_user_pages and put_page",
        lambda k: (*_anon(k), 3, FOLL_WRITE, False),
        gup_put,
        ("get_user_pages", "put_page_api"),
    ),
    Row(
        "get_user_pages_fast of THP",
        lambda k: (*_thp(k), 2, 0, True),
        gup_put,
        ("get_user_pages_fast",),
    ),
    Row(
        "pin_user_pages_remote and _unlocked",
        lambda k: (*_anon(k), 2),
        pin_remote_unlocked,
        ("pin_user_pages_remote", "pin_user_pages_unlocked"),
    ),
    Row(
        "gup with design hooks",
        _hooked,
        pin_unpin,
        ("gup_page_hook", "try_grab_page", "gup_put_folio"),
    ),
    Row(
        "fork with a pinned page, COW",
        _pinned_fork,
        fork_then_write,
        ("sys_fork", "do_wp_page", "sys_exit"),
    ),
    Row(
        "fork of THP and COW",
        lambda k: (*_thp(k), 2),
        fork_then_write,
        ("sys_fork", "sys_exit"),
    ),
    Row(
        "write(2) and fsync(2) on tmpfs",
        lambda k: (P.tmpfs_create(k, 0), 0, 2 * PAGE_SIZE),
        write_sync,
        ("write_begin", "write_end", "shmem_write_begin"),
    ),
    Row(
        "write(2) and fsync(2) on ramfs",
        lambda k: (P.ramfs_create(k, 0), PAGE_SIZE, PAGE_SIZE),
        write_sync,
        ("write_begin", "write_end"),
    ),
    Row(
        "write(2) and fsync(2) on ext4",
        lambda k: (filled(k, "ext4", PAGE_SIZE), 0, 3 * PAGE_SIZE),
        write_sync,
        ("vfs_write", "write_begin", "write_end", "writepages", "write_cache_pages"),
    ),
    Row(
        "ext4 WB_SYNC_NONE and WB_SYNC_ALL writeback",
        _dirty_ext4,
        writeback_none,
        ("write_cache_pages",),
    ),
    Row(
        "stores to pinned ext4 shared, fsync(2)",
        _pinned_ext4,
        store_then_fsync,
        ("vfs_fsync", "folio_mkclean", "__filemap_fdatawait_range"),
    ),
    Row("fsync(2) of ext4 with a pinned page", _dirty_ext4, vfs_fsync, ("writepages",)),
    Row("truncate mapped tmpfs", _truncated("tmpfs"), truncate, ("truncate_inode_pages_range",)),
    Row("truncate mapped ext4", _truncated("ext4"), truncate, ("unmap_mapping_range",)),
    Row("O_DIRECT write and read", _dio, odirect, ("_iomap_dio_bio_iter",)),
    Row(
        "io_uring register buffers",
        lambda k: (*_anon(k, faulted=True), 4 * PAGE_SIZE),
        uring,
        ("io_uring_register",),
    ),
    Row(
        "io_uring register THP buffer",
        lambda k: (*_thp(k), 3 * PAGE_SIZE),
        uring,
        ("io_uring_register",),
    ),
    Row("vmsplice", lambda k: (*_anon(k, faulted=True), 3), splice_pages, ("vmsplice",)),
    Row("process_vm_readv", _two_regions, vm_rw, ("process_vm_rw",)),
    Row("madvise populate / dontneed", _madvised, madvise_round, ("do_madvise",)),
    Row(
        "mprotect",
        lambda k: (*_anon(k, faulted=True), 4 * PAGE_SIZE),
        mprotect_round,
        ("do_mprotect",),
    ),
    Row("munmap and exit", _munmapped, munmap_all, ("do_munmap", "exit_mmap")),
    Row(
        "v5.7 pin_user_pages FOLL_FORCE (FOLL_COW)",
        lambda k: (*_private_file(k, "ramfs", 2, PROT_READ), 2, FOLL_WRITE | FOLL_FORCE, False),
        pin_unpin,
        ("faultin_page",),
        profile="5.7",
    ),
    Row(
        "v4.4 get_user_pages FOLL_FORCE (drops FOLL_WRITE)",
        lambda k: (*_private_file(k, "ramfs", 2, PROT_READ), 2, FOLL_WRITE | FOLL_FORCE, False),
        gup_put,
        ("faultin_page",),
        profile="4.4",
    ),
    Row(
        "v6.5 pin_user_pages faulting hugetlb in",
        lambda k: (*_hugetlb(k, False), 2, FOLL_WRITE, False),
        pin_unpin,
        ("follow_hugetlb_page", "hugetlb_fault"),
        profile="6.5",
        params=HUGE,
    ),
    Row("unmodelled: write(2) to fsdax", _dax_write, vfs_write, unmodelled="vfs_write"),
    Row(
        "unmodelled: fsync(2) of fsdax",
        lambda k: (P.ext4_create(k, PAGE_SIZE, dax=True),),
        vfs_fsync,
        unmodelled="vfs_fsync",
    ),
    Row("unmodelled: fault of fsdax", _dax_fault, vm_fault_page, unmodelled="vm_fault_page"),
    Row(
        "unmodelled: write_begin on hugetlbfs",
        _hugetlbfs_write_begin,
        write_begin,
        unmodelled="write_begin",
    ),
    Row(
        "unmodelled: write_end on hugetlbfs",
        _hugetlbfs_write_end,
        write_end,
        unmodelled="write_end",
    ),
    Row(
        "unmodelled: writepages on tmpfs",
        _tmpfs_writepages,
        writepages,
        unmodelled="writepages",
    ),
]


def _kernel(row: Row, fine: bool) -> tuple[Kernel, tuple[Any, ...]]:
    k = boot(row.profile, row.params)
    args = row.setup(k)
    k.fine_grained = fine
    return k, args


@pytest.mark.parametrize("fine", [False, True], ids=["range", "page-by-page"])
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_every_suspension_holds_only_values_and_restores(row: Row, fine: bool) -> None:
    """At every yield of the operation, as written and in its resumable form, every frame's
    locals are values (no module, lambda, closure or bound method); the resumable run's
    every suspension is captured, copied and rebuilt; both runs end in the same state."""
    k, args = _kernel(row, fine)
    k2, args2 = _kernel(row, fine)
    if row.unmodelled is not None:
        with pytest.raises(Unmodelled) as plain_err:
            walk_frames(row.op(k, *args), k)
        with pytest.raises(Unmodelled) as again_err:
            walk_frames(resumable(row.op)(k2, *args2), k2, body=row.op)
        assert plain_err.value.function == again_err.value.function == row.unmodelled
        return
    plain = walk_frames(row.op(k, *args), k)
    again = walk_frames(resumable(row.op)(k2, *args2), k2, body=row.op)
    assert plain.steps > 0
    missing = [f for f in row.through if f not in plain.functions]
    # whole-range steps (not fine-grained) may pass a function by without suspending in it
    assert not (fine and missing), f"never suspended in {missing}: {sorted(plain.functions)}"
    assert (again.steps, again.result) == (plain.steps, plain.result)
    assert kernel_digest(k2) == kernel_digest(k)


# ---------------------------------------------------------------------------------------
# the checker itself


def _holds_module() -> Generator[Yield, None, int]:
    import os

    yield "here"
    return len(os.sep)


def _holds_closure() -> Generator[Yield, None, int]:
    n = 1

    def inner() -> int:
        return n

    yield "here"
    return inner()


def _holds_lambda() -> Generator[Yield, None, int]:
    f = lambda: 1  # noqa: E731
    yield "here"
    return f()


def _holds_method() -> Generator[Yield, None, int]:
    f = Walk(1).__eq__
    yield "here"
    return int(f(Walk(1)))


def _holds_builtin_method() -> Generator[Yield, None, int]:
    f = [1].count
    yield "here"
    return f(1)


def _holds_object() -> Generator[Yield, None, int]:
    x = object()
    yield "here"
    return id(x) and 1


def _delegates(inner: Callable[[], Generator[Yield, None, int]]) -> Generator[Yield, None, int]:
    return (yield from inner())


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_holds_module, "a module"),
        (_holds_closure, "a closure"),
        (_holds_lambda, "a lambda"),
        (_holds_method, "a bound method"),
        (_holds_builtin_method, "a bound method"),
        (_holds_object, "refused by canon.freeze"),
    ],
)
def test_walk_frames_names_the_frame_and_the_local(
    body: Callable[[], Generator[Yield, None, int]], why: str
) -> None:
    """The checker finds an offending local in a frame deep in the chain, and names it."""
    with pytest.raises(pytest.fail.Exception, match=f"{body.__name__}:\\d+: local .* is {why}"):
        walk_frames(_delegates(body))


def test_walk_frames_allows_the_world_and_module_level_functions() -> None:
    """The world itself, plain data and module-level functions are fine; the result is kept."""
    k = boot("6.1")
    task, addr = _anon(k)
    walk = walk_frames(touch_pages(k, task, addr, 1, True), k)
    assert walk.result == 0 and walk.steps > 0 and "user_access" in walk.functions
    refs = world_refs(k)
    assert local_problem(k, refs) is None
    assert local_problem(k.mem, refs) is None
    assert local_problem(k.mem) is not None  # not the world's: no value form
    assert local_problem(touch_pages) is None
    assert local_problem({"f": [touch_pages]}) is None
    assert local_problem([k.mms[task.mm], k.mem], refs) is None
