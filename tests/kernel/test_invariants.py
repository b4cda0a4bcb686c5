"""Random map/fault/gup/pin/unpin/put/munmap/fork sequences keep the refcount invariants, and
the whole-range (vectorised) gup paths leave exactly the page-by-page state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.gup import get_user_pages, page_array, pin_user_pages
from pinlab.kernel.mm.gup_fast import get_user_pages_fast, pin_user_pages_fast
from pinlab.kernel.mm.gup_flags import FOLL_LONGTERM, FOLL_WRITE
from pinlab.kernel.mm.gup_unpin import put_page_api, unpin_user_pages
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_read_unlock
from pinlab.kernel.mm.memmap import compound_head, folio_test_large
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED
from pinlab.kernel.mm.pgtable import (
    _PAGE_PRESENT,
    _PAGE_PROTNONE,
    _PAGE_PSE,
    _PAGE_SPECIAL,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SIZE,
    PTE_PFN_MASK,
)
from pinlab.kernel.mm.pincount import folio_pincount, has_exact_pincount
from pinlab.kernel.mm.rmap import folio_mapcount
from pinlab.kernel.mm.swap import folio_in_lru_batch
from pinlab.kernel.mm.truncate import truncate_setsize
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED
from pinlab.kernel.process import (
    ext4_create,
    memfd_create,
    new_task,
    sys_fork,
    sys_mmap,
    sys_munmap,
)
from pinlab.kernel.state import BootParams, Kernel, boot, kernel_copy, kernel_digest
from pinlab.kernel.uaccess import UserFault, user_access

PROT_RW = 0x3
# region kinds: anon, THP-eligible anon (2 MiB aligned), memfd shared, ext4 shared, ext4 private
KINDS = ("anon", "thp", "memfd", "ext4-shared", "ext4-private")
GUP_FLAGS = (0, FOLL_WRITE, FOLL_LONGTERM, FOLL_WRITE | FOLL_LONGTERM)


@dataclass(slots=True)
class World:
    """The test's view: tasks by index, regions (task index, start, pages), outstanding refs."""

    tasks: list[int] = field(default_factory=list)
    regions: list[tuple[int, int, int]] = field(default_factory=list)
    held: list[tuple[str, list[int]]] = field(default_factory=list)
    next_fixed: int = 0x10_0000_0000


