"""`blobs/missing` on SQLite and PostgreSQL: a "present" answer pins the blob for at
least half a lease; a lease with more than half left is not renewed, so asking again
about blobs published a moment ago writes nothing; one with less is renewed."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import select, text

from tether.db import Database
from tether.db.models import Blob
from tether.config import PublishType
from tether.publish.service import Publisher, Target

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
LEASE = 3600


def D(i: int) -> str:
    return f"{i:064x}"


def _publisher(database_url: str, leases: dict[int, datetime], other_space: tuple[int, ...] = ()) -> Publisher:
    """Blobs D(i) leased until leases[i], proven in space 1 (or only in space 2 for i in other_space)."""
    db = Database(database_url)
    db.migrate()
    with db.write() as s:
        for sid in (1, 2):
            s.execute(text("INSERT INTO spaces (id, name, description, created_at, public_builds) "
                           "VALUES (:i, :n, '', :t, false)"), {"i": sid, "n": f"s{sid}", "t": NOW})
        for i, until in leases.items():
            s.execute(text("INSERT INTO blobs (digest, size, created_at, leased_until) VALUES (:d, 1, :c, :l)"),
                      {"d": D(i), "c": NOW - timedelta(days=1), "l": until})
            s.execute(text("INSERT INTO space_blobs (space_id, digest) VALUES (:s, :d)"),
                      {"s": 2 if i in other_space else 1, "d": D(i)})
    pub = Publisher.__new__(Publisher)  # only the database part of the publisher is needed here
    pub.db, pub.settings = db, SimpleNamespace(blob_lease_seconds=LEASE)
    return pub


def _leases(pub: Publisher) -> dict[str, datetime]:
    with pub.db.read() as s:
        return {d: (t if t.tzinfo else t.replace(tzinfo=timezone.utc))
                for d, t in s.execute(select(Blob.digest, Blob.leased_until))}


def _ask(pub: Publisher, digests: list[str]) -> dict:
    return pub.missing(None, Target(1, "s1", "ci", "1", "ci/1", PublishType()), digests, now=NOW)


def _files(database_url: str) -> dict[str, int]:
    """SQLite: the database and its write-ahead log, by size (a write grows the log)."""
    path = database_url.removeprefix("sqlite:///")
    return {p: os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)}


def test_blobs_leased_for_more_than_half_a_lease_are_present_and_left_alone(database_url):
    fresh = NOW + timedelta(seconds=LEASE * 0.9)
    pub = _publisher(database_url, {i: fresh for i in range(50)})
    before, files = _leases(pub), _files(database_url) if database_url.startswith("sqlite") else None
    answer = _ask(pub, [D(i) for i in range(60)])
    assert answer == {"missing": [D(i) for i in range(50, 60)], "lease_seconds": LEASE // 2}
    assert _leases(pub) == before
    if files is not None:
        assert _files(database_url) == files  # not a page written


@pytest.mark.parametrize("left", [LEASE * 0.49, 0, -LEASE])  # under half left, just over, long over
def test_a_lease_with_less_than_half_left_is_renewed(database_url, left):
    pub = _publisher(database_url, {1: NOW + timedelta(seconds=left), 2: NOW + timedelta(seconds=LEASE * 0.6)})
    answer = _ask(pub, [D(1), D(2)])
    assert answer["missing"] == []
    leases = _leases(pub)
    assert leases[D(1)] == NOW + timedelta(seconds=LEASE)
    assert leases[D(2)] == NOW + timedelta(seconds=LEASE * 0.6)  # more than half left: as it was


def test_only_blobs_proven_in_the_space_are_present(database_url):
    pub = _publisher(database_url, {1: NOW + timedelta(seconds=LEASE), 2: NOW - timedelta(seconds=1)},
                     other_space=(1, 2))
    before = _leases(pub)
    assert _ask(pub, [D(1), D(2)])["missing"] == [D(1), D(2)]
    assert _leases(pub) == before  # nothing pinned for another space's asking


def test_a_blob_collected_since_it_was_read_is_missing(database_url):
    """The renewal names only the blobs still there: a stale one that gc deleted after the
    read (simulated: deleted by the time the renewal runs) is reported missing."""
    pub = _publisher(database_url, {1: NOW - timedelta(seconds=1), 2: NOW - timedelta(seconds=1)})
    real_write = pub.db.write

    def write_after_gc():
        with real_write() as s:
            s.execute(text("DELETE FROM blobs WHERE digest = :d"), {"d": D(1)})
        return real_write()

    pub.db.write = write_after_gc  # type: ignore[method-assign]
    assert _ask(pub, [D(1), D(2)])["missing"] == [D(1)]
