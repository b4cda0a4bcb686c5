"""The kernel state as ``key: value`` lines, in dump_page words, for traces.

A race trace shows what each step changed.  The explorer keys a kernel program's
states by a digest, which says nothing to a reader; :func:`render_kernel` prints the
state instead, one line per live object, each ``<key>: <value>`` with a key that names
the object the same way in every state, sorted, so that equal states render equally and
two renderings compare key by key (the explorer's ``diff``).  A struct page is shown in
the words of v6.1 mm/debug.c dump_page (:mod:`pinlab.kernel.mm.debug`)::

    page 0x1: refcount:1025 mapcount:1 mapping:anon_vma3 index:0x7efffffff
        flags:0xa0014(uptodate|lru|mappedtodisk|swapbacked) data:1     (one line)
    pte mm1 0x7efffffff000: pfn 0x1 rw dirty young
    cache file3 0x0: pfn 0x2 dirty
    vmstat nr_foll_pin_acquired: 1
    lock ptl mm1 0x7effffe00000: held
    lock mmap mm1: read:1
    lru_add cpu0: 0x1 0x2

* ``page``: every struct page that is not free (refcount, mapcount, flags, mapping,
  index, private or data set), found with NumPy over the whole frame table.
  ``refcount`` and ``mapcount`` are the page's own ``_refcount`` and ``_mapcount + 1``
  (what dump_page prints for a small page; a small folio counts its pins in its
  refcount, GUP_PIN_COUNTING_BIAS); ``flags`` are the page-flag bits with dump_page's
  names, without the node/zone fields; ``mapping`` is ``anon_vma<id>`` or ``file<id>``
  (dump_mapping's dentry name); ``data`` is the contents token.  A large folio's head
  adds dump_page's compound words (6.1: ``order``, ``compound_mapcount``,
  ``compound_pincount``) and its destructor; a tail shows ``head:<pfn>``.
* ``pte``/``pmd``/``pud``: each present (or PROT_NONE) entry of each mm, decoded
  (v6.1 arch/x86/include/asm/pgtable_types.h).
* ``cache``: each page-cache entry, with its PAGECACHE_TAG_DIRTY / _WRITEBACK tags
  (the folio's PG_dirty / PG_writeback).
* non-zero vmstat counters, held locks (mmap_lock, PTE-table locks, hugetlb fault
  mutexes), non-empty LRU batches; then the mms, VMAs, tasks, inodes, open files,
  free memory and the few scalars.

A field of the kernel state this module does not know (added later) is still shown,
as one line of its plain-data form, so that no step changes the state unseen.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from pinlab.kernel.mm.debug import compound_fields, page_flag_names
from pinlab.kernel.mm.memmap import (
    COMPOUND_PAGE_DTOR,
    HUGETLB_PAGE_DTOR,
    NO_HEAD,
    NULL_COMPOUND_DTOR,
    TRANSHUGE_PAGE_DTOR,
)
from pinlab.kernel.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_DEVMAP,
    _PAGE_DIRTY,
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
    pte_pfn,
)
from pinlab.kernel.mm.types import (
    MMF_HAS_PINNED,
    VM_EXEC,
    VM_MAYSHARE,
    VM_READ,
    VM_WRITE,
    AddressSpace,
    MmStruct,
    Task,
    VmArea,
)
from pinlab.kernel.walk import roles

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel

# A line before sorting: (sort key, key, value).  Sort keys order lines by kind, then by
# the numbers in the key, so pages and addresses come in numeric order.
Line = tuple[tuple[Any, ...], str, str]

_DTORS = {
    NULL_COMPOUND_DTOR: "none",
    COMPOUND_PAGE_DTOR: "compound",
    HUGETLB_PAGE_DTOR: "hugetlb",
    TRANSHUGE_PAGE_DTOR: "thp",
}
# v6.1 include/linux/sched/coredump.h / huge_memory.h bits the model uses
_MMF_NAMES = {MMF_HAS_PINNED: "has_pinned", 23: "huge_zero_page", 24: "disable_thp"}
# The PTE bits decoded into words; others are shown as leftover hex.
_PTE_KNOWN = (
    PTE_PFN_MASK
    | _PAGE_PRESENT
    | _PAGE_RW
    | _PAGE_USER
    | _PAGE_ACCESSED
    | _PAGE_DIRTY
    | _PAGE_PSE
    | _PAGE_PROTNONE
    | _PAGE_SPECIAL
    | _PAGE_DEVMAP
)


def render_kernel(k: Kernel) -> str:
    """The state of `k` as sorted ``key: value`` lines (see the module docstring)."""
    lines: list[Line] = []
    lines += _pages(k)
    for mm in k.mms.values():
        lines += _mm(k, mm)
    for mapping in k.mappings.values():
        lines += _mapping(k, mapping)
    for task in k.tasks.values():
        lines.append(_task(task))
    lines += _vmstat(k)
    lines += _locks(k)
    lines += _lru(k)
    lines += _misc(k)
    lines.sort(key=lambda line: line[0])
    return "\n".join(f"{key}: {value}" for _, key, value in lines)


def _pages(k: Kernel) -> list[Line]:
    """Every struct page that is not free, vectorised over the frame table."""
    m = k.mem
    live = (
        (m.refcount != 0)
        | (m.mapcount != -1)
        | (m.flags != 0)
        | (m.data != 0)
        | (m.mapping != 0)
        | (m.index != 0)
        | (m.private != 0)
    )
    pfns = np.flatnonzero(live)
    if not pfns.size:
        return []
    n = m.nr_pages
    nxt = np.minimum(pfns + 1, n - 1)
    large = (m.head[nxt] == pfns) & (pfns + 1 < n) & (m.head[pfns] == NO_HEAD)
    cols = zip(
        pfns.tolist(),
        m.refcount[pfns].tolist(),
        m.mapcount[pfns].tolist(),
        m.flags[pfns].tolist(),
        m.mapping[pfns].tolist(),
        m.index[pfns].tolist(),
        m.private[pfns].tolist(),
        m.data[pfns].tolist(),
        m.head[pfns].tolist(),
        large.tolist(),
        strict=True,
    )
    names: dict[int, str] = {}
    out: list[Line] = []
    for pfn, ref, mapc, flags, mapping, index, private, data, head, is_large in cols:
        shown = names.get(flags)
        if shown is None:
            flag_names = "|".join(page_flag_names(k, flags))
            shown = names[flags] = f"{flags:#x}({flag_names})" if flag_names else f"{flags:#x}"
        words = [f"refcount:{ref}", f"mapcount:{mapc + 1}"]
        if mapping:
            words.append(f"mapping:{_mapping_name(mapping)}")
        words += [f"index:{index:#x}", f"flags:{shown}"]
        if private:
            words.append(f"private:{private:#x}")
        if data:
            words.append(f"data:{data}")
        if head != NO_HEAD:
            words.append(f"head:{head:#x}")
        if is_large:
            words += [f"{name}:{value}" for name, value in compound_fields(k, pfn)]
            dtor = int(m.dtor[pfn + 1])
            words.append(f"compound_dtor:{_DTORS.get(dtor, str(dtor))}")
        out.append(((0, pfn), f"page {pfn:#x}", " ".join(words)))
    return out


def _mapping_name(value: int) -> str:
    """page->mapping as the model object it names (PAGE_MAPPING_ANON: the low bit)."""
    if value & 1:
        return f"anon_vma{value >> 2}"
    if value & 3 == 0:
        return f"file{value >> 2}"
    return f"{value:#x}"


def pte_words(entry: int, level: str = "pte") -> str:
    """An x86-64 page-table entry decoded: pfn, rw/ro, dirty/clean, young/old, extras."""
    if not entry & (_PAGE_PRESENT | _PAGE_PROTNONE):
        return f"raw {entry:#x}"  # swap/migration entries are not modelled
    words = [
        f"pfn {pte_pfn(entry):#x}",
        "rw" if entry & _PAGE_RW else "ro",
        "dirty" if entry & _PAGE_DIRTY else "clean",
        "young" if entry & _PAGE_ACCESSED else "old",
    ]
    if not entry & _PAGE_PRESENT:
        words.append("protnone")
    if not entry & _PAGE_USER:
        words.append("kernel")
    if entry & _PAGE_PSE and level != "pte":
        words.append("huge")
    if entry & _PAGE_SPECIAL:
        words.append("special")
    if entry & _PAGE_DEVMAP:
        words.append("devmap")
    rest = entry & ~_PTE_KNOWN & ((1 << 64) - 1)
    if entry & _PAGE_PSE and level == "pte":
        rest |= _PAGE_PSE
    if rest:
        words.append(f"bits {rest:#x}")
    return " ".join(words)


def _mm(k: Kernel, mm: MmStruct) -> list[Line]:
    """An mm's flags and lock word, its VMAs and its present page-table entries."""
    mid = mm.id
    flags = [name for bit, name in sorted(_MMF_NAMES.items()) if mm.flags >> bit & 1]
    rest = mm.flags & ~sum(1 << bit for bit in _MMF_NAMES)
    if rest:
        flags.append(f"{rest:#x}")
    words = [f"flags:{'|'.join(flags) or '0x0'}", f"write_protect_seq:{mm.write_protect_seq}"]
    words += _extra(
        mm, ("id", "pgtable", "vmas", "flags", "write_protect_seq", "mmap_readers", "mmap_writer")
    )
    out: list[Line] = [((1, mid), f"mm{mid}", " ".join(words))]
    for vma in mm.vmas:
        out.append(((2, mid, vma.vm_start), f"vma mm{mid} {vma.vm_start:#x}", _vma(vma)))
    pt = mm.pgtable
    for slot, table in pt.pte.items():
        base = slot << PMD_SHIFT
        idx = np.flatnonzero(table)
        for i, entry in zip(idx.tolist(), table[idx].tolist(), strict=True):
            addr = base + (i << PAGE_SHIFT)
            out.append(((3, mid, addr, 0), f"pte mm{mid} {addr:#x}", pte_words(entry)))
    for slot, entry in pt.pmd.items():
        if entry:
            addr = slot << PMD_SHIFT
            out.append(((3, mid, addr, 1), f"pmd mm{mid} {addr:#x}", pte_words(entry, "pmd")))
    for slot, entry in pt.pud.items():
        if entry:
            addr = slot << PUD_SHIFT
            out.append(((3, mid, addr, 2), f"pud mm{mid} {addr:#x}", pte_words(entry, "pud")))
    return out


