"""Output files of the commands: refused early when they cannot be written, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pinlab.cli.errors import BadInput


def check_writable(path: str) -> None:
    """Refuse a --json target that cannot be written, before the search, not after."""
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise BadInput(f"--json {path}: is a directory")
    if not parent.is_dir():
        raise BadInput(f"--json {path}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise BadInput(f"--json {path}: directory {str(parent)!r} is not writable")


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file, then os.replace."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
