"""Lifting: every ``yield`` of a generator function's syntax tree into a statement of its own.

Afterwards a yield appears only as ``[target (op)=] yield[ from] value`` with a
yield-free ``value``; whatever Python evaluates before a yield inside an expression is
evaluated into a temporary (``_pl_t<n>``) first, so that the order of reads is kept: a
read made before a yield must see the world as it was before other threads ran.
``and``/``or`` and conditional expressions become ``if`` statements, so that what they
do not evaluate still does not run.  :mod:`resume_ast` builds on the result.
"""

from __future__ import annotations

import ast
import copy

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


class Refused(ValueError):
    """A construct the rewrite cannot resume into."""


def scope(node: ast.AST) -> list[ast.AST]:
    """The nodes of ``node`` in this scope: a nested definition contributes its header."""
    out: list[ast.AST] = []
    stack = _header(node) if isinstance(node, _SCOPES) else [node]
    while stack:
        n = stack.pop()
        out.append(n)
        stack += _header(n) if isinstance(n, _SCOPES) else ast.iter_child_nodes(n)
    return out


def has_yield(node: ast.AST) -> bool:
    """Whether ``node`` yields in this scope (a nested definition's header counts)."""
    return any(isinstance(n, ast.Yield | ast.YieldFrom) for n in scope(node))


def _header(n: ast.AST) -> list[ast.AST]:
    """The parts of a nested definition evaluated in the enclosing scope."""
    out: list[ast.AST] = list(getattr(n, "decorator_list", []))
    args = getattr(n, "args", None)
    if isinstance(args, ast.arguments):
        out += args.defaults + [d for d in args.kw_defaults if d is not None]
    if isinstance(n, ast.ClassDef):
        out += n.bases + [kw.value for kw in n.keywords]
    return out


def var(id_: str, store: bool = False) -> ast.Name:
    """The variable ``id_``, read or assigned."""
    return ast.Name(id_, ast.Store() if store else ast.Load())


def assign(target: str, value: ast.expr) -> ast.Assign:
    """``target = value``."""
    return ast.Assign([var(target, store=True)], value)


def negate(e: ast.expr) -> ast.expr:
    """``not e``."""
    return ast.UnaryOp(ast.Not(), e)


def locate(nodes: list[ast.stmt], origin: ast.AST) -> list[ast.stmt]:
    """Give generated nodes the source position of the statement they stand for."""
    for top in nodes:
        for n in ast.walk(top):
            if "lineno" in n._attributes and not hasattr(n, "lineno"):
                for attr in ("lineno", "col_offset", "end_lineno", "end_col_offset"):
                    setattr(n, attr, getattr(origin, attr, None))
    return nodes


def yield_of(s: ast.stmt) -> ast.Yield | ast.YieldFrom | None:
    """The yield a lifted yield statement suspends at, or None for any other statement."""
    if isinstance(s, ast.Expr | ast.Assign | ast.AugAssign | ast.AnnAssign) and isinstance(
        s.value, ast.Yield | ast.YieldFrom
    ):
        return s.value
    return None


