"""The errors a hub client raises, and reading an error answer.

Both are :class:`~tether.problems.TetherError`: the command line shows them and exits
with their ``exit_code`` (the hub's status through
:func:`~tether.problems.exit_code_for_status`, or 3 for a transport failure).
"""

from __future__ import annotations

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from typing import Any

from tether.problems import EXIT_RUNTIME, TetherError, exit_code_for_status

# What to do about a refusal, by status; the command line may say more (see Conn.explain).
_HINTS = {
    401: "check the token or run `tether login`",
    403: "see `tether whoami` and `tether token inspect` for what this token may do",
    429: "the hub is rate limiting; retry later",
}


class HubError(TetherError):
    """The hub answered with a non-2xx status; ``problem`` is its problem+json body;
    ``retry_after``: the seconds its Retry-After asked for (capped), or None."""

    def __init__(self, status: int, problem: dict[str, Any], hint: str | None = None, *,
                 retry_after: float | None = None):
        self.status = status
        self.problem = problem
        self.retry_after = retry_after
        super().__init__(self.message, exit_code_for_status(status), hint or _HINTS.get(status))

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
        msg = str(detail or p.get("title") or phrase(self.status))
        if p.get("caveat"):
            msg += f" (caveat: {p['caveat']})"
        return msg


class TransportError(TetherError):
    """The hub could not be reached, or the exchange broke off."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, url: str | None = None, tls: bool = False):
        super().__init__(message)
        self.url = url
        self.tls = tls
        if tls:
            self.hint = ("TLS failed: check https:// vs http:// in the hub URL; if the hub uses "
                         "a private CA, pass --ca-bundle FILE or set TETHER_CA_BUNDLE")
        else:
            self.hint = "is the hub running and reachable? check --hub / TETHER_HUB"


def phrase(status: int) -> str:
    from http import HTTPStatus  # only on an error: building the enum is ~1 ms of every publish

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def problem_from(resp: Any) -> dict[str, Any]:
    """The problem+json body of an error answer (a :class:`~tether.hubclient.transport.WireResponse`),
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
            "title": phrase(resp.status_code),
            "status": resp.status_code,
            "detail": f"the hub redirects to {where}: use that URL as the hub URL",
        }
    text = resp.text.strip()
    return {
        "type": "about:blank",
        "title": phrase(resp.status_code),
        "status": resp.status_code,
        "detail": f"{phrase(resp.status_code)}: {text[:200]}" if text else phrase(resp.status_code),
    }


__all__ = ["HubError", "TransportError", "phrase", "problem_from"]
