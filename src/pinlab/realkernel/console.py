"""Result frames on the serial console, and their reassembly from noisy console output.

A frame is ``@@PINLAB <seq> <len> <crc32 hex> <payload>@@`` (written by probes/runner.c).
Kernel messages may land in the middle of a frame (or of its markers), since printk writes to
the UART directly, bypassing the tty the frame is written through; but a kernel record itself
is written whole, with its timestamp, up to its newline. The parser removes whole kernel log
lines first and accepts a frame only when the length and CRC-32 of its payload match.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

START = "@@PINLAB "
END = "@@"
_HEADER = re.compile(r"(\d+) (\d+) ([0-9a-f]{8}) ")
# a kernel log line as the serial console prints it: "[    1.234567] text" up to end of line
_KERNEL_LINE = re.compile(r"\[ *\d+\.\d+\][^\r\n]*(\r?\n|$)")


def encode_frame(seq: int, payload: str) -> str:
    """The frame for payload, as the guest writes it."""
    data = payload.encode()
    return f"\n{START}{seq} {len(data)} {zlib.crc32(data):08x} {payload}{END}\n"


@dataclass(slots=True)
class Frames:
    """What the parser recovered: payloads by sequence number, and what it could not use."""

    payloads: dict[int, str] = field(default_factory=dict)
    corrupt: int = 0
    truncated: int = 0


def _check(body: str) -> tuple[int, str] | None:
    """(seq, payload) if body (text between the markers) is an intact frame."""
    m = _HEADER.match(body)
    if m is None:
        return None
    seq, length, crc = int(m.group(1)), int(m.group(2)), m.group(3)
    data = body[m.end() :].encode(errors="replace")
    if len(data) != length or f"{zlib.crc32(data):08x}" != crc:
        return None
    return seq, data.decode()


def parse_frames(text: str) -> Frames:
    """Recover every intact frame from console text."""
    out = Frames()
    text = _KERNEL_LINE.sub("", text)
    pos = 0
    while (start := text.find(START, pos)) >= 0:
        body_at = start + len(START)
        nxt = text.find(START, body_at)
        end = text.find(END, body_at)
        if end < 0 or (0 <= nxt <= end):
            out.truncated += 1
            pos = body_at if nxt < 0 else nxt
            continue
        pos = end + len(END)
        body = text[body_at:end]
        got = _check(body) or _check(body.replace("\r", "").replace("\n", ""))
        if got is None:
            out.corrupt += 1
            continue
        out.payloads.setdefault(got[0], got[1])
    return out


def fields_of(payload: str) -> dict[str, str]:
    """The key=value fields of a payload; a bare word maps to the empty string."""
    result: dict[str, str] = {}
    for word in payload.split():
        key, _, value = word.partition("=")
        result[key] = value
    return result
