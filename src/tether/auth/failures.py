"""The failed-authentication limiter shared by hub replicas on one PostgreSQL database.

Replicas each counting in memory would let a source make N x ``per_minute`` failures a
minute. Here every failure is one upsert of ``auth_failures`` (a row per source and
minute, on the database's clock) that returns the count so far, so the replicas share
one budget per source: the failure past it is refused (429) on whichever replica it
lands. Successes write and read nothing. Once a source is over, this replica refuses its
next failures (and its requests without a token) from memory until the minute ends,
without asking the database; another replica learns it at that source's next failure
there. The minutes are fixed (like the in-memory limiter's windows, which start at a
source's first failure): a source can fail ``per_minute`` times at the end of one and
again at the start of the next.

A single hub on SQLite keeps :class:`tether.auth.ratelimit.FailureLimiter` (memory: it
is the only process); :func:`failure_limiter` picks.
"""

from __future__ import annotations

import threading

from sqlalchemy import create_engine, text

from tether.auth.ratelimit import FailureLimiter
from tether.db import Database

# One statement per failure: count it, and say how many this minute and the seconds left in it.
_COUNT = text(
    "INSERT INTO auth_failures (source, minute, failures) "
    "VALUES (:source, floor(extract(epoch FROM now()) / 60)::bigint, 1) "
    "ON CONFLICT (source, minute) DO UPDATE SET failures = auth_failures.failures + 1 "
    "RETURNING failures, minute, 60 - floor(extract(epoch FROM now()))::bigint % 60"
)
_SWEEP = text("DELETE FROM auth_failures WHERE minute < :minute - 1")


class SharedFailureLimiter:
    """:class:`~tether.auth.ratelimit.FailureLimiter`'s two calls, counted in the database.
    ``now`` is this process's monotonic clock (for the memory of sources over their budget)."""

    def __init__(self, db: Database, per_minute: int, *, max_keys: int = 10_000):
        # A pool of its own: a flood of bad tokens queues here, not in the API's pool. Its
        # commits do not wait for the disk: a crash may forget the last failures' counts,
        # which only lets a source try a few more times (and a failure answers 5 ms sooner).
        self.engine = create_engine(db.url, pool_size=2, max_overflow=2, pool_recycle=1800,
                                    connect_args={"options": "-c synchronous_commit=off"})
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._over: dict[str, float] = {}  # source -> when (monotonic) its minute ends
        self._lock = threading.Lock()  # requests authenticate on the thread pool
        self._swept = -1  # the minute this replica last deleted old rows in

    def retry_after(self, key: str, now: float) -> int | None:
        """Seconds to wait if ``key`` is known here to be over its budget, else None (no I/O)."""
        with self._lock:
            until = self._over.get(key)
            if until is None:
                return None
            if now >= until:
                del self._over[key]
                return None
            return int(until - now) + 1

    def failed(self, key: str, now: float) -> int | None:
        """Count one failure from ``key``; the seconds to wait when it is past the budget
        (refuse it with 429), else None."""
        with self.engine.begin() as conn:
            failures, minute, left = conn.execute(_COUNT, {"source": key}).one()
            if minute != self._swept:
                conn.execute(_SWEEP, {"minute": minute})
                self._swept = minute
        if failures >= self.per_minute:  # its next failure is refused here without the database
            with self._lock:
                self._over.pop(key, None)
                self._over[key] = now + left - 1
                while len(self._over) > self.max_keys:  # bounded under a spray of sources
                    del self._over[next(iter(self._over))]
        return int(left) if failures > self.per_minute else None

    def dispose(self) -> None:
        self.engine.dispose()


def failure_limiter(db: Database, per_minute: int) -> FailureLimiter | SharedFailureLimiter:
    """The database's limiter where replicas may share it (PostgreSQL), else memory's."""
    return FailureLimiter(per_minute) if db.dialect == "sqlite" else SharedFailureLimiter(db, per_minute)
