"""The gateway's rules, sans-IO: which route a request is for, what reaches the app,
what the browser is sent back, and where a sign-in may send it.

The gateway (:mod:`tether.gateway.proxy`) serves forwarded apps (and, later, sandboxed
apps) at origins of their own. Everything here is pure: headers in, headers out.

Routes are named ``NAME--USER.<domain>`` (subdomain mode: each route its own origin)
or ``/apps/USER/NAME/`` (path mode, for sites without wildcard DNS: every route shares
the gateway's origin, so one app's script can read another's pages; documented).
A route name cannot contain ``--``, so the first ``--`` of a host label separates
name and user without ambiguity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes, urlsplit

from tether.units import USER_NAME_RE

#: route names: lowercase letters, digits and single hyphens; no dots, slashes or "--"
ROUTE_NAME_RE = re.compile(r"\A[a-z0-9](?:[a-z0-9]|-(?!-)){0,39}\Z")
SEPARATOR = "--"
PATH_PREFIX = "/apps/"
#: the gateway's own paths on every route's origin
CONTROL_PREFIX = "/_tether/"

#: hop-by-hop headers (RFC 9110 7.6.1): never forwarded, either way
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"proxy-authorization", b"proxy-authenticate"})
#: what a client may not tell the app about itself: the gateway says it
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix",
                        b"forwarded", b"x-real-ip", b"x-tether-user"})
#: the signed-in user's name, as the gateway tells a sandboxed app (a client's own is dropped)
USER_HEADER = b"x-tether-user"

Headers = list[tuple[bytes, bytes]]


def _label_user(user: str) -> bool:
    """A user name that can stand in a host label: any valid name without a dot."""
    return bool(USER_NAME_RE.match(user)) and "." not in user


class GatewayError(Exception):
    """A request the gateway refuses before any route sees it; ``status`` says how."""

    def __init__(self, status: int, slug: str, detail: str):
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail


@dataclass(frozen=True)
class Access:
    """A capability's answer to "may this request reach the route?" (with why not)."""

    allowed: bool
    status: int = 200
    slug: str = ""
    reason: str = ""
    read_only: bool = False


class RouteKey(NamedTuple):
    user: str
    name: str


class Target(NamedTuple):
    """A request matched to a route: the route, the path the app sees, the prefix it lost."""

    route: RouteKey
    path: bytes  # what the app is asked for (path and query)
    prefix: str  # "" in subdomain mode; "/apps/USER/NAME" in path mode


def check_route_name(name: str) -> None:
    if not ROUTE_NAME_RE.match(name):
        raise GatewayError(400, "invalid-route-name",
                           f"route name {name[:64]!r} is not valid: 1-40 lowercase letters, digits and single "
                           "hyphens, starting with a letter or digit (no dots, slashes, '--' or uppercase)")


class GatewayAddress:
    """How browsers reach the gateway: its domain, scheme and public port (from the hub's settings)."""

    def __init__(self, settings):
        self.domain = (settings.gateway_domain or "localhost").lower().rstrip(".")
        self.scheme = "https" if settings.gateway_tls_cert else "http"
        listen_port = int(settings.gateway_listen.rpartition(":")[2]) if settings.gateway_listen else None
        self.port = settings.gateway_public_port or listen_port
        self.path_mode = bool(settings.gateway_path_mode)

    def url(self, owner: str, name: str) -> str:
        base = origin(self.scheme, self.domain, self.port) if self.path_mode else None
        return route_url(RouteKey(owner, name), domain=self.domain, scheme=self.scheme, port=self.port,
                         path_mode_base=base)

    def signin_url(self, owner: str, name: str, secret: str) -> str:
        return self.url(owner, name).rstrip("/") + f"{CONTROL_PREFIX}signin?ticket={secret}"


def route_host(route: RouteKey, domain: str) -> str | None:
    """``NAME--USER.domain``, or None when the user's name cannot be a host label (a dot)."""
    if not _label_user(route.user):
        return None
    return f"{route.name}{SEPARATOR}{route.user}.{domain}"


