"""Generator threads rebuilt from their position and live locals, instead of replayed.

:func:`pack` and :func:`unpack` copy a world and its threads' frames through pickle
(several times faster than ``copy.deepcopy``, and the snapshot's size is known);
functions, classes and modules are code, not state, and are kept by reference.

A suspended thread is a chain of frames (the thread body, and each generator it
delegates to by ``yield from``).  :func:`capture` records each frame as (function,
yield index, locals); :func:`rebuild` calls the resumable form of each function
(:mod:`resume_ast`) with those, innermost first, and gives back a generator that, on
its first ``next()``, arrives at the same yields and yields again what they yielded.
Functions are rewritten on first use and cached; one the rewrite refuses runs as it
is, and capturing a thread suspended in it raises :class:`NotResumable` with the reason.
"""

from __future__ import annotations

import ast
import inspect
import io
import pickle
import sys
import textwrap
import types
import weakref
from collections.abc import Generator
from typing import Any

from pinlab.explore.canon import Unfreezable
from pinlab.explore.resume_ast import AT, CONTROL, FUNC, RESUMABLE, RESUME, SEQ, rewrite
from pinlab.explore.resume_lift import Refused
from pinlab.inplace import INPLACE, InPlace

Frame = tuple[Any, int, dict[str, Any]]  # (function as called, yield index, locals)
Chain = tuple[Frame, ...]


class NotResumable(Unfreezable):
    """A thread the explorer can neither capture nor rebuild."""


_rewritten: weakref.WeakKeyDictionary[types.FunctionType, types.FunctionType] = (
    weakref.WeakKeyDictionary()
)
_codes: dict[types.CodeType, types.CodeType | str] = {}  # original -> rewritten, or why not
_kept: dict[types.CodeType, tuple[str, ...]] = {}  # rewritten -> the locals a frame keeps

Packed = tuple[bytes, list[Any]]
_CODE = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.ModuleType,
    type,
)


class _Delta:
    """An in-place object (:mod:`pinlab.inplace`) and its delta, in a snapshot's refs."""

    __slots__ = ("delta", "obj")

    def __init__(self, obj: InPlace) -> None:
        self.obj = obj
        self.delta = obj.take_delta()


class _Pickler(pickle.Pickler):
    def __init__(self, out: io.BytesIO, refs: list[Any]) -> None:
        super().__init__(out, pickle.HIGHEST_PROTOCOL)
        self.refs = refs

    def reducer_override(self, obj: Any) -> Any:
        """A NumPy view as a view of its base, which is pickled once and shared: a
        thread that keeps ``pages[off:]`` across a yield still writes into ``pages``."""
        np = sys.modules.get("numpy")
        if np is None or type(obj) is not np.ndarray or not isinstance(obj.base, np.ndarray):
            return NotImplemented
        base = obj.base
        offset = obj.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        return (_view, (base, obj.dtype, obj.shape, offset, obj.strides))

    def persistent_id(self, obj: Any) -> int | None:
        if isinstance(obj, _CODE):
            self.refs.append(obj)
            return len(self.refs) - 1
        if type(obj) in INPLACE:
            self.refs.append(_Delta(obj))
            return len(self.refs) - 1
        return None


def _view(base: Any, dtype: Any, shape: Any, offset: int, strides: Any) -> Any:
    """A view of ``base``, as :meth:`_Pickler.reducer_override` took it apart."""
    np = sys.modules["numpy"]
    return np.ndarray(shape, dtype, buffer=base, offset=offset, strides=strides)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, refs: list[Any]) -> None:
        super().__init__(io.BytesIO(data))
        self.refs = refs

    def persistent_load(self, pid: Any) -> Any:
        ref = self.refs[pid]
        if type(ref) is _Delta:
            ref.obj.put_delta(ref.delta)
            return ref.obj
        return ref


def pack(obj: Any) -> Packed:
    """``obj`` as bytes plus the code it refers to; raises what pickling raises.

    An in-place object is kept as itself and a delta: unpacking patches that very
    object back, so only the latest unpacked copy may be in use.
    """
    out, refs = io.BytesIO(), list[Any]()
    _Pickler(out, refs).dump(obj)
    return out.getvalue(), refs


def unpack(packed: Packed) -> Any:
    """A fresh copy of what :func:`pack` packed (in-place objects patched back)."""
    return _Unpickler(*packed).load()


def _seq(v: Any) -> Any:
    """What a ``for`` loop that yields indexes: sequences as they are, anything else copied."""
    return v if isinstance(v, list | tuple | range | str) else list(v)


