"""The gateway's HTTP/1.1 reverse proxy: httptools (llhttp, in C) on both sides, asyncio
Protocols under it.

Each browser connection is a :class:`_Browser` protocol with a request parser; each
connection to an app is an :class:`_App` protocol with a response parser (one per
connection, for all its answers). llhttp checks every byte of every head but calls
Python only where the gateway acts: a message's start, its head's end, body pieces and
its end; the head itself is taken whole from the bytes llhttp accepted and read by
:mod:`tether.gateway.core` (one Host and nothing to drop: it goes to the app as it came;
an answer framed by one Content-Length with nothing to rewrite: to the browser). Bytes go
from one transport to the other inside the parsers' callbacks: no stream buffers, no
task per body, no ``drain`` per chunk. A body with a Content-Length passes through as
it came, taken from the app's reads (its parser has no body callback: llhttp counts it);
a chunked one is re-framed (a size line per piece, the piece itself untouched). Writes to
a browser, and a bodiless request's head to a kept app connection, wait for the end of
the loop's turn and go out together, in order: each reader is woken once per turn, not
once per request (a streamed body's large reads go at once).
Flow control is the transports' own: a side whose write buffer fills pauses reading on
the other (``pause_reading``/``resume_reading``). After an app's 101 the two transports
are spliced byte for byte.

A :data:`Resolver` (forward's and apps', joined by the hub) decides per request:
refuse, redirect, answer, or forward to an :class:`Upstream` (a local UNIX socket, a
channel of the node's SSH connection, another replica). A resolver that knows at once
(its ``now``) costs the request no task; otherwise one task per request awaits it (and
one connects to the app when no kept connection serves); everything else is callbacks. The rules (what is refused, which
headers pass, how a body is delimited) are in :mod:`tether.gateway.core`; this module
moves bytes and enforces the limits: head size and header count (431), the time a head
may take to arrive (408), idle keep-alive connections, upstream connect time, a stalled
request body, an app that never begins its answer (504), and how many connections are
open at once.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol

import httptools

from tether.gateway import core

log = logging.getLogger("tether.gateway")

#: request body bytes held for an app not yet connected; past this the browser's reads pause
BUFFER = 256 << 10
#: bytes a transport may hold unsent before the other side's reads pause (asyncio's default
#: of 64 KiB paused the app on nearly every 256 KiB read while streaming)
WRITE_HIGH = 1 << 20
#: an app's read past this size goes to the browser at once, not held to the end of the turn
#: (held writes batch small answers' wake-ups; a streamed body's reads are each large)
STREAMED = 1 << 16
#: the most header fields an app's response may have (a broken app's, not a browser's limit)
MAX_APP_HEADERS = 1000


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 32 << 10
    max_headers: int = 100
    head_timeout: float = 10.0  # a request's line and headers must arrive within this
    idle_timeout: float = 75.0  # a keep-alive connection with no request
    connect_timeout: float = 5.0  # reaching the app
    body_timeout: float = 60.0  # no byte of a request body for this long
    # the app sends nothing for this long after the whole request reached it (504); a
    # long-poll or a slow report that takes longer needs more. A body, once begun, has no
    # limit (a stream, server-sent events)
    answer_timeout: float = 300.0
    max_connections: int = 4096


class Request:
    """A request's head as the resolver sees it. ``headers`` is split from the head's block of
    field lines (``block``) when first asked for: a resolver that needs only the host and
    target costs no split."""

    __slots__ = ("method", "target", "_headers", "host", "client_ip", "scheme", "block")

    def __init__(self, method: bytes, target: bytes, headers: core.Headers | None, host: str, client_ip: str,
                 scheme: str, block: bytes = b""):
        self.method, self.target, self._headers, self.host = method, target, headers, host
        self.client_ip, self.scheme, self.block = client_ip, scheme, block

    @property
    def headers(self) -> core.Headers:
        if self._headers is None:
            self._headers = core.split_fields(self.block)
        return self._headers

    def hop(self) -> bool:
        """Passed on by another replica's gateway (which does not hold the route)."""
        return any(n.lower() == HOP_HEADER for n, _ in self.headers)

    def credential(self, cookie: str) -> str | None:
        """The caller's secret for the gateway: a bearer token, else the session cookie ``cookie``."""
        for n, v in self.headers:
            if n.lower() == b"authorization":
                scheme, _, value = v.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and value.strip():
                    return value.strip()
        jar: SimpleCookie = SimpleCookie()
        for n, v in self.headers:
            if n.lower() == b"cookie":
                try:
                    jar.load(v.decode("latin-1"))
                except CookieError:  # a malformed cookie header carries no session
                    pass
        morsel = jar.get(cookie)
        return morsel.value if morsel is not None and morsel.value else None

    def wants_html(self) -> bool:
        accept = b",".join(v for n, v in self.headers if n.lower() == b"accept")
        return b"text/html" in accept


@dataclass
class Refuse:
    status: int
    slug: str
    detail: str
    headers: core.Headers = field(default_factory=list)


@dataclass
class Reply:
    """An answer the gateway gives itself (a redirect after sign-in, a status page)."""

    status: int
    headers: core.Headers
    body: bytes = b""


@dataclass(slots=True)
class Forward:
    upstream: Upstream
    target: core.Target
    on_bytes: Callable[[int, int], None] | None = None  # (to the app, to the browser): activity and metrics
    on_status: Callable[[int], None] | None = None  # the app's answer (or the gateway's): per-route metrics
    #: to another replica's gateway, which holds the route: the request goes as it came
    #: (credentials included: that gateway checks them again), marked as one hop
    passthrough: bool = False
    #: headers the gateway vouches for, added after the client's (e.g. X-Tether-User)
    headers: core.Headers | tuple = ()


