"""The probes: each one op list, evaluated by the guest and by the model alike."""

from __future__ import annotations

from dataclasses import dataclass

from pinlab.realkernel.ops import (
    HPAGE,
    PAGE,
    DioFile,
    Drain,
    Fork,
    Kind,
    Madvise,
    Map,
    Mprotect,
    OdirectRead,
    OdirectWrite,
    Op,
    PagemapCmp,
    PagemapSave,
    Param,
    PgpgEnd,
    PinsBegin,
    PinsEnd,
    PinsSettle,
    ProcessVmReadv,
    RequireThp,
    Sharing,
    Smaps,
    Touch,
    UringClose,
    UringRegister,
    UringUnregister,
    Vmsplice,
    encode_ops,
)

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class Search:
    """Smallest value of ``param`` in [lo, hi] where observation ``obs`` equals ``value``.

    The predicate is three-valued: ``obs`` = ``value`` is true, = ``other`` is false, anything
    else (or an error, or other observations that differ from those at the first point) makes
    the case an error. Bisection assumes it is monotone: false at lo and true at hi, otherwise
    the outcome is ``threshold=none``. The other observations are reported with the
    threshold. Each point is a fresh process.
    """

    param: str
    lo: int
    hi: int
    obs: str
    value: str
    other: str


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    question: str
    ops: tuple[Op, ...]
    search: Search | None = None


def _pin_accounting(name: str, question: str, setup: tuple[Op, ...], length: int) -> Probe:
    """Register [0, length) of region b as a fixed buffer, then unregister it."""
    return Probe(
        name,
        question,
        (
            *setup,
            PinsBegin(),
            UringRegister("register", "b", 0, length),
            PinsEnd("reg"),
            PinsBegin(),
            UringUnregister("unregister"),
            PinsEnd("unreg"),
        ),
    )


def _longterm(kind: Kind, sharing: Sharing) -> Probe:
    """Does a long-term R/W pin (io_uring fixed buffer) of this mapping type succeed?"""
    size = 64 * KiB
    return Probe(
        f"longterm-{kind}-{sharing}",
        f"io_uring fixed buffer over a {sharing} {kind} mapping: errno and pin accounting",
        (
            Map("b", kind, size, sharing),
            Touch("b", 0, size),
            PinsBegin(),
            UringRegister("register", "b", 0, size),
            PinsEnd("reg"),
        ),
    )


def _fork_after_pin(
    name: str,
    question: str,
    setup: tuple[Op, ...],
    pin_off: int,
    pin_len: int,
    child_then: tuple[Op, ...] = (),
) -> Probe:
    """Pin part of region b, fork; the child compares b's frames with the parent's."""
    return Probe(
        name,
        question,
        (
            *setup,
            UringRegister("register", "b", pin_off, pin_len),
            PagemapSave("b"),
            Fork((PagemapCmp("child", "b"), *child_then)),
            PagemapCmp("parent", "b"),
        ),
    )


def _fault_around(kind: Kind) -> Probe:
    """Does a read fault map the written file's cached neighbours (do_fault_around)?"""
    size = 64 * KiB
    return Probe(
        f"faultaround-{kind}-shared",
        f"process_vm_readv of the first page of a written, fsync()ed 64 KiB shared {kind} "
        "mapping: which of its pages are mapped afterwards?",
        (
            Map("b", kind, size, "shared"),
            Map("d", "anon", PAGE),
            PagemapSave("b"),
            ProcessVmReadv("read", "b", 0, PAGE, "d", 0),
            PagemapCmp("mapped", "b"),
        ),
    )


def _odirect(name: str, what: str, io: OdirectRead | OdirectWrite) -> Probe:
    """One O_DIRECT transfer of a touched 64 KiB anon buffer: pins, and did it reach the disk?"""
    return Probe(
        name,
        f"{what}: pins, and did it reach the disk?",
        (
            Map("b", "anon", 64 * KiB),
            Touch("b", 0, 64 * KiB),
            DioFile(64 * KiB),
            PinsBegin(),
            io,
            PinsEnd("dio"),
            PgpgEnd("bio"),
        ),
    )


