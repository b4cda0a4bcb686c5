"""Kernel versions as data: what each modelled kernel has and how it counts pins.

Behaviour lives in the kernel functions; they read these facts.  Sources are
cited per field; ../shared/reference/kernel-facts.md collects them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# v6.1 include/linux/page-flags.h enum pageflags, x86-64 with Debian's config
# config-6.1.0-56-amd64 (MMU, ARCH_USES_PG_UNCACHED via X86_PAT, MEMORY_FAILURE,
# 64BIT; PAGE_IDLE_FLAG and KASAN_HW_TAGS not set, so no PG_young/PG_idle:
# PG_arch_2 is bit 24).  PG_anon_exclusive aliases PG_mappedtodisk.
PAGEFLAGS_6_1 = (
    "PG_locked",
    "PG_referenced",
    "PG_uptodate",
    "PG_dirty",
    "PG_lru",
    "PG_active",
    "PG_workingset",
    "PG_waiters",
    "PG_error",
    "PG_slab",
    "PG_owner_priv_1",
    "PG_arch_1",
    "PG_reserved",
    "PG_private",
    "PG_private_2",
    "PG_writeback",
    "PG_head",
    "PG_mappedtodisk",
    "PG_reclaim",
    "PG_swapbacked",
    "PG_unevictable",
    "PG_mlocked",
    "PG_uncached",
    "PG_hwpoison",
    "PG_arch_2",
)

# v5.7 include/linux/page-flags.h enum pageflags (x86-64, no idle tracking): 6.1's
# order without PG_arch_2 (added v5.10 for arm64 MTE, 64BIT only).  Checked: v4.20
# 1899ad18c607 put PG_workingset at bit 6 and PG_error after PG_waiters (bit 7).
PAGEFLAGS_5_7 = PAGEFLAGS_6_1[:-1]

# v4.4 include/linux/page-flags.h enum pageflags (x86-64, THP, no idle tracking):
# PG_error is bit 1, PG_swapcache a real bit, PG_compound_lock under
# CONFIG_TRANSPARENT_HUGEPAGE; no PG_waiters (v4.10) or PG_workingset (v4.20).
# Checked against a 4.4 tree's mm/debug.c pageflag_names (one entry per enum value
# in enum order, BUILD_BUG_ON): a single PG_head (no PG_tail), then PG_swapcache.
PAGEFLAGS_4_4 = (
    "PG_locked",
    "PG_error",
    "PG_referenced",
    "PG_uptodate",
    "PG_dirty",
    "PG_lru",
    "PG_active",
    "PG_slab",
    "PG_owner_priv_1",
    "PG_arch_1",
    "PG_reserved",
    "PG_private",
    "PG_private_2",
    "PG_writeback",
    "PG_head",
    "PG_swapcache",
    "PG_mappedtodisk",
    "PG_reclaim",
    "PG_swapbacked",
    "PG_unevictable",
    "PG_mlocked",
    "PG_uncached",
    "PG_hwpoison",
    "PG_compound_lock",
)

ALIASES_6_1 = {"PG_anon_exclusive": "PG_mappedtodisk"}

# v6.5 include/linux/page-flags.h:100-139 enum pageflags: 6.1's order up to PG_hwpoison, but
# PG_arch_2 only under CONFIG_ARCH_USES_PG_ARCH_X (:135-138), which v6.5 mm/Kconfig:1062
# leaves to the architectures (arm64's MTE: "mm: Do not enable PG_arch_2 for all 64-bit
# architectures", v6.2); x86-64 does not select it, so 24 flags.
PAGEFLAGS_6_5 = tuple(f for f in PAGEFLAGS_6_1 if f != "PG_arch_2")
# v6.5 include/linux/page-flags.h:150
ALIASES_6_5 = {"PG_anon_exclusive": "PG_mappedtodisk"}

# The get_user_pages family every modelled kernel has (v4.4 mm/gup.c; the 4.4
# signatures take write/force ints that map onto FOLL_WRITE/FOLL_FORCE).
GUP_APIS_4_4 = frozenset(
    {"get_user_pages", "get_user_pages_unlocked", "get_user_pages_fast", "put_page"}
)
# v5.7 mm/gup.c: + get_user_pages_remote (v4.6), the pin_user_pages* family (v5.6)
# and unpin_user_page(s)/unpin_user_pages_dirty_lock (v5.6 rename of put_user_page*).
GUP_APIS_5_7 = GUP_APIS_4_4 | {
    "get_user_pages_remote",
    "pin_user_pages",
    "pin_user_pages_remote",
    "pin_user_pages_fast",
    "unpin_user_page",
    "unpin_user_pages",
    "unpin_user_pages_dirty_lock",
}
# v6.1 mm/gup.c: + pin_user_pages_unlocked (v5.8), get_user_pages_fast_only (v5.9
# rename of __get_user_pages_fast), pin_user_pages_fast_only (v5.9),
# unpin_user_page_range_dirty_lock (v5.12).
GUP_APIS_6_1 = GUP_APIS_5_7 | {
    "pin_user_pages_unlocked",
    "get_user_pages_fast_only",
    "pin_user_pages_fast_only",
    "unpin_user_page_range_dirty_lock",
}
# v6.5 mm/gup.c exports (:277-3396): 6.1's set without pin_user_pages_fast_only (gone from
# mm/gup.c and include/linux/mm.h by v6.5); put_page is include/linux/mm.h:1499.
GUP_APIS_6_5 = GUP_APIS_6_1 - {"pin_user_pages_fast_only"}


@dataclass(frozen=True, slots=True)
class Profile:
    """One kernel version's pin-relevant facts."""

    name: str
    release: str
    pageflags: tuple[str, ...]
    flag_aliases: dict[str, str]
    has_foll_pin: bool
    pin_bias: int
    exact_pincount_min_order: int | None
    pincount_page: int
    refcount_guard: bool
    page_anon_exclusive: bool
    mmf_has_pinned: bool
    fork_cow_pinned: bool
    longterm_file_write_refused: bool
    zero_page_pin_noop: bool
    page_maybe_dma_pinned: bool
    folio_maybe_dma_pinned: bool
    page_needs_cow_for_dma: bool
    vmstat_foll_pin: bool
    config_cma: bool
    longterm_migrates_cma: bool
    longterm_migrates_movable: bool
    dump_page_style: str
    gup_apis: frozenset[str]
    has_foll_longterm: bool
    longterm_requires_pin: bool
    fsdax_check_after_pin: bool
    hugetlb_grab_batched: bool
    pseudo: bool = False
    # do_wp_page reuse of a non-exclusive anon page: by refcount (v5.9 09854ba94c6a,
    # v6.1 mm/memory.c do_wp_page) or by mapcount through reuse_swap_page (v4.4, v5.7).
    wp_reuse_by_refcount: bool = True
    # per-CPU LRU-add batch capacity: v6.1 include/linux/pagevec.h PAGEVEC_SIZE 15
    # (15 since Willy's Dec 2017 change); v4.4 include/linux/pagevec.h 14.
    pagevec_size: int = 15
    # v4.4 mm/swap.c __lru_cache_add: flush a full pagevec before adding, compound pages
    # queue like others; v5.7 / v6.1 add, then flush when full or the folio is large.
    lru_add_flush_first: bool = False
    # PageDoubleMap (a THP mapped by PMD and PTEs at once) is a page[1] flag aliasing
    # v6.1 include/linux/page-flags.h PG_workingset / v5.7 PG_private_2; not in v4.4.
    double_map_flag: str | None = "PG_workingset"
    # mm->write_protect_seq, odd while fork copies a COW mapping (v5.11 57efa1fe5957;
    # v6.1 mm/memory.c copy_page_range, mm/hugetlb.c copy_hugetlb_page_range).
    write_protect_seq: bool = True
    # v4.4 / v5.7 mm/memory.c copy_one_pte write-protects the parent PTE before
    # get_page + page_dup_rmap; v5.9+ copy_present_pte takes the reference first.
    fork_wrprotect_before_get: bool = False
    # How a FOLL_FORCE write follows a R/O PTE/PMD after its COW fault:
    # "anon_exclusive": v6.1 mm/gup.c can_follow_write_pte, mm/huge_memory.c
    #   can_follow_write_pmd (v6.0 5535be309971): exclusive anon page in a private R/O VMA;
    # "foll_cow": v5.7 mm/gup.c faultin_page sets FOLL_COW on VM_FAULT_WRITE in a !VM_WRITE
    #   VMA, can_follow_write_pte/_pmd then need FOLL_FORCE|FOLL_COW and a dirty entry
    #   (19be0eaffa3a, v4.9 and stable 4.4.26; THP: 8310d48b125d, v4.10);
    # "drop_write": v4.4 mm/gup.c faultin_page clears FOLL_WRITE after such a fault and the
    #   retry follows the entry as a read (the Dirty COW race, CVE-2016-5195).
    foll_force_write: str = "anon_exclusive"
    # pin_user_pages/_remote/_unlocked/_fast refuse pages == NULL with WARN_ON_ONCE and
    # -EINVAL: 6.1.192 mm/gup.c (stable backport; v6.3 is_valid_gup_args upstream).
    # v5.7 mm/gup.c pins without recording the pages (VM_BUG_ON is DEBUG_VM only).
    pin_null_pages_refused: bool = True
    # v6.0 1d8d14641fd9, v6.1 mm/gup.c check_vma_flags: FOLL_FORCE write to a R/O hugetlb
    # VMA is -EFAULT; v5.7 / v4.4 mm/gup.c check_vma_flags let it through.
    hugetlb_force_write_refused: bool = True
    # v5.7 mm/gup.c try_grab_page adds the exact pincount before the refcount, and
    # unpin_user_page(s) unpins page by page, updating NR_FOLL_PIN_RELEASED after the put;
    # v6.1 mm/gup.c: refcount first, and gup_put_folio per folio run with vmstat first.
    pin_v5_7_order: bool = False
    # What __gup_longterm_locked runs on a FOLL_LONGTERM pin once the pages are pinned:
    # "movable": v6.1 mm/gup.c check_and_migrate_movable_pages (unpin every page, migrate,
    #   -EAGAIN to pin again; -ENOMEM when migration fails);
    # "cma": v5.7.14 mm/gup.c check_and_migrate_cma_pages 1657-1744 (isolate CMA pages, drop
    #   every page, migrate, pin again itself; when migration fails, pin the pages where they
    #   are and return the count: 1716-1743).
    longterm_check: str = "movable"
    # v5.7.14 mm/gup.c __gup_longterm_locked 1796-1798 (fsdax) and check_and_migrate_cma_pages
    # 1713-1714 drop the pinned pages with put_page() even under FOLL_PIN: one reference of a
    # page's GUP_PIN_COUNTING_BIAS, no NR_FOLL_PIN_RELEASED.  v5.10 96e1fac162cc "mm/gup: use
    # unpin_user_pages() in __gup_longterm_locked()" unpins them.
    longterm_release_put_page: bool = False
    # io_uring: 6.1.192 io_uring/, 5.7.14 fs/io_uring.c; the 4.4.178 tree has no io_uring.
    has_io_uring: bool = True
    # INIT_RLIMITS RLIMIT_MEMLOCK {MLOCK_LIMIT, MLOCK_LIMIT} (include/asm-generic/resource.h:21),
    # include/uapi/linux/resource.h MLOCK_LIMIT: 6.1.192 :79 8 MiB; 5.7.14 :72 and 4.4.178
    # :71 max(PAGE_SIZE, 64 KiB).
    mlock_limit: int = 8 << 20
    # include/uapi/linux/capability.h CAP_LAST_CAP: 6.1.192 :420 CAP_CHECKPOINT_RESTORE (40);
    # 5.7.14 :371, 4.4.178 :355 CAP_AUDIT_READ (37).  init_cred holds CAP_FULL_SET, bits 0..it.
    cap_last_cap: int = 40
    # How io_uring buffer registration charges locked memory:
    # "account_pin": 6.1.192 io_uring/rsrc.c io_sqe_buffer_register (:1075) charges after
    #   io_pin_pages, io_buffer_account_pin (:947) a compound page's whole size once per head
    #   (headpage_already_acct :919);
    # "pages_before_pin": 5.7.14 fs/io_uring.c io_sqe_buffer_register (:7258) charges the
    #   buffer's 4 KiB page count before pinning.
    io_uring_buffer_acct: str = "account_pin"
    # 6.1.192 io_uring/rsrc.c io_account_mem (:85) also adds to ctx->mm_account->pinned_vm
    # (io_uring.c:3727 the creator's mm); 5.7.14 has no ctx->mm_account.
    io_uring_acct_pinned_vm: bool = True
    # 5.7.14 fs/io_uring.c io_uring_create (:7992) charges ring_pages(sq, cq) without
    # CAP_IPC_LOCK and io_ring_ctx_wait_and_kill (:7525) returns them; 6.1.192 does not.
    io_uring_acct_rings: bool = False
    # gup-fast's walk: "generic": v6.1 mm/gup.c lockless_pages_from_mm (speculative grab,
    # then the entry is read again); "x86": v4.4 arch/x86/mm/gup.c get_user_pages_fast, with
    # interrupts off so an unmapper's TLB-flush IPI waits, get_page with no recheck.
    gup_fast: str = "generic"
    # Before v4.5's THP refcounting rework (ddc58f27f9ee), a reference to a THP tail page is
    # counted on the head's _count and the tail's _mapcount (v4.4 mm/gup.c get_page_foll,
    # mm/swap.c put_compound_page) and a split always splits the compound page.
    thp_tail_refs_in_mapcount: bool = False
    # Whether the per-CPU activate batch is drained at once for a large folio: v6.1 mm/swap.c
    # folio_activate -> folio_batch_add_and_move (:246-251, folio_may_be_lru_cached); v5.7
    # mm/swap.c activate_page (:310-315, PageCompound); v4.4 mm/swap.c activate_page
    # (:536-545) drains only a full pagevec.
    activate_flush_large: bool = True
    # mapping->a_ops dirty method of an ext4 (delalloc, data=ordered) file:
    # "ext4_dirty_folio": v6.1 fs/ext4/inode.c:3661-3666 (ext4_da_aops :3717), two WARN_ON_ONCEs,
    #   then fs/buffer.c block_dirty_folio;
    # "ext4_set_page_dirty": v5.7.14 fs/ext4/inode.c:3599-3604 (ext4_da_aops :3646), the same
    #   two WARN_ON_ONCEs, then fs/buffer.c __set_page_dirty_buffers;
    # "__set_page_dirty_buffers": v4.4.178 ext4_da_aops (fs/ext4/inode.c:3427) has no
    #   ->set_page_dirty, so mm/page-writeback.c set_page_dirty (:2576-2578) falls back to
    #   fs/buffer.c __set_page_dirty_buffers: no warning.
    ext4_dirty_op: str = "ext4_dirty_folio"
    # ext4 -o dax's dirty method: v6.1 fs/ext4/inode.c ext4_dax_aops (:3731) noop_dirty_folio;
    # v5.7.14 (:3659) noop_set_page_dirty (nothing, returns 0); v4.4.178 ext4_set_aops
    # (:3443) gives DAX inodes ext4_da_aops too (no ->set_page_dirty: buffers).
    ext4_dax_dirty_op: str = "noop_dirty_folio"
    # v5.7.14 fs/hugetlbfs/inode.c:899 / v4.4.178 :855 hugetlbfs_set_page_dirty: SetPageDirty on
    # the head, returns 0; v6.1 hugetlbfs_aops (:1287) noop_dirty_folio tests and sets.
    hugetlbfs_set_page_dirty: bool = False
    # v6.1 fs/buffer.c try_to_free_buffers (:2826) WARN_ON_ONCE and returns true on a folio
    # without buffers; v5.7.14 (:3236) / v4.4.178 (:3214) have no such check.
    free_buffers_warns_no_buffers: bool = True
    # Which kernel's FOLL_* table (mm/gup_flags.py) the profile has: "6.1" (v6.1.192
    # include/linux/mm.h:3087-3103, FOLL_NOFAULT on bit 0x80), "5.7" (v5.7.14 :2775-2794,
    # FOLL_SPLIT there), "6.5" (v6.5 include/linux/mm_types.h:1257-1298, see gup_flags.py)
    # or "4.4" (v4.4.178 :2108-2123).
    foll_flags: str = "6.1"
    # Whether a new anon page or THP (fault, COW copy) starts on the active LRU: v5.7.14
    # mm/swap.c:460 / v4.4.178 mm/swap.c:711 lru_cache_add_active_or_unevictable sets
    # PG_active; v6.1 mm/swap.c:539 folio_add_lru_vma adds it inactive.
    new_anon_lru_active: bool = False
    # Whether every exported gup/pup entry vets its flags with is_valid_gup_args (v6.3): v6.5
    # mm/gup.c:2209-2260 refuses FOLL_PIN/TRIED/REMOTE/FAST_ONLY from callers (WARN), and a bad
    # pin_user_pages / _remote / _unlocked returns 0 (:3337-3341, :3369-3370, :3389-3390);
    # 6.1.192 mm/gup.c is_valid_gup_flags (:2171-2186) refuses FOLL_PIN and FOLL_LONGTERM only,
    # pin_* refuse FOLL_GET / NULL pages with -EINVAL (:3272-3276, :3309-3313, :3333-3337);
    # 5.7.14 and 4.4.178 mm/gup.c as the model's older paths (no is_valid_gup_args).  This
    # field also selects what v6.5 has beside it and 6.1.192 lacks: the unlocked and
    # gup-fast slow paths through __gup_longterm_locked with FOLL_UNLOCKABLE (v6.5
    # :3194-3199, :1451-1590) and gup-fast's -EOVERFLOW (v6.5 :3183-3184).
    valid_gup_args: bool = False
    # v6.5 mm/internal.h:985-1000 gup_must_unshare: a R/O FOLL_LONGTERM pin of a page that is
    # not anon (a page-cache page, the zero page) must unshare it in a COW mapping (always from
    # gup-fast, which has no VMA), and mm/memory.c do_wp_page (:3338-3448) copies it
    # (wp_page_copy) on FAULT_FLAG_UNSHARE; 6.1.192 include/linux/mm.h:3202-3203 never unshares
    # a non-anon page and do_wp_page returns 0.  5.7 / 4.4 have no gup_must_unshare at all.
    unshare_non_anon: bool = False
    # How collect_longterm_unpinnable_pages drains the per-CPU LRU batches before isolating:
    # "refcount": 6.1.192 mm/gup.c:1993-2004 (stable backport) lru_add_drain, then
    #   lru_add_drain_all, for a small folio whose refcount is not expected + 1;
    # "not_lru": v6.5 mm/gup.c:2044-2047 lru_add_drain_all once, for the first folio (of any
    #   size) without PG_lru;
    # None: no such function (5.7.14 runs check_and_migrate_cma_pages, 4.4 has no FOLL_LONGTERM).
    longterm_lru_drain: str | None = "refcount"
    # What io_pin_pages requires of the VMAs of the pages it pinned:
    # "shmem_hugetlb": 6.1.192 io_uring/rsrc.c:1009-1023 one vm_file for all (-EINVAL), and a
    #   file only if shmem or hugetlbfs (-EOPNOTSUPP);
    # "hugetlb": 5.7.14 fs/io_uring.c:7297-7305 any file but hugetlbfs is -EOPNOTSUPP;
    # None: v6.5 io_uring/rsrc.c io_pin_pages (:1030-1067) tests no VMA (gup's own checks only);
    #   4.4.178 has no io_uring.
    io_uring_vma_check: str | None = "shmem_hugetlb"
    # v6.5 io_uring/rsrc.c:1093-1114 io_sqe_buffer_register: a buffer of consecutive pages of one
    # folio becomes a single bvec and the other pages are unpinned; 6.1.192 (:1071-1090) and
    # 5.7.14 keep one bvec (one pin) per page.
    io_uring_coalesce_folio: bool = False
    # What a write fault on a shared file page does with mmap_lock while it throttles
    # dirtying (fault_dirty_shared_page): "completed" drops it and returns
    # VM_FAULT_COMPLETED (6.1.192 / v6.5 mm/memory.c); "retry" drops it and returns
    # VM_FAULT_RETRY (5.7.14 mm/memory.c:2583-2591); None keeps it (4.4.178 mm/memory.c
    # do_shared_fault :3145-3151 and wp_page_reuse :2116-2121 throttle under mmap_sem).
    fault_dirty_unlock: str | None = "completed"
    # A retried user fault may not drop mmap_lock again: 4.4.178 arch/x86/mm/fault.c
    # __do_page_fault :1251-1256 clears FAULT_FLAG_ALLOW_RETRY; from v5.6 ("mm: allow
    # VM_FAULT_RETRY for multiple times") 5.7.14 (:1480-1484) and 6.1 keep it.
    fault_retry_once: bool = False
    # COW of an anon THP copies it whole (4.4.178 / 5.7.14 mm/huge_memory.c
    # do_huge_pmd_wp_page, huge_pmd_4_4.py / huge_pmd_5_7.py); from v5.8 ("thp: change
    # CoW semantics for anon-THP") 6.1/6.5 split the PMD and COW the small page.
    thp_cow_copies: bool = False
    # The mm flags MMF_HUGE_ZERO_PAGE and MMF_DISABLE_THP (5.7.14 / 6.1 / v6.5
    # include/linux/sched/coredump.h bits 23, 24); 4.4.178 has neither (include/linux/
    # sched.h:504-509: its bits end at 20) and counts huge zero page users per mapping.
    mmf_huge_zero_page: bool = True
    # fork of a huge zero PMD maps it afresh from the VMA's protections, young and clean
    # (5.7.14 mm/huge_memory.c:1092-1096 set_huge_zero_page); 6.1 (:1160-1161) and v6.5
    # (:1133-1134) copy the parent's entry write-protected and old (out_zero_page).
    fork_huge_zero_fresh: bool = False
    # __handle_mm_fault itself allocates the PTE table after a none or huge PMD and
    # retries on pmd_trans_unstable (4.4.178 mm/memory.c:3451-3464); from v4.8
    # (7267ec008b5c) the table is allocated later, by the fault handlers.
    fault_pte_alloc_early: bool = False
    # A spurious write fault on a huge PMD also makes it dirty: 5.7.14 mm/huge_memory.c
    # :1248-1249, 6.1 touch_pmd; 4.4.178 :1002 huge_pmd_set_accessed only makes it young.
    thp_access_dirties: bool = True
    # Splitting a dirty huge PMD dirties its 512 PTEs too: v6.5 mm/huge_memory.c:2250-2252
    # (__split_huge_pmd_locked :2074); 6.1.192 (:2179-2182, and the sparc64 note :2255)
    # and 5.7.14 (:2302-2303) set only PG_dirty; 4.4.178's own split always dirties them
    # (:1900).
    thp_split_dirties_ptes: bool = False
    # Whose reclaim (mm/vmscan.c shrink_page_list, mm/rmap.c try_to_unmap), buffer release,
    # PG_reclaim rotate and ext4 data=journal code the model runs: "4.4" (read from the
    # 4.4.178 tree); None: not modelled yet, and reaching it is `unmodelled`.
    consumers: str | None = None

    def flag_bit(self, name: str) -> int:
        """Bit number of page flag `name` (aliases resolved) in this kernel."""
        real = self.flag_aliases.get(name, name)
        try:
            return self.pageflags.index(real)
        except ValueError:
            raise KeyError(f"{name} does not exist in kernel {self.name}") from None

    def has_flag(self, name: str) -> bool:
        """Whether this kernel has page flag `name`."""
        return self.flag_aliases.get(name, name) in self.pageflags

    def exact_pincount(self, order: int) -> bool:
        """Whether a folio of this order keeps an exact pincount instead of the bias."""
        least = self.exact_pincount_min_order
        return least is not None and order >= least


