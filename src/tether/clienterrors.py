"""What every hub client shares, without httpx: the errors it raises, reading an
error answer, ``Retry-After``, and the TLS context for a hub URL.

:mod:`tether.client` (httpx, for most commands) and :mod:`tether.publish.client`
(:mod:`tether.wire`, so that ``tether publish`` never pays httpx's import time)
both use these; ``tether.client`` re-exports them under the same names, so
``except tether.client.HubError`` catches what either raises.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from tether.hubclient.retry import MAX_RETRY_AFTER, retry_after  # noqa: F401 - re-exported until the move


class HubError(Exception):
    """The hub answered with a non-2xx status; ``problem`` is its problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        super().__init__(self.message)

    @property
    def slug(self) -> str:
        t = str(self.problem.get("type") or "")
        return t.rsplit(":", 1)[-1] if t.startswith("urn:tether:problem:") else ""

    @property
    def message(self) -> str:
        p = self.problem
        detail = p.get("detail")
        if isinstance(detail, list):  # FastAPI-style validation errors
            parts = []
            for err in detail:
                if isinstance(err, dict):
                    loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
                    parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
                else:
                    parts.append(str(err))
            detail = "; ".join(parts)
        msg = str(detail or p.get("title") or _phrase(self.status))
        if p.get("caveat"):
            msg += f" (caveat: {p['caveat']})"
        return msg


class TransportError(Exception):
    """The hub could not be reached, or the exchange broke off."""

    def __init__(self, message: str, *, url: str | None = None, tls: bool = False):
        super().__init__(message)
        self.url = url
        self.tls = tls


def _phrase(status: int) -> str:
    from http import HTTPStatus  # only on an error: building the enum is ~1 ms of every publish

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _problem_from(resp: Any) -> dict[str, Any]:
    """The problem+json body of an error answer (an httpx.Response or a tether.wire.WireResponse),
    or one made up from its status and text."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        body.setdefault("status", resp.status_code)
        return body
    if resp.is_redirect:
        where = resp.headers.get("Location", "?")
        return {
            "type": "about:blank",
            "title": _phrase(resp.status_code),
            "status": resp.status_code,
            "detail": f"the hub redirects to {where}: use that URL as the hub URL",
        }
    text = resp.text.strip()
    return {
        "type": "about:blank",
        "title": _phrase(resp.status_code),
        "status": resp.status_code,
        "detail": f"{_phrase(resp.status_code)}: {text[:200]}" if text else _phrase(resp.status_code),
    }


def tls_context(hub_url: str, ca_bundle: str | None = None) -> ssl.SSLContext:
    """The TLS context for talking to ``hub_url``: ``ca_bundle`` (a PEM file) trusted
    instead of the system CAs when given; else what httpx trusts by default
    (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else certifi's bundle), so every command
    trusts the same certificates. ConfigError when the bundle cannot be loaded."""
    if ca_bundle:
        try:
            return ssl.create_default_context(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            from tether.clientconfig import ConfigError

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
        import certifi  # httpx's own default; installed with it
    except ImportError:  # pragma: no cover
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())
