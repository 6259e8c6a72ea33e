"""Upload bodies taken piece by piece: each kind of upload as a sink that is fed the
pieces of a request body as they arrive, so that no thread waits for the client.

A sink has three calls, each doing a bounded amount of work on what is in hand:
``feed(parts)`` (store these bytes), ``close(broke)`` (the body has ended, or was cut
short by ``broke``: finish or clean up, then answer) and ``abort()`` (drop what this
request stored). A sink that refuses a piece cleans up before it raises; ``abort`` is
then a no-op. Making a sink checks what can be checked before the body (and refuses);
its files are made with the first piece, so a body that never comes holds none. The hub's routes hand each call to a thread of the upload pool
(``publish/api.py``); :func:`drain` feeds one from an iterable in the calling thread.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from tether.auth.service import AuthContext, BudgetCheck
from tether.blobs import BlobTooLarge, BlobTruncated, DigestMismatch
from tether.problems import Problem, bad_request
from tether.publish.core import DIGEST_RE
from tether.publish.frames import END, NEED_DATA, Data, Frame, FrameDecoder, FrameError, Truncated
from tether.publish.storage import Target

if TYPE_CHECKING:
    from tether.publish.service import Publisher

BATCH_MAX_BLOB = 16 << 20


class Sink(Protocol):
    def feed(self, parts: list[bytes]) -> None: ...

    def close(self, broke: BaseException | None) -> Any: ...

    def abort(self) -> None: ...


def drain(sink: Sink, chunks: Iterable[bytes]) -> Any:
    """Feed ``sink`` with ``chunks`` and close it; an error while reading them cuts the body short."""
    it = iter(chunks)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return sink.close(None)
        except Exception as exc:  # the body broke off (or timed out)
            return sink.close(exc)
        sink.feed([chunk])


def refuse_blob(exc: BaseException, digest: str, max_size: int) -> None:
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


class BlobSink:
    """One blob of known digest (``PUT /api/v1/blobs/sha256/D``), verified by the store
    and recorded for the space once durable. Refused before anything is written when
    its declared size is over the limit or the token's budget."""

    def __init__(self, pub: Publisher, ctx: AuthContext | None, space_id: int, digest: str, *,
                 declared: int | None, now: datetime, budget: BudgetCheck | None = None):
        if not DIGEST_RE.match(digest):
            raise bad_request(f"{digest[:80]!r} is not a sha256 digest (64 lowercase hex characters)", "invalid-digest")
        self.pub, self.space_id, self.digest, self.declared, self.now = pub, space_id, digest, declared, now
        self.max_size = pub.settings.max_blob_bytes
        budget = budget or pub.budget(ctx)
        self.meter = None  # a budget checked as the bytes come (no length declared)
        if declared is not None:
            if declared > self.max_size:
                raise pub.too_large()
            if budget is not None:
                budget.need(nbytes=declared)
        else:
            self.meter = budget
        self.writer: Any = None

    def _writer(self) -> Any:
        if self.writer is None:
            self.writer = self.pub.store.writer(self.digest, max_size=self.max_size, durable=True)
        return self.writer

    def feed(self, parts: list[bytes]) -> None:
        try:
            writer = self._writer()
            for chunk in parts:
                if self.meter is not None:
                    self.meter.need(nbytes=writer.size + len(chunk))
                writer.write(chunk)
        except BaseException as exc:
            self.abort()
            refuse_blob(exc, self.digest, self.max_size)
            raise

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    def close(self, broke: BaseException | None) -> int:
        try:
            if broke is not None:
                raise broke
            writer = self._writer()
            if self.declared is not None and writer.size != self.declared:
                raise BlobTruncated(self.digest, self.declared, writer.size)
            size = writer.commit()
        except BaseException as exc:
            self.abort()
            refuse_blob(exc, self.digest, self.max_size)
            raise
        self.pub._record_blobs([(self.digest, size, None, None)], self.now, self.space_id, placed=[self.digest])
        return size


