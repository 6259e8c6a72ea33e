"""A count, in this process, of changes that take access away: a token revoked, a user
disabled, a forward share ended or narrowed, a route closed.

Caches of "may this caller pass?" answers (:class:`Recent`: the gateway's route rows and
credential checks, :class:`tether.auth.recent.Checks`; a job node's token and place) start
afresh when it moves, so a change made through this replica's API is enforced by it at once.
Other replicas do not see this count: their caches hold an answer for at most their own
bound (``CHECK_SECONDS``), and the database stays the one truth.
"""

from __future__ import annotations

import time

#: how long a cached check may be reused (by a replica that did not make the change)
CHECK_SECONDS = 1.0

_count = 0


def current() -> int:
    return _count


def bump() -> None:
    global _count
    _count += 1


class Recent:
    """Answers reused for at most ``seconds`` (and at most ``size`` of them: past that the
    lot is dropped), and none once this process took some access away (:func:`bump`), so
    a busy caller costs its database reads once a second, not per request."""

    def __init__(self, seconds: float = CHECK_SECONDS, size: int = 4096, clock=time.monotonic):
        self.seconds, self.size, self.clock = seconds, size, clock
        self._d: dict = {}
        self._epoch = _count

    def get(self, key):
        if _count != self._epoch:  # this process took some access away: start afresh
            self._epoch = _count
            self._d.clear()
        hit = self._d.get(key)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        return None

    def put(self, key, value) -> None:
        if len(self._d) >= self.size:
            self._d.clear()
        self._d[key] = (self.clock() + self.seconds, value)
