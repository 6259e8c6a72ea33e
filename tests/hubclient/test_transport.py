"""tether.hubclient.transport against real servers on 127.0.0.1: http.server in a thread, with TLS
from a throwaway self-signed certificate, and a small CONNECT proxy."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import re
import select
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tether.hubclient import transport as wire
from tether.hubclient.transport import WireClient, WireError, WireTimeout


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body are two writes
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, obj: object, close: bool = False) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _any(self) -> None:
        url = urlsplit(self.path)
        body = self._body()
        self.server.seen.append((self.command, self.path, self.headers))
        if url.path == "/slow":
            self.server.release.wait(5)
        if url.path == "/missing":
            return self._send(404, {"type": "about:blank", "detail": "no such thing"})
        self._send(200, {
            "method": self.command, "path": url.path, "query": parse_qs(url.query), "host": self.headers["Host"],
            "content_type": self.headers.get("Content-Type"), "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(), "body": body[:200].decode("latin-1"),
        }, close=url.path == "/close")  # fmt: skip

    do_GET = do_POST = do_PUT = _any


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type = Handler) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.connections = 0
        self.seen: list[tuple[str, str, Any]] = []  # method, path, headers (an HTTPMessage)
        self.release = threading.Event()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the tests hang up on purpose (timeouts, refused certificates)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def serve(server: Server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def server():
    yield from serve(Server())


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    crt = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    d = tmp_path_factory.mktemp("wire-tls")
    (d / "cert.pem").write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def tls_server(cert):
    server = Server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    yield from serve(server)


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def client(url: str, **kw) -> WireClient:
    kw.setdefault("timeout", 5)
    return WireClient(url, headers={"User-Agent": "wire-test", "Authorization": "Bearer x"}, **kw)


# -- requests and answers ------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(server):
    with client(server.url) as http:
        for i in range(5):
            r = http.get("/echo", params={"i": i})
            assert r.status_code == 200 and r.json()["query"] == {"i": [str(i)]}
    assert server.connections == 1


def test_params_json_and_headers(server):
    with client(server.url + "/prefix/") as http:
        r = http.request("POST", "/echo?a=1", params={"space": "b ü/&", "n": 2}, json={"x": "ü", "l": [1, 2]},
                         headers={"X-Extra": "yes", "user-agent": "override"})  # fmt: skip
    got = r.json()
    assert got["path"] == "/prefix/echo" and r.url_path == "/prefix/echo"
    assert got["query"] == {"a": ["1"], "space": ["b ü/&"], "n": ["2"]}
    assert got["content_type"] == "application/json"
    assert json.loads(got["body"].encode("latin-1")) == {"x": "ü", "l": [1, 2]}
    _, _, headers = server.seen[-1]
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["x-extra"] == "yes" and lower["user-agent"] == "override" and lower["authorization"] == "Bearer x"
    assert got["host"] == server.url.removeprefix("http://")


def test_streamed_body_with_length_and_chunked(server):
    data = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    with client(server.url) as http:
        r = http.request("PUT", "/blob", content=iter(pieces), headers={"Content-Length": str(len(data))})
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest() and r.json()["length"] == len(data)
        assert "Content-Length" in server.seen[-1][2] and "Transfer-Encoding" not in server.seen[-1][2]
        r = http.request("PUT", "/blob", content=iter(pieces))  # no length: chunked
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert server.seen[-1][2]["Transfer-Encoding"] == "chunked"
        r = http.request("POST", "/blob", content=b"raw bytes")
        assert r.json()["body"] == "raw bytes"
    assert server.connections == 1


def test_body_iterator_errors_pass_through_unchanged(server):
    class Changed(ValueError):
        pass

    def body():
        yield b"x" * 10
        raise Changed("a file changed")

    with client(server.url) as http:
        with pytest.raises(Changed, match="a file changed"):
            http.request("PUT", "/blob", content=body(), headers={"Content-Length": "20"})
        assert http.get("/echo").status_code == 200  # the half-sent connection was dropped


def test_error_statuses_are_answers(server):
    with client(server.url) as http:
        r = http.get("/missing")
    assert r.status_code == 404 and not r.is_success and not r.is_redirect
    assert r.json()["detail"] == "no such thing" and "no such thing" in r.text
    assert r.headers.get("content-type") == "application/json"


def test_connection_close_is_not_reused(server):
    with client(server.url) as http:
        http.get("/close")
        http.get("/echo")
        http.get("/echo")
    assert server.connections == 2


def test_concurrent_requests_share_the_pool(server):
    with client(server.url) as http:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(10):
                    assert http.get("/echo").status_code == 200
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert not errors and len(server.seen) == 60
    assert server.connections <= 6


# -- idle connections the server closed ---------------------------------------------------------


class ShortKeepAlive(Handler):
    timeout = 0.1  # the server closes a connection idle this long


@pytest.fixture
def short_server():
    yield from serve(Server(ShortKeepAlive))


def wait_closed(server: Server, n: int) -> None:
    import time

    time.sleep(0.3)  # well past the server's idle timeout
    assert server.connections == n


def test_idle_connection_closed_by_the_server_is_replaced(short_server):
    with client(short_server.url) as http:
        http.get("/echo")
        wait_closed(short_server, 1)
        assert http.request("POST", "/echo", json={"a": 1}).json()["length"] == 7
    assert short_server.connections == 2


def test_stale_connection_is_retried_once_when_the_request_may_be_repeated(short_server, monkeypatch):
    monkeypatch.setattr(wire, "_still_open", lambda conn: True)  # as if the close raced our request
    with client(short_server.url) as http:
        http.get("/echo")
        wait_closed(short_server, 1)
        r = http.request("PUT", "/echo", json={"a": 1})
        assert r.status_code == 200 and r.json()["method"] == "PUT"
        wait_closed(short_server, 2)
        # a streamed body cannot be sent again: the caller hears of it
        with pytest.raises(WireError):
            http.request("PUT", "/blob", content=iter([b"abc"]), headers={"Content-Length": "3"})
        http.get("/echo")
        wait_closed(short_server, 3)
        # nor a POST: a server that took it and died unanswered looks just the same, and only
        # the caller can tell the user that it sent it twice
        with pytest.raises(WireError):
            http.request("POST", "/echo", json={"a": 1})
    assert [m for m, _, _ in short_server.seen] == ["GET", "PUT", "GET"]


# -- failures -----------------------------------------------------------------------------------


def test_connection_refused_is_a_wire_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with client(f"http://127.0.0.1:{port}") as http, pytest.raises(WireError) as e:
        http.get("/echo")
    assert not isinstance(e.value, WireTimeout) and "refused" in str(e.value).lower()


def test_timeout_is_a_wire_timeout(server):
    with client(server.url, timeout=0.2) as http, pytest.raises(WireTimeout, match="timed out"):
        http.get("/slow")


def test_bad_base_url():
    for url in ("ftp://hub", "http://", "https://hub:notaport"):
        with pytest.raises(ValueError):
            WireClient(url)


# -- TLS -------------------------------------------------------------------------------------------


def test_tls_with_the_right_ca(tls_server, cert):
    url = tls_server.url.replace("http://", "https://")
    with client(url, verify=ssl.create_default_context(cafile=str(cert[0]))) as http:
        for _ in range(3):
            assert http.get("/echo").json()["method"] == "GET"
    assert tls_server.connections == 1


def test_tls_with_an_untrusted_certificate(tls_server):
    url = tls_server.url.replace("http://", "https://")
    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with client(url, verify=untrusting) as http, pytest.raises(WireError, match=r"\[SSL: CERTIFICATE_VERIFY_FAILED\]"):
        http.get("/echo")


# -- proxies from the environment ---------------------------------------------------------------


class ConnectProxy(Handler):
    """Answers plain requests (absolute URLs) itself, as the echo server would, and tunnels CONNECT."""

    def do_CONNECT(self) -> None:
        self.server.seen.append(("CONNECT", self.path, self.headers))
        host, port = self.path.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)), timeout=5)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        socks = [self.connection, upstream]
        while True:
            readable, _, _ = select.select(socks, [], [], 5)
            if not readable:
                break
            for s in readable:
                data = s.recv(65536)
                if not data:
                    upstream.close()
                    self.close_connection = True
                    return
                (upstream if s is self.connection else self.connection).sendall(data)


@pytest.fixture
def proxy():
    yield from serve(Server(ConnectProxy))


def test_http_proxy_from_the_environment(proxy, server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://user:p%40ss@" + proxy.url.removeprefix("http://"))
    with client(server.url) as http:
        assert http.get("/echo", params={"a": "1"}).json()["host"] == server.url.removeprefix("http://")
    _, path, headers = proxy.seen[-1]
    assert path == server.url + "/echo?a=1"  # the absolute form, to the proxy
    assert headers["Proxy-Authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert server.seen == []
    monkeypatch.setenv("no_proxy", "example.org, 127.0.0.1")
    with client(server.url) as http:
        http.get("/echo")
    assert len(proxy.seen) == 1 and server.seen[-1][1] == "/echo"


@pytest.mark.parametrize(
    ("no_proxy", "bypassed"),
    [
        ("hub.internal", True),
        ("hub.internal:8080", True),  # the hub's own port: straight to it, the token never via the proxy
        ("hub.internal:9090", False),
        (".internal", True),
        ("other.internal:8080", False),
        ("*", True),
        ("", False),
    ],
)
def test_no_proxy_entries_with_and_without_ports(monkeypatch, no_proxy, bypassed):
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", no_proxy)
    assert (wire._env_proxy("http", "hub.internal", 8080) is None) == bypassed


def test_https_through_a_connect_proxy(proxy, tls_server, cert, monkeypatch):
    monkeypatch.setenv("https_proxy", proxy.url)
    url = tls_server.url.replace("http://", "https://")
    with client(url, verify=ssl.create_default_context(cafile=str(cert[0]))) as http:
        assert http.get("/echo").json()["path"] == "/echo"
        assert http.get("/echo").status_code == 200
    assert [(m, p) for m, p, _ in proxy.seen] == [("CONNECT", url.removeprefix("https://"))]
    assert tls_server.connections == 1


def test_unsupported_proxy_scheme(monkeypatch):
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="http:// proxies only"):
        WireClient("https://hub.example")


# -- the handler ----------------------------------------------------------------------------------


def test_handler_gets_the_request_as_the_socket_would():
    calls = []

    def handler(method, target, headers, body):
        calls.append((method, target, headers, body))
        if target.startswith("/base/drop"):
            raise ConnectionResetError("connection reset")
        return 201, {"Content-Type": "application/json", "Retry-After": "3"}, b'{"ok": true}'

    with client("http://hub.test/base", handler=handler) as http:
        r = http.request("POST", "/x", params={"k": "v w"}, json={"a": "ü"})
        assert (r.status_code, r.json(), r.headers.get("retry-after"), r.url_path) == (201, {"ok": True}, "3", "/base/x")
        r = http.request("PUT", "/y", content=iter([b"ab", b"c"]), headers={"Content-Length": "3"})
        with pytest.raises(WireError, match="connection reset"):
            http.get("/drop")
    method, target, headers, body = calls[0]
    assert (method, target) == ("POST", "/base/x?k=v+w")
    assert body == '{"a":"ü"}'.encode()
    assert headers["content-type"] == "application/json" and headers["content-length"] == str(len(body))
    assert headers["authorization"] == "Bearer x"
    assert calls[1][3] == b"abc" and calls[1][2]["content-length"] == "3"


# -- answers read off the socket, hostile ones included --------------------------------------------


class RawServer:
    """Answers each connection's first request with fixed bytes, then closes it."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    part = conn.recv(65536)
                    if not part:
                        break
                    data += part
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                while length and len(body) < int(length.group(1)):  # the whole request, then the answer
                    part = conn.recv(65536)
                    if not part:
                        break
                    body += part
                self.requests.append(data)
                conn.sendall(self.answer)
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)  # until the client hangs up: no reset on either side

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw():
    servers: list[RawServer] = []

    def make(answer: bytes) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.mark.parametrize(
    "answer, body",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nTrailer: t\r\n\r\n",
         b"hello"),
        (b"HTTP/1.0 200 OK\r\n\r\nhello until the end", b"hello until the end"),  # no length: up to the close
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\nX-A: 2\r\n\r\n", b""),
    ],
    ids=["length", "chunked", "until-close", "interim", "no-content"],
)
def test_answers_of_every_framing(raw, answer, body):
    server = raw(answer)
    with client(server.url) as http:
        r = http.get("/x")
    assert r.content == body


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without answering
        b"SSH-2.0-OpenSSH\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",  # a header line over 64 KiB
        b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 101 + b"\r\n",  # over 100 header lines
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # cut short
        # a length it would have allocated (MemoryError) before reading a byte
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    ],
    ids=["closed", "not-http", "long-line", "many-headers", "truncated", "huge-length",
         "bad-chunk", "chunk-overrun"],
)
def test_a_broken_answer_is_a_wire_error(raw, answer):
    server = raw(answer)
    with client(server.url) as http, pytest.raises(WireError) as e:
        http.request("POST", "/x", json={"a": 1})
    assert str(e.value)  # says what went wrong


def test_no_header_is_smuggled_into_a_request(raw):
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    with client(server.url) as http:
        for bad in ({"Authorization": "Bearer x\r\nX-Admin: yes"}, {"X-A\r\nB": "1"}, {"X-A": "1\nX-B: 2"}):
            with pytest.raises(ValueError, match="(?i)invalid header"):
                http.get("/x", headers=bad)
        with pytest.raises(WireError, match="(?i)control characters"):
            http.get("/x y")
    assert server.requests == []  # nothing was sent
