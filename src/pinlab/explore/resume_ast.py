"""Rewriting a generator function's syntax tree so that it can be rebuilt at any yield.

After lifting (:mod:`resume_lift`: every yield is a statement of its own), *skipping*
numbers the yield statements and guards every statement on a path to one, so that a
call with ``_pl_resume=(k, locals, inner)`` restores the locals, passes over
everything before yield ``k`` without running it and suspends at yield ``k`` again:
loops are entered without testing their condition, ``if`` takes the branch holding
``k``, and a ``for`` loop whose body yields runs by index over a sequence (as Python's
list iterator does), so that its position is a local too.  A plain yield's value is
evaluated again on arrival and must be free of side effects; a ``yield from`` takes
over the rebuilt inner generator instead of calling its function again.

Refused (by lifting), since re-entering them would redo what they did on entry or lose
what they caught: a yield inside ``with``, ``except``, ``finally`` or ``match``, in a
chained comparison, in an augmented assignment to anything but a name, in the
condition of a ``while`` loop with an ``else``, or in the header of a nested definition.
"""

from __future__ import annotations

import ast
import copy

from pinlab.explore.resume_lift import Lift, assign, locate, negate, scope, var, yield_of

K = "_pl_k"  # the index of the yield being resumed, 0 when running normally
AT = "_pl_at"  # the index of the yield the frame last reached
RESUME = "_pl_resume"
LOCALS = "_pl_L"
INNER = "_pl_inner"
FUNC = "_pl_f"  # the function a suspended ``yield from`` called
GEN = "_pl_g"
RESUMABLE = "_pl_resumable"
SEQ = "_pl_seq"
CONTROL = frozenset({K, AT, RESUME, LOCALS, INNER, FUNC, GEN, RESUMABLE, SEQ})


