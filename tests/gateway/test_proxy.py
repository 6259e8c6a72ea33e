"""The gateway's reverse proxy against a real app on a UNIX socket (uvicorn), with real
sockets as browsers: routing by host, what reaches the app and what comes back,
streaming, keep-alive, websockets, and the hostile requests it must refuse."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tether.gateway import core
from tether.gateway.proxy import Forward, Gateway, Limits, Refuse, UnixUpstream, serve

ROOT = Path(__file__).resolve().parents[2]
HOST = "demo--alice.localhost"


@pytest.fixture(scope="module")
def app_socket(tmp_path_factory):
    path = tmp_path_factory.mktemp("app") / "app.sock"
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--uds", str(path), "--log-level", "warning",
                             "tests.gateway.app:app"], cwd=ROOT)
    try:
        for _ in range(200):
            if path.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(path))
                    break
                except OSError:
                    pass
            if proc.poll() is not None:
                pytest.fail("the test app did not start")
            time.sleep(0.05)
        yield str(path)
    finally:
        proc.terminate()
        proc.wait(10)


class GatewayThread:
    def __init__(self, resolver, limits: Limits):
        self.loop = asyncio.new_event_loop()
        self.gateway = Gateway(resolver, limits=limits)
        started = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(serve(self.gateway, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(10)

    def stop(self):
        async def close():
            self.server.close()
            # end what is still open (a kept app connection, an idle browser): no task outlives the loop
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def gateway(app_socket, tmp_path_factory):
    dead = str(tmp_path_factory.mktemp("dead") / "nothing.sock")

    async def resolve(request):
        target = core.match(request.host, request.target, "localhost")
        if target.route == core.RouteKey("alice", "demo"):
            return Forward(UnixUpstream(app_socket), target)
        if target.route == core.RouteKey("alice", "down"):
            return Forward(UnixUpstream(dead), target)
        return Refuse(404, "no-such-route", f"no route {target.route.name} of {target.route.user}")

    g = GatewayThread(resolve, Limits(head_timeout=1.0, max_head_bytes=8192, max_headers=50))
    yield g
    g.stop()


def _get(gw, path, host=HOST, headers=None, method="GET", body=None):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    c.request(method, path, body=body, headers={"Host": host, **(headers or {})})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def _raw(gw, data: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def _count(gw) -> int:
    return json.loads(_get(gw, "/count")[1])


def test_a_request_reaches_the_app_with_the_gateways_forwarded_headers_and_without_its_credentials(gateway):
    r, body = _get(gateway, "/echo?x=1", headers={
        "Authorization": "Bearer tth_secret", "Cookie": "tether-gw=s3cret; theirs=keep",
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example"})
    assert r.status == 200
    seen = json.loads(body)
    headers = {k: v for k, v in seen["headers"]}
    assert seen["path"] == "/echo" and seen["query"] == "x=1"
    assert "authorization" not in headers
    assert headers["cookie"] == "theirs=keep"
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-host"] == HOST
    assert headers["x-forwarded-proto"] == "http"


def test_path_mode_strips_the_prefix_and_says_it(gateway):
    r, body = _get(gateway, "/apps/alice/demo/echo", host="localhost")
    seen = json.loads(body)
    assert r.status == 200 and seen["path"] == "/echo"
    assert dict(seen["headers"])["x-forwarded-prefix"] == "/apps/alice/demo"


def test_keep_alive_serves_several_requests_on_one_connection(gateway):
    c = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    for i in range(5):
        c.request("POST", "/echo", body=f"body {i}", headers={"Host": HOST})
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["body"] == f"body {i}"
    c.close()


def test_a_streamed_response_arrives_as_the_app_sends_it(gateway):
    c = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    started = time.monotonic()
    c.request("GET", "/stream", headers={"Host": HOST})
    r = c.getresponse()
    first = r.readline()
    first_at = time.monotonic() - started
    rest = r.read()
    total = time.monotonic() - started
    assert first == b"chunk 0\n" and rest.count(b"chunk") == 9
    assert first_at < 0.5 < total  # ten chunks 0.1 s apart: the first came long before the last


def test_a_large_request_body_streams_through(gateway):
    body = os.urandom(3 << 20).hex().encode()[: 5 << 20]
    r, data = _get(gateway, "/echo", method="PUT", body=body)
    assert r.status == 200 and json.loads(data)["body"].encode("latin-1") == body


def test_websocket_echo_passes_through(gateway):
    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", gateway.port))
    with connect(f"ws://{HOST}/ws", sock=sock, open_timeout=5) as ws:
        for msg in ("hello", "x" * 100_000):
            ws.send(msg)
            assert ws.recv(timeout=5) == msg
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5) == b"\x00\x01binary"


def test_an_apps_cookie_cannot_be_planted_on_other_routes(gateway):
    r, _ = _get(gateway, "/cookie")
    cookie = r.getheader("set-cookie")
    assert cookie.startswith("app=1") and "domain" not in cookie.lower()


@pytest.mark.parametrize("host, status", [
    ("other--alice.localhost", 404),  # no such route
    ("a-b-c.localhost", 404),  # conductor read this as key a, user b-c
    ("demo--alice.evil.localhost", 404),  # a dot in the label
    ("demo--alice.example.org", 404),  # not the gateway's domain
    ("Demo--Alice.localhost", 200),  # hosts are case-insensitive
])
def test_hosts_route_unambiguously(gateway, host, status):
    r, _ = _get(gateway, "/echo", host=host)
    assert r.status == status


def test_an_unreachable_app_is_503_with_retry_after_not_a_hang(gateway):
    started = time.monotonic()
    r, body = _get(gateway, "/", host="down--alice.localhost", headers={"Accept": "text/html"})
    assert r.status == 503 and r.getheader("retry-after") == "2"
    assert b"<h1>503</h1>" in body and time.monotonic() - started < 3


SMUGGLING = {
    "content-length and transfer-encoding": b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() +
    b"\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() +
    b"\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
    "obs-fold": b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX-A: a\r\n b\r\n\r\n",
    "request line of two parts": b"GET /echo\r\nHost: " + HOST.encode() + b"\r\n\r\n",
    "non-UTF-8 path": b"GET /\xff\xfe HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n",
    "gzip transfer-encoding": b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() +
    b"\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "two hosts": b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nHost: x--y.localhost\r\n\r\n",
    # where llhttp (httptools) and h11 differ, or could: each is refused before the app sees it
    "two equal content-lengths": b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() +
    b"\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
    "content-length list": b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nContent-Length: 4, 4\r\n\r\nabcd",
    "signed content-length": b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nContent-Length: +4\r\n\r\nabcd",
    "content-length overflow": b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() +
    b"\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "bare LF line ends": b"GET /echo HTTP/1.1\nHost: " + HOST.encode() + b"\n\n",
    "bare LF after a header": b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\nX-A: b\r\n\r\n",
    "bare CR in a value": b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX-A: a\rb\r\n\r\n",
    "NUL in a header value": b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX-A: a\x00b\r\n\r\n",
    "space before the colon": b"GET /echo HTTP/1.1\r\nHost : " + HOST.encode() + b"\r\n\r\n",
    "chunked twice": b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() +
    b"\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "HTTP/0.9 with headers": b"GET /echo\r\nHost: " + HOST.encode() + b"\r\n\r\n",
    "HTTP/2.0 on HTTP/1 framing": b"GET /echo HTTP/2.0\r\nHost: " + HOST.encode() + b"\r\n\r\n",
    "no host": b"GET /echo HTTP/1.1\r\n\r\n",
    "CONNECT": b"CONNECT " + HOST.encode() + b":80 HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\nraw",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_ambiguous_requests_are_refused_and_never_reach_the_app(gateway, name):
    before = _count(gateway)
    out = _raw(gateway, SMUGGLING[name])
    status = int(out.split(b" ", 2)[1])
    assert status in (400, 405, 501, 505), out[:200]
    assert out.count(b"HTTP/1.1 ") == 1 and b"connection: close" in out.lower()  # answered once, then closed
    assert _count(gateway) == before


BAD_BODIES = {
    "chunk size overflow": b"f" * 20 + b"\r\nabc\r\n0\r\n\r\n",
    "chunk size with bare LF": b"3\nabc\n0\n\n",
    "chunk size not hex": b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk longer than its size": b"3\r\nabcdef\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_a_malformed_chunked_body_ends_the_request_and_the_app_never_gets_it_whole(gateway, name):
    """The head passed, so the app may have seen it (the gateway streams bodies, as nginx
    does); the body's error ends the request: 400 to the browser, the app's connection
    dropped before the request completed, so it never answers it."""
    out = _raw(gateway, b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() +
               b"\r\nTransfer-Encoding: chunked\r\n\r\n" + BAD_BODIES[name])
    assert out.startswith(b"HTTP/1.1 400") and out.count(b"HTTP/1.1 ") == 1, out[:200]


def test_a_refused_request_behind_a_good_one_is_answered_in_turn_and_nothing_after_it_is_read(gateway):
    """Pipelined: the good request is answered, then the refusal; what follows the refused
    request (a smuggled one) never reaches the app."""
    before = _count(gateway)
    good = b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
    bad = SMUGGLING["content-length and transfer-encoding"]
    out = _raw(gateway, good + bad + good)
    assert [line.split(b" ")[1] for line in out.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")] == [b"200", b"400"]
    assert _count(gateway) == before + 1


def test_pipelined_requests_are_answered_in_order(gateway):
    bodies = (b"first", b"s" * 300_000, b"third")  # the second spans many reads: passed on, not parsed
    reqs = b"".join(b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(body), b"Connection: close\r\n" if body == b"third" else b"", body) for body in bodies)
    stream = _Unclosed(_raw(gateway, reqs))
    seen = []
    for _ in bodies:
        r = http.client.HTTPResponse(_Sock(stream))
        r.begin()
        seen.append(json.loads(r.read())["body"].encode())
    assert seen == list(bodies) and stream.read() == b""


class _Unclosed(io.BytesIO):
    """Bytes a sequence of http.client responses read one after another (each closes its file)."""

    def close(self):
        pass


class _Sock:
    def __init__(self, stream):
        self.stream = stream

    def makefile(self, mode):
        return self.stream


def test_a_chunked_request_body_reaches_the_app_whole(gateway):
    pieces = [b"abc", b"x" * 70_000, b"", b"end"]
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    out = _raw(gateway, b"POST /echo HTTP/1.1\r\nHost: " + HOST.encode() +
               b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body)
    r = http.client.HTTPResponse(_Sock(_Unclosed(out)))
    r.begin()
    assert r.status == 200 and json.loads(r.read())["body"].encode("latin-1") == b"".join(pieces)


def test_a_browser_that_stops_reading_stops_the_app_too(gateway):
    """Flow control: the gateway does not read the app faster than the browser takes it."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.sendall(b"GET /flood HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        time.sleep(1.5)  # reading nothing
        stalled = json.loads(_get(gateway, "/flooded")[1])
        assert stalled < 32 << 20, stalled  # socket buffers and the transports' high-water marks, not 256 MiB
        got = 0
        while got < 64 << 20:  # once the browser reads, the app goes on
            got += len(s.recv(1 << 20))
    assert json.loads(_get(gateway, "/flooded")[1]) > stalled


