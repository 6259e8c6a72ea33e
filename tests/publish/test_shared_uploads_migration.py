"""Migration 0016 on SQLite and PostgreSQL: uploads in progress stand at 0 (their bytes were
on one hub's disk), pieces go with their upload, and going back down leaves a schema the
previous version runs on."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from tether.db import Database

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_upgrade_starts_uploads_at_zero_and_downgrade_goes_back(database_url):
    db = Database(database_url)
    db.migrate("0014")
    with db.write() as s:
        s.execute(text('INSERT INTO uploads (id, digest, size, "user", token_id, space, created_at) '
                       "VALUES (:i, NULL, 5, 'u', NULL, 'a', :t)"), {"i": "a" * 32, "t": NOW})
    db.migrate()
    with db.write() as s:
        assert s.execute(text("SELECT received, finishing_at FROM uploads")).all() == [(0, None)]
        s.execute(text("INSERT INTO upload_pieces (upload_id, start, size, name) VALUES (:u, 0, 3, :n)"),
                  {"u": "a" * 32, "n": "0" * 16})
    with db.write() as s:
        with pytest.raises(Exception):  # one piece per offset: the chain of an upload is unique
            s.execute(text("INSERT INTO upload_pieces (upload_id, start, size, name) VALUES (:u, 0, 2, :n)"),
                      {"u": "a" * 32, "n": "1" * 16})
    with db.write() as s:
        s.execute(text("DELETE FROM uploads"))
        assert s.execute(text("SELECT count(*) FROM upload_pieces")).scalar() == 0  # pieces go with it
    db.downgrade("0014")
    with db.write() as s:
        cols = s.execute(text("SELECT * FROM uploads")).keys()
        assert "received" not in cols
    db.migrate()
    db.dispose()
