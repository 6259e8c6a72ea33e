"""The gateway reads each head whole from the bytes llhttp accepted (no callback per field):
its reading must be llhttp's, byte for byte, whatever the reads' boundaries, and every
hostile head must still be refused before the app sees it.

The sans-IO half compares :mod:`tether.gateway.core`'s block reading with llhttp's own
callbacks on generated heads. The other half drives a browser connection's protocol read
by read (so a head or a pipeline is split at exactly every offset) against the real test
app on a UNIX socket, and real sockets where the split does not matter."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.gateway import core
from tether.gateway.proxy import Forward, Gateway, Limits, UnixUpstream
from tests.gateway.test_proxy import (  # noqa: F401 - the module's fixtures, reused
    HOST,
    SMUGGLING,
    _count,
    _raw,
    _Sock,
    _Unclosed,
    _ScriptedApp,
    app_socket,
    gateway,
    scripted_gateway,
)

# ---------------------------------------------------------------- sans-IO: the block is llhttp's reading

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~", min_size=1,
                max_size=12)
VALUE = st.text("".join(map(chr, range(0x21, 0x7F))) + " \t", max_size=20).map(lambda v: v.strip(" \t"))
NAMES = st.one_of(TOKEN, st.sampled_from(["Host", "Connection", "Cookie", "Authorization", "X-Forwarded-For",
                                          "Content-Length", "Transfer-Encoding", "Upgrade", "te", "Set-Cookie",
                                          "Keep-Alive", "X-Tether-User", "hOsT", "Trailer"]))
FIELDS = st.lists(st.tuples(NAMES, VALUE, st.sampled_from(["", " ", "  ", "\t"]),
                            st.sampled_from(["", " ", "\t "])), max_size=12)


class _Llhttp:
    def __init__(self):
        self.url, self.headers, self.complete = b"", [], False

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self):
        self.complete = True


def _head(fields, lead=b"") -> bytes:
    lines = b"".join(f"{n}:{before}{v}{after}\r\n".encode() for n, v, before, after in fields)
    return lead + b"GET /a?b=c HTTP/1.1\r\n" + lines + b"\r\n"


@settings(max_examples=300, deadline=None)
@given(FIELDS, st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"\n"]),
       st.sampled_from([(b"GET", "1.1"), (b"POST", "1.0"), (b"CONNECT", "1.1"), (b"GET", "2.0"), (b"GET", "0.9")]))
def test_the_block_reads_as_llhttp_reads_the_head(fields, lead, method_version):
    data = _head(fields, lead)
    theirs = _Llhttp()
    parser = httptools.HttpRequestParser(theirs)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return  # (a generated Content-Length that is not a number, ...) refused: nothing to read
    assert theirs.complete
    start, line_end, end = core.locate_head(data, 0)
    assert end + 4 == len(data)
    assert data[start:line_end].split(b" ", 2)[1] == theirs.url
    block = data[line_end:end + 2]
    assert core.split_fields(block) == theirs.headers
    method, version = method_version  # (what the gateway's checks are given, whatever the line said)
    try:
        want = core.check_head(method, version, theirs.headers)
    except core.GatewayError as exc:
        with pytest.raises(core.GatewayError) as got:
            core.check_block(method, version, block)
        assert (got.value.status, got.value.slug) == (exc.status, exc.slug)
        return
    host, body, length, value, clean = core.check_block(method, version, block)
    assert (host, body) == want
    assert value.strip() == next(v for n, v in theirs.headers if n.lower() == b"host").strip()
    # what the app is sent is the same whichever way the block is read
    args = ("10.0.0.1", "https", value, "/apps/alice/x", core.cookie_name(True, "/apps/alice/x"),
            [(b"x-tether-user", b"alice")])
    fast = core.upstream_head(b"GET", b"/a", block, clean, *args)
    slow = core.upstream_head(b"GET", b"/a", block, False, *args)
    assert _fields(fast) == _fields(slow)
    if clean:
        assert not any(n.lower() in core.HOP_BY_HOP | {b"authorization", b"x-forwarded-for"} for n, _ in theirs.headers)


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    out = _Llhttp()
    httptools.HttpRequestParser(out).feed_data(head)
    return [(n.lower(), v) for n, v in out.headers]


ANSWER_FIELDS = st.lists(st.tuples(st.one_of(TOKEN, st.sampled_from(
    ["Content-Type", "Set-Cookie", "Connection", "Transfer-Encoding", "Keep-Alive", "Upgrade", "ETag"])), VALUE),
    max_size=8)


@settings(max_examples=300, deadline=None)
@given(ANSWER_FIELDS, st.integers(0, 10_000), st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]), st.booleans())
def test_an_answer_head_passes_as_it_came_only_when_the_rewrite_would_leave_it_so(fields, length, version,
                                                                                     with_length):
    lines = b"".join(f"{n}: {v}\r\n".encode() for n, v in fields)
    head = version + b" 200 OK\r\n" + lines + (b"Content-Length: %d\r\n" % length if with_length else b"") + b"\r\n"
    passable = core.passable_length(head)
    if passable is None:
        return
    headers = core.split_fields(head[head.index(b"\r\n"):-2])
    rewritten = core.response_head(200, b"GET", headers, http11=True, keep_alive=True)
    assert version == b"HTTP/1.1" and with_length and passable == length
    assert (rewritten.headers, rewritten.body, rewritten.length, rewritten.close) == (headers, core.LENGTH, length,
                                                                                      False)


# ---------------------------------------------------------------- a browser connection, read by read


class _Recorder:
    """The browser's side of a connection the test drives read by read: what the gateway
    writes back, and whether it closed."""

    def __init__(self, protocol, loop):
        self.out, self.closed, self.protocol, self.loop = b"", False, protocol, loop

    def write(self, data):
        self.out += data

    def writelines(self, pieces):
        self.out += b"".join(pieces)

    def close(self):
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def is_closing(self):
        return self.closed

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def _answers(out: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each answer in ``out``, read as a browser reads them."""
    stream, got = _Unclosed(out), []
    while stream.tell() < len(out):
        r = http.client.HTTPResponse(_Sock(stream))
        r.begin()
        got.append((r.status, r.read()))
    return got