Decision = Refuse | Reply | Forward
#: decides each request. It may also have a ``now(request)`` method that gives the decision
#: without waiting when it can (from what it holds in memory: a route and a credential
#: checked within the last second), and None when it must be awaited; then the request
#: costs no task.
Resolver = Callable[[Request], Awaitable[Decision]]



class Upstream(Protocol):
    """Where a route's requests go; ``connect`` makes one connection to the app, with a
    protocol from ``factory``, and returns that protocol once connected.

    An upstream may also have a ``key``: upstreams with equal keys reach the same app
    the same way, so a browser connection keeps its connection to the app (a UNIX
    connection, an SSH channel) for its next request, as nginx's upstream ``keepalive``
    does. Without a key every request opens a connection of its own."""

    async def connect(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.Protocol: ...


class UnixUpstream:
    def __init__(self, path: str):
        self.path = path
        self.key = ("unix", path)

    async def connect(self, factory):
        _, protocol = await asyncio.get_running_loop().create_unix_connection(factory, self.path)
        return protocol


class TCPUpstream:
    """Another replica's gateway (TLS when ``ssl`` is given, checked against ``server_hostname``)."""

    def __init__(self, host: str, port: int, *, ssl=None, server_hostname: str | None = None):
        self.host, self.port, self.ssl, self.server_hostname = host, port, ssl, server_hostname

    async def connect(self, factory):
        _, protocol = await asyncio.get_running_loop().create_connection(
            factory, self.host, self.port, ssl=self.ssl, server_hostname=self.server_hostname if self.ssl else None)
        return protocol


HOP_HEADER = b"x-tether-gateway-hop"


def _nothing(*args) -> None:
    return None


class _Desync(Exception):
    """A request pipelined right behind a chunked body, in the same read: where its head
    begins is known only to llhttp, so it is not read (the connection closes after the
    answers before it; a client retries such a request on a new connection)."""


class _Refused(Exception):
    """A request head the gateway will not pass on (raised inside the parser's callback)."""

    def __init__(self, status: int, slug: str, detail: str):
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail


class _BadResponse(Exception):
    """The app spoke HTTP the gateway cannot relay."""


class _NeedsBody(Exception):
    """An answer whose body is re-framed (chunked, or until the app closes) met a response
    parser without a body callback: it is read again, from its head, by one with it."""


class _WithBody:
    """An app connection's parser callbacks with the body's pieces (``on_body``). The
    commonest answer, a Content-Length body, needs none: the body is taken from the read
    itself, and llhttp, without the callback, makes no copy of it."""

    __slots__ = ("on_message_begin", "on_headers_complete", "on_body", "on_message_complete")

    def __init__(self, app: _App):
        self.on_message_begin, self.on_headers_complete = app.on_message_begin, app.on_headers_complete
        self.on_body, self.on_message_complete = app._relay_body, app.on_message_complete


def _raised(exc: Exception) -> BaseException | None:
    """What a parser callback of ours raised (httptools reports it as the context of a
    ``HttpParserCallbackError``); None for the parser's own refusals."""
    return exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None


_PHRASES = {s.value: s.phrase.encode() for s in HTTPStatus}


def _write(transport: asyncio.Transport, out: list[bytes]) -> None:
    """Bytes held for a transport: one write when few (a head and a small body: one send)."""
    if len(out) == 1:
        transport.write(out[0])
    elif sum(map(len, out)) <= 1 << 16:
        transport.write(b"".join(out))
    else:
        transport.writelines(out)


def _head(status: int, reason: bytes, headers: core.Headers) -> bytes:
    if not reason:
        reason = _PHRASES.get(status, b"Unknown")
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, b"".join(b"%s: %s\r\n" % h for h in headers))


class _Exchange:
    """One request and its answer, from the request's head to the answer's last byte."""

    __slots__ = ("request", "http11", "body", "upgrade", "complete", "keep_alive", "pending", "pending_bytes",
                 "app", "tail", "refusal", "close", "task", "host", "clean")

    def __init__(self, request: Request | None, http11: bool = True, body: str = core.NO_BODY,
                 upgrade: bool = False, host: bytes = b"", clean: bool = False, keep_alive: bool = False):
        self.request, self.http11, self.body, self.upgrade = request, http11, body, upgrade
        self.host = host  # the Host field's value, as the browser sent it
        self.clean = clean  # its fields may go to the app as they came
        # the whole request has been read from the browser (one without a body: once its head
        # is, so an answer given before the parser says so keeps the connection)
        self.complete = request is not None and body == core.NO_BODY
        self.keep_alive = keep_alive  # the browser may send another request after this one
        self.pending: list[bytes] | None = None  # body bytes read before the app was connected
        self.pending_bytes = 0
        self.app: _App | None = None
        self.tail = b""  # bytes after an upgrade request, for the app once it switched
        self.refusal: Refuse | None = None  # refused while parsing: answered in turn, then the connection closes
        self.close = False  # close the browser's connection after the answer
        self.task: asyncio.Task | None = None


IDLE, HEAD, BODY = "idle", "head", "body"