def test_an_oversized_head_is_431_and_the_gateway_does_not_buffer_it(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX-Big: ")
        sent = 0
        try:
            while sent < 50 << 20:  # bounded: the gateway closes long before
                s.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = s.recv(4096)
    assert out.startswith(b"HTTP/1.1 431"), out[:100]
    assert sent < 50 << 20


def test_too_many_headers_is_431(gateway):
    head = b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n" + b"".join(
        f"X-{i}: v\r\n".encode() for i in range(60)) + b"\r\n"
    assert _raw(gateway, head).startswith(b"HTTP/1.1 431")


def test_headers_sent_a_byte_at_a_time_are_cut_off(gateway):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        out = b""
        try:
            for b in b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n":
                s.sendall(bytes([b]))
                time.sleep(0.2)
                if time.monotonic() - started > 5:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            out = s.recv(4096)
        except ConnectionResetError:
            pass
    assert out.startswith(b"HTTP/1.1 408"), out[:100]
    assert time.monotonic() - started < 4  # head_timeout is 1 s here


def test_an_idle_connection_does_not_block_others(gateway):
    idle = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(50)]
    try:
        r, _ = _get(gateway, "/echo")
        assert r.status == 200
    finally:
        for s in idle:
            s.close()


@pytest.mark.parametrize("value, prefix, want", [
    ("/notebooks/a.ipynb?x=1", "", "/notebooks/a.ipynb?x=1"),
    ("https://evil.example/", "", "/"),
    ("//evil.example/", "", "/"),
    ("/\\evil.example/", "", "/"),
    ("%2F%2Fevil.example", "", "/"),
    ("/a%0d%0aSet-Cookie:%20x=1", "", "/"),
    ("javascript:alert(1)", "", "/"),
    ("/apps/alice/demo/x", "/apps/alice/demo", "/apps/alice/demo/x"),
    ("/apps/bob/other/x", "/apps/alice/demo", "/apps/alice/demo/"),
    ("", "", "/"),
])
def test_sign_in_redirects_stay_on_the_route(value, prefix, want):
    assert core.safe_next(value, prefix) == want


