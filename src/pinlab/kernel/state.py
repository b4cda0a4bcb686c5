"""The whole modelled kernel as one plain-data object, cheap to copy, hash and print."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from pinlab.kernel.fs.jbd2 import Journal
from pinlab.kernel.hooks import Hooks
from pinlab.kernel.mm.memmap import Memmap, PageFlags, memmap_alloc
from pinlab.kernel.mm.page_alloc import FreeArea, HugetlbPool, free_area_add_range, hugetlb_reserve
from pinlab.kernel.mm.pgtable import HPAGE_PMD_ORDER, HPAGE_PUD_ORDER, PAGE_SHIFT
from pinlab.kernel.mm.types import AddressSpace, MmStruct, Task
from pinlab.kernel.mm.vmstat import VmStat
from pinlab.kernel.profiles import Profile, get_profile
from pinlab.kernel.walk import ROLE, state_digest

MiB = 1 << 20


@dataclass(slots=True)
class Kernel:
    """Every piece of modelled kernel state; behaviour lives in the kernel functions.

    This is the one definition of the state: a field is copied, digested, snapshotted
    and printed by walking it (:mod:`pinlab.kernel.walk`), by the role its metadata
    gives (state unless said otherwise).
    """

    profile: Profile = field(metadata={ROLE: "config"})
    pf: PageFlags = field(metadata={ROLE: "derived"})
    mem: Memmap
    free_area: FreeArea
    hugetlb: HugetlbPool
    vmstat: VmStat
    zero_pfn: int
    nr_cpus: int = 1
    # Whether a range operation runs page by page with its preemption points; the
    # harness sets it before each step, from whether any other thread is still alive.
    fine_grained: bool = field(default=False, metadata={ROLE: "mode"})
    mms: dict[int, MmStruct] = field(default_factory=dict)
    mappings: dict[int, AddressSpace] = field(default_factory=dict)
    tasks: dict[int, Task] = field(default_factory=dict)
    ptl: set[tuple[int, int]] = field(default_factory=set)
    # v6.1 mm/hugetlb.c hugetlb_fault_mutex_table, held as (mapping id, huge page index)
    hugetlb_fault_mutex: set[tuple[int, int]] = field(default_factory=set)
    lru_add: list[list[int]] = field(default_factory=list)
    # v6.1 mm/swap.c cpu_fbatches.activate: folios queued for activation, one ref each.
    lru_activate: list[list[int]] = field(default_factory=list)
    # v4.4.178 mm/swap.c:46 lru_rotate_pvecs: pages end_page_writeback rotates to the
    # inactive list's tail, one ref each until the pagevec moves (mm/swap.py).
    lru_rotate: list[list[int]] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    hooks: Hooks = field(default_factory=Hooks, metadata={ROLE: "code"})
    next_id: int = 1
    # /sys/kernel/mm/transparent_hugepage/enabled: Debian sets
    # CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS=y (v6.1 mm/huge_memory.c transparent_hugepage_flags).
    thp_enabled: str = "always"
    # .../use_zero_page defaults on (v6.1 mm/huge_memory.c TRANSPARENT_HUGEPAGE_USE_ZERO_PAGE_FLAG).
    thp_use_zero_page: bool = True
    # The huge zero folio once allocated (v6.1 mm/huge_memory.c get_huge_zero_page), else -1.
    huge_zero_pfn: int = -1
    # Open files by file id (new_id), the id standing for the fd (no fd tables are modelled;
    # v6.1 include/linux/fs.h struct file): fs.File (regular files, memfds), io_uring
    # ring.RingFile (with its ring), splice.Pipe (both ends of one pipe).
    files: dict[int, object] = field(default_factory=dict)
    # v6.1 kernel/workqueue.c system_unbound_wq: work queued or running, oldest first
    # (io_uring ring.ExitWork, holding the ring its io_ring_exit_work frees).
    system_unbound_wq: list[object] = field(default_factory=list)
    # Bios of direct I/O from allocation to bio_put, by id (v6.1 include/linux/blk_types.h
    # struct bio; fs/direct_io.Bio).
    bios: dict[int, object] = field(default_factory=dict)
    # v6.1 include/linux/mm_types.h mm_struct.mm_users, by mm id, of an mm with users besides
    # its task (another thread, a remote accessor) or being torn down (0); absent: 1.
    mm_users: dict[int, int] = field(default_factory=dict)
    # v6.1 include/linux/sched/user.h:29 user_struct.locked_vm (pages charged to
    # RLIMIT_MEMLOCK: io_uring's io_account_mem), by the user's uid; absent: 0.
    user_locked_vm: dict[int, int] = field(default_factory=dict)
    # By mm id, how many CPUs with that mm loaded (in its mm_cpumask) run with interrupts
    # disabled: v4.4 arch/x86/mm/gup.c:363 get_user_pages_fast's local_irq_disable, which a
    # TLB-flush IPI to the mm waits for (arch/x86/mm/tlb.py); absent: 0.
    irqs_off: dict[int, int] = field(default_factory=dict)
    # The ext4 filesystem's data= mount option (v4.4.178 fs/ext4/super.c; mkfs.ext4's and the
    # mount's default "ordered"); "journal": ext4_set_aops gives its inodes
    # ext4_journalled_aops (v4.4.178 fs/ext4/inode.c:3443-3453; fs/ext4_jdata.py).
    ext4_data: str = "ordered"
    # That filesystem's jbd2 journal (fs/jbd2.py).
    jbd2: Journal = field(default_factory=Journal)
    # The zone's reclaim flags (v4.4.178 include/linux/mmzone.h:534 zone_flags: ZONE_DIRTY,
    # ZONE_WRITEBACK), set by shrink_inactive_list (mm/vmscan.c:1672-1694); one zone.
    zone_flags: set[str] = field(default_factory=set)
    # v4.4.178 include/linux/page_ext.h:42-50 struct page_ext.flags, by pfn, only where a bit
    # is set.  No modelled kernel feature sets one (Debian's configs build no page_owner or
    # debug-guard users of it); a design may (pinlab.designs.page_ext_flag).
    page_ext: dict[int, int] = field(default_factory=dict)


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
        lru_rotate=[[] for _ in range(p.nr_cpus)],
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
    """An independent copy of the whole kernel state (config and hooks are shared)."""
    memo: dict[int, object] = {id(k.profile): k.profile, id(k.pf): k.pf, id(k.hooks): k.hooks}
    state_digest(k)  # refuses what is not plain data before anything is copied
    return copy.deepcopy(k, memo)


def kernel_digest(k: Kernel) -> bytes:
    """A stable digest of the whole state (same in every process), for state caching.

    The frame table contributes its incremental digest, brought up to date from the
    rows written since the last one; :func:`kernel_digest_full` is the reference.
    """
    return state_digest(k)


def kernel_digest_full(k: Kernel) -> bytes:
    """:func:`kernel_digest` recomputed from every byte of the frame table."""
    return state_digest(k, full=True)
