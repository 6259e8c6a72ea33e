"""Content-addressed blob store: a local directory by default, S3 when configured.

Usage::

    from tether.blobs import open_store, DigestMismatch

    store = open_store("/var/lib/tether/blobs")          # or "s3://bucket/prefix"
    with store.writer(digest, max_size=limit) as w:
        for block in body:
            w.write(block)
        w.commit()                                        # DigestMismatch -> nothing stored
    for block in store.open_range(digest, 0, 1024):
        ...

See :mod:`tether.blobs.base` for the contract, :mod:`tether.blobs.fs` and
:mod:`tether.blobs.s3` for each backend's layout and durability policy.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from .base import (
    DIGEST_RE,
    BlobError,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    BlobTruncated,
    BlobWriter,
    DigestMismatch,
    validate_digest,
)
from .fs import FsBlobStore, FsPackWriter

__all__ = [
    "DIGEST_RE",
    "BlobError",
    "BlobNotFound",
    "BlobStore",
    "BlobTooLarge",
    "BlobTruncated",
    "BlobWriter",
    "DigestMismatch",
    "FsBlobStore",
    "FsPackWriter",
    "S3BlobStore",
    "open_store",
    "validate_digest",
]

_S3_ALIASES = {
    "region_name": "region",
    "aws_access_key_id": "access_key",
    "aws_secret_access_key": "secret_key",
    "aws_session_token": "session_token",
    "s3_endpoint_url": "endpoint_url",
    "s3_region": "region",
}


def open_store(url_or_path: str, **options: Any) -> BlobStore:
    """Open a blob store from a path or URL.

    * ``/path``, ``relative/path`` or ``file:///path`` -> :class:`FsBlobStore`
      (options: ``fsync``);
    * ``s3://bucket`` or ``s3://bucket/prefix`` -> :class:`S3BlobStore`
      (options: ``endpoint_url``, ``region``, ``access_key``, ``secret_key``,
      ``session_token``, ``part_size``, ``client``; unset ones come from the
      usual ``AWS_*`` environment). Options whose value is ``None`` are ignored.
    """
    opts = {k: v for k, v in options.items() if v is not None}
    if url_or_path.startswith("s3://"):
        parts = urlsplit(url_or_path)
        if not parts.netloc:
            raise ValueError(f"an S3 blob store URL needs a bucket: {url_or_path!r}")
        s3_opts = {_S3_ALIASES.get(k, k): v for k, v in opts.items()}
        from .s3 import S3BlobStore

        return S3BlobStore(parts.netloc, unquote(parts.path).strip("/"), **s3_opts)
    if url_or_path.startswith("file://"):
        parts = urlsplit(url_or_path)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file: blob store URL must name a local path: {url_or_path!r}")
        return FsBlobStore(unquote(parts.path), **opts)
    if "://" in url_or_path:
        raise ValueError(f"unsupported blob store URL (use a path, file:// or s3://): {url_or_path!r}")
    if not url_or_path:
        raise ValueError("empty blob store path")
    return FsBlobStore(url_or_path, **opts)


def __getattr__(name: str) -> Any:
    # S3BlobStore is imported lazily so that importing tether.blobs does not load boto3.
    if name == "S3BlobStore":
        from .s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(name)
