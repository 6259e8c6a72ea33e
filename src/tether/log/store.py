"""The local record log: immutable records in a SQLite file.

A record is ``(id, created, author, kind, body)``:

* ``id`` -- a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds first, so ids
  sort by creation time; the rest random (with a monotonic counter within one
  process, so ids made in the same millisecond still sort in order);
* ``created`` -- milliseconds since the epoch; always the id's own timestamp;
* ``author`` -- a user name;
* ``kind`` -- ``text`` or ``json`` (a JSON body is validated on the way in);
* ``body`` -- at most ``max_body`` bytes of UTF-8 (64 KiB by default).

Records never change. Adding a record whose id is known is a no-op when the
record is identical and a :class:`ConflictError` when it is not; a batch with
any bad or conflicting record writes nothing.

The table is ``WITHOUT ROWID`` with the 16-byte id as primary key, so it is
stored in id order: :meth:`LogStore.range_storage` reads every id and its
content tag (:func:`record_digest`, kept in the ``digest`` column) in one scan
into two contiguous blobs (24 MB for a million records), and the reconciler's
range queries are then answered from memory, every round.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from typing import Any, Self

    from tether.log.reconcile import SortedIds

TAG_LEN = 8  # tether.log.reconcile.TAG_LEN (tests/cli/test_quick.py holds them equal): reconcile is imported to sync only

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_MAX_BODY",
    "ConflictError",
    "LogError",
    "LogStore",
    "NotFound",
    "Record",
    "RecordError",
    "id_timestamp",
    "make_record",
    "parse_id",
    "record_from_wire",
    "record_to_wire",
    "uuid7",
]

DEFAULT_DB = Path(".tether") / "log.db"
DEFAULT_MAX_BODY = 64 * 1024
MAX_AUTHOR = 200
KINDS = ("text", "json")
_AUTHOR_RE = re.compile(r"\A[A-Za-z0-9._@+-]+\Z")


class LogError(Exception):
    """Base class of the log's errors."""


class RecordError(LogError, ValueError):
    """A record (or an id) is invalid."""


class ConflictError(LogError):
    """Known ids arrived with different content; nothing was written."""

    def __init__(self, ids: list[str]):
        self.ids = ids
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        super().__init__(f"conflict: {len(ids)} record(s) already stored with different content: {shown}")

    @classmethod
    def remote(cls, name: str) -> ConflictError:
        exc = cls([])
        exc.args = (f"a remote named {name!r} already exists",)
        return exc


class NotFound(LogError):
    """No record with that id."""


# --------------------------------------------------------------------------
# UUIDv7
# --------------------------------------------------------------------------

_lock = threading.Lock()
_last = (0, 0)  # (ms, 74-bit random part) of the last id made here


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7 (RFC 9562, method 2: the random bits act as a counter).

    Ids made by this process from its clock are strictly increasing, even
    within a millisecond or when the clock steps back (the previous timestamp
    is reused then). With an explicit ``now_ms`` the id is just that time plus
    random bits.
    """
    if now_ms is not None:  # an explicit time: no shared state, just random bits
        ms, rand = now_ms, secrets.randbits(74)
    else:
        ms, rand = _next_monotonic(time.time_ns() // 1_000_000)
    if not 0 <= ms < 1 << 48:
        raise RecordError("timestamp out of range for a UUIDv7")
    rand_a, rand_b = rand >> 62, rand & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)


def _next_monotonic(ms: int) -> tuple[int, int]:
    global _last
    with _lock:
        last_ms, last_rand = _last
        if ms <= last_ms:
            ms = last_ms
            rand = last_rand + 1 + secrets.randbits(16)
            if rand >= 1 << 74:
                ms, rand = ms + 1, secrets.randbits(70)
        else:
            rand = secrets.randbits(74)
        _last = (ms, rand)
    return ms, rand


def parse_id(text: str | bytes | uuid.UUID) -> uuid.UUID:
    """Parse a record id (canonical UUID text, 32 hex digits or 16 bytes); must be a UUIDv7."""
    try:
        if isinstance(text, uuid.UUID):
            u = text
        elif isinstance(text, bytes):
            u = uuid.UUID(bytes=text)
        else:
            if not isinstance(text, str) or len(text) > 64:
                raise ValueError
            u = uuid.UUID(text.strip())
    except (ValueError, TypeError):
        raise RecordError(f"invalid record id {str(text)[:64]!r}: expected a UUID") from None
    if u.version != 7 or u.variant != uuid.RFC_4122:
        raise RecordError(f"invalid record id {u}: not a UUIDv7")
    return u


def id_timestamp(u: uuid.UUID) -> int:
    """The Unix milliseconds in a UUIDv7."""
    return u.int >> 80


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    id: str
    created: int
    author: str
    kind: str
    body: str

    @property
    def id_bytes(self) -> bytes:
        return uuid.UUID(self.id).bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.kind == "json":
            d["body"] = json.loads(self.body)
        return d

    @classmethod
    def from_dict(cls, d: Any, max_body: int = DEFAULT_MAX_BODY) -> Record:
        """Validate a record from the wire (as :meth:`to_dict` makes it)."""
        if not isinstance(d, dict) or set(d) != {"id", "created", "author", "kind", "body"}:
            raise RecordError("a record is an object with exactly id, created, author, kind, body")
        body = d["body"]
        if d["kind"] == "json":
            body = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return validate(Record(d["id"], d["created"], d["author"], d["kind"], body), max_body)


def validate_author(author: Any) -> str:
    if not isinstance(author, str) or not author or len(author) > MAX_AUTHOR or not _AUTHOR_RE.match(author):
        raise RecordError(f"invalid author {str(author)[:60]!r}: use 1-{MAX_AUTHOR} of letters, digits and ._@+-")
    return author


def validate_body(body: Any, kind: str, max_body: int = DEFAULT_MAX_BODY) -> str:
    if kind not in KINDS:
        raise RecordError(f"invalid kind {str(kind)[:20]!r}: text or json")
    if not isinstance(body, str):
        raise RecordError("the body must be a string")
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        raise RecordError("the body is not valid UTF-8 text") from None
    if size > max_body:
        raise RecordError(f"the body is {size} bytes, more than the limit of {max_body}")
    if "\x00" in body:
        raise RecordError("the body contains a NUL character")
    if kind == "json":
        try:
            json.loads(body)
        except ValueError as exc:
            raise RecordError(f"the body is not valid JSON: {exc}") from None
    return body


def validate(r: Record, max_body: int = DEFAULT_MAX_BODY) -> Record:
    """Check every field of a record (as received from anywhere)."""
    return _checked(r, max_body)[0]


def _checked(r: Record, max_body: int) -> tuple[Record, bytes]:
    """:func:`validate`, also giving the id's 16 bytes (the id is parsed once)."""
    if not isinstance(r.id, str):
        raise RecordError("the record id must be a string")
    u = parse_id(r.id)
    if isinstance(r.created, bool) or not isinstance(r.created, int):
        raise RecordError("created must be an integer (Unix milliseconds)")
    if r.created != id_timestamp(u):
        raise RecordError(f"record {u}: created {r.created} does not match the id's timestamp {id_timestamp(u)}")
    validate_author(r.author)
    validate_body(r.body, r.kind, max_body)
    text = str(u)
    return (r if r.id == text else Record(text, r.created, r.author, r.kind, r.body)), u.bytes


