"""Engines, sessions and schema migration for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
# Arbitrary constant: serialises migrations when several replicas start at once.
_PG_MIGRATION_LOCK = 0x7E7E_0001


# Pages (4 KiB) in the WAL after which the committing writer copies them into the
# database file (a PASSIVE checkpoint; SQLite's default is 1,000). Recording 1,000 new
# blobs writes ~2,000 pages: with the default, nearly every batch paid for a checkpoint;
# here one in five does, and a page written by several batches is copied once.
SQLITE_AUTOCHECKPOINT = 10_000
SQLITE_BUSY_SECONDS = 30  # how long a writer waits for another before it fails (503 from the hub)
# A WAL file grown past this (by one huge transaction, or while readers held an old
# snapshot so that checkpoints could not finish) is truncated back to it once
# checkpointed, instead of keeping its size on disk.
SQLITE_WAL_SIZE_LIMIT = 64 << 20


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    # LIFO: the connection used last is used next. SQLite keeps a connection's page cache
    # only until another connection writes, so with writers taking turns on one warm
    # connection a transaction finds the B-tree pages of the last one still cached,
    # instead of reading them again (recording 10,000 blobs: ~2x less CPU).
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=16, max_overflow=16,
        pool_use_lifo=True,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row (token, budget, audit record) survives power loss.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
        cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT}")
        cur.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_SIZE_LIMIT}")
        if immediate:
            # One transaction recording 1,000 blobs dirties ~2,000 pages of random-keyed
            # B-trees (a 10,000-file commit more): the default 2 MiB cache cannot hold
            # them, so SQLite spills them to the WAL mid-transaction and reads them back
            # (its statements took 15 ms instead of 8-11 at 90,000 blobs). Pages are kept
            # only until another connection writes, so this is rarely all in use.
            cur.execute("PRAGMA cache_size=-32768")  # KiB
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # Writers take the lock up front: a deferred transaction that reads and then
        # writes fails at once under concurrency (SQLITE_BUSY_SNAPSHOT) instead of waiting.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class _WriterTurn:
    """The turn to write, among this process's threads; waits as long as SQLite's busy
    timeout would, then fails the same way (OperationalError: the hub answers 503)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._lock = threading.RLock()

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=self.timeout):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError(
                f"database is locked: another writer of this hub held it for {self.timeout} s"))

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class Database:
    """One place for the engines: ``read()`` for queries, ``write()`` for changes."""

    def __init__(self, url: str):
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        else:
            # Reads run in autocommit: one round trip per query, no BEGIN/ROLLBACK. No
            # pool pre-ping either (another round trip per checkout); a connection lost
            # to a database restart fails one request with 503 and the pool refills.
            self.write_engine = create_engine(url, pool_size=10, max_overflow=10, pool_recycle=1800)
            self.engine = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        # SQLite has one writer at a time. Writers of this process queue here, handed the
        # turn the moment it is free, instead of in SQLite's busy handler, which sleeps
        # 1, 2, 5, 10 ... ms between tries (measured: recording 1,000 uploaded blobs took
        # 8-23 ms beside concurrent uploads, 3 ms alone). Other processes still meet the
        # busy timeout. Re-entrant, as a nested write() waited (for another connection) before.
        self._writers = _WriterTurn(SQLITE_BUSY_SECONDS) if self.dialect == "sqlite" else nullcontext()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A plain read connection for hot paths that don't need the ORM."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction committed on success, rolled back on any exception."""
        with self._writers, self._write() as session, session.begin():
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """:meth:`write` without the ORM: a plain connection in a transaction."""
        with self._writers, self.write_engine.begin() as conn:
            yield conn

    def migrate(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to ``revision`` (idempotent; safe with concurrent replicas)."""
        self._alembic("upgrade", revision)

    def downgrade(self, revision: str) -> None:
        """Undo Alembic migrations down to ``revision`` (stop every hub replica first)."""
        self._alembic("downgrade", revision)

    def _alembic(self, direction: str, revision: str) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.write_engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            getattr(command, direction)(cfg, revision)

    def dispose(self) -> None:
        self.engine.dispose()
        self.write_engine.dispose()
