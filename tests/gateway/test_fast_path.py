"""The gateway's fast path for requests/s, held to the same behaviour as before it:

- an answer's Content-Length body is taken from the app's read (llhttp counts it, with no
  body callback), and a chunked or until-close answer is read again from its head by a
  parser with one: every answer kind, split by the app at every offset, reaches the
  browser as when it comes in one piece;
- writes wait for the end of the loop's turn: answers relayed from the app and answers
  the gateway gives itself at once (a resolver's ``now``) interleave in a pipeline and
  still go out in order, split at every byte boundary; a connection that closes after
  its answer gets the answer first;
- a resolver that decides at once meets every hostile head of the issue, split at every
  offset, and refuses it before the app sees it;
- the timeouts still fire: a slow head gets 408, a kept connection left idle is closed
  at idle_timeout, an app that never accepts the connection is a 503 after connect_timeout.

Real sockets throughout: the test app (uvicorn) and raw apps on UNIX sockets, real TCP
browsers, and the protocol driven read by read where a split must be exact."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.gateway import core
from tether.gateway.proxy import Forward, Gateway, Limits, Refuse, TCPUpstream, UnixUpstream
from tests.gateway.test_head_block import FIELDS, HOSTILE, _answers, _Llhttp, _Recorder, _whole
from tests.gateway.test_proxy import (  # noqa: F401 - the module's fixtures, reused
    HOST,
    GatewayThread,
    _count,
    _ScriptedApp,
    _raw,
    app_socket,
    gateway,
)


class _Now:
    """A resolver that decides at once (``now``), as the hub's does for a route and a
    credential it checked within the second: the demo route forwards, any other is refused
    by the gateway itself, in the same turn of the loop."""

    def __init__(self, sock_path: str):
        self.upstream = UnixUpstream(sock_path)

    def now(self, request):
        target = core.match(request.host, request.target, "localhost")
        if target.route == core.RouteKey("alice", "demo"):
            return Forward(self.upstream, target)
        return Refuse(404, "no-such-route", "no such route")

    async def __call__(self, request):
        return self.now(request)


def _drive(gateway: Gateway, reads: list[bytes], answers: int) -> tuple[bytes, bool]:
    """One browser connection fed ``reads`` one by one (a turn of the loop between them):
    the bytes the gateway wrote back once ``answers`` arrived (or it closed), and whether it closed."""

    async def run():
        loop = asyncio.get_running_loop()
        protocol = gateway.protocol()
        browser = _Recorder(protocol, loop)
        protocol.connection_made(browser)
        for data in reads:
            protocol.data_received(data)
            await asyncio.sleep(0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not browser.closed and not _whole(browser.out, answers):
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.01)
        closed = browser.closed
        browser.close()
        await asyncio.sleep(0)
        return browser.out, closed

    return asyncio.run(run())


# ---------------------------------------------------------------- a head's whole reading is llhttp's


@settings(max_examples=300, deadline=None)
@given(FIELDS, st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT"]),
       st.sampled_from([b"/", b"/a?b=c", b"*", b"/x%20y", b"http://h/p"]),
       st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9"]))
def test_a_heads_reading_is_llhttps_line_and_the_blocks_rules(fields, method, target, version):
    lines = b"".join(f"{n}:{before}{v}{after}\r\n".encode() for n, v, before, after in fields)
    head = method + b" " + target + b" " + version + b"\r\n" + lines + b"\r\n"
    theirs = _Llhttp()
    parser = httptools.HttpRequestParser(theirs)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # (CONNECT: its head was read whole)
    except httptools.HttpParserError:
        return  # refused by llhttp: never read by the gateway
    try:
        reading = core.read_request(head)
    except core.GatewayError as exc:
        with pytest.raises(core.GatewayError) as got:
            core.check_block(method, parser.get_http_version(), head[head.index(b"\r\n"):-2])
        assert (got.value.status, got.value.slug) == (exc.status, exc.slug)
        return
    if parser.get_http_version() not in ("1.0", "1.1"):
        assert reading is None  # (the gateway asks llhttp, and refuses the version)
        return
    method_read, target, http11, host, body, length, value, clean, block, lines = reading
    assert (method_read, target, http11) == (parser.get_method(), theirs.url, parser.get_http_version() == "1.1")
    assert block == head[head.index(b"\r\n"):-2]
    assert (host, body, length, value, clean) == core.check_block(method, parser.get_http_version(), block)
    assert lines == len(theirs.headers) + 1


# ---------------------------------------------------------------- held writes keep the order


def _get(path: bytes, host: str = HOST, close: bool = False) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, host.encode(), b"Connection: close\r\n" if close else b"")


PIPELINE = (_get(b"/echo?n=1") + _get(b"/echo?n=2", host="nothing--alice.localhost") + _get(b"/echo?n=3") +
            _get(b"/echo?n=4", host="nothing--alice.localhost") + _get(b"/echo?n=5", close=True))


def _in_order(out: bytes) -> list[tuple[int, str]]:
    return [(status, json.loads(body)["query"] if status == 200 else "refused") for status, body in _answers(out)]


WANT = [(200, "n=1"), (404, "refused"), (200, "n=3"), (404, "refused"), (200, "n=5")]


def test_relayed_answers_and_the_gateways_own_go_out_in_order_in_one_read(app_socket):
    out, closed = _drive(Gateway(_Now(app_socket)), [PIPELINE], 5)
    assert _in_order(out) == WANT and closed  # the last asked to close: after its answer


def test_relayed_answers_and_the_gateways_own_go_out_in_order_split_at_every_byte_boundary(app_socket):
    gateway = Gateway(_Now(app_socket))
    for cut in range(1, len(PIPELINE)):
        out, closed = _drive(gateway, [PIPELINE[:cut], PIPELINE[cut:]], 5)
        assert _in_order(out) == WANT and closed, cut


def test_many_browsers_at_once_each_get_their_own_answers(app_socket):
    """Writes held in one turn for many connections go each to its own browser."""
    g = GatewayThread(_Now(app_socket), Limits())
    try:
        socks = [socket.create_connection(("127.0.0.1", g.port), timeout=10) for _ in range(32)]
        for i, s in enumerate(socks):
            s.sendall(_get(b"/echo?who=%d" % i) + _get(b"/echo?who=%d&again=1" % i, close=True))
        for i, s in enumerate(socks):
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            s.close()
            assert [json.loads(b)["query"] for _, b in _answers(out)] == [f"who={i}", f"who={i}&again=1"]
    finally:
        g.stop()


# ---------------------------------------------------------------- answers split by the app at every offset


class _SplitApp(_ScriptedApp):
    """A raw app on a UNIX socket: ``GET /NAME/CUT`` is answered with ANSWERS[NAME] written
    in two pieces, CUT bytes and the rest, a few milliseconds apart (two reads for the gateway)."""

    ANSWERS = {
        "plain": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-App: 1\r\n\r\n0123456789", False),
        "cookie": (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: a=1; Domain=localhost\r\n\r\nabc", False),
        "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", False),
        "continue": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        "until-close": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", True),
    }

    def pieces(self, target: bytes) -> tuple[list[bytes], bool]:
        _, name, cut = target.decode().split("/")
        answer, close = self.ANSWERS[name]
        return [answer[:int(cut)], answer[int(cut):]], close


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    app = _SplitApp(str(tmp_path_factory.mktemp("split") / "app.sock"))
    g = GatewayThread(_Now(app.path), Limits())
    asyncio.run_coroutine_threadsafe(asyncio.start_unix_server(app.handle, app.path), g.loop).result(5)
    yield g
    g.stop()


def _one_answer(s: socket.socket, path: bytes) -> bytes:
    """A request on the kept connection ``s`` and its answer's bytes, read whole."""
    s.sendall(_get(path))
    out = b""
    while True:
        out += s.recv(65536)
        try:
            [_] = _answers(out)
        except Exception:  # noqa: BLE001 - not whole yet
            continue
        return out


