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
import types
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np

from pinlab.kernel.mm.memmap import Memmap, memmap_digest_parts

ROLE = "role"
_SCALARS = frozenset({int, str, bool, float, bytes, type(None)})
_FIELDS: dict[type, tuple[str, ...]] = {}
_ROLES: dict[type, dict[str, str]] = {}


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


def canon(v: Any, full: bool = False) -> Hashable:
    """``v`` as nested tuples, equal exactly when the contents are equal.

    The frame table contributes its incremental digest, or with ``full`` the bytes of
    every field (the independent reference).
    """
    t = type(v)
    if t in _SCALARS:
        return v  # type: ignore[no-any-return]
    f = _CANON.get(t)
    if f is not None:
        return f(v, full)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _dataclass(v, full)
    if isinstance(v, enum.Enum):
        return (t.__qualname__, v.name)
    if isinstance(v, tuple):
        return _tuple(v, full)
    if isinstance(v, types.FunctionType | types.MethodType):
        return code_key(v, "a function")
    raise StateError(f"a {t.__qualname__} has no plain-data form")


def _tuple(v: tuple[Any, ...], full: bool) -> Hashable:
    out: list[Hashable] = []
    for i, x in enumerate(v):
        t = type(x)
        if t in _SCALARS:
            out.append(x)
        elif t is set:
            out.append(_set(x, full))
        else:
            out.append(_at(f"[{i}]", x, full))
    return tuple(out)


def _list(v: list[Any], full: bool) -> Hashable:
    return ("L", _tuple(tuple(v), full))


def _dict(v: dict[Any, Any], full: bool) -> Hashable:
    items = [(k, x if type(x) in _SCALARS else _at(f"[{k!r}]", x, full)) for k, x in v.items()]
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
    items = [x if type(x) in _SCALARS else _at("{}", x, full) for x in v]
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
    return (
        t.__qualname__,
        tuple(
            x if type(x) in _SCALARS else _at(f".{n}", x, full)
            for n in fields_of(t)
            for x in (getattr(v, n),)
        ),
    )


def _at(where: str, v: Any, full: bool) -> Hashable:
    """:func:`canon`, an error gaining ``where`` on its way out."""
    try:
        return canon(v, full)
    except StateError as err:
        raise StateError(f"{where}{err}" if str(err)[:1] in ".[{" else f"{where}: {err}") from None


_CANON: dict[type, Callable[[Any, bool], Hashable]] = {
    list: _list,
    dict: _dict,
    set: _set,
    frozenset: _set,
    np.ndarray: _array,
    Memmap: _memmap,
}


def state_parts(k: Any, full: bool = False) -> Iterator[tuple[str, Hashable]]:
    """Each field of the state and its canonical form, by its role."""
    for name, role in roles(type(k)).items():
        v = getattr(k, name)
        if role == "state":
            yield name, _at(name, v, full)
        elif role == "config":
            yield name, v.name
        elif role == "code":
            yield name, tuple(code_key(getattr(v, n), f"{name}.{n}") for n in fields_of(type(v)))


def state_digest(k: Any, full: bool = False) -> bytes:
    """A stable digest of the whole state (the same in every process)."""
    # marshal's version 0 writes no back-references, so equal values give equal bytes
    parts: Any = tuple(state_parts(k, full))
    return hashlib.blake2b(marshal.dumps(parts, 0), digest_size=16).digest()


def state_refs(k: Any) -> dict[int, Hashable]:
    """Each object of the state (dataclasses and containers) by identity: its path."""
    refs: dict[int, Hashable] = {id(k): ()}
    for name, role in roles(type(k)).items():
        if role == "state":
            _refs(getattr(k, name), (name,), refs)
    return refs


def _refs(v: Any, path: tuple[Hashable, ...], refs: dict[int, Hashable]) -> None:
    refs[id(v)] = path
    t = type(v)
    if t is dict:
        items: Any = v.items()
    elif t is list:
        items = enumerate(v)
    elif t is Memmap or t is set or t is np.ndarray:
        return
    elif dataclasses.is_dataclass(v):
        items = ((n, getattr(v, n)) for n in fields_of(t))
    else:
        return
    for key, x in items:
        tx = type(x)
        if tx in _SCALARS:
            if t is not Memmap and not dataclasses.is_dataclass(v):
                return  # a container of scalars holds nothing to refer to
            continue
        if tx is set or tx is np.ndarray:
            refs[id(x)] = (*path, key)
        else:
            _refs(x, (*path, key), refs)
