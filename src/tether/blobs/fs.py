"""Content-addressed blobs in a local directory.

Layout::

    ROOT/sha256/ab/cd/abcd...       one file per blob (0600), directories 0700
    ROOT/packs/<32 hex>             pack files: many small blobs end to end (0600)
    ROOT/tmp/<random>               writes in progress (same filesystem as the blobs)
    ROOT/uploads/<id>/<random>      pieces of resumable uploads (tether.blobs.pieces)

A pack holds the blobs of one batch upload, each verified as it is appended;
where each blob sits (pack name, offset, size) is recorded by the caller (the
hub's database), not in the pack. Creating 10,000 small files costs the
filesystem far more than writing one file of the same bytes, which is why
batches go to packs. A pack is never changed once written; garbage collection
deletes it when none of its blobs is referenced any more, or copies its last
live blobs out to files of their own when most of it is dead.

Durability policy (a committed blob survives a crash of the machine): the
writer ``fsync``\\ s the temporary file, hard-links it to its final name (so an
existing blob is never clobbered and never briefly replaced), ``fsync``\\ s the
shard directory (and the parents of any directory it had to create), then
removes the temporary name. A half-written blob is never visible under its
final name. A pack is written under ``ROOT/tmp``, ``fsync``\\ ed, renamed into
``ROOT/packs`` and the directory ``fsync``\\ ed, all before :meth:`FsPackWriter.commit`
returns. ``fsync=False`` turns the syncs off (tests, throw-away stores).

Deletes are not synced: a delete lost in a crash brings back an unreferenced
blob, which the next garbage collection removes again.

Stale files in ``ROOT/tmp`` (left by a crash mid-write) are removed by
:meth:`FsBlobStore.sweep_tmp`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

from .base import (
    DEFAULT_CHUNK,
    DIGEST_RE,
    BlobError,
    BlobNotFound,
    BlobTooLarge,
    BlobTruncated,
    BlobWriter,
    DigestMismatch,
    StoreBase,
    check_range,
    validate_digest,
)
from .direct import Appender
from .pieces import FsPieces

__all__ = ["PACK_RE", "FsBlobStore", "FsBlobWriter", "FsPackWriter"]

_DIR_MODE = 0o700
PACK_RE = re.compile(r"\A[0-9a-f]{32}\Z")
"""A pack's name: 32 lowercase hex characters (random)."""


def _load_syncfs():
    try:
        import ctypes
        import ctypes.util

        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).syncfs
    except (OSError, AttributeError):  # not Linux/glibc: fall back to os.sync()
        return None


_syncfs = _load_syncfs()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FsBlobWriter(BlobWriter):
    """Writes to ``ROOT/tmp/<random>``; :meth:`commit` links it into place."""

    def __init__(self, store: FsBlobStore, digest: str, max_size: int | None, durable: bool = True) -> None:
        super().__init__(digest, max_size)
        self._store = store
        # durable=False skips the syncs; the caller then calls store.sync() once for many blobs.
        self._sync = store.fsync and durable
        fd, name = tempfile.mkstemp(prefix=f"{digest[:16]}.", suffix=".part", dir=store.tmp_dir)
        self._tmp = Path(name)
        try:
            self._file = Appender(self._tmp)  # closed in commit/abort
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)

    def _write(self, data: memoryview) -> None:
        self._file.write(data)

    def _commit(self) -> None:
        store = self._store
        if self._sync:
            self._file.sync()
        self._file.close()
        final = store.path_for(self.digest)
        store._make_shard_dirs(final.parent, sync=self._sync)
        try:
            os.link(self._tmp, final)
        except FileExistsError:
            # Already stored (another writer, or a re-upload): the content is identical
            # by construction, so keep the existing file untouched.
            pass
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # A filesystem without hard links: an atomic rename still never shows a partial file.
            os.replace(self._tmp, final)
        if self._sync:
            _fsync_dir(final.parent)
        self._tmp.unlink(missing_ok=True)

    def _abort(self) -> None:
        try:
            self._file.abort()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __del__(self) -> None:
        # A writer dropped without commit or abort (a bug in the caller) still frees its
        # descriptor and temporary file; sweep_tmp covers a crash.
        try:
            if getattr(self, "_state", None) == "open" and hasattr(self, "_file"):
                self.abort()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