class _CountingApp:
    """A raw HTTP/1.1 app on a UNIX socket that counts the connections it accepts and
    answers each request "ok"; with close_after=True it closes after every answer."""

    def __init__(self, path: str, close_after: bool):
        self.path, self.close_after, self.accepted = path, close_after, 0

    async def handle(self, reader, writer):
        self.accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                close = b"connection: close\r\n" if self.close_after else b""
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n" + close + b"\r\nok")
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.mark.parametrize("close_after, connections", [(False, 1), (True, 3)])
def test_a_browser_connection_keeps_its_app_connection_unless_the_app_closes_it(tmp_path, close_after, connections):
    app = _CountingApp(str(tmp_path / "count.sock"), close_after)

    async def resolve(request):
        return Forward(UnixUpstream(app.path), core.match(request.host, request.target, "localhost"))

    g = GatewayThread(resolve, Limits())
    try:
        asyncio.run_coroutine_threadsafe(asyncio.start_unix_server(app.handle, app.path), g.loop).result(5)
        c = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        for _ in range(3):  # one browser connection, three requests
            c.request("GET", "/", headers={"Host": HOST})
            r = c.getresponse()
            assert (r.status, r.read()) == (200, b"ok")
        c.close()
        assert app.accepted == connections
    finally:
        g.stop()