def route_url(route: RouteKey, *, domain: str, scheme: str, port: int | None, path_mode_base: str | None = None) -> str:
    """The URL a browser opens for the route (subdomain mode unless it cannot be)."""
    host = route_host(route, domain)
    if host is None or path_mode_base is not None:
        base = path_mode_base or origin(scheme, domain, port)
        return f"{base.rstrip('/')}{PATH_PREFIX}{route.user}/{route.name}/"
    return origin(scheme, host, port) + "/"


def origin(scheme: str, host: str, port: int | None) -> str:
    """scheme://host[:port], the port left out when it is the scheme's default."""
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


@lru_cache(maxsize=1024)  # pure, and asked the same few hosts over and over: once each, not per request
def split_host(value: bytes) -> str:
    """The Host header's name, lowercased, without port; GatewayError when malformed."""
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        raise GatewayError(400, "bad-host", "the Host header is not ASCII") from None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise GatewayError(400, "bad-host", "the Host header is not a host name")
        return text[: end + 1]
    host, _, port = text.partition(":")
    if port and not port.isdigit():
        raise GatewayError(400, "bad-host", "the Host header's port is not a number")
    if not host or any(c in host for c in "/\\@ \t"):
        raise GatewayError(400, "bad-host", "the Host header is not a host name")
    return host.rstrip(".")


def match(host: str, target: bytes, domain: str) -> Target:
    """The route a request is for: by its host (``NAME--USER.domain``) or, on the gateway's
    own host, by its path (``/apps/USER/NAME/...``). GatewayError (404) when none."""
    route = _host_route(host, domain)
    if route is not None:
        return _tuple_new(Target, (route, target, ""))  # (Target's own __new__ is a Python call)
    return _match_path(target)


_tuple_new = tuple.__new__


@lru_cache(maxsize=1024)
def _host_route(host: str, domain: str) -> RouteKey | None:
    """The route a host names; None for the gateway's own host (path mode)."""
    domain = domain.lower().rstrip(".")
    if host.endswith("." + domain):
        label = host[: -len(domain) - 1]
        name, sep, user = label.partition(SEPARATOR)
        if "." in label or not sep or not ROUTE_NAME_RE.match(name) or not _label_user(user):
            raise GatewayError(404, "no-such-route", f"no route is named by the host {host!r}")
        return RouteKey(user, name)
    if host == domain:
        return None
    raise GatewayError(404, "no-such-route", f"this gateway serves *.{domain} and {domain}, not {host!r}")


def _match_path(target: bytes) -> Target:
    path, sep, query = target.partition(b"?")
    if not path.startswith(PATH_PREFIX.encode()):
        raise GatewayError(404, "no-such-route", f"routes are at {PATH_PREFIX}USER/NAME/ on this host")
    parts = path[len(PATH_PREFIX):].split(b"/", 2)
    if len(parts) < 2:
        raise GatewayError(404, "no-such-route", f"routes are at {PATH_PREFIX}USER/NAME/ on this host")
    try:
        user, name = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise GatewayError(404, "no-such-route", "route names are ASCII") from None
    if not ROUTE_NAME_RE.match(name) or not USER_NAME_RE.match(user):
        raise GatewayError(404, "no-such-route", f"no route {PATH_PREFIX}{user[:32]}/{name[:40]}/")
    rest = b"/" + parts[2] if len(parts) == 3 else b"/"
    return Target(RouteKey(user, name), rest + (sep + query if sep else b""),
                  f"{PATH_PREFIX}{user}/{name}")


