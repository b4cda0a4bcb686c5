"""A newc ("070701") cpio archive writer: the format the kernel unpacks as initramfs."""

from __future__ import annotations

import stat
from dataclasses import dataclass

TRAILER = "TRAILER!!!"


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive member; ``rdev`` is (major, minor) for device nodes."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def directory(name: str) -> Entry:
    return Entry(name, stat.S_IFDIR | 0o755)


def regular(name: str, data: bytes, executable: bool = False) -> Entry:
    return Entry(name, stat.S_IFREG | (0o755 if executable else 0o644), data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def chardev(name: str, major: int, minor: int) -> Entry:
    return Entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _member(ino: int, e: Entry) -> bytes:
    name = e.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(e.mode) else 1
    fields = (ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.rdev[0], e.rdev[1], len(name), 0)
    header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    return header + name + _pad4(len(header) + len(name)) + e.data + _pad4(len(e.data))


def write_newc(entries: list[Entry]) -> bytes:
    """The archive bytes: members in order (parents before children), then the trailer."""
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError("duplicate cpio member names")
    out = [_member(i + 1, e) for i, e in enumerate(entries)]
    out.append(_member(0, Entry(TRAILER, 0)))
    return b"".join(out)
