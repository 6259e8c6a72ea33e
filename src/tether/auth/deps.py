"""Request dependencies every HTTP route shares: who is calling, and the strict body model.

``caller`` authenticates the bearer token (counting failures per source for the 429
limiter and leaving the audit trail its fields); capabilities declare ``ctx: Caller``
and ask ``ctx.require`` (the single policy function) before touching anything.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, field_validator

from tether.auth import service
from tether.auth.service import AuthContext
from tether.db.models import utcnow
from tether.problems import Problem, unauthenticated


def hub_state(request: Request):
    """The hub's shared state (settings, database, limiter, metrics) hung on the app."""
    return request.app.state.hub


# Declares the bearer scheme in the API's description on every route that takes a
# caller; the header itself is read below (auto_error off: our 401 is a problem+json).
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description="a tether token: `Authorization: Bearer tth_…`")


def caller(request: Request, _described: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None
           ) -> AuthContext:
    """Authenticate the bearer token; count failures per source for the 429 limiter."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        _refuse_early(request)
        hub_state(request).metrics.auth_refusals.labels("unauthenticated").inc()
        raise unauthenticated("this endpoint needs a token: send 'Authorization: Bearer tth_…'")
    return authenticate_secret(request, value.strip())


def _refuse_early(request: Request) -> None:
    """429 for a source with too many failed authentications lately."""
    hub = hub_state(request)
    key = service.normalise_source(request.client.host if request.client else None) or "unknown"
    _refuse_if(hub, key, hub.limiter.retry_after(key, time.monotonic()))


def _refuse_if(hub, key: str, wait: int | None) -> None:
    if wait is not None:
        hub.metrics.auth_refusals.labels("rate-limited").inc()
        raise Problem(
            429, "too-many-failures",
            f"too many failed authentications from {key}; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )


def authenticate_secret(request: Request, secret: str, *, count_failure: bool = True) -> AuthContext:
    """Authenticate a token's secret however it came (header, login form, session cookie):
    the same checks, failure counting (unless ``count_failure`` is off) and audit trail.

    The limiter limits failures only: a source over its budget gets 429 for its next bad
    tokens, while a good token from it still works (one broken client behind a NAT or a
    proxy must not lock out everyone else behind it)."""
    hub = hub_state(request)
    source = service.normalise_source(request.client.host if request.client else None)
    key = source or "unknown"
    try:
        ctx = service.authenticate(hub.db, secret, source=source, now=utcnow())
    except Problem as p:
        request.state.trail = {"token_id": p.extra.get("token_id"), "action": "auth", **p.trail}
        if p.status == 401 and count_failure:
            _refuse_early(request)
            # counted across replicas on PostgreSQL: the failure past the budget is refused here
            _refuse_if(hub, key, hub.limiter.failed(key, time.monotonic()))
        hub.metrics.auth_refusals.labels(p.slug).inc()
        raise
    request.state.auth = ctx
    return ctx


Caller = Annotated[AuthContext, Depends(caller)]


class StrictModel(BaseModel):
    """Unknown fields are errors, and no string may carry a NUL (PostgreSQL cannot store one)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, v):
        values = v if isinstance(v, list) else [v]
        if any(isinstance(x, str) and "\x00" in x for x in values):
            raise ValueError("must not contain NUL characters")
        return v
