"""Fixtures of the real-kernel tests: the fetched Debian kernel, if present."""

from __future__ import annotations

import os

import pytest

from pinlab.realkernel.fetch import KernelImage, cache_dir, cached


@pytest.fixture(scope="session")
def debian_kernel() -> KernelImage:
    """The cached linux-image-6.1.0-56-amd64-unsigned (run `pinlab kernel fetch` first)."""
    image = cached(cache_dir())
    if image is None:
        message = "Debian kernel not fetched: run `pinlab kernel fetch`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return image