class _ScriptedApp:
    """A raw app on a UNIX socket: each request's path names the bytes it answers with
    (and whether it then closes), so the gateway's reading of the app's HTTP is tested
    against answers no framework would send."""

    ANSWERS = {
        b"/until-close": (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it", True),
        b"/chunked": (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", False),
        b"/head": (b"HTTP/1.1 200 OK\r\ncontent-length: 12345\r\n\r\n", False),
        b"/no-content": (b"HTTP/1.1 204 No Content\r\n\r\n", False),
        b"/continue": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", False),
        b"/garbage": (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\ncontent-length: 2\r\n\r\nok", False),
        b"/ambiguous": (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", False),
        b"/switch": (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", False),
        b"/silent": (b"", True),
        b"/cut": (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this", True),
    }

    def __init__(self, path: str):
        self.path, self.accepted = path, 0

    def pieces(self, target: bytes) -> tuple[list[bytes], bool]:
        """The answer to a request for ``target``, in the pieces it is written in, and whether the app then closes."""
        answer, close = self.ANSWERS[target]
        return [answer], close

    async def handle(self, reader, writer):
        self.accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                pieces, close = self.pieces(head.split(b" ")[1])
                for i, piece in enumerate(pieces):
                    if i:
                        await asyncio.sleep(0.005)  # a read of its own for the gateway
                    writer.write(piece)
                    await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def scripted_gateway(app: _ScriptedApp):
    """A gateway in front of ``app`` (served on the gateway's loop), until the generator ends."""

    async def resolve(request):
        return Forward(UnixUpstream(app.path), core.match(request.host, request.target, "localhost"))

    g = GatewayThread(resolve, Limits())
    asyncio.run_coroutine_threadsafe(asyncio.start_unix_server(app.handle, app.path), g.loop).result(5)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    yield from scripted_gateway(_ScriptedApp(str(tmp_path_factory.mktemp("scripted") / "app.sock")))


def _exchange(g, path: bytes, *, method=b"GET", version=b"HTTP/1.1", extra=b"", then: bytes = b"") -> bytes:
    """The raw bytes the gateway sends back for one request (and ``then``, a second one)."""
    return _raw(g, b"%s %s %s\r\nHost: %s\r\n%s\r\n" % (method, path, version, HOST.encode(), extra) + then, wait=3)


def _responses(out: bytes, methods=("GET",)) -> list[tuple[int, dict, bytes]]:
    stream, got = _Unclosed(out), []
    for method in methods:
        r = http.client.HTTPResponse(_Sock(stream), method=method)
        r.begin()
        got.append((r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()))
    return got


def test_a_body_that_runs_until_the_app_closes_is_chunked_to_an_http11_browser_and_the_connection_kept(scripted):
    again = b"GET /chunked HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nConnection: close\r\n\r\n"
    (s1, h1, b1), (s2, _, b2) = _responses(_exchange(scripted, b"/until-close", then=again), ("GET", "GET"))
    assert (s1, h1["transfer-encoding"], b1) == (200, "chunked", b"all of it")
    assert (s2, b2) == (200, b"abcde")


def test_an_http10_browser_gets_a_body_delimited_by_close(scripted):
    out = _exchange(scripted, b"/chunked", version=b"HTTP/1.0")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower() and body == b"abcde"


def test_head_204_and_100_continue_keep_the_connection_usable(scripted):
    req = b"%s %s HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n%s\r\n"
    out = _raw(scripted, req % (b"HEAD", b"/head", b"") + req % (b"GET", b"/no-content", b"") +
               req % (b"POST", b"/continue", b"Expect: 100-continue\r\nContent-Length: 0\r\nConnection: close\r\n"))
    assert out.startswith(b"HTTP/1.1 200") and b"content-length: 12345" in out.lower()
    assert out.count(b"HTTP/1.1 100 Continue\r\n") == 1
    got = _responses(out.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b""), ("HEAD", "GET", "POST"))
    assert [(s, b) for s, _, b in got] == [(200, b""), (204, b""), (200, b"ok")]


@pytest.mark.parametrize("path, status", [
    (b"/garbage", 502),  # NUL in a header of the app's
    (b"/ambiguous", 502),  # Content-Length beside Transfer-Encoding from the app
    (b"/switch", 502),  # 101 to a request that asked for no upgrade
    (b"/silent", 502),  # closed without a word
])
def test_an_app_that_answers_broken_http_gets_the_browser_a_502(scripted, path, status):
    out = _exchange(scripted, path)
    assert out.startswith(b"HTTP/1.1 %d" % status) and b"connection: close" in out.lower(), out[:200]


def test_an_answer_the_app_cuts_short_is_cut_short_for_the_browser(scripted):
    out = _exchange(scripted, b"/cut")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 100" in head.lower() and body == b"only this"
