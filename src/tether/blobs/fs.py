"""Content-addressed blobs in a local directory.

Layout::

    ROOT/sha256/ab/cd/abcd...       one file per blob (0600), directories 0700
    ROOT/tmp/<random>               writes in progress (same filesystem as the blobs)

Durability policy (a committed blob survives a crash of the machine): the
writer ``fsync``\\ s the temporary file, hard-links it to its final name (so an
existing blob is never clobbered and never briefly replaced), ``fsync``\\ s the
shard directory (and the parents of any directory it had to create), then
removes the temporary name. A half-written blob is never visible under its
final name. ``fsync=False`` turns the syncs off (tests, throw-away stores).

Deletes are not synced: a delete lost in a crash brings back an unreferenced
blob, which the next garbage collection removes again.

Stale files in ``ROOT/tmp`` (left by a crash mid-write) are removed by
:meth:`FsBlobStore.sweep_tmp`.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .base import (
    DEFAULT_CHUNK,
    DIGEST_RE,
    DigestMismatch,
    BlobNotFound,
    BlobWriter,
    StoreBase,
    check_range,
    validate_digest,
)

__all__ = ["FsBlobStore", "FsBlobWriter"]

_DIR_MODE = 0o700


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
        self._file = open(fd, "wb", buffering=0)  # noqa: SIM115 - closed in commit/abort

    def _write(self, data: memoryview) -> None:
        mv = data
        while mv:
            n = self._file.write(mv)
            if n is None:  # pragma: no cover - only for non-blocking files
                continue
            mv = mv[n:]

    def _commit(self) -> None:
        store = self._store
        if self._sync:
            os.fsync(self._file.fileno())
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
            self._file.close()
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


class FsBlobStore(StoreBase):
    """Blobs under ``root``; see the module docstring for layout and durability."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).absolute()
        self.fsync = fsync
        self.blob_dir = self.root / "sha256"
        self.tmp_dir = self.root / "tmp"
        for d in (self.root, self.blob_dir, self.tmp_dir):
            d.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)

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

    def adopt(self, digest: str, path: Path) -> int:
        """Move a finished upload file into the store without copying it: hash it,
        refuse it on a mismatch (the file is left for the caller), else sync and link.
        ``path`` must be on the store's filesystem."""
        import hashlib

        validate_digest(digest)
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
                size += len(block)
            if h.hexdigest() != digest:
                raise DigestMismatch(digest, h.hexdigest(), size)
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
        check_range(start, end)
        if chunk <= 0:
            raise ValueError("chunk must be > 0")
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
                shard = self.blob_dir / a / b
                try:
                    names = sorted(e.name for e in os.scandir(shard) if e.is_file())
                except FileNotFoundError:
                    continue
                for name in names:
                    if DIGEST_RE.fullmatch(name) and name[:2] == a and name[2:4] == b:
                        yield name

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
