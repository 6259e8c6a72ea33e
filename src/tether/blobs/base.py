"""The contract every blob store keeps, and the pieces the stores share.

A blob is an immutable byte string named by the lowercase hex sha256 of its
bytes. A store never trusts a caller's claimed digest: :class:`BlobWriter`
hashes the bytes as they arrive and :meth:`BlobWriter.commit` refuses
(:class:`DigestMismatch`) unless they hash to the digest the writer was opened
for. Until a commit succeeds nothing is visible; after it, the whole blob is.

Every public method validates its digest argument against :data:`DIGEST_RE`
and raises :class:`ValueError` otherwise, so no digest can name a path or key
outside the store.

All methods are synchronous and thread-safe; the hub calls them from worker
threads. A single :class:`BlobWriter` is used by one thread at a time.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, runtime_checkable

__all__ = [
    "DIGEST_RE",
    "DEFAULT_CHUNK",
    "BlobError",
    "BlobNotFound",
    "BlobStore",
    "BlobTooLarge",
    "BlobTruncated",
    "BlobWriter",
    "DigestMismatch",
    "StoreBase",
    "check_range",
    "validate_digest",
]

DIGEST_RE = re.compile(r"\A[0-9a-f]{64}\Z")
"""A sha256 digest as 64 lowercase hex characters: the only names a store accepts."""

DEFAULT_CHUNK = 1 << 20


class BlobError(Exception):
    """Base class of the blob store's own errors."""


class DigestMismatch(BlobError):
    """The bytes written do not hash to the digest the writer was opened for."""

    def __init__(self, expected: str, actual: str, size: int) -> None:
        self.expected = expected
        self.actual = actual
        self.size = size
        super().__init__(f"the bytes hash to {actual}, not {expected}")


class BlobTooLarge(BlobError):
    """More bytes were written than the writer's ``max_size`` allows."""

    def __init__(self, digest: str, max_size: int, size: int) -> None:
        self.digest = digest
        self.max_size = max_size
        self.size = size
        super().__init__(f"blob {digest} is larger than the limit of {max_size} bytes (got at least {size})")


class BlobTruncated(BlobError):
    """Fewer bytes arrived than were declared for the blob."""

    def __init__(self, digest: str, declared: int, size: int) -> None:
        self.digest = digest
        self.declared = declared
        self.size = size
        super().__init__(f"{size} of {declared} bytes arrived for {digest}")


class BlobNotFound(BlobError):
    """No blob with this digest is in the store."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        super().__init__(f"no blob sha256:{digest}")


def validate_digest(digest: object) -> str:
    """Return ``digest`` if it is 64 lowercase hex characters, else raise ValueError."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 digest (64 lowercase hex characters): {digest!r}")
    return digest


def check_range(start: int, end: int | None, chunk: int = 1) -> None:
    """Validate a byte range ``[start, end)`` (``end=None``: to the end of the blob)
    and the chunk size it is to be read in."""
    if chunk <= 0:
        raise ValueError("chunk must be > 0")
    if start < 0:
        raise ValueError(f"range start must be >= 0, not {start}")
    if end is not None and end < start:
        raise ValueError(f"range end ({end}) must be >= start ({start})")


