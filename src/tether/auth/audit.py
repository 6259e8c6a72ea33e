"""The audit trail: every state-changing request and every refusal, never a secret."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, or_, select, text, update

from tether.db import Database
from tether.db.models import AuditRecord

log = logging.getLogger("tether.hub")


def _clip(fields: dict) -> dict:
    fields["resource"] = (fields.get("resource") or "")[:1024]
    fields["reason"] = (fields.get("reason") or "")[:1024]
    return fields


def record(db: Database, **fields) -> None:
    with db.write() as s:
        s.add(AuditRecord(**_clip(fields)))


class AuditWriter:
    """Writes the hub's audit records from one thread, many to a transaction.

    A request's record is written after its response has left; here it joins a queue
    and the writer commits what gathered over ``interval`` seconds in one transaction:
    one wait for the database's write lock and one sync to disk per batch, instead of
    one per request, each in a thread of the request pool. The queue is bounded: when
    it is full (or the writer is not running) ``submit`` refuses and the caller writes
    the record itself, as before. The audit route first waits for the records queued in
    this process (``flush``), and ``stop`` writes everything queued before returning."""

    def __init__(self, db: Database, *, interval: float = 0.05, max_queued: int = 10_000, max_batch: int = 1000):
        self.db = db
        self.interval = interval
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue(max_queued)  # field dicts, and events to set once written
        self._lock = threading.Lock()  # submit vs stop: nothing is queued once stop began
        self._running = False
        self._hurry = threading.Event()  # someone waits (flush, stop): don't gather
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._stopping.clear()
            self._hurry.clear()
            self._thread = threading.Thread(target=self._run, name="tether-audit", daemon=True)
            self._thread.start()
            self._running = True

    def submit(self, fields: dict, done: Callable[[], None] | None = None) -> bool:
        """Queue a record (the fields of :func:`record`); False: write it yourself.

        ``done``: called from the writer's thread once the record is committed (or its
        write failed, which is logged); such a record is written at once, with whatever
        else is queued, instead of after the gathering interval."""
        with self._lock:
            if not self._running:
                return False
            try:
                self._queue.put_nowait(_clip(fields) if done is None else (_clip(fields), done))
            except queue.Full:
                return False
            if done is not None:
                self._hurry.set()
            return True

    def flush(self, timeout: float = 10) -> None:
        """Wait until the records submitted so far are written (at most ``timeout`` s)."""
        done = threading.Event()
        with self._lock:
            if not self._running:
                return
            try:
                self._queue.put_nowait(done)
            except queue.Full:  # far behind: don't hold up submit (the event loop) meanwhile
                return
        self._hurry.set()
        done.wait(timeout)

    def stop(self, timeout: float = 60) -> None:
        with self._lock:
            if not self._running:
                return
            self._running = False
        self._stopping.set()
        self._hurry.set()
        try:
            self._queue.put_nowait(threading.Event())  # an idle writer: look now (a busy one will anyway)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        # Whatever the thread left (it timed out on a stuck database): write it here.
        while True:
            batch, done = self._take(block=False)
            if not batch and not done:
                break
            self._write(batch)
            _signal(done)

    def _take(self, *, block: bool) -> tuple[list[dict], list[Any]]:
        batch: list[dict] = []
        done: list[Any] = []  # events to set, callbacks to call, once the batch is written

        def add(item) -> None:
            if isinstance(item, threading.Event):
                done.append(item)
            elif isinstance(item, tuple):  # (fields, callback): someone waits for this one
                batch.append(item[0])
                done.append(item[1])
            else:
                batch.append(item)

        if block:
            try:
                add(self._queue.get(timeout=1))
            except queue.Empty:
                return batch, done
            if batch and not done:
                self._hurry.wait(self.interval)  # let a burst gather, unless someone waits
                if not self._stopping.is_set():
                    self._hurry.clear()
        while len(batch) < self.max_batch:
            try:
                add(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch, done

    def _run(self) -> None:
        while True:
            batch, done = self._take(block=True)
            if batch:
                self._write(batch)
            _signal(done)
            if not batch and not done and self._stopping.is_set() and self._queue.empty():
                return

    def _write(self, batch: list[dict]) -> None:
        if not batch:
            return
        try:
            with self.db.write() as s:
                s.add_all([AuditRecord(**fields) for fields in batch])
            return
        except Exception:
            if len(batch) == 1:
                log.exception("could not write an audit record")
                return
        for fields in batch:  # one bad record must not take the others with it
            try:
                record(self.db, **fields)
            except Exception:
                log.exception("could not write an audit record")



def _signal(done: list[Any]) -> None:
    for ev in done:
        ev.set() if isinstance(ev, threading.Event) else ev()


class _Tally:
    """Records counted instead of written one by one: one per key and interval, with the
    first request's fields, ``count`` and the last request's time (``last_at``). At most
    ``max_keys`` keys per interval; past that, :meth:`_overflow` picks a coarser key.
    Everything runs on the event loop: no lock needed."""

    def __init__(self, max_keys: int = 1000):
        self.max_keys = max_keys
        self._rows: dict[tuple, dict] = {}

    def _key(self, fields: dict) -> tuple:
        raise NotImplementedError

    def _overflow(self, key: tuple, fields: dict) -> tuple[tuple, dict]:
        raise NotImplementedError

    def add(self, fields: dict) -> None:
        key = self._key(fields)
        if key not in self._rows and len(self._rows) >= self.max_keys:
            key, fields = self._overflow(key, fields)
        row = self._rows.get(key)
        if row is None:
            self._rows[key] = fields | {"count": 1, "last_at": None}
        else:
            row["count"] += 1
            row["last_at"] = fields["at"]

    def take(self) -> list[dict]:
        """The records gathered since the last call."""
        rows, self._rows = list(self._rows.values()), {}
        return rows


class RefusalTally(_Tally):
    """Refusals of requests with no authenticated user, counted instead of written one by one.

    Such requests cost a client nothing to send, and one row each let a flood grow the
    audit table without bound (~2,000 rows/s from one client). They are counted per
    source, status and reason slug and written as one record per key and interval, with
    ``count`` and the first request's time, action, resource and reason. Past
    ``max_keys`` keys in an interval (a spray of sources), the rest are counted in
    records with no source."""

    def _key(self, fields: dict) -> tuple:
        return (fields["source"], fields["status"], fields["reason"].partition(":")[0])

    def _overflow(self, key: tuple, fields: dict) -> tuple[tuple, dict]:
        return (None, *key[1:]), fields | {"source": None}


_REFUSAL_LOCK = 0x7E7D  # PostgreSQL advisory lock: one replica at a time merges its refusal counts


def merge_refusals(db: Database, rows: list[dict], *, interval: float, now: datetime) -> None:
    """Write a :class:`RefusalTally`'s records so that replicas sharing the database keep
    one record per source, status and reason per interval between them: each is added to
    the record of its key begun less than two intervals ago (by any replica: their
    intervals do not line up), else written as a new one. One replica at a time (an
    advisory lock on PostgreSQL; SQLite has one writer), so two never both begin one."""
    if not rows:
        return
    since = now - timedelta(seconds=2 * interval)
    a = AuditRecord.__table__.c
    with db.write() as s:
        if db.dialect == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _REFUSAL_LOCK})
        for fields in rows:
            fields = _clip(dict(fields))
            slug = fields["reason"].partition(":")[0]
            same = s.scalar(select(a.id).where(
                a.user.is_(None), a.token_id.is_(None), a.at >= since, a.status == fields["status"],
                a.source.is_(None) if fields["source"] is None else a.source == fields["source"],
                or_(a.reason == slug, a.reason.like(slug + ":%")),
            ).order_by(a.id.desc()).limit(1))
            if same is None:
                s.add(AuditRecord(**fields))
                continue
            last = fields["last_at"] or fields["at"]
            s.execute(update(AuditRecord).where(a.id == same).values(
                count=a.count + fields["count"], last_at=case((a.last_at > last, a.last_at), else_=last)))


class ReadTally(_Tally):
    """Reads (downloads, listings, GETs) by scoped tokens, counted per token, path and status.

    A scoped token is what an untrusted machine holds, so what it read belongs in the
    trail; but a bulk download is thousands of requests: one record per token and path
    per interval (``audit_read_interval``) keeps the trail to one row per file however
    often it is fetched. Past ``max_keys`` keys in an interval, a token's further paths
    are counted in one record per token with the resource ``(more paths)``."""

    def __init__(self, max_keys: int = 10_000):
        super().__init__(max_keys)

    def _key(self, fields: dict) -> tuple:
        return (fields["token_id"], fields["resource"], fields["status"], fields["source"])

    def _overflow(self, key: tuple, fields: dict) -> tuple[tuple, dict]:
        return (key[0], None, None, None), fields | {"resource": "(more paths)"}


def query(
    db: Database,
    *,
    since: datetime | None = None,
    user: str | None = None,
    token: str | None = None,
    action: str | None = None,
    limit: int = 1000,
) -> list[dict]:
    q = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
    if since is not None:
        q = q.where(AuditRecord.at >= since)
    if user is not None:
        q = q.where(AuditRecord.user == user)
    if token is not None:
        q = q.where(AuditRecord.token_id == token)
    if action is not None:
        # "token.*" selects a family; anything else is an exact match.
        q = q.where(AuditRecord.action.like(action[:-1] + "%") if action.endswith("*") else AuditRecord.action == action)
    with db.read() as s:
        rows = list(s.scalars(q))
    return [
        {
            "id": r.id,
            "at": r.at.isoformat().replace("+00:00", "Z"),
            "user": r.user,
            "token_id": r.token_id,
            "action": r.action,
            "resource": r.resource,
            "source": r.source,
            "outcome": r.outcome,
            "status": r.status,
            "reason": r.reason,
            "count": r.count,
            "last_at": r.last_at.isoformat().replace("+00:00", "Z") if r.last_at is not None else None,
        }
        for r in reversed(rows)
    ]


def prune(db: Database, *, before: datetime) -> int:
    with db.write() as s:
        return s.execute(delete(AuditRecord).where(AuditRecord.at < before)).rowcount
