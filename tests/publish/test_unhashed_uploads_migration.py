"""Migration 0010 on SQLite and PostgreSQL: uploads keep their rows, may then have no
digest yet, and going back down drops only those; "does the space hold a blob of this
size" is answered from the partial index, not by reading every blob."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from tether.db import Database
from tether.publish.core import UNHASHED_MIN
from tether.publish.service import Publisher

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _upload(s, uid: str, digest: str | None) -> None:
    s.execute(text('INSERT INTO uploads (id, digest, size, "user", token_id, space, created_at) '
                   "VALUES (:i, :d, 5, 'u', NULL, 'a', :t)"), {"i": uid, "d": digest, "t": NOW})


def _ids(s) -> list[str]:
    return sorted(s.execute(text("SELECT id FROM uploads")).scalars())


def test_upgrade_keeps_uploads_and_downgrade_drops_the_undeclared(database_url):
    db = Database(database_url)
    db.migrate("0009")
    with db.write() as s:
        _upload(s, "a" * 32, "d" * 64)
    db.migrate("0014")  # (0016's downgrade drops every upload: their pieces are not where 0014 looks)
    with db.write() as s:
        assert _ids(s) == ["a" * 32]
        _upload(s, "b" * 32, None)  # allowed now
    db.downgrade("0009")
    with db.write() as s:
        assert _ids(s) == ["a" * 32]
        with pytest.raises(Exception, match="(?i)null"):
            _upload(s, "c" * 32, None)
    db.migrate()


def test_the_size_question_uses_the_partial_index(database_url, tmp_path):
    db = Database(database_url)
    db.migrate()
    with db.write() as s:
        s.execute(text("INSERT INTO spaces (id, name, description, created_at, public_builds) "
                       "VALUES (1, 'a', '', :t, false), (2, 'b', '', :t, false)"), {"t": NOW})
        for i, (size, space) in enumerate([(UNHASHED_MIN, 1), (UNHASHED_MIN + 1, 2), (100, 1)]):
            d = f"{i:064x}"
            s.execute(text("INSERT INTO blobs (digest, size, created_at, leased_until) VALUES (:d, :n, :t, :t)"),
                      {"d": d, "n": size, "t": NOW})
            s.execute(text("INSERT INTO space_blobs (space_id, digest) VALUES (:s, :d)"), {"s": space, "d": d})
    pub = Publisher.__new__(Publisher)  # only the database part of the publisher is needed here
    pub.db = db
    assert pub._space_has_size(1, UNHASHED_MIN)
    assert not pub._space_has_size(1, UNHASHED_MIN + 1)  # that blob was proven in space 2 only
    assert pub._space_has_size(2, UNHASHED_MIN + 1)
    assert not pub._space_has_size(1, UNHASHED_MIN + 2)
    if db.url.startswith("sqlite"):  # the statement the hub runs, as SQLite plans it
        from tether.publish.service import _size_query

        with db.read() as s:
            # bound parameters as at run time: only what the query itself inlines reaches the planner
            compiled = _size_query(1, UNHASHED_MIN).compile(s.bind, compile_kwargs={"render_postcompile": True})
            args = [compiled.params[k] for k in compiled.positiontup]
            cur = s.connection().connection.cursor()
            plan = " ".join(str(r[-1]) for r in cur.execute("EXPLAIN QUERY PLAN " + str(compiled), args))
        assert "ix_blobs_large_size" in plan, plan
