"""Host tools the real-kernel check needs, each mapped to the Debian package providing it."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from importlib import resources
from pathlib import Path


class MissingTool(Exception):
    """A host tool is missing; the message names the Debian package to install."""


_PT_INTERP = 3


def is_static_elf(path: Path) -> bool:
    """True if path is a 64-bit ELF executable without a program interpreter."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        (phoff,) = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != _PT_INTERP for i in range(phnum)
    )


def need(program: str, package: str) -> Path:
    """The program's path, or MissingTool naming package."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if found is None:
        raise MissingTool(f"{program} not found: install the Debian package {package}")
    return Path(found)


def qemu() -> Path:
    return need("qemu-system-x86_64", "qemu-system-x86")


def mkfs_ext4() -> Path:
    return need("mkfs.ext4", "e2fsprogs")


def busybox_static() -> Path:
    """A statically linked busybox (the guest has no libc)."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.exists() and is_static_elf(candidate):
            return candidate
    found = shutil.which("busybox")
    if found and is_static_elf(Path(found)):
        return Path(found)
    raise MissingTool("no statically linked busybox: install the Debian package busybox-static")


# the guest interpreter's sources (package data): parser, ops, kernel-state readers, runner
PROBE_SOURCES = ("pinprobe.h", "parse.c", "ops.c", "kstate.c", "runner.c")


def probe_sources() -> dict[str, str]:
    """The guest interpreter's C sources by file name."""
    root = resources.files("pinlab.realkernel") / "probes"
    return {name: (root / name).read_text() for name in PROBE_SOURCES}


def compile_probe(out: Path) -> None:
    """Build the static guest interpreter with gcc (its sources next to out, in probes/)."""
    gcc = need("gcc", "gcc")
    src = out.parent / "probes"
    src.mkdir(exist_ok=True)
    for name, text in probe_sources().items():
        (src / name).write_text(text)
    units = [str(src / name) for name in PROBE_SOURCES if name.endswith(".c")]
    result = subprocess.run(
        [str(gcc), "-static", "-O2", "-o", str(out), *units],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return
    err = result.stderr
    if "linux/io_uring.h" in err:
        raise MissingTool("linux/io_uring.h not found: install the Debian package linux-libc-dev")
    if "cannot find -lc" in err or "stdio.h" in err:
        raise MissingTool("static libc not found: install the Debian package libc6-dev")
    first = next((line for line in err.splitlines() if "error" in line), err.strip()[:200])
    raise RuntimeError(f"gcc failed building the probe interpreter: {first}")


def kvm_usable() -> bool:
    """True if /dev/kvm opens read/write and answers KVM_GET_API_VERSION with 12."""
    import fcntl

    kvm_get_api_version = 0xAE00
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, kvm_get_api_version) == 12
    except OSError:
        return False
    finally:
        os.close(fd)
