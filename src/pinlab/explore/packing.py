"""A tuple of ids packed into one int that hashes well, exact for ids of any size.

An int hashes to itself modulo ``2**61 - 1``, so its 61-bit chunks are summed into the
hash and a set of them probes by the hash's low bits.  Fields therefore go round-robin
into two or more chunks, each starting low in its chunk: the low bits of the hash mix
several fields, where one field each would make states that differ elsewhere collide.
Field ``j`` is ``w_j`` bits wide at offset ``o_j`` of a zone of whole chunks; bits
``k*w_j .. (k+1)*w_j - 1`` of its id sit in zone ``k``, so a large id makes the int
longer rather than spilling into a neighbour.
"""

from __future__ import annotations

import sys

CHUNK = sys.hash_info.modulus.bit_length()
SHARED = 16  # bits of the first field: a program has more shared values than local states
LOCAL = 8


class Packing:
    """Packs and unpacks ``n`` ids: a shared id, then local ids."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._widths = (SHARED, *[LOCAL] * (n - 1))
        chunks = 2
        while SHARED + LOCAL * ((n - 1) // chunks) > CHUNK:
            chunks += 1
        used = [0] * chunks
        self._offsets = []
        for j, w in enumerate(self._widths):
            self._offsets.append(CHUNK * (j % chunks) + used[j % chunks])
            used[j % chunks] += w
        self._zone = CHUNK * chunks
        self._fields = [(o, (1 << w) - 1) for o, w in zip(self._offsets, self._widths, strict=True)]

    def put(self, j: int, x: int) -> int:
        """The int holding id ``x`` in field ``j`` and zero elsewhere."""
        w, (shift, low) = self._widths[j], self._fields[j]
        out = 0
        while x:
            out |= (x & low) << shift
            x >>= w
            shift += self._zone
        return out

    def mask(self, *fields: int) -> int:
        """Every bit of these fields, for ids below 2**64."""
        return sum(self.put(j, (1 << 64) - 1) for j in fields)

    def get(self, node: int, j: int) -> int:
        """The id in field ``j``."""
        shift, low = self._fields[j]
        if node >> self._zone == 0:
            return node >> shift & low
        out, k, node = 0, 0, node >> shift
        while node:
            out |= (node & low) << k
            node >>= self._zone
            k += self._widths[j]
        return out

    def ids(self, node: int) -> tuple[int, ...]:
        """Every id."""
        if node >> self._zone == 0:
            return tuple([node >> shift & low for shift, low in self._fields])
        return tuple([self.get(node, j) for j in range(self.n)])

    def pack(self, ids: tuple[int, ...] | list[int]) -> int:
        """The int holding these ids."""
        return sum(self.put(j, x) for j, x in enumerate(ids))