def check_head(method: bytes, version: str, headers: Headers) -> tuple[str, str]:
    """Refuse what the HTTP parser (llhttp, through httptools) accepts but a proxy must not
    pass on, and say what the gateway needs of the rest: (the Host's name, how the body is
    delimited: :data:`NO_BODY`, :data:`LENGTH` or :data:`CHUNKED`).

    The parser itself refuses obs-fold, Content-Length beside Transfer-Encoding, two
    Content-Lengths, bare LF, control characters in values and chunk sizes that overflow
    (tests/gateway/test_proxy.py holds each); here: a version other than HTTP/1.0 or 1.1
    (llhttp reads ``GET /x`` as HTTP/0.9), CONNECT (this is no forward proxy), a
    Transfer-Encoding other than chunked, and a Host missing or given twice."""
    if version not in ("1.0", "1.1"):
        if version.startswith("0."):
            raise GatewayError(400, "bad-request", "malformed request line: it has no HTTP/1.x version")
        raise GatewayError(505, "http-version-not-supported", f"HTTP/{version[:8]} is not served; use HTTP/1.1")
    if method == b"CONNECT":
        raise GatewayError(405, "method-not-allowed", "CONNECT is refused: the gateway is not a forward proxy")
    hosts: list[bytes] = []
    te: list[bytes] = []
    length = None
    for name, value in headers:
        low = name.lower()
        if low == b"host":
            hosts.append(value)
        elif low == b"content-length":
            length = value
        elif low == b"transfer-encoding":
            te.append(value.strip().lower())
    if te and length is not None:
        raise GatewayError(400, "ambiguous-length", "a request with both Content-Length and Transfer-Encoding "
                           "is refused (its length would be ambiguous)")
    if te and te != [b"chunked"]:
        raise GatewayError(501, "unsupported-transfer-encoding", "only Transfer-Encoding: chunked is accepted")
    if len(hosts) != 1:
        raise GatewayError(400, "bad-host", "a request needs exactly one Host header" if hosts else
                           "a request needs a Host header")
    body = CHUNKED if te else LENGTH if length is not None and length.strip() != b"0" else NO_BODY
    return split_host(hosts[0]), body


#: how a message's body is delimited
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = "none", "length", "chunked", "close"


# ---------------------------------------------------------------- heads as llhttp accepted them
#
# The proxy lets llhttp (httptools) check every byte of a head, and asks it for no callback
# per header: it takes the head's block of field lines from the bytes llhttp has just
# accepted and reads it here, with a few searches of the whole block. llhttp refuses a bare
# CR or LF, a space before a field's colon, obs-fold and control characters, so in an
# accepted head every line ends in CRLF, the first empty line ends the head, and a field
# line is ``NAME:VALUE`` with NAME a token: in the block (which starts with the CRLF that
# ends the first line), ``\nNAME:`` is where a field NAME begins, and nowhere else.
# tests/gateway/test_head_block.py holds this against llhttp's own reading.

_FIELD = rb"^([^:\r\n]+):[ \t]*([^\r\n]*?)[ \t]*\r$"
_FIELDS_RE = re.compile(_FIELD, re.M)
#: the fields that decide a request's framing and route
_FRAMING_RE = re.compile(_FIELD.replace(rb"[^:\r\n]+", rb"host|content-length|transfer-encoding"), re.M | re.I)


def _names(names) -> bytes:
    return b"|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


_TO_DROP = HOP_BY_HOP | _FORWARDED | {b"authorization"}
#: whole field lines the app never sees from a client: hop-by-hop ones, the gateway's
#: credentials (Authorization; its cookie is taken out of Cookie apart) and what only the
#: gateway may say (X-Forwarded-*, X-Tether-User)
_DROP_RE = re.compile(rb"^(?:" + _names(_TO_DROP) + rb"):[^\r\n]*\r\n", re.M | re.I)
#: in a lowercased request block: a field that is dropped, or that frames a body
_REQUEST_SPECIAL_RE = re.compile(rb"\n(?:" + _names(_TO_DROP | {b"content-length"}) + rb"):")
#: in a lowercased answer head: a field that keeps the head from passing as it came
_ANSWER_SPECIAL_RE = re.compile(rb"\n(?:" + _names(HOP_BY_HOP | {b"set-cookie"}) + rb"):")


def locate_head(data: bytes, at: int) -> tuple[int, int, int]:
    """Where the head that llhttp has accepted, starting at ``at`` in ``data``, lies: (the
    start of its first line, the end of that line, the start of the CRLFCRLF that ends it).
    Empty lines before a message are skipped, as llhttp skips them. -1 as the last when
    the head does not end in ``data`` (an HTTP/0.9 request line, which is refused)."""
    first = data[at]
    if first == 13 or first == 10:  # CR, LF
        at = len(data) - len(data[at:].lstrip(b"\r\n"))
    line_end = data.find(b"\r\n", at)
    return at, line_end, data.find(b"\r\n\r\n", line_end)


def split_fields(block: bytes) -> Headers:
    """The (name, value) pairs of a block of field lines (each ending in CRLF), values
    without the whitespace around them."""
    return _FIELDS_RE.findall(block)


