"""A small synchronous client for the hub's HTTP API.

    >>> with HubClient("https://hub.example", token="tth_...") as hub:
    ...     me = hub.get("/api/v1/whoami")

Non-2xx answers raise :class:`HubError` carrying the ``application/problem+json``
body; failures to talk to the hub at all raise :class:`TransportError`.
Connection failures and 502/503/504 are retried with backoff, for idempotent
methods only (GET, PUT, DELETE, HEAD), at most three tries in all.
"""

from __future__ import annotations

import random
import ssl
import sys
import time
from typing import Any

# httpx imports its own command line (httpx._main, with rich and pygments) when it is
# imported itself, a third of its import time; tether never uses it, and httpx falls
# back to a stub when that import fails, which a None entry here makes it do.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx

from tether import __version__
from tether.clienterrors import (  # re-exported: the errors and helpers live where publish can use them without httpx
    MAX_RETRY_AFTER,  # noqa: F401
    HubError,
    TransportError,
    _phrase,  # noqa: F401
    _problem_from,
    retry_after,
    tls_context,
)

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_TRIES = 3
BACKOFF = 0.25  # seconds, doubled per try, with jitter

# Errors where the request never reached the server's handler (or the peer
# dropped the connection); safe to retry for idempotent methods.
_RETRYABLE_EXC = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)


class HubClient:
    """Talk to a hub. ``ca_bundle`` is a PEM file trusted instead of the system CAs."""

    def __init__(
        self,
        hub_url: str,
        token: str | None = None,
        ca_bundle: str | None = None,
        timeout: float = 30,
        *,
        transport: httpx.BaseTransport | None = None,
    ):
        self.hub_url = hub_url.rstrip("/")
        self.token = token
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self.ssl_context = tls_context(self.hub_url, ca_bundle)
        headers = {"User-Agent": f"tether/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.hub_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            verify=self.ssl_context,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"HubClient({self.hub_url!r}, token={'<set>' if self.token else None})"

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests -----------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> dict[str, Any] | None:
        """Send one request; return the decoded JSON body (None when empty)."""
        method = method.upper()
        tries = MAX_TRIES if method in IDEMPOTENT else 1
        url = self.hub_url + path
        for attempt in range(1, tries + 1):
            last = attempt == tries
            try:
                resp = self._http.request(method, path, **kw)
            except _RETRYABLE_EXC as exc:
                if last:
                    raise self._transport_error(exc, url) from None
                self._sleep(attempt)
                continue
            except httpx.TimeoutException as exc:
                raise TransportError(f"timed out talking to {self.hub_url} ({type(exc).__name__})", url=url) from None
            except httpx.TransportError as exc:
                raise self._transport_error(exc, url) from None
            if resp.status_code in RETRY_STATUSES and not last:
                self._sleep(attempt, retry_after(resp))
                continue
            return self._decode(resp)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, **kw: Any) -> dict[str, Any] | None:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> dict[str, Any] | None:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> dict[str, Any] | None:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> dict[str, Any] | None:
        return self.request("DELETE", path, **kw)

    # -- helpers ------------------------------------------------------------

    @staticmethod
    def _sleep(attempt: int, hint: float | None = None) -> None:
        delay = hint if hint is not None else BACKOFF * (2 ** (attempt - 1))
        time.sleep(delay * (0.75 + random.random() / 2))

    def _transport_error(self, exc: Exception, url: str) -> TransportError:
        text = str(exc) or type(exc).__name__
        tls = "[SSL" in text or isinstance(exc.__context__, ssl.SSLError)
        return TransportError(f"cannot reach hub at {self.hub_url}: {text}", url=url, tls=tls)

    @staticmethod
    def _decode(resp: httpx.Response) -> dict[str, Any] | None:
        if not resp.is_success:
            raise HubError(resp.status_code, _problem_from(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise HubError(
                502,
                {
                    "type": "about:blank",
                    "title": "Bad response",
                    "status": 502,
                    "detail": f"the hub sent a non-JSON {resp.status_code} answer",
                },
            ) from None
