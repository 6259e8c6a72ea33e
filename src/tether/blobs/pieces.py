"""The pieces of resumable uploads, kept in the blob store itself so that every hub
replica sharing the store reaches them.

An upload is stored as pieces, one per request that brought bytes: ``uploads/<id>/<name>``
beside the blobs (a file under the store's directory; an object under its S3 prefix,
itself sent as an S3 multipart upload in parts of the store's ``part_size`` when it is
large). A piece is written by one request only and never changed; which pieces make
the upload, and in which order, is the caller's record (the hub's database). Nothing
here is verified: the bytes become a blob only through the store's verified paths
(:meth:`FsBlobStore.adopt`, a writer), once the upload is complete.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .fs import FsBlobStore
    from .s3 import S3BlobStore

UPLOAD_ID_RE = re.compile(r"\A[0-9a-f]{32}\Z")
PIECE_RE = re.compile(r"\A[0-9a-f]{16}\Z")


def new_piece_name() -> str:
    return secrets.token_hex(8)


def _check(upload_id: str, name: str | None = None) -> None:
    if not UPLOAD_ID_RE.match(upload_id) or (name is not None and not PIECE_RE.match(name)):
        raise ValueError("not an upload id or piece name")


class PieceWriter(Protocol):
    size: int

    def write(self, data: bytes) -> None: ...

    def commit(self) -> int:
        """Make the piece durable; its size."""

    def abort(self) -> None: ...


# ------------------------------------------------------------------ filesystem


class FsPieceWriter:
    def __init__(self, path: Path, *, fsync: bool):
        from .direct import Appender

        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.size = 0
        self._fsync = fsync
        # whole blocks go to the disk as they come (O_DIRECT): the commit's sync has little left
        self._out = Appender(path, create=True, background=True)

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self.size += len(data)

    def commit(self) -> int:
        try:
            self._out.sync() if self._fsync else self._out.flush()
        finally:
            self._out.close()
        return self.size

    def abort(self) -> None:
        self._out.abort()
        self.path.unlink(missing_ok=True)


class FsPieces:
    """Pieces under ``ROOT/uploads/<id>/`` of an :class:`FsBlobStore`."""

    def __init__(self, store: FsBlobStore):
        self.store = store
        self.dir = store.root / "uploads"

    def path(self, upload_id: str, name: str) -> Path:
        _check(upload_id, name)
        return self.dir / upload_id / name

    def writer(self, upload_id: str, name: str) -> FsPieceWriter:
        return FsPieceWriter(self.path(upload_id, name), fsync=self.store.fsync)

    def read(self, upload_id: str, names: Iterable[str], chunk: int = 1 << 20) -> Iterator[bytes]:
        for name in names:
            with open(self.path(upload_id, name), "rb") as fh:
                while block := fh.read(chunk):
                    yield block

    def join(self, upload_id: str, names: list[str]) -> Path:
        """One file holding the pieces end to end (the piece itself when there is one),
        on the store's filesystem, for :meth:`FsBlobStore.adopt`. Copied in the kernel."""
        if len(names) == 1:
            return self.path(upload_id, names[0])
        whole = self.path(upload_id, new_piece_name())
        with open(whole, "xb") as out:
            for name in names:
                with open(self.path(upload_id, name), "rb") as src:
                    left = os.fstat(src.fileno()).st_size
                    while left:
                        try:
                            n = os.copy_file_range(src.fileno(), out.fileno(), left)
                        except OSError:
                            n = 0
                        if n == 0:  # not supported here: a plain copy of what is left
                            shutil.copyfileobj(src, out)
                            break
                        left -= n
        return whole

    def drop(self, upload_id: str, name: str | None = None) -> None:
        if name is not None:
            self.path(upload_id, name).unlink(missing_ok=True)
            return
        _check(upload_id)
        shutil.rmtree(self.dir / upload_id, ignore_errors=True)

    def uploads(self) -> Iterator[tuple[str, float]]:
        """Every upload with pieces here, and when its directory last changed."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for e in entries:
            if UPLOAD_ID_RE.match(e.name) and e.is_dir(follow_symlinks=False):
                yield e.name, e.stat(follow_symlinks=False).st_mtime


# ------------------------------------------------------------------ S3


class S3PieceWriter:
    """A piece as one object (:class:`~tether.blobs.s3.S3ObjectWriter`: ``put_object``
    when small, else an S3 multipart upload in parts of the store's ``part_size``)."""

    def __init__(self, store: S3BlobStore, key: str):
        from .s3 import S3ObjectWriter

        self._object = S3ObjectWriter(store, key)
        self.size = 0

    def write(self, data: bytes) -> None:
        self._object.write(data)
        self.size += len(data)

    def commit(self) -> int:
        try:
            self._object.commit()
        except BaseException:
            self._object.abort()
            raise
        return self.size

    def abort(self) -> None:
        self._object.abort()


class S3Pieces:
    """Pieces under ``PREFIX/uploads/<id>/`` of an :class:`S3BlobStore`."""

    def __init__(self, store: S3BlobStore):
        self.store = store
        self.prefix = f"{store.prefix}/uploads/" if store.prefix else "uploads/"

    def key(self, upload_id: str, name: str) -> str:
        _check(upload_id, name)
        return f"{self.prefix}{upload_id}/{name}"

    def writer(self, upload_id: str, name: str) -> S3PieceWriter:
        return S3PieceWriter(self.store, self.key(upload_id, name))

    def read(self, upload_id: str, names: Iterable[str], chunk: int = 1 << 20) -> Iterator[bytes]:
        s = self.store
        for name in names:
            body = s.client.get_object(Bucket=s.bucket, Key=self.key(upload_id, name))["Body"]
            yield from s._stream(body, chunk)

    def drop(self, upload_id: str, name: str | None = None) -> None:
        s = self.store
        if name is not None:
            s.client.delete_object(Bucket=s.bucket, Key=self.key(upload_id, name))
            return
        _check(upload_id)
        for key, _ in self._objects(f"{self.prefix}{upload_id}/"):
            s.client.delete_object(Bucket=s.bucket, Key=key)

    def _objects(self, prefix: str) -> Iterator[tuple[str, float]]:
        s = self.store
        for page in s.client.get_paginator("list_objects_v2").paginate(Bucket=s.bucket, Prefix=prefix):
            for obj in page.get("Contents", ()) or ():
                yield obj["Key"], obj["LastModified"].timestamp()

    def uploads(self) -> Iterator[tuple[str, float]]:
        latest: dict[str, float] = {}
        for key, mtime in self._objects(self.prefix):
            upload_id = key[len(self.prefix):].split("/", 1)[0]
            if UPLOAD_ID_RE.match(upload_id):
                latest[upload_id] = max(mtime, latest.get(upload_id, 0.0))
        yield from latest.items()
