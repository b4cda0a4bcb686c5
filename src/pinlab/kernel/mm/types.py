"""Address spaces: mm_struct, vm_area_struct and the page cache's address_space.

Plain data mirroring v6.1 include/linux/mm_types.h and include/linux/fs.h;
the functions that change them live in mmap.py, memory.py and filemap.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pinlab.kernel.mm.pgtable import PageTable

# v6.1 include/linux/mm.h vm_flags
VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_MAYSHARE = 0x00000080
VM_PFNMAP = 0x00000400
VM_LOCKED = 0x00002000
VM_IO = 0x00004000
VM_DONTCOPY = 0x00020000
VM_DONTEXPAND = 0x00040000
VM_LOCKONFAULT = 0x00080000
VM_ACCOUNT = 0x00100000
VM_NORESERVE = 0x00200000
VM_HUGETLB = 0x00400000
VM_WIPEONFORK = 0x02000000
VM_SOFTDIRTY = 0x08000000
VM_MIXEDMAP = 0x10000000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000

# v6.1 include/linux/sched/coredump.h: set on the first FOLL_PIN, never cleared,
# not in MMF_INIT_MASK so a child does not inherit it.
MMF_HAS_PINNED = 27


class FsType(enum.Enum):
    """The filesystem behind a file mapping, as far as pinning cares."""

    TMPFS = "tmpfs"
    RAMFS = "ramfs"
    EXT4 = "ext4"
    HUGETLBFS = "hugetlbfs"
    EXT4_DAX = "ext4-dax"

    @property
    def is_shmem(self) -> bool:
        """v6.1 mm/shmem.c shmem_mapping: tmpfs and memfd files."""
        return self is FsType.TMPFS

    @property
    def is_hugetlbfs(self) -> bool:
        """v6.1 include/linux/hugetlb.h is_file_hugepages."""
        return self is FsType.HUGETLBFS

    @property
    def is_dax(self) -> bool:
        """v6.1 include/linux/fs.h vma_is_fsdax: a DAX file on a block filesystem."""
        return self is FsType.EXT4_DAX

    @property
    def writes_back(self) -> bool:
        """Whether dirty pages are written back to storage (v6.1 mapping_can_writeback)."""
        return self in (FsType.EXT4, FsType.EXT4_DAX)

    @property
    def has_page_mkwrite(self) -> bool:
        """Whether the fs's vm_ops has ->page_mkwrite.

        ext4: v6.1 fs/ext4/file.c ext4_file_vm_ops / ext4_dax_vm_ops; ramfs:
        generic_file_mmap installs generic_file_vm_ops with filemap_page_mkwrite
        (v6.1 fs/ramfs/file-mmu.c, mm/filemap.c); shmem_vm_ops and hugetlb_vm_ops have none.
        """
        return self in (FsType.EXT4, FsType.EXT4_DAX, FsType.RAMFS)


@dataclass(slots=True)
class AddressSpace:
    """An inode's page cache (v6.1 include/linux/fs.h struct address_space) and its inode.

    `store` holds the file's contents on its backing device, one token per
    page index (ext4-like files; absent indices read as zeroes); `seals` are
    memfd seals (v6.1 mm/memfd.c); `huge_order` is the hugetlbfs page order.
    `dirty_marks` are the indices marked PAGECACHE_TAG_DIRTY in i_pages: set with
    PG_dirty by __folio_mark_dirty, but cleared only when writeback starts on a folio no
    longer dirty, so a folio cleaned for I/O stays marked until its writeback is under
    way (v6.1 mm/page-writeback.c :2639, :3018; v5.7.14 :2481, :2797; v4.4.178 :2490,
    :2785).  PAGECACHE_TAG_WRITEBACK goes with PG_writeback; TOWRITE is each pass's own.
    """

    id: int
    fs: FsType
    i_size: int
    i_pages: dict[int, int] = field(default_factory=dict)
    store: dict[int, int] = field(default_factory=dict)
    seals: int = 0
    huge_order: int = 0
    dirty_marks: set[int] = field(default_factory=set)


@dataclass(slots=True)
class VmArea:
    """v6.1 include/linux/mm_types.h struct vm_area_struct (the fields pinning reads)."""

    vm_start: int
    vm_end: int
    vm_flags: int
    vm_pgoff: int
    vm_file: int | None = None
    anon_vma: int | None = None


@dataclass(slots=True)
class MmStruct:
    """v6.1 include/linux/mm_types.h struct mm_struct (the fields pinning reads)."""

    id: int
    pgtable: PageTable = field(default_factory=PageTable)
    vmas: list[VmArea] = field(default_factory=list)
    flags: int = 0
    write_protect_seq: int = 0
    mmap_readers: int = 0
    mmap_writer: bool = False
    # v6.1 include/linux/mm_types.h:614 pinned_vm (pages io_uring and others pinned long-term;
    # kernel/fork.c:1151 mm_init zeroes it, so a forked child starts at 0).
    pinned_vm: int = 0


@dataclass(slots=True)
class Task:
    """v6.1 include/linux/sched.h task_struct: a process and its mm."""

    pid: int
    mm: int
    parent: int | None = None
    cpu: int = 0
    # Credentials (v6.1 include/linux/cred.h struct cred): the uid of cred->user, whose
    # user_struct is Kernel.user_locked_vm[uid], and cap_effective / cap_permitted as
    # kernel_cap_t bit masks (bit CAP_*).  These defaults are 6.1's init_cred (kernel/cred.c:57,
    # root with CAP_FULL_SET, CAP_LAST_CAP 40); process.new_task gives the profile's.
    uid: int = 0
    cap_effective: int = (1 << 41) - 1
    cap_permitted: int = (1 << 41) - 1
    # signal->rlim[RLIMIT_MEMLOCK] as (rlim_cur, rlim_max) in bytes: 6.1's INIT_RLIMITS
    # (include/asm-generic/resource.h:21, MLOCK_LIMIT 8 MiB); new_task gives the profile's.
    rlim_memlock: tuple[int, int] = (8 << 20, 8 << 20)


def find_vma(mm: MmStruct, addr: int) -> VmArea | None:
    """The VMA containing `addr`, or None (v6.1 mm/mmap.c vma_lookup)."""
    for vma in mm.vmas:
        if vma.vm_start <= addr < vma.vm_end:
            return vma
    return None


def vma_is_anonymous(vma: VmArea) -> bool:
    """v6.1 include/linux/mm.h vma_is_anonymous (no vm_ops: no file)."""
    return vma.vm_file is None


def is_cow_mapping(vm_flags: int) -> bool:
    """v6.1 include/linux/mm.h is_cow_mapping: private and may be written."""
    return (vm_flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE
