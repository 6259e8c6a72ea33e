"""The hub's side of the log: records per space in the database, reconciliation
answered from range queries, push (immutable, authors checked) and pull.

Every rule lives here; ``log.api`` only parses requests. The reconciler on the
hub is stateless: each request carries one message and gets the next one, so
any replica can answer any round.

What a hub does keep is a cache (:class:`IdSnapshots`): each recently synced
space's ids as one sorted blob, so the rounds of a sync are answered from
memory instead of re-reading the space's ids from the database every round.
The space's ``log_heads.version`` says whether a cached copy is current: it
changes with every push that stores something, in the pusher's transaction,
with the head row locked, so pushes to one space are serialized and a hub
that pushed can update its own copy instead of reloading it.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections import OrderedDict
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tether.auth.identities import get_space
from tether.auth.policy import Resource, authorize
from tether.auth.service import AuthContext
from tether.config import HubSettings
from tether.db import Database
from tether.db.models import LogHead, LogRecord, utcnow
from tether.log import iblt
from tether.log.reconcile import (
    DEFAULT_MAX_MESSAGE,
    ReconcileError,
    Reconciler,
    SortedIds,
)
from tether.log.store import (
    Record,
    RecordError,
    keyed_record_from_wire,
    parse_id,
    record_digest,
)
from tether.problems import Problem, bad_request, forbidden

#: Most records in one push, most ids in one pull.
MAX_PUSH_RECORDS = 2000
MAX_PULL_IDS = 1000
#: A pull reply stops adding records beyond this many bytes of JSON (it always holds
#: at least one); the ids it left out are listed under ``more``, to be asked again.
PULL_REPLY_BYTES = 4 << 20
#: A pulled record's JSON beyond its author and body: the keys, the id, created, kind.
_RECORD_JSON_OVERHEAD = 116  # (with the ", " between records: never under the true size)
#: The hub's replies to reconcile messages are cut at this size (the rest follows
#: next round), as the client's are; a message may be up to 4 MiB.
HUB_FRAME_LIMIT = 1024 * 1024
HUB_MAX_MESSAGE = DEFAULT_MAX_MESSAGE
#: Largest reply to a version-3 message (an IBLT or a page of the list); the
#: client may ask for less, and larger tables come in parts.
HUB_MAX_REPLY = iblt.DEFAULT_MAX_REPLY

_T = LogRecord.__table__
_H = LogHead.__table__


def head_version(conn: Connection, space_id: int) -> str | None:
    return conn.execute(select(_H.c.version).where(_H.c.space_id == space_id)).scalar()


def load_ids(conn: Connection, space_id: int) -> SortedIds:
    """All of a space's ids and content tags, ascending, as two blobs: one scan.
    Straight through the driver: a million rows as SQLAlchemy rows cost five
    times more."""
    if conn.dialect.name == "postgresql":
        ids, tags = conn.exec_driver_sql(
            "SELECT string_agg(id, ''::bytea ORDER BY id), "
            "string_agg(coalesce(digest, '\\x0000000000000000'::bytea), ''::bytea ORDER BY id) "
            "FROM log_records WHERE space_id = %(sid)s",
            {"sid": space_id},
        ).one()
        return SortedIds.from_sorted_blob(bytes(ids or b""), bytes(tags or b""))
    return SortedIds.from_rows(conn.connection.driver_connection.execute(
        "SELECT id, digest FROM log_records WHERE space_id = ? ORDER BY id", (space_id,)
    ))


def _foreign_detail(me: str, foreign: list[Record]) -> str:
    """Why a push was refused for its authors, and the ways out (records never change)."""
    ids = [r.id for r in foreign]
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    authors = ", ".join(repr(a) for a in sorted({r.author for r in foreign})[:5])
    return (f"{len(ids)} record(s) are authored by someone other than {me} (by {authors}): {shown}; "
            "only the space's log admins may push those (or a hub with log_allow_foreign_authors). "
            f"To fix: write records as {me} (`tether login` saves your hub user, which `tether log add` then "
            f"uses; or --author {me}, or TETHER_LOG_AUTHOR={me}); records never change, so keep these in "
            "another log (--db) or ask an admin of the space to push them")


class IdSnapshots:
    """Each recently synced space's ids, kept in memory while its head's version
    holds, least recently used first out beyond ``max_bytes``. Thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[int, tuple[str, SortedIds]] = OrderedDict()
        self.loads = 0  # how many times ids were read from the database

    def get(self, conn: Connection, space_id: int) -> SortedIds:
        # The version is read before the ids: a push landing in between makes
        # the copy newer than its version says, which costs a reload, never a miss.
        version = head_version(conn, space_id)
        with self._lock:
            hit = self._items.get(space_id)
            if hit is not None and version is not None and hit[0] == version:
                self._items.move_to_end(space_id)
                return hit[1]
        ids = load_ids(conn, space_id)
        self.loads += 1
        if version is not None:
            self._put(space_id, version, ids)
        return ids

    def pushed(self, space_id: int, old: str | None, new: str, items: list[tuple[bytes, bytes]]) -> None:
        """A push here moved the head from ``old`` to ``new`` adding ``items`` (id,
        tag): merge them into a copy at ``old`` (any other copy reloads later)."""
        with self._lock:
            hit = self._items.get(space_id)
        if hit is None or old is None or hit[0] != old:
            return
        self._put(space_id, new, hit[1].with_items(items))

    def _put(self, space_id: int, version: str, ids: SortedIds) -> None:
        with self._lock:
            self._items.pop(space_id, None)
            if ids.nbytes > self.max_bytes:
                return
            self._items[space_id] = (version, ids)
            total = sum(v[1].nbytes for v in self._items.values())
            while total > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                total -= dropped.nbytes


class LogService:
    def __init__(self, settings: HubSettings, db: Database):
        self.settings = settings
        self.db = db
        self.snapshots = IdSnapshots(settings.log_cache_bytes)

    # ------------------------------------------------------------ authorization

    def space_id(self, ctx: AuthContext, space: str, action: str) -> int:
        # Authorize before revealing whether the space exists.
        ctx.require(action, Resource(space=space))
        with self.db.read() as s:
            return get_space(s, space).id

    # ------------------------------------------------------------ reconcile

    def warm(self, space_id: int) -> None:
        """Load the space's ids into the snapshot cache ahead of the first round
        (the SSH side does it while the client builds its own message)."""
        with self.db.connect() as conn:
            self.snapshots.get(conn, space_id)

    def reconcile(self, ctx: AuthContext, space: str, message: bytes) -> bytes | None:
        """One round of either protocol, by the message's version byte: 3 (estimate,
        IBLTs, lists: :mod:`tether.log.iblt`) or 2 (ranges: :mod:`tether.log.reconcile`)."""
        sid = self.space_id(ctx, space, "log.read")
        with self.db.connect() as conn:
            ids = self.snapshots.get(conn, sid)
        try:
            if message[:1] == bytes([iblt.VERSION]) and self.settings.log_sync_v3:
                return iblt.answer(ids, message, max_reply=HUB_MAX_REPLY)
            rec = Reconciler(ids, frame_limit=HUB_FRAME_LIMIT, max_message=HUB_MAX_MESSAGE)
            return rec.reconcile(message).reply
        except ReconcileError as exc:
            raise bad_request(f"malformed reconcile message: {exc}", "bad-reconcile-message") from None

    # ------------------------------------------------------------ push

    def push(self, ctx: AuthContext, space: str, items: list[Any]) -> dict[str, Any]:
        sid = self.space_id(ctx, space, "log.write")
        if len(items) > MAX_PUSH_RECORDS:
            raise Problem(413, "too-many-records", f"at most {MAX_PUSH_RECORDS} records per push; send several pushes")
        records: dict[str, Record] = {}
        keys: dict[str, bytes] = {}
        for n, item in enumerate(items):
            try:
                r, key = keyed_record_from_wire(item)
            except RecordError as exc:
                raise bad_request(f"record {n}: {exc}", "invalid-record", index=n) from None
            if r.id in records and records[r.id] != r:
                raise Problem(409, "conflict", f"record {r.id} appears twice with different content", ids=[r.id])
            records[r.id] = r
            keys[r.id] = key
        foreign = sorted({r.id for r in records.values() if r.author != ctx.user.name})
        if foreign and not self._may_push_foreign(ctx, space):
            raise forbidden(_foreign_detail(ctx.user.name, [records[i] for i in foreign]), "foreign-author",
                            ids=foreign[:100])
        for attempt in range(3):
            try:
                return self._insert(ctx, sid, {keys[i]: r for i, r in records.items()})
            except IntegrityError:  # a concurrent push stored some of these ids first
                if attempt == 2:
                    raise Problem(503, "busy", "concurrent pushes of the same records; retry",
                                  headers={"Retry-After": "1"}) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _may_push_foreign(self, ctx: AuthContext, space: str) -> bool:
        if self.settings.log_allow_foreign_authors:
            return True
        return authorize(ctx.principal, "log.admin", Resource(space=space)).allowed

    def _insert(self, ctx: AuthContext, sid: int, by_bytes: dict[bytes, Record]) -> dict[str, Any]:
        """Store the records (keyed by their ids' bytes) this space lacks."""
        conflicts: list[str] = []
        new: list[tuple[bytes, Record]] = []
        with self.db.write() as s:
            # Lock the head first: pushes to a space are serialized, and the
            # known-ids check below sees every earlier push.
            old = s.execute(select(_H.c.version).where(_H.c.space_id == sid).with_for_update()).scalar()
            known: dict[bytes, tuple] = {}
            keys = sorted(by_bytes)
            for k in range(0, len(keys), 500):
                q = select(_T.c.id, _T.c.created, _T.c.author, _T.c.kind, _T.c.body).where(
                    _T.c.space_id == sid, _T.c.id.in_(keys[k : k + 500])
                )
                for row in s.execute(q):
                    known[bytes(row[0])] = tuple(row[1:])
            for b in keys:
                r = by_bytes[b]
                if b in known:
                    if known[b] != (r.created, r.author, r.kind, r.body):
                        conflicts.append(r.id)
                else:
                    new.append((b, r))
            if conflicts:
                raise Problem(
                    409, "conflict",
                    f"{len(conflicts)} record(s) already stored with different content: "
                    + ", ".join(conflicts[:5]) + ("…" if len(conflicts) > 5 else "")
                    + "; records are immutable, nothing was written",
                    ids=conflicts[:1000],
                )
            items = [(b, record_digest(r, b)) for b, r in new]
            if new:
                now = utcnow()
                s.execute(_T.insert(), [
                    {"space_id": sid, "id": i, "created": r.created, "author": r.author, "kind": r.kind,
                     "body": r.body, "pushed_by": ctx.user.name, "pushed_at": now, "digest": tag}
                    for (_, r), (i, tag) in zip(new, items)
                ])
                version = secrets.token_hex(16)
                if old is None:
                    s.execute(_H.insert().values(space_id=sid, version=version, records=len(new)))
                else:
                    s.execute(update(_H).where(_H.c.space_id == sid)
                              .values(version=version, records=_H.c.records + len(new)))
        if new:
            self.snapshots.pushed(sid, old, version, items)
        ctx.trail["reason"] = f"{len(new)} new of {len(by_bytes)}"
        return {"received": len(by_bytes), "new": len(new), "known": len(by_bytes) - len(new)}

    # ------------------------------------------------------------ pull

    def get(self, ctx: AuthContext, space: str, ids: list[str]) -> dict[str, Any]:
        sid = self.space_id(ctx, space, "log.read")
        if len(ids) > MAX_PULL_IDS:
            raise Problem(413, "too-many-ids", f"at most {MAX_PULL_IDS} ids per request; send several requests")
        keys = set()
        for n, text in enumerate(ids):
            try:
                keys.add(parse_id(text).bytes)
            except RecordError as exc:
                raise bad_request(f"id {n}: {exc}", "invalid-id", index=n) from None
        out: list[dict[str, Any]] = []
        more: list[str] = []
        found: set[bytes] = set()
        size = 0
        with self.db.connect() as conn:
            ordered = sorted(keys)
            for k in range(0, len(ordered), 500):
                q = (select(_T.c.id, _T.c.created, _T.c.author, _T.c.kind, _T.c.body)
                     .where(_T.c.space_id == sid, _T.c.id.in_(ordered[k : k + 500])).order_by(_T.c.id))
                for row in conn.execute(q):
                    key = bytes(row[0])
                    found.add(key)
                    rid = str(uuid.UUID(bytes=key))  # stored ids were checked on the way in
                    # Bounded replies: a pull of many large records comes in several.
                    # The size is the JSON's but for the short fields' quoting (C-encoded body).
                    n = _RECORD_JSON_OVERHEAD + len(row[2]) + len(encode_basestring(row[4]).encode())
                    if out and (more or size + n > PULL_REPLY_BYTES):
                        more.append(rid)
                        continue
                    size += n
                    out.append({"id": rid, "created": row[1], "author": row[2], "kind": row[3], "body": row[4]})
        missing = [str(uuid.UUID(bytes=k)) for k in ordered if k not in found]
        return {"records": out, "missing": missing, "more": more}

    def count(self, ctx: AuthContext, space: str) -> dict[str, Any]:
        sid = self.space_id(ctx, space, "log.read")
        with self.db.connect() as conn:
            n = int(conn.execute(select(func.count()).select_from(_T).where(_T.c.space_id == sid)).scalar_one())
        return {"space": space, "records": n}
