"""Migration 0008 on SQLite and PostgreSQL: blobs that builds already name count as
proven in those builds' spaces, so upgrading keeps dedup working for existing builds."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tether.db import Database
from tether.db.models import utcnow

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def test_existing_builds_prove_their_blobs(database_url):
    db = Database(database_url)
    db.migrate("0007")
    now = utcnow()
    with db.write() as s:
        for sid, name in ((1, "a"), (2, "b")):
            s.execute(text("INSERT INTO spaces (id, name, description, created_at, public_builds) "
                           "VALUES (:i, :n, '', :t, false)"), {"i": sid, "n": name, "t": now})
        for d in ("d1", "d2", "d3"):
            s.execute(text("INSERT INTO blobs (digest, size, created_at, leased_until) VALUES (:d, 1, :t, :t)"),
                      {"d": d * 32, "t": now})
        s.execute(text("INSERT INTO builds (id, space_id, type, build_id, path, public, \"user\", files, bytes, "
                       "created_at) VALUES (10, 1, 'ci', '1', 'ci/1', false, 'u', 2, 2, :t), "
                       "(11, 2, 'ci', '1', 'ci/1', false, 'u', 1, 1, :t)"), {"t": now})
        s.execute(text("INSERT INTO build_files (build, path, digest, size, mode) VALUES "
                       "(10, 'x', :d1, 1, 420), (10, 'y', :d2, 1, 420), (11, 'z', :d2, 1, 420)"),
                  {"d1": "d1" * 32, "d2": "d2" * 32})
    db.migrate()
    with db.read() as s:
        rows = {(r[0], r[1][:2]) for r in s.execute(text("SELECT space_id, digest FROM space_blobs"))}
    assert rows == {(1, "d1"), (1, "d2"), (2, "d2")}  # d3 is named by no build: not proven anywhere
    db.dispose()