_THP_SETUP: tuple[Op, ...] = (
    Map("b", "anon", HPAGE),
    Madvise("b", "hugepage", 0, HPAGE),
    Touch("b", 0, HPAGE),
    RequireThp("b", 0, HPAGE),
)

PROBES: tuple[Probe, ...] = (
    _pin_accounting(
        "pins-uring-small",
        "io_uring fixed buffer over 1 MiB of faulted small anon pages",
        (Map("b", "anon", MiB), Touch("b", 0, MiB)),
        MiB,
    ),
    _pin_accounting(
        "pins-uring-unfaulted",
        "io_uring fixed buffer over 1 MiB of never-touched anon memory",
        (Map("b", "anon", MiB),),
        MiB,
    ),
    _pin_accounting(
        "pins-uring-thp", "io_uring fixed buffer over one PMD-mapped THP", _THP_SETUP, HPAGE
    ),
    _pin_accounting(
        "pins-uring-hugetlb",
        "io_uring fixed buffer over one 2 MiB hugetlb page",
        (Map("b", "hugetlb", HPAGE), Touch("b", 0, HPAGE)),
        HPAGE,
    ),
    Probe(
        "pins-uring-close",
        "pins of a registered buffer after its ring's fd is closed (asynchronous teardown)",
        (
            Map("b", "anon", MiB),
            Touch("b", 0, MiB),
            PinsBegin(),
            UringRegister("register", "b", 0, MiB),
            UringClose(),
            PinsSettle("closed"),
        ),
    ),
    _pin_accounting(
        "partial-uring-hole",
        "fixed buffer of 64 pages whose last 16 are PROT_NONE",
        (
            Map("b", "anon", 64 * PAGE),
            Touch("b", 0, 64 * PAGE),
            Mprotect("b", 48 * PAGE, 16 * PAGE, "none"),
        ),
        64 * PAGE,
    ),
    _pin_accounting(
        "partial-uring-thp-overrun",
        "fixed buffer over a THP and one page past its end",
        _THP_SETUP,
        HPAGE + PAGE,
    ),
    _pin_accounting(
        "partial-uring-hugetlb-anon",
        "fixed buffer over a hugetlb page and adjacent anon memory",
        (
            Map("b", "hugetlb", HPAGE),
            Map("a", "anon", 64 * KiB, placement="adjacent"),
            Touch("b", 0, HPAGE),
            Touch("a", 0, 64 * KiB),
        ),
        HPAGE + 64 * KiB,
    ),
    _pin_accounting(
        "partial-uring-hugetlb-hole",
        "fixed buffer over a hugetlb page and one page past its end",
        (Map("b", "hugetlb", HPAGE), Touch("b", 0, HPAGE)),
        HPAGE + PAGE,
    ),
    _pin_accounting(
        "partial-uring-ext4-shared",
        "fixed buffer over a shared ext4 mapping",
        (Map("b", "ext4", 64 * KiB, "shared"), Touch("b", 0, 64 * KiB)),
        64 * KiB,
    ),
    *(
        _longterm(kind, sharing)
        for kind in ("anon", "memfd", "tmpfs", "ramfs", "ext4")
        for sharing in ("private", "shared")
    ),
    _longterm("hugetlb", "private"),
    _fork_after_pin(
        "fork-pinned-small",
        "fork after pinning pages 4-7 of 16 anon pages (12 touched)",
        (Map("b", "anon", 16 * PAGE), Touch("b", 0, 12 * PAGE)),
        4 * PAGE,
        4 * PAGE,
    ),
    _fork_after_pin(
        "fork-pinned-thp",
        "fork after pinning one page of a PMD-mapped THP",
        (*_THP_SETUP,),
        0,
        PAGE,
    ),
    Probe(
        "fork-pinned-thp-split",
        "is the parent's pinned THP still PMD-mapped after fork?",
        (
            *_THP_SETUP,
            UringRegister("register", "b", 0, PAGE),
            Fork(()),
            Smaps("parent_thp_kb", "b", "AnonHugePages"),
        ),
    ),
    _fork_after_pin(
        "fork-pinned-hugetlb",
        "fork after pinning the first of two hugetlb pages",
        (Map("b", "hugetlb", 2 * HPAGE), Touch("b", 0, 2 * HPAGE)),
        0,
        PAGE,
    ),
    _fork_after_pin(
        "fork-pinned-memfd-shared",
        "fork after pinning 4 pages of a shared memfd mapping; the child then touches them",
        (Map("b", "memfd", 16 * PAGE, "shared"), Touch("b", 0, 16 * PAGE)),
        0,
        4 * PAGE,
        (Touch("b", 0, 16 * PAGE), PagemapCmp("child_touched", "b")),
    ),
    Probe(
        "fork-thp-unpinned-refs",
        "fork of a THP holding 2048 vmsplice references to one subpage, in a pinning process",
        (
            Map("p", "anon", PAGE),
            Touch("p", 0, PAGE),
            UringRegister("register", "p", 0, PAGE),
            *_THP_SETUP,
            Drain(),
            Vmsplice("b", 5 * PAGE, 2048),
            PagemapSave("b"),
            Fork((PagemapCmp("child", "b"),)),
        ),
    ),
    Probe(
        "fork-unpinned-refs",
        "fork of a page holding N vmsplice references in a pinning process: copied?",
        (
            Map("p", "anon", PAGE),
            Touch("p", 0, PAGE),
            UringRegister("register", "p", 0, PAGE),
            Map("b", "anon", PAGE),
            Touch("b", 0, PAGE),
            Drain(),
            Vmsplice("b", 0, 2048),
            PagemapSave("b"),
            Fork((PagemapCmp("child", "b"),)),
        ),
    ),
    Probe(
        "fuzzy-threshold",
        "fewest vmsplice references to a page that make fork copy it as if pinned",
        (
            Map("p", "anon", PAGE),
            Touch("p", 0, PAGE),
            UringRegister("register", "p", 0, PAGE),
            Map("b", "anon", PAGE),
            Touch("b", 0, PAGE),
            Drain(),
            Vmsplice("b", 0, Param("N")),
            PagemapSave("b"),
            Fork((PagemapCmp("child", "b"),)),
        ),
        Search("N", 0, 4096, "child", "d1", "s1"),
    ),
    Probe(
        "fuzzy-threshold-no-pin",
        "the same references in a process that never pinned: fork copies?",
        (
            Map("b", "anon", PAGE),
            Touch("b", 0, PAGE),
            Drain(),
            Vmsplice("b", 0, 2048),
            PagemapSave("b"),
            Fork((PagemapCmp("child", "b"),)),
        ),
    ),
    _odirect(
        "odirect-read-pins",
        "O_DIRECT read of 64 KiB from ext4 into anon memory",
        OdirectRead("read", "b", 0, 64 * KiB),
    ),
    _odirect(
        "odirect-write-pins",
        "O_DIRECT write of 64 KiB from anon memory to ext4",
        OdirectWrite("write", "b", 0, 64 * KiB),
    ),
    *(_fault_around(kind) for kind in ("ext4", "tmpfs", "memfd", "ramfs")),
    Probe(
        "process-vm-readv-pins",
        "process_vm_readv of 64 KiB from offset 2048 (17 remote pages into 16 local): pins?",
        (
            Map("s", "anon", 17 * PAGE),
            Touch("s", 0, 17 * PAGE),
            Map("b", "anon", 64 * KiB),
            Touch("b", 0, 64 * KiB),
            PinsBegin(),
            ProcessVmReadv("read", "s", 2048, 64 * KiB, "b", 0),
            PinsEnd("pvm"),
        ),
    ),
)


def encode_cases(probes: tuple[Probe, ...]) -> str:
    """The guest's case file: one ``case NAME`` block per probe."""
    lines: list[str] = []
    for probe in probes:
        lines.append(f"case {probe.name}")
        if probe.search is not None:
            s = probe.search
            lines.append(f"search {s.param} {s.lo} {s.hi} {s.obs} {s.value} {s.other}")
        lines += encode_ops(probe.ops)
        lines.append("end")
    return "\n".join(lines) + "\n"


def by_name(name: str) -> Probe:
    """The probe called name."""
    for probe in PROBES:
        if probe.name == name:
            return probe
    raise KeyError(name)
