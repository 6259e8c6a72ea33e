"""The batch body format (publish.frames): encoder and incremental decoder agree on any
blobs and any cutting of the byte stream; malformed bodies are refused with the
message the hub's 400 carries."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.publish.frames import (
    END,
    NEED_DATA,
    Data,
    Frame,
    FrameDecoder,
    FrameError,
    Truncated,
    batch_length,
    decode_frames,
    encode_frames,
    read_frames,
)

blobs_st = st.lists(st.binary(max_size=300).map(lambda b: (hashlib.sha256(b).hexdigest(), b)), max_size=12)


def cut(body: bytes, points: list[int]) -> list[bytes]:
    """``body`` in pieces at ``points`` (positions; empty pieces dropped: b"" means the end)."""
    edges = sorted({0, len(body), *(p % (len(body) + 1) for p in points)})
    return [body[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def events(pieces: list[bytes]) -> list[object]:
    dec = FrameDecoder()
    out: list[object] = []
    for piece in [*pieces, b""]:
        dec.receive_data(piece)
        while (ev := dec.next_event()) is not NEED_DATA:
            out.append(ev)
            if ev is END or type(ev) is Truncated:
                return out
    raise AssertionError("no END after the end of the body")


def blobs_of(evs: list[object]) -> list[tuple[str, bytes]]:
    out, digest, parts, size = [], "", [], 0
    for ev in evs:
        if type(ev) is Frame:
            digest, size, parts = ev.digest, ev.size, []
            if not size:
                out.append((digest, b""))
        elif type(ev) is Data:
            parts.append(bytes(ev.data))
            if ev.last:
                out.append((digest, b"".join(parts)))
                assert len(out[-1][1]) == size
    return out


@given(blobs_st, st.lists(st.integers(0, 10_000), max_size=20))
def test_round_trip_in_any_cutting(blobs, points):
    body = encode_frames(blobs)
    assert len(body) == batch_length([(d, len(b)) for d, b in blobs])
    evs = events(cut(body, points))
    assert evs[-1] is END
    assert blobs_of(evs) == blobs
    assert decode_frames(body) == blobs


@given(blobs_st, st.lists(st.integers(0, 10_000), max_size=20))
def test_the_pulling_reader_gives_the_same_frames(blobs, points):
    body = encode_frames(blobs)
    got = [(d, s, b"".join(bytes(v) for v in body_)) for d, s, body_ in read_frames(iter(cut(body, points)))]
    assert got == [(d, len(b), b) for d, b in blobs]


@given(blobs_st.filter(bool), st.data())
def test_a_body_cut_short_inside_a_frame_is_truncated_never_a_frame(blobs, data):
    body = encode_frames(blobs)
    # the last frame's bytes, cut after its header
    header_end = body.rindex(b"\n", 0, len(body) - len(blobs[-1][1])) + 1
    if header_end == len(body):
        return  # an empty last blob: nothing to cut
    end = data.draw(st.integers(header_end, len(body) - 1))
    evs = events(cut(body[:end], data.draw(st.lists(st.integers(0, 10_000), max_size=5))))
    assert type(evs[-1]) is Truncated
    assert evs[-1].received == end - header_end and evs[-1].size == len(blobs[-1][1])
    assert blobs_of(evs) == blobs[:-1]
    with pytest.raises(FrameError, match="truncated"):
        decode_frames(body[:end])


@given(blobs_st.filter(bool), st.data())
def test_a_body_cut_inside_a_header_is_refused(blobs, data):
    body = encode_frames(blobs)
    header_start = len(body) - len(blobs[-1][1]) - len(f"{blobs[-1][0]} {len(blobs[-1][1])}\n")
    end = data.draw(st.integers(header_start + 1, header_start + 65))
    with pytest.raises(FrameError, match="ends inside a frame header; nothing more was stored"):
        events(cut(body[:end], data.draw(st.lists(st.integers(0, 10_000), max_size=5))))


@pytest.mark.parametrize(
    "body, message",
    [
        (b"garbage\n", "bad batch frame header"),
        (b"a" * 300, "batch frame header too long"),
        (f"{'a' * 64} -1\n".encode(), "bad batch frame header"),
        (f"{'A' * 64} 1\nx".encode(), "bad batch frame header"),
        (f"{'a' * 64} 1234567890123456\n".encode(), "bad batch frame header"),  # 16 digits
        (f"{'a' * 64}  1\nx".encode(), "bad batch frame header"),
    ],
)
def test_malformed_headers(body, message):
    with pytest.raises(FrameError, match=message) as exc:
        events([body])
    assert exc.value.slug == "bad-frame"
    # fed a byte at a time: the same answer, and a long header refused within its first 200 bytes
    dec = FrameDecoder()
    with pytest.raises(FrameError, match=message):
        for i in range(len(body)):
            dec.receive_data(body[i : i + 1])
            while dec.next_event() is not NEED_DATA:
                pass
        dec.receive_data(b"")
        dec.next_event()


def test_views_not_copies():
    blob = b"x" * 1000
    body = encode_frames([(hashlib.sha256(blob).hexdigest(), blob)])
    dec = FrameDecoder()
    dec.receive_data(body)
    assert type(dec.next_event()) is Frame
    ev = dec.next_event()
    assert type(ev) is Data and ev.last and isinstance(ev.data, memoryview) and ev.data.obj is body
