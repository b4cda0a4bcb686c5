"""Synthetic kernel modules: minimal ELF64 files carrying a .modinfo section."""

from __future__ import annotations

import lzma
import struct
from pathlib import Path


def elf_with_modinfo(strings: list[str]) -> bytes:
    """An ELF64 little-endian relocatable with sections: null, .modinfo, .shstrtab."""
    modinfo = b"".join(s.encode() + b"\0" for s in strings)
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    ehsize, shentsize = 64, 64
    modinfo_off = ehsize
    shstr_off = modinfo_off + len(modinfo)
    shoff = (shstr_off + len(shstrtab) + 7) & ~7
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, ehsize, 0, 0, shentsize, 3, 2)
    body = header + modinfo + shstrtab
    body += b"\0" * (shoff - len(body))

    def sh(name: int, typ: int, off: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, typ, 0, 0, off, size, 0, 0, 1, 0)

    body += sh(0, 0, 0, 0) + sh(1, 1, modinfo_off, len(modinfo))
    body += sh(10, 3, shstr_off, len(shstrtab))
    return body


def write_module(
    root: Path,
    relpath: str,
    name: str,
    depends: str = "",
    softdep: str | None = None,
    aliases: tuple[str, ...] = (),
    xz: bool = False,
) -> Path:
    """A module file under root with the given modinfo."""
    strings = [f"alias={a}" for a in aliases]
    if softdep is not None:
        strings.append(f"softdep={softdep}")
    strings += [f"depends={depends}", f"name={name}", "vermagic=9.9.9-test SMP"]
    data = elf_with_modinfo(strings)
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    if xz:
        path = path.with_name(path.name + ".xz")
        data = lzma.compress(data, format=lzma.FORMAT_XZ)
    path.write_bytes(data)
    return path