P6_1 = Profile(
    name="6.1",
    release="6.1.192 (Debian linux-source-6.1 6.1.192-2)",
    pageflags=PAGEFLAGS_6_1,
    flag_aliases=ALIASES_6_1,
    # v6.1 mm/gup.c pin_user_pages*(), include/linux/mm.h GUP_PIN_COUNTING_BIAS (1U << 10)
    has_foll_pin=True,
    pin_bias=1024,
    # v5.18 5232c63f46fd: compound_pincount in page[1] for every compound page (order >= 1)
    exact_pincount_min_order=1,
    pincount_page=1,
    # v5.1 8fde12ca79af; v6.1 mm/gup.c try_grab_page: WARN_ON_ONCE(page_ref_count <= 0)
    refcount_guard=True,
    # v5.19 include/linux/page-flags.h PG_anon_exclusive; mm.h gup_must_unshare
    page_anon_exclusive=True,
    # v5.14 a458b76a4171 MMF_HAS_PINNED, include/linux/sched/coredump.h bit 27
    mmf_has_pinned=True,
    # v5.9 70e806e4e645; v6.1 mm/memory.c copy_present_pte -> page_try_dup_anon_rmap
    fork_cow_pinned=True,
    longterm_file_write_refused=False,
    # v6.5 c8070b787519 "mm: Don't pin ZERO_PAGE in pin_user_pages()", backported to
    # 6.1.192 mm/gup.c try_grab_page/try_grab_folio/gup_put_folio (6.1.0 pinned it).
    zero_page_pin_noop=True,
    # v6.1 include/linux/mm.h folio_maybe_dma_pinned / page_needs_cow_for_dma
    page_maybe_dma_pinned=True,
    folio_maybe_dma_pinned=True,
    page_needs_cow_for_dma=True,
    # v6.1 include/linux/mmzone.h NR_FOLL_PIN_ACQUIRED/RELEASED, unconditional
    vmstat_foll_pin=True,
    # Debian's config-6.1.0-56-amd64 has "# CONFIG_CMA is not set", so v6.1
    # include/linux/mm.h is_longterm_pinnable_page compiles its MIGRATE_CMA test out and
    # refuses ZONE_MOVABLE only.
    config_cma=False,
    longterm_migrates_cma=False,
    longterm_migrates_movable=True,
    dump_page_style="6.1",
    gup_apis=GUP_APIS_6_1,
    has_foll_longterm=True,
    # v6.1 mm/gup.c is_valid_gup_flags / __gup_longterm_locked: LONGTERM needs PIN
    longterm_requires_pin=True,
    # v6.1 mm/gup.c check_vma_flags refuses fsdax before pinning
    fsdax_check_after_pin=False,
    # v5.12 0fa5bc4023c1; v6.1 mm/hugetlb.c follow_hugetlb_page: one try_grab_folio(refs)
    hugetlb_grab_batched=True,
    # 6.1.192 mm/gup.c is_valid_gup_flags (:2171) and the pin_* checks
    valid_gup_args=False,
    # 6.1.192 include/linux/mm.h:3202-3203 gup_must_unshare: anon pages only
    unshare_non_anon=False,
    # 6.1.192 mm/gup.c:1993-2004 collect_longterm_unpinnable_pages
    longterm_lru_drain="refcount",
    # 6.1.192 io_uring/rsrc.c:1009-1023 io_pin_pages
    io_uring_vma_check="shmem_hugetlb",
    # 6.1.192 io_uring/rsrc.c:1071-1090: one bvec per page
    io_uring_coalesce_folio=False,
    # 6.1.192 mm/memory.c fault_dirty_shared_page: maybe_unlock_mmap_for_io, COMPLETED
    fault_dirty_unlock="completed",
    fault_retry_once=False,
    thp_cow_copies=False,
    mmf_huge_zero_page=True,
    fork_huge_zero_fresh=False,
    fault_pte_alloc_early=False,
    thp_access_dirties=True,
    consumers=None,
)

