"""The hub's multi-row SQLite inserts (publish.service._sqlite_insert)."""

from __future__ import annotations

import sqlite3

import pytest

from tether.publish import service


@pytest.mark.parametrize("max_params", [999, 32766])
def test_many_rows_land_once_each_within_the_parameter_limit(max_params):
    db = sqlite3.connect(":memory:")
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, max_params)  # 999: SQLite before 3.32
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, a INTEGER, b TEXT)")
    seen: list[str] = []
    db.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("INSERT") else None)
    rows = [(f"k{i:05}", i, None if i % 2 else "x") for i in range(2_500)]
    service._sqlite_insert(db.cursor(), "INSERT INTO t (k, a, b)", rows)
    assert db.execute("SELECT k, a, b FROM t ORDER BY k").fetchall() == rows
    assert len(seen) == -(-2_500 // min(1000, max_params // 3))


def test_conflict_clause_applies_and_a_row_repeated_in_one_statement_is_one_row():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)")
    db.execute("INSERT INTO t VALUES ('a', 1)")
    service._sqlite_insert(db.cursor(), "INSERT INTO t (k, n)", [("a", 5), ("b", 2), ("b", 3)],
                           "ON CONFLICT (k) DO UPDATE SET n = max(t.n, excluded.n)")
    assert db.execute("SELECT k, n FROM t ORDER BY k").fetchall() == [("a", 5), ("b", 3)]
    service._sqlite_insert(db.cursor(), "INSERT INTO t (k, n)", [])  # nothing to do, no statement
    assert db.execute("SELECT count(*) FROM t").fetchone() == (2,)