class _Skip:
    """The skipping pass over a lifted body."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}
        self.loops = 0

    def number(self, stmts: list[ast.stmt]) -> None:
        """Index the yield statements from 1."""
        for s in stmts:
            for n in scope(s):
                if isinstance(n, ast.stmt) and yield_of(n) is not None:
                    self.index.setdefault(id(n), len(self.index) + 1)

    def ys(self, *stmts: ast.stmt) -> tuple[int, ...]:
        """The indices of the yields among ``stmts``."""
        return tuple(
            sorted(self.index[id(n)] for s in stmts for n in scope(s) if id(n) in self.index)
        )

    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        """``stmts`` guarded: what holds no yield runs only when not resuming."""
        out: list[ast.stmt] = []
        plain: list[ast.stmt] = []
        for s in stmts:
            ys = self.ys(s)
            if not ys:
                plain.append(s)
                continue
            if plain:
                out += locate([ast.If(negate(var(K)), plain, [])], plain[0])
                plain = []
            guard = ast.BoolOp(ast.Or(), [negate(var(K)), _member(ys)])
            out += locate([ast.If(guard, self.core(s, ys), [])], s)
        if plain:
            out += locate([ast.If(negate(var(K)), plain, [])], plain[0])
        return out

    def core(self, s: ast.stmt, ys: tuple[int, ...]) -> list[ast.stmt]:
        """Statement ``s``, holding yields ``ys``, made to resume at any of them."""
        y = yield_of(s)
        if isinstance(y, ast.Yield):
            return [*locate([assign(AT, ast.Constant(ys[0])), assign(K, ast.Constant(0))], s), s]
        if isinstance(y, ast.YieldFrom):
            return self.delegate(s, y, ys[0])
        if isinstance(s, ast.If):
            test = ast.IfExp(var(K), _member(self.ys(*s.body)), s.test)
            return [ast.If(test, self.block(s.body), self.block(s.orelse))]
        if isinstance(s, ast.While):
            test = ast.IfExp(var(K), _member(self.ys(*s.body)), s.test)
            return [ast.While(test, self.block(s.body), self.block(s.orelse))]
        if isinstance(s, ast.For):
            return self.loop(s)
        if isinstance(s, ast.Try):
            return [ast.Try(self.block(s.body), s.handlers, self.block(s.orelse), s.finalbody)]
        raise AssertionError(f"unlifted yield in {type(s).__name__}")

    def delegate(self, s: ast.stmt, y: ast.YieldFrom, k: int) -> list[ast.stmt]:
        """``yield from f(args)``: call through the resumable ``f``, or take the rebuilt one."""
        call = y.value
        if isinstance(call, ast.Call):
            start: list[ast.stmt] = [
                assign(FUNC, call.func),
                assign(
                    GEN,
                    ast.Call(ast.Call(var(RESUMABLE), [var(FUNC)], []), call.args, call.keywords),
                ),
            ]
        else:
            start = [assign(FUNC, ast.Constant(None)), assign(GEN, call)]
        rebuilt = ast.Assign(
            [ast.Tuple([var(FUNC, store=True), var(GEN, store=True)], ast.Store())],
            var(INNER),
        )
        head = [
            assign(AT, ast.Constant(k)),
            ast.If(
                var(K),
                [assign(K, ast.Constant(0)), rebuilt, assign(INNER, ast.Constant(None))],
                start,
            ),
        ]
        new = copy.copy(s)
        new.value = ast.YieldFrom(var(GEN))  # type: ignore[attr-defined]
        tail = ast.Assign([var(FUNC, store=True), var(GEN, store=True)], ast.Constant(None))
        return [*locate(head, s), new, *locate([tail], s)]

    def loop(self, s: ast.For) -> list[ast.stmt]:
        """A ``for`` loop whose body yields, by index over a sequence."""
        n = self.loops
        self.loops += 1
        seq, idx = f"_pl_s{n}", f"_pl_i{n}"
        init = ast.If(
            negate(var(K)),
            [
                assign(seq, ast.Call(var(SEQ), [s.iter], [])),
                assign(idx, ast.Constant(0)),
            ],
            [],
        )
        more = ast.Compare(var(idx), [ast.Lt()], [ast.Call(var("len"), [var(seq)], [])])
        test = ast.IfExp(var(K), _member(self.ys(*s.body)), more)
        take = ast.If(
            negate(var(K)),
            [
                ast.Assign([s.target], ast.Subscript(var(seq), var(idx), ast.Load())),
                ast.AugAssign(var(idx, store=True), ast.Add(), ast.Constant(1)),
            ],
            [],
        )
        body = locate([take], s) + self.block(s.body)
        return [*locate([init], s), ast.While(test, body, self.block(s.orelse))]


def _member(ys: tuple[int, ...]) -> ast.expr:
    """``_pl_k`` is one of ``ys``."""
    if not ys:
        return ast.Constant(False)
    if len(ys) == 1:
        return ast.Compare(var(K), [ast.Eq()], [ast.Constant(ys[0])])
    # compile() takes frozenset constants (it folds ``in {...}`` into one itself)
    return ast.Compare(var(K), [ast.In()], [ast.Constant(frozenset(ys))])  # type: ignore[arg-type]


def rewrite(fn: ast.FunctionDef, where: str, local_names: tuple[str, ...]) -> ast.FunctionDef:
    """The resumable form of generator ``fn``; ``local_names`` are restored on resumption."""
    lifted = Lift(where).block(fn.body)
    skip = _Skip()
    skip.number(lifted)
    body = skip.block(lifted)
    restore: list[ast.stmt] = [
        ast.Assign(
            [ast.Tuple([var(n, store=True) for n in (K, LOCALS, INNER)], ast.Store())],
            var(RESUME),
        ),
        assign(RESUME, ast.Constant(None)),
    ]
    for n in local_names:
        got = ast.Subscript(var(LOCALS), ast.Constant(n), ast.Load())
        present = ast.Compare(ast.Constant(n), [ast.In()], [var(LOCALS)])
        restore.append(ast.If(present, [assign(n, got)], []))
    restore.append(assign(LOCALS, ast.Constant(None)))
    prologue = ast.If(
        ast.Compare(var(RESUME), [ast.Is()], [ast.Constant(None)]),
        [assign(K, ast.Constant(0))],
        restore,
    )
    args = copy.copy(fn.args)
    args.kwonlyargs = [*fn.args.kwonlyargs, ast.arg(RESUME)]
    args.kw_defaults = [*fn.args.kw_defaults, ast.Constant(None)]
    new = copy.copy(fn)
    new.args, new.body, new.decorator_list = args, locate([prologue], fn) + body, []
    return ast.fix_missing_locations(new)
