"""Migration 0013 on SQLite and PostgreSQL: audit records gain a count, 1 for those already there."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from tether.db import Database
from tether.auth import audit

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def test_existing_records_count_one_and_downgrade_drops_the_column(database_url):
    db = Database(database_url)
    db.migrate("0012")
    with db.write() as s:
        s.execute(text('INSERT INTO audit (at, "user", action, resource, outcome, status, reason) '
                       "VALUES (:t, 'alice', 'token.mint', '', 'allowed', 201, '')"),
                  {"t": datetime(2026, 1, 1, tzinfo=timezone.utc)})
    db.migrate()
    assert [r["count"] for r in audit.query(db)] == [1]
    audit.record(db, at=datetime(2026, 1, 2, tzinfo=timezone.utc), user=None, token_id=None, action="auth",
                 resource="/api/v1/whoami", source="10.0.0.1", outcome="denied", status=401,
                 reason="unauthenticated: no token", count=500)
    assert [r["count"] for r in audit.query(db)] == [1, 500]
    db.downgrade("0012")
    db.migrate()
    assert [r["count"] for r in audit.query(db)] == [1, 1]