P6_5 = Profile(
    name="6.5",
    # facts read from the mainline v6.5 tree (6.5.0); x86-64 config as the 6.1 profile's
    # (Debian-like: no CMA, X86_PAT, MEMORY_FAILURE, no PAGE_IDLE_FLAG): no 6.5 .config here
    release="6.5.0 (mainline v6.5 tree; x86-64 config as the 6.1 profile's)",
    pageflags=PAGEFLAGS_6_5,
    flag_aliases=ALIASES_6_5,
    # v6.5 include/linux/mm.h:1542 GUP_PIN_COUNTING_BIAS (1U << 10); mm/gup.c:3364 pin_user_pages
    has_foll_pin=True,
    pin_bias=1024,
    # v6.5 include/linux/mm_types.h:332-339 struct folio: _pincount in the first tail page;
    # mm/gup.c:250-252 try_grab_page and include/linux/mm.h:1884-1887 folio_maybe_dma_pinned
    # use it for every large folio (order >= 1)
    exact_pincount_min_order=1,
    pincount_page=1,
    # v6.5 mm/gup.c:229-230 try_grab_page: WARN_ON_ONCE(folio_ref_count <= 0) -> -ENOMEM
    refcount_guard=True,
    # v6.5 include/linux/page-flags.h:150 PG_anon_exclusive; mm/internal.h:955 gup_must_unshare
    page_anon_exclusive=True,
    # v6.5 include/linux/sched/coredump.h:83 MMF_HAS_PINNED 27; mm/gup.c:496 mm_set_has_pinned_flag
    mmf_has_pinned=True,
    # v6.5 mm/memory.c:943-944 copy_present_pte -> include/linux/rmap.h:243-274
    # page_try_dup_anon_rmap -> include/linux/mm.h:1912 page_needs_cow_for_dma
    fork_cow_pinned=True,
    # v6.5 mm/gup.c:1019-1035 writable_file_mapping_allowed, check_vma_flags :1056-1059;
    # gup-fast folio_fast_pin_allowed :2454
    longterm_file_write_refused=True,
    # v6.5 mm/gup.c try_grab_folio :145, try_grab_page :242-243, gup_put_folio :192-193
    # (c8070b787519 is in v6.5)
    zero_page_pin_noop=True,
    # v6.5 include/linux/mm.h:1884 folio_maybe_dma_pinned, :1901 page_maybe_dma_pinned,
    # :1912 page_needs_cow_for_dma
    page_maybe_dma_pinned=True,
    folio_maybe_dma_pinned=True,
    page_needs_cow_for_dma=True,
    # v6.5 include/linux/mmzone.h:195-196 NR_FOLL_PIN_ACQUIRED/RELEASED, mm/vmstat.c:1234-1235
    vmstat_foll_pin=True,
    # v6.5 include/linux/mm.h:1947-1965 folio_is_longterm_pinnable: MIGRATE_CMA under
    # CONFIG_CMA only (off in the assumed config), then ZONE_MOVABLE is refused
    config_cma=False,
    longterm_migrates_cma=False,
    longterm_migrates_movable=True,
    # v6.5 mm/debug.c:102 __dump_page: entire_mapcount, nr_pages_mapped, pincount
    dump_page_style="6.5",
    gup_apis=GUP_APIS_6_5,
    # v6.5 include/linux/mm_types.h:1282 FOLL_LONGTERM
    has_foll_longterm=True,
    # v6.5 mm/gup.c:2247-2248 is_valid_gup_args: FOLL_LONGTERM without FOLL_PIN is refused
    longterm_requires_pin=True,
    # v6.5 mm/gup.c:1050-1051 check_vma_flags refuses fsdax before pinning
    fsdax_check_after_pin=False,
    # v6.5 mm/hugetlb.c:6531 follow_hugetlb_page: one try_grab_folio(refs) per page (:6695)
    hugetlb_grab_batched=True,
    # v6.5 mm/memory.c:3391-3418 do_wp_page: a non-exclusive anon folio is reused when
    # folio_ref_count is 1 (after lru_add_drain and swap-cache freeing)
    wp_reuse_by_refcount=True,
    # v6.5 include/linux/pagevec.h:15 PAGEVEC_SIZE 15 (folio_batch)
    pagevec_size=15,
    # v6.5 mm/swap.c:228-234 folio_batch_add_and_move: add, then move when full or large
    lru_add_flush_first=False,
    # v6.5 include/linux/page-flags.h has no PG_double_map (removed in v6.2)
    double_map_flag=None,
    # v6.5 mm/memory.c:1316/:1335 copy_page_range, mm/hugetlb.c:5059/:5222
    write_protect_seq=True,
    # v6.5 mm/memory.c copy_present_pte: folio_get and the dup (:943-944) before the parent
    # PTE is write-protected (:961-963)
    fork_wrprotect_before_get=False,
    # v6.5 mm/gup.c:542-577 can_follow_write_pte, mm/huge_memory.c:1411 can_follow_write_pmd
    foll_force_write="anon_exclusive",
    # v6.5 mm/gup.c:2250-2252 is_valid_gup_args: FOLL_PIN with pages == NULL, WARN_ON_ONCE
    pin_null_pages_refused=True,
    # v6.5 mm/gup.c:1064-1066 check_vma_flags: FOLL_FORCE write to R/O hugetlb is -EFAULT
    hugetlb_force_write_refused=True,
    # v6.5 mm/gup.c:250-257 try_grab_page: refcount, pincount, then NR_FOLL_PIN_ACQUIRED;
    # gup_put_folio :189-203: NR_FOLL_PIN_RELEASED first, then pincount and refcount
    pin_v5_7_order=False,
    # v6.5 mm/gup.c:2174-2200 __gup_longterm_locked -> check_and_migrate_movable_pages :2148
    # (-EAGAIN after migrating, -ENOMEM when migration fails: :2066-2138)
    longterm_check="movable",
    # v6.5 mm/gup.c migrate_longterm_unpinnable_pages unpins with unpin_user_page (:2101)
    longterm_release_put_page=False,
    # v6.5 io_uring/
    has_io_uring=True,
    # v6.5 include/uapi/linux/resource.h:79 MLOCK_LIMIT 8 MiB (asm-generic/resource.h:21)
    mlock_limit=8 << 20,
    # v6.5 include/uapi/linux/capability.h:419-421 CAP_LAST_CAP CAP_CHECKPOINT_RESTORE (40)
    cap_last_cap=40,
    # v6.5 io_uring/rsrc.c io_sqe_buffer_register (:1069) charges after io_pin_pages (:1085),
    # io_buffer_account_pin (:998) a compound page's whole size once (headpage_already_acct :970)
    io_uring_buffer_acct="account_pin",
    # v6.5 io_uring/rsrc.c:75-76 io_account_mem adds to ctx->mm_account->pinned_vm
    # (io_uring.c:3928 the creator's mm)
    io_uring_acct_pinned_vm=True,
    # v6.5 io_uring/io_uring.c: io_uring_create charges no ring pages (no io_account_mem there)
    io_uring_acct_rings=False,
    # v6.5 mm/gup.c:3110 lockless_pages_from_mm (grab, then re-read the entry)
    gup_fast="generic",
    thp_tail_refs_in_mapcount=False,
    # v6.5 mm/swap.c:352-364 folio_activate -> folio_batch_add_and_move (:228-234)
    activate_flush_large=True,
    # v6.5 fs/ext4/inode.c:3496-3501 ext4_dirty_folio (ext4_da_aops :3544, :3550): two
    # WARN_ON_ONCEs, then block_dirty_folio
    ext4_dirty_op="ext4_dirty_folio",
    # v6.5 fs/ext4/inode.c:3561-3564 ext4_dax_aops .dirty_folio = noop_dirty_folio
    ext4_dax_dirty_op="noop_dirty_folio",
    # fs/hugetlbfs is not in the 6.5 tree here: hugetlbfs_aops .dirty_folio = noop_dirty_folio
    # at 6.5 (inode.c:1266 in the context of the Aug 2023 "fs: clean up usage of
    # noop_dirty_folio" patch, not in v6.5: mm/page-writeback.c:2802 still calls ->dirty_folio
    # unconditionally); no hugetlbfs_set_page_dirty
    hugetlbfs_set_page_dirty=False,
    # v6.5 fs/buffer.c:2953-2966 try_to_free_buffers has no folio_buffers test (6.1.192's
    # WARN_ON_ONCE is a stable backport); drop_buffers (:2927) walks folio_buffers
    free_buffers_warns_no_buffers=False,
    foll_flags="6.5",
    # v6.5 mm/memory.c:4146 do_anonymous_page -> mm/swap.c:530-538 folio_add_lru_vma ->
    # folio_add_lru (:501-519): inactive unless MGLRU is on
    new_anon_lru_active=False,
    # v6.5 mm/gup.c:2209-2260 is_valid_gup_args at every exported entry
    valid_gup_args=True,
    # v6.5 mm/internal.h:985-1000 gup_must_unshare, mm/memory.c:3338-3448 do_wp_page
    unshare_non_anon=True,
    # v6.5 mm/gup.c:2044-2047 collect_longterm_unpinnable_pages
    longterm_lru_drain="not_lru",
    # v6.5 io_uring/rsrc.c:1030-1067 io_pin_pages: no VMA test
    io_uring_vma_check=None,
    # v6.5 io_uring/rsrc.c:1093-1114 io_sqe_buffer_register
    io_uring_coalesce_folio=True,
    # v6.5 mm/memory.c:2995-3003 fault_dirty_shared_page: maybe_unlock_mmap_for_io, COMPLETED
    fault_dirty_unlock="completed",
    fault_retry_once=False,
    # v6.5 mm/huge_memory.c do_huge_pmd_wp_page splits; coredump.h:72-73; :1133-1134
    thp_cow_copies=False,
    mmf_huge_zero_page=True,
    fork_huge_zero_fresh=False,
    fault_pte_alloc_early=False,
    thp_access_dirties=True,
    thp_split_dirties_ptes=True,
    consumers=None,
)

