"""The whole modelled kernel as one plain-data object, cheap to copy, hash and print."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pinlab.kernel.hooks import Hooks
from pinlab.kernel.mm.memmap import (
    Memmap,
    PageFlags,
    memmap_alloc,
    memmap_copy,
    memmap_digest_parts,
)
from pinlab.kernel.mm.page_alloc import FreeArea, HugetlbPool, free_area_add_range, hugetlb_reserve
from pinlab.kernel.mm.pgtable import (
    HPAGE_PMD_ORDER,
    HPAGE_PUD_ORDER,
    PAGE_SHIFT,
    pagetable_copy,
    pagetable_digest_parts,
)
from pinlab.kernel.mm.types import AddressSpace, MmStruct, Task, VmArea
from pinlab.kernel.mm.vmstat import VmStat
from pinlab.kernel.profiles import Profile, get_profile

MiB = 1 << 20


@dataclass(slots=True)
class Kernel:
    """Every piece of modelled kernel state; behaviour lives in the kernel functions."""

    profile: Profile
    pf: PageFlags
    mem: Memmap
    free_area: FreeArea
    hugetlb: HugetlbPool
    vmstat: VmStat
    zero_pfn: int
    nr_cpus: int = 1
    fine_grained: bool = False
    mms: dict[int, MmStruct] = field(default_factory=dict)
    mappings: dict[int, AddressSpace] = field(default_factory=dict)
    tasks: dict[int, Task] = field(default_factory=dict)
    ptl: set[tuple[int, int]] = field(default_factory=set)
    # v6.1 mm/hugetlb.c hugetlb_fault_mutex_table, held as (mapping id, huge page index)
    hugetlb_fault_mutex: set[tuple[int, int]] = field(default_factory=set)
    lru_add: list[list[int]] = field(default_factory=list)
    # v6.1 mm/swap.c cpu_fbatches.activate: folios queued for activation, one ref each.
    lru_activate: list[list[int]] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    hooks: Hooks = field(default_factory=Hooks)
    next_id: int = 1
    # /sys/kernel/mm/transparent_hugepage/enabled: Debian sets
    # CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS=y (v6.1 mm/huge_memory.c transparent_hugepage_flags).
    thp_enabled: str = "always"
    # .../use_zero_page defaults on (v6.1 mm/huge_memory.c TRANSPARENT_HUGEPAGE_USE_ZERO_PAGE_FLAG).
    thp_use_zero_page: bool = True
    # The huge zero folio once allocated (v6.1 mm/huge_memory.c get_huge_zero_page), else -1.
    huge_zero_pfn: int = -1


@dataclass(frozen=True, slots=True)
class BootParams:
    """Machine shape for `boot` (sizes in MiB; huge page counts per size)."""

    normal_mb: int = 64
    movable_mb: int = 0
    cma_mb: int = 0
    hugepages_2m: int = 0
    hugepages_1g: int = 0
    nr_cpus: int = 1


def boot(profile: Profile | str, params: BootParams | None = None) -> Kernel:
    """A freshly booted kernel: memory handed to the allocator, huge pages reserved, zero page."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    p = params or BootParams()
    if p.cma_mb and not prof.config_cma:
        raise ValueError(f"kernel {prof.name} is built without CONFIG_CMA: no CMA to boot with")
    # Gigantic pages need 1 GiB alignment, so ZONE_NORMAL starts with their room.
    normal_pages = (p.normal_mb * MiB >> PAGE_SHIFT) + (p.hugepages_1g << HPAGE_PUD_ORDER)
    normal_pages += p.hugepages_2m << HPAGE_PMD_ORDER
    cma_pages = p.cma_mb * MiB >> PAGE_SHIFT
    movable_pages = p.movable_mb * MiB >> PAGE_SHIFT
    total = normal_pages + cma_pages + movable_pages
    k = Kernel(
        profile=prof,
        pf=PageFlags(prof),
        mem=memmap_alloc(total),
        free_area=FreeArea(),
        hugetlb=HugetlbPool(),
        vmstat=VmStat(),
        zero_pfn=0,
        nr_cpus=p.nr_cpus,
        lru_add=[[] for _ in range(p.nr_cpus)],
        lru_activate=[[] for _ in range(p.nr_cpus)],
    )
    free_area_add_range(k.free_area, 0, normal_pages, "normal")
    if cma_pages:
        free_area_add_range(k.free_area, normal_pages, normal_pages + cma_pages, "cma")
    if movable_pages:
        free_area_add_range(k.free_area, normal_pages + cma_pages, total, "movable")
    if p.hugepages_1g:
        hugetlb_reserve(k, HPAGE_PUD_ORDER, p.hugepages_1g)
    if p.hugepages_2m:
        hugetlb_reserve(k, HPAGE_PMD_ORDER, p.hugepages_2m)
    k.zero_pfn = _reserve_zero_page(k)
    return k


