"""Migration 0009 on SQLite and PostgreSQL: existing builds keep their entries, and
going back down gives every build that shares entries its own copy again."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tether.db import Database
from tether.db.models import utcnow

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def _seed_build(s, now, *, files: int) -> None:
    """Space 1 with build 10 (ci/1) holding entries x (and y)."""
    s.execute(text("INSERT INTO spaces (id, name, description, created_at, public_builds) "
                   "VALUES (1, 'a', '', :t, false)"), {"t": now})
    s.execute(text("INSERT INTO builds (id, space_id, type, build_id, path, public, \"user\", files, bytes, "
                   "created_at) VALUES (10, 1, 'ci', '1', 'ci/1', false, 'u', :n, :n, :t)"), {"t": now, "n": files})
    for path, d in (("x", "d1"), ("y", "d2"))[:files]:
        s.execute(text("INSERT INTO build_files (build, path, digest, size, mode) VALUES (10, :p, :d, 1, 420)"),
                  {"p": path, "d": d * 32})


def _files(s, build):
    return sorted(s.execute(text("SELECT path, digest FROM build_files WHERE build = :b"), {"b": build}).all())


def test_upgrade_keeps_builds_and_downgrade_unshares_entries(database_url):
    db = Database(database_url)
    db.migrate("0008")
    now = utcnow()
    with db.write() as s:
        _seed_build(s, now, files=2)
    db.migrate()
    with db.write() as s:
        row = s.execute(text("SELECT manifest, files_of FROM builds WHERE id = 10")).one()
        assert tuple(row) == (None, None)  # never matched by a commit by digest
        assert [p for p, _ in _files(s, 10)] == ["x", "y"]
        # a build sharing build 10's entries, as a commit by digest makes it
        s.execute(text("INSERT INTO builds (id, space_id, type, build_id, path, public, \"user\", files, bytes, "
                       "created_at, files_of) VALUES (11, 1, 'ci', '2', 'ci/2', false, 'u', 2, 2, :t, 10)"),
                  {"t": now})
    db.downgrade("0008")
    with db.read() as s:
        assert _files(s, 11) == _files(s, 10) and len(_files(s, 10)) == 2
    db.dispose()


def test_downgrading_below_0003_keeps_spaces_and_their_builds(database_url):
    db = Database(database_url)
    db.migrate()
    now = utcnow()
    with db.write() as s:
        _seed_build(s, now, files=1)
    db.downgrade("0002")
    with db.read() as s:
        assert s.scalar(text("SELECT count(*) FROM spaces")) == 1
        assert _files(s, 10) == [("x", "d1" * 32)]
    db.dispose()