class SingleFileSink:
    """A one-file build (``PUT /api/v1/publish/S/T/B/PATH``): the body is spooled (its
    digest is known only at its end), then stored as its blob and committed. The spool
    is removed whatever happens."""

    def __init__(self, pub: Publisher, ctx: AuthContext, t: Target, path: str, *, declared: int | None,
                 budget: BudgetCheck | None, mode: int, now: datetime):
        self.pub, self.ctx, self.t, self.path, self.declared, self.mode, self.now = pub, ctx, t, path, declared, mode, now
        self.budget = budget
        self.meter = budget if declared is None else None
        self.spool = pub.uploads_dir / f"single-{secrets.token_hex(8)}"
        self.fh: Any = None
        self.h = hashlib.sha256()
        self.size = 0

    def _open(self) -> None:
        if self.fh is None:
            self.pub.uploads_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.fh = open(os.open(self.spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")

    def feed(self, parts: list[bytes]) -> None:
        try:
            self._open()
            for chunk in parts:
                self.size += len(chunk)
                if self.meter is not None:
                    self.meter.need(nbytes=self.size)
                if self.size > self.pub.settings.max_blob_bytes:
                    raise self.pub.too_large()
                self.h.update(chunk)
                self.fh.write(chunk)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
        self.spool.unlink(missing_ok=True)

    def close(self, broke: BaseException | None) -> dict:
        try:
            if broke is not None:
                raise broke
            self._open()
            self.fh.close()
            if self.declared is not None and self.declared != self.size:
                raise bad_request(f"the upload was truncated: {self.size} of {self.declared} bytes arrived",
                                  "truncated-upload")
            digest = self.h.hexdigest()
            drain(BlobSink(self.pub, self.ctx, self.t.space_id, digest, declared=self.size, now=self.now,
                           budget=self.budget), _read(self.spool))
        finally:
            self.abort()
        return self.pub.commit(self.ctx, self.t, [{"path": self.path, "digest": digest, "size": self.size,
                                                   "mode": self.mode}], public=None, latest=False, now=self.now)


def _read(path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            yield block


class BatchSink:
    """Many small blobs in one body (framing: ``publish.frames``), decoded as the body
    arrives. With a filesystem store the blobs go end to end into one pack file, each
    verified as it is appended; the pack is fsynced before one transaction records its
    blobs. Other stores write the blobs without a sync each and then sync once. When a
    frame is refused (or the body breaks off) the good ones before it are kept and
    recorded, except when the batch goes over the token's byte budget: then none of it is."""

    def __init__(self, pub: Publisher, ctx: AuthContext, t: Target, *, now: datetime):
        self.pub, self.t, self.now = pub, t, now
        self.budget = pub.budget(ctx)
        self.counted: set[str] = set()  # the same blob twice in a batch is stored once (and counted once)
        self.total = 0
        self.dec = FrameDecoder()
        self.packed = hasattr(pub.store, "pack_writer")  # a filesystem store: one pack file per batch
        self.pack: Any = None  # made with the first frame
        self.blob: Any = None  # the loose store's writer of the frame being read
        self.digest, self.size = "", 0  # the frame being read
        self.placed: dict[str, tuple[int, int]] = {}  # pack: digest -> (offset, size)
        self.written: dict[str, int] = {}  # loose store: digest -> size
        self.stored: list[str] = []
        self.settled = False

    def feed(self, parts: list[bytes]) -> None:
        try:
            for part in parts:
                self.dec.receive_data(part)
                self._events()
        except BaseException as exc:
            self._fail(exc)

    def close(self, broke: BaseException | None) -> list[str]:
        if broke is not None:
            self._fail(broke)
        try:
            self.dec.receive_data(b"")
            self._events()
        except BaseException as exc:
            self._fail(exc)
        self._settle(keep=True)
        return self.stored

    def abort(self) -> None:
        self._settle(keep=False)

    def _events(self) -> None:
        while (ev := self.dec.next_event()) is not NEED_DATA:
            if ev is END:
                return
            if type(ev) is Frame:
                self._begin(ev.digest, ev.size)
                if not ev.size:
                    self._end()
            elif type(ev) is Data:
                (self.pack if self.packed else self.blob).write(ev.data)
                if ev.last:
                    self._end()
            elif type(ev) is Truncated:
                self._end()

    def _begin(self, digest: str, size: int) -> None:
        if size > BATCH_MAX_BLOB:
            raise bad_request(f"blobs in a batch are limited to {BATCH_MAX_BLOB} bytes; send {digest} alone")
        if self.budget is not None and digest not in self.counted:
            self.counted.add(digest)
            self.total += size
            try:
                self.budget.need(nbytes=self.total)
            except Problem as p:
                self.placed.clear()  # none of the batch is kept
                self.written.clear()  # (its loose files, unnamed, go with gc's sweep of orphans)
                raise p from None
        self.digest, self.size = digest, size
        if self.packed:
            if self.pack is None:
                self.pack = self.pub.store.pack_writer()
            self.pack.begin(digest, declared=size, max_size=BATCH_MAX_BLOB)
        else:
            self.blob = self.pub.store.writer(digest, max_size=BATCH_MAX_BLOB, durable=False)

    def _end(self) -> None:
        if self.packed:
            offset, n = self.pack.end()
            if self.digest in self.placed:
                self.pack.truncate(offset)  # the same bytes twice in one batch: keep one copy
            else:
                self.placed[self.digest] = (offset, n)
        else:
            blob, self.blob = self.blob, None
            if blob.size != self.size:
                blob.abort()
                raise BlobTruncated(self.digest, self.size, blob.size)
            self.written[self.digest] = blob.commit()
        self.stored.append(self.digest)

    def _fail(self, exc: BaseException) -> None:
        """Keep the good blobs before the refused one (or the break), then raise the client's error."""
        self._settle(keep=True)
        if isinstance(exc, FrameError):
            raise bad_request(str(exc), FrameError.slug) from None
        refuse_blob(exc, self.digest, BATCH_MAX_BLOB)
        raise exc

    def _settle(self, keep: bool) -> None:
        """Once: record what is kept (the pack made durable first, or the store synced); drop the rest."""
        if self.settled:
            return
        self.settled = True
        if self.blob is not None:
            self.blob.abort()
        if not keep:
            self.placed.clear()
            self.written.clear()
        if self.pack is not None:
            self.pack.drop_current()
            if self.placed:
                name = self.pack.commit()
                self.pub._record_blobs([(d, n, name, off) for d, (off, n) in self.placed.items()], self.now,
                                       self.t.space_id)
            else:
                self.pack.abort()
        elif self.written:
            self.pub.store.sync()
            self.pub._record_blobs([(d, n, None, None) for d, n in self.written.items()], self.now, self.t.space_id,
                                   placed=list(self.written))
