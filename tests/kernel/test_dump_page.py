"""dump_page(): line structure per kernel version, values derived from model state and kernel facts.

States are built through the model's system calls (pinlab.cli.model examples):
a pinned 4 KiB anon page, a THP with one pinned subpage, an ext4 MAP_SHARED page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from pinlab.cli.model import (
    THP_SUBPAGE,
    anon_pinned,
    dump_page_cmd,
    file_page,
    thp_subpage_pinned,
)
from pinlab.interleave import run_to_completion
from pinlab.kernel.mm.debug import dump_page
from pinlab.kernel.mm.mmap import (
    MAP_ANONYMOUS,
    MAP_HUGE_1GB,
    MAP_HUGETLB,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from pinlab.kernel.process import new_task, pagemap, sys_mmap
from pinlab.kernel.state import BootParams, Kernel, boot
from pinlab.kernel.uaccess import user_access

# v6.1 include/linux/mm.h:1267 GUP_PIN_COUNTING_BIAS (1U << 10); same value in v5.7
GUP_PIN_COUNTING_BIAS = 1024
# v6.1 arch/x86/include/asm/pgtable_64_types.h __VMEMMAP_BASE_L4; sizeof(struct page) 64
VMEMMAP_START = 0xFFFFEA0000000000
# v6.1 mm/debug.c:91 / :97 / :107 / :132 and v6.1 lib/hexdump.c (4 x %16.16llx per row)
P61_FIRST = re.compile(
    r"^page:(?P<page>[0-9a-f]{16}) refcount:(?P<ref>-?\d+) mapcount:(?P<map>-?\d+) "
    r"mapping:(?P<mapping>[0-9a-f]{16}) index:(?P<index>0x[0-9a-f]+) pfn:(?P<pfn>0x[0-9a-f]+)$"
)
P61_HEAD = re.compile(
    r"^head:[0-9a-f]{16} order:(?P<order>\d+) compound_mapcount:(?P<cmap>-?\d+) "
    r"compound_pincount:(?P<pin>-?\d+)$"
)
# v6.5 mm/debug.c __dump_page: entire_mapcount / nr_pages_mapped / pincount
P65_HEAD = re.compile(
    r"^head:[0-9a-f]{16} order:(?P<order>\d+) entire_mapcount:(?P<cmap>-?\d+) "
    r"nr_pages_mapped:(?P<mapped>\d+) pincount:(?P<pin>-?\d+)$"
)
# v5.7 mm/debug.c __dump_page: one line, page and head as %px
P57_FIRST = re.compile(
    r"^page:(?P<page>[0-9a-f]{16}) refcount:(?P<ref>-?\d+) mapcount:(?P<map>-?\d+) "
    r"mapping:(?P<mapping>[0-9a-f]{16}) index:(?P<index>0x[0-9a-f]+)"
    r"(?: head:(?P<head>[0-9a-f]{16}) order:(?P<order>\d+) compound_mapcount:(?P<cmap>-?\d+)"
    r"(?: compound_pincount:(?P<pin>-?\d+))?)?$"
)
# v4.4 mm/debug.c dump_page_badflags
P44_FIRST = re.compile(
    r"^page:(?P<page>[0-9a-f]{16}) count:(?P<ref>-?\d+) mapcount:(?P<map>-?\d+) "
    r"mapping:(?P<mapping>[0-9a-f ()nul]{16}) index:(?P<index>0x[0-9a-f]+)$"
)
RAW = re.compile(r"^(raw|head): ((?:[0-9a-f]{16} ){3}[0-9a-f]{16})$")
# v6.1 include/trace/events/mmflags.h __def_pageflag_names (v5.7: same order, no arch_2)
NAME_ORDER = [
    "locked", "waiters", "error", "referenced", "uptodate", "dirty", "lru", "active",
    "workingset", "slab", "owner_priv_1", "arch_1", "reserved", "private", "private_2",
    "writeback", "head", "mappedtodisk", "reclaim", "swapbacked", "unevictable",
    "mlocked", "uncached", "hwpoison", "arch_2",
]  # fmt: skip


@dataclass(frozen=True)
class Style:
    """What a kernel version's dump_page prints (each field a fact with its source)."""

    profile: str
    pincount_page: int  # v6.1 mm_types.h:362 page[1]; v5.7 page[2] hpage_pinned_refcount
    hashed: bool  # %p hashing since v4.15 (v6.1 lib/vsprintf.c ptr_to_id); v5.7 uses %px
    fields: bool  # node=/zone=/lastcpupid= in %pGp since v5.14 (v6.1 lib/vsprintf.c:2013)
    anon_exclusive: bool  # PG_anon_exclusive (aliases mappedtodisk) since v5.19


STYLES = [
    Style("6.1", 1, True, True, True),
    Style("6.5", 1, True, True, True),
    Style("5.7", 2, False, False, False),
]


def _lines(k: Kernel, page: int, reason: str) -> list[str]:
    out = dump_page(k, page, reason)
    assert out[-1] == f"page dumped because: {reason}", "v6.1 mm/debug.c:132-133"
    return out


