"""pinlab equivalent of hillf.pml: Hillf Danton's page_try_gup_pin() (LKML, Nov 2019).

One file page; gup, writeback and K unrelated get_page/put_page threads.  Invariant:
never (DMA in flight and PageWriteback).  Positions and steps follow ``./pan -d`` of
the Promela model, line numbers refer to hillf.pml, so reachable-state counts equal
SPIN's with ``-DNOREDUCE``.  Thread i is SPIN pid i + 1 (pid 0 is the monitor, here
the invariant).
"""

from __future__ import annotations

from typing import NamedTuple

from pinlab.anchors.common import check_byte, end_step, step
from pinlab.explore import Invariant, Machine, MachineProgram

MAPCOUNT = 1  # page_mapcount(page)
PRIVATE = 1  # page_has_private(page)
THRESH = MAPCOUNT + 1 + PRIVATE  # references expected without gup


class Page(NamedTuple):
    """The page's state, and SPIN's count of live processes."""

    refcount: int  # count in hillf.pml: page_ref_count
    dirty: int
    writeback: int
    locked: int
    dma: int
    nlive: int


def _try_pin(prefix: str, fail: str, won: str, lines: tuple[int, int, int, int]) -> list:  # type: ignore[type-arg]
    """page_try_gup_pin(): read the count, check it, inc_return, put_page on a lost race."""
    read, check, inc, race = lines
    return [
        step(
            f"{prefix}read",
            f"{prefix}check",
            read,
            "c = count",
            act=lambda g, loc: (g, (g.refcount, loc[1])),
            r="refcount",
        ),
        step(
            f"{prefix}check",
            fail,
            check,
            "(c == 0 || c > THRESH) -> c = 0",
            guard=lambda g, loc: loc[0] == 0 or loc[0] > THRESH,
            act=lambda g, loc: (g, (0, loc[1])),
        ),
        step(
            f"{prefix}check",
            f"{prefix}inc",
            check,
            "else",
            guard=lambda g, loc: not (loc[0] == 0 or loc[0] > THRESH),
        ),
        step(
            f"{prefix}inc",
            f"{prefix}won",
            inc,
            "d_step { count++; ok = (count == c + 1); c = 0 }",
            act=lambda g, loc: (
                g._replace(refcount=g.refcount + 1),
                (0, int(g.refcount + 1 == loc[0] + 1)),
            ),
            r="refcount",
            w="refcount",
        ),
        step(
            f"{prefix}won",
            fail,
            race,
            "atomic { !ok -> count-- }",
            guard=lambda g, loc: not loc[1],
            act=lambda g, loc: (g._replace(refcount=g.refcount - 1), loc),
            r="refcount",
            w="refcount",
        ),
        step(
            f"{prefix}won",
            won,
            race,
            "atomic { ok -> ok = 0 }",
            guard=lambda g, loc: bool(loc[1]),
            act=lambda g, loc: (g, (loc[0], 0)),
        ),
    ]


def _gup(order: int) -> Machine:
    """get_user_pages() on the file page, FOLL_GET, DMA, put_page (pid 1)."""
    ts = []
    if order == 0:
        ts += [
            step(
                "wbtest",
                "fail",
                69,
                "(writeback)",
                guard=lambda g, _l: bool(g.writeback),
                r="writeback",
            ),
            step("wbtest", "read", 69, "else", guard=lambda g, _l: not g.writeback, r="writeback"),
        ]
    after_pin = "dma1" if order == 0 else "retest"
    ts += _try_pin("", "fail", after_pin, (73, 75, 78, 80))
    if order == 1:
        ts += [
            step(
                "retest",
                "retest_put",
                85,
                "(writeback)",
                guard=lambda g, _l: bool(g.writeback),
                r="writeback",
            ),
            step("retest", "dma1", 85, "else", guard=lambda g, _l: not g.writeback, r="writeback"),
            step(
                "retest_put",
                "fail",
                85,
                "count--",
                act=lambda g, loc: (g._replace(refcount=g.refcount - 1), loc),
                r="refcount",
                w="refcount",
            ),
        ]
    ts += [
        step("dma1", "dma0", 89, "dma = 1", act=lambda g, loc: (g._replace(dma=1), loc), w="dma"),
        step("dma0", "dirty", 90, "dma = 0", act=lambda g, loc: (g._replace(dma=0), loc), w="dma"),
        step(
            "dirty",
            "put",
            91,
            "dirty = 1",
            act=lambda g, loc: (g._replace(dirty=1), loc),
            w="dirty",
        ),
        step(
            "put",
            "fail",
            92,
            "count--",
            act=lambda g, loc: (g._replace(refcount=g.refcount - 1), loc),
            r="refcount",
            w="refcount",
        ),
        step("fail", "end", 94, "skip"),
        end_step("end", 95, pid=1),
    ]
    return Machine("Gup", "wbtest" if order == 0 else "read", tuple(ts), locals=(0, 0))


