"""The 1 GiB huge page refcount overflow of bias-only pin accounting (2020 series v4 07/12)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gupstate import anon_vma, fault_anon, fault_hugetlb_1g, hugetlb_vma, new_mm, pin

from pinlab.kernel import errno
from pinlab.kernel.mm.page_ref import INT_MAX, page_ref_add, put_page
from pinlab.kernel.mm.pgtable import HPAGE_PUD_ORDER, PMD_SIZE, PUD_SIZE
from pinlab.kernel.mm.types import VM_NOHUGEPAGE
from pinlab.kernel.state import BootParams, boot

NR = 1 << HPAGE_PUD_ORDER

# v6.1 include/linux/mm.h:1267 and the 2020 series' patch 07/12: GUP_PIN_COUNTING_BIAS (1U << 10)
GUP_PIN_COUNTING_BIAS = 1 << 10


def _one_gig(profile: str):  # type: ignore[no-untyped-def]
    k = boot(profile, BootParams(normal_mb=8, hugepages_1g=1))
    mm = new_mm(k)
    vma = hugetlb_vma(k, mm, PUD_SIZE, PUD_SIZE)
    return k, mm, fault_hugetlb_1g(k, mm, vma, PUD_SIZE)


def test_bias_v4_wraps_in_predicted_round_then_refuses() -> None:
    """Patch 07/12 try_grab_page adds GUP_PIN_COUNTING_BIAS to the head per subpage and
    refuses (WARN_ON_ONCE) a head count <= 0; v5.7-era follow_hugetlb_page turns the
    refusal into -ENOMEM (the same hunk is in 3faa52c03f44, mm/hugetlb.c)."""
    k, mm, head = _one_gig("foll-pin-bias-v4")
    bias = GUP_PIN_COUNTING_BIAS
    start = int(k.mem.refcount[head])
    # grab number (1-based) whose addition carries the count past INT_MAX
    wrapping_grab = (INT_MAX - start) // bias + 1
    wrap_round = (wrapping_grab + NR - 1) // NR
    in_round = wrapping_grab - (wrap_round - 1) * NR
    for _ in range(wrap_round - 1):
        assert pin(k, mm, PUD_SIZE, NR)[0] == NR
        assert int(k.mem.refcount[head]) > 0
    ret, _ = pin(k, mm, PUD_SIZE, NR)
    assert int(k.mem.refcount[head]) < 0
    assert ret == in_round
    if in_round == NR:
        assert not k.warned
        ret, _ = pin(k, mm, PUD_SIZE, NR)
        assert ret == -errno.ENOMEM
    assert "mm/gup.c try_grab_page refcount <= 0" in k.warned


@pytest.mark.parametrize("profile", ["5.7", "6.1"])
def test_exact_counts_do_not_overflow(profile: str) -> None:
    """v5.7 hpage_pinned_refcount / v6.1 compound_pincount: +1 per subpage pin, no wrap."""
    k, mm, head = _one_gig(profile)
    start = int(k.mem.refcount[head])
    rounds = (INT_MAX - start) // (GUP_PIN_COUNTING_BIAS * NR) + 2
    for n in range(1, rounds + 1):
        assert pin(k, mm, PUD_SIZE, NR)[0] == NR
        assert int(k.mem.refcount[head]) == start + n * NR
    assert not k.warned


@pytest.mark.parametrize("profile", ["5.7", "6.1"])
def test_small_page_pin_wraps_then_next_grab_fails(profile: str) -> None:
    """v6.1 mm/gup.c try_grab_page: the bias is added unchecked (atomic_t wraps past INT_MAX);
    the next grab sees folio_ref_count <= 0, WARN_ON_ONCE, and follow_page_pte makes the
    slow path return -ENOMEM."""
    k = boot(profile)
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, 2 * PMD_SIZE)
    vma.vm_flags |= VM_NOHUGEPAGE
    page = fault_anon(k, mm, vma, PMD_SIZE)
    bias = k.profile.pin_bias
    # plain references (get_page, as from pipes) up to one bias short of INT_MAX
    page_ref_add(k.mem, page, INT_MAX - bias + 1 - int(k.mem.refcount[page]))
    assert pin(k, mm, PMD_SIZE, 1)[0] == 1
    assert int(k.mem.refcount[page]) == INT_MAX + 1 - 2**32
    assert not k.warned
    assert pin(k, mm, PMD_SIZE, 1)[0] == -errno.ENOMEM
    assert "mm/gup.c try_grab_page refcount <= 0" in k.warned


def test_put_below_zero_is_reported_not_freed_twice() -> None:
    """v6.1 include/linux/mm.h folio_put_refs on a count already 0: a use-after-free, reported
    once (Debian's kernel has no CONFIG_DEBUG_VM to VM_BUG_ON it)."""
    k = boot("6.1")
    mm = new_mm(k)
    vma = anon_vma(k, mm, PMD_SIZE, PMD_SIZE)
    vma.vm_flags |= VM_NOHUGEPAGE
    page = fault_anon(k, mm, vma, PMD_SIZE)
    for _ in range(int(k.mem.refcount[page])):
        put_page(k, page)
    assert int(k.mem.refcount[page]) == 0 and not k.warned
    put_page(k, page)
    assert "page_ref underflow" in k.warned
    assert int(k.mem.refcount[page]) == -1
