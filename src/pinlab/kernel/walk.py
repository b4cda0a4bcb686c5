"""The kernel state walked by its one definition: digests, identity keys, refusals.

Every field of :class:`pinlab.kernel.state.Kernel` is state unless its metadata says
otherwise (``ROLE``): ``config`` (digested by its name: the profile), ``derived``
(recomputed from config: the flag masks), ``code`` (functions kept by reference and
digested by qualified name: the design hooks) or ``mode`` (how the harness runs the
kernel, not what it holds: fine-grained steps).  A value inside the state is plain
data — scalars, enums, tuples, lists, dicts, sets, NumPy arrays, slotted dataclasses
of plain data — or the frame table, which keeps its own incremental digest.  Anything
else (a closure, a lambda, a bound method, an arbitrary object) is refused with a
:class:`StateError` naming where it was found, because state kept there would be
neither copied nor hashed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import marshal
import pickle
import types
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import numpy as np

from pinlab.kernel.mm.memmap import Memmap, memmap_digest_parts
from pinlab.memo import Memo

ROLE = "role"
_SCALARS = frozenset({int, str, bool, float, bytes, type(None)})
_FIELDS: Memo[type, tuple[str, ...]] = Memo()
_ROLES: Memo[type, dict[str, str]] = Memo()


class StateError(TypeError):
    """A value in the kernel state that is not plain data; the message names where."""


def fields_of(t: type) -> tuple[str, ...]:
    """The field names of dataclass type ``t``, looked up once."""
    names = _FIELDS.get(t)
    if names is None:
        names = _FIELDS[t] = tuple(f.name for f in dataclasses.fields(t))
    return names


def roles(t: type) -> dict[str, str]:
    """Each field of the state's top-level dataclass and its role (``state`` by default)."""
    got = _ROLES.get(t)
    if got is None:
        got = _ROLES[t] = {f.name: f.metadata.get(ROLE, "state") for f in dataclasses.fields(t)}
    return got


def code_key(fn: object, where: str) -> Hashable:
    """A module-level function as its qualified name; a closure or method is refused."""
    if fn is None:
        return None
    if isinstance(fn, types.MethodType):
        raise StateError(f"{where}: {fn.__qualname__} is a bound method: its object is state")
    if not isinstance(fn, types.FunctionType):
        raise StateError(f"{where}: a {type(fn).__qualname__} is not a module-level function")
    if fn.__closure__ or "<" in fn.__qualname__:
        cells = ", ".join(fn.__code__.co_freevars) or "its defaults"
        raise StateError(
            f"{where}: {fn.__module__}.{fn.__qualname__} keeps state in a closure ({cells}); "
            "keep it in the kernel state"
        )
    return (fn.__module__, fn.__qualname__)


def canon(v: Any, full: bool) -> Hashable:
    """``v`` as nested tuples, equal exactly when the contents are equal.

    The frame table contributes its incremental digest, or with ``full`` the bytes of
    every field (the independent reference).
    """
    t = type(v)
    if t in _SCALARS:
        return v  # type: ignore[no-any-return]
    f = _CANON.get(t) or _FOUND.get(t)
    if f is None:
        f = _canon_of(t)
    return f(v, full)


def _canon_of(t: type) -> Callable[[Any, bool], Hashable]:
    """How to canonicalise values of type ``t``, found once per type."""
    f: Callable[[Any, bool], Hashable]
    if dataclasses.is_dataclass(t):
        f = _dataclass
    elif issubclass(t, enum.Enum):
        f = _enum
    elif issubclass(t, tuple):
        f = _tuple
    elif issubclass(t, types.FunctionType | types.MethodType):
        f = _function
    else:
        raise StateError(f"a {t.__qualname__} has no plain-data form")
    _FOUND[t] = f
    return f


def _enum(v: enum.Enum, full: bool) -> Hashable:
    return (type(v).__qualname__, v.name)


def _function(v: Any, full: bool) -> Hashable:
    return code_key(v, "a function")


def _items(v: Any, pairs: Any, full: bool) -> list[Hashable]:
    """The canonical forms of the ``(key, value)`` pairs' values; ``v`` holds them."""
    out: list[Hashable] = []
    for key, x in pairs:
        t = type(x)
        if t in _SCALARS:
            out.append(x)
            continue
        f = _CANON.get(t) or _FOUND.get(t)
        try:
            out.append((f or _canon_of(t))(x, full))
        except StateError as err:
            where = f".{key}" if type(v) not in _CONTAINERS else f"[{key!r}]"
            msg = str(err)
            raise StateError(f"{where}{msg}" if msg[:1] in ".[" else f"{where}: {msg}") from None
    return out


def _tuple(v: tuple[Any, ...], full: bool) -> Hashable:
    return tuple(_items(v, enumerate(v), full))


def _list(v: list[Any], full: bool) -> Hashable:
    return ("L", tuple(_items(v, enumerate(v), full)))


def _dict(v: dict[Any, Any], full: bool) -> Hashable:
    items = list(zip(v, _items(v, v.items(), full), strict=True))
    try:
        items.sort()
    except TypeError:
        items.sort(key=repr)
    return ("D", tuple(items))


def _set(v: set[Any] | frozenset[Any], full: bool) -> Hashable:
    if all(type(x) in _SCALARS for x in v):
        try:
            return ("S", tuple(sorted(v)))
        except TypeError:
            pass
    items: list[Any] = _items(v, ((None, x) for x in v), full)
    try:
        items.sort()
    except TypeError:
        items.sort(key=repr)
    return ("S", tuple(items))


