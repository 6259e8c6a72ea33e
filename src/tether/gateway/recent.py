"""What a replica's gateway remembers between requests: a route's row and a credential's
check, each for at most :data:`CHECK_SECONDS`, so a busy route costs its database reads
once a second rather than once a request (forward's routes and apps' instances alike).

Access taken away through this process (:mod:`tether.auth.epoch`: a token revoked, a user
disabled, a share ended, an instance stopped...) drops every answer at once; another
replica's answers live out their bound, and the database stays the one truth.
"""

from __future__ import annotations

import hashlib
import time

from tether.auth import epoch as auth_epoch
from tether.auth.caveats import check_request
from tether.auth.service import normalise_source
from tether.db.models import utcnow

#: how long a route's row and a credential's check are reused by a replica's gateway. A
#: stopped route or instance, a revoked token, share or link, an unshare or a disabled user
#: is refused by every replica within this; an expiry or source caveat is checked on every request.
CHECK_SECONDS = 1.0


class Recent:
    """Answers reused for at most ``seconds`` (and at most ``size`` of them: past that the
    lot is dropped), so a busy route costs its database reads once a second, not per request."""

    def __init__(self, seconds: float = CHECK_SECONDS, size: int = 4096, clock=time.monotonic):
        self.seconds, self.size, self.clock = seconds, size, clock
        self._d: dict = {}
        self._epoch = auth_epoch.current()

    def get(self, key):
        if auth_epoch.current() != self._epoch:  # this process took some access away: start afresh
            self._epoch = auth_epoch.current()
            self._d.clear()
        hit = self._d.get(key)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        return None

    def put(self, key, value) -> None:
        if len(self._d) >= self.size:
            self._d.clear()
        self._d[key] = (self.clock() + self.seconds, value)


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