#: heads up to this size have their reading remembered (pure functions of their bytes: a
#: browser sends the same fields request after request, an app answers with the same head)
REMEMBERED_HEAD = 2048


def check_block(method: bytes, version: str, block: bytes) -> tuple[str, str, int, bytes, bool]:
    """:func:`check_head` for a request's block of field lines: (the Host's name, how the
    body is delimited, its Content-Length when it has one, the Host field's value, and
    whether the block may go to the app as it came: no field to drop, no body)."""
    if len(block) <= REMEMBERED_HEAD:
        return _check_block_remembered(method, version, block)
    return _check_block(method, version, block)


def _check_block(method: bytes, version: str, block: bytes) -> tuple[str, str, int, bytes, bool]:
    low = block.lower()
    if (method != b"CONNECT" and version in ("1.0", "1.1") and _REQUEST_SPECIAL_RE.search(low) is None
            and low.count(b"\nhost:") == 1):  # the commonest: one Host, no body, nothing to drop
        i = low.index(b"\nhost:") + 6
        value = block[i:block.index(b"\r", i)].strip(b" \t")
        return split_host(value), NO_BODY, 0, value, True
    framing = _FRAMING_RE.findall(block)
    host, body = check_head(method, version, framing)
    value = next(v for n, v in framing if n.lower() == b"host")
    return host, body, content_length(framing) if body == LENGTH else 0, value, False


_check_block_remembered = lru_cache(maxsize=1024)(_check_block)  # (a refusal, an exception, is not remembered)


def read_request(head: bytes) -> tuple | None:
    """A request head llhttp has accepted (from its line to the CRLFCRLF that ends it), read
    by :func:`check_block`'s rules: (method, target, whether HTTP/1.1, the Host's name, how
    the body is delimited, its Content-Length, the Host field's value, whether the block may
    go to the app as it came, the block of field lines, its LF count: the fields + 1).
    GatewayError when refused; None when its line does not end in an HTTP/1.0 or 1.1
    version (llhttp's own reading of it decides the refusal). The line is split each time
    and the block's reading remembered (a browser's next request differs in its path, not
    in its fields)."""
    line_end = head.find(b"\r\n")
    proto = head[line_end - 9:line_end]
    if proto == b" HTTP/1.1":
        version = "1.1"
    elif proto == b" HTTP/1.0":
        version = "1.0"
    else:
        return None
    line = head[:line_end].split(b" ", 2)
    if len(line) < 3:
        return None
    block = head[line_end:-2]
    host, body, length, value, clean = check_block(line[0], version, block)
    return line[0], line[1], version == "1.1", host, body, length, value, clean, block, block.count(b"\n")


def upstream_head(method: bytes, target: bytes, block: bytes, clean: bool, client_ip: str, scheme: str,
                  host: bytes, prefix: str, cookie: str, extra: Headers = (), upgrade: bool = False,
                  chunked: bool = False) -> bytes:
    """The request head the app is sent, by the rules of :func:`upstream_request_headers`,
    from the client's block of field lines (``clean``: nothing in it to drop): the lines
    to drop are cut out in one pass and the gateway's own appended. A request whose
    Cookie may hold the gateway's cookie, or that asks for an upgrade, takes the
    field-by-field way."""
    if upgrade or _cookie_pair(cookie) in block:
        fields = upstream_request_headers(split_fields(block), client_ip=client_ip, scheme=scheme, host=host,
                                          prefix=prefix, cookie=cookie, extra=extra, upgrade=upgrade)
        lines = b"\r\n" + b"".join(b"%s: %s\r\n" % h for h in fields)
    else:
        lines = (block if clean else _DROP_RE.sub(b"", block)) + _forwarded(client_ip, scheme, host)
        if prefix:
            lines += b"x-forwarded-prefix: %s\r\n" % prefix.encode()
        if extra:
            lines += b"".join(b"%s: %s\r\n" % h for h in extra)
    if chunked:
        lines += b"transfer-encoding: chunked\r\n"
    return b"%s %s HTTP/1.1%s\r\n" % (method, target, lines)


