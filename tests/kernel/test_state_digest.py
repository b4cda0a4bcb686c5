"""The one definition of the kernel state: incremental digests, snapshots, refusals.

The incremental digest (frame-table rows rehashed as they are written) must equal a
recomputation after every step of random syscall sequences; a snapshot restored in
place must come back to the digest it was taken at; every field of the definition
must count; and state kept outside it (a closure) is refused by name.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Generator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinlab.explore.resume import pack, unpack
from pinlab.interleave import Await, Yield
from pinlab.kernel.hooks import Hooks
from pinlab.kernel.mm.gup import page_array
from pinlab.kernel.mm.gup_fast import get_user_pages_fast, pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import put_page_api, unpin_user_pages
from pinlab.kernel.mm.memmap import FIELDS, memmap_alloc, memmap_copy
from pinlab.kernel.mm.mmap import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.process import new_task, sys_fork, sys_madvise, sys_mmap, sys_munmap
from pinlab.kernel.state import BootParams, Kernel, boot, kernel_copy, kernel_digest
from pinlab.kernel.uaccess import user_access
from pinlab.kernel.walk import StateError, roles

PAGE = 4096
PROFILES = ("4.4", "5.7", "6.1")


def _steps(gen: Generator[Yield, None, Any], k: Kernel, seen: list[bytes]) -> Any:
    """Run ``gen`` one step at a time, checking the incremental digest at every point."""
    try:
        point = next(gen)
        while True:
            assert not isinstance(point, Await) or point.ready()
            _check(k)
            seen.append(kernel_digest(k))
            point = gen.send(None)
    except StopIteration as stop:
        _check(k)
        return stop.value


def _check(k: Kernel) -> None:
    """The incremental digests equal a recomputation from scratch."""
    assert k.mem.digest() == memmap_copy(k.mem).digest()
    assert kernel_digest(k) == kernel_digest(kernel_copy(k))


OPS = st.lists(
    st.tuples(
        st.sampled_from(["touch", "read", "pin", "fork", "dontneed", "munmap"]),
        st.integers(0, 3),
    ),
    max_size=8,
)


def _run_ops(profile: str, mb: int, fine: bool, ops: list[tuple[str, int]]) -> list[bytes]:
    """Boot, map four anon pages and run ``ops`` step by step; the digests seen."""
    k = boot(profile, BootParams(normal_mb=mb))
    k.fine_grained = fine
    seen: list[bytes] = []
    task = new_task(k)
    addr = _steps(
        sys_mmap(k, task, None, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS),
        k,
        seen,
    )
    for op, page in ops:
        va = addr + page * PAGE
        if op in ("touch", "read"):
            if any(v.vm_start <= va < v.vm_end for v in k.mms[task.mm].vmas):
                _steps(user_access(k, task, va, op == "touch", page + 1), k, seen)
        elif op == "pin" and "pin_user_pages_fast" in k.profile.gup_apis:
            pages = page_array(1)
            got = _steps(pin_user_pages_fast(k, k.mms[task.mm], va, 1, FOLL_WRITE, pages), k, seen)
            if got > 0:
                _steps(unpin_user_pages(k, pages, got), k, seen)
        elif op == "pin":
            pages = page_array(1)
            got = _steps(get_user_pages_fast(k, k.mms[task.mm], va, 1, FOLL_WRITE, pages), k, seen)
            if got > 0:
                _steps(put_page_api(k, int(pages[0])), k, seen)
        elif op == "fork":
            _steps(sys_fork(k, task), k, seen)
        elif op == "dontneed":
            _steps(sys_madvise(k, task, va, PAGE, MADV_DONTNEED), k, seen)
        else:
            _steps(sys_munmap(k, task, va, PAGE), k, seen)
    return seen


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(PROFILES),
    st.sampled_from([4, 8]),
    st.booleans(),
    OPS,
)
def test_incremental_digest_equals_recomputation_after_every_step(
    profile: str, mb: int, fine: bool, ops: list[tuple[str, int]]
) -> None:
    _run_ops(profile, mb, fine, ops)


def test_equal_states_give_equal_digests_in_a_fresh_process() -> None:
    ops = [("touch", 0), ("pin", 0), ("fork", 0), ("touch", 1), ("dontneed", 1)]
    here = [d.hex() for d in _run_ops("6.1", 4, True, ops)]
    code = (
        "import sys; sys.path.insert(0, 'tests/kernel'); import test_state_digest as t; "
        f"print(' '.join(d.hex() for d in t._run_ops('6.1', 4, True, {ops!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == here


def _booted() -> Kernel:
    k = boot("6.1", BootParams(normal_mb=4))
    task = new_task(k)
    gen = sys_mmap(k, task, None, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    addr = _steps(gen, k, [])
    _steps(user_access(k, task, addr, True, 7), k, [])
    return k


def _nudge(v: Any) -> Any:
    """A value of the same type that differs from ``v`` (None if there is none)."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list):
        return [*v, 0] if not v or not isinstance(v[0], list) else [[*v[0], 0], *v[1:]]
    if isinstance(v, dict):
        return {**v, 1 << 40: next(iter(v.values()), 0)} if v else {1 << 40: 0}
    if isinstance(v, set):
        return {*v, (1 << 40, 0)}
    return None