def _whole(out: bytes, answers: int) -> bool:
    """``out`` holds ``answers`` answers, each read to its end."""
    if out.count(b"HTTP/1.1 ") < answers:
        return False
    try:
        return len(_answers(out)) >= answers
    except (http.client.HTTPException, ValueError, OSError):
        return False


def _split_everywhere(sock_path: str, data: bytes, answers: int, limits: Limits | None = None):
    """For every offset of ``data``: a new browser connection, ``data`` in two reads split
    there; the bytes the gateway wrote back, and whether it closed, per offset."""

    async def run():
        loop = asyncio.get_running_loop()

        async def resolve(request):
            return Forward(UnixUpstream(sock_path), core.match(request.host, request.target, "localhost"))

        gateway = Gateway(resolve, limits=limits or Limits())
        results = []
        for cut in range(1, len(data)):
            protocol = gateway.protocol()
            browser = _Recorder(protocol, loop)
            protocol.connection_made(browser)
            protocol.data_received(data[:cut])
            await asyncio.sleep(0)
            protocol.data_received(data[cut:])
            deadline = time.monotonic() + 5
            # until the answers are whole (an app may write a head and its body apart: on a
            # busy machine the body comes turns later), or the gateway closed
            while time.monotonic() < deadline and not browser.closed and not _whole(browser.out, answers):
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.005)
            browser.close()
            await asyncio.sleep(0)
            results.append((cut, browser.out, browser.closed))
        return results

    return asyncio.run(run())


def test_a_head_split_across_reads_at_every_offset_reaches_the_app_as_one(app_socket):
    req = (b"GET /echo?q=1 HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nX-Custom: kept\r\n"
           b"X-Forwarded-For: 6.6.6.6\r\nAuthorization: Bearer secret\r\nConnection: keep-alive\r\n\r\n")
    for cut, out, _ in _split_everywhere(app_socket, req, 1):
        [(status, body)] = _answers(out)
        seen = json.loads(body)
        headers = dict((k.lower(), v) for k, v in seen["headers"])
        assert (status, seen["query"], headers["x-custom"], headers["x-forwarded-for"]) == (
            200, "q=1", "kept", "127.0.0.1"), cut
        assert "authorization" not in headers and headers["host"] == HOST, cut


