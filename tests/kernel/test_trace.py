"""Traces of kernel programs read as kernel state: render_kernel and the per-key diff.

Each row is a 2-thread kernel program (pinlab.scenarios.harness.kernel_program),
searched breadth-first for a counterexample or replayed along a fixed schedule; its
printed trace must name the kernel function and line of each listed step and show
what the step changed in dump_page words, and never the digest the states are keyed by.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import pytest

from pinlab.explore import FinalCheck, GenThread, Options, encode, explore, replay
from pinlab.explore.program import WorldProgram
from pinlab.explore.replay import make_system
from pinlab.explore.world import diff
from pinlab.interleave import Yield
from pinlab.interleave import run_to_completion as run
from pinlab.kernel import process as P
from pinlab.kernel.mm.fork_copy import copy_present_pte, raw_write_seqcount
from pinlab.kernel.mm.gup import mm_set_has_pinned_flag, page_array
from pinlab.kernel.mm.gup_fast import pin_user_pages_fast
from pinlab.kernel.mm.gup_fast_walk import gup_pte_range
from pinlab.kernel.mm.gup_flags import FOLL_WRITE
from pinlab.kernel.mm.gup_grab import _pin_folio, node_stat_mod_folio, try_get_folio
from pinlab.kernel.mm.gup_put import gup_put_folio
from pinlab.kernel.mm.gup_unpin import unpin_user_page
from pinlab.kernel.mm.locking import mmap_read_lock, mmap_write_lock, pte_lock
from pinlab.kernel.mm.memory import do_anonymous_page
from pinlab.kernel.mm.mmap import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from pinlab.kernel.mm.pgtable import PAGE_SIZE, PMD_SIZE, get_pte, pte_pfn
from pinlab.kernel.mm.pte_alloc import pte_alloc
from pinlab.kernel.mm.swap import folio_add_lru, lru_add_drain
from pinlab.kernel.mm.types import Task
from pinlab.kernel.state import BootParams, Kernel, boot, kernel_copy, kernel_digest
from pinlab.kernel.trace import render_kernel
from pinlab.kernel.uaccess import user_access
from pinlab.scenarios.harness import kernel_program

RW = PROT_READ | PROT_WRITE
PFN = r"0x[0-9a-f]+"
ADDR = r"0x[0-9a-f]+"


# --- kernels the programs start from -------------------------------------------------


def _task(k: Kernel) -> Task:
    return k.tasks[min(k.tasks)]


def _addr(k: Kernel) -> int:
    """The start of the process's first mapping."""
    return k.mms[_task(k).mm].vmas[0].vm_start


def _thp_base(k: Kernel) -> int:
    """The first PMD-aligned address of the process's first mapping."""
    return (_addr(k) + PMD_SIZE - 1) & ~(PMD_SIZE - 1)


def one_anon_page() -> Kernel:
    """A process with one private anonymous page mapped, not yet touched."""
    k = boot("6.1", BootParams(normal_mb=8))
    t = P.new_task(k)
    run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    return k


def faulted_anon_page() -> Kernel:
    """The page written once (a write fault) and the LRU batch drained: refcount 1."""
    k = one_anon_page()
    run(user_access(k, _task(k), _addr(k), True, 1))
    run(lru_add_drain(k, 0))
    return k


def pinned_anon_page() -> Kernel:
    """The faulted page pinned by pin_user_pages_fast(FOLL_WRITE): refcount 1025."""
    k = faulted_anon_page()
    mm = k.mms[_task(k).mm]
    assert run(pin_user_pages_fast(k, mm, _addr(k), 1, FOLL_WRITE, page_array(1))) == 1
    return k


