"""tether's errors: one base carrying an exit code, the table from an HTTP status to
an exit code, and the hub's errors as ``application/problem+json`` (RFC 9457) with
stable ``type`` slugs.

A foundation module: no I/O, no click. The command line shows a :class:`TetherError`
as ``tether: error: ...`` (:mod:`tether.console`) and exits with its ``exit_code``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from typing import Any

PROBLEM_BASE = "urn:tether:problem:"

# Exit codes of every command (DESIGN.md, Conventions).
EXIT_OK = 0
EXIT_NO = 1  # a clean "no": not found, already exists, timed out, nothing received
EXIT_USAGE = 2  # usage or configuration error
EXIT_RUNTIME = 3  # runtime or transport failure
EXIT_AUTH = 4  # authentication or permission denied

_EXIT_FOR_STATUS = {
    400: EXIT_USAGE,  # the request was wrong: the user's input
    401: EXIT_AUTH,
    403: EXIT_AUTH,
    404: EXIT_NO,
    409: EXIT_NO,  # already exists (a build id, a name): the answer is "no", nothing broke
    410: EXIT_NO,  # gone (expired, removed): like 404, retrying or rephrasing does not help
    413: EXIT_USAGE,  # too large for the hub's limits: the input must change
    422: EXIT_USAGE,  # well-formed but invalid input
    429: EXIT_RUNTIME,  # rate limited: a passing condition of the hub; the same command works later
}


def exit_code_for_status(status: int) -> int:
    """The exit code for an error answer of the hub (or the SSH entry) with HTTP ``status``:
    the table above; any other 4xx is a usage error, 5xx and anything unexpected a runtime one."""
    if status in _EXIT_FOR_STATUS:
        return _EXIT_FOR_STATUS[status]
    return EXIT_USAGE if 400 <= status < 500 else EXIT_RUNTIME


class TetherError(Exception):
    """A failure to report to the user: a message, the exit code to end with and, where
    one helps, a hint saying what to do. Subclasses set their own ``exit_code``."""

    exit_code: int = EXIT_RUNTIME
    hint: str | None = None

    def __init__(self, message: str, exit_code: int | None = None, hint: str | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        if hint is not None:
            self.hint = hint


class ConfigError(TetherError):
    """A configuration that cannot be used: the client's, the hub's or a signal config
    file. ``path`` and ``line`` (1-based) say where, when known."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None, *, path: str | None = None, line: int | None = None):
        if path is not None or line is not None:
            where = path or "config"
            message = f"{where}:{line}: {message}" if line is not None else f"{where}: {message}"
        super().__init__(message, hint=hint)
        self.path = path
        self.line = line


class Problem(TetherError):
    """Raise anywhere in request handling; becomes a problem+json response."""

    def __init__(self, status: int, slug: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail, exit_code_for_status(status))
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra
        # For the audit trail only, never sent to the client (e.g. the user a refused token acts for).
        self.trail: dict[str, Any] = {}

    def body(self, instance: str | None = None) -> dict[str, Any]:
        from http import HTTPStatus  # here: building the enum costs every command ~1 ms

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
