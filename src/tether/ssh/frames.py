"""The frames tether speaks over an SSH channel's stdin/stdout, for every capability.

A frame is a 4-byte big-endian payload length, a 1-byte ASCII type and the
payload. One request frame gets exactly one reply frame. Three types belong to the
SSH entry itself (:mod:`tether.ssh.entry`); each capability's handler names the
rest (log's are in :mod:`tether.log.ssh`):

======  =====================================================================
``H``   server, first: JSON hello (``protocol``, ``user``, …) once the user is authorized
``E``   server: a problem+json object (``status``, ``type``, ``detail``); after an
        ``E`` for a bad frame the server hangs up, after one for a refused
        request (a conflict, say) it waits for the next frame
``Q``   client: (empty) the end of the session; the server exits 0
======  =====================================================================

:class:`FrameDecoder` is sans-IO (bytes in, frames out); :class:`FrameReader`
adds a file descriptor and a per-frame deadline, so an idle or trickling peer
is cut off and no frame larger than ``max_frame`` is ever buffered.
"""

from __future__ import annotations

import os
import select
import struct
import time
from dataclasses import dataclass

HEADER = struct.Struct(">IB")
HELLO, ERROR, QUIT = "H", "E", "Q"


class FrameError(Exception):
    """Malformed, oversized or truncated framing."""


class FrameTimeout(FrameError):
    """No complete frame within the deadline."""


@dataclass(frozen=True)
class Frame:
    type: str
    payload: bytes


def encode(ftype: str, payload: bytes = b"") -> bytes:
    t = ftype.encode("ascii")
    if len(t) != 1:
        raise ValueError("frame type is one ASCII letter")
    return HEADER.pack(len(payload), t[0]) + payload


class FrameDecoder:
    """Feed bytes, take complete frames. Refuses unknown types and oversized frames
    as soon as their header arrives, before buffering their payload."""

    def __init__(self, allowed: frozenset[int], max_frame: int):
        self.allowed = allowed
        self.max_frame = max_frame
        self._buf = bytearray()
        self._head: tuple[int, int] | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._check_head()

    def _check_head(self) -> None:
        if self._head is None and len(self._buf) >= HEADER.size:
            length, t = HEADER.unpack_from(self._buf)
            if t not in self.allowed:
                shown = chr(t) if 32 < t < 127 else f"0x{t:02x}"
                raise FrameError(f"unknown frame type {shown} (is the other side speaking this tether's protocol?)")
            if length > self.max_frame:
                raise FrameError(f"frame of {length} bytes is larger than the limit of {self.max_frame}")
            self._head = (length, t)

    def next_frame(self) -> Frame | None:
        self._check_head()
        if self._head is None:
            return None
        length, t = self._head
        end = HEADER.size + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[HEADER.size:end])
        del self._buf[:end]
        self._head = None
        return Frame(chr(t), payload)

    def wanted(self) -> int:
        """How many more bytes complete the current frame (at least 1)."""
        if self._head is None:
            return max(1, HEADER.size - len(self._buf))
        return max(1, HEADER.size + self._head[0] - len(self._buf))

    @property
    def pending(self) -> int:
        return len(self._buf)


class FrameReader:
    """Read frames from a file descriptor; each frame must complete within ``timeout`` s."""

    def __init__(self, fd: int, allowed: frozenset[int], max_frame: int, timeout: float):
        self.fd = fd
        self.timeout = timeout
        self.decoder = FrameDecoder(allowed, max_frame)
        self.bytes = 0

    def read(self) -> Frame | None:
        """The next frame, or ``None`` at a clean end of stream (between frames)."""
        deadline = time.monotonic() + self.timeout
        while True:
            f = self.decoder.next_frame()
            if f is not None:
                return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise FrameTimeout(f"no complete frame in {self.timeout:g} s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, min(1 << 20, self.decoder.wanted()))
            if not chunk:
                if self.decoder.pending:
                    raise FrameError("the stream ended in the middle of a frame")
                return None
            self.bytes += len(chunk)
            self.decoder.feed(chunk)


def write_all(fd: int, data: bytes, timeout: float | None = None) -> None:
    """Write all of ``data``; with ``timeout``, a peer that stops reading for that
    long is cut off (:class:`FrameTimeout`). Works on blocking and non-blocking fds."""
    view = memoryview(data)
    deadline = None if timeout is None else time.monotonic() + timeout
    while view:
        try:
            n = os.write(fd, view[: 1 << 16] if deadline is not None else view)
        except BlockingIOError:
            n = 0
        view = view[n:]
        if view and n == 0:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise FrameTimeout(f"the peer read nothing for {timeout:g} s")
            select.select([], [fd], [], left)
