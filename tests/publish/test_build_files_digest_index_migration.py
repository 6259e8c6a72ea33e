"""Migration 0011 on SQLite and PostgreSQL: build_files loses its index by digest
(and gets it back going down), and gc's "no build names this blob" is still one pass
over build_files for all blobs, never a pass per blob."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, inspect, select, text

from tether.db import Database
from tether.db.models import Blob
from tether.publish.service import Publisher

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
GRACE = timedelta(hours=1)


def _indexes(db: Database) -> set[str]:
    with db.read() as s:
        return {ix["name"] for ix in inspect(s.connection()).get_indexes("build_files")}


def test_upgrade_drops_the_index_and_downgrade_restores_it(database_url):
    db = Database(database_url)
    db.migrate("0010")
    assert "ix_build_files_digest" in _indexes(db)
    db.migrate()
    assert "ix_build_files_digest" not in _indexes(db)
    db.downgrade("0010")
    assert "ix_build_files_digest" in _indexes(db)
    db.migrate()


def _fill(db: Database) -> None:
    """Blobs 0-3, old and unleased; a build names 0 and 2; blob 3 is still leased."""
    old = NOW - 2 * GRACE
    with db.write() as s:
        s.execute(text("INSERT INTO spaces (id, name, description, created_at, public_builds) "
                       "VALUES (1, 'a', '', :t, false)"), {"t": NOW})
        s.execute(text('INSERT INTO builds (id, space_id, type, build_id, path, public, "user", files, bytes, '
                       "created_at) VALUES (1, 1, 'ci', '1', 'ci/1', false, 'u', 2, 2, :t)"), {"t": NOW})
        for i in range(4):
            leased = NOW + GRACE if i == 3 else old
            s.execute(text("INSERT INTO blobs (digest, size, created_at, leased_until) VALUES (:d, 1, :c, :l)"),
                      {"d": f"{i:064x}", "c": old, "l": leased})
        for i in (0, 2):
            s.execute(text("INSERT INTO build_files (build, path, digest, size, mode) VALUES (1, :p, :d, 1, 420)"),
                      {"p": f"f{i}", "d": f"{i:064x}"})


def test_gc_deletes_only_unnamed_unleased_old_blobs_in_one_pass(database_url):
    db = Database(database_url)
    db.migrate()
    _fill(db)
    pub = Publisher.__new__(Publisher)  # only the database part of the publisher is needed here
    pub.db = db
    doomed = pub._doomed(NOW, GRACE)
    query = select(Blob.digest).where(*doomed)
    with db.read() as s:
        assert list(s.scalars(query)) == [f"{1:064x}"]
        compiled = query.compile(s.bind, compile_kwargs={"render_postcompile": True})
        if db.dialect == "sqlite":
            args = [compiled.params[k] for k in compiled.positiontup]
            cur = s.connection().connection.cursor()
            plan = " ".join(str(r[-1]) for r in cur.execute("EXPLAIN QUERY PLAN " + str(compiled), args))
            # build_files read once into a list, not scanned per blob
            assert "LIST SUBQUERY" in plan and "CORRELATED" not in plan, plan
        else:
            plan = " ".join(s.connection().exec_driver_sql("EXPLAIN " + compiled.string, compiled.params).scalars())
            assert "Anti Join" in plan, plan
    with db.write() as s:
        gone = s.execute(delete(Blob).where(*doomed).returning(Blob.digest),
                         execution_options={"synchronize_session": False}).scalars().all()
    assert gone == [f"{1:064x}"]
    with db.read() as s:
        assert sorted(s.scalars(select(Blob.digest))) == [f"{i:064x}" for i in (0, 2, 3)]


def test_recording_blobs_sorts_by_digest_alone(database_url):
    """Rows are recorded in digest order; the same digest twice, once packed and once on
    its own (pack None), must not make the sort compare None with a pack name."""
    db = Database(database_url)
    db.migrate()
    _fill(db)

    class Settings:
        blob_lease_seconds = 60

    pub = Publisher.__new__(Publisher)
    pub.db, pub.settings = db, Settings()
    d = f"{9:064x}"
    pub._record_blobs([(d, 1, "p" * 32, 0), (f"{8:064x}", 1, None, None), (d, 1, None, None)], NOW, 1)
    with db.read() as s:
        assert s.execute(select(Blob.pack).where(Blob.digest == d)).scalar_one() is None  # stored alone wins