def _vma(vma: VmArea) -> str:
    """A VMA as /proc/pid/maps shows its range and permissions, plus its links."""
    f = vma.vm_flags
    perm = (
        ("r" if f & VM_READ else "-")
        + ("w" if f & VM_WRITE else "-")
        + ("x" if f & VM_EXEC else "-")
        + ("s" if f & VM_MAYSHARE else "p")
    )
    words = [
        f"end:{vma.vm_end:#x}",
        f"perm:{perm}",
        f"vm_flags:{f:#x}",
        f"pgoff:{vma.vm_pgoff:#x}",
    ]
    if vma.vm_file is not None:
        words.append(f"file:file{vma.vm_file}")
    if vma.anon_vma is not None:
        words.append(f"anon_vma:anon_vma{vma.anon_vma}")
    words += _extra(vma, ("vm_start", "vm_end", "vm_flags", "vm_pgoff", "vm_file", "anon_vma"))
    return " ".join(words)


def _mapping(k: Kernel, mapping: AddressSpace) -> list[Line]:
    """An inode and its page cache (entries with their tags) and backing store."""
    aid = mapping.id
    words = [
        f"fs:{mapping.fs.value}",
        f"i_size:{mapping.i_size:#x}",
        f"nrpages:{len(mapping.i_pages)}",
    ]
    if mapping.seals:
        words.append(f"seals:{mapping.seals:#x}")
    if mapping.huge_order:
        words.append(f"huge_order:{mapping.huge_order}")
    shown = ("id", "fs", "i_size", "i_pages", "store", "seals", "huge_order", "dirty_marks")
    words += _extra(mapping, shown)
    out: list[Line] = [((4, aid), f"file{aid}", " ".join(words))]
    writeback = k.pf.mask("PG_writeback")
    for index, pfn in mapping.i_pages.items():
        flags = int(k.mem.flags[pfn])
        tags = [f"pfn {pfn:#x}"]
        if index in mapping.dirty_marks:
            tags.append("dirty")
        if flags & writeback:
            tags.append("writeback")
        out.append(((5, aid, index), f"cache file{aid} {index:#x}", " ".join(tags)))
    for index, token in mapping.store.items():
        out.append(((6, aid, index), f"store file{aid} {index:#x}", str(token)))
    return out


