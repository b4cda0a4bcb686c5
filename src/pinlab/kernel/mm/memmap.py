"""The frame table: one struct page per PFN, as a struct of NumPy arrays.

Pages and folios are named by PFN (plain ints).  The fields mirror
v6.1 include/linux/mm_types.h struct page; the per-compound fields
(order, entire mapcount, exact pincount, destructor) live in the tail page
where the profile's kernel keeps them, so dump_page and the designs read them
from the same place the kernel does.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pinlab.inplace import INPLACE
from pinlab.kernel.profiles import Profile

# v6.1 include/linux/mm.h enum compound_dtor_id
NULL_COMPOUND_DTOR = 0
COMPOUND_PAGE_DTOR = 1
HUGETLB_PAGE_DTOR = 2
TRANSHUGE_PAGE_DTOR = 3

# v6.1 include/linux/page-flags.h PAGE_MAPPING_ANON: low bit of page->mapping
PAGE_MAPPING_ANON = 0x1

NO_HEAD = -1


# struct page fields, in the order rows are hashed and snapshotted
FIELDS = (
    "flags",
    "refcount",
    "mapcount",
    "head",
    "order",
    "compound_mapcount",
    "pincount",
    "dtor",
    "mapping",
    "index",
    "private",
    "data",
)
_DTYPES = (
    np.uint64,
    np.int32,
    np.int32,
    np.int64,
    np.uint8,
    np.int32,
    np.int32,
    np.uint8,
    np.int64,
    np.int64,
    np.int64,
    np.int64,
)
_INIT = (0, 0, -1, NO_HEAD, 0, 0, 0, 0, 0, 0, 0, 0)  # v6.1 mm/mm_init.c __init_single_page


class Tracked(np.ndarray):
    """A frame-table field whose item writes are logged for incremental hashing.

    Only writes through the table's own ``__setitem__`` are logged (augmented
    assignment to a slice goes through it too); a write through a view kept aside
    would not be, which the checked mode's comparison with the full digest catches.
    """

    log: list[object] | None
    field: str
    seen: list[tuple[str, object, bool]] | None

    def __array_finalize__(self, obj: object) -> None:
        self.log = self.seen = None

    def __setitem__(self, idx: object, value: object) -> None:
        np.ndarray.__setitem__(self, idx, value)  # type: ignore[call-overload]
        if self.log is not None:
            self.log.append(idx)


class Audited(Tracked):
    """A frame-table field that also records every item read and write (checked mode)."""

    def __getitem__(self, idx: Any) -> Any:
        if self.seen is not None:  # the table's own field, not a view taken of it
            self.seen.append((self.field, idx, False))
        return np.ndarray.__getitem__(self, idx)

    def __setitem__(self, idx: object, value: object) -> None:
        Tracked.__setitem__(self, idx, value)
        if self.seen is not None:
            self.seen.append((self.field, idx, True))


class Memmap:
    """struct page fields for every PFN (v6.1 include/linux/mm_types.h).

    Besides the fields, it keeps a Zobrist-style digest (per row, two 64-bit lanes
    XORed over all rows) brought up to date from the logged writes, and, once a
    snapshot has been asked for, the rows as they were then (the base) and the rows
    changed since, so that snapshots and restores cost what changed.
    """

    __slots__ = (*FIELDS, "_base", "_base_hash", "_dirty", "_hash", "_log", "_seen", "_total")

    flags: NDArray[np.uint64]
    refcount: NDArray[np.int32]
    mapcount: NDArray[np.int32]
    head: NDArray[np.int64]
    order: NDArray[np.uint8]
    compound_mapcount: NDArray[np.int32]
    pincount: NDArray[np.int32]
    dtor: NDArray[np.uint8]
    mapping: NDArray[np.int64]
    index: NDArray[np.int64]
    private: NDArray[np.int64]
    # The page's contents, one token standing for its 4096 bytes (0 = zeroes):
    # enough to tell which frame a write landed in.
    data: NDArray[np.int64]

    def __init__(self, arrays: list[NDArray[np.generic]]) -> None:
        self._log: list[object] = []
        self._seen: list[tuple[str, object, bool]] = []
        for name, arr in zip(FIELDS, arrays, strict=True):
            tracked = np.array(arr, copy=True).view(Tracked)
            # writes are logged once the table is hashed (see _logging)
            tracked.log, tracked.field, tracked.seen = None, name, self._seen
            object.__setattr__(self, name, tracked)
        self._hash: NDArray[np.uint64] | None = None  # per row, two lanes
        self._total = np.zeros(2, np.uint64)
        self._base: list[NDArray[np.generic]] | None = None
        self._base_hash: NDArray[np.uint64] | None = None
        self._dirty: set[int] = set()  # rows changed since the base

    @property
    def nr_pages(self) -> int:
        """Number of PFNs in the table."""
        return int(self.refcount.shape[0])

    def arrays(self) -> list[NDArray[np.generic]]:
        """The fields as plain arrays (shared, not copied), in FIELDS order."""
        return [getattr(self, f).view(np.ndarray) for f in FIELDS]

    def audit(self, on: bool) -> None:
        """Start (or stop) recording every item read and write of the fields."""
        for f in FIELDS:
            getattr(self, f).__class__ = Audited if on else Tracked

    def accesses(self) -> tuple[set[tuple[str, int, str]], set[tuple[str, int, str]]]:
        """The ``("page", pfn, field)`` keys read and written since the last call."""
        reads: set[tuple[str, int, str]] = set()
        writes: set[tuple[str, int, str]] = set()
        n = self.nr_pages
        for name, idx, wrote in self._seen:
            keys = {("page", int(r), name) for r in _rows([idx], n)}
            (writes if wrote else reads).update(keys)
        self._seen.clear()
        return reads, writes

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Memmap, ([a.copy() for a in self.arrays()],))

    def __deepcopy__(self, memo: dict[int, object]) -> Memmap:
        """A copy with the row hashes (equal rows, equal hashes) and, if hashed, sharing
        the snapshot base (read-only), so that a search's copies of one world share it."""
        copy = Memmap(self.arrays())
        if self._hash is not None:
            self._flush()
            copy._hash, copy._total = self._hash.copy(), self._total.copy()
            copy._logging()
            self._set_base()
            copy._base, copy._base_hash = self._base, self._base_hash
            copy._dirty = set(self._dirty)
        return copy

    def _logging(self) -> None:
        """Log item writes from now on.  Only a hashed table needs them, and a table is
        hashed whole at first: until then nothing holds on to the written indexes (a long
        unhashed run, like bench/gup_bench.py's, would keep every index array alive)."""
        for name in FIELDS:
            getattr(self, name).log = self._log

    def _set_base(self) -> None:
        """Keep the present rows and hashes, read-only, as the base deltas are taken from."""
        if self._base is not None:
            return
        assert self._hash is not None
        self._base = [a.copy() for a in self.arrays()]
        self._base_hash = self._hash.copy()
        for a in (*self._base, self._base_hash):
            a.flags.writeable = False

    def _flush(self) -> NDArray[np.int64]:
        """Rows written since the last flush; row hashes and the base's dirty set follow."""
        log = self._log
        if not log:
            return _NO_ROWS
        rows = _rows(log, self.nr_pages)
        log.clear()
        if self._hash is not None:
            new = _row_hash(self.arrays(), rows)
            self._total ^= np.bitwise_xor.reduce(self._hash[rows], axis=0)
            self._total ^= np.bitwise_xor.reduce(new, axis=0)
            self._hash[rows] = new
        if self._base is not None:
            self._dirty.update(rows.tolist())
        return rows

    def digest(self) -> bytes:
        """The table's digest, updated for the rows written since the last call."""
        if self._hash is None:
            self._hash = _table_hash(self.arrays())
            self._logging()
            self._total = np.bitwise_xor.reduce(self._hash, axis=0)
        else:
            self._flush()
        return self._total.tobytes()

    def take_delta(self) -> object:
        """The rows changed since the base, their values and hashes, and the digest."""
        self.digest()
        self._set_base()
        rows = np.fromiter(self._dirty, np.int64, len(self._dirty))
        assert self._hash is not None
        return (rows, [a[rows] for a in self.arrays()], self._hash[rows], self._total.copy())

    def put_delta(self, delta: object) -> None:
        """Come back to the contents :meth:`take_delta` saw, touching only changed rows."""
        self._flush()
        rows: NDArray[np.int64]
        values: list[NDArray[np.generic]]
        hashes: NDArray[np.uint64]
        total: NDArray[np.uint64]
        rows, values, hashes, total = delta  # type: ignore[misc]
        back = np.fromiter(self._dirty.difference(rows.tolist()), np.int64)
        assert self._base is not None and self._base_hash is not None and self._hash is not None
        for arr, base, vals in zip(self.arrays(), self._base, values, strict=True):
            arr[back] = base[back]
            arr[rows] = vals
        self._hash[back] = self._base_hash[back]
        self._hash[rows] = hashes
        self._total = total.copy()
        self._dirty = set(rows.tolist())