def faulted_thp() -> Kernel:
    """A 2 MiB anonymous THP mapped by a PMD, written once, the batch drained."""
    k = boot("6.1", BootParams(normal_mb=8))
    t = P.new_task(k)
    run(P.sys_mmap(k, t, None, 2 * PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    run(user_access(k, t, _thp_base(k), True, 1))
    run(lru_add_drain(k, 0))
    return k


# --- thread bodies ---------------------------------------------------------------------


def store_1(k: Kernel) -> Generator[Yield, None, None]:
    yield from user_access(k, _task(k), _addr(k), True, 1)


def store_2(k: Kernel) -> Generator[Yield, None, None]:
    yield from user_access(k, _task(k), _addr(k), True, 2)


def store_thp(k: Kernel) -> Generator[Yield, None, None]:
    yield from user_access(k, _task(k), _thp_base(k), True, 2)


def pin_then_unpin(k: Kernel) -> Generator[Yield, None, None]:
    """pin_user_pages_fast(FOLL_WRITE) of the first page, then unpin_user_page."""
    pages = page_array(1)
    got = yield from pin_user_pages_fast(k, k.mms[_task(k).mm], _addr(k), 1, FOLL_WRITE, pages)
    assert got == 1
    yield from unpin_user_page(k, int(pages[0]))


def pin_then_unpin_subpage(k: Kernel) -> Generator[Yield, None, None]:
    """The same on the fourth subpage of the THP."""
    pages = page_array(1)
    addr = _thp_base(k) + 3 * PAGE_SIZE
    got = yield from pin_user_pages_fast(k, k.mms[_task(k).mm], addr, 1, FOLL_WRITE, pages)
    assert got == 1
    yield from unpin_user_page(k, int(pages[0]))


def fork(k: Kernel) -> Generator[Yield, None, None]:
    yield from P.sys_fork(k, _task(k))


def unpin_mapped(k: Kernel) -> Generator[Yield, None, None]:
    """unpin_user_page of the page the parent maps (pinned before the program ran)."""
    yield from unpin_user_page(k, pte_pfn(get_pte(k.mms[_task(k).mm].pgtable, _addr(k))))


# --- properties ------------------------------------------------------------------------


def a_stores_last(k: Kernel) -> bool:
    return int(k.mem.data[pte_pfn(get_pte(k.mms[_task(k).mm].pgtable, _addr(k)))]) == 1


def child_shares(k: Kernel) -> bool:
    parent, child = min(k.mms), max(k.mms)
    ptes = [get_pte(k.mms[mm].pgtable, _addr(k)) for mm in (parent, child)]
    return pte_pfn(ptes[0]) == pte_pfn(ptes[1])


# --- the table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A 2-thread program, how it is run, and the steps its trace must show.

    With ``final``, the program is searched breadth-first and the counterexample for it
    replayed; without, thread 0 runs as far as it can, then thread 1, and that
    schedule is replayed.  Each expected step is (kernel function, pattern): some trace
    line must be at a source line of that function and show a change matching pattern.
    """

    name: str
    make_kernel: Callable[[], Kernel]
    threads: tuple[Callable[[Kernel], Generator[Yield, None, None]], ...]
    final: FinalCheck | None
    steps: tuple[tuple[Callable[..., Any], str], ...]


ROWS = [
    Row(
        "fault-on-anon-page",
        one_anon_page,
        (store_1, store_2),
        FinalCheck("A stores last", a_stores_last),
        (
            (mmap_read_lock, r"\+lock mmap mm1: read:1"),
            # do_anonymous_page allocates the page in the step that installed the PTE
            # table under the PMD lock (pte_alloc), before taking the PTE lock
            (pte_alloc, rf"\+page {PFN}: refcount:1 mapcount:0 index:0x0 flags:"),
            (pte_lock, rf"\+lock ptl mm1 {ADDR}: held"),
            (do_anonymous_page, rf"page {PFN}: mapcount: 0 -> 1, \+mapping: anon_vma\d+"),
            (folio_add_lru, rf"page {PFN}: refcount: 1 -> 2"),
            (folio_add_lru, rf"\+pte mm1 {ADDR}: pfn {PFN} rw dirty young"),
            (folio_add_lru, rf"\+lru_add cpu0: {PFN}"),
            (folio_add_lru, rf"-lock ptl mm1 {ADDR}"),
            (user_access, rf"page {PFN}: \+data: 1"),
            (user_access, rf"page {PFN}: data: 1 -> 2"),
        ),
    ),
    Row(
        "pin-unpin-small",
        faulted_anon_page,
        (pin_then_unpin, store_2),
        None,
        (
            (mm_set_has_pinned_flag, r"mm1: flags: 0x0 -> has_pinned"),
            (gup_pte_range, ""),
            (try_get_folio, rf"page {PFN}: refcount: 1 -> 2"),
            # a small folio's pin is GUP_PIN_COUNTING_BIAS in its refcount
            (_pin_folio, rf"page {PFN}: refcount: 2 -> 1025"),
            (node_stat_mod_folio, r"\+vmstat nr_foll_pin_acquired: 1"),
            (node_stat_mod_folio, r"\+vmstat nr_foll_pin_released: 1"),
            (gup_put_folio, rf"page {PFN}: refcount: 1025 -> 1"),
            (user_access, rf"page {PFN}: data: 1 -> 2"),
        ),
    ),
    Row(
        "pin-unpin-thp-subpage",
        faulted_thp,
        (pin_then_unpin_subpage, store_thp),
        None,
        (
            (try_get_folio, rf"page {PFN}: refcount: 1 -> 2"),
            (_pin_folio, rf"page {PFN}: compound_pincount: 0 -> 1"),
            (gup_put_folio, rf"page {PFN}: compound_pincount: 1 -> 0"),
            (gup_put_folio, rf"page {PFN}: refcount: 2 -> 1"),
        ),
    ),
    Row(
        "fork-of-pinned-page",
        pinned_anon_page,
        (fork, unpin_mapped),
        FinalCheck("the child shares the parent's page", child_shares),
        (
            (mmap_write_lock, r"\+lock mmap mm1: write"),
            (raw_write_seqcount, r"mm1: write_protect_seq: 0 -> 1"),
            (copy_present_pte, rf"page {PFN}: refcount: 1025 -> 1026"),
            # page_needs_cow_for_dma: the child gets a copy of the pinned page
            (copy_present_pte, rf"\+page {PFN}: refcount:1 mapcount:0"),
            (folio_add_lru, rf"\+pte mm\d+ {ADDR}: pfn {PFN} rw dirty young"),
            (raw_write_seqcount, r"\+task \d+: mm:mm\d+ parent:\d+"),
            (gup_put_folio, rf"page {PFN}: refcount: 1025 -> 1"),
        ),
    ),
]


def _program(row: Row) -> WorldProgram:
    threads = tuple(GenThread(name, body) for name, body in zip("AB", row.threads, strict=True))
    finals = () if row.final is None else (row.final,)
    return kernel_program(row.name, row.make_kernel, threads, finals=finals)


def _one_after_another(program: WorldProgram) -> str:
    """The schedule running thread 0 as far as it can go, then thread 1."""
    system = make_system(program, cache=False)
    node = system.root()
    moves = []
    for tid in range(len(program.threads)):
        while system.status(node, tid)[0]:
            node, err = system.step(node, (tid, 0))
            assert err is None, err
            moves.append((tid, 0))
    return encode(program, moves)


def _trace(row: Row) -> str:
    program = _program(row)
    if row.final is None:
        return replay(program, _one_after_another(program)).render()
    result = explore(program, Options(strategy="bfs"))
    (cx,) = result.counterexamples
    assert (cx.kind, cx.name) == ("final", row.final.name)
    assert "b'" not in cx.detail and "\\x" not in cx.detail
    rep = replay(program, cx.schedule)
    assert rep.reaches("final", row.final.name)
    return rep.render()


def _lines_in(text: str, fn: Callable[..., Any]) -> list[str]:
    """The trace lines of steps at a source line of ``fn``."""
    source, first = inspect.getsourcelines(fn)
    out = []
    for line in text.splitlines():
        for hit in re.finditer(rf"(?<![\w.]){re.escape(fn.__name__)}:(\d+)", line):
            if first <= int(hit.group(1)) < first + len(source):
                out.append(line)
                break
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_trace_shows_kernel_steps_and_page_state(row: Row) -> None:
    text = _trace(row)
    for fn, pattern in row.steps:
        lines = _lines_in(text, fn)
        assert lines, f"no step at {fn.__name__} in\n{text}"
        assert any(re.search(pattern, line) for line in lines), (
            f"no step at {fn.__name__} shows {pattern!r} in\n{text}"
        )
    assert "b'" not in text and "\\x" not in text  # never the digest the states are keyed by


def test_a_digest_keyed_program_without_render_never_shows_the_bytes() -> None:
    program = dataclasses.replace(_program(ROWS[1]), render=None)
    text = replay(program, _one_after_another(program)).render()
    assert "its key is a digest" in text
    assert "b'" not in text and "\\x" not in text


# --- render_kernel ---------------------------------------------------------------------


def _built(order: tuple[str, ...]) -> Kernel:
    """Two written anon pages and a read ext4 MAP_SHARED page, then ``order``'s ops."""
    k = boot("6.1", BootParams(normal_mb=8))
    t = P.new_task(k)
    anon = run(P.sys_mmap(k, t, None, 2 * PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS))
    file = P.ext4_create(k, PAGE_SIZE)
    shared = run(P.sys_mmap(k, t, None, PAGE_SIZE, RW, MAP_SHARED, file))
    for i in range(2):
        run(user_access(k, t, anon + i * PAGE_SIZE, True, 10 + i))
    run(user_access(k, t, shared, False))
    run(lru_add_drain(k, 0))
    mm = k.mms[t.mm]
    for op in order:
        if op == "write":  # dirties the page-cache page: nr_dirty, nr_dirtied
            run(user_access(k, t, shared, True, 5))
        else:
            addr = anon + int(op.removeprefix("pin")) * PAGE_SIZE
            assert run(pin_user_pages_fast(k, mm, addr, 1, FOLL_WRITE, page_array(1))) == 1
    return k


def test_render_is_the_same_for_one_state_reached_along_different_orders() -> None:
    orders = [("pin0", "write", "pin1"), ("pin1", "write", "pin0"), ("write", "pin1", "pin0")]
    kernels = [_built(order) for order in orders]
    # the same state, its containers filled in different orders (vmstat counters here)
    assert len({kernel_digest(k) for k in kernels}) == 1
    assert len({tuple(k.vmstat.counters) for k in kernels}) > 1
    texts = {render_kernel(k) for k in kernels}
    assert len(texts) == 1
    (text,) = texts
    assert "vmstat nr_foll_pin_acquired: 2" in text
    assert re.search(rf"cache file\d+ 0x0: pfn {PFN} dirty", text)
    assert re.search(r"page 0x\w+: refcount:1025 mapcount:1 mapping:anon_vma\d+", text)

    # every dict and set of the state rebuilt in reverse order: still the same text
    k = kernel_copy(kernels[0])
    k.mms = dict(reversed(k.mms.items()))
    for mm in k.mms.values():
        mm.pgtable.pte = dict(reversed(mm.pgtable.pte.items()))
    for mapping in k.mappings.values():
        mapping.i_pages = dict(reversed(mapping.i_pages.items()))
    k.vmstat.counters = dict(reversed(k.vmstat.counters.items()))
    assert kernel_digest(k) == kernel_digest(kernels[0])
    assert render_kernel(k) == text

    # and a different state renders differently, sorted by key
    other = render_kernel(_built(("pin0",)))
    assert other != text
    lines = other.splitlines()
    assert all(": " in line for line in lines)
    assert len({line.partition(": ")[0] for line in lines}) == len(lines)


# --- diff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key0", "key1", "text0", "text1", "want"),
    [
        # tuple world keys keep the field diff
        ((0, False), (1, False), "", "", "[0]: 0->1"),
        # key: value lines: per key, and per name:value word
        (
            b"\x01",
            b"\x02",
            "page 0x1: refcount:1 mapcount:0\nlock ptl mm1 0x0: held\nnext_id: 3",
            "page 0x1: refcount:2 mapcount:0 data:7\nnext_id: 4\npte mm1 0x0: pfn 0x1 rw",
            "page 0x1: refcount: 1 -> 2, +data: 7; next_id: 3 -> 4; "
            "+pte mm1 0x0: pfn 0x1 rw; -lock ptl mm1 0x0",
        ),
        # values that are not name:value words change as a whole
        (
            b"\x01",
            b"\x02",
            "pte mm1 0x0: pfn 0x1 rw",
            "pte mm1 0x0: pfn 0x1 ro",
            "pte mm1 0x0: pfn 0x1 rw -> pfn 0x1 ro",
        ),
        # a digest with nothing rendered: never the bytes
        (
            b"\x01",
            b"\x02",
            "",
            "",
            "(the state changed; its key is a digest and it is not rendered)",
        ),
        # texts that are not key: value lines: the new lines, as before
        (3, 4, "x=3", "x=4", "x=4"),
    ],
)
def test_diff(key0: object, key1: object, text0: str, text1: str, want: str) -> None:
    got = diff(key0, key1, text0, text1)
    assert got == want
    assert "b'" not in got and "\\x" not in got
