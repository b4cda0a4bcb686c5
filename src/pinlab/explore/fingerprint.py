"""A program's fingerprint: SHA-256 over a canonical encoding of everything it runs.

Functions are encoded by their code (bytecode, constants, names, nested code objects),
their closure cells, default arguments, and the globals they name that are plain data
or functions of their own, recursively; values by content with sets sorted, never by
``repr`` or ``hash()``, so that the fingerprint is the same in every process whatever
PYTHONHASHSEED is, and changes when a constant, a closure value or a helper does.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import hashlib
import json
import sys
import types
from typing import Any

from pinlab.explore.program import MachineProgram, Program
from pinlab.memo import Memo

Json = Any


class _Encoder:
    """Encodes values and code into JSON-able data, each object once (cycles are named)."""

    def __init__(self) -> None:
        self._done: dict[int, int] = {}
        self._keep: list[object] = []  # keeps ids valid while encoding

    def value(self, v: object) -> Json:
        if v is None or isinstance(v, bool | int | str):
            return v
        if isinstance(v, float):
            return ["float", v.hex()]
        if isinstance(v, bytes):
            return ["bytes", v.hex()]
        if isinstance(v, enum.Enum):
            return ["enum", self._name(type(v)), v.name]
        if isinstance(v, types.CodeType):
            return self.code(v)
        if isinstance(v, types.ModuleType):
            return ["module", v.__name__]
        # immutable containers are not numbered: a set's iteration order (which depends
        # on PYTHONHASHSEED) would otherwise decide the numbers
        if isinstance(v, tuple):
            fields = getattr(v, "_fields", None)
            head = ["tuple", self._name(type(v)), list(fields)] if fields else ["tuple"]
            return [*head, [self.value(x) for x in v]]
        if isinstance(v, frozenset):
            return ["set", sorted((self.value(x) for x in v), key=_dump)]
        ref = id(v)
        if ref in self._done:
            return ["ref", self._done[ref]]
        self._done[ref] = len(self._done)
        self._keep.append(v)
        if isinstance(v, type):
            return self.cls(v)
        if isinstance(v, types.FunctionType):
            return self.function(v)
        if isinstance(v, types.MethodType):
            return ["method", self.value(v.__self__), self.value(v.__func__)]
        if isinstance(v, Memo):
            return ["memo"]  # a cache: its contents depend on what ran before
        if isinstance(v, list):
            return ["list", [self.value(x) for x in v]]
        if isinstance(v, set):
            return ["set", sorted((self.value(x) for x in v), key=_dump)]
        if isinstance(v, dict):
            items = [[self.value(k), self.value(x)] for k, x in v.items()]
            return ["dict", sorted(items, key=_dump)]
        if dataclasses.is_dataclass(v):
            return [
                "dataclass",
                self._name(type(v)),
                [[f.name, self.value(getattr(v, f.name))] for f in dataclasses.fields(v)],
            ]
        np = sys.modules.get("numpy")
        if np is not None and isinstance(v, np.ndarray):
            return ["ndarray", v.dtype.str, list(v.shape), hashlib.sha256(v.tobytes()).hexdigest()]
        if callable(v) and hasattr(v, "__qualname__"):
            return ["callable", self._name(v)]
        # an object without a value form: its type and its attributes, if it has a dict
        attrs = getattr(v, "__dict__", None)
        state = self.value(attrs) if isinstance(attrs, dict) else None
        return ["object", self._name(type(v)), state]

    def function(self, fn: types.FunctionType) -> Json:
        closure = [
            self.value(c.cell_contents) if _filled(c) else None for c in fn.__closure__ or ()
        ]
        named = {}
        for name in _global_names(fn.__code__):
            if name in fn.__globals__:
                g = fn.__globals__[name]
                if not isinstance(g, types.ModuleType) and not _is_external(g):
                    named[name] = self.value(g)
            elif not hasattr(builtins, name):
                named[name] = "<unbound>"
        return [
            "function",
            self._name(fn),
            self.code(fn.__code__),
            closure,
            self.value(fn.__defaults__),
            self.value(fn.__kwdefaults__),
            sorted(named.items()),
        ]

    def cls(self, cls: type) -> Json:
        """A class by name; the program's own classes also by the functions they define."""
        if _is_external(cls) or cls.__module__ == "builtins":
            return ["type", self._name(cls)]
        own = [
            [name, self.value(f)]
            for name, f in sorted(vars(cls).items())
            if isinstance(f, types.FunctionType) and f.__module__ == cls.__module__
        ]
        return ["class", self._name(cls), own]

    def code(self, code: types.CodeType) -> Json:
        return [
            "code",
            code.co_qualname,
            code.co_code.hex(),
            [self.value(c) for c in code.co_consts],
            list(code.co_names),
            list(code.co_varnames),
            list(code.co_freevars),
        ]

    @staticmethod
    def _name(obj: object) -> str:
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _global_names(code: types.CodeType) -> list[str]:
    """The global names a code object and the code nested in it refer to."""
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names.update(_global_names(c))
    return sorted(names)


def _is_external(obj: object) -> bool:
    """Library code (not pinlab's, not the program's): named, not followed."""
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or not callable(obj):
        return False
    top = module.partition(".")[0]
    return top in sys.stdlib_module_names or top in ("numpy", "click", "rich", "typing")


def _dump(x: Json) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


def describe(program: Program) -> Json:
    """The canonical encoding of a program (without its renderer, which only presents)."""
    enc = _Encoder()
    desc: dict[str, Json] = {
        "kind": type(program).__name__,
        "name": program.name,
        "params": [[k, enc.value(v)] for k, v in program.params],
        "invariants": [
            [i.name, enc.value(i.check), enc.value(i.reads)] for i in program.invariants
        ],
        "finals": [[f.name, enc.value(f.check)] for f in program.finals],
        "symmetric": [list(g) for g in program.symmetric],
    }
    if isinstance(program, MachineProgram):
        desc["shared"] = enc.value(program.shared)
        desc["threads"] = [enc.value(m) for m in program.threads]
    else:
        desc["make_world"] = enc.value(program.make_world)
        desc["world_key"] = enc.value(program.world_key)
        desc["threads"] = [
            [t.name, enc.value(t.body), enc.value(t.reads), enc.value(t.writes)]
            for t in program.threads
        ]
    return desc


def fingerprint(program: Program) -> str:
    """Eight hex digits identifying the program: code, constants, closures, parameters."""
    return hashlib.sha256(_dump(describe(program)).encode()).hexdigest()[:8]