def _nudge_field(k: Kernel, name: str) -> None:
    """Change field ``name`` of ``k`` in place, reaching into dataclasses."""
    v = getattr(k, name)
    new = _nudge(v)
    if new is not None:
        setattr(k, name, new)
        return
    if name == "mem":
        k.mem.refcount[1] += 1
        return
    inner = dataclasses.fields(v)[0].name
    setattr(v, inner, _nudge(getattr(v, inner)))


def test_every_field_of_the_definition_counts() -> None:
    k = _booted()
    base = kernel_digest(k)
    by_role = roles(Kernel)
    assert set(by_role.values()) == {"state", "config", "derived", "code", "mode"}
    for name, role in by_role.items():
        other = kernel_copy(k)
        if role == "state":
            _nudge_field(other, name)
        elif role == "code":
            other.hooks = Hooks(maybe_dma_pinned=_always_pinned)
        else:
            continue  # config: test_the_profile_counts; derived and mode are not state
        assert kernel_digest(other) != base, name


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(FIELDS), st.integers(0, 63), st.integers(-(2**31), 2**31 - 1)),
        max_size=12,
    )
)
def test_priming_a_table_hashes_rows_as_writes_do(writes: list[tuple[str, int, int]]) -> None:
    """A table hashed whole (rows at their initial values skipped) has the digest it
    reaches when the same values are written into a hashed free table row by row."""
    fresh = memmap_alloc(64)
    fresh.digest()
    for field, row, value in writes:
        arr = getattr(fresh, field)
        arr[row] = np.array(value).astype(arr.dtype)
        fresh.digest()
    assert memmap_copy(fresh).digest() == fresh.digest()


@pytest.mark.parametrize("field", FIELDS)
def test_every_struct_page_field_counts(field: str) -> None:
    k = _booted()
    base = kernel_digest(k)
    arr = getattr(k.mem, field)
    arr[3] = arr[3] + 1
    assert kernel_digest(k) != base
    arr[3] = arr[3] - 1
    assert kernel_digest(k) == base


def test_the_profile_counts() -> None:
    assert kernel_digest(boot("6.1", BootParams(normal_mb=4))) != kernel_digest(
        boot("6.5", BootParams(normal_mb=4))
    )


def _always_pinned(k: Kernel, folio: int) -> bool:
    return True


def test_a_restored_snapshot_has_the_digest_it_was_taken_at() -> None:
    k = _booted()
    task = next(iter(k.tasks.values()))
    addr = k.mms[task.mm].vmas[0].vm_start
    packed = pack(k)
    before, full = kernel_digest(k), memmap_copy(k.mem).digest()
    pages = page_array(1)
    _steps(pin_user_pages_fast(k, k.mms[task.mm], addr, 1, FOLL_WRITE, pages), k, [])
    _steps(sys_fork(k, task), k, [])
    after = kernel_digest(k)
    assert after != before
    back = unpack(packed)
    assert back.mem is k.mem  # the frame table is patched in place, not copied
    assert kernel_digest(back) == before
    assert memmap_copy(back.mem).digest() == full
    assert kernel_digest(back) == kernel_digest(kernel_copy(back))


def test_a_hook_keeping_state_in_a_closure_is_refused_by_name() -> None:
    k = _booted()
    calls: list[int] = []

    def counting(k: Kernel, folio: int, refs: int) -> bool:
        calls.append(folio)
        return True

    k.hooks.pin_record = counting
    with pytest.raises(StateError, match=r"hooks\.pin_record: .*counting keeps state in a closure"):
        kernel_digest(k)


def test_state_outside_plain_data_is_refused_by_name() -> None:
    k = _booted()
    k.warned.append(object())  # type: ignore[arg-type]
    with pytest.raises(StateError, match=r"warned\[0\]: a object has no plain-data form"):
        kernel_digest(k)
