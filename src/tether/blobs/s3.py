"""Content-addressed blobs in an S3-compatible bucket (AWS, SeaweedFS, MinIO, Ceph...).

Key layout: ``PREFIX/sha256/<digest>`` (``sha256/<digest>`` with no prefix).

A blob is never visible half-written or unverified:

* a blob smaller than ``part_size`` (8 MiB) is buffered in memory, hashed, and
  sent with one ``put_object`` only after its digest has been verified;
* a larger one is streamed as a multipart upload to its final key, in parts of
  exactly ``part_size`` bytes (the last one smaller), hashed as it goes.
  S3 shows nothing under the key until ``complete_multipart_upload``, which is
  called only if the digest matches; otherwise the upload is aborted. Memory
  stays at about two parts whatever the blob's size.

An upload abandoned by a crash is invisible but holds storage:
:meth:`S3BlobStore.sweep_tmp` aborts multipart uploads under the prefix that
are older than a given age (configure a bucket lifecycle rule as well where
the service supports one).

Durability is the service's: S3 acknowledges a ``put_object`` or a completed
multipart upload only once it is stored.

Addressing is path-style (``http://endpoint/bucket/key``) so any endpoint works
without wildcard DNS. Credentials and region come from the options, else from
boto3's usual sources (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``, config files). Some
S3 implementations reject the integrity checksums that recent boto3 sends by
default; set ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` for those.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .base import (
    DEFAULT_CHUNK,
    DIGEST_RE,
    BlobNotFound,
    BlobWriter,
    StoreBase,
    check_range,
    validate_digest,
)
from .pieces import S3Pieces

__all__ = ["S3BlobStore", "S3BlobWriter", "S3ObjectWriter", "MIN_PART_SIZE", "DEFAULT_PART_SIZE"]

MIN_PART_SIZE = 5 << 20  # S3's floor for every part but the last
DEFAULT_PART_SIZE = 8 << 20

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3ObjectWriter:
    """One object sent as it comes: kept in memory up to one part and sent with one
    ``put_object``, or, once it is larger, a multipart upload in parts of exactly
    ``part_size`` bytes (the last one smaller). Nothing is verified here."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: memoryview | bytes) -> None:
        self._buf += data
        part_size = self._store.part_size
        while len(self._buf) >= part_size:
            with memoryview(self._buf) as mv:
                part = bytes(mv[:part_size])
            del self._buf[:part_size]
            self._upload_part(part)

    def _upload_part(self, body: bytes) -> None:
        s = self._store
        if self._upload_id is None:
            resp = s.client.create_multipart_upload(Bucket=s.bucket, Key=self._key)
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        resp = s.client.upload_part(
            Bucket=s.bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        part: dict[str, Any] = {"PartNumber": number, "ETag": resp["ETag"]}
        for name in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"):
            if resp.get(name):
                part[name] = resp[name]
        self._parts.append(part)

    def commit(self) -> None:
        s = self._store
        if self._upload_id is None:
            body = bytes(self._buf)
            self._buf = bytearray()
            s.client.put_object(Bucket=s.bucket, Key=self._key, Body=body)
            return
        if self._buf:
            body = bytes(self._buf)
            self._buf = bytearray()
            self._upload_part(body)
        s.client.complete_multipart_upload(
            Bucket=s.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None

    def abort(self) -> None:
        self._buf = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            self._store.client.abort_multipart_upload(
                Bucket=self._store.bucket, Key=self._key, UploadId=upload_id
            )
        except Exception:  # noqa: BLE001
            # The upload is invisible either way; one we failed to abort is left for
            # sweep_tmp rather than hiding the caller's real error behind this one.
            pass


class S3BlobWriter(BlobWriter):
    """Buffers up to one part; small blobs go with one ``put_object``, large ones multipart,
    to their final key, completed only once the digest matched."""

    def __init__(self, store: S3BlobStore, digest: str, max_size: int | None) -> None:
        super().__init__(digest, max_size)
        self._object = S3ObjectWriter(store, store.key_for(digest))

    def _write(self, data: memoryview) -> None:
        self._object.write(data)

    def _commit(self) -> None:
        self._object.commit()

    def _abort(self) -> None:
        self._object.abort()


class S3BlobStore(StoreBase):
    """Blobs in ``bucket`` under ``prefix``; see the module docstring."""

    local = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_pool_connections: int = 32,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 blob store needs a bucket name")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self._key_prefix = f"{self.prefix}/sha256/" if self.prefix else "sha256/"
        if client is None:
            client = self._make_client(
                endpoint_url=endpoint_url,
                region=region,
                access_key=access_key,
                secret_key=secret_key,
                session_token=session_token,
                max_pool_connections=max_pool_connections,
            )
        self.client = client
        self.pieces = S3Pieces(self)  # resumable uploads' bytes (tether.blobs.pieces)

    @staticmethod
    def _make_client(
        *,
        endpoint_url: str | None,
        region: str | None,
        access_key: str | None,
        secret_key: str | None,
        session_token: str | None,
        max_pool_connections: int,
    ) -> Any:
        import boto3
        from botocore.config import Config

        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            region_name=region,
        )
        if session.region_name is None:
            region = "us-east-1"
        config = Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=max_pool_connections,
        )
        return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def key_for(self, digest: str) -> str:
        """The object key of a blob. Validates the digest."""
        return self._key_prefix + validate_digest(digest)

    # -- API --------------------------------------------------------------
    def writer(self, digest: str, *, max_size: int | None = None, durable: bool = True) -> S3BlobWriter:
        # S3 acknowledges a PUT only once it is stored: every commit is durable.
        validate_digest(digest)
        return S3BlobWriter(self, digest, max_size)

    def size(self, digest: str) -> int | None:
        key = self.key_for(digest)
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            if _error_code(e) in _NOT_FOUND:
                return None
            raise
        return int(resp["ContentLength"])

    def exists(self, digest: str) -> bool:
        return self.size(digest) is not None

    def local_path(self, digest: str) -> Path | None:
        validate_digest(digest)
        return None

    def open_range(
        self, digest: str, start: int = 0, end: int | None = None, chunk: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of the blob (``end`` clamped to its size) in chunks.

        Raises :class:`BlobNotFound` at call time, before the first chunk.
        """
        check_range(start, end, chunk)
        key = self.key_for(digest)
        if end is not None and end == start:
            if not self.exists(digest):
                raise BlobNotFound(digest)
            return iter(())
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            resp = self.client.get_object(**kwargs)
        except Exception as e:
            code = _error_code(e)
            if code in _NOT_FOUND:
                raise BlobNotFound(digest) from None
            if code in ("InvalidRange", "416"):
                # The range starts at or past the end (e.g. any range of an empty blob).
                if not self.exists(digest):
                    raise BlobNotFound(digest) from None
                return iter(())
            raise
        return self._stream(resp["Body"], chunk)

    @staticmethod
    def _stream(body: Any, chunk: int) -> Iterator[bytes]:
        try:
            for block in body.iter_chunks(chunk):
                if block:
                    yield block
        finally:
            body.close()

    def delete(self, digest: str) -> bool:
        key = self.key_for(digest)
        if not self.exists(digest):
            return False
        self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    def iter_digests(self) -> Iterator[str]:
        """Every stored digest, in key order, listed page by page."""
        for digest, _ in self.iter_aged():
            yield digest

    def iter_aged(self) -> Iterator[tuple[str, float]]:
        """Every stored digest with the time its object was written (LastModified)."""
        paginator = self.client.get_paginator("list_objects_v2")
        n = len(self._key_prefix)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key_prefix):
            for obj in page.get("Contents", ()) or ():
                name = obj["Key"][n:]
                if DIGEST_RE.fullmatch(name):
                    yield name, obj["LastModified"].timestamp()

    def incomplete_uploads(self) -> list[dict[str, Any]]:
        """Multipart uploads in progress (or abandoned) under this store's prefix."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        uploads: list[dict[str, Any]] = []
        # blobs' and resumable uploads' pieces alike (see tether.blobs.pieces)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""):
            uploads.extend(page.get("Uploads", ()) or ())
        return uploads

    def sweep_tmp(self, older_than: float = 3600.0) -> int:
        """Abort multipart uploads under the prefix started more than ``older_than`` seconds ago."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than)
        aborted = 0
        for up in self.incomplete_uploads():
            initiated = up.get("Initiated")
            if initiated is None:
                continue
            if initiated.tzinfo is None:
                initiated = initiated.replace(tzinfo=timezone.utc)
            if initiated >= cutoff:
                continue
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                aborted += 1
            except Exception as e:
                if _error_code(e) != "NoSuchUpload":
                    raise
        return aborted
