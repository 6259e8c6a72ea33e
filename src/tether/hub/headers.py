"""Bounded request heads for the hub's HTTP listeners: at most N bytes and M header fields (431).

The hub serves HTTP with uvicorn's httptools protocol (picked for upload speed, see
pyproject.toml). httptools keeps a header line whole, however long, and uvicorn has
no limit of its own for it: one 150 MB header held that much memory and, being
joined piece by piece, the event loop for seconds. Here the bytes of a request's
head (request line and headers) are counted *before* they reach the parser, and the
parser is given no more than ``max_bytes`` of them; past that, or past
``max_headers`` fields, the client gets 431 and the connection is closed. Nothing
of the HTTP syntax is parsed here: httptools still does all of it.

A head must also arrive in time: ``head_seconds`` from the connection's start, or from
the first byte of a later request on a kept connection; past that the client gets 408
(or, if it never sent a byte, the connection is just closed). uvicorn bounds only the
wait between requests (its keep-alive timeout), so without this 10,000 connections
that each sent half a head stayed open and held the hub's memory (found by the job
tests). A request's own wait for its answer (a long-poll) is not a head: no timer runs.

Every HTTP listener of the hub that uvicorn serves (the API; a rendezvous listener
as it comes) runs with ``uvicorn.run(..., http=limited_http_protocol(...))``. The
gateway has its own HTTP/1.1 proxy on httptools, which counts its heads the same way (``tether.gateway.proxy.Limits``, given the same settings by
``hub.app``). The SSH listener needs nothing of this: asyncssh bounds its packets.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tether.problems import Problem


class _TooManyHeaders(Exception):
    pass


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head (set the limits with
    :func:`limited_http_protocol`)."""

    max_bytes = 64 << 10
    max_headers = 100
    head_seconds = 10.0

    def connection_made(self, transport) -> None:
        self._in_head = True  # the next bytes belong to a request's head
        self._head_bytes = 0
        self._headers = 0
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_late)

    def connection_lost(self, exc) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # an answer is still being made (a pipelined head waits behind it): not the client's delay
        if self._head_bytes == 0:
            self.transport.close()  # never said anything: nothing to answer
            return
        self._answer(408, "Request Timeout", "head-timeout",
                     f"the request line and headers must arrive within {self.head_seconds:g} s "
                     "(setting header_timeout)")

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            return super().data_received(data)
        if self._head_timer is None and data:  # a later request's first byte on a kept connection
            self._head_timer = self.loop.call_later(self.head_seconds, self._head_late)
        room = self.max_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            return super().data_received(data)
        # Give the parser only what fits: if the head ends within it, the rest is body
        # (or the next request) and goes on as usual; if not, the head is too large.
        self._head_bytes = self.max_bytes
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        if self._in_head:
            return self._refuse(f"the request line and headers are limited to {self.max_bytes} bytes "
                                "(setting max_header_bytes)")
        self.data_received(data[room:])

    def on_message_begin(self) -> None:
        self._headers = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > self.max_headers:
            raise _TooManyHeaders()  # httptools stops parsing; uvicorn calls send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._headers > self.max_headers:
            return self._refuse(f"a request may have at most {self.max_headers} header fields (setting max_headers)")
        super().send_400_response(msg)

    def _refuse(self, detail: str) -> None:
        self._answer(431, "Request Header Fields Too Large", "headers-too-large", detail)

    def _answer(self, status: int, reason: str, slug: str, detail: str) -> None:
        self._stop_head_timer()
        body = json.dumps(Problem(status, slug, detail).body()).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )
        self.transport.close()


def limited_http_protocol(max_bytes: int, max_headers: int,
                          head_seconds: float = 10.0) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.run(http=...)`` with these limits."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"max_bytes": max_bytes, "max_headers": max_headers, "head_seconds": head_seconds})