class BlobWriter:
    """Streams one blob into a store; hashes as it goes; nothing is visible until :meth:`commit`.

    Subclasses implement ``_write``, ``_commit`` and ``_abort``. Lifecycle:
    ``open -> committed`` or ``open -> aborted``; any error in ``write`` or
    ``commit`` aborts the writer, so a failed writer never leaves anything behind.
    Used as a context manager it aborts on an exception and otherwise leaves
    the decision to the caller: it never commits by itself, so an uncommitted
    writer is aborted on exit too.
    """

    def __init__(self, digest: str, max_size: int | None = None) -> None:
        self.digest = validate_digest(digest)
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0, not {max_size}")
        self.max_size = max_size
        self._hash = hashlib.sha256()
        self._size = 0
        self._state = "open"

    # -- subclass hooks -------------------------------------------------
    def _write(self, data: memoryview) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _commit(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _abort(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- public API -----------------------------------------------------
    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    @property
    def state(self) -> str:
        """``"open"``, ``"committed"`` or ``"aborted"``."""
        return self._state

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``. Raises :class:`BlobTooLarge` (and aborts) past ``max_size``."""
        self._require_open()
        view = memoryview(data).cast("B")
        n = len(view)
        if n == 0:
            return
        if self.max_size is not None and self._size + n > self.max_size:
            self.abort()
            raise BlobTooLarge(self.digest, self.max_size, self._size + n)
        try:
            self._hash.update(view)
            self._size += n
            self._write(view)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> int:
        """Verify the digest, make the blob visible atomically and durably; return its size.

        On a mismatch raises :class:`DigestMismatch` and leaves nothing visible.
        Committing a digest the store already holds succeeds (idempotent).
        """
        self._require_open()
        actual = self._hash.hexdigest()
        if actual != self.digest:
            self.abort()
            raise DigestMismatch(self.digest, actual, self._size)
        try:
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        return self._size

    def abort(self) -> None:
        """Discard everything written. Safe to call at any time, any number of times."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._abort()

    def _require_open(self) -> None:
        if self._state != "open":
            raise BlobError(f"writer for {self.digest} is already {self._state}")

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Never auto-commit: a writer left open (exception or forgotten commit) is discarded.
        self.abort()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sha256:{self.digest} {self._state} size={self._size}>"


BlobSource = bytes | bytearray | memoryview | Iterable[bytes] | BinaryIO


@runtime_checkable
class BlobStore(Protocol):
    """What the hub needs from a content-addressed store (filesystem or S3)."""

    #: ``exists`` costs a local system call, not a request over the network
    local: bool

    def writer(self, digest: str, *, max_size: int | None = None, durable: bool = True) -> BlobWriter: ...

    def sync(self) -> None: ...

    def put(self, digest: str, data: BlobSource, *, max_size: int | None = None) -> int: ...

    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int | None: ...

    def open_range(
        self, digest: str, start: int = 0, end: int | None = None, chunk: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]: ...

    def delete(self, digest: str) -> bool: ...

    def iter_digests(self) -> Iterator[str]: ...

    def local_path(self, digest: str) -> Path | None: ...

    def sweep_tmp(self, older_than: float = 3600.0) -> int: ...


class StoreBase:
    """Conveniences shared by the stores, built on their ``writer``/``open_range``."""

    def writer(self, digest: str, *, max_size: int | None = None, durable: bool = True) -> BlobWriter:  # pragma: no cover
        raise NotImplementedError

    def sync(self) -> None:
        """Make every blob committed with ``durable=False`` durable (a no-op where
        commits are always durable)."""

    def open_range(
        self, digest: str, start: int = 0, end: int | None = None, chunk: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]:  # pragma: no cover
        raise NotImplementedError

    def put(self, digest: str, data: BlobSource, *, max_size: int | None = None) -> int:
        """Write a whole blob from bytes, an iterable of bytes, or a binary file; return its size.

        Raises :class:`DigestMismatch` / :class:`BlobTooLarge` with nothing stored.
        """
        validate_digest(digest)
        with self.writer(digest, max_size=max_size) as w:
            if isinstance(data, (bytes, bytearray, memoryview)):
                w.write(data)
            elif hasattr(data, "read"):
                read = data.read  # type: ignore[union-attr]
                while True:
                    block = read(DEFAULT_CHUNK)
                    if not block:
                        break
                    w.write(block)
            else:
                for block in data:  # type: ignore[union-attr]
                    w.write(block)
            return w.commit()

    def get(self, digest: str) -> bytes:
        """The whole blob in memory (for small blobs and tests). Raises :class:`BlobNotFound`."""
        buf = io.BytesIO()
        for block in self.open_range(digest):
            buf.write(block)
        return buf.getvalue()
