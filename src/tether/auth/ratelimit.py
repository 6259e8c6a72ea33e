"""Failed-authentication limiter (sans-IO: the caller passes the clock).

Tokens carry 256 random bits, so guessing is hopeless; this only tells a
misconfigured or hostile client sending bad tokens to back off (429, Retry-After).
It counts failures and refuses failures: a good token from the same source (a
NAT, a proxy) is still served, so one broken client cannot lock out its
neighbours. The source is the client's address, or the one a trusted proxy
(``forwarded_allow_ips``) names in X-Forwarded-For. This one counts in memory: a
single hub's (SQLite). Replicas on PostgreSQL count in the database instead, so a
source has one budget however its requests are spread (:mod:`tether.auth.failures`).
"""

from __future__ import annotations

from collections import OrderedDict


class FailureLimiter:
    def __init__(self, per_minute: int, *, max_keys: int = 10_000):
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def retry_after(self, key: str, now: float) -> int | None:
        """Seconds to wait if ``key`` is over its budget, else None."""
        start, count = self._windows.get(key, (now, 0))
        if now - start >= 60:
            return None
        return int(60 - (now - start)) + 1 if count >= self.per_minute else None

    def failed(self, key: str, now: float) -> int | None:
        """Count one failure from ``key``; the seconds to wait when it is past the budget
        (the caller asks :meth:`retry_after` first, so here that does not happen)."""
        start, count = self._windows.pop(key, (now, 0))
        if now - start >= 60:
            start, count = now, 0
        self._windows[key] = (start, count + 1)
        while len(self._windows) > self.max_keys:  # bounded memory under a spray of sources
            self._windows.popitem(last=False)
        return int(60 - (now - start)) + 1 if count + 1 > self.per_minute else None