def validate_pack(name: object) -> str:
    if not isinstance(name, str) or not PACK_RE.fullmatch(name):
        raise ValueError(f"not a pack name (32 lowercase hex characters): {name!r}")
    return name


class _PackEntry:
    """The blob an :class:`FsPackWriter` is appending."""

    __slots__ = ("digest", "start", "declared", "max_size", "h", "n")

    def __init__(self, digest: str, start: int, declared: int | None, max_size: int | None) -> None:
        self.digest, self.start, self.declared, self.max_size = digest, start, declared, max_size
        self.h = hashlib.sha256()
        self.n = 0


class FsPackWriter:
    """Appends verified blobs to one new pack file; :meth:`commit` makes it durable and visible.

    Each :meth:`add` hashes the blob's bytes as they come and refuses them
    (:class:`DigestMismatch`, :class:`BlobTooLarge`, :class:`BlobTruncated`) with
    the pack cut back to where it was, so a refused blob leaves nothing behind and
    the blobs added before it stay good. Whole blocks go to the disk as they come,
    around the page cache (:class:`~tether.blobs.direct.Appender`). One thread at a time.
    """

    def __init__(self, store: FsBlobStore) -> None:
        self._store = store
        self.name = secrets.token_hex(16)
        self._tmp = store.tmp_dir / f"{self.name}.pack"
        try:
            self._out: Appender | None = Appender(self._tmp, create=True)
        except BaseException:
            self._tmp.unlink(missing_ok=True)  # created before what failed (the buffer, the second open)
            raise
        self.count = 0
        self._state = "open"
        self._cur: _PackEntry | None = None

    @property
    def size(self) -> int:
        return self._out.position if self._out is not None else 0

    @property
    def state(self) -> str:
        return self._state

    def add(self, digest: str, chunks: Iterable[bytes], *, declared: int | None = None,
            max_size: int | None = None) -> tuple[int, int]:
        """Append one blob from ``chunks``; return its ``(offset, size)`` in the pack."""
        self.begin(digest, declared=declared, max_size=max_size)
        try:
            for chunk in chunks:
                self.write(chunk)
        except BaseException:
            self.drop_current()
            raise
        return self.end()

    def begin(self, digest: str, *, declared: int | None = None, max_size: int | None = None) -> None:
        """Start appending one blob, whose bytes then come by :meth:`write` (as they arrive:
        nothing waits for them here) until :meth:`end`."""
        validate_digest(digest)
        if self._state != "open":
            raise BlobError(f"pack {self.name} is already {self._state}")
        self._cur = _PackEntry(digest, self.size, declared, max_size)

    def write(self, chunk: bytes | memoryview) -> None:
        """The next bytes of the blob begun; a refusal cuts the pack back to where it began."""
        cur = self._cur
        assert cur is not None, "write() outside begin()/end()"
        cur.n += len(chunk)
        if cur.max_size is not None and cur.n > cur.max_size:
            self.drop_current()
            raise BlobTooLarge(cur.digest, cur.max_size, cur.n)
        try:
            cur.h.update(chunk)
            self._out.write(chunk)  # type: ignore[union-attr]
        except BaseException:
            self.drop_current()
            raise

    def end(self) -> tuple[int, int]:
        """The blob begun is complete: verify it (else cut it off and raise); its ``(offset, size)``."""
        cur, self._cur = self._cur, None
        assert cur is not None, "end() without begin()"
        try:
            if cur.declared is not None and cur.n != cur.declared:
                raise BlobTruncated(cur.digest, cur.declared, cur.n)
            actual = cur.h.hexdigest()
            if actual != cur.digest:
                raise DigestMismatch(cur.digest, actual, cur.n)
        except BaseException:
            self.truncate(cur.start)
            raise
        self.count += 1
        return cur.start, cur.n

    def drop_current(self) -> None:
        """Cut off the blob begun and not ended (if any); the blobs before it stay."""
        cur, self._cur = self._cur, None
        if cur is not None:
            self.truncate(cur.start)

    def truncate(self, offset: int) -> None:
        """Cut the pack back to ``offset`` bytes (drop what was added after it)."""
        if self._out is not None:
            self._out.truncate(offset)

    def commit(self) -> str:
        """Make the pack durable (fsync file, rename, fsync directory); return its name."""
        if self._state != "open":
            raise BlobError(f"pack {self.name} is already {self._state}")
        try:
            out, self._out = self._out, None
            assert out is not None
            try:
                if self._store.fsync:
                    out.sync()
            finally:
                out.close()
            os.rename(self._tmp, self._store.pack_dir / self.name)
            if self._store.fsync:
                _fsync_dir(self._store.pack_dir)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        return self.name

    def abort(self) -> None:
        """Discard the pack. Safe to call at any time, any number of times."""
        if self._state != "open":
            return
        self._state = "aborted"
        try:
            if self._out is not None:
                self._out.abort()
                self._out = None
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # never auto-commit