def _task(task: Task) -> Line:
    parent = "-" if task.parent is None else str(task.parent)
    words = [f"mm:mm{task.mm}", f"parent:{parent}", f"cpu:{task.cpu}"]
    words += _extra(task, ("pid", "mm", "parent", "cpu"))
    return ((7, task.pid), f"task {task.pid}", " ".join(words))


def _vmstat(k: Kernel) -> list[Line]:
    return [
        ((8, name), f"vmstat {name}", str(value))
        for name, value in k.vmstat.counters.items()
        if value
    ]


def _locks(k: Kernel) -> list[Line]:
    """Held locks: mmap_lock of each mm, the PTE-table locks, the hugetlb fault mutexes."""
    out: list[Line] = []
    for mm in k.mms.values():
        if mm.mmap_writer or mm.mmap_readers:
            held = "write" if mm.mmap_writer else f"read:{mm.mmap_readers}"
            if mm.mmap_writer and mm.mmap_readers:
                held += f" read:{mm.mmap_readers}"
            out.append(((9, 0, mm.id), f"lock mmap mm{mm.id}", held))
    for mid, slot in k.ptl:
        addr = slot << PMD_SHIFT
        out.append(((9, 1, mid, addr), f"lock ptl mm{mid} {addr:#x}", "held"))
    for aid, index in k.hugetlb_fault_mutex:
        key = f"lock hugetlb_fault_mutex file{aid} {index:#x}"
        out.append(((9, 2, aid, index), key, "held"))
    return out


