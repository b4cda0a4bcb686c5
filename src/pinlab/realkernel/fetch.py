"""Getting a kernel: Debian's packaged image via apt-get download, unpacked into a cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "linux-image-6.1.0-56-amd64-unsigned"
VERSION = "6.1.192-2"
CACHE_ENV = "PINLAB_CACHE"


class FetchError(Exception):
    """The package could not be obtained; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class KernelImage:
    """A kernel to boot: its image, its modules directory (if any) and where it came from."""

    vmlinuz: Path
    modules: Path | None
    release: str
    source: str
    sha256: str | None = None


def cache_dir(override: Path | None = None) -> Path:
    """--cache, else $PINLAB_CACHE, else ~/.cache/pinlab."""
    if override is not None:
        return override
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "pinlab"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _entry_dir(cache: Path, package: str, version: str) -> Path:
    return cache / "kernels" / f"{package}_{version}"


def _image_from(root: Path, source: str, sha: str | None) -> KernelImage:
    """The vmlinuz and lib/modules/<release> of an unpacked image package."""
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise FetchError(f"{source}: expected one boot/vmlinuz-*, found {len(images)}")
    release = images[0].name.removeprefix("vmlinuz-")
    modules = root / "lib" / "modules" / release
    return KernelImage(images[0], modules if modules.is_dir() else None, release, source, sha)


def cached(cache: Path, package: str = PACKAGE, version: str = VERSION) -> KernelImage | None:
    """The cached kernel if its manifest exists and the .deb still has the recorded sha256."""
    entry = _entry_dir(cache, package, version)
    manifest = entry / "manifest.json"
    if not manifest.exists():
        return None
    try:
        data = json.loads(manifest.read_text())
        deb = entry / str(data["deb"])
        sha = str(data["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FetchError(
            f"{manifest}: corrupt manifest ({err}); run `pinlab kernel fetch` to fetch again"
        ) from err
    if not deb.exists() or sha256_file(deb) != sha:
        return None
    return _image_from(entry / "root", f"{package}={version}", sha)


def _apt_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.startswith("E:")]
    return lines[0] if lines else stderr.strip().splitlines()[-1] if stderr.strip() else "failed"


def fetch(cache: Path, package: str = PACKAGE, version: str = VERSION) -> KernelImage:
    """Download (unless cached and intact) and unpack package=version; record its sha256.

    A corrupt cache entry is replaced.
    """
    try:
        found = cached(cache, package, version)
    except FetchError:
        found = None
    if found is not None:
        return found
    for tool, pkg in (("apt-get", "apt"), ("dpkg", "dpkg")):
        if shutil.which(tool) is None:
            raise FetchError(f"{tool} not found: install the Debian package {pkg}")
    entry = _entry_dir(cache, package, version)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=entry.parent) as tmp:
        work = Path(tmp)
        got = subprocess.run(
            ["apt-get", "download", f"{package}={version}"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = sorted(work.glob("*.deb"))
        if got.returncode != 0 or len(debs) != 1:
            raise FetchError(
                f"cannot download {package}={version}: {_apt_error(got.stderr)}"
                " (run apt-get update?)"
            )
        deb = debs[0]
        root = work / "root"
        unpack = subprocess.run(
            ["dpkg", "-x", str(deb), str(root)], capture_output=True, text=True, check=False
        )
        if unpack.returncode != 0:
            raise FetchError(f"dpkg -x {deb.name} failed: {unpack.stderr.strip()[:200]}")
        sha = sha256_file(deb)
        _image_from(root, f"{package}={version}", sha)
        if entry.exists():
            shutil.rmtree(entry)
        staged = work / "entry"
        staged.mkdir()
        deb.rename(staged / deb.name)
        root.rename(staged / "root")
        manifest = {"package": package, "version": version, "deb": deb.name, "sha256": sha}
        _write_atomic(staged / "manifest.json", json.dumps(manifest, indent=2) + "\n")
        staged.rename(entry)
    image = cached(cache, package, version)
    if image is None:
        raise FetchError(f"{package}={version}: cache entry did not verify after unpacking")
    return image


def user_kernel(vmlinuz: Path, modules: Path | None) -> KernelImage:
    """A kernel the user built: its image and optionally its lib/modules/<release> directory."""
    if not vmlinuz.is_file():
        raise FetchError(f"--vmlinuz {vmlinuz}: no such file")
    if modules is not None and not modules.is_dir():
        raise FetchError(f"--modules {modules}: no such directory")
    return KernelImage(vmlinuz, modules, modules.name if modules else "unknown", str(vmlinuz))
