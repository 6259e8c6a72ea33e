"""The gateway's HTTP/1.1 reverse proxy: h11 on both sides, asyncio streams under it.

One task per browser connection: keep-alive, bodies streamed both ways without
buffering, websockets and other upgrades spliced byte for byte after the app's 101.
A :data:`Resolver` (forward's and apps', joined by the hub) decides per request:
refuse, redirect, answer, or forward to an :class:`Upstream` (a local UNIX socket,
or a channel of the node's SSH connection). The rules are in
:mod:`tether.gateway.core`; this module only moves bytes and enforces the limits:
head size and header count (431), the time a head may take to arrive, idle
keep-alive connections, upstream connect time, a stalled body, and how many
connections are open at once.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol

import h11

from tether.gateway import core

log = logging.getLogger("tether.gateway")

READ = 64 << 10


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 32 << 10
    max_headers: int = 100
    head_timeout: float = 10.0  # a request's line and headers must arrive within this
    idle_timeout: float = 75.0  # a keep-alive connection with no request
    connect_timeout: float = 5.0  # reaching the app
    body_timeout: float = 60.0  # no byte of a body, either way, for this long
    max_connections: int = 4096


@dataclass
class Request:
    method: bytes
    target: bytes
    headers: core.Headers
    host: str
    client_ip: str
    scheme: str

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


class Stream(Protocol):
    async def read(self, n: int) -> bytes: ...


class Upstream(Protocol):
    """Where a route's requests go; ``open`` makes one connection to the app.

    An upstream may also have a ``key``: upstreams with equal keys reach the same app
    the same way, so a browser connection keeps its connection to the app (a UNIX
    connection, an SSH channel) for its next request, as nginx's upstream ``keepalive``
    does. Without a key every request opens a connection of its own."""

    async def open(self) -> tuple[Any, Any]: ...


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


@dataclass
class Forward:
    upstream: Upstream
    target: core.Target
    on_bytes: Callable[[int, int], None] | None = None  # (to the app, to the browser): activity and metrics
    on_status: Callable[[int], None] | None = None  # the app's answer (or the gateway's): per-route metrics
    #: to another replica's gateway, which holds the route: the request goes as it came
    #: (credentials included: that gateway checks them again), marked as one hop
    passthrough: bool = False
    #: headers the gateway vouches for, added after the client's (e.g. X-Tether-User)
    headers: core.Headers = field(default_factory=list)


Decision = Refuse | Reply | Forward
Resolver = Callable[[Request], Awaitable[Decision]]


class UnixUpstream:
    def __init__(self, path: str):
        self.path = path
        self.key = ("unix", path)

    async def open(self):
        return await asyncio.open_unix_connection(self.path, limit=READ)


class TCPUpstream:
    """Another replica's gateway (TLS when ``ssl`` is given, checked against ``server_hostname``)."""

    def __init__(self, host: str, port: int, *, ssl=None, server_hostname: str | None = None):
        self.host, self.port, self.ssl, self.server_hostname = host, port, ssl, server_hostname

    async def open(self):
        return await asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=READ,
                                             server_hostname=self.server_hostname if self.ssl else None)


HOP_HEADER = b"x-tether-gateway-hop"


class _Closed(Exception):
    """The browser's connection is over (cleanly or not): stop serving it."""


class _Kept:
    """The connection to the app a browser connection keeps between its requests.

    Opening one per request cost a connect and an accept for every request on a local
    socket, and over SSH a channel-open round trip to the node (where the node's ssh
    connects to the app's socket again). Measured on a local socket (one browser
    connection, requests one after another): a quarter to a third of the time to first
    byte, a fifth of the gateway's CPU per request. Only a connection whose
    last exchange ended cleanly on both sides is kept, only for an upstream with the same
    ``key``, and never after the app closed it (EOF seen) or after an upgrade."""

    def __init__(self):
        self.key: Any = None
        self.conn: tuple[Any, Any] | None = None

    def take(self, key: Any) -> tuple[Any, Any] | None:
        conn, self.conn = self.conn, None
        if conn is None:
            return None
        at_eof, closing = getattr(conn[0], "at_eof", None), getattr(conn[1], "is_closing", None)
        if key is not None and key == self.key and not (at_eof and at_eof()) and not (closing and closing()):
            return conn
        conn[1].close()
        return None

    def keep(self, key: Any, conn: tuple[Any, Any]) -> None:
        self.key, self.conn = key, conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


