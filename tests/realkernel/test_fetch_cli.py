"""`kernel fetch` against a fake apt-get serving a real .deb, and the CLI's error paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pinlab.cli.kernel import kernel_group
from pinlab.realkernel import fetch

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg not installed")

PKG, VER = "linux-image-9.9.9-test", "9.9.9-1"


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH whose apt-get downloads a tiny kernel package; returns its call log."""
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PKG}\nVersion: {VER}\nArchitecture: amd64\nMaintainer: t <t@t>\n"
        "Description: test\n"
    )
    (root / "boot").mkdir()
    (root / "boot" / "vmlinuz-9.9.9-test").write_bytes(b"kernel image")
    (root / "lib/modules/9.9.9-test/kernel").mkdir(parents=True)
    deb = tmp_path / f"{PKG}_{VER}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "apt.log"
    script = bindir / "apt-get"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        f'if [ "$2" = "{PKG}={VER}" ]; then cp {deb} .; exit 0; fi\n'
        "echo \"E: Version '${2#*=}' for '${2%=*}' was not found\" >&2; exit 100\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_fetch_unpacks_records_sha_and_reuses(fake_apt: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    image = fetch.fetch(cache, PKG, VER)
    assert image.vmlinuz.read_bytes() == b"kernel image"
    assert image.release == "9.9.9-test" and image.modules is not None
    manifest = json.loads((cache / "kernels" / f"{PKG}_{VER}" / "manifest.json").read_text())
    deb = cache / "kernels" / f"{PKG}_{VER}" / manifest["deb"]
    assert manifest["sha256"] == fetch.sha256_file(deb) == image.sha256
    assert fetch.fetch(cache, PKG, VER) == image
    assert len(fake_apt.read_text().splitlines()) == 1


def test_corrupted_deb_is_fetched_again(fake_apt: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fetch.fetch(cache, PKG, VER)
    entry = cache / "kernels" / f"{PKG}_{VER}"
    deb = next(entry.glob("*.deb"))
    deb.write_bytes(deb.read_bytes() + b"x")
    assert fetch.cached(cache, PKG, VER) is None
    assert fetch.fetch(cache, PKG, VER).sha256 == fetch.sha256_file(next(entry.glob("*.deb")))
    assert len(fake_apt.read_text().splitlines()) == 2


def test_missing_version_is_one_line_exit_2(fake_apt: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        kernel_group,
        ["fetch", "--cache", str(tmp_path / "c"), "--package", PKG, "--version", "0.0-0"],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{PKG}=0.0-0" in lines[0] and "not found" in lines[0]


def test_check_without_fetched_kernel_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(kernel_group, ["check", "--cache", str(tmp_path)])
    assert result.exit_code == 2 and "pinlab kernel fetch" in result.output


def test_check_names_the_missing_qemu_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"k")
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(kernel_group, ["check", "--vmlinuz", str(vmlinuz)])
    assert result.exit_code == 2
    assert "qemu-system-x86" in result.output and len(result.output.strip().splitlines()) == 1


def test_modules_without_vmlinuz_is_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(kernel_group, ["check", "--modules", str(tmp_path)])
    assert result.exit_code == 2 and "--vmlinuz" in result.output


def test_corrupt_manifest_is_one_line_for_check_and_refetched(
    fake_apt: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    fetch.fetch(cache, PKG, VER)
    manifest = cache / "kernels" / f"{PKG}_{VER}" / "manifest.json"
    manifest.write_text("{not json")
    with pytest.raises(fetch.FetchError, match="corrupt manifest"):
        fetch.cached(cache, PKG, VER)
    assert fetch.fetch(cache, PKG, VER).vmlinuz.read_bytes() == b"kernel image"
    manifest.write_text("{}")
    result = CliRunner().invoke(kernel_group, ["check", "--cache", str(tmp_path / "other")])
    assert result.exit_code == 2


def test_json_into_a_missing_directory_fails_before_booting(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "check.json"
    result = CliRunner().invoke(
        kernel_group, ["check", "--cache", str(tmp_path), "--json", str(out)]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_empty_modules_directory_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pinlab.realkernel import check

    def no_boot(*args: object, **kwargs: object) -> None:
        raise AssertionError("booted")

    monkeypatch.setattr(check.qemu, "boot", no_boot)
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"x")
    (tmp_path / "mods").mkdir()
    result = CliRunner().invoke(
        kernel_group, ["check", "--vmlinuz", str(vmlinuz), "--modules", str(tmp_path / "mods")]
    )
    if "install the Debian package" in result.output:
        pytest.skip(result.output.strip())
    assert result.exit_code == 2, result.output
    assert "module virtio_pci not found" in result.output
