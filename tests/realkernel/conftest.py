"""Fixtures of the real-kernel tests: the fetched Debian kernel and its one shared boot."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pinlab.realkernel.check import Report, run_check
from pinlab.realkernel.fetch import KernelImage, cache_dir, cached
from pinlab.realkernel.model import ModelEvaluator


def unavailable(message: str) -> None:
    """Skip on a developer's machine; under CI the real kernel must run, so fail."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def debian_kernel() -> KernelImage:
    """The cached linux-image-6.1.0-56-amd64-unsigned (run `pinlab kernel fetch` first)."""
    image = cached(cache_dir())
    if image is None:
        unavailable("Debian kernel not fetched: run `pinlab kernel fetch`")
    assert image is not None
    return image


@dataclass(frozen=True, slots=True)
class KernelRun:
    """The session's one `kernel check` of 6.1.192: its report and raw console."""

    report: Report
    console: str


@pytest.fixture(scope="session")
def kernel_run(debian_kernel: KernelImage, tmp_path_factory: pytest.TempPathFactory) -> KernelRun:
    """Boot 6.1.192 once for the whole session (default accelerator: KVM if it works, else
    TCG) and compare every probe with the model; every realkernel test shares this boot."""
    if shutil.which("qemu-system-x86_64") is None:
        unavailable("no QEMU: install the Debian package qemu-system-x86")
    log = tmp_path_factory.mktemp("kernel") / "console.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PINLAB_QEMU_ACCEL", raising=False)
        report = run_check(debian_kernel, ModelEvaluator(), timeout_s=240, console_log=log)
    return KernelRun(report, Path(log).read_text())
