"""Breadth-first search one state at a time: any system, any option the search takes.

:mod:`levels` runs the same search a level at a time on arrays, where it applies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from functools import partial
from typing import TYPE_CHECKING, Any

from pinlab.explore.schedule import Move

if TYPE_CHECKING:
    from pinlab.explore.exhaustive import Exhaustive


def bfs(search: Exhaustive) -> None:
    """Breadth-first search: the first counterexample is a shortest one."""
    sys, opts, rec = search.sys, search.opts, search.rec
    cache, bound = opts.cache, opts.preemption_bound
    root = sys.root()
    rkey = sys.key(root)
    visited: dict[Hashable, int] = {rkey if bound is None else (rkey, -1): 0}
    counted = bound is not None or not cache
    seen: set[Hashable] = {rkey}
    search.new_state(root, rkey, list)
    # entries: node, preemptions, last thread, path as a linked list (parent, move)
    Link = tuple[Any, Move] | None
    queue: deque[tuple[Any, Hashable, int, int, Link, int]] = deque([(root, rkey, 0, -1, None, 0)])

    def unlink(link: Link) -> list[Move]:
        out: list[Move] = []
        while link is not None:
            link, move = link
            out.append(move)
        out.reverse()
        return out

    while queue and not rec.stop:
        node, key, pre0, last, link, depth = queue.popleft()
        if search.tick(depth) or search.over_states():
            return
        children = sys.expand(node)
        if not children:
            search.leaf(True)
            search.terminal(node, key, partial(unlink, link))
            continue
        if opts.max_steps is not None and depth >= opts.max_steps:
            rec.limit("max-steps")
            search.leaf(False)
            continue
        enabled = {c[0] for c in children}
        for tid, choice, _tix, _lk, _r, _w, cnode, ckey, err in children:
            pre = pre0
            if bound is not None and last >= 0 and last != tid and last in enabled:
                pre += 1
                if pre > bound:
                    rec.limit(f"preemption bound {bound}")
                    rec.bounded = True
                    continue
            rec.result.transitions += 1
            clink: Link = (link, (tid, choice))
            if err is not None:
                rec.ended(err, unlink(clink), key)
                search.leaf(True)
                if rec.stop:
                    return
                continue
            if cache:
                vkey = ckey if bound is None else (ckey, tid)
                old = visited.get(vkey)
                if old is not None and (bound is None or pre >= old):
                    search.leaf(False)
                    continue
                visited[vkey] = pre
                if old is None and not counted:
                    search.new_state(cnode, ckey, partial(unlink, clink))
            if counted and ckey not in seen:
                seen.add(ckey)
                search.new_state(cnode, ckey, partial(unlink, clink))
            if rec.stop:
                return
            rec.result.max_depth = max(rec.result.max_depth, depth + 1)
            queue.append((cnode, ckey, pre, tid, clink, depth + 1))
