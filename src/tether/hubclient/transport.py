"""HTTP/1.1 to the hub on the standard library: the one transport of every tether client.

httpx (with httpcore and h11) took ~75 ms to import and set up, a third of an
unchanged re-publish; ``http.client`` with ``ssl`` and ``json`` takes ~25 ms. This
is what the clients need: one base URL, default headers, keep-alive connections
shared by threads, bytes or streamed bodies, proxies from the environment, every
transport failure as a :class:`WireError`, and the TLS context for a hub URL.

    >>> http = WireClient("https://hub.example", headers={"Authorization": "Bearer ..."},
    ...                   timeout=60, verify=tls_context("https://hub.example"))
    >>> resp = http.get("/api/v1/whoami")
    >>> resp.status_code, resp.json()

Non-2xx answers are returned, not raised. ``handler`` replaces the socket with a
function (tests use it for an in-process fake server); everything before the
socket (URL, parameters, JSON, headers) is the same code either way.
"""

from __future__ import annotations

import base64
import http.client
import json as jsonlib
import os
import select
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from typing import Any, Self
from urllib.parse import unquote, urlencode, urlsplit

# handler(method, path_and_query, headers, body) -> (status, headers, body)
Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, Mapping[str, str], bytes]]

# What a request on a kept-alive connection raises when the server had closed it while idle.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ssl.SSLEOFError)
# Sent again by themselves on a stale connection. Not POST: a server that took the request
# and then died without answering looks the same, and the caller must know it retried.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_BYTES = (bytes, bytearray, memoryview)


class WireError(Exception):
    """The exchange failed: no connection, TLS refused, or the connection broke off."""


class WireTimeout(WireError):
    """The server did not connect, accept or answer within the timeout."""


class _BodyFailed(Exception):
    """The caller's body iterator raised (its ``__cause__``): not a transport failure."""


class WireResponse:
    """An answer, its body read in full."""

    def __init__(self, status_code: int, headers: http.client.HTTPMessage, content: bytes, url_path: str):
        self.status_code = status_code
        self.headers = headers  # case-insensitive .get() and `in`
        self.content = content
        self.url_path = url_path  # the request's path, for messages

    @property
    def text(self) -> str:
        charset = self.headers.get_content_charset() or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)  # ValueError when it is not JSON

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def is_redirect(self) -> bool:
        return self.status_code in (301, 302, 303, 307, 308) and "Location" in self.headers

    def __repr__(self) -> str:
        return f"<WireResponse [{self.status_code}] {self.url_path}>"


class WireClient:
    """Requests to one server, over a pool of keep-alive connections; thread-safe."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60,
        verify: ssl.SSLContext | None = None,
        handler: Handler | None = None,
        max_idle: int = 64,
    ):
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._https else 80)
        self._origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self._prefix = parts.path  # a server under a path: every request path goes below it
        self._headers = {k.lower(): v for k, v in (headers or {}).items()}
        self._timeout = timeout
        self._context = verify if verify is not None or not self._https else ssl.create_default_context()
        self._handler = handler
        self._max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._proxy: tuple[str, int] | None = None
        self._proxy_headers: dict[str, str] = {}
        proxy = _env_proxy(parts.scheme, self._host, self._port)
        if proxy and handler is None:
            p = urlsplit(proxy)
            if p.scheme != "http" or not p.hostname:
                raise ValueError(f"unsupported proxy {p.scheme}://{p.hostname}: tether supports http:// proxies only")
            self._proxy = (p.hostname, p.port or 80)
            if p.username:
                cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
                self._proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(cred).decode()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._max_idle = 0  # connections in use are closed when they come back
        for conn in idle:
            conn.close()

    def get(self, url: str, **kw: Any) -> WireResponse:
        return self.request("GET", url, **kw)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> WireResponse:
        """Send one request and read its answer. ``url`` is a path below the base URL.
        A streamed ``content`` goes with the ``Content-Length`` in ``headers``, or chunked."""
        target = self._prefix + url
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        path = target.partition("?")[0]
        hdrs = dict(self._headers)
        body: Any = content
        if json is not None:
            body = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            hdrs["content-type"] = "application/json"
        hdrs.update((k.lower(), v) for k, v in (headers or {}).items())
        if isinstance(body, _BYTES):
            hdrs["content-length"] = str(len(body))
        if self._handler is not None:
            data = bytes(body) if isinstance(body, _BYTES) else b"".join(body) if body is not None else b""
            try:
                status, rh, payload = self._handler(method, target, hdrs, data)
            except (OSError, http.client.HTTPException) as exc:
                raise _wire_error(exc) from exc
            msg = http.client.HTTPMessage()
            for k, v in rh.items():
                msg[k] = v
            return WireResponse(status, msg, payload, path)

        stream = body is not None and not isinstance(body, _BYTES)
        if stream:
            body = _guarded(body)
        if self._proxy and not self._https:
            target = self._origin + target  # a plain-HTTP proxy takes the absolute form
            hdrs.update((k.lower(), v) for k, v in self._proxy_headers.items())
        for fresh in (False, True):
            conn, reused = self._take(fresh)
            answered = False
            try:
                conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
                answered = True
                data = _read_bounded(resp)
            except _BodyFailed as exc:
                conn.close()
                raise exc.__cause__ from None  # type: ignore[misc]
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and not answered and not stream and method in _IDEMPOTENT and isinstance(exc, _STALE):
                    continue  # the server closed this idle connection meanwhile: once more, on a new one
                raise _wire_error(exc) from exc
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._give(conn)
            return WireResponse(resp.status, resp.headers, data, path)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the pool ---------------------------------------------------------------------

    def _take(self, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection (most recently used first) and True, or a new one and False."""
        with self._lock:
            while self._idle and not fresh:
                conn = self._idle.pop()
                if _still_open(conn):
                    return conn, True
                conn.close()
        return self._connect(), False

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        # Connects on first use, inside request(), so that connection errors are
        # mapped there. http.client sets TCP_NODELAY: headers and body go as written.
        host, port = self._proxy or (self._host, self._port)
        if not self._https:
            return http.client.HTTPConnection(host, port, timeout=self._timeout)
        conn = http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._context)
        if self._proxy:
            conn.set_tunnel(self._host, self._port, headers=self._proxy_headers)  # CONNECT, then TLS inside
        return conn


