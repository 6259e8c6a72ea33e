"""The batch upload's body format, both ways, with no I/O.

A batch (``POST /api/v1/blobs/batch``, ``Content-Type: application/x-tether-blobs``)
is frames end to end, each ``<sha256 hex> <size>\\n`` followed by exactly ``size``
bytes of the blob. Decoding, in the manner of h11::

    dec = FrameDecoder()
    dec.receive_data(body)
    dec.receive_data(b"")     # b"": the end of the body
    dec.next_event()          # Frame(digest, 3)
    dec.next_event()          # Data(<view of b"abc">, last=True)
    dec.next_event()          # END

The client builds bodies with :func:`frame_header` (it streams files, so it writes the
headers and the bytes itself); the hub reads them with :class:`FrameDecoder`, in the
manner of h11: bytes in with :meth:`~FrameDecoder.receive_data`, events out with
:meth:`~FrameDecoder.next_event` until it says :data:`NEED_DATA`. Body bytes come out as
views of the pieces fed in, never copied frame by frame. A malformed header raises
:class:`FrameError` (the hub answers 400 ``bad-frame`` with its message); a body that
ends inside a frame's bytes gives :class:`Truncated` (the blob's writer refuses it:
fewer bytes than declared).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from tether.publish.core import DIGEST_RE

MAX_HEADER = 200
"""A header line longer than this (newline included) is refused before more is buffered."""
_HEADER = re.compile(rb"([0-9a-f]{64}) ([0-9]{1,15})")


class FrameError(ValueError):
    """A batch body that breaks the framing; the message says how (and is the hub's 400 detail)."""

    slug = "bad-frame"


# -- events -----------------------------------------------------------------------------


class Frame:
    """A frame's header: ``size`` bytes of blob ``digest`` follow, as :class:`Data`
    events (none when ``size`` is 0), the last one with ``last`` set, or :class:`Truncated`."""

    __slots__ = ("digest", "size")

    def __init__(self, digest: str, size: int) -> None:
        self.digest = digest
        self.size = size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frame) and (self.digest, self.size) == (other.digest, other.size)

    def __repr__(self) -> str:
        return f"Frame(digest={self.digest[:4]!r}..., size={self.size})"


class Data:
    """Some of the current frame's bytes: a view of what was fed in (valid as long as it is
    held); ``last``: the frame's bytes are complete with these."""

    __slots__ = ("data", "last")

    def __init__(self, data: memoryview, last: bool) -> None:
        self.data = data
        self.last = last

    def __repr__(self) -> str:
        return f"Data({len(self.data)} bytes, last={self.last})"


class Truncated:
    """The body ended inside frame ``digest``'s bytes: ``received`` of ``size`` came."""

    __slots__ = ("digest", "size", "received")

    def __init__(self, digest: str, size: int, received: int) -> None:
        self.digest = digest
        self.size = size
        self.received = received

    def __repr__(self) -> str:
        return f"Truncated({self.digest[:8]}..., {self.received} of {self.size})"


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
"""Feed more bytes (or ``b""`` for the end of the body) before asking again."""
END = _Sentinel("END")
"""The body ended cleanly between frames."""

Event = Frame | Data | Truncated | _Sentinel


# -- encoding ---------------------------------------------------------------------------


def frame_header(digest: str, size: int) -> bytes:
    """The header line of one frame in a batch upload: ``<hex> <size>\\n``."""
    if not DIGEST_RE.match(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"bad size {size!r}")
    return f"{digest} {size}\n".encode("ascii")


def encode_frames(blobs: Iterable[tuple[str, bytes]]) -> bytes:
    """A whole batch body from ``(digest, data)`` pairs (for tests and small uses)."""
    return b"".join(frame_header(d, len(data)) + data for d, data in blobs)


def framed_size(size: int) -> int:
    """Bytes one frame takes in a batch: ``<64 hex> <size>\\n`` and the blob."""
    return 66 + len(str(size)) + size


def batch_length(items: Sequence[tuple[str, int]]) -> int:
    """The exact byte length of a batch body of ``(digest, size)`` frames."""
    return sum(framed_size(s) for _, s in items)


# -- decoding ---------------------------------------------------------------------------


