"""Blobs in: what the hub lacks, uploads of one blob, of a batch and in resumable chunks,
each verified by the store before it is recorded (a client's digest is a claim until
the store has hashed the bytes itself), and recorded only once durable. A "you already
have it" answer pins the blob (``leased_until``) so gc can't take it before the commit."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, literal, or_, select, update

from tether.auth.identities import get_space
from tether.auth.service import AuthContext, BudgetCheck
from tether.blobs import DigestMismatch
from tether.blobs.pieces import new_piece_name
from tether.db.models import Blob, SpaceBlob, Upload, UploadPiece
from tether.problems import Problem, bad_request, not_found
from tether.publish.core import DIGEST_RE, UNHASHED_MIN
from tether.publish.sinks import BlobSink, drain
from tether.publish.storage import (
    PublisherBase,
    Target,
    _chunks,
    _dialect_insert,
    _later,
    _lock_digests,
    _proven_in,
    _sqlite_insert,
)


MAX_MISSING_QUERY = 10_000
FINISH_STALE = timedelta(minutes=10)  # a finishing replica that went silent this long is taken over
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


class Intake(PublisherBase):
    """Blobs in: "which do you lack?" (with leases), single and batch uploads, resumable
    uploads, and recording blobs once they are durable."""

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
        return drain(BlobSink(self, ctx, space_id, digest, declared=declared, now=now, budget=budget), chunks)

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
        with self.db.write() as s:
            s.add(Upload(id=upload_id, digest=digest, size=size, user=ctx.user.name,
                         token_id=ctx.token.id if ctx.token else None, space=t.space, created_at=now, received=0))
        return {"id": upload_id, "offset": 0, "size": size}

    def _space_has_size(self, space_id: int, size: int) -> bool:
        with self.db.read() as s:
            return s.execute(_size_query(space_id, size)).first() is not None

    def _space_id(self, space: str) -> int:
        with self.db.read() as s:
            return get_space(s, space).id

    def _upload(self, ctx: AuthContext, upload_id: str) -> Upload:
        if not (len(upload_id) == 32 and all(c in "0123456789abcdef" for c in upload_id)):
            raise bad_request("not an upload id")
        with self.db.read() as s:
            up = s.get(Upload, upload_id)
        if up is None or up.user != ctx.user.name:
            raise not_found(f"upload {upload_id}")
        return up

    def upload_status(self, ctx: AuthContext, upload_id: str) -> dict:
        up = self._upload(ctx, upload_id)
        return {"id": up.id, "offset": up.received, "size": up.size, "complete": False, "digest": up.digest}

    def chunk_sink(self, ctx: AuthContext, upload_id: str, offset: int, *, now: datetime,
                   digest: str | None = None) -> ChunkSink:
        """Take the bytes of one request at ``offset`` of an upload, piece by piece
        (:class:`ChunkSink`: each call short, so no thread waits for the body).

        They are stored as a new piece of the upload in the shared blob store, recorded
        only if the upload still stands at ``offset`` (another request, on this replica
        or another, may have moved it meanwhile: 409 with where it stands). ``digest``
        declares the blob's sha256 of an upload started without one (with any chunk, or
        an empty one at the end). What arrived of a body that broke off is kept: the
        next request resumes after it, on any replica."""
        if digest is not None and not DIGEST_RE.match(digest):
            raise bad_request(f"{digest[:80]!r} is not a sha256 digest", "invalid-digest")
        up = self._upload(ctx, upload_id)
        if digest is not None and digest != up.digest:
            if up.digest is None:
                with self.db.write() as s:
                    # only if still undeclared: a request to another hub replica may be first
                    s.execute(update(Upload).where(Upload.id == up.id, Upload.digest.is_(None)).values(digest=digest))
                up = self._upload(ctx, upload_id)
            if up.digest != digest:
                raise bad_request(f"this upload is of blob {up.digest}, not {digest}", "digest-conflict")
        if offset != up.received:
            raise _wrong_offset(up.received)
        # The running sha256 of bytes 0..offset, if this process recorded the piece ending
        # there; then finishing needs no second read of the bytes (a filesystem store).
        return ChunkSink(self, ctx, up, offset, self._upload_hashes.take(upload_id, offset), now)

    def _record_piece(self, up: Upload, offset: int, size: int, name: str) -> None:
        """Record a stored piece if the upload still stands at ``offset``; else drop it (409)."""
        with self.db.write() as s:
            moved = s.execute(update(Upload).where(Upload.id == up.id, Upload.received == offset,
                                                   Upload.finishing_at.is_(None))
                              .values(received=offset + size)).rowcount
            if moved == 1:
                s.add(UploadPiece(upload_id=up.id, start=offset, size=size, name=name))
        if moved != 1:  # another request got there first: this piece is not part of the upload
            self.store.pieces.drop(up.id, name)
            raise _wrong_offset(self._upload_received(up.id))

    def _upload_received(self, upload_id: str) -> int:
        with self.db.read() as s:
            return s.scalar(select(Upload.received).where(Upload.id == upload_id)) or 0

    def _finish_upload(self, ctx: AuthContext, up: Upload, seen: str | None, now: datetime) -> None:
        """Store a complete upload as its blob, verified (``seen``: the hub's own running
        hash of all its bytes, if it has one). One replica at a time: the others answer
        503 until it is done (then 404: the upload is gone, the blob there)."""
        with self.db.write() as s:
            claimed = s.execute(update(Upload).where(
                Upload.id == up.id, Upload.received == up.size, Upload.digest.is_not(None),
                or_(Upload.finishing_at.is_(None), Upload.finishing_at < now - FINISH_STALE),
            ).values(finishing_at=now)).rowcount
            names = list(s.scalars(select(UploadPiece.name).where(UploadPiece.upload_id == up.id)
                                   .order_by(UploadPiece.start)))
        if claimed != 1:
            raise Problem(503, "upload-finishing", "another request is storing this upload as its blob; "
                          "ask for its state again in a moment", headers={"Retry-After": "2"})
        done = False
        try:
            adopt = getattr(self.store, "adopt", None)
            if adopt is not None and names:  # filesystem store: link the pieces' file in, no copy through Python
                try:
                    adopt(up.digest, self.store.pieces.join(up.id, names), hashed=seen)
                except DigestMismatch as exc:
                    done = True
                    raise bad_request(f"blob {up.digest}: {exc}; nothing was stored; start the upload again",
                                      "blob-digest-mismatch") from None
                self._record_blobs([(up.digest, up.size, None, None)], now, self._space_id(up.space),
                                   placed=[up.digest])
            else:
                try:
                    self.write_blob(ctx, self._space_id(up.space), up.digest, self.store.pieces.read(up.id, names),
                                    declared=up.size, now=now)
                except Problem as p:
                    done = p.status == 400  # the bytes are wrong: keeping them helps no one
                    raise
            done = True
        finally:
            if done:
                self._upload_hashes.drop(up.id)
                with self.db.write() as s:
                    s.execute(delete(Upload).where(Upload.id == up.id))
                self.store.pieces.drop(up.id)
            else:  # something failed on the way (the store, the database): it may be tried again
                with self.db.write() as s:
                    s.execute(update(Upload).where(Upload.id == up.id).values(finishing_at=None))


class ChunkSink:
    """One request's bytes for a resumable upload (see :meth:`Intake.chunk_sink`):
    :meth:`feed` with each piece as it arrives, then :meth:`close`. Each call does a
    bounded amount of work, so a caller on an event loop hands each to a thread and
    holds none while it waits for the client."""

    def __init__(self, intake: Intake, ctx: AuthContext, up: Upload, offset: int, h: Any, now: datetime):
        self.intake, self.ctx, self.up, self.offset, self.h, self.now = intake, ctx, up, offset, h, now
        self.name = new_piece_name()
        self.writer: Any = None
        self.size = 0

    def feed(self, parts: list[bytes]) -> None:
        """Store these bytes (400 and nothing of this request kept if they go past the end)."""
        try:
            for chunk in parts:
                if self.offset + self.size + len(chunk) > self.up.size:
                    raise bad_request(f"the upload is {self.up.size} bytes; this chunk goes past the end")
                if self.writer is None:
                    self.writer = self.intake.store.pieces.writer(self.up.id, self.name)
                self.writer.write(chunk)
                self.size += len(chunk)
                if self.h is not None:
                    self.h.update(chunk)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop what this request stored: the upload stays as it was."""
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    def close(self, broke: BaseException | None) -> dict:
        """Make the piece durable and record it; ``broke``: the error that cut the body
        short, raised once what arrived is kept. Finishes the upload at its last byte."""
        up = self.up
        if self.writer is not None and self.size:
            try:
                self.writer.commit()
            except BaseException:
                self.abort()
                raise
            self.writer = None
            self.intake._record_piece(up, self.offset, self.size, self.name)
        else:
            self.abort()
        if broke is not None:
            raise broke
        received = self.offset + self.size
        if received < up.size or up.digest is None:
            self.intake._upload_hashes.put(up.id, received, self.h)
            return {"id": up.id, "offset": received, "size": up.size, "complete": False}
        self.intake._finish_upload(self.ctx, up, self.h.hexdigest() if self.h is not None else None, self.now)
        return {"id": up.id, "offset": up.size, "size": up.size, "complete": True}


def _wrong_offset(have: int) -> Problem:
    return Problem(409, "wrong-offset", f"the upload has {have} bytes; send the chunk at offset {have}", offset=have)


class _UploadHashes:
    """The sha256 state of resumable uploads in progress, fed as chunks arrive.

    Only a shortcut: a state that is missing (the hub restarted, a chunk went to another
    replica or failed half way, the state was evicted) makes the upload fall back to
    hashing all its bytes when it completes. A state is saved only by the request that
    recorded the piece ending at its offset, and used only at that exact offset (pieces
    are recorded only where the upload stands), so it covers exactly the upload's bytes."""

    MAX = 256

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._state: OrderedDict[str, tuple[int, Any]] = OrderedDict()

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


def _size_query(space_id: int, size: int):
    """SQL: a blob of ``size`` bytes (at least UNHASHED_MIN) proven in the space. The literal
    bound repeats the partial index's condition, so the planner can use that index."""
    b = Blob.__table__
    return select(literal(1)).where(b.c.size == size, b.c.size >= literal(UNHASHED_MIN, literal_execute=True),
                                    _proven_in(space_id, b.c.digest)).limit(1)