P5_7 = Profile(
    name="5.7",
    # facts read from the vanilla 5.7.14 tree, the series' last stable update
    release="5.7.14 (vanilla stable tree)",
    pageflags=PAGEFLAGS_5_7,
    flag_aliases={},
    # v5.7 3faa52c03f44 "mm/gup: track FOLL_PIN pages": a pin adds GUP_PIN_COUNTING_BIAS
    has_foll_pin=True,
    pin_bias=1024,
    # v5.7 47e29d32afba: hpage_pinned_refcount in page[2], only for order > 1
    exact_pincount_min_order=2,
    pincount_page=2,
    # v5.7 mm/gup.c try_grab_page: WARN_ON_ONCE(page_ref_count(head) <= 0)
    refcount_guard=True,
    page_anon_exclusive=False,
    mmf_has_pinned=False,
    # early COW of pinned pages at fork came in v5.9 (70e806e4e645)
    fork_cow_pinned=False,
    longterm_file_write_refused=False,
    zero_page_pin_noop=False,
    # v5.7 include/linux/mm.h page_maybe_dma_pinned; folio_* came in v5.18,
    # page_needs_cow_for_dma in v5.12 (97a7e4733b9b)
    page_maybe_dma_pinned=True,
    folio_maybe_dma_pinned=False,
    page_needs_cow_for_dma=False,
    # v5.7 mm/vmstat.c "nr_foll_pin_acquired"/"nr_foll_pin_released"
    vmstat_foll_pin=True,
    # v5.7 mm/gup.c check_and_migrate_cma_pages (CONFIG_CMA): CMA only (ZONE_MOVABLE from v5.13)
    config_cma=True,
    longterm_migrates_cma=True,
    longterm_migrates_movable=False,
    dump_page_style="5.7",
    gup_apis=GUP_APIS_5_7,
    has_foll_longterm=True,
    # v5.7 mm/gup.c: get_user_pages accepts FOLL_LONGTERM (FOLL_GET long-term refs)
    longterm_requires_pin=False,
    # v5.7 mm/gup.c __gup_longterm_locked: check_dax_vmas after pinning, then release
    fsdax_check_after_pin=True,
    # v5.7 mm/hugetlb.c follow_hugetlb_page: try_grab_page per subpage
    hugetlb_grab_batched=False,
    # v5.7 mm/memory.c do_wp_page -> reuse_swap_page(page, &total_map_swapcount)
    wp_reuse_by_refcount=False,
    double_map_flag="PG_private_2",
    write_protect_seq=False,
    fork_wrprotect_before_get=True,
    foll_force_write="foll_cow",
    pin_null_pages_refused=False,
    hugetlb_force_write_refused=False,
    pin_v5_7_order=True,
    longterm_check="cma",
    longterm_release_put_page=True,
    mlock_limit=64 << 10,
    cap_last_cap=37,
    io_uring_buffer_acct="pages_before_pin",
    io_uring_acct_pinned_vm=False,
    io_uring_acct_rings=True,
    ext4_dirty_op="ext4_set_page_dirty",
    ext4_dax_dirty_op="noop_set_page_dirty",
    hugetlbfs_set_page_dirty=True,
    free_buffers_warns_no_buffers=False,
    foll_flags="5.7",
    new_anon_lru_active=True,
    # 5.7.14 mm/gup.c: no is_valid_gup_args, no PageAnonExclusive; FOLL_LONGTERM runs
    # check_and_migrate_cma_pages (no collect_longterm_unpinnable_pages)
    valid_gup_args=False,
    unshare_non_anon=False,
    longterm_lru_drain=None,
    # 5.7.14 fs/io_uring.c:7297-7305 io_sqe_buffer_register
    io_uring_vma_check="hugetlb",
    io_uring_coalesce_folio=False,
    # 5.7.14 mm/memory.c:2583-2591 fault_dirty_shared_page: fput, VM_FAULT_RETRY
    fault_dirty_unlock="retry",
    fault_retry_once=False,
    # 5.7.14 mm/huge_memory.c:1375-1514 do_huge_pmd_wp_page copies; coredump.h:71-72;
    # :1092-1096 set_huge_zero_page
    thp_cow_copies=True,
    mmf_huge_zero_page=True,
    fork_huge_zero_fresh=True,
    fault_pte_alloc_early=False,
    thp_access_dirties=True,
    consumers=None,
)