def _writeback() -> Machine:
    """write_cache_pages() for this page, ->writepage() and I/O completion (pid 2)."""

    def put(g: Page, loc: tuple[int, int]) -> tuple[Page, tuple[int, int]]:
        return g._replace(refcount=g.refcount - 1), loc

    ts = _try_pin("", "out", "lock", (102, 104, 107, 109))
    ts += [
        step(
            "lock",
            "dirtytest",
            112,
            "atomic { !locked -> locked = 1 }",
            guard=lambda g, _l: not g.locked,
            act=lambda g, loc: (g._replace(locked=1), loc),
            r="locked",
            w="locked",
        ),
        step("dirtytest", "clear", 114, "(dirty)", guard=lambda g, _l: bool(g.dirty), r="dirty"),
        step("dirtytest", "unlock_skip", 114, "else", guard=lambda g, _l: not g.dirty, r="dirty"),
        step(
            "clear",
            "setwb",
            114,
            "dirty = 0",
            act=lambda g, loc: (g._replace(dirty=0), loc),
            w="dirty",
        ),
        step(
            "setwb",
            "unlock",
            117,
            "writeback = 1",
            act=lambda g, loc: (g._replace(writeback=1), loc),
            w="writeback",
        ),
        step(
            "unlock",
            "put",
            118,
            "locked = 0",
            act=lambda g, loc: (g._replace(locked=0), loc),
            w="locked",
        ),
        step("put", "endwb", 119, "count--", act=put, r="refcount", w="refcount"),
        step(
            "endwb",
            "out",
            120,
            "writeback = 0",
            act=lambda g, loc: (g._replace(writeback=0), loc),
            w="writeback",
        ),
        step(
            "unlock_skip",
            "put_skip",
            115,
            "locked = 0",
            act=lambda g, loc: (g._replace(locked=0), loc),
            w="locked",
        ),
        step("put_skip", "out", 115, "count--", act=put, r="refcount", w="refcount"),
        step("out", "end", 122, "skip"),
        end_step("end", 123, pid=2),
    ]
    return Machine("Writeback", "read", tuple(ts), locals=(0, 0))


SPEC = Machine(
    "Spec",
    "loop",
    (
        step(
            "loop",
            "loop",
            130,
            "atomic { held == 0 -> count++; held = 1 }",
            guard=lambda _g, held: held == 0,
            act=lambda g, _h: (g._replace(refcount=g.refcount + 1), 1),
            r="refcount",
            w="refcount",
        ),
        step(
            "loop",
            "loop",
            131,
            "atomic { held == 1 -> count--; held = 0 }",
            guard=lambda _g, held: held == 1,
            act=lambda g, _h: (g._replace(refcount=g.refcount - 1), 0),
            r="refcount",
            w="refcount",
        ),
    ),
    locals=0,
    ends=frozenset({"loop"}),
)


def hillf(K: int = 0, ORDER: int = 0, PRIVREF: int = 1) -> MachineProgram:
    """The program for hillf.pml with these -D parameters."""
    if K < 0 or ORDER not in (0, 1) or PRIVREF not in (0, 1):
        raise ValueError(
            f"hillf: need K >= 0, ORDER in 0/1, PRIVREF in 0/1 (got {K}, {ORDER}, {PRIVREF})"
        )
    count = 1 + MAPCOUNT + PRIVREF * PRIVATE
    check_byte(count + 2 + K, "count")
    return MachineProgram(
        name="hillf",
        shared=Page(refcount=count, dirty=1, writeback=0, locked=0, dma=0, nlive=3 + K),
        threads=(_gup(ORDER), _writeback(), *([SPEC] * K)),
        invariants=(
            Invariant(
                "no DMA under writeback",
                lambda s: not (s[0].dma and s[0].writeback),
                frozenset({"dma", "writeback"}),
            ),
        ),
        symmetric=((2, 2 + K),) if K > 1 else (),
        params=(("K", K), ("ORDER", ORDER), ("PRIVREF", PRIVREF)),
        source="hillf.pml",
    )