def _raw_words(lines: list[str], prefix: str) -> list[int]:
    rows = [RAW.match(x) for x in lines if x.startswith(prefix + ": ")]
    assert len(rows) == 2, "sizeof(struct page) 64 = two 32-byte rows (v6.1 lib/hexdump.c)"
    return [int(w, 16) for r in rows if r for w in r.group(2).split()]


def _first(style: Style, line: str) -> re.Match[str]:
    m = (P57_FIRST if style.profile == "5.7" else P61_FIRST).match(line)
    assert m, line
    return m


def _flags(lines: list[str]) -> tuple[str, int, list[str]]:
    (line,) = [x for x in lines if "flags: " in x]
    m = re.match(r"^(anon )?flags: (0x[0-9a-f]+)\((.*)\)$", line)
    assert m, line
    return m.group(1) or "", int(m.group(2), 16), m.group(3).split("|") if m.group(3) else []


def _check_name_order(names: list[str]) -> None:
    flags = [n for n in names if "=" not in n]
    assert flags == sorted(flags, key=NAME_ORDER.index), "mmflags.h name order, not bit order"


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.profile)
def test_small_anon_page_pinned(style: Style) -> None:
    k = boot(style.profile)
    ex = anon_pinned(k)
    page = ex.page
    lines = _lines(k, page, ex.reason)
    m = _first(style, lines[0])
    # One PTE reference + one FOLL_PIN = GUP_PIN_COUNTING_BIAS (v6.1 mm/gup.c try_grab_page)
    assert int(m["ref"]) == 1 + GUP_PIN_COUNTING_BIAS == int(k.mem.refcount[page])
    # page_mapcount = _mapcount + 1 (v6.1 include/linux/mm.h:882-887): one PTE
    assert int(m["map"]) == int(k.mem.mapcount[page]) + 1 == 1
    assert m["mapping"] == "0" * 16, "anon: page_mapping() is NULL, printed raw"
    assert style.profile == "5.7" or int(m["pfn"], 16) == page
    addr = VMEMMAP_START + page * 64
    if style.hashed:
        assert m["page"].startswith("00000000") and int(m["page"], 16) != addr
    else:
        assert int(m["page"], 16) == addr
    assert not any(x.startswith(("head:", "head: ")) for x in lines), "order-0: no head lines"
    kind, value, names = _flags(lines)
    assert kind == "anon "
    words = _raw_words(lines, "raw")
    assert words[0] == value
    assert words[6] >> 32 == int(m["ref"]), "word 6 high half is _refcount"
    assert words[6] & 0xFFFFFFFF == int(k.mem.mapcount[page]) & 0xFFFFFFFF
    assert words[3] & 1, "anon mapping word carries PAGE_MAPPING_ANON"
    assert {"uptodate", "swapbacked", "lru"} <= set(names)
    assert ("mappedtodisk" in names) == style.anon_exclusive, "PG_anon_exclusive alias"
    assert ("zone=2" in names) == style.fields
    _check_name_order(names)


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.profile)
def test_thp_subpage_pinned(style: Style) -> None:
    k = boot(style.profile)
    ex = thp_subpage_pinned(k)
    page = ex.page
    head = page - THP_SUBPAGE
    lines = _lines(k, page, ex.reason)
    m = _first(style, lines[0])
    # A large folio takes 1 ref per pin (v6.1 mm/gup.c try_grab_page): PMD map + pin
    assert int(m["ref"]) == 1 + 1 == int(k.mem.refcount[head])
    # Tail of a PMD-mapped anon THP: own _mapcount+1 plus compound_mapcount+1 (mm/util.c:787)
    assert int(m["map"]) == 1
    pincount = int(k.mem.pincount[head + style.pincount_page])
    assert pincount == 1
    if style.profile == "5.7":
        assert int(m["order"]) == 9 and int(m["cmap"]) == 1 and int(m["pin"]) == pincount
        assert int(m["head"], 16) == VMEMMAP_START + head * 64
    else:
        hm = (P65_HEAD if style.profile == "6.5" else P61_HEAD).match(lines[1])
        assert hm, lines[1]
        assert int(hm["order"]) == 9 and int(hm["cmap"]) == 1 and int(hm["pin"]) == pincount
    tail = _raw_words(lines, "raw")
    assert tail[1] == VMEMMAP_START + head * 64 + 1, "compound_head = head | 1"
    head_words = _raw_words(lines, "head")
    assert head_words[6] >> 32 == int(m["ref"])
    _, value, names = _flags(lines)
    # v6.1 prints the folio's flags; v5.7 prints the given (tail) page's own flags
    assert value == (tail[0] if style.profile == "5.7" else head_words[0])
    assert ("head" in names) == (style.profile != "5.7")
    _check_name_order(names)


