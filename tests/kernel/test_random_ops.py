"""Random probe op lists on every profile: the model answers, or says what it does not model.

A case may end ok, unmet or in a guest-side error (the outcomes a real kernel gives), or
stop at a kernel assertion (a verdict), at a path the model does not cover
(``Unmodelled``) or at a function the profile's kernel does not have (``NotInKernel``).
Any other exception is a bug in pinlab, and fails the test with its traceback.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pinlab.interleave import Unmodelled, Violation
from pinlab.kernel.profiles import PROFILES, NotInKernel, get_profile
from pinlab.realkernel import ops as O
from pinlab.realkernel.model import run_case

PAGE = O.PAGE
KINDS: tuple[O.Kind, ...] = ("anon", "hugetlb", "memfd", "tmpfs", "ramfs", "ext4")
REGIONS = ("a", "b")


@st.composite
def _range(draw: st.DrawFn, size: int) -> tuple[int, int]:
    """A page-aligned (offset, length) inside a region of ``size`` bytes."""
    pages = size // PAGE
    first = draw(st.integers(0, pages - 1))
    return first * PAGE, draw(st.integers(1, pages - first)) * PAGE


@st.composite
def _op(draw: st.DrawFn, sizes: dict[str, int], depth: int) -> O.Op:
    """One op on the mapped regions (a Fork's child runs ops of its own)."""
    region = draw(st.sampled_from(sorted(sizes)))
    off, length = draw(_range(sizes[region]))
    other = draw(st.sampled_from(sorted(sizes)))
    choices: list[O.Op] = [
        O.Touch(region, off, length),
        O.Madvise(
            region, draw(st.sampled_from(("hugepage", "nohugepage", "dontneed"))), off, length
        ),
        O.Mprotect(region, off, length, draw(st.sampled_from(("none", "r", "rw")))),
        O.Drain(),
        O.PinsBegin(),
        O.PinsEnd("pins"),
        O.PinsSettle("settled"),
        O.PgpgEnd("pgpg"),
        O.UringRegister("reg", region, off, length),
        O.UringUnregister("unreg"),
        O.UringClose(),
        O.PagemapSave(region),
        O.PagemapCmp("cmp", region),
        O.Smaps("rss", region, "Rss"),
        O.Vmsplice(region, off, draw(st.integers(1, 3))),
        O.DioFile(4 * PAGE),
        O.OdirectRead("dior", region, off, min(length, 4 * PAGE)),
        O.OdirectWrite("diow", region, off, min(length, 4 * PAGE)),
        O.ProcessVmReadv("pvr", region, off, min(length, sizes[other]), other, 0),
    ]
    if depth == 0:
        child = draw(st.lists(_op(sizes, 1), max_size=3))
        choices.append(O.Fork(tuple(child)))
    return draw(st.sampled_from(choices))


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, tuple[O.Op, ...]]:
    """A profile and an op list: one or two mappings, then up to eight ops on them."""
    profile = draw(st.sampled_from(sorted(PROFILES)))
    maps: list[O.Op] = []
    sizes: dict[str, int] = {}
    for name in REGIONS[: draw(st.integers(1, 2))]:
        kind = draw(st.sampled_from(KINDS))
        size = O.HPAGE if kind == "hugetlb" else draw(st.sampled_from((PAGE, 4 * PAGE, O.HPAGE)))
        sharing = draw(st.sampled_from(("private", "shared")))
        maps.append(O.Map(name, kind, size, sharing))
        sizes[name] = size
    ops = draw(st.lists(_op(sizes, 0), max_size=8))
    return profile, (*maps, *ops)


@settings(max_examples=120, deadline=None)
@given(cases())
def test_random_op_lists_end_in_an_outcome_or_a_named_gap(
    case: tuple[str, tuple[O.Op, ...]],
) -> None:
    profile, ops = case
    try:
        outcome = run_case(ops, get_profile(profile))
    except (Unmodelled, NotInKernel, Violation) as reported:
        assert str(reported)  # says which function, path or assertion
        return
    assert outcome.status in ("ok", "unmet", "error"), outcome
