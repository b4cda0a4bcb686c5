"""pinlab equivalent of pinbias.pml: the FOLL_PIN bias design (pin_user_pages, v5.6+).

A pin adds GUP_PIN_COUNTING_BIAS (scaled down to BIAS) to the refcount;
page_maybe_dma_pinned() is refcount >= BIAS.  Writeback tests it under the page lock
after page_mkclean(); a FOLL_WRITE pin needs a writable PTE and otherwise takes the
write fault, which waits for writeback to end.  Steps follow ``./pan -d`` of the
Promela model and line numbers refer to pinbias.pml, so state counts equal SPIN's.
"""

from __future__ import annotations

from typing import NamedTuple

from pinlab.anchors.common import check_byte, end_step, step
from pinlab.explore import Invariant, Machine, MachineProgram, Transition

BASE = 3  # page cache + one mapping + buffers (PagePrivate)


class Page(NamedTuple):
    """The page, the ghost pin count, and SPIN's count of live processes."""

    refcount: int
    pins: int
    pte_w: int
    dirty: int
    writeback: int
    locked: int
    dma: int
    nlive: int


def _assign(src: str, dst: str, line: int, field: str, value: int) -> Transition:
    """``field = value`` as one step."""
    return step(
        src,
        dst,
        line,
        f"{field} = {value}",
        act=lambda g, loc: (g._replace(**{field: value}), loc),
        w=field,
    )


def _lock(src: str, dst: str, line: int) -> Transition:
    """lock_page(): ``atomic { !locked -> locked = 1 }``."""
    return step(
        src,
        dst,
        line,
        "atomic { !locked -> locked = 1 }",
        guard=lambda g, _l: not g.locked,
        act=lambda g, loc: (g._replace(locked=1), loc),
        r="locked",
        w="locked",
    )


def _gup(bias: int) -> Machine:
    """pin_user_pages(FOLL_WRITE) -> DMA -> unpin_user_pages_dirty_lock() (pid 1)."""
    ts = (
        step(
            "retry",
            "dma1",
            76,
            "atomic { pte_w -> refcount += BIAS; pins++ }",
            guard=lambda g, _l: bool(g.pte_w),
            act=lambda g, loc: (g._replace(refcount=g.refcount + bias, pins=g.pins + 1), loc),
            r="pte_w refcount pins",
            w="refcount pins",
        ),
        step("retry", "fault_lock", 76, "(!pte_w)", guard=lambda g, _l: not g.pte_w, r="pte_w"),
        _lock("fault_lock", "wait_wb", 80),
        step(
            "wait_wb",
            "setdirty",
            81,
            "(!writeback)",
            guard=lambda g, _l: not g.writeback,
            r="writeback",
        ),
        _assign("setdirty", "mkwrite", 82, "dirty", 1),
        _assign("mkwrite", "unlock_fault", 83, "pte_w", 1),
        _assign("unlock_fault", "retry", 84, "locked", 0),
        _assign("dma1", "dma0", 87, "dma", 1),
        _assign("dma0", "lock", 88, "dma", 0),
        _lock("lock", "setdirty2", 89),
        _assign("setdirty2", "unlock", 90, "dirty", 1),
        _assign("unlock", "unpin", 91, "locked", 0),
        step(
            "unpin",
            "end",
            92,
            "atomic { refcount -= BIAS; pins-- }",
            act=lambda g, loc: (g._replace(refcount=g.refcount - bias, pins=g.pins - 1), loc),
            r="refcount pins",
            w="refcount pins",
        ),
        end_step("end", 93, pid=1),
    )
    return Machine("Gup", "retry", ts)