MAX_ANSWER = 64 << 20  # the hub's answers are small JSON documents


class _AnswerTooLarge(http.client.HTTPException):
    pass


def _read_bounded(resp: http.client.HTTPResponse) -> bytes:
    """The body, refused past MAX_ANSWER: a broken server (or anything between) naming a
    huge Content-Length would otherwise have http.client allocate it (MemoryError)."""
    if resp.length is not None:
        if resp.length > MAX_ANSWER:
            raise _AnswerTooLarge(f"the answer is larger than {MAX_ANSWER >> 20} MiB (Content-Length {resp.length})")
        return resp.read()  # (IncompleteRead if the connection closes before the last byte)
    data = resp.read(MAX_ANSWER + 1)  # chunked, or up to the close
    if len(data) > MAX_ANSWER:
        raise _AnswerTooLarge(f"the answer is larger than {MAX_ANSWER >> 20} MiB")
    return data


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle connection has nothing to read unless the server closed it (or broke the protocol)."""
    if conn.sock is None:
        return False
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _guarded(chunks: Iterable[bytes]) -> Iterator[bytes]:
    # Tells the caller's own failures (a file changed, cancelled) from the socket's.
    try:
        yield from chunks
    except Exception as exc:
        raise _BodyFailed() from exc


def _wire_error(exc: BaseException) -> WireError:
    text = str(exc) or type(exc).__name__  # keeps e.g. "[SSL: CERTIFICATE_VERIFY_FAILED] ..."
    return (WireTimeout if isinstance(exc, TimeoutError) else WireError)(text)


def _env_proxy(scheme: str, host: str, port: int) -> str | None:
    """The proxy that ``{scheme}_proxy``/``all_proxy`` name for ``host``, unless ``no_proxy``
    exempts it (a host or domain, with or without ``:port``): the standard library's reading."""
    if not any(k.lower().endswith("_proxy") for k in os.environ):
        return None  # the usual case, without importing urllib.request (~10 ms)
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme) or proxies.get("all")
    if not url or urllib.request.proxy_bypass_environment(f"{host}:{port}", proxies):
        return None
    return url if "://" in url else "http://" + url


def tls_context(hub_url: str, ca_bundle: str | None = None) -> ssl.SSLContext:
    """The TLS context for talking to ``hub_url``: ``ca_bundle`` (a PEM file) trusted
    instead of the system CAs when given; else ``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else
    certifi's bundle, so every command trusts the same certificates. ConfigError when
    the bundle cannot be loaded."""
    if ca_bundle:
        try:
            return ssl.create_default_context(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            from tether.problems import ConfigError

            raise ConfigError(f"cannot load CA bundle {ca_bundle}: {getattr(exc, 'strerror', None) or exc}") from exc
    if hub_url.lower().startswith("http://"):
        # Plain HTTP: no TLS to verify, so skip loading CA certificates (~50 ms).
        # Should a TLS connection happen all the same, a context that trusts no
        # certificate refuses it.
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    try:
        import certifi  # the bundle tether has always trusted (httpx's default before)
    except ImportError:  # pragma: no cover
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())
