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
    # FOLL_SPLIT there) or "4.4" (v4.4.178 :2108-2123).
    foll_flags: str = "6.1"
    # Whether a new anon page or THP (fault, COW copy) starts on the active LRU: v5.7.14
    # mm/swap.c:460 / v4.4.178 mm/swap.c:711 lru_cache_add_active_or_unevictable sets
    # PG_active; v6.1 mm/swap.c:539 folio_add_lru_vma adds it inactive.
    new_anon_lru_active: bool = False

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
)

P6_5 = replace(
    P6_1,
    name="6.5",
    release="6.5 (mainline)",
    # v6.5 mm/gup.c check_vma_flags -> writable_file_mapping_allowed (Lorenzo Stoakes)
    longterm_file_write_refused=True,
    dump_page_style="6.5",
    # v6.2 removed PG_double_map: subpage _mapcount counts PTE maps only (v6.5 mm/rmap.c)
    double_map_flag=None,
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