def _writeback(bias: int, mut: int) -> Machine:
    """write_cache_pages() for this page, ->writepage(), I/O end (pid 2)."""
    pinned = "(refcount >= BIAS)"
    after_dirty = "pintest_early" if mut else "mkclean"
    ts = [
        _lock("lock", "dirtytest", 98),
        step(
            "dirtytest", "unlock_out", 100, "(!dirty)", guard=lambda g, _l: not g.dirty, r="dirty"
        ),
        step("dirtytest", after_dirty, 100, "else", guard=lambda g, _l: bool(g.dirty), r="dirty"),
        _assign("unlock_out", "out", 100, "locked", 0),
    ]
    if mut:
        ts += [
            step(
                "pintest_early",
                "unlock_early",
                105,
                pinned,
                guard=lambda g, _l: g.refcount >= bias,
                r="refcount",
            ),
            step(
                "pintest_early",
                "mkclean",
                105,
                "else",
                guard=lambda g, _l: g.refcount < bias,
                r="refcount",
            ),
            _assign("unlock_early", "out", 105, "locked", 0),
        ]
    ts += [
        _assign("mkclean", "clear", 109, "pte_w", 0),
        _assign("clear", "setwb" if mut else "pintest", 110, "dirty", 0),
    ]
    if not mut:
        ts += [
            step(
                "pintest",
                "redirty",
                113,
                pinned,
                guard=lambda g, _l: g.refcount >= bias,
                r="refcount",
            ),
            step(
                "pintest", "setwb", 113, "else", guard=lambda g, _l: g.refcount < bias, r="refcount"
            ),
            _assign("redirty", "unlock_skip", 114, "dirty", 1),
            _assign("unlock_skip", "out", 114, "locked", 0),
        ]
    ts += [
        _assign("setwb", "unlock", 118, "writeback", 1),
        _assign("unlock", "endwb", 119, "locked", 0),
        _assign("endwb", "out", 120, "writeback", 0),
        step("out", "end", 122, "skip"),
        end_step("end", 123, pid=2),
    ]
    return Machine("Writeback", "lock", tuple(ts))


def _spec(r: int) -> Machine:
    """Unrelated get_page()/put_page(), holding up to R references."""
    return Machine(
        "Spec",
        "loop",
        (
            step(
                "loop",
                "loop",
                130,
                "atomic { held < R -> refcount++; held++ }",
                guard=lambda _g, held: held < r,
                act=lambda g, held: (g._replace(refcount=g.refcount + 1), held + 1),
                r="refcount",
                w="refcount",
            ),
            step(
                "loop",
                "loop",
                131,
                "atomic { held > 0 -> refcount--; held-- }",
                guard=lambda _g, held: held > 0,
                act=lambda g, held: (g._replace(refcount=g.refcount - 1), held - 1),
                r="refcount",
                w="refcount",
            ),
        ),
        locals=0,
        ends=frozenset({"loop"}),
    )


def pinbias(K: int = 1, R: int = 1, BIAS: int = 4, PROP: int = 1, MUT: int = 0) -> MachineProgram:
    """The program for pinbias.pml with these -D parameters."""
    if K < 0 or R < 1 or PROP not in (1, 2) or MUT not in (0, 1):
        raise ValueError(
            f"pinbias: need K >= 0, R >= 1, PROP in 1/2, MUT in 0/1 "
            f"(got K={K}, R={R}, PROP={PROP}, MUT={MUT})"
        )
    if BIAS <= BASE:
        raise ValueError(f"pinbias: BIAS must exceed BASE={BASE} (got {BIAS})")
    check_byte(BASE + K * R + BIAS, "refcount")
    if PROP == 1:
        inv = Invariant(
            "no DMA under writeback",
            lambda s: not (s[0].dma and s[0].writeback),
            frozenset({"dma", "writeback"}),
        )
    else:
        inv = Invariant(
            "no false positive",
            lambda s: not (s[0].pins == 0 and s[0].refcount >= BIAS),
            frozenset({"pins", "refcount"}),
        )
    spec = _spec(R)
    return MachineProgram(
        name="pinbias",
        shared=Page(
            refcount=BASE, pins=0, pte_w=1, dirty=1, writeback=0, locked=0, dma=0, nlive=3 + K
        ),
        threads=(_gup(BIAS), _writeback(BIAS, MUT), *([spec] * K)),
        invariants=(inv,),
        symmetric=((2, 2 + K),) if K > 1 else (),
        params=(("K", K), ("R", R), ("BIAS", BIAS), ("PROP", PROP), ("MUT", MUT)),
        source="pinbias.pml",
    )