def _array(v: np.ndarray[Any, Any], full: bool) -> Hashable:
    return (v.dtype.str, v.shape, v.tobytes())


def _memmap(v: Memmap, full: bool) -> Hashable:
    if full:
        return ("memmap", tuple(memmap_digest_parts(v)))
    return ("memmap", v.digest())


def _dataclass(v: Any, full: bool) -> Hashable:
    t = type(v)
    return (t.__qualname__, tuple(_items(v, ((n, getattr(v, n)) for n in fields_of(t)), full)))


_CONTAINERS = (list, tuple, dict, set, frozenset)
_CANON: dict[type, Callable[[Any, bool], Hashable]] = {
    tuple: _tuple,
    list: _list,
    dict: _dict,
    set: _set,
    frozenset: _set,
    np.ndarray: _array,
    Memmap: _memmap,
}
# the types met since, by _canon_of
_FOUND: Memo[type, Callable[[Any, bool], Hashable]] = Memo()


def state_parts(k: Any, full: bool) -> Iterator[tuple[str, Hashable]]:
    """Each field of the state and its canonical form, by its role."""
    state = [(name, getattr(k, name)) for name, role in roles(type(k)).items() if role == "state"]
    if full:
        yield from zip((n for n, _ in state), _items(k, state, full), strict=True)
    else:
        for name, v in state:
            yield name, _remembered(name, v, full)
    for name, role in roles(type(k)).items():
        v = getattr(k, name)
        if role == "config":
            yield name, v.name
        elif role == "code":
            yield name, tuple(code_key(getattr(v, n), f"{name}.{n}") for n in fields_of(type(v)))


# pickled field -> its canonical form: most steps change few fields, and pickling (in C)
# costs a fraction of walking; equal bytes are equal values, so this is exact, and a
# field pickled in another order is walked again, to the same canonical form
_REMEMBERED: Memo[bytes, Hashable] = Memo()
_REMEMBER_AT_MOST = 1 << 14


def _remembered(name: str, v: Any, full: bool) -> Hashable:
    if type(v) in _SCALARS:
        return v  # type: ignore[no-any-return]
    if type(v) is Memmap:
        return _memmap(v, full)
    try:
        raw = pickle.dumps(v, pickle.HIGHEST_PROTOCOL)
    except Exception:  # not plain data: the walk says where
        raw = b""
    got = _REMEMBERED.get(raw) if raw else None
    if got is None:
        got = _items(_Field(name), [(name, v)], full)[0]
        if raw:
            if len(_REMEMBERED) >= _REMEMBER_AT_MOST:
                _REMEMBERED.clear()
            _REMEMBERED[raw] = got
    return got


class _Field:
    """Stands for the kernel as a field's container, so that errors name the field."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def state_digest(k: Any, full: bool = False) -> bytes:
    """A stable digest of the whole state (the same in every process)."""
    return _digest(k, full)


def _digest(k: Any, full: bool) -> bytes:
    # marshal's version 0 writes no back-references, so equal values give equal bytes
    parts: Any = tuple(state_parts(k, full))
    return hashlib.blake2b(marshal.dumps(parts, 0), digest_size=16).digest()


class Refs(Mapping[int, Hashable]):
    """The state's objects by identity: the path to each, rebuilt on demand from where
    one walk of the state met it, the walk made at the first look-up of an object other
    than the root (a thread's locals name few objects, often none)."""

    def __init__(self, k: Any) -> None:
        self._k = k
        self._root = id(k)
        self._parents: dict[int, tuple[int, Hashable]] | None = None
        self._paths: dict[int, Hashable] = {self._root: ()}

    def _walked(self) -> dict[int, tuple[int, Hashable]]:
        if self._parents is None:
            parents: dict[int, tuple[int, Hashable]] = {}
            k = self._k
            for name, role in roles(type(k)).items():
                if role == "state":
                    _meet(k, name, getattr(k, name), parents)
            self._parents = parents
        return self._parents

    def get(self, key: int, default: Any = None) -> Any:
        got = self._paths.get(key)
        if got is not None:
            return got
        step = self._walked().get(key)
        if step is None:
            return default
        up = self.get(step[0])
        if up is None:
            return default
        path = self._paths[key] = (*up, step[1])
        return path

    def __getitem__(self, key: int) -> Hashable:
        got = self.get(key)
        if got is None:
            raise KeyError(key)
        return got  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[int]:
        return iter((self._root, *self._walked()))

    def __len__(self) -> int:
        return 1 + len(self._walked())


def _meet(holder: Any, key: Hashable, v: Any, parents: dict[int, tuple[int, Hashable]]) -> None:
    """Note where ``v`` (held by ``holder`` under ``key``) is, and the objects within it."""
    t = type(v)
    if t in _SCALARS or t is set or t is frozenset:
        return  # a set of the state is not a thing a kernel thread keeps a pointer to
    parents[id(v)] = (id(holder), key)
    if t is dict:
        items: Any = v.items()
    elif t is list or t is tuple:
        items = enumerate(v)
    elif t in _FIELDS or dataclasses.is_dataclass(t):
        items = ((n, getattr(v, n)) for n in fields_of(t))
    else:
        return  # arrays, the frame table and enums hold nothing to refer to
    for key2, x in items:
        tx = type(x)
        if tx not in _SCALARS and tx is not set:
            _meet(v, key2, x, parents)


def state_refs(k: Any) -> Refs:
    """Each object of the state (dataclasses and containers) by identity: its path."""
    return Refs(k)