def _lru(k: Kernel) -> list[Line]:
    """The per-CPU LRU batches (their order is state: they drain in it)."""
    out: list[Line] = []
    for name, rank, batches in (("lru_add", 0, k.lru_add), ("lru_activate", 1, k.lru_activate)):
        for cpu, batch in enumerate(batches):
            if batch:
                value = " ".join(f"{pfn:#x}" for pfn in batch)
                out.append(((10, rank, cpu), f"{name} cpu{cpu}", value))
    return out


def _misc(k: Kernel) -> list[Line]:
    """Free memory, hugetlb pools, warnings, open files, bios and the scalars; then any
    field of the state not rendered above, as its plain-data form."""
    out: list[Line] = []
    for pool, lists in k.free_area.blocks.items():
        free = sum(len(blocks) << order for order, blocks in enumerate(lists))
        if free or any(p == pool for _, _, p in k.free_area.ranges):
            out.append(((11, pool), f"free_area {pool}", f"nr_free:{free}"))
    for order, nr in k.hugetlb.nr.items():
        free_huge = len(k.hugetlb.free.get(order, []))
        out.append(((12, order), f"hugetlb order{order}", f"nr:{nr} free:{free_huge}"))
    for i, site in enumerate(k.warned):
        out.append(((13, i), f"warned {i}", site))
    for fid, file in k.files.items():
        out.append(((14, fid), f"fd {fid}", plain(file)))
    for bid, bio in k.bios.items():
        out.append(((15, bid), f"bio {bid}", plain(bio)))
    if k.system_unbound_wq:
        out.append(((16,), "system_unbound_wq", plain(k.system_unbound_wq)))
    out.append(((17, "zero_pfn"), "zero_pfn", f"{k.zero_pfn:#x}"))
    if k.huge_zero_pfn != -1:
        out.append(((17, "huge_zero_pfn"), "huge_zero_pfn", f"{k.huge_zero_pfn:#x}"))
    out.append(
        ((17, "thp"), "thp", f"enabled:{k.thp_enabled} use_zero_page:{int(k.thp_use_zero_page)}")
    )
    out.append(((17, "next_id"), "next_id", str(k.next_id)))
    out.append(((17, "nr_cpus"), "nr_cpus", str(k.nr_cpus)))
    for name, role in roles(type(k)).items():
        value = getattr(k, name)
        if role == "state" and name not in _RENDERED and not _blank(value):
            out.append(((18, name), name, plain(value)))
    return out


