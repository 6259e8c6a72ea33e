"""A count, in this process, of changes that take access away: a token revoked, a user
disabled, a forward share ended or narrowed, a route closed.

Caches of "may this caller pass?" answers (the gateway's: :class:`tether.gateway.recent.Recent`)
start afresh when it moves, so a change made through this replica's API is enforced by its
gateway at once. Other replicas do not see this count: their caches hold an answer for at
most their own short bound (``CHECK_SECONDS``), and the database stays the one truth.
"""

from __future__ import annotations

_count = 0


def current() -> int:
    return _count


def bump() -> None:
    global _count
    _count += 1
