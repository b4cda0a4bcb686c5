"""gup-fast's lockless walk as one whole-range step (v6.1 mm/gup.c gup_pgd_range).

`lockless_range` computes, with NumPy over the PTE tables and huge entries,
where gup_pte_range / gup_huge_pmd / gup_huge_pud would stop, then applies
every grab of the prefix at once: refcounts, exact pincounts, vmstat,
PG_referenced, the pages array, and the grab-then-put of an entry refused
after its grab.  It returns None (the caller walks entry by entry) for what
it does not mirror: device-map entries, a count that is <= 0 or would cross
INT_MAX, a walk that would overrun the caller's array.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from pinlab.kernel.mm.gup_flags import FOLL_FORCE, FOLL_LONGTERM, FOLL_PIN, FOLL_WRITE
from pinlab.kernel.mm.gup_page import folio_fast_pin_allowed
from pinlab.kernel.mm.gup_range import _folio_facts, _heads, _must_unshare, unpinnable
from pinlab.kernel.mm.memmap import HUGETLB_PAGE_DTOR, PAGE_MAPPING_ANON
from pinlab.kernel.mm.page_ref import INT_MAX
from pinlab.kernel.mm.pgtable import (
    _PAGE_DEVMAP,
    _PAGE_PRESENT,
    _PAGE_PROTNONE,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_SPECIAL,
    _PAGE_USER,
    PAGE_SHIFT,
    PMD_SHIFT,
    PTE_PFN_MASK,
    PUD_SHIFT,
)
from pinlab.kernel.mm.types import MmStruct
from pinlab.kernel.mm.vmstat import NR_FOLL_PIN_ACQUIRED, NR_FOLL_PIN_RELEASED, mod_node_page_state

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

I64 = NDArray[np.int64]
Bools = NDArray[np.bool_]


def fast_range_ok(k: Kernel, flags: int, start: int, end: int) -> bool:
    """Whether the walk may run as one step: nothing interleaves, no hook, a non-empty range."""
    h = k.hooks
    hooks = (h.pin_record, h.pin_release, h.gup_page, h.maybe_dma_pinned)
    return not k.fine_grained and all(x is None for x in hooks) and end > start


def _entries(mm: MmStruct, start: int, end: int) -> tuple[NDArray[np.uint64], I64, I64, I64]:
    """Entries the walk reads, in order: (value, is-PTE flag, subpages covered, first subpage)."""
    pt = mm.pgtable
    vals: list[NDArray[np.uint64]] = []
    kinds: list[I64] = []
    refs: list[I64] = []
    firsts: list[I64] = []
    addr = start
    while addr < end:
        pud = pt.pud.get(addr >> PUD_SHIFT, 0)
        slot = addr >> PMD_SHIFT
        pmd = pt.pmd.get(slot, 0)
        if pud or pmd & _PAGE_PSE:
            shift = PUD_SHIFT if pud else PMD_SHIFT
            entry = pud or pmd
            nxt = min(((addr >> shift) + 1) << shift, end)
            head = (entry & PTE_PFN_MASK) >> PAGE_SHIFT
            vals.append(np.array([entry], np.uint64))
            kinds.append(np.zeros(1, np.int64))
            refs.append(np.array([(nxt - addr) >> PAGE_SHIFT], np.int64))
            firsts.append(np.array([head + ((addr & ((1 << shift) - 1)) >> PAGE_SHIFT)], np.int64))
            addr = nxt
            continue
        table = pt.pte.get(slot)
        if table is None:
            break
        nxt = min((slot + 1) << PMD_SHIFT, end)
        idx = (addr >> PAGE_SHIFT) & 511
        part = table[idx : idx + ((nxt - addr) >> PAGE_SHIFT)]
        vals.append(part)
        kinds.append(np.ones(part.shape[0], np.int64))
        refs.append(np.ones(part.shape[0], np.int64))
        firsts.append(((part & np.uint64(PTE_PFN_MASK)) >> np.uint64(PAGE_SHIFT)).astype(np.int64))
        addr = nxt
    if not vals:
        empty = np.zeros(0, np.int64)
        return np.zeros(0, np.uint64), empty, empty, empty
    return np.concatenate(vals), np.concatenate(kinds), np.concatenate(refs), np.concatenate(firsts)


def _file_pin_refused(k: Kernel, heads: I64, flags: int) -> Bools:
    """v6.5 mm/gup.c folio_fast_pin_allowed, negated, per folio head."""
    want = FOLL_PIN | FOLL_LONGTERM | FOLL_WRITE
    out = np.zeros(heads.shape, np.bool_)
    if not k.profile.longterm_file_write_refused or flags & want != want:
        return out
    m = k.mem
    anon = (m.mapping[heads] & PAGE_MAPPING_ANON) != 0
    nxt = np.minimum(heads + 1, m.nr_pages - 1)
    hugetlb = (m.head[nxt] == heads) & (m.dtor[nxt] == HUGETLB_PAGE_DTOR)
    for i in np.flatnonzero(~anon & ~hugetlb).tolist():
        out[i] = not folio_fast_pin_allowed(k, int(heads[i]), flags)
    return out


def _non_anon_unshare(k: Kernel, heads: I64, flags: int) -> Bools:
    """v6.5 mm/internal.h:985-993 gup_must_unshare from gup-fast (no VMA): a R/O long-term pin
    unshares every folio that is not anon (profile.unshare_non_anon)."""
    ro_longterm = flags & (FOLL_WRITE | FOLL_PIN | FOLL_LONGTERM) == FOLL_PIN | FOLL_LONGTERM
    if not (k.profile.unshare_non_anon and k.profile.page_anon_exclusive and ro_longterm):
        return np.zeros(heads.shape, np.bool_)
    result: Bools = (k.mem.mapping[heads] & PAGE_MAPPING_ANON) == 0
    return result


def lockless_range(
    k: Kernel, mm: MmStruct, start: int, end: int, flags: int, pages: I64
) -> int | None:
    """The walk's result in one step (pages grabbed), or None to walk entry by entry."""
    vals, kind, refs, first = _entries(mm, start, end)
    if not vals.shape[0]:
        return 0
    is_pte = kind == 1
    write = bool(flags & FOLL_WRITE)
    need = np.uint64(_PAGE_PRESENT | _PAGE_USER | (_PAGE_RW if write else 0))
    devmap = (vals & np.uint64(_PAGE_DEVMAP)) != 0
    protnone = (vals & np.uint64(_PAGE_PROTNONE | _PAGE_PRESENT)) == np.uint64(_PAGE_PROTNONE)
    before = (vals & need) != need
    if not flags & FOLL_FORCE:
        before |= protnone
    if flags & FOLL_LONGTERM:
        before |= devmap
    before |= is_pte & ~devmap & ((vals & np.uint64(_PAGE_SPECIAL)) != 0)
    refused = np.zeros(vals.shape, np.bool_)
    pin = bool(flags & FOLL_PIN)
    if pin and flags & FOLL_LONGTERM:
        refused = unpinnable(k, first) & ~before
    stop_pre = before | refused
    limit = int(np.argmax(stop_pre)) if stop_pre.any() else vals.shape[0]
    if devmap[:limit].any():
        return None
    heads = _heads(k, first[:limit])
    ro = (vals[:limit] & np.uint64(_PAGE_RW)) == 0
    after = _file_pin_refused(k, heads, flags)
    if ro.any():
        unshare_at = np.where(is_pte[:limit], first[:limit], heads)
        after |= ro & _must_unshare(k, unshare_at, heads, flags)
        after |= ro & _non_anon_unshare(k, heads, flags)
    got = int(np.argmax(after)) if after.any() else limit
    churn = got < limit
    tried = got + 1 if churn else got
    folios, inverse = np.unique(heads[:tried], return_inverse=True)
    exact, _ = _folio_facts(k, folios)
    delta = np.where(exact, 1, k.profile.pin_bias) if pin else np.ones(folios.shape, np.int64)
    cnt_all = np.bincount(inverse, weights=refs[:tried], minlength=folios.shape[0]).astype(np.int64)
    m = k.mem
    ref0 = m.refcount[folios].astype(np.int64)
    if (ref0 <= 0).any() or (ref0 + cnt_all * delta > INT_MAX).any():
        return None
    total = int(refs[:got].sum())
    stop = got if churn else limit
    # record_subpages fills a huge entry's slots before its grab can be refused
    garbage = stop < vals.shape[0] and not is_pte[stop] and bool(churn or refused[stop])
    if total + (int(refs[stop]) if garbage else 0) > pages.shape[0]:
        return None
    cnt = cnt_all
    if churn:
        cnt = cnt_all.copy()
        cnt[inverse[got]] -= refs[got]
    m.refcount[folios] = (ref0 + cnt * delta).astype(np.int32)
    if pin:
        at = folios[exact] + k.profile.pincount_page
        m.pincount[at] += cnt[exact].astype(np.int32)
        if k.profile.vmstat_foll_pin and tried:
            mod_node_page_state(k.vmstat, NR_FOLL_PIN_ACQUIRED, int(refs[:tried].sum()))
            if churn:
                mod_node_page_state(k.vmstat, NR_FOLL_PIN_RELEASED, int(refs[got]))
    grabbed = folios[cnt > 0] if churn else folios
    m.flags[grabbed] |= np.uint64(k.pf.mask("PG_referenced"))
    r = refs[:got]
    out = (
        np.repeat(first[:got], r)
        + np.arange(total, dtype=np.int64)
        - np.repeat(np.cumsum(r) - r, r)
    )
    pages[:total] = out
    if garbage:
        lo = int(first[stop])
        pages[total : total + int(refs[stop])] = np.arange(lo, lo + int(refs[stop]), dtype=np.int64)
    return total