class FsBlobStore(StoreBase):
    """Blobs under ``root``; see the module docstring for layout and durability."""

    local = True

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).absolute()
        self.fsync = fsync
        self.blob_dir = self.root / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.pack_dir = self.root / "packs"
        for d in (self.root, self.blob_dir, self.tmp_dir):
            d.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        if not self.pack_dir.is_dir():
            self.pack_dir.mkdir(mode=_DIR_MODE, exist_ok=True)
            if fsync:  # a committed pack must not vanish with its directory
                _fsync_dir(self.root)
        self.pieces = FsPieces(self)  # resumable uploads' bytes, ROOT/uploads (tether.blobs.pieces)

    def __repr__(self) -> str:
        return f"FsBlobStore({str(self.root)!r})"

    # -- paths ------------------------------------------------------------
    def path_for(self, digest: str) -> Path:
        """Where the blob lives (whether or not it exists). Validates the digest."""
        validate_digest(digest)
        return self.blob_dir / digest[:2] / digest[2:4] / digest

    def _make_shard_dirs(self, shard: Path, *, sync: bool = True) -> None:
        """Create ``sha256/ab/cd`` if missing, syncing each parent whose listing changed."""
        missing: list[Path] = []
        p = shard
        while p != self.blob_dir and not p.is_dir():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=_DIR_MODE)
            except FileExistsError:
                continue
            if self.fsync and sync:
                _fsync_dir(d.parent)

    # -- API --------------------------------------------------------------
    def writer(self, digest: str, *, max_size: int | None = None, durable: bool = True) -> FsBlobWriter:
        validate_digest(digest)
        return FsBlobWriter(self, digest, max_size, durable)

    def adopt(self, digest: str, path: Path, *, hashed: str | None = None) -> int:
        """Move a finished upload file into the store without copying it: hash it,
        refuse it on a mismatch (the file is left for the caller), else sync and link.
        ``path`` must be on the store's filesystem. ``hashed`` is the sha256 the caller
        computed itself over exactly the bytes it wrote to ``path`` (never a client's
        claim); with it the file is not read again."""
        validate_digest(digest)
        with open(path, "rb") as fh:
            if hashed is None:
                h = hashlib.sha256()
                size = 0
                while block := fh.read(1 << 20):
                    h.update(block)
                    size += len(block)
                hashed = h.hexdigest()
            else:
                size = os.fstat(fh.fileno()).st_size
            if hashed != digest:
                raise DigestMismatch(digest, hashed, size)
            if self.fsync:
                os.fsync(fh.fileno())
        os.chmod(path, 0o600)
        final = self.path_for(digest)
        self._make_shard_dirs(final.parent)
        try:
            os.link(path, final)
        except FileExistsError:
            pass
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                raise
            self.put(digest, open(path, "rb"))  # another filesystem: copy after all
            return size
        if self.fsync:
            _fsync_dir(final.parent)
        return size

    def sync(self) -> None:
        """One flush for everything written with ``durable=False``: syncfs(2) on the
        store's filesystem (data and directory entries), or sync(2) where syncfs is missing."""
        if not self.fsync:
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _syncfs is None or _syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    # -- packs ------------------------------------------------------------
    def pack_writer(self) -> FsPackWriter:
        """A new pack for many small blobs (see :class:`FsPackWriter`)."""
        return FsPackWriter(self)

    def open_packed(self, digest: str, pack: str, offset: int, size: int, start: int = 0,
                    end: int | None = None, chunk: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of the blob stored at ``offset`` (``size`` bytes) in ``pack``.

        Raises :class:`BlobNotFound` at call time if the pack is gone.
        """
        validate_digest(digest)
        validate_pack(pack)
        check_range(start, end, chunk)
        if offset < 0 or size < 0:
            raise ValueError("offset and size must be >= 0")
        try:
            f = open(self.pack_dir / pack, "rb", buffering=0)  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        stop = size if end is None else min(end, size)
        return self._read(f, offset + start, offset + max(stop, start), chunk)

    def pack_size(self, pack: str) -> int | None:
        try:
            return (self.pack_dir / validate_pack(pack)).stat().st_size
        except FileNotFoundError:
            return None

    def delete_pack(self, pack: str) -> bool:
        try:
            (self.pack_dir / validate_pack(pack)).unlink()
        except FileNotFoundError:
            return False
        return True

    def iter_packs(self) -> Iterator[tuple[str, float]]:
        """``(name, mtime)`` of every pack."""
        try:
            entries = list(os.scandir(self.pack_dir))
        except FileNotFoundError:
            return
        for e in entries:
            if PACK_RE.fullmatch(e.name):
                try:
                    yield e.name, e.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return self.path_for(digest).stat().st_size
        except FileNotFoundError:
            return None

    def local_path(self, digest: str) -> Path | None:
        """The blob's file, for ``sendfile``-style serving; ``None`` if absent."""
        p = self.path_for(digest)
        return p if p.is_file() else None

    def open_range(
        self, digest: str, start: int = 0, end: int | None = None, chunk: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of the blob (``end`` clamped to its size) in chunks.

        Raises :class:`BlobNotFound` at call time, before the first chunk.
        """
        check_range(start, end, chunk)
        path = self.path_for(digest)
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        return self._read(f, start, end, chunk)

    @staticmethod
    def _read(f, start: int, end: int | None, chunk: int) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
        with f:
            size = os.fstat(f.fileno()).st_size
            stop = size if end is None else min(end, size)
            pos = start
            if pos >= stop:
                return
            f.seek(pos)
            while pos < stop:
                block = f.read(min(chunk, stop - pos))
                if not block:  # file shorter than expected: cannot happen to an immutable blob
                    return
                pos += len(block)
                yield block

    def delete(self, digest: str) -> bool:
        try:
            self.path_for(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def iter_digests(self) -> Iterator[str]:
        """Every stored digest, in sorted order, without reading any blob."""
        for entry in self._entries():
            yield entry.name

    def iter_aged(self) -> Iterator[tuple[str, float]]:
        """Every stored digest with the time its file was last changed or renamed into place
        (ctime: a resumable upload's file keeps its old mtime when it is moved in)."""
        for entry in self._entries():
            try:
                yield entry.name, entry.stat(follow_symlinks=False).st_ctime
            except FileNotFoundError:
                continue

    def _entries(self) -> Iterator[os.DirEntry[str]]:
        try:
            level1 = sorted(e.name for e in os.scandir(self.blob_dir) if e.is_dir())
        except FileNotFoundError:
            return
        for a in level1:
            try:
                level2 = sorted(e.name for e in os.scandir(self.blob_dir / a) if e.is_dir())
            except FileNotFoundError:
                continue
            for b in level2:
                try:
                    entries = sorted((e for e in os.scandir(self.blob_dir / a / b) if e.is_file()), key=lambda e: e.name)
                except FileNotFoundError:
                    continue
                for e in entries:
                    if DIGEST_RE.fullmatch(e.name) and e.name[:2] == a and e.name[2:4] == b:
                        yield e

    def sweep_tmp(self, older_than: float = 3600.0) -> int:
        """Remove temporary files not modified for ``older_than`` seconds; return how many."""
        cutoff = time.time() - older_than
        removed = 0
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return 0
        for e in entries:
            try:
                if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(e.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
