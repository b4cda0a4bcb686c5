"""The model evaluator on every probe: each expected observation is derived from a 6.1.192 fact.

The rows compute counts from the probe's geometry and the cited kernel rule (one pin per
4 KiB page, the pin bias, PIPE slots, ...); no row is a number read off a real run.
"""

from __future__ import annotations

import functools

import pytest

from pinlab.kernel.profiles import P6_1
from pinlab.realkernel import ops as O
from pinlab.realkernel.catalog import PROBES, KiB, MiB, by_name
from pinlab.realkernel.evaluator import Outcome
from pinlab.realkernel.model import ModelEvaluator, machine_params, run_case
from pinlab.realkernel.ops import HPAGE, PAGE

# v6.1 include/linux/mm.h GUP_PIN_COUNTING_BIAS
GUP_PIN_COUNTING_BIAS = 1 << 10


def pages(nbytes: int) -> int:
    """io_uring/rsrc.c io_pin_pages pins nr_pages 4 KiB pages; mm/gup.c counts one pin each
    (__get_user_pages resets page_mask per page when a pages array is passed; THP:
    mm/huge_memory.c follow_trans_huge_pmd per subpage; hugetlb: try_grab_folio(refs))."""
    return nbytes // PAGE


def runs(*parts: tuple[str, int]) -> str:
    """The guest's run-length page string."""
    return "".join(f"{c}{n}" for c, n in parts if n)


def kept(obs: str, n: int) -> dict[str, str]:
    """Pins taken and held: acquired n, released 0."""
    return {f"{obs}.acquired": str(n), f"{obs}.released": "0"}


def undone(obs: str, n: int) -> dict[str, str]:
    """Pins taken then dropped inside the call: acquired n, released n."""
    return {f"{obs}.acquired": str(n), f"{obs}.released": str(n)}