@lru_cache(maxsize=1024)
def _forwarded(client_ip: str, scheme: str, host: bytes) -> bytes:
    """The gateway's X-Forwarded-* lines (a browser connection asks for the same ones each request)."""
    return b"x-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\n" % (
        client_ip.encode(), scheme.encode(), host)


@lru_cache(maxsize=256)
def _cookie_pair(cookie: str) -> bytes:
    return (cookie + "=").encode()


def passable_length(head: bytes) -> int | None:
    """The Content-Length of an app's final answer head that may go to the browser as it
    came: HTTP/1.1, its body delimited by one Content-Length, and no hop-by-hop field or
    Set-Cookie (which :func:`response_head` would rewrite). None for any other head."""
    return _passable_remembered(head) if len(head) <= REMEMBERED_HEAD else _passable_length(head)


def _passable_length(head: bytes) -> int | None:
    if not head.startswith(b"HTTP/1.1 "):
        return None
    low = head.lower()
    if _ANSWER_SPECIAL_RE.search(low) is not None or low.count(b"\ncontent-length:") != 1:
        return None
    i = low.index(b"\ncontent-length:") + 16
    return int(head[i:head.index(b"\r", i)])


_passable_remembered = lru_cache(maxsize=1024)(_passable_length)


def content_length(headers: Headers) -> int:
    """The Content-Length of a message the parser accepted (so it has at most one, all digits)."""
    return next((int(v) for n, v in headers if n.lower() == b"content-length"), 0)


class ResponseHead(NamedTuple):
    headers: Headers  # what the browser is sent (framing headers added by the gateway)
    body: str  # how the app delimits the body
    down: str  # how the browser is sent it
    length: int  # the Content-Length, when body is LENGTH
    close: bool  # the browser's connection ends after this answer


def response_head(status: int, method: bytes, headers: Headers, *, http11: bool, keep_alive: bool) -> ResponseHead:
    """What the browser is sent for the app's final (status >= 200) answer head, in one pass:
    the app's headers without hop-by-hop ones and with every Set-Cookie made host-only (its
    Domain dropped, so an app cannot plant a cookie on its sibling routes); how the body is
    delimited (RFC 9112 6.3: none for HEAD, 204 and 304; chunked when the last transfer
    coding is; else Content-Length; else until the app closes); and how it goes on to the
    browser: a length as it is, anything else chunked to an HTTP/1.1 browser (so its
    connection stays open) and until-close to an HTTP/1.0 one."""
    out: Headers = []
    te = length = None
    for name, value in headers:
        low = name.lower()
        if low in HOP_BY_HOP:
            if low == b"transfer-encoding":
                te = value if te is None else te + b"," + value
            continue
        if low == b"set-cookie":
            value = _host_only(value)
        elif low == b"content-length":
            length = value
        out.append((name, value))
    if te is not None and length is not None:  # (the parser refuses this; never pass both on)
        out = [(n, v) for n, v in out if n.lower() != b"content-length"]
        length = None
    if method == b"HEAD" or status in (204, 304):
        body = NO_BODY
    elif te is not None:
        body = CHUNKED if te.rsplit(b",", 1)[-1].strip().lower() == b"chunked" else UNTIL_CLOSE
    else:
        body = LENGTH if length is not None else UNTIL_CLOSE
    down = body if body in (NO_BODY, LENGTH) else CHUNKED if http11 else UNTIL_CLOSE
    if down == CHUNKED:
        out.append((b"transfer-encoding", b"chunked"))
    close = down == UNTIL_CLOSE or not keep_alive
    if close:
        out.append((b"connection", b"close"))
    return ResponseHead(out, body, down, int(length) if body == LENGTH else 0, close)


def is_upgrade(headers: Headers) -> bool:
    """A websocket (or other) upgrade request: Connection names upgrade and Upgrade is set."""
    conn = b",".join(v for n, v in headers if n.lower() == b"connection").lower()
    return b"upgrade" in [t.strip() for t in conn.split(b",")] and any(n.lower() == b"upgrade" for n, _ in headers)


