"""Boot a kernel under QEMU (KVM when it works, else TCG) and collect its serial console."""

from __future__ import annotations

import os
import selectors
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from pinlab.realkernel.console import START
from pinlab.realkernel.ops import GUEST
from pinlab.realkernel.toolchain import kvm_usable

# transparent_hugepage=madvise: only MADV_HUGEPAGE regions get THPs, so small-page probes never
# see one by chance (the Debian default is "always"); hugepages=16 reserves 32 MiB of 2 MiB
# hugetlb pages at boot, before memory fragments. loglevel=4 keeps warnings on the console.
CMDLINE = (
    f"console=ttyS0 loglevel=4 panic=-1 transparent_hugepage={GUEST.thp}"
    f" hugepages={GUEST.hugepages}"
)
MEMORY_MIB = GUEST.memory_mib  # below 512 MiB the kernel switches THP off (v6.1 mm/huge_memory.c)
ACCEL_ENV = "PINLAB_QEMU_ACCEL"
# A TCG boot reaches the first frame in about 10 s here; KVM far sooner. Nested KVM that
# hangs in early boot is detected by this and the boot is redone with TCG.
KVM_FIRST_FRAME_S = 15.0


@dataclass(frozen=True, slots=True)
class BootSpec:
    qemu: Path
    vmlinuz: Path
    initrd: Path
    disk: Path | None
    timeout_s: float


@dataclass(frozen=True, slots=True)
class BootResult:
    console: str
    accel: str
    seconds: float
    timed_out: bool
    exit_code: int | None
    fallback: str | None
    stderr: str = ""

    def failure(self) -> str:
        """QEMU's exit status and the last line of its stderr: why a boot showed nothing."""
        how = "timed out" if self.timed_out else f"exited with status {self.exit_code}"
        last = next((ln.strip() for ln in reversed(self.stderr.splitlines()) if ln.strip()), "")
        return f"qemu {how}" + (f": {last}" if last else "")


def requested_accel() -> str | None:
    """The accelerator forced by $PINLAB_QEMU_ACCEL ("kvm" or "tcg"), if any."""
    value = os.environ.get(ACCEL_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in ("kvm", "tcg"):
        raise ValueError(f"{ACCEL_ENV} must be kvm, tcg or auto, not {value!r}")
    return value


def qemu_argv(spec: BootSpec, accel: str) -> list[str]:
    """The QEMU command line: one CPU, 1 GiB, serial console on stdio, no reboot."""
    argv = [
        str(spec.qemu),
        "-accel",
        accel,
        "-cpu",
        "host" if accel == "kvm" else "max",
        "-smp",
        str(GUEST.cpus),
        "-m",
        str(MEMORY_MIB),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-kernel",
        str(spec.vmlinuz),
        "-initrd",
        str(spec.initrd),
        "-append",
        CMDLINE,
    ]
    if spec.disk is not None:
        argv += ["-drive", f"file={spec.disk},format=raw,if=virtio,cache=unsafe"]
    return argv


def _run(
    spec: BootSpec, accel: str, first_frame_s: float | None, on_output: Callable[[str], None] | None
) -> BootResult:
    """One boot; stops at exit, at the timeout, or when no frame came within first_frame_s."""
    with tempfile.TemporaryFile() as errors:
        result = _watch(spec, accel, first_frame_s, on_output, errors)
        errors.seek(0)
        stderr = errors.read()[-4096:].decode(errors="replace")
    return replace(result, stderr=stderr)


def _watch(
    spec: BootSpec,
    accel: str,
    first_frame_s: float | None,
    on_output: Callable[[str], None] | None,
    errors: IO[bytes],
) -> BootResult:
    """Run QEMU with stderr into errors and collect its console."""
    started = time.monotonic()
    proc = subprocess.Popen(
        qemu_argv(spec, accel), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
    )
    assert proc.stdout is not None
    chunks: list[bytes] = []
    seen_frame = False
    timed_out = False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            elapsed = time.monotonic() - started
            limit = spec.timeout_s
            if first_frame_s is not None and not seen_frame:
                limit = min(limit, first_frame_s)
            if elapsed >= limit:
                timed_out = True
                break
            if not sel.select(timeout=min(1.0, limit - elapsed)):
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append(data)
            text = b"".join(chunks).decode(errors="replace")
            seen_frame = seen_frame or START in text
            if on_output is not None:
                on_output(text)
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    return BootResult(
        b"".join(chunks).decode(errors="replace"),
        accel,
        time.monotonic() - started,
        timed_out,
        None if timed_out else proc.returncode,
        None,
    )


def boot(spec: BootSpec, on_output: Callable[[str], None] | None = None) -> BootResult:
    """Boot once: KVM if usable (falling back to TCG if it shows no frame), else TCG."""
    forced = requested_accel()
    accel = forced or ("kvm" if kvm_usable() else "tcg")
    if accel == "tcg" or forced == "kvm":
        return _run(spec, accel, None, on_output)
    first = _run(spec, "kvm", KVM_FIRST_FRAME_S, on_output)
    if START in first.console:
        return first
    again = _run(spec, "tcg", None, on_output)
    how = "hung" if first.timed_out else f"exited with status {first.exit_code}"
    reason = f"KVM boot {how} before the first frame; rebooted with TCG"
    return BootResult(
        again.console,
        again.accel,
        again.seconds + first.seconds,
        again.timed_out,
        again.exit_code,
        reason,
        again.stderr,
    )
