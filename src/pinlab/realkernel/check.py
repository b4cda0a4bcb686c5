"""`kernel check`: boot once, run every probe, hold the model's predictions against the kernel."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pinlab.realkernel import qemu, toolchain
from pinlab.realkernel.catalog import PROBES, Probe
from pinlab.realkernel.console import Frames, fields_of, parse_frames
from pinlab.realkernel.evaluator import Evaluator, Outcome, Verdict, outcome_from_fields, verdict
from pinlab.realkernel.fetch import KernelImage
from pinlab.realkernel.guest import build_guest
from pinlab.realkernel.model import ModelEvaluator
from pinlab.realkernel.ops import GUEST


@dataclass(frozen=True, slots=True)
class Row:
    probe: str
    question: str
    kernel: Outcome
    predicted: Outcome | None
    verdict: Verdict


@dataclass(slots=True)
class Report:
    rows: list[Row]
    release: str
    accel: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    model: bool = True

    @property
    def passed(self) -> bool:
        """Every row matches; without a model (--no-model) every probe ran with its
        preconditions met and no prediction was asked for."""
        if self.model:
            return all(r.verdict == "match" for r in self.rows)
        return all(r.verdict == "no model evaluator" for r in self.rows)


def profile_for(release: str) -> str:
    """The model profile of a kernel release string: "6.1.0-56-amd64" → "6.1"."""
    parts = release.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else release


def guest_problems(hello: dict[str, str]) -> list[str]:
    """How the guest's hello frame differs from the configuration every probe assumes."""
    problems = []
    if f"[{GUEST.thp}]" not in hello.get("thp", "").split(","):
        problems.append(f"thp={hello.get('thp')} (want [{GUEST.thp}])")
    if hello.get("nr_hugepages") != str(GUEST.hugepages):
        problems.append(f"nr_hugepages={hello.get('nr_hugepages')} (want {GUEST.hugepages})")
    if hello.get("cpus") != str(GUEST.cpus):
        problems.append(f"cpus={hello.get('cpus')} (want {GUEST.cpus})")
    if hello.get("page_sizes") != "ok":
        problems.append(f"page_sizes={hello.get('page_sizes')} (PAGE/HPAGE differ)")
    return problems


def kernel_outcomes(
    frames: Frames, probes: tuple[Probe, ...], boot_failure: str = ""
) -> tuple[dict[str, Outcome], str]:
    """Each probe's outcome from the recovered frames (missing frames → error), and the release.

    A guest that does not have the configuration the probes assume makes every probe an error.
    """
    by_case: dict[str, Outcome] = {}
    release = "unknown"
    lost = f"no intact frame (corrupt {frames.corrupt}, truncated {frames.truncated})"
    hello: dict[str, str] | None = None
    for payload in frames.payloads.values():
        f = fields_of(payload)
        if "hello" in f:
            hello = f
            release = f.get("release", release)
        elif "fatal" in f:
            lost = f"guest init failed: {payload}"
        elif "case" in f:
            by_case[f["case"]] = outcome_from_fields(f)
    if hello is None and boot_failure:
        lost += f"; {boot_failure}"
    problems = guest_problems(hello) if hello is not None else []
    if problems:
        bad = Outcome("error", {}, "guest configuration: " + "; ".join(problems))
        return {p.name: bad for p in probes}, release
    return {p.name: by_case.get(p.name, Outcome("error", {}, lost)) for p in probes}, release


def write_atomic(path: Path, text: str) -> None:
    """Write text to path via a temporary file in the same directory and os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def alias_cache(image: KernelImage) -> Path | None:
    """Where the module alias table of a fetched kernel is kept (keyed by its .deb's sha256)."""
    if image.sha256 is None or image.modules is None:
        return None
    return image.modules.parent / f".pinlab-aliases-{image.sha256[:16]}.json"


def default_evaluator() -> Evaluator:
    """The predictions `kernel check` makes unless told not to: pinlab's kernel model."""
    return ModelEvaluator()


def rows_for(
    probes: tuple[Probe, ...], kernel: dict[str, Outcome], evaluator: Evaluator | None, profile: str
) -> list[Row]:
    """One row per probe: the kernel's outcome, the evaluator's prediction, the verdict."""
    rows = []
    for p in probes:
        predicted = evaluator.evaluate(p, profile) if evaluator is not None else None
        rows.append(
            Row(p.name, p.question, kernel[p.name], predicted, verdict(kernel[p.name], predicted))
        )
    return rows


def run_check(
    image: KernelImage,
    evaluator: Evaluator | None,
    timeout_s: float,
    probes: tuple[Probe, ...] = PROBES,
    console_log: Path | None = None,
    on_output: Callable[[str], None] | None = None,
) -> Report:
    """Build the guest, boot it once, parse its frames, compare with the evaluator."""
    qemu_bin = toolchain.qemu()
    busybox = toolchain.busybox_static()
    mkfs = toolchain.mkfs_ext4()
    with tempfile.TemporaryDirectory(prefix="pinlab-guest-") as tmp:
        work = Path(tmp)
        toolchain.compile_probe(work / "pinprobe")
        files = build_guest(
            work, probes, image.modules, busybox, work / "pinprobe", mkfs, alias_cache(image)
        )
        spec = qemu.BootSpec(qemu_bin, image.vmlinuz, files.initrd, files.disk, timeout_s)
        result = qemu.boot(spec, on_output)
    if console_log is not None:
        write_atomic(console_log, result.console)
    frames = parse_frames(result.console)
    failure = result.failure()
    kernel, release = kernel_outcomes(frames, probes, failure)
    notes = []
    if result.fallback:
        notes.append(result.fallback)
    if not any("hello" in fields_of(p) for p in frames.payloads.values()):
        notes.append(f"no hello frame: {failure}")
    if result.timed_out:
        notes.append(f"guest timed out after {timeout_s:.0f} s")
    if frames.corrupt or frames.truncated:
        notes.append(f"console frames: {frames.corrupt} corrupt, {frames.truncated} truncated")
    rows = rows_for(probes, kernel, evaluator, profile_for(release))
    return Report(rows, release, result.accel, result.seconds, notes, evaluator is not None)


def report_json(report: Report) -> dict[str, object]:
    """The table as JSON-ready data."""

    def outcome(o: Outcome | None) -> dict[str, object] | None:
        return None if o is None else {"status": o.status, "values": o.values, "detail": o.detail}

    return {
        "release": report.release,
        "accel": report.accel,
        "seconds": round(report.seconds, 1),
        "notes": report.notes,
        "passed": report.passed,
        "rows": [
            {
                "probe": r.probe,
                "question": r.question,
                "kernel": outcome(r.kernel),
                "predicted": outcome(r.predicted),
                "verdict": r.verdict,
            }
            for r in report.rows
        ],
    }
