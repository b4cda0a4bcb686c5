"""Kernel module metadata read from the .ko files themselves, and load-order resolution.

Debian's image package ships no modules.dep (depmod runs at install time), so the
dependencies come from each module's .modinfo ELF section: ``depends=`` (hard) and
``softdep=`` (``pre:``/``post:`` module names or aliases such as ``crypto-crc32c``).
"""

from __future__ import annotations

import bz2
import fnmatch
import gzip
import json
import lzma
import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst", ".ko.bz2")


class ModuleError(Exception):
    """A module is missing or unreadable."""


@dataclass(frozen=True, slots=True)
class ModInfo:
    name: str
    path: Path
    depends: tuple[str, ...]
    softdep_pre: tuple[str, ...]
    softdep_post: tuple[str, ...]
    aliases: tuple[str, ...]


def module_name(path: Path) -> str:
    """Module name from a file name: strip the suffix, dashes become underscores."""
    base = path.name
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def read_ko(path: Path) -> bytes:
    """The uncompressed ELF image of a module file."""
    raw = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".bz2"):
        return bz2.decompress(raw)
    if path.name.endswith(".zst"):
        raise ModuleError(f"{path}: zstd-compressed modules are not supported")
    return raw


def modinfo_strings(elf: bytes | mmap.mmap) -> list[str]:
    """The NUL-separated key=value strings of a 64-bit little-endian ELF's .modinfo section."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ModuleError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + i * shentsize
        )
        return name, offset, size

    _, strtab, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        end = elf.find(b"\0", strtab + name)
        if elf[strtab + name : end] == b".modinfo":
            return [
                s.decode(errors="replace") for s in elf[offset : offset + size].split(b"\0") if s
            ]
    raise ModuleError("no .modinfo section")


def parse_softdep(value: str) -> tuple[list[str], list[str]]:
    """(pre, post) module names or aliases of a softdep= value."""
    pre: list[str] = []
    post: list[str] = []
    target = pre
    for word in value.split():
        if word == "pre:":
            target = pre
        elif word == "post:":
            target = post
        else:
            target.append(word)
    return pre, post


def modinfo(path: Path) -> ModInfo:
    """The dependency-relevant module info of one .ko file."""
    try:
        if path.suffix == ".ko":
            # most of a module is code: map it rather than read it, for the alias scan
            with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                strings = modinfo_strings(m)
        else:
            strings = modinfo_strings(read_ko(path))
    except (OSError, lzma.LZMAError, EOFError, struct.error, ValueError) as err:
        raise ModuleError(f"{path}: {err}") from err
    depends: list[str] = []
    pre: list[str] = []
    post: list[str] = []
    aliases: list[str] = []
    name = module_name(path)
    for s in strings:
        key, _, value = s.partition("=")
        if key == "depends":
            depends += [d for d in value.split(",") if d]
        elif key == "softdep":
            p, q = parse_softdep(value)
            pre += p
            post += q
        elif key == "alias":
            aliases.append(value)
        elif key == "name":
            name = value
    return ModInfo(name, path, tuple(depends), tuple(pre), tuple(post), tuple(aliases))


@dataclass(slots=True)
class ModuleTree:
    """The modules under one lib/modules/<release> directory, indexed by name."""

    root: Path
    by_name: dict[str, Path] = field(default_factory=dict)
    builtin: frozenset[str] = frozenset()
    _info: dict[str, ModInfo] = field(default_factory=dict)
    _aliases: dict[str, list[str]] | None = None
    alias_cache: Path | None = None

    @classmethod
    def scan(cls, root: Path, alias_cache: Path | None = None) -> ModuleTree:
        """Index every module file under root (names only; modinfo is read lazily).

        alias_cache: a file keeping the alias table between runs; the caller names it after
        something that changes whenever the tree does (the kernel package's sha256).
        """
        tree = cls(root, alias_cache=alias_cache)
        for path in sorted(root.rglob("*.ko*")):
            if path.name.endswith(_SUFFIXES):
                tree.by_name.setdefault(module_name(path), path)
        builtin = root / "modules.builtin"
        if builtin.exists():
            tree.builtin = frozenset(
                module_name(Path(line.strip()))
                for line in builtin.read_text().splitlines()
                if line.strip()
            )
        return tree

    def info(self, name: str) -> ModInfo:
        """Module info of name (a module name, dashes or underscores)."""
        key = name.replace("-", "_")
        if key not in self._info:
            if key not in self.by_name:
                raise ModuleError(f"module {name} not found under {self.root}")
            self._info[key] = modinfo(self.by_name[key])
        return self._info[key]

    def resolve_alias(self, alias: str) -> list[str]:
        """Module names providing alias (patterns as in modinfo alias= lines), sorted."""
        if self._aliases is None:
            self._aliases = self._load_aliases()
        found = {
            m
            for pat, mods in self._aliases.items()
            if fnmatch.fnmatchcase(alias, pat)
            for m in mods
        }
        return sorted(found)

    def _load_aliases(self) -> dict[str, list[str]]:
        """The alias table: from alias_cache if readable, else by scanning every module."""
        if self.alias_cache is not None and self.alias_cache.exists():
            try:
                cached = json.loads(self.alias_cache.read_text())
                if isinstance(cached, dict):
                    return {str(k): [str(m) for m in v] for k, v in cached.items()}
            except (OSError, ValueError, TypeError):
                pass
        table: dict[str, list[str]] = {}
        for mod in self.by_name:
            for pattern in self.info(mod).aliases:
                table.setdefault(pattern, []).append(mod)
        if self.alias_cache is not None:
            tmp = self.alias_cache.with_name(f".{self.alias_cache.name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps(table))
                os.replace(tmp, self.alias_cache)
            except OSError:
                tmp.unlink(missing_ok=True)
        return table

    def names_for(self, ref: str) -> list[str]:
        """A softdep target: itself if it is a module, else the modules with that alias."""
        key = ref.replace("-", "_")
        if key in self.by_name:
            return [key]
        if key in self.builtin:
            return []
        return self.resolve_alias(ref)


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """Modules in insmod order; ``optional`` ones came only from softdeps (may fail to load)."""

    order: tuple[ModInfo, ...]
    optional: frozenset[str]


def load_order(tree: ModuleTree, wanted: Iterable[str]) -> LoadPlan:
    """Dependency-ordered closure of wanted: hard deps and softdep pre before, post after."""
    order: list[ModInfo] = []
    done: set[str] = set()
    active: list[str] = []
    optional: set[str] = set()
    hard: set[str] = set()

    def visit(name: str, soft: bool) -> None:
        key = name.replace("-", "_")
        if not soft:
            hard.add(key)
        if key in done or (key in tree.builtin and key not in tree.by_name):
            return
        if key in active:
            raise ModuleError(f"dependency cycle: {' -> '.join([*active, key])}")
        active.append(key)
        info = tree.info(key)
        for pre in info.softdep_pre:
            for mod in tree.names_for(pre):
                visit(mod, True)
        for dep in info.depends:
            visit(dep, soft)
        active.pop()
        done.add(key)
        order.append(info)
        if soft:
            optional.add(key)
        for post in info.softdep_post:
            for mod in tree.names_for(post):
                visit(mod, True)

    for name in wanted:
        visit(name, False)
    return LoadPlan(tuple(order), frozenset(optional - hard))