INPLACE.add(Memmap)
_NO_ROWS = np.zeros(0, np.int64)


def _rows(log: list[object], n: int) -> NDArray[np.int64]:
    """The distinct rows a list of logged indexes names."""
    parts: list[NDArray[np.int64]] = []
    ints: list[int] = []
    for idx in log:
        if isinstance(idx, int | np.integer):
            ints.append(int(idx) % n)
        elif isinstance(idx, slice):
            parts.append(np.arange(*idx.indices(n), dtype=np.int64))
        else:
            a = np.asarray(idx)
            parts.append(np.flatnonzero(a) if a.dtype == np.bool_ else a.astype(np.int64) % n)
    if ints:
        parts.append(np.array(ints, np.int64))
    return np.unique(np.concatenate(parts)) if parts else _NO_ROWS


# splitmix64's multipliers, and one key per column (the PFN, then each field) and lane
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_KEYS = np.array(
    [
        [
            (0x9E3779B97F4A7C15 * (2 * i + lane + 1) | 1) & (1 << 64) - 1
            for i in range(len(FIELDS) + 1)
        ]
        for lane in range(2)
    ],
    dtype=np.uint64,
)


def _mixed(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser, elementwise (in place)."""
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _mix(column: int, values: NDArray[np.generic]) -> NDArray[np.uint64]:
    """Column ``column``'s pseudo-random word for each of ``values``, shape (values, 2)."""
    return _mixed(values.astype(np.int64).view(np.uint64)[:, None] ^ _KEYS[:, column][None, :])


def _row_hash(arrays: list[NDArray[np.generic]], rows: NDArray[np.int64]) -> NDArray[np.uint64]:
    """Two independent 64-bit hashes of each of ``rows``, shape (rows, 2).

    Zobrist-style: each (column, value) pair is mixed (:func:`_mix`) into a pseudo-random
    word, the PFN being column 0, and a row's hash is the XOR of its columns' words.
    All columns are mixed at once: a step changes few rows, and calls cost more than rows.
    """
    cols = np.empty((rows.shape[0], len(FIELDS) + 1), np.int64)
    cols[:, 0] = rows
    for i, arr in enumerate(arrays):
        cols[:, i + 1] = arr[rows]
    x = _mixed(cols.view(np.uint64)[None, :, :] ^ _KEYS[:, None, :])
    return np.ascontiguousarray(np.bitwise_xor.reduce(x, axis=2).T)


@functools.lru_cache(maxsize=4)
def _pfn_words(nr_pages: int) -> NDArray[np.uint64]:
    """Column 0's words for every PFN of a table of ``nr_pages`` (read-only, shared)."""
    words = _mix(0, np.arange(nr_pages, dtype=np.int64))
    words.flags.writeable = False
    return words


def _table_hash(arrays: list[NDArray[np.generic]]) -> NDArray[np.uint64]:
    """:func:`_row_hash` of every row, mixing only the values that differ from a field's
    initial one: a booted table is mostly free pages, so priming a large one is cheap."""
    h = _pfn_words(int(arrays[0].shape[0])).copy()
    for i, (arr, init) in enumerate(zip(arrays, _INIT, strict=True)):
        common = _mix(i + 1, np.array([init], arr.dtype))[0]
        h ^= common
        rows = np.flatnonzero(arr != arr.dtype.type(init))
        if rows.size:
            h[rows] ^= common ^ _mix(i + 1, arr[rows])
    return h


def memmap_alloc(nr_pages: int) -> Memmap:
    """A table of `nr_pages` free struct pages (v6.1 mm/mm_init.c __init_single_page)."""
    return Memmap([np.full(nr_pages, v, t) for v, t in zip(_INIT, _DTYPES, strict=True)])


def memmap_copy(m: Memmap) -> Memmap:
    """An independent copy of the table."""
    return Memmap(m.arrays())


def memmap_digest_parts(m: Memmap) -> list[bytes]:
    """The table's bytes, field by field: the full, non-incremental reference digest."""
    return [a.tobytes() for a in m.arrays()]


class PageFlags:
    """Masks of one profile's page flags, looked up once (v6.1 include/linux/page-flags.h)."""

    __slots__ = ("_masks", "profile")

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        names = set(profile.pageflags) | set(profile.flag_aliases)
        self._masks = {n: 1 << profile.flag_bit(n) for n in names}

    def mask(self, name: str) -> int:
        """The bit mask of `name`; a flag this kernel lacks raises KeyError naming it."""
        try:
            return self._masks[name]
        except KeyError:
            raise KeyError(f"{name} does not exist in kernel {self.profile.name}") from None

    def names(self, value: int) -> list[str]:
        """Flag names set in `value`, in bit order (aliases not repeated)."""
        return [n for i, n in enumerate(self.profile.pageflags) if value >> i & 1]


def peek_head(m: Memmap, page: int) -> int:
    """compound_head() read only to name the footprint of the step that follows a yield.

    Not a read of the step that computes it (the checked mode does not record it): the
    step that follows must read the head again itself, and declare that read.
    """
    head = int(m.head.view(np.ndarray)[page])
    return page if head == NO_HEAD else head


def compound_head(m: Memmap, page: int) -> int:
    """The head page of `page` (v6.1 include/linux/page-flags.h _compound_head)."""
    head = int(m.head[page])
    return page if head == NO_HEAD else head


def folio_order(m: Memmap, folio: int) -> int:
    """Order of the folio headed by `folio` (v6.1 include/linux/mm.h folio_order: page[1])."""
    return int(m.order[folio + 1]) if m.head[folio] == NO_HEAD and _is_large(m, folio) else 0


def _is_large(m: Memmap, folio: int) -> bool:
    """Whether `folio` heads a compound page (its page[1] points back to it)."""
    return folio + 1 < m.nr_pages and int(m.head[folio + 1]) == folio


def folio_test_large(m: Memmap, folio: int) -> bool:
    """v6.1 include/linux/page-flags.h folio_test_large: head of a compound page."""
    return _is_large(m, folio)


def folio_nr_pages(m: Memmap, folio: int) -> int:
    """v6.1 include/linux/mm.h folio_nr_pages."""
    return 1 << folio_order(m, folio)
