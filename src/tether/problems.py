"""Errors as ``application/problem+json`` (RFC 9457) with stable ``type`` slugs."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

PROBLEM_BASE = "urn:tether:problem:"


class Problem(Exception):
    """Raise anywhere in request handling; becomes a problem+json response."""

    def __init__(self, status: int, slug: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        # For the audit trail only, never sent to the client (e.g. the user a refused token acts for).
        self.trail: dict[str, Any] = {}

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body = {
            "type": PROBLEM_BASE + self.slug,
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


def bad_request(detail: str, slug: str = "bad-request", **extra: Any) -> Problem:
    return Problem(400, slug, detail, **extra)


def not_found(what: str) -> Problem:
    return Problem(404, "not-found", f"{what} does not exist")


def conflict(detail: str) -> Problem:
    return Problem(409, "conflict", detail)


def forbidden(detail: str, slug: str = "forbidden", **extra: Any) -> Problem:
    return Problem(403, slug, detail, **extra)


def unauthenticated(detail: str, slug: str = "unauthenticated", **extra: Any) -> Problem:
    return Problem(401, slug, detail, headers={"WWW-Authenticate": 'Bearer realm="tether"'}, **extra)


def exit_code_for_status(status: int) -> int:
    """The exit code (see DESIGN.md) for an HTTP status, for the CLI and the SSH entry alike:
    4 refused (401/403); 1 a clean no (404, 409, 410: not there, already there, gone);
    3 runtime (429 and 5xx: try again later); 2 other 4xx (the request itself is wrong)."""
    if status in (401, 403):
        return 4
    if status in (404, 409, 410):
        return 1
    if status == 429 or status >= 500:
        return 3
    if 400 <= status < 500:
        return 2
    return 3  # unexpected 1xx/3xx
