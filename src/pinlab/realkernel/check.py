"""`kernel check`: boot once, run every probe, hold the model's predictions against the kernel."""

from __future__ import annotations

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

    @property
    def passed(self) -> bool:
        """No mismatch, unmet precondition or error (rows without a model count as passed)."""
        return all(r.verdict in ("match", "no model evaluator") for r in self.rows)


def profile_for(release: str) -> str:
    """The model profile of a kernel release string: "6.1.0-56-amd64" → "6.1"."""
    parts = release.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else release


def kernel_outcomes(frames: Frames, probes: tuple[Probe, ...]) -> tuple[dict[str, Outcome], str]:
    """Each probe's outcome from the recovered frames (missing frames → error), and the release."""
    by_case: dict[str, Outcome] = {}
    release = "unknown"
    lost = f"no intact frame (corrupt {frames.corrupt}, truncated {frames.truncated})"
    for payload in frames.payloads.values():
        f = fields_of(payload)
        if "hello" in f:
            release = f.get("release", release)
        elif "fatal" in f:
            lost = f"guest init failed: {payload}"
        elif "case" in f:
            by_case[f["case"]] = outcome_from_fields(f)
    return {p.name: by_case.get(p.name, Outcome("error", {}, lost)) for p in probes}, release


def rows_for(probes: tuple[Probe, ...], kernel: dict[str, Outcome],
             evaluator: Evaluator | None, profile: str) -> list[Row]:
    """One row per probe: the kernel's outcome, the evaluator's prediction, the verdict."""
    rows = []
    for p in probes:
        predicted = evaluator.evaluate(p, profile) if evaluator is not None else None
        rows.append(Row(p.name, p.question, kernel[p.name], predicted,
                        verdict(kernel[p.name], predicted)))
    return rows


def run_check(image: KernelImage, evaluator: Evaluator | None, timeout_s: float,
              probes: tuple[Probe, ...] = PROBES, console_log: Path | None = None,
              on_output: Callable[[str], None] | None = None) -> Report:
    """Build the guest, boot it once, parse its frames, compare with the evaluator."""
    qemu_bin = toolchain.qemu()
    busybox = toolchain.busybox_static()
    mkfs = toolchain.mkfs_ext4()
    with tempfile.TemporaryDirectory(prefix="pinlab-guest-") as tmp:
        work = Path(tmp)
        toolchain.compile_probe(work / "pinprobe")
        files = build_guest(work, probes, image.modules, busybox, work / "pinprobe", mkfs)
        spec = qemu.BootSpec(qemu_bin, image.vmlinuz, files.initrd, files.disk, timeout_s)
        result = qemu.boot(spec, on_output)
    if console_log is not None:
        console_log.write_text(result.console)
    frames = parse_frames(result.console)
    kernel, release = kernel_outcomes(frames, probes)
    notes = []
    if result.fallback:
        notes.append(result.fallback)
    if result.timed_out:
        notes.append(f"guest timed out after {timeout_s:.0f} s")
    if frames.corrupt or frames.truncated:
        notes.append(f"console frames: {frames.corrupt} corrupt, {frames.truncated} truncated")
    rows = rows_for(probes, kernel, evaluator, profile_for(release))
    return Report(rows, release, result.accel, result.seconds, notes)


def report_json(report: Report) -> dict[str, object]:
    """The table as JSON-ready data."""
    def outcome(o: Outcome | None) -> dict[str, object] | None:
        return None if o is None else {"status": o.status, "values": o.values, "detail": o.detail}

    return {
        "release": report.release, "accel": report.accel, "seconds": round(report.seconds, 1),
        "notes": report.notes, "passed": report.passed,
        "rows": [{"probe": r.probe, "question": r.question, "kernel": outcome(r.kernel),
                  "predicted": outcome(r.predicted), "verdict": r.verdict} for r in report.rows],
    }