def pgpg(read: int, written: int) -> dict[str, str]:
    """/proc/vmstat pgpgin / pgpgout deltas of `read` / `written` bytes of block I/O:
    block/blk-core.c submit_bio counts 512-byte sectors, mm/vmstat.c vmstat_start halves them."""
    return {"bio.pgpgin": str(read // 512 // 2), "bio.pgpgout": str(written // 512 // 2)}


def register_cycle(n: int) -> dict[str, str]:
    """A successful register of n pages then IORING_UNREGISTER_BUFFERS (rsrc.c io_buffer_unmap:
    unpin_user_page once per bvec, one bvec per 4 KiB page)."""
    return {
        "register": "ok",
        **kept("reg", n),
        "unregister": "ok",
        "unreg.acquired": "0",
        "unreg.released": str(n),
    }


def refused(errno_name: str, n: int) -> dict[str, str]:
    """A register that pinned n pages and undid them (rsrc.c io_pin_pages unpin_user_pages on
    error); unregister then finds nothing: -ENXIO (rsrc.c io_sqe_buffers_unregister)."""
    return {
        "register": errno_name,
        **undone("reg", n),
        "unregister": "ENXIO",
        "unreg.acquired": "0",
        "unreg.released": "0",
    }


def bisection_steps(lo: int, hi: int) -> int:
    """Predicate evaluations of evaluator.search_threshold: both ends, then one per halving."""
    steps = 2
    while hi - lo > 1:
        lo = lo + (hi - lo) // 2
        steps += 1
    return steps


LONGTERM_OK = ("anon", "memfd", "tmpfs")  # vm_file NULL or vma_is_shmem (rsrc.c io_pin_pages)
LONGTERM_REFUSED = ("ramfs", "ext4")  # generic_file_vm_ops / ext4_file_vm_ops: -EOPNOTSUPP

EXPECTED: dict[str, dict[str, str]] = {
    "pins-uring-small": register_cycle(pages(MiB)),
    # FOLL_WRITE faults the untouched pages in (mm/gup.c faultin_page); still one pin each
    "pins-uring-unfaulted": register_cycle(pages(MiB)),
    "pins-uring-thp": register_cycle(pages(HPAGE)),
    "pins-uring-hugetlb": register_cycle(pages(HPAGE)),
    # io_uring.c io_uring_release queues io_ring_exit_work -> io_ring_ctx_free ->
    # __io_sqe_buffers_unregister: eventually every pin is released
    "pins-uring-close": {"register": "ok", **undone("closed", pages(MiB))},
    # mm/gup.c check_vma_flags: no VM_WRITE -> -EFAULT after the 48-page prefix;
    # rsrc.c io_pin_pages turns the short count into -EFAULT and unpins the prefix
    "partial-uring-hole": refused("EFAULT", 64 - 16),
    # the page past the THP is the PROT_NONE arena (same check_vma_flags refusal)
    "partial-uring-thp-overrun": refused("EFAULT", pages(HPAGE)),
    # rsrc.c io_pin_pages: page 0's vm_file is the hugetlbfs file, the anon pages' NULL
    "partial-uring-hugetlb-anon": refused("EINVAL", pages(HPAGE + 64 * KiB)),
    # hugetlb followed by the PROT_NONE arena: mm/gup.c check_vma_flags refuses the page past
    # the huge page after follow_hugetlb_page pinned all 512 subpages
    "partial-uring-hugetlb-hole": refused("EFAULT", pages(HPAGE)),
    "partial-uring-ext4-shared": refused("EOPNOTSUPP", pages(64 * KiB)),
    **{
        f"longterm-{kind}-{sharing}": {"register": "ok", **kept("reg", pages(64 * KiB))}
        for kind in LONGTERM_OK
        for sharing in ("private", "shared")
    },
    **{
        f"longterm-{kind}-{sharing}": {"register": "EOPNOTSUPP", **undone("reg", pages(64 * KiB))}
        for kind in LONGTERM_REFUSED
        for sharing in ("private", "shared")
    },
    "longterm-hugetlb-private": {"register": "ok", **kept("reg", pages(64 * KiB))},
    # mm/memory.c copy_present_pte -> page_try_dup_anon_rmap: pinned exclusive anon pages
    # (4-7) are copied, touched unpinned ones shared, untouched ones absent in both
    "fork-pinned-small": {
        "register": "ok",
        "child": runs(("s", 4), ("d", 4), ("s", 4), ("n", 4)),
        "parent": runs(("s", 12), ("n", 4)),
    },
    # mm/huge_memory.c copy_huge_pmd: a maybe-pinned THP is split and every subpage copied
    # (folio_maybe_dma_pinned of a large folio reads the compound pincount)
    "fork-pinned-thp": {
        "register": "ok",
        "child": runs(("d", pages(HPAGE))),
        "parent": runs(("s", pages(HPAGE))),
    },
    # the split leaves the parent's THP PTE-mapped: smaps_pmd_entry counts no AnonHugePages
    "fork-pinned-thp-split": {"register": "ok", "parent_thp_kb": "0"},
    # mm/hugetlb.c copy_hugetlb_page_range: the pinned private huge page is copied, the other shared
    "fork-pinned-hugetlb": {
        "register": "ok",
        "child": runs(("d", pages(HPAGE)), ("s", pages(HPAGE))),
        "parent": runs(("s", pages(2 * HPAGE))),
    },
    # mm/memory.c vma_needs_copy: a shared VMA without anon_vma is not copied at fork; the
    # child's faults then find the parent's page-cache folios (mm/shmem.c shmem_get_folio_gfp)
    "fork-pinned-memfd-shared": {
        "register": "ok",
        "child": runs(("n", 16)),
        "child_touched": runs(("s", 16)),
        "parent": runs(("s", 16)),
    },
    # include/linux/mm.h folio_maybe_dma_pinned: a large folio reads the exact compound
    # pincount, so plain references never count; mm/huge_memory.c copy_huge_pmd shares the PMD
    "fork-thp-unpinned-refs": {"register": "ok", "child": runs(("s", pages(HPAGE)))},
    # 2048 plain references >= the threshold below: fork copies the page
    "fork-unpinned-refs": {"register": "ok", "child": "d1"},
    # include/linux/mm.h folio_maybe_dma_pinned: refcount >= bias; at the check the page holds
    # its PTE's reference and copy_present_pte's get_page besides the N pipe references
    "fuzzy-threshold": {
        "register": "ok",
        "threshold": str(GUP_PIN_COUNTING_BIAS - 1 - 1),
        "steps": str(bisection_steps(0, 4096)),
    },
    # without MMF_HAS_PINNED page_needs_cow_for_dma is false whatever the refcount
    "fuzzy-threshold-no-pin": {"child": "s1"},
    # block/bio.c __bio_iov_iter_get_pages -> iov_iter_get_pages2 -> get_user_pages_fast: FOLL_GET,
    # no pins; block/blk-core.c submit_bio counts the bio's sectors as PGPGIN
    "odirect-read-pins": {"read": str(64 * KiB), **undone("dio", 0), **pgpg(64 * KiB, 0)},
    # the same path without FOLL_WRITE; the write bio's sectors count as PGPGOUT
    "odirect-write-pins": {"write": str(64 * KiB), **undone("dio", 0), **pgpg(0, 64 * KiB)},
    # the read pin faults page 0 (mm/gup.c faultin_page, no FOLL_WRITE) -> mm/memory.c
    # do_read_fault -> do_fault_around: fault_around_bytes = 65536 is 16 pages, the window
    # is the whole 2 MiB-aligned 64 KiB region; mm/filemap.c filemap_map_pages maps every
    # cached page that is uptodate and unlocked, and the write()+fsync() of the Map left all
    # 16 cached so (written back clean on ext4, dirty but uptodate on tmpfs/memfd/ramfs)
    **{
        f"faultaround-{kind}-shared": {"read": str(PAGE), "mapped": runs(("f", 65536 // PAGE))}
        for kind in ("ext4", "tmpfs", "memfd", "ramfs")
    },
    # mm/process_vm_access.c process_vm_rw_single_vec: pin_user_pages_remote on the remote
    # range (offset 2048: 17 pages), then unpin; the local side is copied to, never pinned
    "process-vm-readv-pins": {"read": str(64 * KiB), **undone("pvm", 17)},
}


@functools.cache
def model_predictions() -> dict[str, Outcome]:
    """Every probe through the unpatched model under profile 6.1 (shared with test_model_check)."""
    evaluator = ModelEvaluator()
    return {p.name: evaluator.evaluate(p, "6.1") for p in PROBES}


@pytest.fixture(scope="module")
def predictions() -> dict[str, Outcome]:
    return model_predictions()


def test_every_probe_has_a_fact_row() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in PROBES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_prediction_follows_the_kernel_facts(
    predictions: dict[str, Outcome], name: str
) -> None:
    assert predictions[name] == Outcome("ok", EXPECTED[name])


def test_machine_is_the_guest() -> None:
    """The model boots the guest's shape: qemu.py's 1 GiB, hugepages=16, THP madvise."""
    params, thp = machine_params()
    assert params.hugepages_2m == 16
    assert params.normal_mb + params.hugepages_2m * HPAGE // MiB == 1024
    assert thp == "madvise"


def test_thp_probe_without_madvise_is_unmet() -> None:
    """transparent_hugepage=madvise: no MADV_HUGEPAGE, no THP, so RequireThp reports unmet."""
    probe = by_name("pins-uring-thp")
    ops = tuple(op for op in probe.ops if not isinstance(op, O.Madvise))
    out = run_case(ops, P6_1)
    assert out.status == "unmet" and out.detail == "no-transparent-huge-page"


def test_hugetlb_pool_exhaustion_is_unmet() -> None:
    """hugepages=16: a 17th 2 MiB page cannot be reserved (mm/hugetlb.c hugetlb_reserve_pages)."""
    out = run_case((O.Map("b", "hugetlb", 17 * HPAGE),), P6_1)
    assert out.status == "unmet" and out.detail == "no-free-hugetlb-pages"


def test_unknown_profile_is_an_error_row() -> None:
    out = ModelEvaluator().evaluate(by_name("pins-uring-small"), "2.6")
    assert out.status == "error" and "no model profile" in out.detail
