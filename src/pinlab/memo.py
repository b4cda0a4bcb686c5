"""Module-level memo tables: caches of pure functions, filled as a run goes.

A memo's contents depend on what ran before in the process, never on what a program
means, so a program's fingerprint (explore/fingerprint.py) leaves them out: a schedule
found after other searches replays in a fresh process.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    """A dict caching a pure function's results by argument."""

    __slots__ = ()