class Gateway:
    def __init__(self, resolver: Resolver, *, scheme: str = "http", limits: Limits | None = None,
                 on_refusal: Callable[[int], None] | None = None,
                 on_connections: Callable[[int], None] | None = None):
        self.resolver = resolver
        self.scheme = scheme
        self.limits = limits or Limits()
        self.open_connections = 0
        self.on_refusal = on_refusal or (lambda status: None)  # answers no route saw
        self.on_connections = on_connections or (lambda n: None)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.limits.max_connections:
            writer.close()
            return
        self.open_connections += 1
        self.on_connections(self.open_connections)
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
        kept = _Kept()
        try:
            first = True
            while True:
                request = await self._read_head(conn, reader, writer, client_ip, first)
                first = False
                if request is None:
                    return
                await self._serve(conn, reader, writer, request, kept)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (_Closed, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # noqa: BLE001 - one connection's bug must not take the listener down
            log.exception("gateway connection failed")
        finally:
            kept.close()
            self.open_connections -= 1
            self.on_connections(self.open_connections)
            writer.close()

    async def _read_head(self, conn: h11.Connection, reader, writer, client_ip: str, first: bool) -> Request | None:
        """The next request's head, within the limits; None when the browser is done."""
        limits = self.limits
        raw = bytearray()
        deadline_for_first_byte = limits.head_timeout if first else limits.idle_timeout
        started = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_for_first_byte
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._refuse_raw(writer, exc.error_status_hint, "bad-request", f"malformed request: {exc}")
                return None
            if isinstance(event, h11.Request):
                break
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            # NEED_DATA
            if len(raw) > limits.max_head_bytes:
                await self._refuse_raw(writer, 431, "headers-too-large",
                                       f"request line and headers are limited to {limits.max_head_bytes} bytes")
                return None
            left = deadline - loop.time()
            if left <= 0:
                if started:
                    await self._refuse_raw(writer, 408, "head-timeout",
                                           f"the request's headers did not arrive within {limits.head_timeout:g} s")
                return None
            try:
                # never buffer past the cap: at most one byte more than it allows
                data = await asyncio.wait_for(reader.read(min(READ, limits.max_head_bytes + 1 - len(raw))), left)
            except asyncio.TimeoutError:
                continue
            if not started and data:
                started = True
                deadline = loop.time() + limits.head_timeout
            raw += data
            conn.receive_data(data)
            if not data:
                continue
        if len(event.headers) > limits.max_headers:
            await self._refuse_raw(writer, 431, "too-many-headers", f"at most {limits.max_headers} headers are accepted")
            return None
        headers = list(event.headers.raw_items())
        head_end = bytes(raw).find(b"\r\n\r\n")
        try:
            core.check_head(event.method, headers, bytes(raw[: head_end if head_end >= 0 else len(raw)]))
            host_value = next((v for n, v in headers if n.lower() == b"host"), b"")
            host = core.split_host(host_value)
        except core.GatewayError as exc:
            await self._refuse_raw(writer, exc.status, exc.slug, exc.detail)
            return None
        return Request(event.method, event.target, headers, host, client_ip, self.scheme)

    async def _serve(self, conn: h11.Connection, reader, writer, request: Request, kept: _Kept) -> None:
        try:
            decision = await self.resolver(request)
        except core.GatewayError as exc:
            decision = Refuse(exc.status, exc.slug, exc.detail)
        if isinstance(decision, Refuse):
            self.on_refusal(decision.status)
            await self._discard_body(conn, reader)
            await self._send_simple(conn, writer, *self._refusal(request, decision))
        elif isinstance(decision, Reply):
            await self._discard_body(conn, reader)
            await self._send_simple(conn, writer, decision.status, decision.headers, decision.body)
        else:
            await self._forward(conn, reader, writer, request, decision, kept)

    def _refusal(self, request: Request, r: Refuse) -> tuple[int, core.Headers, bytes]:
        if request.wants_html():
            title = html.escape(r.detail)
            body = (f"<!doctype html><meta charset=utf-8><title>{r.status}</title>"
                    f"<h1>{r.status}</h1><p>{title}</p>").encode()
            ctype = b"text/html; charset=utf-8"
        else:
            body = json.dumps({"type": f"urn:tether:problem:{r.slug}", "status": r.status, "detail": r.detail}).encode()
            ctype = b"application/problem+json"
        return r.status, [(b"content-type", ctype), *r.headers], body

    async def _send_simple(self, conn: h11.Connection, writer, status: int, headers: core.Headers,
                           body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        if conn.their_state is not h11.DONE:
            headers.append((b"connection", b"close"))
        await self._send(conn, writer, h11.Response(status_code=status, headers=headers))
        if body:
            await self._send(conn, writer, h11.Data(data=body))
        await self._send(conn, writer, h11.EndOfMessage())

    async def _send(self, conn: h11.Connection, writer, event) -> None:
        data = conn.send(event)
        if data:
            writer.write(data)
            await writer.drain()

    async def _discard_body(self, conn: h11.Connection, reader) -> None:
        """Read and drop a refused request's body, if it is small and quick; else close after answering."""
        budget = 64 << 10
        while conn.their_state is h11.SEND_BODY and budget > 0:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return
            if event is h11.NEED_DATA:
                try:
                    data = await asyncio.wait_for(reader.read(READ), 1.0)
                except asyncio.TimeoutError:
                    return
                budget -= len(data)
                conn.receive_data(data)
                if not data:
                    return
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def _refuse_raw(self, writer, status: int, slug: str, detail: str) -> None:
        """Answer a request h11 could not take (or we would not) and close the connection."""
        body = json.dumps({"type": f"urn:tether:problem:{slug}", "status": status, "detail": detail}).encode()
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # a stand-in request, so h11 lets us answer
        conn.next_event()
        head = conn.send(h11.Response(status_code=status, headers=[
            (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]))
        try:
            writer.write(head + body)
            await writer.drain()
        except ConnectionError:
            pass
        raise _Closed

    async def _forward(self, conn: h11.Connection, reader, writer, request: Request, fwd: Forward,
                       kept: _Kept) -> None:
        limits = self.limits
        # another replica's gateway checks every request it is passed: one connection each
        key = None if fwd.passthrough else getattr(fwd.upstream, "key", None)
        try:
            up_reader, up_writer = kept.take(key) or await asyncio.wait_for(fwd.upstream.open(),
                                                                            limits.connect_timeout)
        except (OSError, asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001 - any failure to reach the app
            log.info("gateway: cannot reach %s/%s: %s", fwd.target.route.user, fwd.target.route.name, exc)
            if fwd.on_status:
                fwd.on_status(503)
            await self._discard_body(conn, reader)
            await self._send_simple(conn, writer, *self._refusal(request, Refuse(
                503, "app-unreachable", "the app behind this route is not answering (its node may be "
                "reconnecting); retry shortly", [(b"retry-after", b"2")])))
            return
        client = h11.Connection(h11.CLIENT)
        upgrade = core.is_upgrade(request.headers)
        if fwd.passthrough:
            headers = [(n, v) for n, v in request.headers
                       if n.lower() not in core.HOP_BY_HOP or (upgrade and n.lower() == b"upgrade")]
            headers += [(b"connection", b"upgrade")] if upgrade else []
            headers.append((HOP_HEADER, b"1"))
            target_path = request.target
        else:
            headers = core.upstream_request_headers(
                request.headers, client_ip=request.client_ip, scheme=request.scheme,
                host=next((v for n, v in request.headers if n.lower() == b"host"), b""),
                prefix=fwd.target.prefix, cookie=core.cookie_name(request.scheme == "https", fwd.target.prefix),
                extra=fwd.headers)
            target_path = fwd.target.path
        counted = fwd.on_bytes or (lambda up, down: None)
        try:
            up_writer.write(client.send(h11.Request(method=request.method, target=target_path, headers=headers)))
            await up_writer.drain()
            pump = asyncio.create_task(self._pump_request(conn, reader, client, up_writer, counted))
            try:
                switched = await self._pump_response(conn, writer, client, up_reader, counted, upgrade,
                                                     fwd.on_status or (lambda status: None))
                if not switched:
                    await pump  # the request's body was sent in full (or the browser stopped sending)
            finally:
                if not pump.done():
                    pump.cancel()
            if switched:
                await self._splice(reader, writer, up_reader, up_writer, conn.trailing_data[0],
                                   client.trailing_data[0], counted)
                raise _Closed
            if key is not None and client.our_state is h11.DONE and client.their_state is h11.DONE \
                    and not client.trailing_data[0]:
                kept.keep(key, (up_reader, up_writer))  # the app may serve this browser's next request
                up_writer = None
        finally:
            if up_writer is not None:
                up_writer.close()

    async def _pump_request(self, conn: h11.Connection, reader, client: h11.Connection, up_writer, counted) -> None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(READ), self.limits.body_timeout)
                conn.receive_data(data)
                if not data and conn.their_state is h11.SEND_BODY:
                    raise _Closed
                continue
            if event is h11.PAUSED:
                return
            if isinstance(event, h11.Data):
                counted(len(event.data), 0)
                up_writer.write(client.send(h11.Data(data=event.data)))
                await up_writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                up_writer.write(client.send(h11.EndOfMessage()))
                await up_writer.drain()
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed

    async def _pump_response(self, conn: h11.Connection, writer, client: h11.Connection, up_reader, counted,
                             upgrade: bool, on_status: Callable[[int], None]) -> bool:
        """Relay the app's response; True when it switched protocols (a websocket)."""
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Closed from exc  # the app spoke broken HTTP: nothing sane to relay
            if event is h11.NEED_DATA:
                # no timeout: a server-sent event stream may stay quiet for long; the app decides
                client.receive_data(await up_reader.read(READ))
                continue
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101 and upgrade:
                    on_status(101)
                    await self._send(conn, writer, h11.InformationalResponse(
                        status_code=101, headers=core.downstream_response_headers(list(event.headers.raw_items()),
                                                                                   upgrade=True)))
                    return True
                continue  # 100 Continue and the like: h11 answers those for the browser itself
            if isinstance(event, h11.Response):
                on_status(event.status_code)
                await self._send(conn, writer, h11.Response(
                    status_code=event.status_code, reason=event.reason,
                    headers=core.downstream_response_headers(list(event.headers.raw_items()))))
            elif isinstance(event, h11.Data):
                counted(0, len(event.data))
                await self._send(conn, writer, h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self._send(conn, writer, h11.EndOfMessage())
                return False
            elif event is h11.PAUSED:
                return client.our_state is h11.SWITCHED_PROTOCOL
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed

    async def _splice(self, reader, writer, up_reader, up_writer, from_browser: bytes, from_app: bytes,
                      counted) -> None:
        """After a 101: raw bytes both ways until either side closes."""

        async def copy(src, dst, first: bytes, up: bool) -> None:
            if first:
                dst.write(first)
            while True:
                data = await src.read(READ)
                if not data:
                    break
                counted(len(data), 0) if up else counted(0, len(data))
                dst.write(data)
                await dst.drain()
            try:
                if dst.can_write_eof():
                    dst.write_eof()
            except (OSError, RuntimeError):
                pass

        tasks = [asyncio.create_task(copy(reader, up_writer, from_browser, True)),
                 asyncio.create_task(copy(up_reader, writer, from_app, False))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def serve(gateway: Gateway, host: str, port: int, *, ssl=None) -> asyncio.Server:
    return await asyncio.start_server(gateway.handle, host, port, ssl=ssl, limit=READ, backlog=1024)
