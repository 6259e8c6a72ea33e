"""How much of the hub one client may hold at once: uploads in progress per token and per user.

Each upload in progress holds a lease, a row of ``upload_leases``: a request is let in
only while its token holds fewer than ``per_token`` live leases and its user fewer than
``per_user``, counted in the database under a per-user lock (PostgreSQL: an advisory
lock; SQLite has one writer at a time), so the caps hold however many replicas share
the database and however the balancer spreads the requests. A replica renews the
leases of its uploads in progress every third of ``ttl``; one that dies stops, and its
leases lapse ``ttl`` seconds on at most.

On SQLite (one hub process per database: replicas need PostgreSQL) the same caps are
counted in this process's memory, on its event loop: the same answers, without a
write transaction per upload on a database that takes one writer at a time.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
from sqlalchemy import case, delete, func, select, text, update

from tether.db import Database
from tether.db.models import UploadLease, utcnow
from tether.problems import Problem

log = logging.getLogger("tether.hub")

_LEASE_LOCKS = 0x7E7C  # the advisory lock class of upload leases (the key: the user's name hashed)


class UploadSlots:
    def __init__(self, db: Database, per_token: int, per_user: int, ttl: float):
        self.db = db
        self.per_token = per_token
        self.per_user = per_user
        self.ttl = timedelta(seconds=ttl)
        self.shared = db.dialect != "sqlite"  # leases in the database, else counted here
        self._held: set[str] = set()  # this replica's leases
        self._users: Counter[str] = Counter()  # (not shared) the leases held, per user and token
        self._tokens: Counter[str | None] = Counter()
        # Threads of their own for taking and giving back leases: a burst of uploads
        # starting at once queues here, not in the pool that serves the API and downloads
        # (the database takes one writer at a time anyway).
        self._threads = anyio.CapacityLimiter(4)

    @property
    def in_progress(self) -> int:
        """Uploads in progress on this replica."""
        return len(self._held)

    @asynccontextmanager
    async def hold(self, user: str, token_id: str | None) -> AsyncIterator[None]:
        """One upload in progress for ``user`` (with ``token_id``); 429 when either is at its limit."""
        if self.shared:
            lease = await anyio.to_thread.run_sync(self.take, user, token_id, limiter=self._threads)
        else:
            self._refuse(self._tokens[token_id], self._users[user], user, token_id)
            lease = secrets.token_hex(16)
            self._users[user] += 1
            self._tokens[token_id] += 1
        self._held.add(lease)
        try:
            yield
        finally:
            self._held.discard(lease)
            if self.shared:
                with anyio.CancelScope(shield=True):  # given back even when the request is cancelled
                    await anyio.to_thread.run_sync(self.give_back, lease, limiter=self._threads)
            else:
                _drop(self._users, user)
                _drop(self._tokens, token_id)

    def take(self, user: str, token_id: str | None) -> str:
        """A new lease for ``user`` and ``token_id`` if both are below their caps (else 429)."""
        now = utcnow()
        leases = UploadLease.__table__.c
        with self.db.write() as s:
            if self.db.dialect == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:c, hashtext(:u))"), {"c": _LEASE_LOCKS, "u": user})
            s.execute(delete(UploadLease).where(leases.user == user, leases.expires_at <= now))
            by_user, by_token = s.execute(
                select(func.count(), func.coalesce(func.sum(case((leases.token_id == token_id, 1), else_=0)), 0))
                .where(leases.user == user)
            ).one()
            self._refuse(by_token, by_user, user, token_id)
            lease = secrets.token_hex(16)
            s.add(UploadLease(id=lease, user=user, token_id=token_id, expires_at=now + self.ttl))
        return lease

    def _refuse(self, by_token: int, by_user: int, user: str, token_id: str | None) -> None:
        """429 if the token or the user already holds as many uploads as allowed."""
        if token_id is not None and by_token >= self.per_token:
            raise _busy(f"token {token_id}", self.per_token, "uploads_per_token")
        if by_user >= self.per_user:
            raise _busy(f"user {user}", self.per_user, "uploads_per_user")

    def give_back(self, lease: str) -> None:
        try:
            with self.db.write() as s:
                s.execute(delete(UploadLease).where(UploadLease.id == lease))
        except Exception:  # the database is away: the lease lapses on its own
            log.warning("could not give back upload lease %s; it lapses in %s", lease, self.ttl, exc_info=True)

    def renew(self) -> None:
        """Extend this replica's leases; drop anyone's that lapsed long ago (users who upload no more)."""
        now = utcnow()
        held = list(self._held)
        with self.db.write() as s:
            for i in range(0, len(held), 1000):
                s.execute(update(UploadLease).where(UploadLease.id.in_(held[i:i + 1000]))
                          .values(expires_at=now + self.ttl))
            s.execute(delete(UploadLease).where(UploadLease.expires_at <= now - self.ttl))

    async def renew_forever(self) -> None:
        while self.shared:
            await anyio.sleep(self.ttl.total_seconds() / 3)
            try:
                await anyio.to_thread.run_sync(self.renew)
            except Exception:  # never let this stop the hub; the leases lapse if it keeps failing
                log.exception("could not renew upload leases")


def _busy(who: str, limit: int, setting: str) -> Problem:
    return Problem(429, "too-many-uploads",
                   f"{who} already has {limit} uploads in progress, the most the hub allows ({setting}); "
                   "send this one when another has finished", headers={"Retry-After": "1"})


def _drop(counts: Counter, key) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]  # bounded memory: only keys with uploads in progress stay
