"""The guest's init script, its initramfs contents and the QEMU command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pinlab.realkernel import qemu
from pinlab.realkernel.catalog import PROBES, by_name, encode_cases
from pinlab.realkernel.guest import init_script, initramfs, make_disk, needs_ext4
from pinlab.realkernel.modules import ModuleTree, load_order

from .elfmod import write_module
from .test_cpio import read_newc


def plan(tmp_path: Path):  # type: ignore[no-untyped-def]
    write_module(tmp_path, "ext4.ko", "ext4", "jbd2", "pre: crypto-crc32c")
    write_module(tmp_path, "jbd2.ko", "jbd2", "")
    write_module(tmp_path, "crc32c_generic.ko", "crc32c_generic", "", aliases=("crypto-crc32c",))
    return load_order(ModuleTree.scan(tmp_path), ["ext4"])


def test_init_loads_modules_in_plan_order_before_running(tmp_path: Path) -> None:
    script = init_script(plan(tmp_path), with_disk=True)
    lines = script.splitlines()
    at = {
        name: i
        for i, line in enumerate(lines)
        for name in ("crc32c_generic", "jbd2", "ext4")
        if f"/lib/modules/{name}.ko" in line
    }
    assert at["crc32c_generic"] < at["jbd2"] < at["ext4"]
    assert "fatal" in lines[at["ext4"]] and "fatal" not in lines[at["crc32c_generic"]]
    mount = next(i for i, line in enumerate(lines) if "/mnt/ext4" in line)
    run = lines.index("/pinprobe run /cases.txt")
    assert at["ext4"] < mount < run < lines.index("poweroff -f")
    assert lines[0] == "#!/bin/sh"


def test_initramfs_members(tmp_path: Path) -> None:
    p = plan(tmp_path)
    image = initramfs(b"BUSYBOX", b"PINPROBE", PROBES, p, with_disk=True)
    members = {n: (m, d, r) for n, m, d, r in read_newc(image)}
    assert members["bin/busybox"][1] == b"BUSYBOX"
    assert members["pinprobe"][1] == b"PINPROBE"
    assert members["cases.txt"][1].decode() == encode_cases(PROBES)
    assert members["dev/console"][2] == (5, 1)
    assert members["bin/sh"][1] == b"busybox"
    assert members["init"][1].decode() == init_script(p, True)
    for info in p.order:
        assert members[f"lib/modules/{info.name}.ko"][1] == info.path.read_bytes()
    names = list(members)
    assert all(names.index(n.rsplit("/", 1)[0]) < names.index(n) for n in names if "/" in n)


def test_needs_ext4() -> None:
    assert needs_ext4(PROBES)
    assert needs_ext4((by_name("odirect-read-pins"),))
    assert needs_ext4((by_name("longterm-ext4-shared"),))
    assert not needs_ext4((by_name("pins-uring-small"), by_name("fork-pinned-thp")))


@pytest.mark.skipif(
    shutil.which("mkfs.ext4") is None and not Path("/sbin/mkfs.ext4").exists(),
    reason="e2fsprogs not installed",
)
def test_disk_image_is_ext4(tmp_path: Path) -> None:
    from pinlab.realkernel.toolchain import mkfs_ext4

    disk = tmp_path / "d.img"
    make_disk(mkfs_ext4(), disk)
    superblock = disk.read_bytes()[1024 : 1024 + 1024]
    assert superblock[0x38:0x3A] == b"\x53\xef"  # ext2/3/4 magic 0xEF53


def test_qemu_command_line(tmp_path: Path) -> None:
    spec = qemu.BootSpec(Path("/q"), Path("/k"), Path("/i"), Path("/d"), 60)
    argv = qemu.qemu_argv(spec, "tcg")
    assert argv[argv.index("-smp") + 1] == "1"
    assert argv[argv.index("-m") + 1] == "1024"
    assert argv[argv.index("-accel") + 1] == "tcg"
    cmdline = argv[argv.index("-append") + 1].split()
    assert {"console=ttyS0", "transparent_hugepage=madvise", "hugepages=16"} <= set(cmdline)
    assert "file=/d,format=raw,if=virtio,cache=unsafe" in argv
    assert "-drive" not in qemu.qemu_argv(
        qemu.BootSpec(Path("/q"), Path("/k"), Path("/i"), None, 60), "kvm"
    )


@pytest.mark.parametrize(
    ("value", "expected"), [("", None), ("auto", None), ("tcg", "tcg"), ("KVM", "kvm")]
)
def test_requested_accel(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv(qemu.ACCEL_ENV, value)
    assert qemu.requested_accel() == expected


def test_bad_accel_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(qemu.ACCEL_ENV, "hvf")
    with pytest.raises(ValueError):
        qemu.requested_accel()


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU")
def test_a_kernel_qemu_cannot_load_reports_qemus_reason(tmp_path: Path) -> None:
    """A bogus --vmlinuz: the rows and notes carry QEMU's exit status and stderr."""
    from pinlab.realkernel.catalog import PROBES
    from pinlab.realkernel.check import run_check
    from pinlab.realkernel.fetch import user_kernel
    from pinlab.realkernel.toolchain import MissingTool

    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"not a kernel")
    try:
        report = run_check(user_kernel(bogus, None), None, 30, probes=PROBES[:1])
    except MissingTool as err:
        pytest.skip(str(err))
    assert not report.passed
    note = next(n for n in report.notes if n.startswith("no hello frame"))
    assert "qemu exited with status 1" in note
    assert "qemu exited with status 1" in report.rows[0].kernel.detail
