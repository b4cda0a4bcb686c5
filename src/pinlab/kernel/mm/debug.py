"""dump_page(): the lines the profile's kernel prints for a struct page.

Styles (Profile.dump_page_style): "6.1" = v6.1.192 mm/debug.c __dump_page with
fs/inode.c dump_mapping (the stable-backported `dentry name(?)` form); "6.5" =
v6.5 mm/debug.c (entire_mapcount / nr_pages_mapped / pincount); "5.7" = v5.7
mm/debug.c __dump_page (one combined first line, %px pointers, memcg after the
reason); "4.4" = v4.4 mm/debug.c dump_page_badflags (count:, names in bit order,
no raw words).  Lines are returned as dmesg shows them, without log level.

The model has no kernel pointers, inode numbers or dentries, so these are
deterministic fakes built from model ids (never real kernel values):
struct page at VMEMMAP_START + pfn * 64 (v6.1 arch/x86 __VMEMMAP_BASE_L4, the
non-KASLR base); an anon_vma / address_space at a direct-map address derived from
its id; ino = the address_space id; dentry name "file<id>"; %p hashes are a keyed
BLAKE2b of the fake address cut to 32 bits (the kernel uses siphash with a boot-time
random key, v6.1 lib/vsprintf.c __ptr_to_hashval).  Not modelled: memory cgroups
(memcg_data is 0, as with cgroup_disable=memory: no memcg line), KSM, slab and
poisoned struct pages, page_owner (not built in Debian 6.1), the LRU list order
(an LRU page's list_head points at a fake lruvec list head).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from pinlab.kernel.mm.memmap import (
    TRANSHUGE_PAGE_DTOR,
    compound_head,
    folio_order,
    folio_test_large,
)
from pinlab.kernel.mm.page_alloc import MAX_ORDER, pool_of
from pinlab.kernel.mm.page_ref import page_ref_count
from pinlab.kernel.mm.rmap import PAGE_MAPPING_FLAGS, PageDoubleMap, PageHuge, page_mapcount
from pinlab.kernel.mm.types import FsType

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

U64 = (1 << 64) - 1
# v6.1 arch/x86/include/asm/pgtable_64_types.h __VMEMMAP_BASE_L4; page_64_types.h
# __PAGE_OFFSET_BASE_L4 (4-level paging, no KASLR).
VMEMMAP_START = 0xFFFFEA0000000000
PAGE_OFFSET = 0xFFFF888000000000
STRUCT_PAGE_SIZE = 64
# v6.1 include/linux/poison.h with Debian's CONFIG_ILLEGAL_POINTER_VALUE=0xdead000000000000
POISON_POINTER_DELTA = 0xDEAD000000000000
LIST_POISON1 = 0x100 + POISON_POINTER_DELTA
LIST_POISON2 = 0x122 + POISON_POINTER_DELTA
TAIL_MAPPING = 0x400 + POISON_POINTER_DELTA
# Fake direct-map homes of model objects (see module docstring).
_ANON_VMA_BASE = PAGE_OFFSET + 0x01000000
_MAPPING_BASE = PAGE_OFFSET + 0x02000000
_LRUVEC_LIST = PAGE_OFFSET + 0x03000000
# v6.1 include/linux/mmzone.h enum zone_type on x86-64 (DMA, DMA32, NORMAL, MOVABLE, DEVICE);
# CMA pageblocks live inside ZONE_NORMAL.
_ZONE_OF_POOL = {"normal": 2, "cma": 2, "movable": 3}
# Upper page->flags fields, Debian 6.1 config (page-diag.md 2.3: NODES_SHIFT 10,
# ZONES_SHIFT 3, LAST_CPUPID 21 bits); assumed for 5.7/6.5/4.4 too.  The model
# is one node and never NUMA-faults, so lastcpupid keeps its reset value
# (v6.1 include/linux/mm.h page_cpupid_reset_last).
NODES_PGSHIFT, ZONES_PGSHIFT, LAST_CPUPID_PGSHIFT = 54, 51, 30
LAST_CPUPID_MASK = (1 << 21) - 1
# v6.1 include/trace/events/mmflags.h __def_pageflag_names order (v4.20+: the 5.7 list
# is this without arch_2; PG_young/PG_idle are not built on Debian 6.1).
PAGEFLAG_NAME_ORDER = (
    "locked", "waiters", "error", "referenced", "uptodate", "dirty", "lru", "active",
    "workingset", "slab", "owner_priv_1", "arch_1", "reserved", "private", "private_2",
    "writeback", "head", "mappedtodisk", "reclaim", "swapbacked", "unevictable",
    "mlocked", "uncached", "hwpoison", "young", "idle", "arch_2", "skip_kasan_poison",
)  # fmt: skip
# %ps of each filesystem's a_ops (v6.1 mm/shmem.c shmem_aops, fs/libfs.c ram_aops,
# fs/ext4/inode.c ext4_da_aops / ext4_dax_aops, fs/hugetlbfs/inode.c hugetlbfs_aops).
AOPS = {
    FsType.TMPFS: "shmem_aops",
    FsType.RAMFS: "ram_aops",
    FsType.EXT4: "ext4_da_aops",
    FsType.EXT4_DAX: "ext4_dax_aops",
    FsType.HUGETLBFS: "hugetlbfs_aops",
}


def page_address(pfn: int) -> int:
    """The fake `struct page *` of `pfn` (vmemmap: VMEMMAP_START + pfn * sizeof(struct page))."""
    return VMEMMAP_START + pfn * STRUCT_PAGE_SIZE


def ptr_hash(addr: int) -> int:
    """The model's stand-in for the kernel's 32-bit %p hash of `addr` (deterministic)."""
    digest = hashlib.blake2b(addr.to_bytes(8, "little"), digest_size=4, key=b"pinlab-%p")
    return int.from_bytes(digest.digest(), "little")


def fmt_p(addr: int) -> str:
    """%p since v4.15: NULL raw, else the hash zero-padded to 16 digits (v6.1 lib/vsprintf.c)."""
    return f"{addr if addr == 0 else ptr_hash(addr):016x}"


def fmt_p_raw_4_4(addr: int) -> str:
    """v4.4 lib/vsprintf.c %p: raw address, NULL as "(null)" right-aligned in 16 columns."""
    return f"{'(null)':>16}" if addr == 0 else f"{addr:016x}"


def mapping_word(k: Kernel, page: int) -> int:
    """The raw page->mapping word: a fake anon_vma (low bit set) or address_space address."""
    value = int(k.mem.mapping[page])
    if value == 0:
        return 0
    if value & 1:
        return _ANON_VMA_BASE + (value >> 2) * 0x100 | 1
    return _MAPPING_BASE + (value >> 2) * 0x400


def _mapping_id(addr: int) -> int | None:
    """The model address_space id behind a fake address_space address, if it is one."""
    off = addr - _MAPPING_BASE
    return off // 0x400 if 0 <= off < 1 << 32 and off % 0x400 == 0 else None


def flags_word(k: Kernel, page: int) -> int:
    """page->flags with the node/zone/lastcpupid fields (v6.1 include/linux/mm.h set_page_links)."""
    zone = _ZONE_OF_POOL[pool_of(k.free_area, page)]
    fields = zone << ZONES_PGSHIFT | LAST_CPUPID_MASK << LAST_CPUPID_PGSHIFT
    return (int(k.mem.flags[page]) | fields) & U64


def _flag_names(k: Kernel, flags: int, order: tuple[str, ...]) -> list[str]:
    """v6.1 lib/vsprintf.c format_flags: names of set bits in table order, then leftovers."""
    nr = len(k.profile.pageflags)
    left = flags & ((1 << nr) - 1)
    names = []
    for name in order:
        if k.profile.has_flag(f"PG_{name}"):
            mask = 1 << k.profile.flag_bit(f"PG_{name}")
            if left & mask:
                names.append(name)
                left &= ~mask
    if left:
        names.append(f"{left:#x}")
    return names


def page_flag_names(k: Kernel, flags: int) -> list[str]:
    """The names dump_page gives the page-flag bits of `flags` under the profile's kernel.

    v4.20+ lib/vsprintf.c format_flags with the mmflags.h table order (v4.4: bit order,
    as dump_page_badflags prints them); bits no flag names come last in hex.
    """
    if k.profile.dump_page_style == "4.4":
        order = tuple(n.removeprefix("PG_") for n in k.profile.pageflags)
    else:
        order = PAGEFLAG_NAME_ORDER
    return _flag_names(k, flags, order)


def compound_fields(k: Kernel, head: int) -> list[tuple[str, int]]:
    """The compound fields dump_page prints for the large folio `head`, in its words.

    6.1: order, compound_mapcount, compound_pincount; 6.5: order, entire_mapcount,
    nr_pages_mapped, pincount; 5.7 (and 4.4, which prints none): order,
    compound_mapcount, and compound_pincount where the order keeps an exact count.
    """
    m = k.mem
    style = k.profile.dump_page_style
    order = folio_order(m, head)
    entire = int(m.compound_mapcount[head + 1]) + 1
    pincount = int(m.pincount[head + k.profile.pincount_page])
    if style == "6.5":
        nr_mapped = _nr_pages_mapped(k, head)
        return [
            ("order", order),
            ("entire_mapcount", entire),
            ("nr_pages_mapped", nr_mapped),
            ("pincount", pincount),
        ]
    out = [("order", order), ("compound_mapcount", entire)]
    if style == "6.1" or k.profile.exact_pincount(order):
        out.append(("compound_pincount", pincount))
    return out


def format_page_flags(k: Kernel, flags: int) -> str:
    """v6.1 lib/vsprintf.c format_page_flags (%pGp): hex, names, then node/zone/lastcpupid."""
    parts = _flag_names(k, flags, PAGEFLAG_NAME_ORDER)
    parts += [
        f"node={flags >> NODES_PGSHIFT & 0x3FF}",
        f"zone={flags >> ZONES_PGSHIFT & 0x7}",
        f"lastcpupid={flags >> LAST_CPUPID_PGSHIFT & LAST_CPUPID_MASK:#x}",
    ]
    return f"{flags:#x}({'|'.join(parts)})"


def page_to_pgoff(k: Kernel, page: int) -> int:
    """v6.1 include/linux/pagemap.h page_to_pgoff (hugetlb: mm/hugetlb.c hugetlb_basepage_index)."""
    head = compound_head(k.mem, page)
    base = int(k.mem.index[head])
    if PageHuge(k, page):
        base <<= folio_order(k.mem, head)
    return base + page - head


def _folio_mapping(k: Kernel, page: int) -> int:
    """v6.1 mm/util.c folio_mapping: NULL for anon, else the address_space pointer."""
    word = mapping_word(k, compound_head(k.mem, page))
    return 0 if word & 1 else word & ~PAGE_MAPPING_FLAGS


def _hexdump(k: Kernel, prefix: str, page: int, style: str) -> list[str]:
    """v6.1 lib/hexdump.c print_hex_dump(DUMP_PREFIX_NONE, 32, 8): two rows of 4 words."""
    w = struct_page_words(k, page, style)
    return [f"{prefix}{' '.join(f'{x:016x}' for x in w[r : r + 4])}" for r in (0, 4)]


def struct_page_words(k: Kernel, page: int, style: str) -> list[int]:
    """The 8 words of struct page as the kernel lays them out (v6.1 include/linux/mm_types.h).

    page[1] holds dtor/order/mapcount and (6.1) pincount+nr or (6.5) entire/
    nr_pages_mapped/pincount/nr; 5.7 keeps the pincount in page[2] word 2.
    A THP's page[2] words 2-3 are its empty deferred_list (pointing at itself).
    """
    m = k.mem
    head = compound_head(m, page)
    i = page - head
    w = [0] * 8
    w[0] = flags_word(k, page)
    w[6] = (int(m.mapcount[page]) & 0xFFFFFFFF) | (int(m.refcount[page]) & 0xFFFFFFFF) << 32
    w[4], w[5] = int(m.index[page]) & U64, int(m.private[page]) & U64
    if i == 0:
        on_lru = bool(int(m.flags[page]) & k.pf.mask("PG_lru"))
        w[1], w[2] = (_LRUVEC_LIST, _LRUVEC_LIST) if on_lru else (LIST_POISON1, LIST_POISON2)
        w[3] = mapping_word(k, page)
        return w
    w[1] = page_address(head) + 1
    order = folio_order(m, head)
    w[3] = tail_mapping_word(order)
    if i == 1:
        w[2] = int(m.dtor[page]) | order << 8 | (int(m.compound_mapcount[page]) & 0xFFFFFFFF) << 32
        if style == "6.1":
            w[3] = (int(m.pincount[page]) & 0xFFFFFFFF) | (1 << order) << 32
        elif style == "6.5":
            w[3] = _nr_pages_mapped(k, head) | (int(m.pincount[page]) & 0xFFFFFFFF) << 32
            w[4] = 1 << order
    elif i == 2 and style == "5.7":
        w[2] = int(m.pincount[page]) & 0xFFFFFFFF
    if i == 2 and int(m.dtor[head + 1]) == TRANSHUGE_PAGE_DTOR:  # prep_transhuge_page
        list_head = page_address(page) + (24 if style == "5.7" else 16)
        if style == "5.7":
            w[3], w[4] = list_head, list_head
        else:
            w[2], w[3] = list_head, list_head
    return w


def tail_mapping_word(order: int) -> int:
    """A tail's page->mapping: TAIL_MAPPING (v6.1 mm/page_alloc.c prep_compound_tail), NULL in
    gigantic pages (v6.1 mm/hugetlb.c __prep_compound_gigantic_page only links tails)."""
    return TAIL_MAPPING if order < MAX_ORDER else 0


def _nr_pages_mapped(k: Kernel, head: int) -> int:
    """6.5 folio_nr_pages_mapped: subpages mapped by PTEs (the model's double-map +1 removed)."""
    nr = 1 << folio_order(k.mem, head)
    floor = 1 if PageDoubleMap(k, head) else 0
    return int((k.mem.mapcount[head : head + nr] >= floor).sum())


def dump_mapping(k: Kernel, mapping: int, style: str) -> list[str]:
    """v6.1.192 fs/inode.c dump_mapping / v5.7 mm/debug.c: a_ops, ino and dentry name."""
    as_id = _mapping_id(mapping)
    if as_id is None or as_id not in k.mappings:
        if style == "5.7":
            return ["failed to read mapping->host or a_ops, mapping not a valid kernel address?"]
        return [f"invalid mapping:{mapping:016x}"]
    aops = AOPS[k.mappings[as_id].fs]
    if style == "5.7":
        return [f'mapping->aops:{aops} dentry name:"file{as_id}"']
    return [f'aops:{aops} ino:{as_id:x} dentry name(?):"file{as_id}"']


def _mapcount_6_5(k: Kernel, page: int) -> int:
    """v6.5 include/linux/mm.h page_mapcount: own _mapcount + 1, plus the entire mapcount."""
    head = compound_head(k.mem, page)
    own = int(k.mem.mapcount[page]) + 1
    if not folio_test_large(k.mem, head):
        return own
    own -= 1 if PageDoubleMap(k, head) else 0
    return own + int(k.mem.compound_mapcount[head + 1]) + 1


def _dump_page_6x(k: Kernel, page: int, reason: str | None, style: str) -> list[str]:
    """v6.1.192 / v6.5 mm/debug.c dump_page -> __dump_page."""
    m = k.mem
    head = compound_head(m, page)
    compound = folio_test_large(m, head)
    # A page beyond MAX_ORDER_NR_PAGES of its head (a 1 GiB page's far tails) is
    # treated as corrupt: dumped alone, mapping read raw with the flag bits masked.
    if page >= head + (1 << (MAX_ORDER - 1)):
        raw = tail_mapping_word(folio_order(m, head))
        mapping = 0 if raw & 1 else raw & ~PAGE_MAPPING_FLAGS
        head, compound = page, False
    else:
        mapping = _folio_mapping(k, page)
    slab = bool(int(m.flags[head]) & k.pf.mask("PG_slab"))
    mapcount = 0 if slab else (_mapcount_6_5 if style == "6.5" else page_mapcount)(k, page)
    out = [
        f"page:{fmt_p(page_address(page))} refcount:{page_ref_count(m, head)} "
        f"mapcount:{mapcount} mapping:{fmt_p(mapping)} index:{page_to_pgoff(k, page):#x} "
        f"pfn:{page:#x}"
    ]
    if compound:
        words = " ".join(f"{name}:{value}" for name, value in compound_fields(k, head))
        out.append(f"head:{fmt_p(page_address(head))} {words}")
    anon = bool(int(m.mapping[compound_head(m, page)]) & 1)
    if not anon and mapping:
        out += dump_mapping(k, mapping, style)
    cma = " CMA" if pool_of(k.free_area, page) == "cma" else ""
    kind = "anon " if anon else ""
    out.append(f"{kind}flags: {format_page_flags(k, flags_word(k, head))}{cma}")
    out += _hexdump(k, "raw: ", page, style)
    if head != page:
        out += _hexdump(k, "head: ", head, style)
    if reason is not None:
        out.append(f"page dumped because: {reason}")
    return out


def _dump_page_5_7(k: Kernel, page: int, reason: str | None) -> list[str]:
    """v5.7 mm/debug.c __dump_page: page/head as %px, flags of the page itself, names only."""
    m = k.mem
    head = compound_head(m, page)
    compound = folio_test_large(m, head)
    if page >= head + (1 << (MAX_ORDER - 1)):
        mapping, head, compound = tail_mapping_word(folio_order(m, head)), page, False
    else:
        mapping = _folio_mapping(k, page)
    slab = bool(int(m.flags[head]) & k.pf.mask("PG_slab"))
    mapcount = 0 if slab else page_mapcount(k, page)
    # v5.7 include/linux/pagemap.h page_to_pgoff: only a hugetlb head is scaled
    if PageHuge(k, page) and page == compound_head(m, page):
        pgoff = int(m.index[page]) << folio_order(m, page)
    else:
        pgoff = int(m.index[compound_head(m, page)]) + page - compound_head(m, page)
    first = (
        f"page:{page_address(page):016x} refcount:{page_ref_count(m, head)} "
        f"mapcount:{mapcount} mapping:{fmt_p(mapping)} index:{pgoff:#x}"
    )
    if compound:
        words = " ".join(f"{name}:{value}" for name, value in compound_fields(k, head))
        first += f" head:{page_address(head):016x} {words}"
    out = [first]
    anon = bool(int(m.mapping[compound_head(m, page)]) & 1)
    if not anon and mapping:
        out += dump_mapping(k, mapping, "5.7")
    flags = flags_word(k, page)
    names = "|".join(_flag_names(k, flags, PAGEFLAG_NAME_ORDER))
    cma = " CMA" if pool_of(k.free_area, page) == "cma" else ""
    out.append(f"{'anon ' if anon else ''}flags: {flags:#x}({names}){cma}")
    out += _hexdump(k, "raw: ", page, "5.7")
    if head != page:
        out += _hexdump(k, "head: ", head, "5.7")
    if reason is not None:
        out.append(f"page dumped because: {reason}")
    return out


def _dump_page_4_4(k: Kernel, page: int, reason: str | None) -> list[str]:
    """v4.4 mm/debug.c dump_page -> dump_page_badflags(page, reason, 0): raw fields, bit order."""
    m = k.mem
    head = compound_head(m, page)
    mapcount = int(m.mapcount[page]) + 1
    # v4.4 kept a PMD-mapped THP's mapcount in the head's _mapcount; the model keeps
    # it in page[1] as v4.5+ do, so it is folded back in for the head.
    if page == head and folio_test_large(m, head):
        mapcount += int(m.compound_mapcount[head + 1]) + 1
    mapping = mapping_word(k, page)
    flags = flags_word(k, page)
    bit_order = tuple(n.removeprefix("PG_") for n in k.profile.pageflags)
    out = [
        f"page:{fmt_p_raw_4_4(page_address(page))} count:{int(m.refcount[page])} "
        f"mapcount:{mapcount} mapping:{fmt_p_raw_4_4(mapping)} index:{int(m.index[page]):#x}",
        f"flags: {flags:#x}({'|'.join(_flag_names(k, flags, bit_order))})",
    ]
    if reason is not None:
        out.append(f"page dumped because: {reason}")
    return out


def dump_page(k: Kernel, page: int, reason: str | None = None) -> list[str]:
    """The lines dump_page(page, reason) prints under the profile's kernel (see module doc)."""
    style = k.profile.dump_page_style
    if style == "4.4":
        return _dump_page_4_4(k, page, reason)
    if style == "5.7":
        return _dump_page_5_7(k, page, reason)
    return _dump_page_6x(k, page, reason, style)