@pytest.mark.parametrize("name, want", [
    ("plain", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-App: 1\r\n\r\n0123456789"),  # as it came
    ("cookie", b"abc"),
    ("chunked", b"abcde"),
    ("continue", b"ok"),
])
def test_an_answer_split_by_the_app_at_every_offset_reaches_the_browser_as_one(split, name, want):
    answer = _SplitApp.ANSWERS[name][0]
    with socket.create_connection(("127.0.0.1", split.port), timeout=10) as s:  # one kept connection for all
        whole = _one_answer(s, b"/%s/0" % name.encode())
        for cut in range(1, len(answer)):
            out = _one_answer(s, b"/%s/%d" % (name.encode(), cut))
            if name == "chunked":  # (re-framed per read: a piece split in two is two chunks)
                assert _answers(out) == _answers(whole), (cut, out)
            else:
                assert out == whole, (cut, out)
    if name == "plain":
        assert whole == want
    else:
        assert _answers(whole)[-1] == (200, want)
    if name == "cookie":
        assert b"domain" not in whole.lower()


def test_a_body_until_the_app_closes_split_at_every_offset_is_chunked_to_the_browser(split):
    answer = _SplitApp.ANSWERS["until-close"][0]
    for cut in range(0, len(answer)):
        with socket.create_connection(("127.0.0.1", split.port), timeout=10) as s:
            out = _one_answer(s, b"/until-close/%d" % cut)
        assert b"transfer-encoding: chunked" in out.lower() and _answers(out) == [(200, b"all of it")], cut


# ---------------------------------------------------------------- hostile heads, decided at once


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_head_split_at_every_offset_is_refused_when_the_resolver_decides_at_once(app_socket, gateway,
                                                                                           name):
    before = _count(gateway)  # (the same app: what it counted is what it saw)
    g = Gateway(_Now(app_socket), limits=Limits(max_headers=10))
    data = HOSTILE[name]
    for cut in range(1, len(data)):
        out, closed = _drive(g, [data[:cut], data[cut:]], 1)
        assert int(out.split(b" ", 2)[1]) in (400, 431), (cut, out[:200])
        assert out.count(b"HTTP/1.1 ") == 1 and b"connection: close" in out.lower() and closed, cut
    assert _count(gateway) == before


# ---------------------------------------------------------------- timeouts


def test_a_slow_head_gets_408_when_the_resolver_decides_at_once(app_socket):
    g = GatewayThread(_Now(app_socket), Limits(head_timeout=1.0))
    try:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
            s.sendall(_get(b"/echo"))  # one answered request: the connection is kept
            assert _answers(_read_answer(s))[0][0] == 200
            s.sendall(b"GET /echo HTTP/1.1\r\nHo")  # the next head never ends
            out = s.recv(4096)
        assert out.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 4
    finally:
        g.stop()


def test_a_kept_connection_left_idle_is_closed_at_idle_timeout(app_socket):
    g = GatewayThread(_Now(app_socket), Limits(idle_timeout=1.0))
    try:
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
            for _ in range(3):  # answered requests re-arm the idle time
                s.sendall(_get(b"/echo"))
                assert _answers(_read_answer(s))[0][0] == 200
            idle_from = time.monotonic()
            assert s.recv(4096) == b""  # closed by the gateway, with nothing more said
            assert 0.9 < time.monotonic() - idle_from < 4
    finally:
        g.stop()


def test_an_app_that_never_accepts_the_connection_is_503_after_connect_timeout(tmp_path):
    """A TCP app whose accept queue is full: the kernel drops the gateway's SYN, and
    connecting never completes (its listener is real; it just never answers)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue: later connections are never answered
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        time.sleep(0.2)

        async def resolve(request):
            return Forward(TCPUpstream("127.0.0.1", port), core.match(request.host, request.target, "localhost"))

        g = GatewayThread(resolve, Limits(connect_timeout=1.0))
        try:
            started = time.monotonic()
            out = _raw(g, _get(b"/", close=True), wait=8)
            assert out.startswith(b"HTTP/1.1 503") and b"retry-after: 2" in out.lower()
            assert 0.9 < time.monotonic() - started < 5
        finally:
            g.stop()
    finally:
        for f in fillers:
            f.close()
        listener.close()


def _read_answer(s: socket.socket) -> bytes:
    out = b""
    while True:
        out += s.recv(65536)
        try:
            _answers(out)
            return out
        except Exception:  # noqa: BLE001 - not whole yet
            continue
