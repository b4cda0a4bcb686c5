"""Objects that a snapshot copies as a delta and a restore patches in place.

A large piece of state (the frame table) changes a few rows per step.  Its type is
listed in :data:`INPLACE` and implements :class:`InPlace`: a snapshot keeps the object
itself and what :meth:`InPlace.take_delta` returns, and a restore hands that back to
:meth:`InPlace.put_delta`, which makes the object equal to what it was when the delta
was taken, in time proportional to the rows changed since.  Neither the kernel model
nor the explorer imports the other; both import this.
"""

from __future__ import annotations

from typing import Protocol


class InPlace(Protocol):
    """State restored in place from a delta (see the module docstring)."""

    def take_delta(self) -> object:
        """What :meth:`put_delta` needs to come back to the present contents."""

    def put_delta(self, delta: object) -> None:
        """Make the contents what they were when ``delta`` was taken."""


INPLACE: set[type] = set()
