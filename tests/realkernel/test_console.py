"""Frames reassembled from console output with kernel noise, interleaving and truncation."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from pinlab.realkernel.console import encode_frame, fields_of, parse_frames

KLINE = "[    3.141592] virtio_blk virtio1: [vda] 131072 512-byte logical blocks\r\n"
WARN = "[   12.000001] WARNING: CPU: 0 PID: 77 at mm/gup.c:123 try_grab_page+0x1/0x2\r\n"


def test_frames_between_kernel_messages() -> None:
    text = (
        "SeaBIOS noise\r\n"
        + KLINE
        + encode_frame(0, "hello release=6.1")
        + KLINE
        + encode_frame(1, "case=a status=ok x=1")
        + "login junk"
    )
    got = parse_frames(text)
    assert got.payloads == {0: "hello release=6.1", 1: "case=a status=ok x=1"}
    assert (got.corrupt, got.truncated) == (0, 0)


def test_kernel_line_inside_a_frame_is_removed() -> None:
    frame = encode_frame(4, "case=fork status=ok child=s4d4s8").strip("\n")
    cut = frame.index("child")
    noisy = frame[:cut] + WARN + KLINE + frame[cut:]
    got = parse_frames(noisy)
    assert got.payloads == {4: "case=fork status=ok child=s4d4s8"}


def test_truncated_frame_then_a_good_one() -> None:
    text = encode_frame(0, "case=a status=ok")[:15] + encode_frame(1, "case=b status=ok")
    got = parse_frames(text)
    assert got.payloads == {1: "case=b status=ok"}
    assert got.truncated == 1 and 0 not in got.payloads


def test_frame_cut_off_at_end_of_output() -> None:
    text = encode_frame(0, "hello") + encode_frame(1, "case=a status=ok x=12345")[:-6]
    got = parse_frames(text)
    assert got.payloads == {0: "hello"} and got.truncated == 1


def test_flipped_byte_is_rejected_not_misread() -> None:
    frame = encode_frame(2, "case=a status=ok reg.acquired=256")
    bad = frame.replace("256", "257")
    got = parse_frames(bad)
    assert got.payloads == {} and got.corrupt == 1


def test_length_mismatch_is_rejected() -> None:
    payload = "case=a status=ok"
    text = f"@@PINLAB 0 99 {zlib.crc32(payload.encode()):08x} {payload}@@"
    assert parse_frames(text).corrupt == 1


def test_duplicate_sequence_keeps_first() -> None:
    text = encode_frame(0, "case=a v=1") + encode_frame(0, "case=a v=2")
    assert parse_frames(text).payloads == {0: "case=a v=1"}


def test_fields_of() -> None:
    assert fields_of("case=x status=ok hello a=b=c") == {
        "case": "x",
        "status": "ok",
        "hello": "",
        "a": "b=c",
    }


payload_text = (
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789=._- ", min_size=1, max_size=80)
    .map(str.strip)
    .filter(bool)
)


@given(st.lists(payload_text, min_size=1, max_size=6), st.data())
def test_any_kernel_line_at_any_position_is_survived(
    payloads: list[str], data: st.DataObject
) -> None:
    frames = [encode_frame(i, p) for i, p in enumerate(payloads)]
    victim = data.draw(st.integers(0, len(frames) - 1))
    body = frames[victim]
    at = data.draw(st.integers(0, len(body)))
    frames[victim] = body[:at] + data.draw(st.sampled_from([KLINE, WARN, KLINE + WARN])) + body[at:]
    got = parse_frames("".join(frames))
    assert got.payloads == dict(enumerate(payloads))
