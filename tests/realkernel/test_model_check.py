"""One probe definition drives both sides: change one kernel fact in the model, and exactly the
probe that observes it stops matching.

Each patch replaces a 6.1.192 behaviour with the one another kernel had; the baseline is the
real 6.1.192 guest (one QEMU boot, marked realkernel) or, without QEMU, the unpatched model.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Sequence

import pytest

from pinlab.interleave import Yield
from pinlab.kernel.errno import EOPNOTSUPP
from pinlab.kernel.io_uring import rsrc
from pinlab.kernel.mm import mmap as mmap_mod
from pinlab.kernel.mm import process_vm_access
from pinlab.kernel.mm.gup import get_user_pages_remote
from pinlab.kernel.mm.gup_unpin import put_page_api
from pinlab.kernel.mm.types import VmArea
from pinlab.kernel.state import Kernel
from pinlab.realkernel.catalog import PROBES
from pinlab.realkernel.check import Row, rows_for
from pinlab.realkernel.model import ModelEvaluator
from tests.realkernel.conftest import KernelRun
from tests.realkernel.test_model_probes import model_predictions


def io_check_vmas_v6_1_0(k: Kernel, vmas: list[VmArea]) -> int:
    """v6.1.0 io_uring/rsrc.c io_pin_pages, before the 6.1.16 backport of "io_uring/rsrc:
    disallow multi-source reg buffers": only a non-shmem, non-hugetlbfs file is refused."""
    for vma in vmas:
        if rsrc._vma_is_shmem(k, vma):
            continue
        if vma.vm_file is not None and not rsrc._is_file_hugepages(k, vma.vm_file):
            return -EOPNOTSUPP
    return 0


def put_pages_dirty(
    k: Kernel, pages: Sequence[int], npages: int, make_dirty: bool
) -> Generator[Yield, None, None]:
    """process_vm_rw's release before John Hubbard's "mm/process_vm_access: set FOLL_PIN via
    pin_user_pages_remote()": put_page per page (dirtying does not touch the counters)."""
    for page in list(pages)[:npages]:
        yield from put_page_api(k, page)


def lru_add_drain_noop(k: Kernel, cpu: int = 0) -> Generator[Yield, None, None]:
    """A drain that leaves the per-CPU LRU-add batch (and its page references) in place."""
    yield from ()


Patch = Callable[[pytest.MonkeyPatch], None]


def multi_source_allowed(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(rsrc, "io_check_vmas", io_check_vmas_v6_1_0)


def process_vm_plain_refs(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(process_vm_access, "pin_user_pages_remote", get_user_pages_remote)
    mp.setattr(process_vm_access, "unpin_user_pages_dirty_lock", put_pages_dirty)


def drain_keeps_batch(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(mmap_mod, "lru_add_drain", lru_add_drain_noop)


PATCHES: list[tuple[str, Patch, str]] = [
    # partial-uring-hugetlb-anon registers hugetlb + anon pages: EINVAL only with the backport
    ("io_uring-multi-source", multi_source_allowed, "partial-uring-hugetlb-anon"),
    # process-vm-readv-pins is the only probe reading pin counters around process_vm_readv
    ("process_vm-foll-get", process_vm_plain_refs, "process-vm-readv-pins"),
    # the batch's extra reference lowers the fuzzy threshold by one (mm/swap.c folio_add_lru)
    ("lru-batch-reference", drain_keeps_batch, "fuzzy-threshold"),
]


def mismatched(rows: list[Row]) -> list[str]:
    return [r.probe for r in rows if r.verdict != "match"]


@pytest.mark.parametrize(
    ("patch", "probe"), [(p, n) for _, p, n in PATCHES], ids=[i for i, _, _ in PATCHES]
)
def test_patched_fact_flips_exactly_its_probe_against_the_model(patch: Patch, probe: str) -> None:
    """Without QEMU: the unpatched model's outcomes stand in for the kernel's."""
    baseline = model_predictions()
    assert {o.status for o in baseline.values()} == {"ok"}
    with pytest.MonkeyPatch.context() as mp:
        patch(mp)
        rows = rows_for(PROBES, baseline, ModelEvaluator(), "6.1")
    assert mismatched(rows) == [probe]


@pytest.mark.realkernel
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU")
@pytest.mark.parametrize(
    ("patch", "probe"), [(p, n) for _, p, n in PATCHES], ids=[i for i, _, _ in PATCHES]
)
def test_patched_fact_flips_exactly_its_probe_against_the_kernel(
    kernel_run: KernelRun, patch: Patch, probe: str
) -> None:
    """The session's 6.1.192 outcomes against a patched model: exactly one probe mismatches
    (and, per test_boot, none does against the real model)."""
    kernel = {r.probe: r.kernel for r in kernel_run.report.rows}
    with pytest.MonkeyPatch.context() as mp:
        patch(mp)
        assert mismatched(rows_for(PROBES, kernel, ModelEvaluator(), "6.1")) == [probe]