class _Browser(asyncio.Protocol):
    """One browser connection: its request parser, its queue of requests (a browser may
    pipeline them; they are answered in order, one at a time), its kept app connection."""

    def __init__(self, gateway: Gateway):
        self.gw = gateway
        self.limits = gateway.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.counted = False
        self.client_ip = "unix"
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[_Exchange] = deque()
        self.ex: _Exchange | None = None  # the exchange being parsed
        self.in_head, self.head_bytes = True, 0
        # the bytes of a head that began in an earlier read, the read being parsed, and where
        # in the two the message being parsed begins (None: behind a chunked body, unknown)
        self.buf, self.data, self.at = b"", b"", 0
        self.body_left = 0  # of a Content-Length body
        self.passing = False  # the rest of such a body goes to the app without the parser
        self.dead = False  # no more requests are parsed on this connection
        self.spliced: _App | None = None
        self.kept: _App | None = None  # the app connection kept for the next request (its key: app.key)
        self.paused: set[str] = set()
        self.write_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # when it fires
        self.held: list[bytes] | None = None  # for the browser, written at the end of this turn of the loop
        self.last_head, self.last_reading = b"", None  # this connection's last request head, and its reading
        self.timeout_kind: str | None = None
        self.deadline = 0.0

    # ---------------------------------------------------------------- the connection

    def connection_made(self, transport) -> None:
        self.transport = transport
        gw = self.gw
        if gw.open_connections >= self.limits.max_connections:
            transport.close()
            return
        self.counted = True
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        gw.open_connections += 1
        gw.on_connections(gw.open_connections)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        self._arm(IDLE, self.limits.head_timeout)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.counted:
            self.counted = False
            self.gw.open_connections -= 1
            self.gw.on_connections(self.gw.open_connections)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for ex in self.queue:
            if ex.task is not None and not ex.task.done():
                ex.task.cancel()
            if ex.app is not None:
                ex.app.abandon()
        self.queue.clear()
        if self.spliced is not None:
            self.spliced.abandon()
        if self.kept is not None:
            self.kept.abandon()
            self.kept = None

    def eof_received(self) -> bool:
        if self.spliced is not None or not self.queue:
            return False  # a websocket's end, or a browser done with its requests: close
        if self.in_head and self.head_bytes == 0 and self.queue[-1].complete:
            self.dead = True
            self.queue[-1].close = True  # answer what was asked, then close
            return True
        return False  # mid-request: nothing sane to answer

    def pause_writing(self) -> None:
        self.write_paused = True
        app = self._app()
        if app is not None:
            app.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        app = self._app()
        if app is not None:
            app.resume_reading()

    def _app(self) -> _App | None:
        if self.spliced is not None:
            return self.spliced
        return self.queue[0].app if self.queue else None

    def _pause(self, why: str) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused.add(why)

    def _unpause(self, why: str) -> None:
        if why in self.paused:
            self.paused.discard(why)
            if not self.paused and self.transport is not None:
                self.transport.resume_reading()

    def _close(self) -> None:
        if self.transport is not None:
            if self.held is not None:
                held, self.held = self.held, None
                if not self.transport.is_closing():
                    _write(self.transport, held)
            self.transport.close()

    def send(self, data: bytes) -> None:
        """Every write to the browser: held to the end of this turn of the loop, with the other
        answers given in it (one wake-up of each reader per turn, not one per answer), in order."""
        if self.held is None:
            self.held = [data]
            self.gw.hold(self)
        else:
            self.held.append(data)

    # ---------------------------------------------------------------- timeouts, one timer

    def _arm(self, kind: str, seconds: float) -> None:
        self.timeout_kind = kind
        self.deadline = deadline = self.loop.time() + seconds
        timer = self.timer
        if timer is not None:
            if self.timer_at <= deadline:  # it fires first, and sees the later deadline
                return
            timer.cancel()
        self.timer, self.timer_at = self.loop.call_at(deadline, self._expire), deadline

    def _expire(self) -> None:
        self.timer = None
        kind = self.timeout_kind
        if kind is None or self.transport is None:
            return
        now = self.loop.time()
        if now < self.deadline or (kind == BODY and self.paused):  # activity since, or the app is slow
            self.deadline = max(self.deadline, now + (1.0 if self.paused else 0.0))
            self.timer, self.timer_at = self.loop.call_at(self.deadline, self._expire), self.deadline
            return
        self.timeout_kind = None
        if kind == HEAD:
            self._refuse_head(408, "head-timeout",
                              f"the request's headers did not arrive within {self.limits.head_timeout:g} s")
        else:
            self._close()

    # ---------------------------------------------------------------- parsing

    def data_received(self, data: bytes) -> None:
        if self.spliced is not None:
            self.spliced.from_browser(data)
            return
        if self.dead:
            return
        if self.passing:
            return self._pass_body(data)
        if self.in_head:
            room = self.limits.max_head_bytes - self.head_bytes
            if len(data) > room:
                # give the parser only what fits: if the head ends within it, the rest is a
                # body or the next request; if not, the head is too large
                self.head_bytes = self.limits.max_head_bytes
                self._feed(data[:room])
                if self.dead:
                    return
                if self.in_head:
                    return self._refuse_head(431, "headers-too-large", "request line and headers are limited to "
                                             f"{self.limits.max_head_bytes} bytes")
                return self.data_received(data[room:])
            self.head_bytes += len(data)
        elif self.timeout_kind == BODY:
            self.deadline = self.loop.time() + self.limits.body_timeout
        self._feed(data)

    def _pass_body(self, data: bytes) -> None:
        """A Content-Length body's bytes after its first piece: counted, not parsed."""
        if self.timeout_kind == BODY:
            self.deadline = self.loop.time() + self.limits.body_timeout
        left = self.body_left
        if len(data) < left:
            return self.on_body(data)
        self.on_body(data[:left] if len(data) > left else data)
        self.passing = False
        self.parser = httptools.HttpRequestParser(self)  # the old one still waits for the body
        self.buf, self.at = b"", 0
        self.on_message_complete()
        if len(data) > left:
            self.data_received(data[left:])

    def _feed(self, data: bytes) -> None:
        self.data = data
        try:
            self.parser.feed_data(data)
            if self.in_head:  # keep what has come of the next head (if any) for the next read
                at = self.at
                if at is None:  # the chunked body ended in this read, and no message began behind it
                    self.buf, self.at = b"", 0
                else:
                    whole = self.buf + data if self.buf else data
                    if at < len(whole):
                        self.buf, self.at = whole[at:], 0
                        if self.timeout_kind != HEAD and self.buf.strip(b"\r\n"):
                            # a head begun and not ended: it has head_timeout to arrive (one that
                            # arrives in one read, the commonest, costs the timer nothing)
                            self._arm(HEAD, self.limits.head_timeout)
                    else:
                        self.buf, self.at = b"", 0
            else:
                self.buf = b""
                if self.body_left > 0 and not self.ex.complete:
                    self.passing = True
        except httptools.HttpParserUpgrade as exc:
            # an upgrade request: what follows it is for the app, once (and if) it switches
            self.ex.tail = data[exc.args[0]:]
            self.dead = True
            self._pause("upgrade")
        except httptools.HttpParserError as exc:
            refused = _raised(exc)
            if isinstance(refused, _Desync):
                return self._desync()
            if isinstance(refused, _Refused):
                return self._refuse_head(refused.status, refused.slug, refused.detail)
            if refused is not None:
                log.error("gateway: reading a request failed", exc_info=refused)
            self._refuse_head(400, "bad-request", f"malformed request: {exc}")

    def on_message_begin(self) -> None:
        if self.at is None:
            raise _Desync()

    # (no on_url, no on_header: llhttp checks the head's every byte, and the head is taken
    # whole from the bytes it accepted, one split instead of a callback per field)

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        whole = self.buf + self.data if self.buf else self.data
        start = self.at
        end = whole.find(b"\r\n\r\n", start)
        first = whole[start]
        if first == 13 or first == 10:  # empty lines before the request, skipped as llhttp skips them
            start, _, end = core.locate_head(whole, start)
        try:
            if end < 0:
                reading = None
            else:
                head = whole[start:end + 4]
                if head == self.last_head:  # the same request again (polled, reloaded): read once
                    reading = self.last_reading
                else:
                    reading = core.read_request(head)
                    if len(head) <= core.REMEMBERED_HEAD:
                        self.last_head, self.last_reading = head, reading
            if reading is None:  # no HTTP/1.x version on its line
                version = parser.get_http_version()
                core.check_head(parser.get_method(), version, [])  # refuses the version
                raise core.GatewayError(400, "bad-request", "malformed request head")
            method, target, http11, host, body, length, host_value, clean, block, lines = reading
            if lines > self.limits.max_headers + 1:
                raise core.GatewayError(431, "too-many-headers",
                                        f"at most {self.limits.max_headers} headers are accepted")
        except core.GatewayError as exc:
            raise _Refused(exc.status, exc.slug, exc.detail) from None
        self.ex = ex = _Exchange(Request(method, target, None, host, self.client_ip, self.gw.scheme, block), http11,
                                 body, parser.should_upgrade(), host_value, clean, parser.should_keep_alive())
        self.body_left = length
        queue = self.queue
        queue.append(ex)
        if body == core.NO_BODY:
            self.at = end + 4
            self.timeout_kind = None
        else:
            self.at = end + 4 + length if body != core.CHUNKED else None
            self._arm(BODY, self.limits.body_timeout)
        if len(queue) == 1:
            self._start(ex)
        else:
            self._pause("pipelined")  # answered in order: read no further until this one's turn

    def on_body(self, data: bytes) -> None:
        ex = self.ex
        self.body_left -= len(data)
        if ex.app is not None:
            ex.app.write_body(data)
        elif not ex.close:
            if ex.pending is None:
                ex.pending = []
            ex.pending.append(data)
            ex.pending_bytes += len(data)
            if ex.pending_bytes > BUFFER:
                self._pause("buffer")

    def on_message_complete(self) -> None:
        ex = self.ex
        ex.complete = True
        self.in_head, self.head_bytes, self.body_left = True, 0, 0
        if self.timeout_kind == BODY:
            self.timeout_kind = None
        if ex.app is not None:
            if ex.body == core.CHUNKED:
                ex.app.end_body()
        elif not self.queue and not self.dead:  # answered already (by the gateway, at once): wait for the next
            self._arm(IDLE, self.limits.idle_timeout)

    def _desync(self) -> None:
        """Stop reading; the answers to the requests read so far are sent, then the connection closes."""
        self.dead = True
        self._pause("refused")
        if self.queue:
            self.queue[-1].close = True
        else:
            self._close()

    def _refuse_head(self, status: int, slug: str, detail: str) -> None:
        """A request the parser (or the head's rules) refused: answered in its turn, then closed.
        A body that turns out malformed (a bad chunk) ends its request: the app's connection
        is dropped (it never sees the request complete) and, unless its answer has begun,
        the refusal answers the request instead."""
        self.dead = True
        self._pause("refused")
        ex = self.ex
        if ex is not None and not ex.complete and self.queue and self.queue[-1] is ex:
            if ex.app is not None and ex.app.head_sent:
                self._close()
                return
            self.queue.pop()
            if ex.task is not None:
                ex.task.cancel()
            if ex.app is not None:
                ex.app.abandon()
        ex = _Exchange(None)
        ex.refusal = Refuse(status, slug, detail)
        ex.close = True
        self.queue.append(ex)
        if len(self.queue) == 1:
            self._start(ex)

    # ---------------------------------------------------------------- answering

    def _start(self, ex: _Exchange) -> None:
        if ex.refusal is not None:
            self.gw.on_refusal(ex.refusal.status)
            self._answer(ex, *self.gw.refusal(ex.request, ex.refusal))
            return
        now = self.gw.now
        if now is not None:  # the resolver may know at once: no task, no turn of the loop
            try:
                try:
                    decision = now(ex.request)
                except core.GatewayError as exc:
                    decision = Refuse(exc.status, exc.slug, exc.detail)
                if type(decision) is Forward:
                    return self._forward(ex, decision)
                if decision is not None:
                    return self._decided(ex, decision)
            except Exception:  # noqa: BLE001 - one connection's bug must not take the listener down
                log.exception("gateway connection failed")
                return self._close()
        ex.task = self.loop.create_task(self._serve(ex))

    async def _serve(self, ex: _Exchange) -> None:
        try:
            try:
                decision = await self.gw.resolver(ex.request)
            except core.GatewayError as exc:
                decision = Refuse(exc.status, exc.slug, exc.detail)
            if self.transport is None:
                return
            self._decided(ex, decision)
        except Exception:  # noqa: BLE001 - one connection's bug must not take the listener down
            log.exception("gateway connection failed")
            self._close()

    def _decided(self, ex: _Exchange, decision: Decision) -> None:
        if isinstance(decision, Forward):
            self._forward(ex, decision)
        elif isinstance(decision, Refuse):
            self.gw.on_refusal(decision.status)
            self._answer(ex, *self.gw.refusal(ex.request, decision))
        else:
            self._answer(ex, decision.status, decision.headers, decision.body)

    def _answer(self, ex: _Exchange, status: int, headers: core.Headers, body: bytes) -> None:
        """An answer of the gateway's own; the request's body, if any is still coming, is not read."""
        if not ex.complete or not ex.keep_alive or ex.upgrade:
            ex.close = True
        headers = [*headers, (b"content-length", b"%d" % len(body))]
        if ex.close:
            headers.append((b"connection", b"close"))
        self.send(_head(status, b"", headers) + body)
        self.finished(ex, None)

    def _forward(self, ex: _Exchange, fwd: Forward) -> None:
        # another replica's gateway checks every request it is passed: one connection each
        key = None if fwd.passthrough else getattr(fwd.upstream, "key", None)
        app = self.kept
        if app is not None:
            self.kept = None
            if key is not None and app.key == key and not app.closed and app.ex is None and not app.feeding \
                    and not app.transport.is_closing():  # the kept connection: no task, no wait
                app.start(self, ex, fwd)
                if self.write_paused:
                    app.pause_reading()
                if self.paused:
                    self._unpause("buffer")
                return
            app.abandon()
        ex.task = self.loop.create_task(self._connect(ex, fwd, key))

    async def _connect(self, ex: _Exchange, fwd: Forward, key: Any) -> None:
        try:
            app = await asyncio.wait_for(fwd.upstream.connect(_App), self.limits.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the app
            log.info("gateway: cannot reach %s/%s: %s", fwd.target.route.user, fwd.target.route.name, exc)
            (fwd.on_status or _nothing)(503)
            if self.transport is not None:
                self._answer(ex, *self.gw.refusal(ex.request, Refuse(
                    503, "app-unreachable", "the app behind this route is not answering (its node may be "
                    "reconnecting); retry shortly", [(b"retry-after", b"2")])))
            return
        if self.transport is None:
            app.abandon()
            return
        try:
            self._send(ex, fwd, app, key)
        except Exception:  # noqa: BLE001 - one connection's bug must not take the listener down
            log.exception("gateway connection failed")
            self._close()

    def _send(self, ex: _Exchange, fwd: Forward, app: _App, key: Any) -> None:
        app.key = key
        app.start(self, ex, fwd)
        if self.write_paused:
            app.pause_reading()
        self._unpause("buffer")

    def finished(self, ex: _Exchange, app: _App | None) -> None:
        """The answer to the first request in the queue has been written in full; ``app``
        is its app connection when it may serve this browser's next request."""
        self.queue.popleft()
        ex.app = None
        if app is not None:
            self.kept = app
        if self.paused:
            self._unpause("app")
        if ex.close or self.transport is None:
            self._close()
            return
        if self.queue:
            if len(self.queue) == 1:
                self._unpause("pipelined")
            self._start(self.queue[0])
        elif self.in_head and self.head_bytes == 0:
            deadline = self.loop.time() + self.limits.idle_timeout
            if self.timer is not None and self.timer_at <= deadline:  # (_arm's commonest case, inline)
                self.timeout_kind, self.deadline = IDLE, deadline
            else:
                self._arm(IDLE, self.limits.idle_timeout)

    def splice(self, app: _App) -> None:
        self.spliced = app
        self.timeout_kind = None
        ex = self.queue[0]
        if ex.tail:
            app.from_browser(ex.tail)
        self.paused.clear()
        if self.transport is not None:
            self.transport.resume_reading()


class _App(asyncio.Protocol):
    """One connection to an app: requests written to it, its responses parsed and relayed."""

    def __init__(self):
        self.transport: Any = None
        self.key: Any = None
        self.browser: _Browser | None = None
        self.ex: _Exchange | None = None
        # one parser per connection, made again only after an answer it did not read to its
        # end (to a HEAD, or a body passed on without it)
        self.parser: Any = None
        self.body_cb = False  # the parser hands over the body's pieces (see _WithBody)
        self.held: list[bytes] | None = None  # a request head, written at the end of this turn of the loop
        self.closed = False
        self.spliced = False
        self.in_head = False
        self.buf, self.data, self.at = b"", b"", 0  # as the browser side's: the head being read
        self.mode = self.down = core.NO_BODY
        self.head_sent = False
        self.out: list[bytes] = []  # for the browser, written once per read from the app (a head and a body: one write)
        self.keep = False  # the app will take another request on this connection
        self.left = 0  # of a Content-Length body
        self.passing = False  # the rest of such a body goes to the browser without the parser
        self.counted: Callable[[int, int], None] = _nothing
        # the route's status counter (not named on_status: httptools would take it for its callback)
        self.report_status: Callable[[int], None] = _nothing
        self.feeding = False  # inside the parser: not free for another request until it returns
        self.awaited: dict[_App, float] | None = None  # the gateway's, while the answer has not begun

    def _answered(self) -> None:
        self.awaited.pop(self, None)
        self.awaited = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)

    def abandon(self) -> None:
        if self.awaited is not None:
            self._answered()
        self.browser = self.ex = self.held = None
        if not self.closed:
            self.transport.close()

    def pause_reading(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self.browser is not None:
            self.browser._pause("app")

    def resume_writing(self) -> None:
        if self.browser is not None:
            self.browser._unpause("app")

    # ---------------------------------------------------------------- the request

    def start(self, browser: _Browser, ex: _Exchange, fwd: Forward) -> None:
        self.browser, self.ex = browser, ex
        if self.parser is None:
            self.parser, self.body_cb = httptools.HttpResponseParser(self), False
        self.head_sent = self.passing = False
        self.in_head, self.buf, self.at = True, b"", 0
        if self.out:
            self.out = []
        self.counted = fwd.on_bytes or _nothing
        self.report_status = fwd.on_status or _nothing
        request = ex.request
        if fwd.passthrough:
            upgrade = ex.upgrade
            headers = [(n, v) for n, v in request.headers
                       if n.lower() not in core.HOP_BY_HOP or (upgrade and n.lower() == b"upgrade")]
            headers += [(b"connection", b"upgrade")] if upgrade else []
            headers.append((HOP_HEADER, b"1"))
            if ex.body == core.CHUNKED:
                headers.append((b"transfer-encoding", b"chunked"))
            self.transport.write(b"%s %s HTTP/1.1\r\n%s\r\n" % (
                request.method, request.target, b"".join(b"%s: %s\r\n" % h for h in headers)))
        else:
            target = fwd.target
            head = core.upstream_head(
                request.method, target.path, request.block, ex.clean, request.client_ip, request.scheme, ex.host,
                target.prefix,
                core.cookie_name(request.scheme == "https", target.prefix), fwd.headers, ex.upgrade,
                ex.body == core.CHUNKED)
            if ex.complete and ex.body == core.NO_BODY and not ex.upgrade:
                # nothing else is written to this app before its answer: the write waits for the
                # end of this turn of the loop, with the other requests read in it
                self.held = [head]
                browser.gw.hold(self)
            else:
                self.transport.write(head)
        ex.app = self
        self.awaited = browser.gw.await_answer(self, browser.loop.time())
        if ex.pending:
            pending, ex.pending, ex.pending_bytes = ex.pending, None, 0
            for data in pending:
                self.write_body(data)
        if ex.complete and ex.body == core.CHUNKED:
            self.end_body()

    def write_body(self, data: bytes) -> None:
        self.counted(len(data), 0)
        if self.ex.body == core.CHUNKED:
            self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.transport.write(data)

    def end_body(self) -> None:
        if self.ex.body == core.CHUNKED:
            self.transport.write(b"0\r\n\r\n")

    # ---------------------------------------------------------------- the response

    def data_received(self, data: bytes) -> None:
        if self.awaited is not None:  # the answer began
            self._answered()
        if self.spliced:
            if self.browser is not None and self.browser.transport is not None:
                self.counted(0, len(data))
                self.browser.send(data)
            return
        if self.ex is None:  # bytes from an app with no request outstanding: it is not speaking HTTP
            self.abandon()
            return
        if self.passing:
            self._pass_body(data)
            return self._flush()
        ex = self.ex
        self.data, self.feeding = data, True
        try:
            self.parser.feed_data(data)
            if self.ex is ex:
                if self.in_head:  # keep what has come of the head for the next read
                    whole = self.buf + data if self.buf else data
                    self.buf, self.at = whole[self.at:], 0
                elif self.left > 0:
                    self.passing = True
            self.feeding = False
            if self.out:
                self._flush()
        except httptools.HttpParserUpgrade as exc:
            self.feeding = False
            self._flush()
            self._switch(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            self.feeding = False
            if isinstance(_raised(exc), _NeedsBody):
                rest = (self.buf + data if self.buf else data)[self.at:]
                self.parser, self.body_cb = httptools.HttpResponseParser(_WithBody(self)), True
                self.buf, self.at = b"", 0
                return self.data_received(rest)
            log.info("gateway: the app's response cannot be relayed: %s", _raised(exc) or exc)
            self._broken()

    def on_message_begin(self) -> None:
        if self.ex is None or not self.in_head:
            raise _BadResponse("bytes after its answer")

    # (no on_status, no on_header: as on the browser's side, the head is taken whole from
    # the bytes llhttp accepted)

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        ex = self.ex
        whole = self.buf + self.data if self.buf else self.data
        start = self.at
        end = whole.find(b"\r\n\r\n", start)
        first = whole[start]
        if first == 13 or first == 10:  # empty lines before the answer
            start, _, end = core.locate_head(whole, start)
        head = whole[start:end + 4]
        if head.count(b"\n") > MAX_APP_HEADERS + 2:
            raise _BadResponse(f"more than {MAX_APP_HEADERS} header fields")
        if status >= 200:
            keep_alive = ex.complete and ex.keep_alive and not ex.upgrade and not ex.close
            method = ex.request.method
            length = None if method == b"HEAD" or status == 204 or status == 304 else core.passable_length(head)
            if length is not None:  # the app's head as it came (the commonest answer)
                self.in_head, self.head_sent = False, True
                self.report_status(status)
                self.keep = parser.should_keep_alive()
                self.mode = self.down = core.LENGTH
                if not keep_alive:
                    ex.close = True
                    head = head[:-2] + b"connection: close\r\n\r\n"
                self._length_body(whole, start, end + 4, length, head)
                return
        line_end = whole.find(b"\r\n", start)
        line = whole[start:line_end].split(b" ", 2)
        reason, headers = line[2] if len(line) > 2 else b"", core.split_fields(whole[line_end:end + 2])
        if status >= 200:
            rewritten = core.response_head(status, method, headers, http11=ex.http11, keep_alive=keep_alive)
            if rewritten.body in (core.CHUNKED, core.UNTIL_CLOSE) and not self.body_cb:
                raise _NeedsBody()  # read again by a parser that hands over the body's pieces
            self.in_head, self.head_sent = False, True
            self.at = end + 4
            self.report_status(status)
            self.keep = parser.should_keep_alive()
            self.mode, self.down, self.left, ex.close = rewritten.body, rewritten.down, rewritten.length, rewritten.close
            out = _head(status, reason, rewritten.headers)
            if self.mode == core.LENGTH and not self.body_cb:
                self._length_body(whole, -1, end + 4, self.left, out)
            else:
                self.out.append(out)
            if method == b"HEAD":
                self.parser = None  # it would wait for the body a Content-Length announces
                self._done(False)
            return
        self.at = end + 4  # an informational answer's: the next head begins there
        if status == 101:
            if not ex.upgrade:
                raise _BadResponse("101 Switching Protocols to a request that asked for no upgrade")
            self.report_status(101)
            self.head_sent = True
            self.out.append(_head(101, reason, core.downstream_response_headers(headers, upgrade=True)))
        elif ex.http11 and status in (100, 103):
            self.out.append(_head(status, reason, core.downstream_response_headers(headers)))

    def _length_body(self, whole: bytes, start: int, body_at: int, length: int, head: bytes) -> None:
        """A Content-Length body's bytes in this read, taken after the head from the bytes
        llhttp has accepted (the parser has no body callback: llhttp counts the body and
        calls the message's end; no copy of each piece): the head and they are relayed as
        one piece, the read itself when it is exactly an answer that passes as it came."""
        n = len(whole) - body_at
        if n > length:
            n = length
        self.left = length - n
        self.at = body_at + n
        if n:
            self.counted(0, n)
            if start == 0 and body_at + n == len(whole) and len(head) == body_at:
                self.out.append(whole)  # the whole read is this answer, as it came
            else:
                self.out += (head, whole[body_at:body_at + n])
        else:
            self.out.append(head)

    def _relay_body(self, data: bytes) -> None:
        self.counted(0, len(data))
        self.left -= len(data)
        if self.down == core.CHUNKED:
            self.out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self.out.append(data)

    def on_message_complete(self) -> None:
        if self.in_head or self.ex is None:
            return  # an informational answer (the final one follows), or a 101 (the splice follows)
        if self.down == core.CHUNKED:
            self.out.append(b"0\r\n\r\n")
        self._done(self.keep and self.mode != core.UNTIL_CLOSE)

    def _pass_body(self, data: bytes) -> None:
        """A Content-Length body's bytes after its first piece: counted and relayed, not parsed."""
        left = self.left
        if len(data) < left:
            return self._relay_body(data)
        self.passing = False
        self.parser = None  # it still waits for the body
        self._relay_body(data[:left] if len(data) > left else data)
        self._done(self.keep and len(data) == left)  # bytes past the body: the app is not speaking HTTP

    def _flush(self) -> None:
        out = self.out
        if not out:
            return
        self.out = []
        browser = self.browser
        if browser is not None and browser.transport is not None:
            if browser.held is not None:
                browser.held += out
            elif len(out) == 1 and len(out[0]) > STREAMED:  # a streamed body's read: on at once
                browser.transport.write(out[0])
            else:
                browser.held = out
                browser.gw.hold(browser)

    def _done(self, reusable: bool) -> None:
        if self.out:
            self._flush()
        browser, ex = self.browser, self.ex
        self.browser = self.ex = None
        if not reusable or not ex.complete or ex.close:
            self.abandon()
            if browser is not None:
                browser.finished(ex, None)
        elif browser is not None:
            browser.finished(ex, self)

    def _switch(self, tail: bytes) -> None:
        self.spliced = True
        self.parser = None
        browser = self.browser
        if tail:
            self.counted(0, len(tail))
            browser.send(tail)
        browser.splice(self)

    def from_browser(self, data: bytes) -> None:
        self.counted(len(data), 0)
        if not self.closed:
            self.transport.write(data)

    def _broken(self) -> None:
        browser, ex = self.browser, self.ex
        self.abandon()
        if browser is None or browser.transport is None:
            return
        if self.head_sent:
            browser._close()  # mid-answer: nothing sane to add
            return
        self.report_status(502)
        ex.close = True
        browser._answer(ex, *browser.gw.refusal(ex.request, Refuse(
            502, "bad-gateway", "the app's answer was not valid HTTP/1.1")))

    def eof_received(self) -> bool:
        if self.ex is not None and self.head_sent and self.mode == core.UNTIL_CLOSE and not self.spliced:
            if self.down == core.CHUNKED:
                self.out.append(b"0\r\n\r\n")
            self._done(False)  # the app's close ended its body
        return False

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.awaited is not None:
            self._answered()
        browser = self.browser
        if browser is None:
            return
        if self.spliced:
            self.browser = None
            browser._close()
        elif self.ex is not None:
            if self.head_sent:
                self.browser = self.ex = None
                browser._close()  # the answer was cut short
            else:
                ex = self.ex
                self.browser = self.ex = None
                self.report_status(502)
                ex.close = True
                browser._answer(ex, *browser.gw.refusal(ex.request, Refuse(
                    502, "app-closed", "the app closed its connection without answering")))

    def silent(self, seconds: float) -> None:
        """The app sent nothing for ``seconds`` after the whole request reached it: 504, and
        this connection (its answer may still come: it must not reach the next request) closed."""
        browser, ex = self.browser, self.ex
        self.abandon()
        if browser is None or browser.transport is None:
            return
        self.report_status(504)
        ex.close = True
        browser._answer(ex, *browser.gw.refusal(ex.request, Refuse(
            504, "app-timeout", f"the app sent nothing for {seconds:g} s after the request (the gateway's "
            "answer_timeout): it may be stuck, or need longer")))


class Gateway:
    def __init__(self, resolver: Resolver, *, scheme: str = "http", limits: Limits | None = None,
                 on_refusal: Callable[[int], None] | None = None,
                 on_connections: Callable[[int], None] | None = None):
        self.resolver = resolver
        self.now: Callable[[Request], Decision | None] | None = getattr(resolver, "now", None)
        self.scheme = scheme
        self.limits = limits or Limits()
        self.open_connections = 0
        self.on_refusal = on_refusal or _nothing  # answers no route saw
        self.on_connections = on_connections or _nothing
        #: connections with bytes held for the end of this turn of the loop (see _Browser.send)
        self.held: list[_Browser | _App] = []
        #: app connections sent a request and silent since (loop time): checked by one coarse
        #: sweep, not a timer per request
        self.awaiting: dict[_App, float] = {}
        self.sweeping = False

    def await_answer(self, app: _App, now: float) -> dict[_App, float]:
        awaiting = self.awaiting
        awaiting[app] = now
        if not self.sweeping:
            self.sweeping = True
            asyncio.get_running_loop().call_later(self._sweep_every(), self._sweep_silent)
        return awaiting

    def _sweep_every(self) -> float:
        return max(0.05, min(1.0, self.limits.answer_timeout / 4))

    def _sweep_silent(self) -> None:
        """504 for each app silent past answer_timeout since the whole request reached it
        (a request body still arriving restarts its wait: body_timeout watches the browser)."""
        loop = asyncio.get_running_loop()
        now, limit, awaiting = loop.time(), self.limits.answer_timeout, self.awaiting
        for app, since in list(awaiting.items()):
            ex = app.ex
            if ex is None or app.browser is None:
                app._answered()
            elif not ex.complete:
                awaiting[app] = now
            elif now - since >= limit:
                app._answered()
                try:
                    app.silent(limit)
                except Exception:  # noqa: BLE001 - one connection's failure must not stop the sweep
                    log.exception("gateway: answering a silent app's request failed")
        if awaiting:
            loop.call_later(self._sweep_every(), self._sweep_silent)
        else:
            self.sweeping = False

    def hold(self, protocol: _Browser | _App) -> None:
        held = self.held
        held.append(protocol)
        if len(held) == 1:
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        held, self.held = self.held, []
        for protocol in held:
            out = protocol.held
            if out is None:  # (written already, by a close, or dropped with its connection)
                continue
            protocol.held = None
            transport = protocol.transport
            if transport is not None and not transport.is_closing():
                try:
                    if len(out) == 1:
                        transport.write(out[0])
                    else:
                        _write(transport, out)
                except Exception:  # noqa: BLE001 - one connection's failure must not hold the others' bytes
                    log.exception("gateway: writing held bytes failed")

    def protocol(self) -> asyncio.Protocol:
        """A protocol for one browser connection (``loop.create_server(gateway.protocol, ...)``)."""
        return _Browser(self)

    @staticmethod
    def refusal(request: Request | None, r: Refuse) -> tuple[int, core.Headers, bytes]:
        """A refusal as a page for browsers, problem+json for API clients (and for a request
        that could not be read)."""
        if request is not None and request.wants_html():
            title = html.escape(r.detail)
            body = (f"<!doctype html><meta charset=utf-8><title>{r.status}</title>"
                    f"<h1>{r.status}</h1><p>{title}</p>").encode()
            ctype = b"text/html; charset=utf-8"
        else:
            body = json.dumps({"type": f"urn:tether:problem:{r.slug}", "status": r.status, "detail": r.detail}).encode()
            ctype = b"application/problem+json"
        return r.status, [(b"content-type", ctype), *r.headers], body


async def serve(gateway: Gateway, host: str, port: int, *, ssl=None, sock=None) -> asyncio.Server:
    """Serve on ``host:port``, or on ``sock`` (a socket already bound and listening) when given."""
    loop = asyncio.get_running_loop()
    if sock is not None:
        return await loop.create_server(gateway.protocol, sock=sock, ssl=ssl, backlog=1024)
    return await loop.create_server(gateway.protocol, host, port, ssl=ssl, backlog=1024)