def _map(k: Kernel, w: World, kind: str, npages: int) -> object:
    task = k.tasks[w.tasks[0]]
    length = npages * PAGE_SIZE
    if kind == "thp":
        length = PMD_SIZE
        addr = w.next_fixed
        w.next_fixed += 2 * PMD_SIZE
        ret = run_to_completion(
            sys_mmap(k, task, addr, length, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        )
    elif kind == "anon":
        ret = run_to_completion(
            sys_mmap(k, task, None, length, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS)
        )
    else:
        file = memfd_create(k, 0) if kind == "memfd" else ext4_create(k, length)
        assert not isinstance(file, int)
        if kind == "memfd":
            run_to_completion(truncate_setsize(k, k.mappings[file.mapping], length))
        share = MAP_PRIVATE if kind == "ext4-private" else MAP_SHARED
        ret = run_to_completion(sys_mmap(k, task, None, length, PROT_RW, share, file))
    if ret > 0:
        w.regions.append((0, ret, length >> PAGE_SHIFT))
    return ret


def _apply(k: Kernel, w: World, op: tuple[int, ...]) -> object:
    """Run one operation; its observable result."""
    code, a, b, c, d = op
    if code == 0:
        return _map(k, w, KINDS[a % len(KINDS)], 1 + b % 24)
    if code == 6:
        # Releases need no mapping: the references outlive a munmap.
        if not w.held:
            return None
        how, got = w.held.pop(a % len(w.held))
        if how == "pin":
            run_to_completion(unpin_user_pages(k, np.array(got, np.int64), len(got)))
        else:
            for page in got:
                run_to_completion(put_page_api(k, page))
        return how
    if not w.regions:
        return None
    t_idx, start, npages = w.regions[a % len(w.regions)]
    task_idx = (t_idx + c) % len(w.tasks)
    task = k.tasks[w.tasks[task_idx]]
    mm = k.mms[task.mm]
    addr = start + (b % npages) * PAGE_SIZE
    if code == 1:
        try:
            return run_to_completion(user_access(k, task, addr, bool(d & 1), value=op[3] + 1))
        except UserFault as fault:
            return fault.signal
    if code in (2, 3, 4, 5):
        nr = 1 + d % max(1, npages - b % npages)
        flags = GUP_FLAGS[c % len(GUP_FLAGS)]
        pages = page_array(nr)
        if code in (2, 3):
            run_to_completion(mmap_read_lock(k, mm))
            if code == 2:
                ret = run_to_completion(
                    get_user_pages(k, mm, addr, nr, flags & ~FOLL_LONGTERM, pages)
                )
            else:
                ret = run_to_completion(pin_user_pages(k, mm, addr, nr, flags, pages))
            mmap_read_unlock(k, mm)
        elif code == 4:
            ret = run_to_completion(pin_user_pages_fast(k, mm, addr, nr, flags, pages))
        else:
            ret = run_to_completion(
                get_user_pages_fast(k, mm, addr, nr, flags & ~FOLL_LONGTERM, pages)
            )
        got = pages[: max(ret, 0)].tolist()
        if ret > 0:
            w.held.append(("pin" if code in (3, 4) else "get", got))
        return ret, got
    if code == 7:
        ret = run_to_completion(sys_munmap(k, task, start, npages * PAGE_SIZE))
        w.regions = [r for r in w.regions if r[1] != start or r[0] != t_idx]
        return ret
    if code == 8 and len(w.tasks) < 3:
        child = run_to_completion(sys_fork(k, task))
        if child > 0:
            w.tasks.append(child)
            child_idx = len(w.tasks) - 1
            w.regions += [(child_idx, s, n) for t, s, n in w.regions if t == task_idx]
        return child
    return None


def _mapped(k: Kernel) -> dict[int, int]:
    """PFN -> how many page-table entries map it (PTEs and huge PMDs), special ones left out."""
    out: dict[int, int] = {}
    mask = np.uint64(_PAGE_PRESENT | _PAGE_PROTNONE)
    for mm in k.mms.values():
        for table in mm.pgtable.pte.values():
            live = table[((table & mask) != 0) & ((table & np.uint64(_PAGE_SPECIAL)) == 0)]
            for pfn in ((live & np.uint64(PTE_PFN_MASK)) >> np.uint64(PAGE_SHIFT)).tolist():
                out[pfn] = out.get(pfn, 0) + 1
        for pmd in mm.pgtable.pmd.values():
            if pmd & _PAGE_PSE:
                pfn = (pmd & PTE_PFN_MASK) >> PAGE_SHIFT
                out[pfn] = out.get(pfn, 0) + 1
    return out


def check_invariants(k: Kernel, w: World) -> None:
    """The refcount and pin-accounting invariants of the v6.1 model."""
    m = k.mem
    special = {k.zero_pfn, k.huge_zero_pfn}
    mapped = _mapped(k)
    folios: dict[int, int] = {}
    for pfn in mapped:
        head = compound_head(m, pfn)
        assert int(m.refcount[head]) > 0, f"freed folio {head} still mapped"
        folios.setdefault(head, 0)
    for space in k.mappings.values():
        for folio in space.i_pages.values():
            head = compound_head(m, folio)
            assert int(m.refcount[head]) > 0, f"freed folio {head} in a page cache"
            folios[head] = folios.get(head, 0) + 1
    pins: dict[int, int] = {}
    outstanding = 0
    for how, got in w.held:
        for page in got:
            head = compound_head(m, page)
            if how == "get":
                folios[head] = folios.get(head, 0) + 1
            elif not (head == k.zero_pfn and k.profile.zero_page_pin_noop):
                outstanding += 1
                pins[head] = pins.get(head, 0) + 1
                folios.setdefault(head, 0)
    for head, extra in folios.items():
        if head in special:
            continue
        n_pins = pins.get(head, 0)
        pin_refs = n_pins if has_exact_pincount(k, head) else n_pins * k.profile.pin_bias
        private = 1 if int(m.flags[head]) & k.pf.mask("PG_private") else 0
        floor = extra + folio_mapcount(k, head) + folio_in_lru_batch(k, head) + private
        floor += pin_refs
        assert int(m.refcount[head]) >= floor, (head, int(m.refcount[head]), floor)
        if folio_test_large(m, head) and has_exact_pincount(k, head):
            assert folio_pincount(k, head) == n_pins
            assert folio_pincount(k, head) <= int(m.refcount[head])
    c = k.vmstat.counters
    assert c.get(NR_FOLL_PIN_ACQUIRED, 0) - c.get(NR_FOLL_PIN_RELEASED, 0) == outstanding
    assert not k.warned, k.warned


OPS = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 1, 1, 2, 3, 4, 5, 6, 6, 7, 8]),
        st.integers(0, 50),
        st.integers(0, 600),
        st.integers(0, 7),
        st.integers(0, 40),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=30, deadline=None)
@given(profile=st.sampled_from(["6.1", "6.5", "5.7"]), ops=OPS)
def test_sequences_keep_invariants_and_range_equivalence(
    profile: str, ops: list[tuple[int, int, int, int, int]]
) -> None:
    k = boot(profile, BootParams(normal_mb=48, movable_mb=16))
    task = new_task(k)
    slow = kernel_copy(k)
    slow.fine_grained = True
    worlds = (World([task.pid]), World([task.pid]))
    for op in ops:
        out_fast = _apply(k, worlds[0], op)
        out_slow = _apply(slow, worlds[1], op)
        assert out_fast == out_slow, op
        check_invariants(k, worlds[0])
        check_invariants(slow, worlds[1])
        slow.fine_grained = False
        assert kernel_digest(k) == kernel_digest(slow), op
        slow.fine_grained = True
    for kk, w in zip((k, slow), worlds, strict=True):
        while w.held:
            _apply(kk, w, (6, 0, 0, 0, 0))
        check_invariants(kk, w)
        c = kk.vmstat.counters
        assert c.get(NR_FOLL_PIN_ACQUIRED, 0) == c.get(NR_FOLL_PIN_RELEASED, 0)