P4_4 = Profile(
    name="4.4",
    # facts read from the vanilla 4.4.178 tree (which has no try_get_page backport), except
    # FOLL_FORCE writes (foll_force_write): mainline v4.4's, before 4.4.26's Dirty COW fix
    release="4.4.178 (vanilla stable tree; FOLL_FORCE writes as mainline v4.4)",
    pageflags=PAGEFLAGS_4_4,
    flag_aliases={},
    # v4.4 mm/gup.c: FOLL_GET only, get_page() per page
    has_foll_pin=False,
    pin_bias=1,
    exact_pincount_min_order=None,
    pincount_page=0,
    # the refcount-overflow refusal is v5.1 8fde12ca79af
    refcount_guard=False,
    page_anon_exclusive=False,
    mmf_has_pinned=False,
    fork_cow_pinned=False,
    longterm_file_write_refused=False,
    zero_page_pin_noop=False,
    page_maybe_dma_pinned=False,
    folio_maybe_dma_pinned=False,
    page_needs_cow_for_dma=False,
    vmstat_foll_pin=False,
    # v4.4 mm/cma.c exists; gup does not look at it
    config_cma=True,
    longterm_migrates_cma=False,
    longterm_migrates_movable=False,
    dump_page_style="4.4",
    gup_apis=GUP_APIS_4_4,
    # FOLL_LONGTERM: v5.2 932f4a630a69
    has_foll_longterm=False,
    longterm_requires_pin=False,
    fsdax_check_after_pin=False,
    hugetlb_grab_batched=False,
    # v4.4 mm/memory.c do_wp_page -> reuse_swap_page(page): mapcount
    wp_reuse_by_refcount=False,
    pagevec_size=14,
    lru_add_flush_first=True,
    double_map_flag=None,
    write_protect_seq=False,
    fork_wrprotect_before_get=True,
    # "4.4" is mainline v4.4 (as its other facts: no try_get_page backport), so before the
    # Dirty COW fix that 4.4.26 and Ubuntu's 4.4.0-45+ carried.
    foll_force_write="drop_write",
    pin_null_pages_refused=False,
    hugetlb_force_write_refused=False,
    # io_uring came in v5.1 (no io_uring file in the 4.4.178 tree)
    has_io_uring=False,
    mlock_limit=64 << 10,
    cap_last_cap=37,
    gup_fast="x86",
    thp_tail_refs_in_mapcount=True,
    activate_flush_large=False,
    ext4_dirty_op="__set_page_dirty_buffers",
    ext4_dax_dirty_op="__set_page_dirty_buffers",
    hugetlbfs_set_page_dirty=True,
    free_buffers_warns_no_buffers=False,
    foll_flags="4.4",
    new_anon_lru_active=True,
    # 4.4.178 mm/gup.c: no flag vetting, no unsharing, no FOLL_LONGTERM, no io_uring
    valid_gup_args=False,
    unshare_non_anon=False,
    longterm_lru_drain=None,
    io_uring_vma_check=None,
    io_uring_coalesce_folio=False,
    # 4.4.178 mm/memory.c:3145-3151 / :2116-2121: balance_dirty_pages_ratelimited under mmap_sem
    fault_dirty_unlock=None,
    fault_retry_once=True,
    # 4.4.178 mm/huge_memory.c:1185-1265 copies the THP; sched.h:504-509; the fork of a huge
    # zero PMD is huge_pmd_4_4.copy_huge_pmd's; mm/memory.c:3451-3464
    thp_cow_copies=True,
    mmf_huge_zero_page=False,
    fork_huge_zero_fresh=True,
    fault_pte_alloc_early=True,
    thp_access_dirties=False,
    consumers="4.4",
)

