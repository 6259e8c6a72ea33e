"""Checks on a request's URL before any route sees it: its Host, and its encoding.

* **Host.** The hub builds every URL it answers with from its public URL, never from
  the Host header. When the operator sets ``public_url``, a request naming a Host
  the hub does not serve is refused (421): the hub answers only to its own names
  (a DNS-rebound name, say, gets nothing).
* **UTF-8.** The server percent-decodes the path and query with invalid UTF-8
  replaced by U+FFFD, so ``%FF`` in a published path would land as ``\\ufffd``.
  Paths are never silently normalised: invalid UTF-8 is refused (400) instead.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes, urlsplit

from fastapi.responses import JSONResponse

from tether.config import HubSettings
from tether.problems import Problem

PROBLEM_JSON = "application/problem+json"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def served_hosts(settings: HubSettings) -> frozenset[str] | None:
    """The Host values the hub answers to (lowercase), or None for any (no ``public_url`` set)."""
    if not settings.public_url:
        return None
    u = urlsplit(settings.public_url)
    host = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"
    port = u.port or _DEFAULT_PORTS[u.scheme]
    names = {f"{host}:{port}", settings.listen.lower()}  # its own listen address too (local tools)
    if port == _DEFAULT_PORTS[u.scheme]:
        names.add(host)
    return frozenset(names)


def _is_utf8(raw: bytes) -> bool:
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class UrlCheck:
    """Pure ASGI middleware refusing misdirected Hosts and URLs that are not UTF-8."""

    def __init__(self, app, settings: HubSettings):
        self.app = app
        self.hosts = served_hosts(settings)
        self.public_url = settings.effective_public_url()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = self._problem(scope)
        if problem is None:
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})["problem"] = problem  # for the audit trail
        response = JSONResponse(problem.body(), status_code=problem.status, media_type=PROBLEM_JSON)
        await response(scope, receive, send)

    def _problem(self, scope) -> Problem | None:
        # /healthz names nothing and reveals nothing: load balancers probe it by address
        if self.hosts is not None and scope.get("path") != "/healthz":
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
            if host not in self.hosts:
                return Problem(421, "misdirected-request",
                               f"this hub answers only as {self.public_url}: the request's Host is not one of its names")
        raw_path = scope.get("raw_path")
        if raw_path is not None and not _is_utf8(raw_path.partition(b"?")[0]):
            return Problem(400, "invalid-encoding", "the URL's path is not valid UTF-8 once percent-decoded "
                           "(e.g. %FF): encode names as UTF-8 before percent-encoding them; nothing was done")
        if not _is_utf8(scope.get("query_string", b"").replace(b"+", b" ")):
            return Problem(400, "invalid-encoding", "the URL's query is not valid UTF-8 once percent-decoded "
                           "(e.g. %FF): encode values as UTF-8 before percent-encoding them; nothing was done")
        return None
