"""WARN_ON, WARN_ON_ONCE and BUG_ON (v6.1 include/asm-generic/bug.h) for the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinlab.interleave import Violation

if TYPE_CHECKING:
    from pinlab.kernel.state import Kernel


def warn_on(k: Kernel, site: str) -> None:
    """WARN_ON fired at `site`: logged every time it fires, unlike WARN_ON_ONCE."""
    k.warned.append(site)


def warn_on_once(k: Kernel, site: str) -> None:
    """WARN_ON_ONCE fired at `site`: recorded once, the kernel carries on."""
    if site not in k.warned:
        k.warned.append(site)


def bug_on(condition: bool, site: str) -> None:
    """BUG_ON: the kernel stops; the model raises a Violation named after the site."""
    if condition:
        raise Violation(f"BUG_ON {site}")