_DIGEST_DOMAIN = b"tether-record-v1\x00"


def record_digest(r: Record, id_bytes: bytes | None = None) -> bytes:
    """The record's content tag for reconciliation (8 bytes of a SHA-256 over
    every field, each length-prefixed): two copies of one id with different
    contents have different tags, so a sync finds them as a conflict."""
    h = hashlib.sha256(_DIGEST_DOMAIN)
    h.update(id_bytes if id_bytes is not None else uuid.UUID(r.id).bytes)
    h.update(r.created.to_bytes(8, "big", signed=True))
    for field in (r.author, r.kind, r.body):
        b = field.encode("utf-8")
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    return h.digest()[:TAG_LEN]


def record_to_wire(r: Record) -> dict[str, Any]:
    """A record on the sync wire: the body always as the stored string, so the
    bytes compared for immutability are the bytes the author wrote."""
    return {"id": r.id, "created": r.created, "author": r.author, "kind": r.kind, "body": r.body}


def record_from_wire(d: Any, max_body: int = DEFAULT_MAX_BODY) -> Record:
    return keyed_record_from_wire(d, max_body)[0]


def keyed_record_from_wire(d: Any, max_body: int = DEFAULT_MAX_BODY) -> tuple[Record, bytes]:
    """:func:`record_from_wire`, also giving the id's 16 bytes (parsed once)."""
    if not isinstance(d, dict) or set(d) != {"id", "created", "author", "kind", "body"}:
        raise RecordError("a record is an object with exactly id, created, author, kind, body")
    return _checked(Record(d["id"], d["created"], d["author"], d["kind"], d["body"]), max_body)


def make_record(body: str, author: str, *, kind: str = "text", max_body: int = DEFAULT_MAX_BODY,
                now_ms: int | None = None) -> Record:
    """A new record with a fresh UUIDv7."""
    validate_author(author)
    validate_body(body, kind, max_body)
    u = uuid7(now_ms)
    return Record(str(u), id_timestamp(u), author, kind, body)


# --------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id BLOB PRIMARY KEY CHECK (length(id) = 16),
    created INTEGER NOT NULL,
    author TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'json')),
    body TEXT NOT NULL,
    digest BLOB CHECK (digest IS NULL OR length(digest) = 8)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_author ON records (author, id);
