"""The guest: an initramfs (busybox, modules, the probe interpreter, the cases) and a disk."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pinlab.realkernel import cpio
from pinlab.realkernel.catalog import Probe, encode_cases
from pinlab.realkernel.modules import LoadPlan, ModuleTree, load_order, read_ko
from pinlab.realkernel.ops import DioFile, Fork, Map, Op

# busybox applets the init script uses (symlinked; no --install at boot)
APPLETS = ("sh", "mount", "mkdir", "insmod", "poweroff", "sleep", "echo", "cat", "sync", "test")
DISK_MIB = 64
# modules for an ext4 filesystem on a virtio-pci disk
EXT4_MODULES = ("virtio_pci", "virtio_blk", "ext4")


def _ops_need_ext4(ops: tuple[Op, ...]) -> bool:
    for op in ops:
        if isinstance(op, Fork) and _ops_need_ext4(op.ops):
            return True
        if isinstance(op, DioFile) or (isinstance(op, Map) and op.kind == "ext4"):
            return True
    return False


def needs_ext4(probes: tuple[Probe, ...]) -> bool:
    """True if some probe maps an ext4 file or creates the O_DIRECT file (on ext4)."""
    return any(_ops_need_ext4(p.ops) for p in probes)


def init_script(plan: LoadPlan | None, with_disk: bool) -> str:
    """/init: mount the pseudo filesystems, load modules in order, run every case, power off."""
    lines = [
        "#!/bin/sh",
        "mount -t proc proc /proc",
        "mount -t sysfs sysfs /sys",
        "mount -t devtmpfs devtmpfs /dev",
        "mount -t tmpfs tmpfs /mnt/tmpfs",
        "mount -t ramfs ramfs /mnt/ramfs",
        'fatal() { /pinprobe say "fatal $*"; poweroff -f; }',
    ]
    order = plan.order if plan else ()
    optional = plan.optional if plan else frozenset()
    for info in order:
        load = f"insmod /lib/modules/{info.name}.ko"
        if info.name in optional:
            lines.append(f"{load} 2>/dev/null || echo 'pinlab-init: optional {info.name} absent'")
        else:
            lines.append(f"{load} || fatal insmod-{info.name}")
    if with_disk:
        lines += [
            "n=0; while ! test -b /dev/vda; do n=$((n+1)); test $n -gt 100 && fatal no-vda;"
            " sleep 0.1; done",
            "mount -t ext4 /dev/vda /mnt/ext4 || fatal mount-ext4",
        ]
    lines += ["/pinprobe run /cases.txt", "sync", "poweroff -f", ""]
    return "\n".join(lines)


def initramfs(
    busybox: bytes,
    pinprobe: bytes,
    probes: tuple[Probe, ...],
    plan: LoadPlan | None,
    with_disk: bool,
) -> bytes:
    """The newc archive of the whole guest userspace."""
    entries = [
        cpio.directory(d)
        for d in (
            "bin",
            "dev",
            "proc",
            "sys",
            "tmp",
            "lib",
            "lib/modules",
            "mnt",
            "mnt/tmpfs",
            "mnt/ramfs",
            "mnt/ext4",
        )
    ]
    # the kernel opens /dev/console for init before anything is mounted
    entries.append(cpio.chardev("dev/console", 5, 1))
    entries.append(cpio.regular("bin/busybox", busybox, executable=True))
    entries += [cpio.symlink(f"bin/{a}", "busybox") for a in APPLETS]
    entries.append(cpio.regular("init", init_script(plan, with_disk).encode(), executable=True))
    entries.append(cpio.regular("pinprobe", pinprobe, executable=True))
    entries.append(cpio.regular("cases.txt", encode_cases(probes).encode()))
    for info in plan.order if plan else ():
        entries.append(cpio.regular(f"lib/modules/{info.name}.ko", read_ko(info.path)))
    return cpio.write_newc(entries)


def make_disk(mkfs: Path, path: Path) -> None:
    """An empty ext4 image (mkfs.ext4 on a plain file needs no root)."""
    with path.open("wb") as f:
        f.truncate(DISK_MIB << 20)
    done = subprocess.run(
        [str(mkfs), "-F", "-q", "-L", "pinlab", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RuntimeError(f"{mkfs} failed making the guest disk: {why}")


@dataclass(frozen=True, slots=True)
class GuestFiles:
    initrd: Path
    disk: Path | None
    modules: tuple[str, ...]


def build_guest(
    workdir: Path,
    probes: tuple[Probe, ...],
    modules_dir: Path | None,
    busybox: Path,
    pinprobe: Path,
    mkfs: Path,
    alias_cache: Path | None = None,
) -> GuestFiles:
    """Write initrd (and the ext4 disk if a probe needs one) into workdir."""
    disk = needs_ext4(probes)
    plan = None
    if disk and modules_dir is not None:
        plan = load_order(ModuleTree.scan(modules_dir, alias_cache), EXT4_MODULES)
    image = initramfs(busybox.read_bytes(), pinprobe.read_bytes(), probes, plan, disk)
    initrd = workdir / "initrd.cpio"
    initrd.write_bytes(image)
    disk_path = None
    if disk:
        disk_path = workdir / "disk.ext4"
        make_disk(mkfs, disk_path)
    return GuestFiles(initrd, disk_path, tuple(m.name for m in plan.order) if plan else ())
