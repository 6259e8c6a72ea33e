"""Framing: sans-IO decoder and the deadline-bound reader."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.log.ssh import REQUEST_TYPES as LOG_REQUESTS
from tether.ssh.frames import (
    HEADER,
    QUIT,
    FrameDecoder,
    FrameError,
    FrameReader,
    FrameTimeout,
    encode,
    write_all,
)

REQUEST_TYPES = LOG_REQUESTS | {ord(QUIT)}  # what a log session accepts


@given(st.lists(st.tuples(st.sampled_from("RPGQ"), st.binary(max_size=300)), max_size=10), st.integers(1, 50))
def test_round_trip_in_any_chunking(frames, chunk):
    data = b"".join(encode(t, p) for t, p in frames)
    d = FrameDecoder(REQUEST_TYPES, 1000)
    got = []
    for i in range(0, len(data), chunk):
        d.feed(data[i:i + chunk])
        while (f := d.next_frame()) is not None:
            got.append((f.type, f.payload))
    assert got == frames
    assert d.pending == 0

def test_unknown_type_and_oversize_refused_from_the_header():
    with pytest.raises(FrameError, match="unknown frame type"):
        FrameDecoder(REQUEST_TYPES, 100).feed(b"\x00\x00\x00\x00Z")
    with pytest.raises(FrameError, match="larger than the limit"):
        FrameDecoder(REQUEST_TYPES, 100).feed(HEADER.pack(101, ord("P")))


def test_reader_eof_truncation_and_timeout():
    r, w = os.pipe()
    try:
        write_all(w, encode("R", b"abc") + encode("Q"))
        reader = FrameReader(r, REQUEST_TYPES, 100, 1)
        assert reader.read().payload == b"abc"
        assert reader.read().type == "Q"
        with pytest.raises(FrameTimeout):
            FrameReader(r, REQUEST_TYPES, 100, 0.2).read()
        os.write(w, HEADER.pack(10, ord("P")) + b"12")
        os.close(w)
        w = -1
        with pytest.raises(FrameError, match="middle of a frame"):
            FrameReader(r, REQUEST_TYPES, 100, 1).read()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_clean_eof_between_frames():
    r, w = os.pipe()
    os.close(w)
    try:
        assert FrameReader(r, REQUEST_TYPES, 100, 1).read() is None
    finally:
        os.close(r)
