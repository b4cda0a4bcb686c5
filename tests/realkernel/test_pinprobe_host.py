"""The guest interpreter built and run on the host: framing, case-file validation, and ops that
need no guest (gcc and a static libc required; no QEMU)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinlab.realkernel import ops as O
from pinlab.realkernel import toolchain
from pinlab.realkernel.catalog import PROBES, Probe, encode_cases
from pinlab.realkernel.console import fields_of, parse_frames
from pinlab.realkernel.toolchain import MissingTool

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")


@pytest.fixture(scope="module")
def pinprobe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pinprobe") / "pinprobe"
    try:
        toolchain.compile_probe(out)
    except MissingTool as err:
        pytest.skip(str(err))
    return out


def run(pinprobe: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(pinprobe), *args], capture_output=True, text=True, check=False, timeout=30
    )


@settings(max_examples=20, deadline=None)
@given(
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="@"),
        min_size=1,
        max_size=300,
    )
)
def test_c_frame_crc_is_zlib_crc32(pinprobe: Path, payload: str) -> None:
    got = run(pinprobe, "say", payload)
    frames = parse_frames(got.stdout)
    assert frames.payloads == {0: payload}
    header = got.stdout.split()[3]
    assert header == f"{zlib.crc32(payload.encode()):08x}"


def test_the_whole_catalog_parses(pinprobe: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.txt"
    cases.write_text(encode_cases(PROBES))
    got = run(pinprobe, "parse", str(cases))
    assert (got.returncode, got.stdout) == (0, f"cases={len(PROBES)}\n")


def one_of_each_op() -> list[str]:
    """One encoded line per op name used anywhere in the catalog."""
    seen: dict[str, str] = {}
    for line in encode_cases(PROBES).splitlines():
        name = line.split()[0]
        if name not in ("case", "search", "end", "fork", "endfork"):
            seen.setdefault(name, line)
    return sorted(seen.values())


def parse_detail(pinprobe: Path, tmp_path: Path, text: str) -> str:
    cases = tmp_path / "bad.txt"
    cases.write_text(text)
    got = run(pinprobe, "parse", str(cases))
    assert got.returncode == 2
    return fields_of(got.stdout.replace("\n", " "))["detail"]


@pytest.mark.parametrize("line", one_of_each_op())
def test_an_op_with_a_token_missing_or_extra_is_refused(
    pinprobe: Path, tmp_path: Path, line: str
) -> None:
    if len(line.split()) > 1:
        short = " ".join(line.split()[:-1])
        detail = parse_detail(pinprobe, tmp_path, f"case c\n{short}\nend\n")
        assert detail == "op-token-count:EINVAL"
    extra = f"{line} 1"
    assert parse_detail(pinprobe, tmp_path, f"case c\n{extra}\nend\n") == "op-token-count:EINVAL"


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("case c\nbogus 1\nend\n", "unknown-op:EINVAL"),
        ("case\nend\n", "case-name:EINVAL"),
        (f"case {'x' * 64}\nend\n", "case-name:EINVAL"),
        ("case c\nsearch N 0 10 child d1\nend\n", "search-line:EINVAL"),
        ("case c\nsearch N 10 0 child d1 s1\nend\n", "search-range:EINVAL"),
        ("drain\n", "op-outside-case:EINVAL"),
        ("case c\ndrain\n", "case-without-end:EINVAL"),
        (f"case c\npins_end {'o' * 600}\nend\n", "line-too-long:EINVAL"),
    ],
)
def test_malformed_case_files_are_refused(
    pinprobe: Path, tmp_path: Path, text: str, detail: str
) -> None:
    assert parse_detail(pinprobe, tmp_path, text) == detail


def run_case(pinprobe: Path, tmp_path: Path, ops: tuple[O.Op, ...]) -> dict[str, str]:
    if not Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").exists():
        pytest.skip("host kernel without THP")
    cases = tmp_path / "case.txt"
    cases.write_text(encode_cases((Probe("c", "q", ops),)))
    got = run(pinprobe, "case", str(cases), "0")
    return fields_of(got.stdout.replace("\n", " "))


def test_a_range_past_its_region_is_an_error(pinprobe: Path, tmp_path: Path) -> None:
    got = run_case(pinprobe, tmp_path, (O.Map("b", "anon", 4096), O.Touch("b", 0, 8192)))
    assert got == {"status": "error", "detail": "range-outside-region:ERANGE"}


def test_a_fork_childs_error_is_its_own_prefixed(pinprobe: Path, tmp_path: Path) -> None:
    got = run_case(
        pinprobe, tmp_path, (O.Map("b", "anon", 4096), O.Fork((O.Touch("b", 4096, 4096),)))
    )
    assert got == {"status": "error", "detail": "child:range-outside-region:ERANGE"}


def fake_tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize(
    ("stderr", "package"),
    [
        ("x.c:3:10: fatal error: linux/io_uring.h: No such file or directory", "linux-libc-dev"),
        ("/usr/bin/ld: cannot find -lc: No such file or directory", "libc6-dev"),
    ],
)
def test_missing_headers_and_libc_name_their_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stderr: str, package: str
) -> None:
    fake_tool(tmp_path, "gcc", f"echo '{stderr}' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(MissingTool, match=f"install the Debian package {package}$"):
        toolchain.compile_probe(tmp_path / "pinprobe")


def test_missing_gcc_and_busybox_name_their_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingTool, match=r"install the Debian package gcc$"):
        toolchain.compile_probe(tmp_path / "pinprobe")
    fake_tool(tmp_path, "busybox", "exit 0")
    monkeypatch.setattr(toolchain, "is_static_elf", lambda path: False)
    with pytest.raises(MissingTool, match=r"install the Debian package busybox-static$"):
        toolchain.busybox_static()
