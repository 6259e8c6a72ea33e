"""An app that takes a request and never answers: the browser gets 504 ``app-timeout``
after ``answer_timeout`` (the hub's ``gateway_answer_timeout``), not a wait for ever, and
that app connection is closed (a late answer must not reach the next request). What the
limit must not cut: an app that answers late but within it, an answer that streams for
longer than it once begun, and a request body uploaded slowly for longer than it (the wait
begins when the whole request reached the app). Real sockets: a scripted app on a UNIX
socket, the gateway in a thread of its own."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tether.gateway import core
from tether.gateway.proxy import Forward, Limits, UnixUpstream
from tests.gateway.test_proxy import GatewayThread

HOST = "demo--alice.localhost"
LIMIT = 0.6


class ScriptedApp:
    """Reads each request's head (and a Content-Length body), then acts by its path:
    /hang never answers; /late answers after 0.3 s; /stream sends its head and then one
    chunk every 0.25 s, 8 in all; anything else answers at once. Records what it read."""

    def __init__(self, path: str):
        self.path, self.connections = path, 0
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(16)
        self.closed_by_peer = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        self.closed_by_peer.set()
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                path = head.split(b" ")[1]
                if path == b"/hang":
                    continue  # took it, says nothing; the next bytes it reads end the connection
                if path == b"/late":
                    time.sleep(0.3)
                if path == b"/stream":
                    conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    for _ in range(8):
                        time.sleep(0.25)
                        conn.sendall(b"2\r\nok\r\n")
                    conn.sendall(b"0\r\n\r\n")
                    continue
                body = json.dumps({"path": path.decode(), "got": length}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def world(tmp_path):
    app = ScriptedApp(str(tmp_path / "app.sock"))

    async def resolve(request):
        return Forward(UnixUpstream(app.path), core.match(request.host, request.target, "localhost"))

    g = GatewayThread(resolve, Limits(answer_timeout=LIMIT, body_timeout=5.0))
    yield app, g
    g.stop()
    app.close()


def _read_all(s: socket.socket, until: bytes) -> bytes:
    out = b""
    while until not in out:
        data = s.recv(65536)
        if not data:
            break
        out += data
    return out


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n".encode()


def test_an_app_that_never_answers_is_504_after_answer_timeout_and_its_connection_closed(world):
    app, g = world
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(_get("/hang", "Accept: application/json\r\n"))
        out = _read_all(s, b"}")
        took = time.monotonic() - started
        assert out.startswith(b"HTTP/1.1 504"), out
        assert b"app-timeout" in out and b"answer_timeout" in out
        assert LIMIT <= took < LIMIT + 2
        assert s.recv(65536) == b""  # the browser's connection closes too: the request is over
    assert app.closed_by_peer.wait(5)  # the silent app's connection is closed, not kept for another request


def test_a_browser_gets_a_page_and_the_next_connection_is_served(world):
    app, g = world
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(_get("/hang", "Accept: text/html\r\n"))
        out = _read_all(s, b"</p>")
        assert out.startswith(b"HTTP/1.1 504") and b"text/html" in out
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(_get("/ok"))
        assert _read_all(s, b"}").startswith(b"HTTP/1.1 200")


def test_what_the_limit_must_not_cut(world):
    app, g = world
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        # late, within the limit; then a stream of 2 s, longer than the limit, once begun;
        # all on one kept connection
        s.sendall(_get("/late"))
        assert _read_all(s, b"}").startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        s.sendall(_get("/stream"))
        out = _read_all(s, b"0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and out.count(b"ok") == 8 and time.monotonic() - started > 1.5
        # a body sent in pieces for 1.5 s (each within body_timeout): the wait begins at its end
        body = b"x" * 600
        s.sendall(f"POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for i in range(6):
            time.sleep(0.25)
            s.sendall(body[i * 100:(i + 1) * 100])
        out = _read_all(s, b"}")
        assert out.startswith(b"HTTP/1.1 200") and b'"got": 600' in out
