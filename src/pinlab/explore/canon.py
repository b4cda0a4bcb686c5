"""Values by content: freezing locals into state keys, and a total order to sort them by.

Both must not depend on ``PYTHONHASHSEED`` or on object identity, so sets are sorted
by :func:`order_key` and mutable containers are copied into tagged tuples.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from pinlab.memo import Memo

# object identity -> its key in the world (the world itself included): what a local
# referring into the world is frozen as, instead of a copy of the object
Refs = Mapping[int, Hashable]

_SCALARS = (int, str, bytes, float, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)


class Kind(enum.Enum):
    """Tags of frozen containers: unlike strings, no user tuple can hold one by accident."""

    LIST = "list"
    SET = "set"
    DICT = "dict"
    NDARRAY = "ndarray"
    DATACLASS = "dataclass"
    NAMEDTUPLE = "namedtuple"
    ENUM = "enum"
    RANGE = "range"
    CODE = "code"
    REF = "ref"
    OPAQUE = "opaque"


_BY_VALUE = frozenset({tuple, frozenset, set, types.FunctionType, types.BuiltinFunctionType})


_FIELD_NAMES: Memo[type, tuple[str, ...]] = Memo()


def _field_names(t: type) -> tuple[str, ...]:
    """A dataclass type's field names, in order (looked up once per type)."""
    got = _FIELD_NAMES.get(t)
    if got is None:
        got = _FIELD_NAMES[t] = tuple(f.name for f in dataclasses.fields(t))
    return got


class Unfreezable(TypeError):
    """A value the state cache cannot capture by content."""


def order_key(v: object) -> str:
    """A total order on frozen values (Python's ``<`` is partial on sets, and mixes types badly)."""
    if isinstance(v, frozenset):
        return "{" + ",".join(sorted(order_key(x) for x in v)) + "}"
    if isinstance(v, tuple):
        return "(" + ",".join(order_key(x) for x in v) + ")"
    return f"{type(v).__name__}:{v!r}"


def freeze(v: object, refs: Refs | None = None) -> Hashable:
    """``v`` as a hashable value equal exactly when the contents are equal.

    An object of the world (``refs``: identity to key, the world itself included, all
    covered by ``world_key``) becomes a reference by its key.  Lists, dicts, sets,
    ranges, NumPy arrays and plain dataclasses are copied by value (tagged with their
    type); module-level functions and classes stand for their qualified name, being
    code, not state; a closure also stands for what it captured, frozen likewise.
    Anything else (a module, a bound method, an arbitrary object) raises
    :class:`Unfreezable` naming where it was found.
    """
    if type(v) in _SCALAR_TYPES:
        return v
    return _freeze(v, refs or {}, frozenset())


def _freeze(v: object, refs: Refs, active: frozenset[int]) -> Hashable:
    t = type(v)
    if t in _SCALAR_TYPES or isinstance(v, _SCALARS):
        return v
    if t is tuple and all(type(x) in _SCALAR_TYPES for x in v):  # type: ignore[attr-defined]
        return v
    # immutable values behave alike wherever they are held: no reference to look up
    # (a tuple's items still are), and neither code nor sets are kept by the world's walk
    if t not in _BY_VALUE:
        ref = refs.get(id(v))
        if ref is not None:
            return (Kind.REF, ref)
    if id(v) in active:
        raise Unfreezable(" is cyclic")
    active = active | {id(v)}
    if isinstance(v, enum.Enum):
        return (Kind.ENUM, t.__qualname__, v.name)
    if t is range:
        return (Kind.RANGE, v.start, v.stop, v.step)  # type: ignore[attr-defined]
    if isinstance(v, tuple):
        items = _each(enumerate(v), refs, active)
        return items if t is tuple else (Kind.NAMEDTUPLE, t.__qualname__, items)
    if isinstance(v, list):
        return (Kind.LIST, _each(enumerate(v), refs, active))
    if isinstance(v, frozenset | set):
        members = sorted(_each(((None, x) for x in v), refs, active), key=order_key)
        return (Kind.SET, tuple(members))
    if isinstance(v, dict):
        keys = _each(((None, k) for k in v), refs, active)
        values = _each(v.items(), refs, active)
        return (Kind.DICT, tuple(sorted(zip(keys, values, strict=True), key=order_key)))
    np = sys.modules.get("numpy")  # no array can exist unless NumPy was imported
    if np is not None and isinstance(v, np.ndarray):
        return (Kind.NDARRAY, v.dtype.str, v.shape, v.tobytes())
    if np is not None and isinstance(v, np.generic):
        return freeze(v.item())
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        pairs = ((f".{name}", getattr(v, name)) for name in _field_names(t))
        return (Kind.DATACLASS, t.__qualname__, _each(pairs, refs, active))
    if isinstance(v, types.FunctionType) and v.__closure__:
        # what a closure captured is state: frozen with it (the world by reference)
        cells = (
            (f".{n}", c.cell_contents)
            for n, c in zip(v.__code__.co_freevars, v.__closure__, strict=True)
        )
        return (Kind.CODE, v.__module__, v.__qualname__, _each(cells, refs, active))
    if isinstance(v, types.FunctionType | types.BuiltinFunctionType | type):
        return (Kind.CODE, getattr(v, "__module__", "?"), getattr(v, "__qualname__", "?"))
    if isinstance(v, types.MethodType | types.ModuleType):
        raise Unfreezable(f" holds a {t.__qualname__}: name a module-level function instead")
    raise Unfreezable(f" holds a {t.__qualname__}, which has no value form")


def _each(
    items: Iterable[tuple[object, object]], refs: Refs, active: frozenset[int]
) -> tuple[Hashable, ...]:
    """Freeze the values of (where, value) pairs; an error gains ``where`` on its way out."""
    out = []
    for where, x in items:
        try:
            out.append(x if type(x) in _SCALAR_TYPES else _freeze(x, refs, active))
        except Unfreezable as err:
            step = where if isinstance(where, str) else "" if where is None else f"[{where!r}]"
            raise Unfreezable(f"{step}{err}") from None
    return tuple(out)


def frame_locals(
    f_locals: dict[str, Any],
    refs: Refs,
    strict: bool = True,
    memo: dict[int, Hashable] | None = None,
) -> tuple[Hashable, ...]:
    """A frame's locals frozen and sorted by name; an error names the local.

    ``refs`` keys the world's objects (see :func:`freeze`).  Not ``strict`` (no state
    cache: keys only count distinct states), a local that cannot be frozen stands for
    its type.  ``memo`` (object id to frozen value) lets the frames of one state share
    the work for an object several of them hold; it must not outlive the state.
    """
    out: list[Hashable] = []
    for name in sorted(f_locals):
        v = f_locals[name]
        if type(v) in _SCALAR_TYPES:
            out.append((name, v))
            continue
        if memo is not None and id(v) in memo:
            out.append((name, memo[id(v)]))
            continue
        try:
            frozen = _freeze(v, refs, frozenset())
        except Unfreezable as err:
            if not strict:
                out.append((name, (Kind.OPAQUE, type(v).__qualname__)))
                continue
            raise Unfreezable(f"{name}{err}") from None
        if memo is not None:
            memo[id(v)] = frozen
        out.append((name, frozen))
    return tuple(out)