def resumable(f: Any) -> Any:
    """The resumable form of generator function ``f`` (bound methods stay bound), else ``f``."""
    got = _rewritten.get(f) if type(f) is types.FunctionType else None
    if got is not None:
        return got
    if isinstance(f, types.MethodType):
        r = resumable(f.__func__)
        return f if r is f.__func__ else types.MethodType(r, f.__self__)
    if not isinstance(f, types.FunctionType):
        return f
    if not inspect.isgeneratorfunction(f):
        _rewritten[f] = f
        return f
    if got is None:
        code = _codes.get(f.__code__)
        if code is None:
            try:
                code = _rewrite(f)
            except (Refused, OSError, TypeError, SyntaxError) as err:
                code = str(err) or type(err).__name__
            _codes[f.__code__] = code
        got = f if isinstance(code, str) else _bind(f, code)
        _rewritten[f] = got
    return got


def _compile(f: types.FunctionType, fn: ast.FunctionDef, names: tuple[str, ...]) -> types.CodeType:
    """Compile the rewritten ``fn`` inside a factory that supplies the helpers and free names.

    Inside the factory the function is named ``_pl_fn``, so that a recursive call (its
    own name) still looks up the global, as the original does.
    """
    where = f.__code__.co_qualname
    params = [RESUMABLE, SEQ, *f.__code__.co_freevars]
    inner = rewrite(fn, where, names)
    inner.name = "_pl_fn"
    factory = ast.FunctionDef(
        name="_pl_factory",
        args=ast.arguments([], [ast.arg(p) for p in params], None, [], [], None, []),
        body=[inner, ast.Return(ast.Name("_pl_fn", ast.Load()))],
        decorator_list=[],
        returns=None,
        type_comment=None,
    )
    ast.copy_location(factory, fn)
    module = ast.fix_missing_locations(ast.Module([factory], []))
    code = compile(module, f.__code__.co_filename, "exec")
    outer = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    made = next(
        c for c in outer.co_consts if isinstance(c, types.CodeType) and c.co_name == "_pl_fn"
    )
    return made.replace(co_name=fn.name, co_qualname=where)


def _rewrite(f: types.FunctionType) -> types.CodeType:
    """The rewritten code of ``f``, compiled twice: the second time restores every local."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(f)))
    ast.increment_lineno(tree, f.__code__.co_firstlineno - 1)
    fn = tree.body[0]
    if not isinstance(fn, ast.FunctionDef) or fn.name != f.__name__:
        raise Refused(f"{f.__qualname__}: its source is not a plain def")
    code = _compile(f, fn, ())
    names = tuple(n for n in (*code.co_varnames, *code.co_cellvars) if n not in CONTROL)
    code = _compile(f, fn, names)
    _kept[code] = names
    return code


def _bind(f: types.FunctionType, code: types.CodeType) -> types.FunctionType:
    """The rewritten code as a function with ``f``'s globals, defaults and closure cells."""
    cells = dict(zip(f.__code__.co_freevars, f.__closure__ or (), strict=True))
    cells[RESUMABLE] = types.CellType(resumable)
    cells[SEQ] = types.CellType(_seq)
    closure = tuple(cells[n] for n in code.co_freevars)
    g = types.FunctionType(code, f.__globals__, f.__name__, f.__defaults__, closure)
    g.__kwdefaults__ = {**(f.__kwdefaults__ or {}), RESUME: None}
    g.__qualname__, g.__module__, g.__doc__ = f.__qualname__, f.__module__, f.__doc__
    return g


def capture(gen: Any, body: Any) -> Chain:
    """The frames of a suspended thread started as ``body(world)``."""
    out: list[Frame] = []
    f, g = body, gen
    while True:
        frame = g.gi_frame
        code = frame.f_code
        keep = _kept.get(code)
        if keep is None:
            why = _codes.get(code)
            if not isinstance(why, str):
                why = "it is not a generator function written in Python"
            raise NotResumable(f"cannot rebuild a thread in {code.co_qualname}: {why}")
        loc = frame.f_locals
        out.append((f, loc[AT], {n: loc[n] for n in keep if n in loc}))
        inner = g.gi_yieldfrom
        if inner is None:
            return tuple(out)
        f = loc[FUNC]
        if f is None or getattr(inner, "gi_frame", None) is None:
            raise NotResumable(
                f"cannot rebuild a thread in {code.co_qualname}:{frame.f_lineno}: "
                "it delegates by yield from to something other than a generator call"
            )
        g = inner


def rebuild(chain: Chain) -> Generator[Any, None, Any]:
    """A generator that arrives, on its first ``next()``, where ``chain`` was captured."""
    inner: tuple[Any, Generator[Any, None, Any]] | None = None
    gen: Generator[Any, None, Any] | None = None
    for f, k, loc in reversed(chain):
        r = resumable(f)
        base = getattr(r, "__func__", r)
        code, given = base.__code__, base.__kwdefaults__ or {}
        npos = code.co_argcount - len(base.__defaults__ or ())
        kwonly = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
        required = dict.fromkeys(n for n in kwonly if n not in given)
        # placeholders for the parameters: the prologue sets every local from ``loc``
        gen = base(*[None] * npos, **required, **{RESUME: (k, loc, inner)})
        inner = (f, gen)
    assert gen is not None
    return gen