# Not a released kernel: "[PATCH v4 07/12] mm/gup: track FOLL_PIN pages"
# (https://lore.kernel.org/r/20200204234117.2974687-8-jhubbard@nvidia.com) on its
# own, before 08/12 added exact huge-page counts: every pin adds the bias to the
# head's _refcount whatever the folio's size, try_grab_page refuses a head whose
# count is <= 0, and /proc/vmstat has no pin counters yet (v5 10/12 added them).
PFOLL_PIN_BIAS_V4 = replace(
    P5_7,
    name="foll-pin-bias-v4",
    release="pseudo: v4 of the 2020 FOLL_PIN series, patch 07/12 (never released)",
    exact_pincount_min_order=None,
    pincount_page=0,
    vmstat_foll_pin=False,
    pseudo=True,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (P4_4, P5_7, P6_1, P6_5, PFOLL_PIN_BIAS_V4)}


class NotInKernel(Exception):
    """A kernel function or flag used under a profile whose kernel did not have it."""

    def __init__(self, what: str, profile: Profile) -> None:
        super().__init__(f"{what} does not exist in kernel {profile.name} ({profile.release})")
        self.what = what
        self.profile = profile


def require_api(profile: Profile, present: bool, func: str) -> None:
    """Raise NotInKernel unless `present` (the profile's fact that function `func` exists)."""
    if not present:
        raise NotInKernel(f"{func}()", profile)


def require_gup_api(profile: Profile, func: str) -> None:
    """Raise NotInKernel unless the profile's kernel exports gup-family function `func`."""
    require_api(profile, func in profile.gup_apis, func)


def get_profile(name: str) -> Profile:
    """Look a profile up by name; unknown names raise KeyError naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise KeyError(f"unknown kernel profile {name!r} (known: {known})") from None
