"""Migration 0017 on SQLite and PostgreSQL: audit records gain last_at (None for those
already there, each of which stands for one request); downgrading drops it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from tether.auth import audit
from tether.db import Database

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def test_existing_records_have_no_interval_and_downgrade_drops_it(database_url):
    db = Database(database_url)
    db.migrate("0014")
    with db.write() as s:
        s.execute(text('INSERT INTO audit (at, "user", action, resource, outcome, status, reason, count) '
                       "VALUES (:t, 'alice', 'token.mint', '', 'allowed', 201, '', 1)"),
                  {"t": datetime(2026, 1, 1, tzinfo=timezone.utc)})
    db.migrate()
    assert [r["last_at"] for r in audit.query(db)] == [None]
    first, last = datetime(2026, 1, 2, tzinfo=timezone.utc), datetime(2026, 1, 2, 0, 1, tzinfo=timezone.utc)
    audit.record(db, at=first, user="ci", token_id="0123456789abcdef", action="publish.read",
                 resource="space:builds/x", source="10.0.0.1", outcome="allowed", status=200, reason="",
                 count=500, last_at=last)
    assert [(r["count"], r["last_at"]) for r in audit.query(db)] == [(1, None), (500, "2026-01-02T00:01:00Z")]
    db.downgrade("0014")
    db.migrate()
    assert [r["last_at"] for r in audit.query(db)] == [None, None]
