"""The caps on uploads in progress, as leases in a PostgreSQL database (what replicas
share; on SQLite, one hub process, they are counted in its memory): two hub processes'
worth of takers (two UploadSlots on one database) racing for them get exactly the cap
between them; a lease nobody renews lapses; a refusal writes nothing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from tether.db import Database
from tether.db.models import UploadLease
from tether.hub.limits import UploadSlots
from tether.problems import Problem

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _leases(db: Database) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(UploadLease))


def test_racing_takers_on_two_replicas_get_exactly_the_cap(database_url):
    db = Database(database_url)
    db.migrate()
    replicas = [UploadSlots(Database(database_url), per_token=5, per_user=8, ttl=60) for _ in range(2)]

    def race(token: str, n: int) -> tuple[list[str], list[str]]:
        """``n`` takers at once, alternately on each replica: (the leases, the refusals)."""
        def take(i: int) -> tuple[str, str]:
            try:
                return "lease", replicas[i % 2].take("alice", token)
            except Problem as p:
                assert p.status == 429 and p.headers["Retry-After"] == "1"
                return "refused", p.detail

        with ThreadPoolExecutor(max_workers=16) as pool:
            got = list(pool.map(take, range(n)))
        return [v for k, v in got if k == "lease"], [v for k, v in got if k == "refused"]

    granted, refused = race("t1", 30)
    assert len(granted) == 5 and all("uploads_per_token" in r for r in refused)
    more, refused = race("t2", 10)  # the user's cap (8) comes first
    assert len(more) == 3 and all("uploads_per_user" in r for r in refused)
    assert _leases(db) == 8
    replicas[0].give_back(granted[0])
    assert _leases(db) == 7
    replicas[1].take("alice", "t2")  # the place given back is free again, on any replica
    with pytest.raises(Problem, match="uploads_per_user"):
        replicas[0].take("alice", "t2")
    assert _leases(db) == 8


def test_leases_nobody_renews_lapse_and_renewed_ones_stand(database_url):
    db = Database(database_url)
    db.migrate()
    alive = UploadSlots(db, per_token=2, per_user=2, ttl=1)
    dead = UploadSlots(db, per_token=2, per_user=2, ttl=1)  # a replica that stops renewing (killed)
    alive._held.add(alive.take("bob", "t"))
    dead.take("bob", "t")
    with pytest.raises(Problem, match="uploads_per_token"):
        alive.take("bob", "t")
    time.sleep(1.2)
    alive.renew()  # alive's own lease is extended; dead's has lapsed
    lease = alive.take("bob", "t")  # in dead's place
    with pytest.raises(Problem, match="uploads_per_token"):
        alive.take("bob", "t")
    alive.give_back(lease)
    assert _leases(db) == 1
