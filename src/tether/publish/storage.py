"""What the parts of the publisher share: the build's :class:`Target`, the state every
part works on (:class:`PublisherBase`), and the SQL fragments more than one part uses
(multi-row SQLite inserts, the blob placement locks, "proven in the space", leases that
only grow)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any

from sqlalchemy import case, literal, select

from tether.config import HubSettings, PublishType
from tether.db import Database
from tether.db.models import SpaceBlob
from tether.problems import Problem


UPLOAD_EXPIRY = timedelta(days=1)
_BLOB_LOCKS = 0x7E7B  # the advisory lock class of blob placement and collection


@dataclass
class Target:
    """Where a build goes: its space row, type, id and path prefix in the space."""

    space_id: int
    space: str
    type: str
    build_id: str
    prefix: str
    config: PublishType
    space_public: bool = False

    def default_public(self) -> bool:
        """The type's setting if it has one, else the space's."""
        return self.config.public if self.config.public is not None else self.space_public


def _sqlite_max_params(cur: Any) -> int:
    """Bound parameters one statement may have on this connection (999 on old SQLite)."""
    return cur.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def _sqlite_insert(cur: Any, insert: str, rows: list[tuple], conflict: str = "") -> None:
    """``insert VALUES (...), (...), ... conflict`` with as many rows per statement as
    SQLite takes. Not executemany: it steps once per row, and each step lets another
    thread have the GIL; on a busy hub 10,000 such hand-offs cost more than the inserts."""
    if not rows:
        return
    width = len(rows[0])
    mark = f"({', '.join('?' * width)})"
    per = min(1000, _sqlite_max_params(cur) // width)
    for i in range(0, len(rows), per):
        part = rows[i : i + per]
        cur.execute(f"{insert} VALUES {', '.join([mark] * len(part))} {conflict}", list(chain.from_iterable(part)))


def _lock_digests(conn: Any, digests: list[str]) -> None:
    """PostgreSQL: this transaction's advisory locks on the digests (by stripe, in order:
    no deadlock, and at most 256 locks); other hub processes storing or collecting the
    same digests wait. SQLite has one writer at a time already."""
    if conn.dialect.name == "sqlite":
        return
    for stripe in sorted({int(d[:2], 16) for d in digests}):
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, %s)", (_BLOB_LOCKS, stripe))


def _chunks(items: list, n: int = 2000) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _later(column, value):
    """SQL for the later of a datetime column and ``value`` (leases only ever grow)."""
    if isinstance(value, datetime):
        value = literal(value, column.type)
    return case((column < value, value), else_=column)


def _proven_in(space_id: int, digest_col):
    """SQL: the blob ``digest_col`` was proven in the space (see ``SpaceBlob``)."""
    sb = SpaceBlob.__table__
    return select(sb.c.digest).where(sb.c.space_id == space_id, sb.c.digest == digest_col).exists()


def _dialect_insert(dialect: str):
    """The dialect's INSERT with ``on_conflict_do_update`` (SQLite and PostgreSQL)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert


def _taken(t: Target) -> Problem:
    return Problem(409, "build-exists", f"build {t.build_id} of type {t.type} already exists in {t.space}; "
                   "publish under a new id (this type does not allow overwriting)")


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class PublisherBase:
    """The state the parts of :class:`tether.publish.service.Publisher` share (set by its
    ``__init__``): settings, database, blob store, the resumable uploads' directory and
    running hashes, and what gc collected lately (see ``Intake._claim_placed``)."""

    settings: HubSettings
    db: Database
    store: Any
    uploads_dir: Path
    _upload_hashes: Any
    _collected: dict[str, float]
    _collected_lock: threading.Lock
