"""The hub's side of the log: records per space in the database, reconciliation
answered from range queries, push (immutable, authors checked) and pull.

Every rule lives here; ``log.api`` only parses requests. The reconciler on the
hub is stateless: each request carries one message and gets the next one, so
any replica can answer any round and nothing lives in a hub's memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tether.auth.policy import Resource, authorize
from tether.auth.service import AuthContext
from tether.config import HubSettings
from tether.db import Database
from tether.db.models import LogRecord, Space, utcnow
from tether.hub.errors import Problem, bad_request, forbidden, not_found
from tether.log.reconcile import ID_LEN, INF, RangeStorage, ReconcileError, Reconciler
from tether.log.store import (
    Record,
    RecordError,
    parse_id,
    record_from_wire,
    record_to_wire,
)

#: Most records in one push, most ids in one pull.
MAX_PUSH_RECORDS = 2000
MAX_PULL_IDS = 1000
#: The hub's replies to reconcile messages are cut at this size (the rest follows
#: next round); small enough that the client's answer fits a request body.
HUB_FRAME_LIMIT = 256 * 1024
HUB_MAX_MESSAGE = 4 * 1024 * 1024
_PAGE = 4096

_T = LogRecord.__table__


class DBRangeStorage(RangeStorage):
    """One space's ids in ``log_records``, answered by range queries on the primary
    key; ids are streamed in keyset-paginated pages, never loaded whole."""

    def __init__(self, conn: Connection, space_id: int):
        self.conn = conn
        self.space_id = space_id

    def _where(self, lo: bytes, hi: bytes):
        cond = [_T.c.space_id == self.space_id, _T.c.id >= lo]
        if hi != INF:
            cond.append(_T.c.id < hi)
        return and_(*cond)

    def count(self, lo: bytes, hi: bytes) -> int:
        return int(self.conn.execute(select(func.count()).select_from(_T).where(self._where(lo, hi))).scalar_one())

    def iter_ids(self, lo: bytes, hi: bytes) -> Iterator[bytes]:
        cur = lo
        first = True
        while True:
            cond = self._where(cur, hi) if first else and_(self._where(lo, hi), _T.c.id > cur)
            rows = self.conn.execute(select(_T.c.id).where(cond).order_by(_T.c.id).limit(_PAGE)).all()
            for (i,) in rows:
                yield bytes(i)
            if len(rows) < _PAGE:
                return
            cur = bytes(rows[-1][0])
            first = False

    def ids(self, lo: bytes, hi: bytes) -> list[bytes]:
        return list(self.iter_ids(lo, hi))

    def contains(self, id_: bytes) -> bool:
        q = select(_T.c.id).where(_T.c.space_id == self.space_id, _T.c.id == id_)
        return self.conn.execute(q).first() is not None


class LogService:
    def __init__(self, settings: HubSettings, db: Database):
        self.settings = settings
        self.db = db

    # ------------------------------------------------------------ authorization

    def space_id(self, ctx: AuthContext, space: str, action: str) -> int:
        # Authorize before revealing whether the space exists.
        ctx.require(action, Resource(space=space))
        with self.db.read() as s:
            sid = s.scalar(select(Space.id).where(Space.name == space))
        if sid is None:
            raise not_found(f"space {space}")
        return sid

    # ------------------------------------------------------------ reconcile

    def reconcile(self, ctx: AuthContext, space: str, message: bytes) -> bytes | None:
        sid = self.space_id(ctx, space, "log.read")
        with self.db.connect() as conn:
            rec = Reconciler(DBRangeStorage(conn, sid), frame_limit=HUB_FRAME_LIMIT, max_message=HUB_MAX_MESSAGE)
            try:
                return rec.reconcile(message).reply
            except ReconcileError as exc:
                raise bad_request(f"malformed reconcile message: {exc}", "bad-reconcile-message") from None

    # ------------------------------------------------------------ push

    def push(self, ctx: AuthContext, space: str, items: list[Any]) -> dict[str, Any]:
        sid = self.space_id(ctx, space, "log.write")
        if len(items) > MAX_PUSH_RECORDS:
            raise Problem(413, "too-many-records", f"at most {MAX_PUSH_RECORDS} records per push; send several pushes")
        records: dict[str, Record] = {}
        for n, item in enumerate(items):
            try:
                r = record_from_wire(item)
            except RecordError as exc:
                raise bad_request(f"record {n}: {exc}", "invalid-record", index=n) from None
            if r.id in records and records[r.id] != r:
                raise Problem(409, "conflict", f"record {r.id} appears twice with different content", ids=[r.id])
            records[r.id] = r
        foreign = sorted({r.id for r in records.values() if r.author != ctx.user.name})
        if foreign and not self._may_push_foreign(ctx, space):
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise forbidden(
                f"{len(foreign)} record(s) are authored by someone other than {ctx.user.name}: {shown}; "
                "only the space's log admins may push those (or a hub with log_allow_foreign_authors)",
                "foreign-author", ids=foreign[:100],
            )
        for attempt in range(3):
            try:
                return self._insert(ctx, sid, list(records.values()))
            except IntegrityError:  # a concurrent push stored some of these ids first
                if attempt == 2:
                    raise Problem(503, "busy", "concurrent pushes of the same records; retry",
                                  headers={"Retry-After": "1"}) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _may_push_foreign(self, ctx: AuthContext, space: str) -> bool:
        if self.settings.log_allow_foreign_authors:
            return True
        return authorize(ctx.principal, "log.admin", Resource(space=space)).allowed

    def _insert(self, ctx: AuthContext, sid: int, records: list[Record]) -> dict[str, Any]:
        by_bytes = {r.id_bytes: r for r in records}
        conflicts: list[str] = []
        new: list[Record] = []
        with self.db.write() as s:
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
                    new.append(r)
            if conflicts:
                raise Problem(
                    409, "conflict",
                    f"{len(conflicts)} record(s) already stored with different content: "
                    + ", ".join(conflicts[:5]) + ("…" if len(conflicts) > 5 else "")
                    + "; records are immutable, nothing was written",
                    ids=conflicts[:1000],
                )
            if new:
                now = utcnow()
                s.execute(_T.insert(), [
                    {"space_id": sid, "id": r.id_bytes, "created": r.created, "author": r.author, "kind": r.kind,
                     "body": r.body, "pushed_by": ctx.user.name, "pushed_at": now}
                    for r in new
                ])
        ctx.trail["reason"] = f"{len(new)} new of {len(records)}"
        return {"received": len(records), "new": len(new), "known": len(records) - len(new)}

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
        with self.db.connect() as conn:
            ordered = sorted(keys)
            for k in range(0, len(ordered), 500):
                q = (select(_T.c.id, _T.c.created, _T.c.author, _T.c.kind, _T.c.body)
                     .where(_T.c.space_id == sid, _T.c.id.in_(ordered[k : k + 500])).order_by(_T.c.id))
                for row in conn.execute(q):
                    r = Record(str(parse_id(bytes(row[0]))), row[1], row[2], row[3], row[4])
                    out.append(record_to_wire(r))
        found = {r["id"] for r in out}
        missing = [str(parse_id(k)) for k in ordered if str(parse_id(k)) not in found]
        return {"records": out, "missing": missing}

    def count(self, ctx: AuthContext, space: str) -> dict[str, Any]:
        sid = self.space_id(ctx, space, "log.read")
        with self.db.connect() as conn:
            n = DBRangeStorage(conn, sid).count(bytes(ID_LEN), INF)
        return {"space": space, "records": n}
