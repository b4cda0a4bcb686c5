"""Whole-range gup: the page-by-page slow path's effect on a run of pages in one NumPy step.

Used only when nothing else is modelled as running (`k.fine_grained` False)
and no design hook is installed.  `range_grab` handles the longest prefix of
a range that the slow path would follow without faulting and grab without
hitting the refcount guard (v6.1 mm/gup.c follow_page_pte /
mm/huge_memory.c follow_trans_huge_pmd / mm/hugetlb.c follow_hugetlb_page,
try_grab_page / try_grab_folio) and leaves exactly the state those would;
it stops before the first page it cannot treat identically, and the slow
path goes on from there.  `unpin_folios_range` does the same for
unpin_user_pages (v6.1 mm/gup.c gup_put_folio per folio run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from pinlab.kernel.mm.gup_flags import FOLL_GET, FOLL_LONGTERM, FOLL_PIN, FOLL_TOUCH, FOLL_WRITE
from pinlab.kernel.mm.memmap import NO_HEAD
from pinlab.kernel.mm.page_alloc import free_folio
from pinlab.kernel.mm.page_ref import INT_MAX
from pinlab.kernel.mm.pgtable import (
    _PAGE_DEVMAP,
    _PAGE_PRESENT,
    _PAGE_RW,
    _PAGE_SPECIAL,
    HPAGE_PMD_ORDER,
    HPAGE_PUD_ORDER,
    PAGE_SHIFT,
    PMD_SHIFT,
    PTE_PFN_MASK,
    PUD_SHIFT,
    pmd_trans_huge,
)
from pinlab.kernel.mm.types import VM_HUGETLB, MmStruct, VmArea
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED, mod_node_page_state

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

I64 = NDArray[np.int64]
_PFN_MASK = np.uint64(PTE_PFN_MASK)


def range_ok(k: Kernel, flags: int) -> bool:
    """Whether a whole-range grab may stand in for the slow path at all."""
    h = k.hooks
    if k.fine_grained or any(x is not None for x in (h.pin_record, h.gup_page, h.gup_returned)):
        return False
    if flags & FOLL_TOUCH:
        return False
    return bool(flags & FOLL_GET) != bool(flags & FOLL_PIN)


def unpin_range_ok(k: Kernel) -> bool:
    """Whether unpin_user_pages may run as one whole-range step."""
    return not k.fine_grained and k.hooks.pin_release is None


def _heads(k: Kernel, pfns: I64) -> I64:
    """compound_head of every PFN."""
    head: I64 = k.mem.head[pfns]
    np.copyto(head, pfns, where=head == NO_HEAD)
    return head


def _must_unshare(k: Kernel, pages: I64, heads: I64, flags: int) -> NDArray[np.bool_]:
    """v6.1 include/linux/mm.h gup_must_unshare for R/O entries (hugetlb: on the head)."""
    if not k.profile.page_anon_exclusive or flags & (FOLL_WRITE | FOLL_PIN) != FOLL_PIN:
        return np.zeros(pages.shape[0], np.bool_)
    m = k.mem
    anon = (m.mapping[heads] & 1) != 0
    excl = (m.flags[pages] & np.uint64(k.pf.mask("PG_anon_exclusive"))) != 0
    result: NDArray[np.bool_] = anon & ~excl
    return result


def _pte_prefix(k: Kernel, mm: MmStruct, start: int, n: int, flags: int) -> tuple[I64, I64 | None]:
    """(PFNs, heads or None: not computed) of the leading pages the follow_page path grabs as is."""
    segs: list[tuple[bool, int, int, int, NDArray[np.uint64] | None]] = []
    addr, left = start, n
    pt = mm.pgtable
    while left:
        slot = addr >> PMD_SHIFT
        idx = (addr >> PAGE_SHIFT) & 511
        cnt = min(512 - idx, left)
        pmd = pt.pmd.get(slot, 0)
        if pmd_trans_huge(pmd):
            segs.append((True, idx, cnt, pmd, None))
        else:
            table = pt.pte.get(slot)
            if table is None:
                break
            segs.append((False, idx, cnt, 0, table))
        addr += cnt << PAGE_SHIFT
        left -= cnt
    pfn_parts: list[I64] = []
    head_parts: list[I64 | None] = []
    i = 0
    while i < len(segs):
        j = i
        while j < len(segs) and segs[j][0] == segs[i][0]:
            j += 1
        group = segs[i:j]
        pfns, heads, complete = (_pmd_group if group[0][0] else _pte_group)(k, group, flags)
        pfn_parts.append(pfns)
        head_parts.append(heads)
        if not complete:
            break
        i = j
    if not pfn_parts:
        empty = np.zeros(0, np.int64)
        return empty, empty
    if len(pfn_parts) == 1:
        return pfn_parts[0], head_parts[0]
    pfns = np.concatenate(pfn_parts)
    if any(h is None for h in head_parts):
        return pfns, None
    return pfns, np.concatenate([h for h in head_parts if h is not None])


Seg = tuple[bool, int, int, int, NDArray[np.uint64] | None]


def _pmd_group(k: Kernel, group: list[Seg], flags: int) -> tuple[I64, None, bool]:
    """Subpages of consecutive PMD-mapped THPs (v6.1 mm/huge_memory.c follow_trans_huge_pmd)."""
    vals = np.array([seg[3] for seg in group], np.uint64)
    heads = ((vals & _PFN_MASK) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    ro = (vals & np.uint64(_PAGE_RW)) == 0
    bad = ro.copy() if flags & FOLL_WRITE else ro & _must_unshare(k, heads, heads, flags)
    keep = int(np.argmax(bad)) if bad.any() else len(group)
    idxs = np.array([seg[1] for seg in group[:keep]], np.int64)
    cnts = np.array([seg[2] for seg in group[:keep]], np.int64)
    if keep and (cnts == 512).all():
        pfns = (heads[:keep, None] + np.arange(512, dtype=np.int64)).ravel()
    else:
        total = int(cnts.sum())
        pfns = np.arange(total, dtype=np.int64)
        pfns += np.repeat(heads[:keep] - np.cumsum(cnts) + cnts + idxs, cnts)
    return pfns, None, keep == len(group)


def _pte_group(k: Kernel, group: list[Seg], flags: int) -> tuple[I64, I64, bool]:
    """Pages of consecutive PTE tables (v6.1 mm/gup.c follow_page_pte)."""
    tables = [seg[4] for seg in group]
    ptes = np.concatenate(
        [t[seg[1] : seg[1] + seg[2]] for t, seg in zip(tables, group, strict=True) if t is not None]
    )
    raw = ptes & _PFN_MASK
    np.right_shift(raw, np.uint64(PAGE_SHIFT), out=raw)
    pfns = raw.view(np.int64)
    need = _PAGE_PRESENT | (_PAGE_RW if flags & FOLL_WRITE else 0)
    bad = (ptes & np.uint64(need)) != np.uint64(need)
    special = (ptes & np.uint64(_PAGE_SPECIAL | _PAGE_DEVMAP)) != 0
    if special.any():
        bad |= special & (pfns != k.zero_pfn)
    if not flags & FOLL_WRITE:
        ro = (ptes & np.uint64(_PAGE_RW)) == 0
        if ro.any():
            bad |= ro & _must_unshare(k, pfns, _heads(k, pfns), flags)
    if bad.any():
        stop = int(np.argmax(bad))
        return pfns[:stop], _heads(k, pfns[:stop]), False
    return pfns, _heads(k, pfns), True


def _hugetlb_prefix(
    k: Kernel, mm: MmStruct, vma: VmArea, start: int, n: int, flags: int
) -> tuple[I64, I64]:
    """(PFNs, heads) of the leading pages follow_hugetlb_page would grab without faulting."""
    out: list[I64] = []
    heads: list[I64] = []
    addr = start
    left = min(n, (vma.vm_end - start) >> PAGE_SHIFT)
    while left:
        entry = mm.pgtable.pud.get(addr >> PUD_SHIFT, 0)
        order = HPAGE_PUD_ORDER
        if not entry:
            entry = mm.pgtable.pmd.get(addr >> PMD_SHIFT, 0)
            order = HPAGE_PMD_ORDER
        if not entry & _PAGE_PRESENT:
            break
        writable = bool(entry & _PAGE_RW)
        head = (entry & PTE_PFN_MASK) >> PAGE_SHIFT
        if not writable:
            if flags & FOLL_WRITE:
                break
            one = np.array([head], np.int64)
            if _must_unshare(k, one, one, flags)[0]:
                break
        off = (addr >> PAGE_SHIFT) & ((1 << order) - 1)
        cnt = min((1 << order) - off, left)
        out.append(np.arange(head + off, head + off + cnt, dtype=np.int64))
        heads.append(np.full(cnt, head, np.int64))
        addr += cnt << PAGE_SHIFT
        left -= cnt
    if not out:
        empty = np.zeros(0, np.int64)
        return empty, empty
    return np.concatenate(out), np.concatenate(heads)


def _per_folio(k: Kernel, heads: I64) -> tuple[I64, I64]:
    """Distinct folios among `heads` and how many entries each has."""
    if not heads.shape[0]:
        empty = np.zeros(0, np.int64)
        return empty, empty
    step = np.diff(heads)
    if (step > 0).all():
        ones: I64 = np.broadcast_to(np.int64(1), heads.shape)
        return heads, ones
    change = np.empty(heads.shape[0], np.bool_)
    change[0] = True
    np.not_equal(step, 0, out=change[1:])
    starts = np.flatnonzero(change)
    runs = heads[starts]
    lens = np.diff(np.append(starts, heads.shape[0]))
    if (step >= 0).all():
        return runs, lens.astype(np.int64)
    if np.bincount(runs, minlength=k.mem.nr_pages).max() <= 1:
        return runs, lens.astype(np.int64)
    cnt = np.bincount(runs, weights=lens, minlength=k.mem.nr_pages).astype(np.int64)
    folios = np.flatnonzero(cnt)
    return folios, cnt[folios]


def _runs_per_folio(k: Kernel, pfns: I64) -> tuple[I64, I64] | None:
    """(folios, entries) for an array made of runs inside large folios of order >= 9; else None.

    A new folio can only start at a break in consecutive PFNs or at a
    512-aligned PFN, and a folio of order >= 9 covers the whole aligned
    512-block around any of its pages: so only those entries need a head.
    """
    n = pfns.shape[0]
    if not n:
        return None
    cand_mask = np.empty(n, np.bool_)
    cand_mask[0] = True
    np.not_equal(pfns[1:] - pfns[:-1], 1, out=cand_mask[1:])
    cand_mask |= (pfns & 511) == 0
    cand = np.flatnonzero(cand_mask)
    if cand.shape[0] > (n >> 6) + 1:
        return None
    heads = _heads(k, pfns[cand])
    m = k.mem
    nxt = np.minimum(heads + 1, m.nr_pages - 1)
    if not ((m.head[nxt] == heads) & (m.order[nxt] >= HPAGE_PMD_ORDER)).all():
        return None
    lens = np.diff(np.append(cand, n))
    return _per_folio_weighted(k, heads, lens)


def _per_folio_weighted(k: Kernel, heads: I64, lens: I64) -> tuple[I64, I64]:
    """Distinct folios among `heads` and the summed `lens` of each."""
    if heads.shape[0] > 1 and not (np.diff(heads) > 0).all():
        folios, inverse = np.unique(heads, return_inverse=True)
        return folios, np.bincount(inverse, weights=lens).astype(np.int64)
    return heads, lens.astype(np.int64)


def _folio_facts(k: Kernel, folios: I64) -> tuple[NDArray[np.bool_], I64]:
    """For each folio head: whether it keeps an exact pincount, and its order."""
    m = k.mem
    nxt = folios + 1
    if nxt.shape[0] and int(nxt.max()) >= m.nr_pages:
        nxt = np.minimum(nxt, m.nr_pages - 1)
    large = m.head[nxt] == folios
    least = k.profile.exact_pincount_min_order
    if least is None or not large.any():
        return np.zeros(folios.shape, np.bool_), np.zeros(folios.shape, np.int64)
    order = np.where(large, m.order[nxt], 0).astype(np.int64)
    exact: NDArray[np.bool_] = large & (order >= least)
    return exact, order


def unpinnable(k: Kernel, pfns: I64) -> NDArray[np.bool_]:
    """v6.1 include/linux/mm.h is_longterm_pinnable_page, negated, for every PFN."""
    hook = k.hooks.longterm_pinnable
    if hook is not None:
        return np.array([not hook(k, int(p)) for p in pfns.tolist()], np.bool_)
    bad = np.zeros(pfns.shape, np.bool_)
    for lo, hi, pool in k.free_area.ranges:
        refused = (pool == "cma" and k.profile.longterm_migrates_cma) or (
            pool == "movable" and k.profile.longterm_migrates_movable
        )
        if refused:
            bad |= (pfns >= lo) & (pfns < hi)
    result: NDArray[np.bool_] = bad & (pfns != k.zero_pfn)
    return result


def range_grab(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    start: int,
    nr_pages: int,
    flags: int,
    pages: I64,
) -> int:
    """Grab the longest identically-handled prefix of the range into pages[0:]; its length."""
    hugetlb = bool(vma.vm_flags & VM_HUGETLB)
    n = min(nr_pages, (vma.vm_end - start) >> PAGE_SHIFT)
    if n <= 0:
        return 0
    maybe_heads: I64 | None
    if hugetlb:
        pfns, maybe_heads = _hugetlb_prefix(k, mm, vma, start, n, flags)
    else:
        pfns, maybe_heads = _pte_prefix(k, mm, start, n, flags)
    if not pfns.shape[0]:
        return 0
    runs = _runs_per_folio(k, pfns) if maybe_heads is None else None
    heads = maybe_heads if maybe_heads is not None or runs is not None else _heads(k, pfns)
    m = k.mem
    pin = bool(flags & FOLL_PIN)
    counted: NDArray[np.bool_] | None = None
    if pin and k.profile.zero_page_pin_noop and heads is not None:
        zero = heads == k.zero_pfn
        counted = ~zero if zero.any() else None
    if pin and hugetlb and k.profile.hugetlb_grab_batched and flags & FOLL_LONGTERM:
        bad = unpinnable(k, pfns)
        if counted is not None:
            bad &= counted
        if bad.any():
            return _cut(k, mm, vma, start, flags, pages, pfns, int(np.argmax(bad)))
    if runs is not None:
        folios, fcnt = runs
    else:
        assert heads is not None
        folios, fcnt = _per_folio(k, heads if counted is None else heads[counted])
    exact, _ = _folio_facts(k, folios)
    delta: I64 | int = 1
    if pin:
        delta = np.where(exact, 1, k.profile.pin_bias) if exact.any() else k.profile.pin_bias
    else:
        exact = np.zeros(folios.shape, np.bool_)
    ref0 = m.refcount[folios].astype(np.int64)
    final = ref0 + fcnt * delta
    stop = _first_refused(k, pfns, heads, counted, folios, fcnt, delta, ref0, final, hugetlb)
    if stop is not None:
        return _cut(k, mm, vma, start, flags, pages, pfns, stop)
    m.refcount[folios] = _wrap(final)
    if exact.any():
        pc_at = folios[exact] + k.profile.pincount_page
        m.pincount[pc_at] = _wrap(m.pincount[pc_at].astype(np.int64) + fcnt[exact])
    if pin and k.profile.vmstat_foll_pin and folios.shape[0]:
        mod_node_page_state(k.vmstat, NR_FOLL_PIN_ACQUIRED, int(fcnt.sum()))
    pages[: pfns.shape[0]] = pfns
    return int(pfns.shape[0])


def _wrap(values: I64) -> NDArray[np.int32]:
    """atomic_t arithmetic: reduce to signed 32 bits (v6.1 include/linux/page_ref.h)."""
    if values.shape[0] and (values.max() > INT_MAX or values.min() < -INT_MAX - 1):
        values = (values + 2**31) % 2**32 - 2**31
    out: NDArray[np.int32] = values.astype(np.int32)
    return out


def _first_refused(
    k: Kernel,
    pfns: I64,
    maybe_heads: I64 | None,
    counted: NDArray[np.bool_] | None,
    folios: I64,
    fcnt: I64,
    delta: I64 | int,
    ref0: I64,
    final: I64,
    hugetlb: bool,
) -> int | None:
    """Index of the first grab the slow path would not make as the step does, or None.

    One grab at a time (try_grab_page) succeeds while the count before it is
    > 0, so a folio takes (INT_MAX - ref0) // delta + 1 grabs, the last one
    carrying it past INT_MAX, and refuses the next.  6.1's batched hugetlb
    grab (try_grab_folio of a whole chunk) is left to the slow path as soon
    as its count is <= 0 or would cross INT_MAX.
    """
    if not k.profile.refcount_guard and not hugetlb:
        return None
    if bool((ref0 > 0).all()) and bool((final <= INT_MAX).all()):
        return None
    batched = hugetlb and k.profile.hugetlb_grab_batched
    if batched:
        refused = (ref0 <= 0) | (final > INT_MAX)
        allowed = np.zeros(folios.shape, np.int64)
    elif k.profile.refcount_guard:
        allowed = np.where(ref0 > 0, (INT_MAX - ref0) // delta + 1, 0)
        refused = fcnt > allowed
    else:
        return None
    if not refused.any():
        return None
    heads = maybe_heads if maybe_heads is not None else _heads(k, pfns)
    stop = int(heads.shape[0])
    positions = np.arange(stop) if counted is None else np.flatnonzero(counted)
    for folio, take in zip(folios[refused].tolist(), allowed[refused].tolist(), strict=True):
        hits = positions[heads[positions] == folio]
        stop = min(stop, int(hits[take]))
    return stop


def _cut(
    k: Kernel,
    mm: MmStruct,
    vma: VmArea,
    start: int,
    flags: int,
    pages: I64,
    pfns: I64,
    stop: int,
) -> int:
    """Grab only the first `stop` pages (everything before the first special case)."""
    if stop == 0:
        return 0
    return range_grab(k, mm, vma, start, stop, flags, pages)


def unpin_folios_range(k: Kernel, pages: I64) -> None:
    """unpin_user_pages over a page array as one step (v6.1 mm/gup.c gup_put_folio per run)."""
    m = k.mem
    if not pages.shape[0]:
        return
    runs = _runs_per_folio(k, pages)
    if runs is not None:
        folios, fcnt = runs
    else:
        heads = _heads(k, pages)
        if k.profile.zero_page_pin_noop:
            heads = heads[heads != k.zero_pfn]
        folios, fcnt = _per_folio(k, heads)
    exact, _ = _folio_facts(k, folios)
    delta = np.where(exact, 1, k.profile.pin_bias) if exact.any() else k.profile.pin_bias
    final = m.refcount[folios].astype(np.int64) - fcnt * delta
    if (final < 0).any():
        _unpin_runs(k, pages)
        return
    if k.profile.vmstat_foll_pin and folios.shape[0]:
        mod_node_page_state(k.vmstat, NR_FOLL_PIN_RELEASED, int(fcnt.sum()))
    if exact.any():
        m.pincount[folios[exact] + k.profile.pincount_page] -= fcnt[exact].astype(np.int32)
    m.refcount[folios] = final.astype(np.int32)
    for folio in folios[final == 0].tolist():
        free_folio(k, folio)


def _unpin_runs(k: Kernel, pages: I64) -> None:
    """The page-by-page unpin (runs of one folio), for the cases the step cannot mirror."""
    from pinlab.interleave import run_to_completion
    from pinlab.kernel.mm.gup_put import gup_put_folio

    heads = _heads(k, pages).tolist()
    i = 0
    while i < len(heads):
        j = i
        while j < len(heads) and heads[j] == heads[i]:
            j += 1
        run_to_completion(gup_put_folio(k, heads[i], j - i, FOLL_PIN))
        i = j