class FrameDecoder:
    """Bytes in, frame events out (see the module's docstring)."""

    __slots__ = ("_buf", "_pos", "_eof", "_digest", "_size", "_left")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._digest = ""  # the frame whose bytes are being read, while _left > 0
        self._size = 0
        self._left = 0

    def receive_data(self, data: bytes) -> None:
        """Add the body's next bytes; ``b""`` says the body has ended."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("data after the end of the body")
        rest = self._buf[self._pos :] if self._pos < len(self._buf) else b""
        self._buf = rest + data if rest else bytes(data)
        self._pos = 0

    def next_event(self) -> Event:
        """The next event, or :data:`NEED_DATA`; raises :class:`FrameError` on a bad header."""
        buf, pos = self._buf, self._pos
        if self._left:  # inside a frame's bytes
            if pos >= len(buf):
                if not self._eof:
                    return NEED_DATA
                ev = Truncated(self._digest, self._size, self._size - self._left)
                self._left = 0
                return ev
            end = min(pos + self._left, len(buf))
            self._pos = end
            self._left -= end - pos
            return Data(memoryview(buf)[pos:end], not self._left)
        nl = buf.find(b"\n", pos, pos + MAX_HEADER)
        if nl < 0:
            if len(buf) - pos >= MAX_HEADER:
                raise FrameError("batch frame header too long: expected '<sha256 hex> <size>\\n'")
            if not self._eof:
                return NEED_DATA
            if pos < len(buf):
                raise FrameError("the batch ends inside a frame header; nothing more was stored")
            return END
        m = _HEADER.fullmatch(buf, pos, nl)
        if not m:
            raise FrameError("bad batch frame header: expected '<sha256 hex> <size>\\n'")
        self._pos = nl + 1
        self._digest = m.group(1).decode()
        self._size = self._left = int(m.group(2))
        return Frame(self._digest, self._size)


def read_frames(chunks: Iterable[bytes]) -> Iterator[tuple[str, int, Iterable[memoryview]]]:
    """``(digest, size, body)`` for each frame of a body arriving as ``chunks``; ``body``
    yields the frame's bytes and must be read to its end before the next frame is
    taken. A truncated frame's body just ends short (its writer sees fewer bytes than
    declared). The same :class:`FrameDecoder`, driven by pulling chunks: the hub's reader."""
    dec = FrameDecoder()
    it = iter(chunks)

    def pull() -> Event:
        while (ev := dec.next_event()) is NEED_DATA:
            dec.receive_data(next(it, b""))
        return ev

    def rest(first: Data) -> Iterator[memoryview]:
        yield first.data
        while True:
            ev = pull()
            if type(ev) is not Data:
                return  # Truncated
            yield ev.data
            if ev.last:
                return

    while True:
        ev = pull()
        if ev is END:
            return
        assert type(ev) is Frame
        if not ev.size:
            yield ev.digest, 0, (memoryview(b""),)
            continue
        first = pull()
        if type(first) is not Data:  # Truncated before any byte of it
            yield ev.digest, ev.size, ()
            continue
        # the whole blob in this piece (most are): no generator needed
        yield ev.digest, ev.size, ((first.data,) if first.last else rest(first))


def decode_frames(body: bytes) -> list[tuple[str, bytes]]:
    """Inverse of :func:`encode_frames` for a whole body; :class:`FrameError` (a
    ValueError) on a malformed or truncated one."""
    dec = FrameDecoder()
    dec.receive_data(body)
    dec.receive_data(b"")
    out: list[tuple[str, bytes]] = []
    parts: list[bytes] = []
    digest = ""
    while True:
        ev = dec.next_event()
        if ev is END:
            return out
        if type(ev) is Frame:
            digest, parts = ev.digest, []
            if not ev.size:
                out.append((digest, b""))
        elif type(ev) is Data:
            parts.append(bytes(ev.data))
            if ev.last:
                out.append((digest, b"".join(parts)))
        elif type(ev) is Truncated:
            raise FrameError(f"frame {ev.digest} is truncated: {ev.received} of {ev.size} bytes")
        else:  # pragma: no cover - NEED_DATA cannot follow the end of the body
            raise AssertionError(ev)


__all__ = [
    "END",
    "NEED_DATA",
    "Data",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "Truncated",
    "batch_length",
    "decode_frames",
    "encode_frames",
    "frame_header",
    "framed_size",
    "read_frames",
]