CREATE TABLE IF NOT EXISTS remotes (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL
);
"""


def _row(row: tuple[bytes, int, str, str, str]) -> Record:
    return Record(str(uuid.UUID(bytes=row[0])), row[1], row[2], row[3], row[4])


class LogStore:
    """The records in one SQLite file (created 0600, in a 0700 directory)."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_DB, *, max_body: int = DEFAULT_MAX_BODY):
        self.path = Path(path)
        self.max_body = max_body
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
        if not self.path.exists():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        # 64 MiB of page cache (SQLite's default is 2 MiB): a sync inserts ids
        # spread over the whole log, touching pages all over its B-trees.
        self.conn.execute("PRAGMA cache_size=-65536")
        self.conn.executescript(_SCHEMA)
        self._add_digests()

    def _add_digests(self) -> None:
        """Logs made before records had content tags get the column, and every
        record without a tag gets one (once; a no-op afterwards)."""
        cols = {row[1] for row in self.conn.execute("PRAGMA table_info(records)")}
        if "digest" not in cols:
            self.conn.execute("ALTER TABLE records ADD COLUMN digest BLOB")
        # Covering index for range_storage(): ids and tags without reading the bodies.
        self.conn.execute("CREATE INDEX IF NOT EXISTS records_digest ON records (id, digest)")
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            rows = cur.execute("SELECT id, created, author, kind, body FROM records WHERE digest IS NULL").fetchall()
            cur.executemany("UPDATE records SET digest = ? WHERE id = ?",
                            ((record_digest(_row(r)), r[0]) for r in rows))
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.conn.execute("SELECT count(*) FROM records").fetchone()[0]

    def add(self, body: str, author: str, *, kind: str = "text", now_ms: int | None = None) -> Record:
        r = make_record(body, author, kind=kind, max_body=self.max_body, now_ms=now_ms)
        self.insert_many([r])
        return r

    def get(self, record_id: str) -> Record:
        u = parse_id(record_id)
        row = self.conn.execute(
            "SELECT id, created, author, kind, body FROM records WHERE id = ?", (u.bytes,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no record {u}")
        return _row(row)

    def list(self, since: int | None = None, author: str | None = None, limit: int | None = None) -> list[Record]:
        """Records in id (= time) order; ``since`` in Unix ms, inclusive."""
        since_ms = max(0, since or 0)
        if since_ms >= 1 << 48:
            return []
        sql = "SELECT id, created, author, kind, body FROM records WHERE id >= ?"
        args: list[Any] = [(since_ms << 80).to_bytes(16, "big")]
        if author is not None:
            sql += " AND author = ?"
            args.append(author)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_row(r) for r in self.conn.execute(sql, args)]

    def insert_many(self, records: Iterable[Record]) -> int:
        """Insert records; returns how many were new.

        Identical known records are skipped; a known id with different content
        raises :class:`ConflictError`; an invalid record raises
        :class:`RecordError`. Either way nothing is written.
        """
        seen: dict[bytes, Record] = {}
        for r in records:
            r, key = _checked(r, self.max_body)
            if seen.get(key, r) != r:
                raise ConflictError([r.id])
            seen[key] = r
        keys = list(seen)
        conflicts: list[str] = []
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            # One lookup per 500 ids (SQLite's parameter limit); pulls carry only
            # ids this log lacks, so this usually finds nothing.
            for k in range(0, len(keys), 500):
                chunk = keys[k : k + 500]
                q = f"SELECT id, created, author, kind, body FROM records WHERE id IN ({','.join('?' * len(chunk))})"
                for row in cur.execute(q, chunk).fetchall():
                    known = seen.pop(row[0])
                    if _row(row) != known:
                        conflicts.append(known.id)
            if conflicts:
                raise ConflictError(sorted(conflicts))
            cur.executemany(
                "INSERT INTO records (id, created, author, kind, body, digest) VALUES (?, ?, ?, ?, ?, ?)",
                [(key, r.created, r.author, r.kind, r.body, record_digest(r, key)) for key, r in seen.items()],
            )
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        return len(seen)

    def get_many(self, ids: Iterable[bytes]) -> list[Record]:
        """The records with these 16-byte ids (unknown ids are left out), in id order."""
        keys = sorted(set(ids))
        out = []
        for k in range(0, len(keys), 500):  # SQLite takes at most 999 parameters per statement
            chunk = keys[k : k + 500]
            q = f"SELECT id, created, author, kind, body FROM records WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id"
            out += [_row(row) for row in self.conn.execute(q, chunk)]
        return out

    # -- remotes (like git's: a name for a URL; never a secret) ----------------

    def add_remote(self, name: str, url: str) -> None:
        try:
            self.conn.execute("INSERT INTO remotes (name, url) VALUES (?, ?)", (name, url))
        except sqlite3.IntegrityError:
            raise ConflictError.remote(name) from None

    def remove_remote(self, name: str) -> None:
        if self.conn.execute("DELETE FROM remotes WHERE name = ?", (name,)).rowcount == 0:
            raise NotFound(f"no remote named {name!r}")

    def remote(self, name: str) -> str:
        row = self.conn.execute("SELECT url FROM remotes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no remote named {name!r}")
        return row[0]

    def remotes(self) -> list[tuple[str, str]]:
        return [(n, u) for n, u in self.conn.execute("SELECT name, url FROM remotes ORDER BY name")]

    def range_storage(self) -> SortedIds:
        from tether.log.reconcile import SortedIds

        """A snapshot of the ids and content tags for the reconciler: one scan, in id order."""
        return SortedIds.from_rows(self.conn.execute("SELECT id, digest FROM records ORDER BY id"))