_RENDERED = frozenset(
    {
        "mem",
        "free_area",
        "hugetlb",
        "vmstat",
        "zero_pfn",
        "nr_cpus",
        "mms",
        "mappings",
        "tasks",
        "ptl",
        "hugetlb_fault_mutex",
        "lru_add",
        "lru_activate",
        "warned",
        "next_id",
        "thp_enabled",
        "thp_use_zero_page",
        "huge_zero_pfn",
        "files",
        "system_unbound_wq",
        "bios",
    }
)


def _blank(v: object) -> bool:
    """Whether a value of an unknown field is not worth a line: nothing, or empty."""
    return v is None or (isinstance(v, dict | list | tuple | set | frozenset) and not v)


def _extra(obj: object, known: tuple[str, ...]) -> list[str]:
    """``name:value`` words for the fields of a dataclass not rendered by name."""
    return [
        f"{f.name}:{plain(getattr(obj, f.name))}"
        for f in dataclasses.fields(obj)  # type: ignore[arg-type]
        if f.name not in known
    ]


def plain(v: object) -> str:
    """A compact one-line form of plain data: stable (sets and dicts sorted), no bytes."""
    return _PLAIN.get(type(v), _plain_other)(v)


def _plain_other(v: object) -> str:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        inner = ", ".join(f"{f.name}={plain(getattr(v, f.name))}" for f in dataclasses.fields(v))
        return f"{type(v).__name__}({inner})"
    if isinstance(v, enum.Enum):
        return v.name
    if isinstance(v, tuple):
        return "(" + ", ".join(plain(x) for x in v) + ")"
    if isinstance(v, bytes | bytearray):
        return v.hex()
    if isinstance(v, np.ndarray):
        nz = np.flatnonzero(v)
        items = ", ".join(
            f"{i}={plain(x)}" for i, x in zip(nz.tolist(), v[nz].tolist(), strict=True)
        )
        return f"array{list(v.shape)}{{{items}}}"
    return repr(v)


def _plain_set(v: Any) -> str:
    return "{" + ", ".join(sorted(plain(x) for x in v)) + "}"


def _plain_dict(v: Any) -> str:
    items = [(plain(a), plain(b)) for a, b in v.items()]
    return "{" + ", ".join(f"{a}: {b}" for a, b in sorted(items)) + "}"


def _plain_list(v: Any) -> str:
    return "[" + ", ".join(plain(x) for x in v) + "]"


_PLAIN: dict[type, Callable[[Any], str]] = {
    int: str,
    bool: str,
    float: repr,
    str: str,
    type(None): lambda v: "-",
    list: _plain_list,
    dict: _plain_dict,
    set: _plain_set,
    frozenset: _plain_set,
}