@pytest.mark.parametrize(
    "style", [s for s in STYLES if s.profile != "5.7"], ids=lambda s: s.profile
)
def test_page1_raw_words_hold_order_and_pincount(style: Style) -> None:
    """v6.1 mm_types.h:141-146 page[1]: dtor/order/mapcount word, then pincount + nr."""
    k = boot(style.profile)
    ex = thp_subpage_pinned(k)
    head = ex.page - THP_SUBPAGE
    w = _raw_words(dump_page(k, head + 1, None), "raw")
    assert (w[2] >> 8) & 0xFF == 9 and w[2] >> 32 == int(k.mem.compound_mapcount[head + 1])
    pin = w[3] & 0xFFFFFFFF if style.profile == "6.1" else w[3] >> 32
    assert pin == 1


@pytest.mark.parametrize("profile", ["6.1", "6.5", "5.7", "4.4"])
def test_file_page(profile: str) -> None:
    k = boot(profile)
    ex = file_page(k)
    page = ex.page
    lines = _lines(k, page, ex.reason)
    first = P44_FIRST if profile == "4.4" else P57_FIRST if profile == "5.7" else P61_FIRST
    m = first.match(lines[0])
    assert m, lines[0]
    # page cache + PTE after the LRU batch is drained (page-diag.md 6, mm/filemap.c:839-870)
    assert int(m["ref"]) == 2 == int(k.mem.refcount[page])
    assert int(m["map"]) == 1 and int(m["index"], 16) == 0
    kind, _, names = _flags(lines)
    assert kind == "" and "uptodate" in names and "lru" in names
    if profile == "4.4":
        assert len(lines) == 3, "v4.4: page line, flags, reason; no raw dump"
        assert not m["mapping"].startswith("00000000"), "v4.4 %p is the raw address"
        return
    (aops,) = [x for x in lines if "aops" in x]
    if profile == "5.7":
        assert re.match(r'^mapping->aops:ext4_da_aops dentry name:"[^"]+"$', aops)
    else:
        assert re.match(r'^aops:ext4_da_aops ino:[0-9a-f]+ dentry name\(\?\):"[^"]+"$', aops)
    assert m["mapping"].startswith("00000000"), "%p of a pointer is a 32-bit hash"


def test_4_4_names_in_bit_order() -> None:
    """v4.4 mm/debug.c pageflag_names is in enum order: PG_error (bit 1) before referenced."""
    k = boot("4.4")
    ex = file_page(k)
    k.mem.flags[ex.page] |= k.pf.mask("PG_error") | k.pf.mask("PG_referenced")
    _, _, names = _flags(dump_page(k, ex.page, None))
    assert names[:3] == ["error", "referenced", "uptodate"]


def test_gigantic_far_tail_dumped_alone() -> None:
    """v6.1 mm/debug.c:65-81: a page >= MAX_ORDER_NR_PAGES (1024) past its head has no head line."""
    k = boot("6.1", BootParams(normal_mb=8, hugepages_1g=1))
    task = new_task(k)
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_1GB
    addr = run_to_completion(sys_mmap(k, task, None, 1 << 30, PROT_READ | PROT_WRITE, flags))
    assert addr > 0
    run_to_completion(user_access(k, task, addr, True, 1))
    head = pagemap(k, task, addr).pfn
    assert int(k.mem.order[head + 1]) == 18
    near, far = dump_page(k, head + 1023, None), dump_page(k, head + 1024, None)
    assert any(x.startswith("head:") for x in near) and any(x.startswith("head: ") for x in near)
    assert not any(x.startswith(("head:", "head: ")) for x in far)
    assert P61_FIRST.match(far[0])


# (args, exit status, what stdout / stderr must show)
CLI_ROWS = [
    ([], 0, r"^page:[0-9a-f]{16} refcount:1025 mapcount:1 "),
    (["--profile", "5.7", "--example", "thp-subpage-pinned"], 0, r"compound_pincount:1\n"),
    (["--profile", "6.5", "--example", "thp-subpage-pinned"], 0, r"\nhead:.* pincount:1\n"),
    (["--profile", "4.4", "--example", "file-page"], 0, r"^page:ffffea[0-9a-f]{10} count:2 "),
    (["--profile", "7.0"], 2, r"unknown profile '7.0' \(known: 4.4, 5.7, 6.1, 6.5"),
    (["--example", "nope"], 2, r"unknown example 'nope' \(known: anon-pinned"),
    # v4.4 has no FOLL_PIN: the example's driver takes get_user_pages' plain reference
    (["--profile", "4.4"], 0, r"^page:\S+ count:2 mapcount:1 (?s:.*)because: get_user_pages\("),
]


@pytest.mark.parametrize(("args", "status", "shows"), CLI_ROWS)
def test_cli_dump_page(args: list[str], status: int, shows: str) -> None:
    result = CliRunner().invoke(dump_page_cmd, args)
    assert result.exit_code == status
    assert re.search(shows, result.output, re.MULTILINE), result.output
    if status:
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
    else:
        assert result.output.splitlines()[-1].startswith("page dumped because: ")