def test_pipelined_requests_split_at_every_byte_boundary_are_answered_in_order(app_socket):
    host = HOST.encode()
    reqs = (b"GET /echo?n=1 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
            b"POST /echo?n=2 HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 5\r\n\r\nhello"
            b"\r\nGET /echo?n=3 HTTP/1.1\r\nhost: " + host + b"\r\n\r\n")  # (an empty line between: skipped)
    for cut, out, _ in _split_everywhere(app_socket, reqs, 3):
        got = [(status, json.loads(body)) for status, body in _answers(out)]
        assert [(s, b["query"], b["body"]) for s, b in got] == [(200, "n=1", ""), (200, "n=2", "hello"),
                                                              (200, "n=3", "")], cut


HOSTILE = {name: SMUGGLING[name] for name in (
    "content-length and transfer-encoding", "two content-lengths", "obs-fold", "bare LF line ends",
    "bare LF after a header", "NUL in a header value", "two hosts", "space before the colon", "no host")}
HOSTILE["too many headers"] = (b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n" +
                               b"".join(b"X-%d: v\r\n" % i for i in range(12)) + b"\r\n")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_head_split_at_every_offset_is_refused_and_never_reaches_the_app(gateway, app_socket, name):
    before = _count(gateway)
    for cut, out, closed in _split_everywhere(app_socket, HOSTILE[name], 1, Limits(max_headers=10)):
        status = int(out.split(b" ", 2)[1])
        assert status in (400, 431), (cut, out[:200])
        assert out.count(b"HTTP/1.1 ") == 1 and b"connection: close" in out.lower() and closed, cut
    assert _count(gateway) == before


def test_a_request_pipelined_behind_a_chunked_body_in_the_same_read_is_not_read(gateway):
    """Where such a request begins only llhttp knows: the chunked one is answered, the
    connection closes, and the one behind it never reaches the app (a client sends it
    again on a new connection). Behind a chunked body in a later read, keep-alive holds."""
    host = HOST.encode()
    chunked = b"POST /echo HTTP/1.1\r\nHost: " + host + b"\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    smuggled = b"GET /echo?smuggled HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    before = _count(gateway)
    out = _raw(gateway, chunked + smuggled)
    assert [s for s, _ in _answers(out)] == [200] and b"smuggled" not in out
    assert _count(gateway) == before + 1
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(chunked)
        first = _answer_on(s)
        s.sendall(smuggled.replace(b"smuggled", b"later"))
        second = _answer_on(s)
    assert _answers(first)[0][0] == 200 and json.loads(_answers(second)[0][1])["query"] == "later"


def _answer_on(s: socket.socket) -> bytes:
    """One chunked answer (the test app's), read whole from a kept connection."""
    out = b""
    while not out.endswith(b"\r\n0\r\n\r\n"):
        out += s.recv(65536)
    return out


class _ExtraApp(_ScriptedApp):
    ANSWERS = {**_ScriptedApp.ANSWERS,
               b"/extra": (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n"
                           b"\r\nevil!", False),
               b"/plain": (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-App: 1\r\n\r\nabc", False),
               b"/cookie": (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nSet-Cookie: a=1; Domain=localhost\r\n\r\nabc",
                            False)}


@pytest.fixture(scope="module")
def extra(tmp_path_factory):
    yield from scripted_gateway(_ExtraApp(str(tmp_path_factory.mktemp("extra") / "app.sock")))


def _get(path: bytes, close=False) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path, HOST.encode(), b"Connection: close\r\n" if close else b"")


def test_bytes_an_app_sends_after_its_answer_never_answer_the_next_request(extra):
    out = _raw(extra, _get(b"/extra") + _get(b"/plain", close=True), wait=3)
    assert _answers(out) == [(200, b"ok"), (200, b"abc")] and b"evil" not in out


def test_an_answer_head_passes_as_it_came_or_is_rewritten(extra):
    plain, cookie = _answers(out := _raw(extra, _get(b"/plain") + _get(b"/cookie", close=True), wait=3))
    assert b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-App: 1\r\n\r\nabc" in out  # as the app sent it
    assert b"domain" not in out.lower().partition(b"set-cookie:")[2].partition(b"\r\n")[0]  # host-only
    assert plain == cookie == (200, b"abc")
