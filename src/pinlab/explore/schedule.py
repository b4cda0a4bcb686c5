"""Schedules as short strings: ``<program id>@<fingerprint>:<steps>``.

A step is the thread index as one character ``0-9a-z`` (``(n)`` from 36 on), followed by
``/c`` (the same digits) when the thread took its choice ``c > 0`` among several enabled
transitions, so the lost update reads ``lost-update@1a2b3c4d:0110`` and ``3/1`` is
thread 3 taking its second choice.
"""

from __future__ import annotations

import re

from pinlab.explore.fingerprint import fingerprint
from pinlab.explore.program import Program, program_id

Move = tuple[int, int]

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(r"([0-9a-z]|\((\d+)\))(?:/([1-9a-z]|\((\d+)\)))?")


class ScheduleError(ValueError):
    """A schedule that does not parse, or does not fit the program it is replayed on."""


def encode_moves(moves: list[Move] | tuple[Move, ...]) -> str:
    """The step part of a schedule."""
    out = []
    for tid, choice in moves:
        out.append(_digit(tid))
        if choice:
            out.append("/" + _digit(choice))
    return "".join(out)


def _digit(n: int) -> str:
    return _DIGITS[n] if n < len(_DIGITS) else f"({n})"


def _number(m: re.Match[str], char: int, paren: int) -> int:
    if m.group(paren) is not None:
        return int(m.group(paren))
    return _DIGITS.index(m.group(char)) if m.group(char) else 0


def encode(program: Program, moves: list[Move] | tuple[Move, ...]) -> str:
    """The full schedule string for ``moves`` in ``program``."""
    return f"{program_id(program)}@{fingerprint(program)}:{encode_moves(moves)}"


def decode(text: str) -> tuple[str, str, list[Move]]:
    """Split a schedule into program id, fingerprint and moves; errors name the position."""
    head, sep, body = text.strip().rpartition(":")
    if not sep or "@" not in head:
        raise ScheduleError(f"not a schedule (want <program>@<fingerprint>:<steps>): {text!r}")
    pid, _, fp = head.rpartition("@")
    if not re.fullmatch(r"[0-9a-f]{8}", fp):
        raise ScheduleError(f"bad fingerprint {fp!r} (want 8 hex digits)")
    moves: list[Move] = []
    pos = 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if m is None:
            raise ScheduleError(
                f"position {len(moves)}: cannot parse {body[pos : pos + 8]!r} "
                f"(character {pos} of the steps)"
            )
        tid, choice = _number(m, 1, 2), _number(m, 3, 4)
        if body[pos : m.end()] != encode_moves([(tid, choice)]):
            raise ScheduleError(
                f"position {len(moves)}: {body[pos : m.end()]!r} is not canonical "
                f"(write {encode_moves([(tid, choice)])!r})"
            )
        moves.append((tid, choice))
        pos = m.end()
    return pid, fp, moves


def decode_for(program: Program, text: str) -> list[Move]:
    """Decode a schedule and refuse it unless it was made for exactly this program."""
    pid, fp, moves = decode(text)
    want_id, want_fp = program_id(program), fingerprint(program)
    if (pid, fp) != (want_id, want_fp):
        raise ScheduleError(
            f"schedule is for program {pid}@{fp}, not {want_id}@{want_fp} "
            "(another program, other parameters or changed code)"
        )
    return moves