class Lift:
    """The lifting pass over one function; ``where`` names it in refusals."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.temps = 0

    def refuse(self, node: ast.AST, what: str) -> Refused:
        """The refusal of a yield ``what`` (e.g. "in a with statement") at ``node``."""
        return Refused(f"{self.where}:{getattr(node, 'lineno', '?')}: a yield {what}")

    def temp(self, value: ast.expr, pre: list[ast.stmt]) -> ast.Name:
        """A new temporary holding ``value``, assigned at the end of ``pre``."""
        name = f"_pl_t{self.temps}"
        self.temps += 1
        pre.append(assign(name, value))
        return var(name)

    def expr(self, e: ast.expr, pre: list[ast.stmt]) -> ast.expr:
        """``e`` without yields; what it must do first is appended to ``pre``."""
        if not has_yield(e):
            return e
        if isinstance(e, ast.Yield | ast.YieldFrom):
            inner = copy.copy(e)
            if e.value is not None:
                inner.value = self.expr(e.value, pre)
            return self.temp(inner, pre)
        if isinstance(e, ast.BoolOp):
            return self.boolop(e, pre)
        if isinstance(e, ast.IfExp):
            test = self.expr(e.test, pre)
            if not (has_yield(e.body) or has_yield(e.orelse)):
                return ast.IfExp(test, e.body, e.orelse)
            result = f"_pl_t{self.temps}"
            self.temps += 1
            arms = []
            for arm in (e.body, e.orelse):
                block: list[ast.stmt] = []
                block.append(assign(result, self.expr(arm, block)))
                arms.append(block)
            pre.append(ast.If(test, arms[0], arms[1]))
            return var(result)
        if isinstance(e, ast.Compare) and len(e.ops) > 1:
            raise self.refuse(e, "in a chained comparison")
        if isinstance(e, _SCOPES):
            raise self.refuse(e, "in the header of a nested definition")
        return self.ordered(e, pre)

    def boolop(self, e: ast.BoolOp, pre: list[ast.stmt]) -> ast.expr:
        """``a and b``: evaluate ``b`` (and what it yields) only when ``a`` is true."""
        first = self.expr(e.values[0], pre)
        rest = e.values[1:]
        if not any(has_yield(v) for v in rest):
            return ast.BoolOp(e.op, [first, *rest])
        result = f"_pl_t{self.temps}"
        self.temps += 1
        pre.append(assign(result, first))
        block = pre
        for v in rest:
            body: list[ast.stmt] = []
            body.append(assign(result, self.expr(v, body)))
            test = var(result) if isinstance(e.op, ast.And) else negate(var(result))
            block.append(ast.If(test, body, []))
            block = body
        return var(result)

    def ordered(self, e: ast.expr, pre: list[ast.stmt]) -> ast.expr:
        """A node whose children run in order: those before the last yield go to temporaries."""
        slots = _children(e)
        last = max(i for i, (_f, _j, c) in enumerate(slots) if has_yield(c))
        new = copy.copy(e)
        for field in dict.fromkeys(f for f, _j, _c in slots):
            value = getattr(e, field)
            if isinstance(value, list):
                setattr(new, field, list(value))
        for i, (field, j, child) in enumerate(slots[: last + 1]):
            if i < last and not has_yield(child) and not isinstance(child, ast.Constant):
                lifted: ast.expr = self.temp(child, pre)
            else:
                lifted = self.expr(child, pre)
            if j is None:
                setattr(new, field, lifted)
                continue
            items = getattr(new, field)
            if isinstance(items[j], ast.keyword):
                kw = copy.copy(items[j])
                kw.value = lifted
                items[j] = kw
            else:
                items[j] = lifted
        return new

    def stmt(self, s: ast.stmt) -> list[ast.stmt]:
        """``s`` as statements in which every yield is a yield statement."""
        self.temps = 0
        if not has_yield(s):
            return [s]
        pre: list[ast.stmt] = []
        out = self._stmt(s, pre)
        return locate(pre + out, s)

    def _stmt(self, s: ast.stmt, pre: list[ast.stmt]) -> list[ast.stmt]:
        y = yield_of(s)
        if y is not None:
            if isinstance(s, ast.Assign | ast.AnnAssign) and any(
                has_yield(t) for t in (s.targets if isinstance(s, ast.Assign) else [s.target])
            ):
                raise self.refuse(s, "in an assignment target")
            if isinstance(s, ast.AugAssign) and not isinstance(s.target, ast.Name):
                raise self.refuse(s, "in an augmented assignment to a non-name")
            new = copy.copy(s)
            inner = copy.copy(y)
            if y.value is not None:
                inner.value = self.expr(y.value, pre)
            new.value = inner  # type: ignore[attr-defined]
            return [new]
        if isinstance(s, ast.Return) and s.value is not None:
            if isinstance(s.value, ast.Yield | ast.YieldFrom):
                result = f"_pl_t{self.temps}"
                self.temps += 1
                lifted = self._stmt(ast.Assign([var(result, store=True)], s.value), pre)
                return [*lifted, ast.Return(var(result))]
            return [ast.Return(self.expr(s.value, pre))]
        if isinstance(s, ast.Expr | ast.Assign | ast.AugAssign | ast.AnnAssign):
            if isinstance(s, ast.AugAssign) and not isinstance(s.target, ast.Name):
                raise self.refuse(s, "in an augmented assignment to a non-name")
            new = copy.copy(s)
            new.value = self.expr(s.value, pre)  # type: ignore[arg-type]
            return [new]
        if isinstance(s, ast.If):
            return [ast.If(self.expr(s.test, pre), self.block(s.body), self.block(s.orelse))]
        if isinstance(s, ast.While):
            if not has_yield(s.test):
                return [ast.While(s.test, self.block(s.body), self.block(s.orelse))]
            if s.orelse:
                raise self.refuse(s, "in the condition of a while loop with an else")
            head: list[ast.stmt] = []
            test = self.expr(s.test, head)
            head.append(ast.If(negate(test), [ast.Break()], []))
            body = locate(head, s) + self.block(s.body)
            return [ast.While(ast.Constant(True), body, [])]
        if isinstance(s, ast.For):
            if has_yield(s.target):
                raise self.refuse(s, "in a for loop's target")
            it = self.expr(s.iter, pre)
            return [ast.For(s.target, it, self.block(s.body), self.block(s.orelse))]
        if isinstance(s, ast.Try):
            if any(has_yield(h) for h in s.handlers) or any(has_yield(f) for f in s.finalbody):
                raise self.refuse(s, "in an except or finally clause")
            return [ast.Try(self.block(s.body), s.handlers, self.block(s.orelse), s.finalbody)]
        if isinstance(s, ast.Raise | ast.Assert):
            new = copy.copy(s)
            for field in ("exc", "cause", "test", "msg"):
                value = getattr(s, field, None)
                if isinstance(value, ast.expr):
                    setattr(new, field, self.expr(value, pre))
            return [new]
        if isinstance(s, _SCOPES):
            raise self.refuse(s, "in the header of a nested definition")
        raise self.refuse(s, f"in a {type(s).__name__.lower()} statement")

    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        """A block, lifted."""
        out: list[ast.stmt] = []
        for s in stmts:
            out += self.stmt(s)
        return out


def _children(e: ast.expr) -> list[tuple[str, int | None, ast.expr]]:
    """The sub-expressions of ``e`` in the order Python evaluates them."""
    if isinstance(e, ast.Dict):
        out: list[tuple[str, int | None, ast.expr]] = []
        for j, (k, v) in enumerate(zip(e.keys, e.values, strict=True)):
            if k is not None:
                out.append(("keys", j, k))
            out.append(("values", j, v))
        return out
    out = []
    for field, value in ast.iter_fields(e):
        if isinstance(value, ast.expr):
            out.append((field, None, value))
        elif isinstance(value, list):
            for j, item in enumerate(value):
                if isinstance(item, ast.expr):
                    out.append((field, j, item))
                elif isinstance(item, ast.keyword):
                    out.append((field, j, item.value))
    return out
