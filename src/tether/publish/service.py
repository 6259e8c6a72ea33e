"""Publishing on the hub: blobs in, manifests committed atomically, files out.

The order of trust: a client's digest is a claim until the store has hashed the
bytes itself; a build is invisible until its one commit transaction lands; a
"you already have it" answer pins the blob (``leased_until``) so garbage
collection can't take it before that commit.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any

from sqlalchemy import case, delete, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tether.auth.policy import Resource, authorize
from tether.auth.service import AuthContext, BudgetCheck, draw_budget, iso
from tether.blobs import BlobNotFound, BlobTooLarge, BlobTruncated, DigestMismatch
from tether.blobs.direct import Appender
from tether.config import HubSettings, PublishType
from tether.db import Database
from tether.db.models import Blob, Build, BuildFile, Latest, Space, SpaceBlob, Upload
from tether.problems import Problem, bad_request, conflict, not_found
from tether.publish.core import (
    DIGEST_RE,
    UNHASHED_MIN,
    PathError,
    build_prefix,
    manifest_digest,
    validate_manifest,
    validate_path,
)

MAX_MISSING_QUERY = 10_000
UPLOAD_EXPIRY = timedelta(days=1)
BATCH_MAX_BLOB = 16 << 20
# Publisher._record_blobs on SQLite: the same upsert as its SQLAlchemy statement (a
# lease only grows; a copy stored on its own takes the blob out of its pack).
_SQLITE_INSERT_BLOB = "INSERT INTO blobs (digest, size, created_at, leased_until, pack, pack_offset)"
_SQLITE_ON_BLOB = (
    "ON CONFLICT (digest) DO UPDATE SET "
    "leased_until = CASE WHEN blobs.leased_until < excluded.leased_until "
    "THEN excluded.leased_until ELSE blobs.leased_until END, "
    "pack = CASE WHEN excluded.pack IS NULL THEN NULL ELSE blobs.pack END, "
    "pack_offset = CASE WHEN excluded.pack IS NULL THEN NULL ELSE blobs.pack_offset END"
)


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


class Publisher:
    def __init__(self, settings: HubSettings, db: Database, store):
        self.settings = settings
        self.db = db
        self.store = store
        self.uploads_dir = settings.data_dir / "uploads"
        self._upload_hashes = _UploadHashes()
        # digest -> until when an upload recording it must find its file (S3; see _claim_placed)
        self._collected: dict[str, float] = {}
        self._collected_lock = threading.Lock()

    # ------------------------------------------------------------ authorization

    def target(self, ctx: AuthContext, space: str, build_type: str, build_id: str, action="publish.write") -> Target:
        try:
            config = self.settings.publish_types.get(build_type) or PublishType()
            prefix = build_prefix(config.path, build_type, build_id)
        except PathError as exc:
            raise bad_request(str(exc), "invalid-path") from None
        with self.db.read() as s:
            sp = s.scalar(select(Space).where(Space.name == space))
        # Authorize before revealing whether the space exists. The scope must cover the
        # whole build: a build is published, and later read, as one.
        ctx.require(action, Resource(space=space, path=prefix))
        if sp is None:
            raise not_found(f"space {space}")
        return Target(sp.id, space, build_type, build_id, prefix, config, sp.public_builds)

    # ------------------------------------------------------------ blobs

    def missing(self, ctx: AuthContext, t: Target, digests: list[str], *, now: datetime) -> dict:
        if len(digests) > MAX_MISSING_QUERY:
            raise bad_request(f"ask about at most {MAX_MISSING_QUERY} digests per request; split the list")
        for d in digests:
            if not isinstance(d, str) or not DIGEST_RE.match(d):
                raise bad_request(f"{str(d)[:80]!r} is not a sha256 digest (64 lowercase hex characters)", "invalid-digest")
        wanted = list(dict.fromkeys(digests))
        lease = now + timedelta(seconds=self.settings.blob_lease_seconds)
        # A lease is renewed only once less than half of it is left: re-publishing mostly
        # the same files then reads (10,000 digests: no row written, no write lock, no
        # fsync) instead of rewriting every row it names. Pinned for at least half a lease
        # is what a "present" answer promises (gc deletes only blobs whose lease is over).
        renew_before = now + timedelta(seconds=self.settings.blob_lease_seconds / 2)
        blobs_t = Blob.__table__
        present: set[str] = set()
        stale: list[str] = []  # proven in the space, lease less than half left
        with self.db.read() as s:
            self.refuse_taken(s, t)  # no upload for a build the commit would refuse
            conn = s.connection()
            for chunk in _chunks(wanted):
                for digest, leased_until in conn.execute(
                    select(blobs_t.c.digest, blobs_t.c.leased_until)
                    .where(blobs_t.c.digest.in_(chunk), _proven_in(t.space_id, blobs_t.c.digest))
                ):
                    (present.add if leased_until >= renew_before else stale.append)(digest)
        if stale:
            with self.db.write() as s:
                conn = s.connection()
                for chunk in _chunks(stale):
                    # Pin what we say is present until the lease ends (or the build commits):
                    # one statement extends the leases and names the blobs still there (gc
                    # may have deleted one since the read). Only blobs proven in this space
                    # count: anything else must be uploaded here.
                    present.update(conn.execute(
                        update(blobs_t).where(blobs_t.c.digest.in_(chunk), _proven_in(t.space_id, blobs_t.c.digest))
                        .values(leased_until=_later(blobs_t.c.leased_until, lease))
                        .returning(blobs_t.c.digest)
                    ).scalars())
        # lease_seconds: how long the answer holds at least (a client taking longer asks again)
        return {"missing": [d for d in wanted if d not in present], "lease_seconds": self.settings.blob_lease_seconds // 2}

    def too_large(self) -> Problem:
        """413 for a file over ``max_blob_bytes`` (declared, or found while it arrives)."""
        return Problem(413, "blob-too-large", f"files are limited to {self.settings.max_blob_bytes} bytes")

    def budget(self, ctx: AuthContext | None) -> BudgetCheck | None:
        """The caller's token budget, to refuse an upload the token could never commit
        before anything of it is kept (the commit draws the budget)."""
        return BudgetCheck(self.db, ctx.token) if ctx is not None and ctx.token is not None else None

    def write_blob(self, ctx: AuthContext, space_id: int, digest: str, chunks: Iterable[bytes], *,
                   declared: int | None, now: datetime, budget: BudgetCheck | None = None) -> int:
        """Store one blob from a stream of chunks for a build of space ``space_id``; the
        store verifies the digest. ``budget``: one already read for this request."""
        budget = budget or self.budget(ctx)
        if declared is not None:
            if declared > self.settings.max_blob_bytes:
                raise self.too_large()
            if budget is not None:
                budget.need(nbytes=declared)
        elif budget is not None:  # no length given: count the bytes as they come
            chunks = metered(chunks, budget)
        size = self._store_one(digest, chunks, declared=declared, max_size=self.settings.max_blob_bytes, durable=True)
        self._record_blobs([(digest, size, None, None)], now, space_id, placed=[digest])
        return size

    def _store_one(self, digest: str, chunks: Iterable[bytes], *, declared: int | None, max_size: int,
                   durable: bool) -> int:
        if not DIGEST_RE.match(digest):
            raise bad_request(f"{digest[:80]!r} is not a sha256 digest (64 lowercase hex characters)", "invalid-digest")
        writer = self.store.writer(digest, max_size=max_size, durable=durable)
        try:
            for chunk in chunks:
                writer.write(chunk)
            if declared is not None and writer.size != declared:
                raise BlobTruncated(digest, declared, writer.size)
            return writer.commit()
        except BaseException as exc:
            writer.abort()
            _refuse_blob(exc, digest, max_size)
            raise

    def _record_blobs(self, blobs: list[tuple[str, int, str | None, int | None]], now: datetime,
                      space_id: int, placed: Iterable[str] = ()) -> None:
        """Say the blobs exist (only once they are durable), pinned for the lease, and
        proven in the space they were uploaded for.

        ``blobs`` holds ``(digest, size, pack, offset)``; ``pack`` is None for a blob
        stored on its own. One transaction of upserts: a new digest gets its row; a
        known one keeps it with its lease extended, and moves out of its pack when it
        was just stored on its own (a file of its own never depends on a pack).

        ``placed``: digests just stored as files of their own (one path per digest). gc
        may have collected an earlier copy and be about to delete that path; see
        :meth:`_claim_placed`."""
        if not blobs:
            return
        placed = sorted(set(placed))
        # In key order: each B-tree page is then visited once, not once per random key
        # landing on it (10,000 random digests: about half the CPU of the inserts)
        blobs = sorted(blobs, key=lambda b: b[0])  # (by digest only: pack and offset may be None)
        lease = now + timedelta(seconds=self.settings.blob_lease_seconds)
        blobs_t = Blob.__table__
        if self.db.dialect == "sqlite":
            # The driver's own cursor with plain tuples: per-row parameter handling in
            # SQLAlchemy costs more than the inserts. Both times are the same for every
            # row, so they go through the column type's own bind processing once (the
            # text SQLAlchemy stores, so reads and comparisons stay as they were).
            with self.db.write() as s:
                conn = s.connection()
                self._claim_placed(conn, placed)
                to_db = blobs_t.c.leased_until.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
                created, until = to_db(now), to_db(lease)
                with closing(conn.connection.cursor()) as cur:
                    _sqlite_insert(cur, _SQLITE_INSERT_BLOB, [(d, size, created, until, pack, off)
                                                              for d, size, pack, off in blobs], _SQLITE_ON_BLOB)
                    _sqlite_insert(cur, "INSERT INTO space_blobs (space_id, digest)",
                                   [(space_id, b[0]) for b in blobs], "ON CONFLICT DO NOTHING")
            return
        rows = [{"digest": d, "size": size, "created_at": now, "leased_until": lease, "pack": pack, "pack_offset": off}
                for d, size, pack, off in blobs]
        stmt = _dialect_insert(self.db.dialect)(blobs_t)  # Core, not the ORM's per-row bulk path
        new, old = stmt.excluded, blobs_t.c
        stmt = stmt.on_conflict_do_update(
            index_elements=[old.digest],
            set_={
                "leased_until": _later(old.leased_until, new.leased_until),
                "pack": case((new.pack.is_(None), None), else_=old.pack),
                "pack_offset": case((new.pack.is_(None), None), else_=old.pack_offset),
            },
        )
        claims = _dialect_insert(self.db.dialect)(SpaceBlob.__table__).on_conflict_do_nothing()
        with self.db.write() as s:
            self._claim_placed(s.connection(), placed)
            for i in range(0, len(rows), 1000):
                s.execute(stmt, rows[i : i + 1000])
                s.execute(claims, [{"space_id": space_id, "digest": r["digest"]} for r in rows[i : i + 1000]])

    def _claim_placed(self, conn: Any, digests: list[str]) -> None:
        """In the transaction that records them: the files of ``digests`` must still be
        there. gc deletes a collected blob's file only in a transaction of its own that
        finds no row for it (:meth:`_delete_files`), and the two exclude each other (one
        writer at a time on SQLite; an advisory lock per digest on PostgreSQL), so a
        digest is recorded with its file present and gc then keeps the file, or gc
        deletes the file first and the upload is refused here (503: send it again),
        never a row whose file is gone."""
        if not digests:
            return
        # A store whose existence check is a request (S3) is asked only about digests this
        # process's gc deleted in the last COLLECTED_WINDOW seconds (one request per blob
        # would slow every batch). A gc in another hub process sharing the database is not
        # seen: docs/publish.md says so.
        if not self.store.local:
            now = time.monotonic()
            with self._collected_lock:
                digests = [d for d in digests if self._collected.get(d, 0.0) > now]
        if not digests:
            return
        _lock_digests(conn, digests)
        gone = [d for d in digests if not self.store.exists(d)]
        if gone:
            raise Problem(503, "blob-collected",
                          f"blob {gone[0]} was collected by gc while it was being stored; send it again")

    def _delete_files(self, digests: list[str]) -> int:
        """Delete the files of blobs whose rows gc deleted, unless an upload stored and
        recorded the digest again since (see :meth:`_claim_placed`); how many."""
        deleted = 0
        with self._collected_lock:  # forget what is past its window
            now = time.monotonic()
            self._collected = {d: until for d, until in self._collected.items() if until > now}
        for chunk in _chunks(digests, 200):
            with self._collected_lock:
                until = time.monotonic() + COLLECTED_WINDOW
                self._collected.update(dict.fromkeys(chunk, until))
            with self.db.write() as s:
                conn = s.connection()
                _lock_digests(conn, chunk)
                back = set(conn.execute(select(Blob.digest).where(Blob.digest.in_(chunk))).scalars())
                for digest in chunk:
                    if digest not in back:
                        deleted += self.store.delete(digest)
        return deleted

    def _sweep_loose(self, now: datetime) -> int:
        """Blob files that no row names, stored more than a day ago: left by a crash
        between storing and recording one, or between gc's two steps. Deleted as gc
        deletes, only where still no row names them; how many. (One pass over the whole
        store: a listing, and on a filesystem one stat per blob.)"""
        iter_aged = getattr(self.store, "iter_aged", None)
        if iter_aged is None:
            return 0
        cutoff = now.timestamp() - UPLOAD_EXPIRY.total_seconds()
        removed = 0
        old: list[str] = []

        def delete_unnamed() -> int:  # (a cheap read first: most files have rows)
            with self.db.read() as s:
                named = set(s.scalars(select(Blob.digest).where(Blob.digest.in_(old))))
            return self._delete_files([d for d in old if d not in named])

        for digest, changed in iter_aged():
            if changed < cutoff:
                old.append(digest)
                if len(old) == 1000:
                    removed += delete_unnamed()
                    old = []
        return removed + (delete_unnamed() if old else 0)

    def write_batch(self, ctx: AuthContext, t: Target, frames: Iterator[tuple[str, int, Iterator[bytes]]], *,
                    now: datetime) -> list[str]:
        """Store many small blobs sent in one request (see docs/publish.md for the framing).

        With a filesystem store the blobs go end to end into one pack file, each
        verified as it is appended; the pack is fsynced before one transaction records
        its blobs, so a recorded blob is always a durable blob, and the filesystem sees
        one new file per batch instead of one per blob. Other stores write the blobs
        without a sync each and then sync once. Either way, when a frame is refused the
        good ones before it are kept and recorded, except when the batch goes over the
        token's byte budget: then none of it is."""
        frames = _within_budget(frames, self.budget(ctx))
        pack_writer = getattr(self.store, "pack_writer", None)
        if pack_writer is None:
            return self._write_batch_loose(t, frames, now=now)
        pw = pack_writer()
        placed: dict[str, tuple[int, int]] = {}
        stored: list[str] = []
        try:
            for digest, size, body in frames:
                try:
                    offset, n = pw.add(digest, body, declared=size, max_size=BATCH_MAX_BLOB)
                except BaseException as exc:
                    _refuse_blob(exc, digest, BATCH_MAX_BLOB)
                    raise
                if digest in placed:
                    pw.truncate(offset)  # the same bytes twice in one batch: keep one copy
                else:
                    placed[digest] = (offset, n)
                stored.append(digest)
        except _OverBudget as over:
            placed.clear()  # none of the batch is kept
            raise over.problem from None
        finally:
            if placed:
                name = pw.commit()
                self._record_blobs([(d, n, name, off) for d, (off, n) in placed.items()], now, t.space_id)
            else:
                pw.abort()
        return stored

    def _write_batch_loose(self, t: Target, frames: Iterator[tuple[str, int, Iterator[bytes]]], *,
                           now: datetime) -> list[str]:
        written: list[tuple[str, int, None, None]] = []
        try:
            for digest, size, body in frames:
                written.append((digest, self._store_one(digest, body, declared=size, max_size=BATCH_MAX_BLOB,
                                                        durable=False), None, None))
        except _OverBudget as over:
            # none of the batch is recorded; its files, unnamed, go with gc's sweep of
            # orphans (deleting them here could take a blob another upload just recorded)
            written.clear()
            raise over.problem from None
        finally:
            if written:
                self.store.sync()
                self._record_blobs(list({w[0]: w for w in written}.values()), now, t.space_id,
                                   placed=[w[0] for w in written])
        return [w[0] for w in written]

    # ------------------------------------------------------------ resumable uploads

    def start_upload(self, ctx: AuthContext, t: Target, digest: str | None, size: int, *, now: datetime) -> dict:
        """Start a resumable upload. Without ``digest`` (declared later, with the last
        chunk or after it) only for a large file of a size no blob of the space has:
        then the hub cannot already hold the content and the client may send while it
        hashes. Otherwise 409 ``size-known``: hash first and ask ``blobs/missing``."""
        if digest is not None and not DIGEST_RE.match(digest):
            raise bad_request(f"{digest[:80]!r} is not a sha256 digest", "invalid-digest")
        if size < 0 or size > self.settings.max_blob_bytes:
            raise self.too_large()
        if budget := self.budget(ctx):  # first: a token past its budget learns nothing more
            budget.need(nbytes=size)
        with self.db.read() as s:
            self.refuse_taken(s, t)
        if digest is None:
            if size < UNHASHED_MIN:
                raise bad_request(f"an upload without a digest must be at least {UNHASHED_MIN} bytes; "
                                  "send the file's sha256 as digest", "digest-required")
            if self._space_has_size(t.space_id, size):
                raise Problem(409, "size-known", f"this space already holds a blob of {size} bytes: hash the file "
                              "and ask POST /api/v1/blobs/missing whether the hub needs it, then upload with its digest")
        upload_id = secrets.token_hex(16)
        self.uploads_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.uploads_dir / upload_id).touch(mode=0o600)
        with self.db.write() as s:
            s.add(Upload(id=upload_id, digest=digest, size=size, user=ctx.user.name,
                         token_id=ctx.token.id if ctx.token else None, space=t.space, created_at=now))
        return {"id": upload_id, "offset": 0, "size": size}

    def _space_has_size(self, space_id: int, size: int) -> bool:
        with self.db.read() as s:
            return s.execute(_size_query(space_id, size)).first() is not None

    def _space_id(self, space: str) -> int:
        with self.db.read() as s:
            sid = s.scalar(select(Space.id).where(Space.name == space))
        if sid is None:
            raise not_found(f"space {space}")
        return sid

    def _upload(self, ctx: AuthContext, upload_id: str) -> tuple[Upload, Path]:
        if not (len(upload_id) == 32 and all(c in "0123456789abcdef" for c in upload_id)):
            raise bad_request("not an upload id")
        with self.db.read() as s:
            up = s.get(Upload, upload_id)
        if up is None or up.user != ctx.user.name:
            raise not_found(f"upload {upload_id}")
        return up, self.uploads_dir / upload_id

    def upload_status(self, ctx: AuthContext, upload_id: str) -> dict:
        up, path = self._upload(ctx, upload_id)
        offset = path.stat().st_size if path.exists() else 0
        return {"id": up.id, "offset": offset, "size": up.size, "complete": False, "digest": up.digest}

    def upload_chunk(self, ctx: AuthContext, upload_id: str, offset: int, chunks: Iterable[bytes], *, now: datetime,
                     digest: str | None = None) -> dict:
        """Append a chunk at ``offset``; ``digest`` declares the blob's sha256 of an upload
        started without one (with any chunk, or an empty one at the end)."""
        if digest is not None and not DIGEST_RE.match(digest):
            raise bad_request(f"{digest[:80]!r} is not a sha256 digest", "invalid-digest")
        self._upload(ctx, upload_id)  # a bad or foreign id is refused before it gets a lock
        with self._upload_hashes.lock(upload_id):  # one chunk at a time per upload
            up, path = self._upload(ctx, upload_id)  # as it is now, after whatever held the lock
            if digest is not None and digest != up.digest:
                if up.digest is None:
                    with self.db.write() as s:
                        # only if still undeclared: a request to another hub replica may be first
                        s.execute(update(Upload).where(Upload.id == up.id, Upload.digest.is_(None))
                                  .values(digest=digest))
                    up, path = self._upload(ctx, upload_id)
                if up.digest != digest:
                    raise bad_request(f"this upload is of blob {up.digest}, not {digest}", "digest-conflict")
            have = path.stat().st_size if path.exists() else 0
            if offset != have:
                raise Problem(409, "wrong-offset", f"the upload has {have} bytes; send the chunk at offset {have}",
                              offset=have)
            # The bytes are hashed as they are appended, so finishing needs no second read.
            h = self._upload_hashes.take(upload_id, have)
            # No fsync per chunk: after a crash the file's size says where to resume, and the
            # final digest check refuses anything a crash could have garbled. Whole blocks go
            # to the disk as they come (O_DIRECT), so finishing has little left to flush.
            out = Appender(path, offset=have, background=True)
            try:
                written = have
                for chunk in chunks:
                    written += len(chunk)
                    if written > up.size:
                        out.truncate(have)  # drop this chunk: the upload stays as it was
                        raise bad_request(f"the upload is {up.size} bytes; this chunk goes past the end")
                    out.write(chunk)
                    if h is not None:
                        h.update(chunk)
            finally:
                out.close()  # what did arrive stays: the next chunk resumes after it
            if written < up.size or up.digest is None:
                self._upload_hashes.put(upload_id, written, h)
                return {"id": up.id, "offset": written, "size": up.size, "complete": False}
            self._finish_upload(ctx, up, path, h.hexdigest() if h is not None else None, now)
        return {"id": up.id, "offset": up.size, "size": up.size, "complete": True}

    def _finish_upload(self, ctx: AuthContext, up: Upload, path: Path, seen: str | None, now: datetime) -> None:
        """Store a complete upload (``seen``: the hub's own running hash of it, if it has one)."""
        try:
            adopt = getattr(self.store, "adopt", None)
            if adopt is not None:  # filesystem store: link the file in, no second copy
                try:
                    adopt(up.digest, path, hashed=seen)
                except DigestMismatch as exc:
                    raise bad_request(f"blob {up.digest}: {exc}; nothing was stored; start the upload again",
                                      "blob-digest-mismatch") from None
                self._record_blobs([(up.digest, up.size, None, None)], now, self._space_id(up.space),
                                   placed=[up.digest])
            else:
                def read():
                    with open(path, "rb") as fh:
                        while block := fh.read(1 << 20):
                            yield block

                self.write_blob(ctx, self._space_id(up.space), up.digest, read(), declared=up.size, now=now)
        finally:
            self._upload_hashes.drop(up.id)
            path.unlink(missing_ok=True)
            with self.db.write() as s:
                s.execute(delete(Upload).where(Upload.id == up.id))

    # ------------------------------------------------------------ commit

    def commit(self, ctx: AuthContext, t: Target, files: list[dict], *, public: bool | None, latest: bool,
               now: datetime) -> dict:
        try:
            entries = validate_manifest(files)
        except PathError as exc:
            raise bad_request(f"the manifest is not valid: {exc}; nothing was published", "invalid-manifest") from None
        digests = {e.digest: e.size for e in entries}
        total = sum(e.size for e in entries)
        with self.db.write() as s:
            conn = s.connection()  # plain rows: no ORM bookkeeping for 10,000 of them
            if self.db.dialect == "sqlite":
                # Writers are serialised (BEGIN IMMEDIATE): gc cannot delete a blob
                # between this read and the commit.
                absent, wrong = _sqlite_unproven(conn.connection, t.space_id, digests)
            else:
                absent, wrong = self._pin_named(conn, t.space_id, digests, now)
            if absent:
                raise bad_request(
                    f"{len(absent)} blob(s) named by the manifest were never uploaded for this space "
                    f"(e.g. {', '.join(absent[:5])}); upload them first (blobs/missing lists them); "
                    "nothing was published",
                    "missing-blobs", missing=absent[:100],
                )
            if wrong:
                raise bad_request(f"the manifest gives a size that is not the uploaded blob's for {len(wrong)} "
                                  f"digest(s) (e.g. {', '.join(wrong[:5])}): give each file's length in bytes; "
                                  "nothing was published", "invalid-manifest")
            manifest = manifest_digest([(e.path, e.digest, e.size, e.mode) for e in entries])
            build = self._new_build(s, ctx, t, files=len(entries), nbytes=total, public=public, now=now,
                                    manifest=manifest)
            twin = self._newest_with_manifest(s, t, manifest)
            if twin is None or not self._share_entries(s, build, twin.id):
                # The driver's own inserts: the rows need no type conversion, and for 10,000
                # of them SQLAlchemy's per-row parameter handling costs more than the inserts.
                insert = f"INSERT INTO {BuildFile.__tablename__} (build, path, digest, size, mode)"
                rows = [(build.id, e.path, e.digest, e.size, e.mode) for e in entries]
                if self.db.dialect == "sqlite":
                    with closing(conn.connection.cursor()) as cur:
                        _sqlite_insert(cur, insert, rows)
                else:
                    conn.exec_driver_sql(f"{insert} VALUES (%s, %s, %s, %s, %s)", rows)
            if latest:
                s.merge(Latest(space_id=t.space_id, type=t.type, build=build.id))
        return {
            "space": t.space, "type": t.type, "build": t.build_id, "path": t.prefix, "files": len(entries),
            "bytes": total, "public": build.public, "url": f"/files/{t.space}/{t.prefix}/",
        }

    def _pin_named(self, conn: Any, space_id: int, digests: dict[str, int], now: datetime) -> tuple[list[str], list[str]]:
        """Concurrent transactions (PostgreSQL): pin the named blobs proven in the space,
        so that a gc running meanwhile waits for this commit and then finds them leased
        (and referenced); a client that commits without asking blobs/missing first
        relies on it. Returns the digests not proven in the space, and those whose
        size is not the one named."""
        blobs_t = Blob.__table__
        lease = now + timedelta(seconds=self.settings.blob_lease_seconds)
        known: dict[str, int] = {}
        for chunk in _chunks(list(digests)):
            known.update(conn.execute(update(blobs_t).where(blobs_t.c.digest.in_(chunk),
                                                            _proven_in(space_id, blobs_t.c.digest))
                                      .values(leased_until=_later(blobs_t.c.leased_until, lease))
                                      .returning(blobs_t.c.digest, blobs_t.c.size)).all())
        absent = [d for d in digests if d not in known]
        return absent, [d for d, size in digests.items() if d in known and known[d] != size]

    def commit_same(self, ctx: AuthContext, t: Target, manifest: str, *, public: bool | None, latest: bool,
                    now: datetime) -> dict:
        """Publish a build with the same files as an earlier build of this space whose
        manifest digest (publish.core.manifest_digest) is ``manifest``: the new build
        shares that build's entries instead of receiving them again (an unchanged
        re-publish costs one row, not one per file). 404 ``unknown-manifest`` when no
        other build of the space has it: send the whole manifest instead.

        The entries were checked when that build was committed, and the blobs they name
        are proven in this space and kept by gc for as long as any build names them."""
        if not DIGEST_RE.match(manifest):
            raise bad_request("same_as must be a manifest digest: 64 lowercase hex characters", "invalid-manifest")
        with self.db.write() as s:
            self.refuse_taken(s, t)  # a taken id is the answer, whether or not the manifest is known
            source = self._newest_with_manifest(s, t, manifest)
            if source is None:
                raise Problem(404, "unknown-manifest",
                              f"no build of {t.space} has the manifest {manifest}; send the whole manifest")
            build = self._new_build(s, ctx, t, files=source.files, nbytes=source.bytes, public=public, now=now,
                                    manifest=manifest)
            if not self._share_entries(s, build, source.id):
                raise Problem(404, "unknown-manifest", f"the build with the manifest {manifest} was removed "
                              "meanwhile; send the whole manifest")
            if latest:
                s.merge(Latest(space_id=t.space_id, type=t.type, build=build.id))
        return {
            "space": t.space, "type": t.type, "build": t.build_id, "path": t.prefix, "files": build.files,
            "bytes": build.bytes, "public": build.public, "url": f"/files/{t.space}/{t.prefix}/", "same_as": source.path,
        }

    def _newest_with_manifest(self, s: Session, t: Target, manifest: str) -> Build | None:
        """The newest build of the space with this manifest digest, other than the one
        with t's id (which the commit is overwriting, or has just created). Not locked:
        :meth:`_share_entries` locks what it shares and notices a build gone meanwhile."""
        return s.scalar(select(Build).where(
            Build.space_id == t.space_id, Build.manifest == manifest,
            or_(Build.type != t.type, Build.build_id != t.build_id),
        ).order_by(Build.id.desc()).limit(1))

    def _share_entries(self, s: Session, build: Build, source_id: int) -> bool:
        """Let ``build`` use the entries (build_files rows) that build ``source_id``
        uses; False if that build is gone. The owner of the entries is read afresh (a
        deletion earlier in this transaction may have handed them on) and locked on
        PostgreSQL until the commit ends, so a concurrent deletion waits and then hands
        the entries on to this build too (see :meth:`_delete_build`)."""
        owner = s.scalar(select(func.coalesce(Build.files_of, Build.id)).where(Build.id == source_id))
        if owner is None:
            return False
        # (SQLite serialises writers already)
        if self.db.dialect != "sqlite" and s.scalar(
            select(Build.id).where(Build.id == owner).with_for_update(read=True)
        ) is None:
            return False
        build.files_of = owner
        s.flush()
        return True

    def _delete_build(self, s: Session, build: Build) -> None:
        """Delete a build. Builds that share its entries keep them: the oldest of them
        takes the rows over and the others follow it."""
        if self.db.dialect != "sqlite":
            # lock first: a commit sharing these entries finishes before they are handed on
            s.execute(select(Build.id).where(Build.id == build.id).with_for_update())
        heir = s.scalar(select(func.min(Build.id)).where(Build.files_of == build.id))
        if heir is not None:
            s.execute(update(BuildFile).where(BuildFile.build == build.id).values(build=heir),
                      execution_options={"synchronize_session": False})
            s.execute(update(Build).where(Build.files_of == build.id).values(files_of=heir),
                      execution_options={"synchronize_session": False})
            s.execute(update(Build).where(Build.id == heir).values(files_of=None),
                      execution_options={"synchronize_session": False})
        s.delete(build)
        s.flush()

    def _new_build(self, s: Session, ctx: AuthContext, t: Target, *, files: int, nbytes: int, public: bool | None,
               manifest: str, now: datetime) -> Build:
        """The build's row, inside the commit's transaction: refused if the id is taken
        (unless the type allows overwriting) or the path nests with another build, and
        the token's budget drawn."""
        existing = s.scalar(
            select(Build).where(Build.space_id == t.space_id, Build.type == t.type, Build.build_id == t.build_id)
        )
        if existing is not None:
            if not t.config.overwrite:
                raise _taken(t)
            self._delete_build(s, existing)
        self._refuse_nesting(s, t)
        if ctx.token is not None:
            draw_budget(s, ctx.token, files=files, nbytes=nbytes)
        build = Build(
            space_id=t.space_id, type=t.type, build_id=t.build_id, path=t.prefix,
            public=t.default_public() if public is None else public, user=ctx.user.name,
            token_id=ctx.token.id if ctx.token else None, files=files, bytes=nbytes, created_at=now, manifest=manifest,
        )
        s.add(build)
        try:
            s.flush()
        except IntegrityError:
            raise conflict(f"build {t.build_id} was published concurrently; publish under a new id") from None
        return build

    def refuse_taken(self, s: Session, t: Target) -> None:
        """A taken build id (unless the type allows overwriting), refused before any bytes
        travel for a build the commit would refuse; one indexed lookup. The commit checks
        again (a build may appear meanwhile)."""
        if not t.config.overwrite and s.scalar(select(Build.id).where(
                Build.space_id == t.space_id, Build.type == t.type, Build.build_id == t.build_id)) is not None:
            raise _taken(t)

    def check_single(self, ctx: AuthContext, t: Target, path: str, declared: int | None) -> BudgetCheck | None:
        """A one-file build (``PUT /api/v1/publish/...``): everything its commit would
        refuse, refused before the body is read; the caller's budget, to meter the body."""
        try:
            validate_path(path)
        except PathError as exc:
            raise bad_request(str(exc), "invalid-path") from None
        if declared is not None and declared > self.settings.max_blob_bytes:
            raise self.too_large()
        with self.db.read() as s:
            self.refuse_taken(s, t)
            self._refuse_nesting(s, t)
        budget = self.budget(ctx)
        if budget is not None:
            budget.need(files=1, nbytes=declared or 0)
        return budget

    def _refuse_nesting(self, s: Session, t: Target) -> None:
        """No build's path may sit inside another's (downloads resolve one build per path)."""
        parents = ["/".join(t.prefix.split("/")[:i]) for i in range(1, t.prefix.count("/") + 1)]
        clash = s.scalar(
            select(Build.path).where(
                Build.space_id == t.space_id,
                or_(Build.path.in_(parents or [""]), Build.path.like(_like_prefix(t.prefix + "/"), escape="\\")),
            ).limit(1)
        )
        if clash is not None:
            raise conflict(f"{t.prefix} would nest with the existing build at {clash}; pick another build id or type")

    def set_latest(self, ctx: AuthContext, t: Target) -> dict:
        ctx.require("publish.admin", Resource(space=t.space, path=t.prefix))
        with self.db.write() as s:
            build = s.scalar(
                select(Build).where(Build.space_id == t.space_id, Build.type == t.type, Build.build_id == t.build_id)
            )
            if build is None:
                raise not_found(f"build {t.build_id} of type {t.type} in {t.space}")
            s.merge(Latest(space_id=t.space_id, type=t.type, build=build.id))
        return {"space": t.space, "type": t.type, "latest": t.build_id}

    # ------------------------------------------------------------ downloads

    def resolve(self, ctx: AuthContext | None, space: str, path: str) -> dict:
        """What ``/files/SPACE/PATH`` names: a file, a directory listing, or nothing."""
        # One trailing "/" asks for a directory; every other empty segment ("SPACE//x",
        # "x//", "a//b") is refused by the same rule as in published paths.
        if path:
            path = path[:-1] if path.endswith("/") else path
            if path[:1] in ("", "/"):  # not "absolute": the URL has a "//" after the space
                raise bad_request(f"/files/{space}/ is followed by an empty segment ('//')", "invalid-path")
            try:
                validate_path(path)
            except PathError as exc:
                raise bad_request(str(exc), "invalid-path") from None
        with self.db.read() as s:
            sp = s.scalar(select(Space).where(Space.name == space))
            if sp is None:
                raise not_found(f"{space}/{path}")
            segs = path.split("/") if path else []
            candidates = ["/".join(segs[:i]) for i in range(1, len(segs) + 1)]
            build = None
            if candidates:
                build = s.scalar(select(Build).where(Build.space_id == sp.id, Build.path.in_(candidates)))
            if build is None and "latest" in segs[1:]:
                # TYPE_PATH/latest/REST follows the type's latest pointer.
                i = segs.index("latest", 1)
                build = self._latest(s, sp.id, "/".join(segs[:i]))
                if build is not None:
                    path = "/".join([build.path, *segs[i + 1 :]])
            if build is not None:
                self._may_read(ctx, space, build, path)
                rest = path[len(build.path) + 1 :] if len(path) > len(build.path) else ""
                if rest:
                    f = s.get(BuildFile, (build.entries, rest))
                    if f is not None:
                        where = s.execute(select(Blob.pack, Blob.pack_offset).where(Blob.digest == f.digest)).first()
                        return {"kind": "file", "digest": f.digest, "size": f.size, "mode": f.mode, "path": path,
                                "pack": where.pack if where else None, "pack_offset": where.pack_offset if where else None}
                under = rest + "/" if rest else ""
                rows = s.execute(
                    select(BuildFile.path, BuildFile.size, BuildFile.digest).where(
                        BuildFile.build == build.entries, BuildFile.path.like(_like_prefix(under), escape="\\")
                    )
                ).all()
                if not rows:
                    raise not_found(f"{space}/{path}")
                return {"kind": "dir", "path": path, "entries": _entries(rows, under)}
            # Above any build: list the next path segment of the builds the caller may see.
            under = path + "/" if path else ""
            rows = s.execute(
                select(Build).where(Build.space_id == sp.id, Build.path.like(_like_prefix(under), escape="\\"))
            ).scalars()
            visible = [b for b in rows if self._readable(ctx, space, b)]
            if not visible:
                raise not_found(f"{space}/{path}")
            names = {b.path[len(under):].split("/")[0] for b in visible}
            latest = self._latest(s, sp.id, path) if path else None
            if latest is not None and self._readable(ctx, space, latest):
                names.add("latest")  # browsable like the builds beside it
            return {"kind": "dir", "path": path, "entries": [{"name": n, "dir": True} for n in sorted(names)]}

    def open_blob(self, f: dict, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of a file :meth:`resolve` found, wherever its blob lives.
        Raises BlobNotFound."""
        digest, pack = f["digest"], f.get("pack")
        if pack is None:
            return self.store.open_range(digest, start, end)
        try:
            return self.store.open_packed(digest, pack, f["pack_offset"], f["size"], start, end)
        except BlobNotFound:
            # Garbage collection may have just moved the blob out of its pack: look again.
            with self.db.read() as s:
                where = s.execute(select(Blob.pack, Blob.pack_offset).where(Blob.digest == digest)).first()
            if where is None or where.pack == pack:
                raise
            if where.pack is None:
                return self.store.open_range(digest, start, end)
            return self.store.open_packed(digest, where.pack, where.pack_offset, f["size"], start, end)

    def _latest(self, s: Session, space_id: int, type_path: str) -> Build | None:
        row = s.execute(
            select(Build).join(Latest, Latest.build == Build.id).where(Latest.space_id == space_id)
        ).scalars()
        for b in row:
            if b.path.rsplit("/", 1)[0] == type_path or b.type == type_path:
                return b
        return None

    def _readable(self, ctx: AuthContext | None, space: str, build: Build) -> bool:
        if build.public:
            return True
        return ctx is not None and authorize(ctx.principal, "publish.read", Resource(space=space, path=build.path)).allowed

    def _may_read(self, ctx: AuthContext | None, space: str, build: Build, path: str) -> None:
        if build.public:
            return
        if ctx is None:
            raise Problem(401, "unauthenticated", "this build is private: send a token with read access",
                          headers={"WWW-Authenticate": 'Bearer realm="tether"'})
        ctx.require("publish.read", Resource(space=space, path=path))

    # ------------------------------------------------------------ garbage collection

    def gc(self, ctx: AuthContext, *, now: datetime, dry_run: bool = False) -> dict:
        ctx.require("gc.run")
        from tether.auth.caveats import parse_duration

        grace = parse_duration(self.settings.gc_grace, caveat="gc_grace")
        removed_builds = self._apply_retention(now, dry_run)
        doomed = self._doomed(now, grace)
        if dry_run:
            with self.db.read() as s:
                found = s.execute(select(Blob.digest, Blob.size).where(*doomed)).all()
            return {"builds_removed": removed_builds, "blobs_removed": len(found),
                    "bytes_freed": sum(size for _, size in found), "uploads_removed": 0, "orphans_removed": 0,
                    "dry_run": True}
        # One DELETE decides and deletes in one write transaction: no commit or lease
        # can come between the check and the deletion.
        with self.db.write() as s:
            gone = s.execute(delete(Blob).where(*doomed).returning(Blob.digest, Blob.size, Blob.pack),
                             execution_options={"synchronize_session": False}).all()
        # Files only once their rows are gone for good: a failed transaction deletes nothing.
        self._delete_files([digest for digest, _, pack in gone if pack is None])
        deleted, freed = len(gone), sum(size for _, size, _ in gone)
        touched_packs = {pack for _, _, pack in gone if pack is not None}
        for pack in sorted(touched_packs):
            self._tidy_pack(pack)
        stale_uploads = self._sweep_uploads(now)
        orphans = self._sweep_loose(now)
        return {"builds_removed": removed_builds, "blobs_removed": deleted, "bytes_freed": freed,
                "uploads_removed": stale_uploads, "orphans_removed": orphans, "dry_run": False}

    def _doomed(self, now: datetime, grace: timedelta) -> tuple[Any, ...]:
        """What gc deletes: blobs no build names, whose lease is over, older than ``grace``.

        build_files has no index by digest (a commit's 10,000 rows would each add a
        random-keyed entry to one), so "no build names it" is one pass over build_files
        for all blobs at once, in the form each database plans that way: SQLite reads
        a NOT IN list into a temporary index once (a correlated NOT EXISTS it would run
        as a scan per blob); PostgreSQL turns NOT EXISTS into an anti-join (NOT IN over
        a list larger than its work_mem it would check row by row)."""
        if self.db.dialect == "sqlite":
            unreferenced = Blob.digest.not_in(select(BuildFile.digest))
        else:
            unreferenced = ~select(BuildFile.digest).where(BuildFile.digest == Blob.digest).exists()
        return unreferenced, Blob.leased_until < now, Blob.created_at < now - grace

    def _tidy_pack(self, pack: str) -> None:
        """After blobs of ``pack`` were deleted: delete the pack when none is left; when
        less than half of its bytes are still live, copy those blobs out to files of
        their own (verified again on the way) and then delete it."""
        with self.db.read() as s:
            live = s.execute(select(Blob.digest, Blob.size, Blob.pack_offset).where(Blob.pack == pack)).all()
        if live:
            if 2 * sum(b.size for b in live) >= (self.store.pack_size(pack) or 0):
                return
            for b in live:
                self._store_one(b.digest, self.store.open_packed(b.digest, pack, b.pack_offset, b.size),
                                declared=b.size, max_size=b.size, durable=True)
            with self.db.write() as s:
                for chunk in _chunks([b.digest for b in live]):
                    s.execute(update(Blob).where(Blob.pack == pack, Blob.digest.in_(chunk))
                              .values(pack=None, pack_offset=None), execution_options={"synchronize_session": False})
                if s.scalar(select(Blob.digest).where(Blob.pack == pack).limit(1)) is not None:
                    return
        self.store.delete_pack(pack)

    def _sweep_packs(self) -> None:
        """Packs no blob row names, an hour old: left by a crash between writing a pack
        and recording its blobs."""
        iter_packs = getattr(self.store, "iter_packs", None)
        if iter_packs is None:
            return
        cutoff = time.time() - 3600
        old = [name for name, mtime in iter_packs() if mtime < cutoff]
        if not old:
            return
        with self.db.read() as s:
            named = set(s.scalars(select(Blob.pack).where(Blob.pack.is_not(None)).distinct()))
        for name in old:
            if name not in named:
                self.store.delete_pack(name)

    def _sweep_uploads(self, now: datetime) -> int:
        """Abandoned resumable uploads (a day without completing) and the store's stale temp files."""
        with self.db.write() as s:
            stale = list(s.scalars(select(Upload.id).where(Upload.created_at < now - UPLOAD_EXPIRY)))
            if stale:
                s.execute(delete(Upload).where(Upload.id.in_(stale)))
        for upload_id in stale:
            self._upload_hashes.drop(upload_id)
            (self.uploads_dir / upload_id).unlink(missing_ok=True)
        self._sweep_upload_files()
        self.store.sweep_tmp(older_than=3600)
        self._sweep_packs()
        return len(stale)

    def _sweep_upload_files(self) -> None:
        """Upload files with no upload row (a crash between the two, a migration downgrade
        that dropped rows), once as old as an abandoned upload. A file younger than that
        may belong to an upload being started right now, so it stays."""
        if not self.uploads_dir.is_dir():
            return
        cutoff = time.time() - UPLOAD_EXPIRY.total_seconds()
        with self.db.read() as s:
            known = set(s.scalars(select(Upload.id)))
        with os.scandir(self.uploads_dir) as entries:
            for entry in entries:
                if entry.name not in known and entry.is_file(follow_symlinks=False) \
                        and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    Path(entry.path).unlink(missing_ok=True)

    def _apply_retention(self, now: datetime, dry_run: bool) -> list[str]:
        removed: list[str] = []
        for type_name, cfg in self.settings.publish_types.items():
            if cfg.keep_last is None and cfg.keep_days is None:
                continue
            with self.db.write() as s:
                for space_id, space in s.execute(select(Space.id, Space.name)).all():
                    builds = list(s.scalars(
                        select(Build).where(Build.space_id == space_id, Build.type == type_name)
                        .order_by(Build.created_at.desc(), Build.id.desc())
                    ))
                    latest = s.scalar(select(Latest.build).where(Latest.space_id == space_id, Latest.type == type_name))
                    for i, b in enumerate(builds):
                        too_many = cfg.keep_last is not None and i >= cfg.keep_last
                        too_old = cfg.keep_days is not None and b.created_at < now - timedelta(days=cfg.keep_days)
                        if (too_many or too_old) and b.id != latest:
                            removed.append(f"{space}/{b.path}")
                            if not dry_run:
                                self._delete_build(s, b)
        return removed


class _UploadHashes:
    """The sha256 state of resumable uploads in progress, fed as chunks arrive.

    Only a shortcut: a state that is missing (the hub restarted, a chunk failed half
    way, the state was evicted) makes the upload fall back to hashing its whole file
    when it completes. A state is used only at the exact offset it was saved at, and
    chunks of one upload are processed one at a time (:meth:`lock`), so the state
    always covers exactly the bytes in the file."""

    MAX = 256

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._state: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    def lock(self, upload_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(upload_id, threading.Lock())

    def take(self, upload_id: str, offset: int) -> Any:
        """The state for bytes ``0..offset`` (a fresh one at 0), or None; removed from the cache."""
        with self._guard:
            saved = self._state.pop(upload_id, None)
        if offset == 0:
            return hashlib.sha256()
        return saved[1] if saved is not None and saved[0] == offset else None

    def put(self, upload_id: str, offset: int, h: Any) -> None:
        if h is None:
            return
        with self._guard:
            self._state[upload_id] = (offset, h)
            while len(self._state) > self.MAX:
                self._state.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        with self._guard:
            self._state.pop(upload_id, None)
            self._locks.pop(upload_id, None)


def _sqlite_unproven(dbapi_conn: Any, space_id: int, digests: dict[str, int]) -> tuple[list[str], list[str]]:
    """The named digests not proven in the space, and those whose blob has another size
    than the one named. SQLite compares the lists itself and hands back only what is
    wrong (nothing, for a good manifest), not a row per digest."""
    items = list(digests.items())
    absent: list[str] = []
    wrong: list[str] = []
    with closing(dbapi_conn.cursor()) as cur:
        per = min(1000, (_sqlite_max_params(cur) - 1) // 2)
        for i in range(0, len(items), per):
            part = items[i : i + per]
            cur.execute(
                f"WITH named (digest, size) AS (VALUES {', '.join(['(?, ?)'] * len(part))}) "
                "SELECT named.digest, blobs.size = named.size FROM named LEFT JOIN blobs ON blobs.digest = named.digest "
                "AND EXISTS (SELECT 1 FROM space_blobs WHERE space_blobs.space_id = ? "
                "AND space_blobs.digest = named.digest) "
                "WHERE blobs.digest IS NULL OR blobs.size != named.size",
                [*chain.from_iterable(part), space_id],
            )
            for digest, same_size in cur.fetchall():
                (absent if same_size is None else wrong).append(digest)
    return absent, wrong


def _lock_digests(conn: Any, digests: list[str]) -> None:
    """PostgreSQL: this transaction's advisory locks on the digests (by stripe, in order:
    no deadlock, and at most 256 locks); other hub processes storing or collecting the
    same digests wait. SQLite has one writer at a time already."""
    if conn.dialect.name == "sqlite":
        return
    for stripe in sorted({int(d[:2], 16) for d in digests}):
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, %s)", (_BLOB_LOCKS, stripe))


_BLOB_LOCKS = 0x7E7B  # the advisory lock class of blob placement and collection
# Seconds after gc deleted a blob's object during which an upload recording the same digest
# checks that its object is there (S3). The window that matters runs from an upload's
# last write to its record: a batch's duration at most.
COLLECTED_WINDOW = 600.0


def _chunks(items: list, n: int = 2000) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _later(column, value):
    """SQL for the later of a datetime column and ``value`` (leases only ever grow)."""
    if isinstance(value, datetime):
        value = literal(value, column.type)
    return case((column < value, value), else_=column)


def _size_query(space_id: int, size: int):
    """SQL: a blob of ``size`` bytes (at least UNHASHED_MIN) proven in the space. The literal
    bound repeats the partial index's condition, so the planner can use that index."""
    b = Blob.__table__
    return select(literal(1)).where(b.c.size == size, b.c.size >= literal(UNHASHED_MIN, literal_execute=True),
                                    _proven_in(space_id, b.c.digest)).limit(1)


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


def metered(chunks: Iterable[bytes], budget: BudgetCheck) -> Iterator[bytes]:
    """``chunks``, refused (403) as soon as they add up to more bytes than ``budget`` has left."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        budget.need(nbytes=total)
        yield chunk


class _OverBudget(Exception):
    """A batch went over the token's byte budget: the whole batch is refused."""

    def __init__(self, problem: Problem):
        super().__init__(problem.detail)
        self.problem = problem


def _within_budget(frames: Iterator[tuple[str, int, Iterator[bytes]]], budget: BudgetCheck | None,
                   ) -> Iterator[tuple[str, int, Iterator[bytes]]]:
    """A batch's frames, each checked before its bytes are read: its size within the
    limit for a batch, and the sizes of the distinct blobs so far within the budget."""
    counted: set[str] = set()  # the same blob twice in a batch is stored once
    total = 0
    for digest, size, body in frames:
        if size > BATCH_MAX_BLOB:
            raise bad_request(f"blobs in a batch are limited to {BATCH_MAX_BLOB} bytes; send {digest} alone")
        if budget is not None and digest not in counted:
            counted.add(digest)
            total += size
            try:
                budget.need(nbytes=total)
            except Problem as p:
                raise _OverBudget(p) from None
        yield digest, size, body


def _taken(t: Target) -> Problem:
    return Problem(409, "build-exists", f"build {t.build_id} of type {t.type} already exists in {t.space}; "
                   "publish under a new id (this type does not allow overwriting)")


def _refuse_blob(exc: BaseException, digest: str, max_size: int) -> None:
    """Turn the store's refusal of a blob into the client's error (else return)."""
    if isinstance(exc, BlobTruncated):
        raise bad_request(
            f"the upload was truncated: {exc.size} of {exc.declared} bytes arrived for {digest}; "
            "nothing of it was stored",
            "truncated-upload",
        ) from None
    if isinstance(exc, DigestMismatch):
        raise bad_request(f"blob {digest}: {exc}; nothing was stored", "blob-digest-mismatch") from None
    if isinstance(exc, BlobTooLarge):
        raise Problem(413, "blob-too-large", f"blobs of this kind are limited to {max_size} bytes") from None


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _entries(rows, under: str) -> list[dict]:
    dirs: set[str] = set()
    files = []
    for path, size, digest in rows:
        rest = path[len(under):]
        if "/" in rest:
            dirs.add(rest.split("/")[0])
        else:
            files.append({"name": rest, "dir": False, "size": size, "digest": digest})
    return [{"name": d, "dir": True} for d in sorted(dirs)] + sorted(files, key=lambda f: f["name"])


def build_info(b: Build, space: str) -> dict:
    return {"space": space, "type": b.type, "build": b.build_id, "path": b.path, "files": b.files,
            "bytes": b.bytes, "public": b.public, "user": b.user, "created_at": iso(b.created_at)}


__all__ = ["Publisher", "Target", "build_info", "func"]
