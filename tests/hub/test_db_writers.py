"""SQLite writers of one process take turns in Python, not in SQLite's busy handler."""

from __future__ import annotations

import threading

from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from tether.db import Database


def test_concurrent_writers_of_one_process_queue_instead_of_meeting_a_locked_database(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    db.write_engine.dispose()
    # no busy timeout at all: a writer that found the database locked would fail at once
    event.listen(db.write_engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=0"))
    with db.write_connection() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    first_in, errors = threading.Event(), []

    def first() -> None:
        with db.write() as s:
            s.execute(text("INSERT INTO t VALUES ('first')"))
            first_in.set()
            threading.Event().wait(0.3)  # hold the write lock while the second tries

    def second() -> None:
        first_in.wait(5)
        try:
            with db.write_connection() as conn:
                conn.execute(text("INSERT INTO t VALUES ('second')"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert errors == []
    with db.read() as s:
        assert s.execute(text("SELECT who FROM t")).scalars().all() == ["first", "second"]
    db.dispose()


def test_a_writer_kept_waiting_too_long_fails_like_a_busy_database(tmp_path):
    """As SQLite's busy timeout would: OperationalError, which the hub answers with 503."""
    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    db._writers.timeout = 0.2
    holding, release, errors = threading.Event(), threading.Event(), []

    def hold() -> None:
        with db.write():
            holding.set()
            release.wait(10)

    th = threading.Thread(target=hold)
    th.start()
    holding.wait(5)
    try:
        with db.write_connection():
            pass
    except OperationalError as exc:
        errors.append(exc)
    finally:
        release.set()
        th.join(10)
    assert len(errors) == 1 and "another writer of this hub held it" in str(errors[0])
    with db.write_connection() as conn:  # free again
        conn.execute(text("SELECT 1"))
    db.dispose()