@lru_cache(maxsize=256)
def cookie_name(secure: bool, prefix: str = "") -> str:
    """The gateway's session cookie on a route. On its own origin: ``__Host-`` (which needs
    Secure: a plain-HTTP gateway, a laptop's *.localhost, drops the prefix). In path mode
    the routes share one origin, so each route's cookie has a name of its own (and its
    path, :func:`session_cookie`); ``__Host-`` needs Path=/, so there it is ``__Secure-``."""
    if prefix:
        tail = prefix.removeprefix(PATH_PREFIX).replace("/", "-")
        return ("__Secure-" if secure else "") + f"tether-gw-{tail}"
    return "__Host-tether-gw" if secure else "tether-gw"


def upstream_request_headers(headers: Headers, *, client_ip: str, scheme: str, host: bytes, prefix: str,
                             cookie: str, extra: Headers = (), upgrade: bool | None = None) -> Headers:
    """What the app is sent: the client's headers without hop-by-hop ones, without the
    gateway's cookie and Authorization (credentials for the gateway, not the app), with
    the gateway's own X-Forwarded-* (a client's are dropped, never trusted), and ``extra``
    headers the gateway vouches for (X-Tether-User: a client's own is dropped too)."""
    out: Headers = []
    upgrade = is_upgrade(headers) if upgrade is None else upgrade  # (the parser's reading, when there is one)
    for name, value in headers:
        low = name.lower()
        if low in _FORWARDED or low == b"authorization":
            continue
        if low in HOP_BY_HOP and not (upgrade and low == b"upgrade"):
            continue
        if low == b"cookie":
            value = strip_cookie(value, cookie.encode())
            if not value:
                continue
        out.append((name, value))
    if upgrade:
        out.append((b"connection", b"upgrade"))
    out += [(b"x-forwarded-for", client_ip.encode()), (b"x-forwarded-proto", scheme.encode()),
            (b"x-forwarded-host", host)]
    if prefix:
        out.append((b"x-forwarded-prefix", prefix.encode()))
    return out + list(extra)


def strip_cookie(header: bytes, name: bytes) -> bytes:
    """A Cookie header without the named cookie (the others pass untouched)."""
    kept = [part.strip() for part in header.split(b";") if part.strip() and part.strip().split(b"=", 1)[0] != name]
    return b"; ".join(kept)


def downstream_response_headers(headers: Headers, *, upgrade: bool = False) -> Headers:
    """What the browser is sent: the app's headers without hop-by-hop ones, and every
    Set-Cookie made host-only (its Domain attribute dropped), so an app cannot plant a
    cookie on its sibling routes."""
    out: Headers = []
    for name, value in headers:
        low = name.lower()
        if low in HOP_BY_HOP and not (upgrade and low in (b"upgrade", b"connection")):
            continue
        if low == b"set-cookie":
            value = _host_only(value)
        out.append((name, value))
    return out


def _host_only(set_cookie: bytes) -> bytes:
    parts = set_cookie.split(b";")
    return b";".join([parts[0]] + [p for p in parts[1:] if p.strip().split(b"=", 1)[0].lower() != b"domain"])


def safe_next(value: str | None, prefix: str = "") -> str:
    """Where a sign-in may send the browser: a path on the same route, else its root.

    Never an absolute URL, a scheme-relative ``//host``, a backslash (browsers read
    ``/\\host`` as ``//host``) or a control character: the result is re-encoded, so no
    CR/LF can reach a header."""
    root = (prefix or "") + "/"
    if not value:
        return root
    raw = unquote_to_bytes(value)
    if b"\\" in raw or any(b < 0x20 or b == 0x7F for b in raw):
        return root
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return root
    parts = urlsplit(text)
    if parts.scheme or parts.netloc or not text.startswith("/") or text.startswith("//"):
        return root
    if prefix and not (text == prefix or text.startswith(prefix + "/")):
        return root
    return quote(text, safe="/?&=%:@!$'()*+,;~-._")


def session_cookie(name: str, value: str, *, secure: bool, max_age: int, prefix: str = "") -> bytes:
    """Set-Cookie for the gateway's session on one route: host-only, Path=/ (or the route's
    prefix in path mode), HttpOnly, SameSite=Lax, and Secure whenever the gateway speaks HTTPS."""
    attrs = [f"{name}={value}", f"Path={prefix or ''}/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if secure:
        attrs.append("Secure")
    return "; ".join(attrs).encode()
