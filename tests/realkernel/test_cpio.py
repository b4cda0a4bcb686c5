"""The newc writer, read back by the cpio tool and by an independent header parser."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pinlab.realkernel import cpio


def read_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """(name, mode, data, rdev) of every member up to the trailer."""
    out = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name_at = pos + 110
        name = data[name_at : name_at + namesize - 1].decode()
        assert data[name_at + namesize - 1] == 0
        data_at = name_at + namesize + (-(110 + namesize) % 4)
        assert data_at % 4 == 0
        body = data[data_at : data_at + filesize]
        pos = data_at + filesize + (-filesize % 4)
        if name == cpio.TRAILER:
            assert pos == len(data)
            return out
        out.append((name, f[1], body, (f[9], f[10])))


def sample() -> list[cpio.Entry]:
    return [
        cpio.directory("bin"),
        cpio.directory("dev"),
        cpio.chardev("dev/console", 5, 1),
        cpio.regular("bin/busybox", b"\x7fELF" + bytes(range(256)) * 3, executable=True),
        cpio.symlink("bin/sh", "busybox"),
        cpio.regular("cases.txt", b"case x\nend\n"),
        cpio.regular("empty", b""),
    ]


def test_members_read_back_in_order() -> None:
    entries = sample()
    got = read_newc(cpio.write_newc(entries))
    assert [(n, m, d, r) for n, m, d, r in got] == [
        (e.name, e.mode, e.data, e.rdev) for e in entries
    ]


def test_device_node_and_symlink_modes() -> None:
    got = {n: (m, d, r) for n, m, d, r in read_newc(cpio.write_newc(sample()))}
    assert stat.S_ISCHR(got["dev/console"][0]) and got["dev/console"][2] == (5, 1)
    assert stat.S_ISLNK(got["bin/sh"][0]) and got["bin/sh"][1] == b"busybox"
    assert got["bin/busybox"][0] & 0o111


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ValueError):
        cpio.write_newc([cpio.directory("a"), cpio.regular("a", b"")])


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio tool not installed")
def test_gnu_cpio_extracts_the_archive(tmp_path: Path) -> None:
    entries = [e for e in sample() if not stat.S_ISCHR(e.mode)]  # mknod needs root
    archive = tmp_path / "a.cpio"
    archive.write_bytes(cpio.write_newc(entries))
    out = tmp_path / "x"
    out.mkdir()
    listing = subprocess.run(
        ["cpio", "-it"], stdin=archive.open("rb"), capture_output=True, text=True, check=True
    ).stdout.split()
    assert listing == [e.name for e in entries]
    subprocess.run(["cpio", "-idm", "--quiet"], cwd=out, stdin=archive.open("rb"), check=True)
    assert (out / "bin/busybox").read_bytes() == sample()[3].data
    assert (out / "bin/sh").is_symlink() and (out / "bin/sh").readlink() == Path("busybox")
    assert (out / "cases.txt").read_text() == "case x\nend\n"
    assert (out / "empty").stat().st_size == 0


@given(
    st.dictionaries(
        st.text(alphabet="abcdefghij/._-", min_size=1, max_size=30).filter(
            lambda s: not s.startswith("/") and s != cpio.TRAILER
        ),
        st.binary(max_size=300),
        max_size=8,
    )
)
def test_any_regular_files_round_trip(files: dict[str, bytes]) -> None:
    entries = [cpio.regular(name, data) for name, data in files.items()]
    got = read_newc(cpio.write_newc(entries))
    assert {n: d for n, _m, d, _r in got} == files
