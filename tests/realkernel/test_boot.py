"""Boots Debian's 6.1.192 kernel under QEMU once (the session's `kernel_run`) and holds every
probe's kernel observation against the row the v6.1.192 source gives (test_model_probes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pinlab.cli.kernel import kernel_group
from pinlab.realkernel import qemu
from pinlab.realkernel.catalog import PROBES
from pinlab.realkernel.check import run_check
from pinlab.realkernel.fetch import KernelImage
from tests.realkernel.conftest import KernelRun
from tests.realkernel.test_model_probes import EXPECTED

pytestmark = pytest.mark.realkernel


def test_every_probe_ran_with_its_preconditions_met(kernel_run: KernelRun) -> None:
    report = kernel_run.report
    assert report.release == "6.1.0-56-amd64"
    bad = [(r.probe, r.kernel.describe()) for r in report.rows if r.kernel.status != "ok"]
    assert bad == []
    assert report.seconds < 180


@pytest.mark.parametrize("probe", sorted(EXPECTED))
def test_kernel_observation_agrees_with_the_source(kernel_run: KernelRun, probe: str) -> None:
    """Each row is a cited 6.1.192 fact (test_model_probes.EXPECTED), e.g. fuzzy-threshold
    = GUP_PIN_COUNTING_BIAS - 2 = 1022: the page's mapping reference and copy_present_pte's
    get_page come on top of the N pipe references."""
    row = next(r for r in kernel_run.report.rows if r.probe == probe)
    assert row.kernel.values == EXPECTED[probe]


def test_model_matches_the_kernel_on_every_probe(kernel_run: KernelRun) -> None:
    report = kernel_run.report
    assert [(r.probe, r.verdict) for r in report.rows if r.verdict != "match"] == []
    assert report.passed


def test_default_accelerator_gives_identical_observations(
    debian_kernel: KernelImage, kernel_run: KernelRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KVM run against a TCG run: only meaningful where KVM really ran."""
    if kernel_run.report.accel != "kvm":
        pytest.skip(
            f"KVM did not run here ({'; '.join(kernel_run.report.notes) or 'no KVM'})"
            ": a second TCG boot would compare TCG with TCG"
        )
    monkeypatch.setenv("PINLAB_QEMU_ACCEL", "tcg")
    again = run_check(debian_kernel, None, timeout_s=240)
    assert {r.probe: r.kernel for r in again.rows} == {
        r.probe: r.kernel for r in kernel_run.report.rows
    }


def test_cli_check_writes_json_from_the_kernels_console(
    kernel_run: KernelRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI end to end (guest build, model, table, JSON) over the session boot's console."""

    def replay(spec: qemu.BootSpec, on_output: object = None) -> qemu.BootResult:
        return qemu.BootResult(kernel_run.console, kernel_run.report.accel, 1.0, False, 0, None)

    monkeypatch.setattr(qemu, "boot", replay)
    out = tmp_path / "check.json"
    log = tmp_path / "console.log"
    result = CliRunner().invoke(
        kernel_group, ["check", "--json", str(out), "--console-log", str(log)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["probe"] for r in data["rows"]] == [p.name for p in PROBES]
    assert {r["verdict"] for r in data["rows"]} == {"match"}
    assert log.read_text() == kernel_run.console
