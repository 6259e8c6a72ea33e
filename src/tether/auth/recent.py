"""What a replica remembers between requests: a route's row and a credential's check, each
for at most :data:`CHECK_SECONDS`, so a busy route costs its database reads once a second
rather than once a request (the gateway's forward routes and app instances, a job node's
token and place).

Access taken away through this process (:mod:`tether.auth.epoch`: a token revoked, a user
disabled, a share ended, an instance stopped...) drops every answer at once; another
replica's answers live out their bound, and the database stays the one truth.
"""

from __future__ import annotations

import hashlib

from tether.auth.epoch import CHECK_SECONDS, Recent  # noqa: F401 (CHECK_SECONDS: the bound, named here too)
from tether.auth.caveats import check_request
from tether.auth.service import normalise_source
from tether.db.models import utcnow


class Checks(Recent):
    """Recent answers to "may this credential pass?": the caller's context, kept only when
    allowed, reused only while its caveats (expiry, source) still hold for the request at
    hand; a token that counts its uses is checked every time (each use must be counted)."""

    @staticmethod
    def key(*parts, secret: str) -> tuple:
        """A cache key for ``secret`` with ``parts`` (the route, the method...): its digest, never the secret."""
        return (*parts, hashlib.sha256(secret.encode()).digest())

    def allowed(self, key, source: str | None):
        """The context cached for ``key`` if it may be reused for a request from ``source``, else None."""
        ctx = self.get(key)
        if ctx is not None and ctx.caveats is not None and check_request(
                ctx.caveats, now=utcnow(), source=normalise_source(source)):
            return None
        return ctx

    def keep(self, key, ctx) -> None:
        if not (ctx.token is not None and ctx.token.limited.get("uses")):
            self.put(key, ctx)
