"""Module info from .modinfo sections and dependency-ordered load plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinlab.realkernel.fetch import KernelImage
from pinlab.realkernel.guest import EXT4_MODULES
from pinlab.realkernel.modules import (
    ModuleError,
    ModuleTree,
    load_order,
    modinfo,
    module_name,
    parse_softdep,
)

from .elfmod import write_module


def names(plan_order: tuple[object, ...]) -> list[str]:
    return [m.name for m in plan_order]  # type: ignore[attr-defined]


def test_module_name_from_file() -> None:
    assert module_name(Path("crc32c-intel.ko")) == "crc32c_intel"
    assert module_name(Path("ext4.ko.xz")) == "ext4"


@pytest.mark.parametrize(
    ("value", "pre", "post"),
    [
        ("pre: crypto-crc32c", ["crypto-crc32c"], []),
        ("pre: a b post: c", ["a", "b"], ["c"]),
        ("post: x pre: y", ["y"], ["x"]),
    ],
)
def test_parse_softdep(value: str, pre: list[str], post: list[str]) -> None:
    assert parse_softdep(value) == (pre, post)


def test_modinfo_reads_plain_and_xz(tmp_path: Path) -> None:
    plain = write_module(tmp_path, "a/foo.ko", "foo", "bar,baz", "pre: crypto-x", ("fooalias",))
    packed = write_module(tmp_path, "b/foo2.ko", "foo2", "bar", xz=True)
    info = modinfo(plain)
    assert (info.name, info.depends, info.softdep_pre, info.aliases) == (
        "foo",
        ("bar", "baz"),
        ("crypto-x",),
        ("fooalias",),
    )
    assert packed.name.endswith(".ko.xz")
    assert modinfo(packed).depends == ("bar",)


def test_not_an_elf_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ko"
    bad.write_bytes(b"not elf at all" * 10)
    with pytest.raises(ModuleError):
        modinfo(bad)


def synthetic_tree(root: Path) -> ModuleTree:
    write_module(root, "kernel/fs/top.ko", "top", "mid,leaf", "pre: crypto-sum post: after")
    write_module(root, "kernel/fs/mid.ko", "mid", "leaf")
    write_module(root, "kernel/lib/leaf.ko", "leaf", "", xz=True)
    write_module(
        root, "kernel/crypto/sum-generic.ko", "sum_generic", "", aliases=("crypto-sum", "sum")
    )
    write_module(root, "kernel/arch/sum-fast.ko", "sum_fast", "", aliases=("crypto-sum",))
    write_module(root, "kernel/lib/after.ko", "after", "leaf")
    (root / "modules.builtin").write_text("kernel/lib/builtin.ko\n")
    write_module(root, "kernel/x/usesbuiltin.ko", "usesbuiltin", "", "pre: builtin")
    return ModuleTree.scan(root)


def test_order_puts_every_dependency_first(tmp_path: Path) -> None:
    plan = load_order(synthetic_tree(tmp_path), ["top"])
    order = names(plan.order)
    assert set(order) == {"top", "mid", "leaf", "sum_generic", "sum_fast", "after"}
    pos = {n: i for i, n in enumerate(order)}
    assert pos["leaf"] < pos["mid"] < pos["top"]
    assert pos["sum_generic"] < pos["top"] and pos["sum_fast"] < pos["top"]
    assert pos["after"] > pos["top"]
    assert plan.optional == {"sum_generic", "sum_fast", "after"}


def test_hard_dependency_is_not_optional_even_if_also_soft(tmp_path: Path) -> None:
    tree = synthetic_tree(tmp_path)
    plan = load_order(tree, ["top", "after"])
    assert "after" not in plan.optional


def test_builtin_softdep_is_skipped(tmp_path: Path) -> None:
    plan = load_order(synthetic_tree(tmp_path), ["usesbuiltin"])
    assert names(plan.order) == ["usesbuiltin"]


def test_missing_and_cyclic_dependencies(tmp_path: Path) -> None:
    write_module(tmp_path, "a.ko", "a", "b")
    write_module(tmp_path, "b.ko", "b", "a")
    write_module(tmp_path, "c.ko", "c", "nosuch")
    tree = ModuleTree.scan(tmp_path)
    with pytest.raises(ModuleError, match="cycle"):
        load_order(tree, ["a"])
    with pytest.raises(ModuleError, match="nosuch"):
        load_order(tree, ["c"])


def test_debian_ext4_on_virtio_plan(debian_kernel: KernelImage) -> None:
    """Debian 6.1.192's modinfo: ext4 depends=jbd2,mbcache,crc16; ext4 and jbd2 softdep
    pre: crypto-crc32c (provided by crc32c_generic and crc32c_intel); virtio_pci and
    virtio_blk need virtio and virtio_ring (fs/ext4/super.c MODULE_SOFTDEP, fs/jbd2/journal.c)."""
    assert debian_kernel.modules is not None
    tree = ModuleTree.scan(debian_kernel.modules)
    plan = load_order(tree, EXT4_MODULES)
    order = names(plan.order)
    pos = {n: i for i, n in enumerate(order)}
    for before, after in [
        ("jbd2", "ext4"),
        ("mbcache", "ext4"),
        ("crc16", "ext4"),
        ("crc32c_generic", "jbd2"),
        ("crc32c_generic", "ext4"),
        ("virtio_ring", "virtio"),
        ("virtio", "virtio_blk"),
        ("virtio_pci_modern_dev", "virtio_pci"),
        ("virtio_pci_legacy_dev", "virtio_pci"),
        ("virtio", "virtio_pci"),
    ]:
        assert pos[before] < pos[after], (before, after, order)
    assert tree.resolve_alias("crypto-crc32c") == ["crc32c_generic", "crc32c_intel"]
    assert plan.optional == {"crc32c_generic", "crc32c_intel"}
    assert len(order) == len(set(order)) == 12