def _reserve_zero_page(k: Kernel) -> int:
    """ZERO_PAGE: a reserved page never freed (v6.1 arch/x86/kernel/head_64.S empty_zero_page)."""
    from pinlab.kernel.mm.page_alloc import GFP_KERNEL, alloc_pages

    pfn = alloc_pages(k, GFP_KERNEL, 0)
    if pfn is None:
        raise MemoryError("no memory for the zero page")
    k.mem.flags[pfn] |= k.pf.mask("PG_reserved")
    return pfn


def new_id(k: Kernel) -> int:
    """A fresh identifier for an mm, mapping or anon_vma (stable across replays)."""
    value = k.next_id
    k.next_id += 1
    return value


def kernel_copy(k: Kernel) -> Kernel:
    """An independent copy of the whole kernel state (hooks are shared: they are code)."""
    return Kernel(
        profile=k.profile,
        pf=k.pf,
        mem=memmap_copy(k.mem),
        free_area=FreeArea(
            blocks={p: [set(s) for s in lists] for p, lists in k.free_area.blocks.items()},
            ranges=list(k.free_area.ranges),
        ),
        hugetlb=HugetlbPool(
            free={o: list(v) for o, v in k.hugetlb.free.items()}, nr=dict(k.hugetlb.nr)
        ),
        vmstat=VmStat(dict(k.vmstat.counters)),
        zero_pfn=k.zero_pfn,
        nr_cpus=k.nr_cpus,
        fine_grained=k.fine_grained,
        mms={i: _mm_copy(mm) for i, mm in k.mms.items()},
        mappings={
            i: AddressSpace(
                a.id, a.fs, a.i_size, dict(a.i_pages), dict(a.store), a.seals, a.huge_order
            )
            for i, a in k.mappings.items()
        },
        tasks={pid: Task(t.pid, t.mm, t.parent, t.cpu) for pid, t in k.tasks.items()},
        ptl=set(k.ptl),
        hugetlb_fault_mutex=set(k.hugetlb_fault_mutex),
        lru_add=[list(b) for b in k.lru_add],
        lru_activate=[list(b) for b in k.lru_activate],
        warned=list(k.warned),
        hooks=k.hooks,
        next_id=k.next_id,
        thp_enabled=k.thp_enabled,
        thp_use_zero_page=k.thp_use_zero_page,
        huge_zero_pfn=k.huge_zero_pfn,
    )


def _mm_copy(mm: MmStruct) -> MmStruct:
    """An independent copy of one mm."""
    return MmStruct(
        id=mm.id,
        pgtable=pagetable_copy(mm.pgtable),
        vmas=[
            VmArea(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, v.vm_file, v.anon_vma)
            for v in mm.vmas
        ],
        flags=mm.flags,
        write_protect_seq=mm.write_protect_seq,
        mmap_readers=mm.mmap_readers,
        mmap_writer=mm.mmap_writer,
    )


def kernel_digest(k: Kernel) -> bytes:
    """A stable digest of the whole state (same in every process), for state caching."""
    h = hashlib.blake2b(digest_size=16)
    for part in memmap_digest_parts(k.mem):
        h.update(part)
    for mm_id in sorted(k.mms):
        mm = k.mms[mm_id]
        h.update(
            repr(
                (
                    mm_id,
                    mm.flags,
                    mm.write_protect_seq,
                    mm.mmap_readers,
                    mm.mmap_writer,
                    [_vma_key(v) for v in mm.vmas],
                )
            ).encode()
        )
        for part in pagetable_digest_parts(mm.pgtable):
            h.update(part)
    for a_id in sorted(k.mappings):
        a = k.mappings[a_id]
        h.update(
            repr(
                (
                    a_id,
                    a.fs.value,
                    a.i_size,
                    sorted(a.i_pages.items()),
                    sorted(a.store.items()),
                    a.seals,
                    a.huge_order,
                )
            ).encode()
        )
    h.update(
        repr(
            (
                sorted(k.vmstat.counters.items()),
                sorted((t.pid, t.mm, t.parent, t.cpu) for t in k.tasks.values()),
                sorted(k.ptl),
                sorted(k.hugetlb_fault_mutex),
                k.lru_add,
                k.lru_activate,
                k.warned,
                k.next_id,
                k.thp_enabled,
                k.thp_use_zero_page,
                k.huge_zero_pfn,
            )
        ).encode()
    )
    h.update(
        repr({p: [sorted(s) for s in lists] for p, lists in k.free_area.blocks.items()}).encode()
    )
    h.update(repr(sorted((o, list(v)) for o, v in k.hugetlb.free.items())).encode())
    return h.digest()


def _vma_key(v: VmArea) -> tuple[int, int, int, int, int | None, int | None]:
    """A VMA as a tuple."""
    return (v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff, v.vm_file, v.anon_vma)
