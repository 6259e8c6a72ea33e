"""Publish a set of local files to a hub as one build.

    >>> summary = publish("https://hub.example", "tth_...", "builds", "android", "1234",
    ...                   ["out/**/*.img"], root=".", strip=1)

The flow:

1. expand the globs, map paths (``--strip``), refuse bad paths;
2. if the local hash cache knows every file's digest (an unchanged tree), commit
   at once (step 5); should the hub lack some blobs, carry on with step 3;
3. hash the files (with the hash cache), and meanwhile, group by group, ask the
   hub which digests it lacks (``POST /api/v1/blobs/missing``); the hub keeps a
   lease on the ones it has until commit. Small files are read once: the bytes
   hashed are the bytes sent;
4. upload only the missing blobs, each distinct content once, in parallel:
   small ones many to a request (``POST /api/v1/blobs/batch``), medium ones
   streamed one per request (``PUT /api/v1/blobs/sha256/<hex>``), large ones
   in resumable 64 MiB chunks (``/api/v1/uploads``);
5. commit the manifest in one request (``POST /api/v1/publish/<space>/<type>/<build>``):
   nothing of the build is visible before, all of it after.

Transient failures (connection errors, 429, 502, 503, 504) are retried with
exponential backoff, at most :data:`MAX_TRIES` times per request, honouring
``Retry-After``. Memory stays bounded: files are streamed in 1 MiB pieces, and
small files wait in memory for their upload in at most a few 8 MiB groups.

The pure helpers (:func:`frame_header`, :func:`encode_frames`,
:func:`pack_batches`, :func:`plan_chunks`, :func:`classify`) carry the wire
format and the upload planning and are tested without a hub.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

from tether.publish.core import (
    DIGEST_RE,
    UNHASHED_MIN,
    PathError,
    manifest_digest,
    validate_build_id,
    validate_type,
)
from tether.publish.files import (
    READ_CHUNK,
    FileChangedError,
    Group,
    HashCache,
    HashResult,
    InputError,
    LocalFile,
    expand,
    hash_file,
    hash_files,
    plan,
    tree_key,
    tree_signature,
)

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from tether.hubclient.config import ClientConfig
    from tether.hubclient.hub import Hub as HubClient
    from tether.hubclient.transport import Handler, WireClient, WireResponse

KiB = 1 << 10
MiB = 1 << 20

SMALL_MAX = 1 * MiB  # blobs up to this size travel many to a request
MEDIUM_MAX = 64 * MiB  # up to this, one streamed PUT; above, resumable chunks
BATCH_MAX_BYTES = 16 * MiB
BATCH_MAX_BLOBS = 2000  # as many as a group of small files (files.GROUP_FILES): one request per group
CHUNK_SIZE = 64 * MiB
MISSING_BATCH = 10_000
DEFAULT_JOBS = 8

MAX_TRIES = 5
BACKOFF = 0.5  # seconds, doubled per try, with jitter
MAX_RETRY_AFTER = 60.0
RETRY_STATUSES = frozenset({429, 502, 503, 504})

BATCH_CONTENT_TYPE = "application/x-tether-blobs"
ENV_SPACE = "TETHER_SPACE"


class PublishError(Exception):
    """Publishing failed; ``exit_code`` follows DESIGN.md (1 no, 2 usage, 3 runtime, 4 auth)."""

    def __init__(self, message: str, exit_code: int = 3, hint: str | None = None, status: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.hint = hint
        self.status = status


# -- pure helpers: wire format and planning ---------------------------------------------


def frame_header(digest: str, size: int) -> bytes:
    """The header line of one frame in a batch upload: ``<hex> <size>\\n``."""
    if not DIGEST_RE.match(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"bad size {size!r}")
    return f"{digest} {size}\n".encode("ascii")


def encode_frames(blobs: Iterable[tuple[str, bytes]]) -> bytes:
    """A whole batch body from ``(digest, data)`` pairs (for tests and small uses)."""
    return b"".join(frame_header(d, len(data)) + data for d, data in blobs)


def decode_frames(body: bytes) -> list[tuple[str, bytes]]:
    """Inverse of :func:`encode_frames`; ValueError on a malformed body."""
    out: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(body):
        nl = body.find(b"\n", pos, pos + 64 + 1 + 20 + 1)
        if nl < 0:
            raise ValueError(f"no frame header at byte {pos}")
        digest, _, size_s = body[pos:nl].decode("ascii").partition(" ")
        if not DIGEST_RE.match(digest) or not size_s.isdigit():
            raise ValueError(f"bad frame header at byte {pos}")
        size = int(size_s)
        start = nl + 1
        if start + size > len(body):
            raise ValueError(f"frame {digest} is truncated")
        out.append((digest, body[start : start + size]))
        pos = start + size
    return out


def _framed_size(size: int) -> int:
    """Bytes one frame takes in a batch: ``<64 hex> <size>\n`` and the blob (the header
    itself is built, and the digest checked, where the body is made)."""
    return 66 + len(str(size)) + size


def batch_length(items: Sequence[tuple[str, int]]) -> int:
    """The exact byte length of a batch body of ``(digest, size)`` frames."""
    return sum(_framed_size(s) for _, s in items)


def classify(size: int) -> str:
    """``"small"`` (batched), ``"medium"`` (one PUT) or ``"large"`` (resumable)."""
    if size <= SMALL_MAX:
        return "small"
    if size <= MEDIUM_MAX:
        return "medium"
    return "large"


def pack_batches(
    items: Sequence[tuple[str, int]], max_bytes: int = BATCH_MAX_BYTES, max_blobs: int = BATCH_MAX_BLOBS
) -> list[list[tuple[str, int]]]:
    """Group ``(digest, size)`` items, in order, into batches of at most
    ``max_blobs`` frames and ``max_bytes`` body bytes (headers included).
    A single item bigger than ``max_bytes`` gets a batch of its own."""
    batches: list[list[tuple[str, int]]] = []
    cur: list[tuple[str, int]] = []
    cur_bytes = 0
    for d, s in items:
        n = _framed_size(s)
        if cur and (len(cur) >= max_blobs or cur_bytes + n > max_bytes):
            batches.append(cur)
            cur, cur_bytes = [], 0
        cur.append((d, s))
        cur_bytes += n
    if cur:
        batches.append(cur)
    return batches


def plan_chunks(size: int, offset: int = 0, chunk: int = CHUNK_SIZE) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` half-open ranges covering ``offset..size`` in ``chunk`` steps."""
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    if not 0 <= offset <= size:
        raise ValueError(f"offset {offset} outside 0..{size}")
    return [(start, min(start + chunk, size)) for start in range(offset, size, chunk)]


def space_from_scopes(scopes: Sequence[str] | None) -> str | None:
    """The space of the token's only ``publish:`` scope, or None (none, or several spaces)."""
    spaces = set()
    for s in scopes or ():
        kind, _, rest = str(s).strip().partition(":")
        if kind.lower() != "publish" or not rest:
            continue
        spaces.add(rest.split(":", 1)[0].split("/", 1)[0])
    return spaces.pop() if len(spaces) == 1 else None


def human_bytes(n: int) -> str:
    """``1234567`` -> ``1.2 MB`` (decimal units)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def summary_line(s: dict[str, Any]) -> str:
    """The one line printed on stderr after a publish (or a dry run)."""
    if s.get("dry_run"):
        # the hub is not asked: the space may come from the token, the path from the type's config
        where = f"space {s['space']}" if s.get("space") else "the space of the token's scope"
        return (
            f"dry run: would publish {_files(s['files'])} ({human_bytes(s['bytes'])}) as build {s['build']} "
            f"of type {s['type']} in {where}: "
            f"hashed {human_bytes(s['bytes_hashed'])}, {s['seconds']:.1f} s"
        )
    return (
        f"published {_files(s['files'])} ({human_bytes(s['bytes'])}) to {s.get('url') or s.get('path')}: "
        f"hashed {human_bytes(s['bytes_hashed'])}, sent {human_bytes(s['bytes_sent'])}, "
        f"{s['deduplicated']} deduplicated, {s['seconds']:.1f} s"
    )


# -- progress -------------------------------------------------------------------------


class _NoProgress:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _RichProgress:
    """A rich progress bar on stderr, one task per phase (thread-safe advance)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._p = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            DownloadColumn(binary_units=False),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._p.start()
        self._task: Any = None
        self._total = 0
        self._closed = False

    def phase(self, name: str, total: int) -> None:
        if self._task is not None:
            self._p.update(self._task, completed=self._total)
        self._total = total
        self._task = self._p.add_task(name, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._p.advance(self._task, n)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._task is not None:
                self._p.update(self._task, completed=self._total)
            self._p.stop()


# -- the HTTP side ------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


class _Blob:
    # (plain classes, not dataclasses: the dataclasses module imports inspect, and
    # importing both took ~5 ms of an unchanged re-publish)
    __slots__ = ("digest", "size", "file", "data")

    def __init__(self, digest: str, size: int, file: LocalFile, data: bytes | None = None):
        self.digest = digest
        self.size = size
        self.file = file  # one file holding this content
        self.data = data  # its bytes, when they were read for hashing and are still wanted


class _Run:
    __slots__ = ("http", "space", "type", "build", "progress", "sent", "cancelled")

    def __init__(self, http: WireClient, space: str, type: str, build: str, progress: Any):
        self.http = http
        self.space = space
        self.type = type
        self.build = build
        self.progress = progress
        self.sent = _Counter()
        self.cancelled = threading.Event()

    @property
    def params(self) -> dict[str, str]:
        return {"space": self.space, "type": self.type, "build": self.build}


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _retry_after(resp: WireResponse) -> float | None:
    from tether.hubclient.retry import retry_after

    return retry_after(resp, MAX_RETRY_AFTER)


def _sleep(attempt: int, hint: float | None = None) -> None:
    delay = hint if hint is not None else BACKOFF * (2 ** (attempt - 1))
    time.sleep(delay * (0.75 + random.random() / 2) if hint is None else delay)


def _hub_error(resp: WireResponse) -> Exception:
    from tether.hubclient.errors import HubError, problem_from as _problem_from

    return HubError(resp.status_code, _problem_from(resp))


def _transport_error(run_or_http: Any, exc: Exception) -> Exception:
    from tether.hubclient.errors import TransportError

    http = getattr(run_or_http, "http", run_or_http)
    base = str(getattr(http, "base_url", "")).rstrip("/")
    text = str(exc) or type(exc).__name__
    return TransportError(f"cannot reach hub at {base}: {text}", url=base, tls="[SSL" in text)


def _is_digest_mismatch(exc: Exception) -> bool:
    status = getattr(exc, "status", None)
    if status not in (400, 422):
        return False
    problem = getattr(exc, "problem", {}) or {}
    slug = getattr(exc, "slug", "")
    if "digest" in slug and ("mismatch" in slug or "match" in slug):
        return True
    if problem.get("digest_mismatch"):
        return True
    text = str(getattr(exc, "message", "") or exc).lower()
    return "digest" in text and "match" in text


def _request(
    run_or_http: Any,
    method: str,
    url: str,
    *,
    body: Callable[[], Any] | None = None,
    ok: Iterable[int] = (),
    on_transport_retry: Callable[[], None] | None = None,
    **kw: Any,
) -> WireResponse:
    """One request with retries; returns a 2xx response (or one whose status is in ``ok``).

    ``body`` builds a fresh request body for each try (a generator cannot be
    replayed). Raises HubError for other statuses, TransportError when the
    hub stays unreachable.
    """
    from tether.hubclient.transport import WireError

    http = getattr(run_or_http, "http", run_or_http)
    ok = set(ok)
    for attempt in range(1, MAX_TRIES + 1):
        last = attempt == MAX_TRIES
        cancelled = getattr(run_or_http, "cancelled", None)
        if cancelled is not None and cancelled.is_set():
            raise PublishError("cancelled")
        kwargs = dict(kw)
        if body is not None:
            kwargs["content"] = body()
        try:
            resp = http.request(method, url, **kwargs)
        except WireError as exc:
            if last:
                raise _transport_error(run_or_http, exc) from None
            if on_transport_retry is not None:
                on_transport_retry()
            _sleep(attempt)
            continue
        if resp.status_code in RETRY_STATUSES and not last:
            _sleep(attempt, _retry_after(resp))
            continue
        if resp.is_success or resp.status_code in ok:
            return resp
        raise _hub_error(resp)
    raise AssertionError("unreachable")  # pragma: no cover


def _json(resp: WireResponse) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise PublishError(f"the hub sent an unexpected {resp.status_code} answer to {resp.url_path}")
    return data


def _read_exact(f: LocalFile, start: int, end: int, run: _Run | None) -> Iterator[bytes]:
    """Stream bytes ``start..end`` of ``f`` in 1 MiB pieces; FileChangedError if it shrank."""
    with open(f.abs_path, "rb", buffering=0) as fh:
        if start:
            fh.seek(start)
        left = end - start
        while left > 0:
            if run is not None and run.cancelled.is_set():
                raise PublishError("cancelled")
            data = fh.read(min(READ_CHUNK, left))
            if not data:
                raise FileChangedError(f.rel_path)
            left -= len(data)
            if run is not None:
                run.sent.add(len(data))
                run.progress.advance(len(data))
            yield data


def _batch_bytes(blobs: Sequence[_Blob]) -> bytes:
    """Frames for ``blobs`` whose bytes are all in memory, as one body. The blobs let
    go of their bytes: the body holds them now (one copy in memory, not two)."""
    parts: list[bytes] = []
    for b in blobs:
        parts.append(frame_header(b.digest, b.size))
        parts.append(b.data)  # type: ignore[arg-type]
    body = b"".join(parts)
    for b in blobs:
        b.data = None
    return body


def _counted(body: bytes, n: int, run: _Run) -> bytes:
    run.sent.add(n)
    run.progress.advance(n)
    return body


def _batch_body(blobs: Sequence[_Blob], run: _Run) -> Iterator[bytes]:
    """Frames for ``blobs``, coalesced into ~1 MiB writes."""
    buf = bytearray()
    for b in blobs:
        if run.cancelled.is_set():
            raise PublishError("cancelled")
        buf += frame_header(b.digest, b.size)
        if b.data is not None:
            buf += b.data
            run.sent.add(b.size)
            run.progress.advance(b.size)
        elif b.size:
            with open(b.file.abs_path, "rb", buffering=0) as fh:
                data = fh.read(b.size)
                # a short read on a regular file means it shrank; read on to be sure
                while len(data) < b.size:
                    more = fh.read(b.size - len(data))
                    if not more:
                        raise FileChangedError(b.file.rel_path)
                    data += more
            buf += data
            run.sent.add(b.size)
            run.progress.advance(b.size)
        if len(buf) >= READ_CHUNK:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def _which_changed(blobs: Sequence[_Blob]) -> FileChangedError:
    for b in blobs:
        try:
            if hash_file(b.file) != b.digest:
                return FileChangedError(b.file.rel_path)
        except FileChangedError as exc:
            return exc
        except OSError:
            return FileChangedError(b.file.rel_path)
    return FileChangedError(blobs[0].file.rel_path if len(blobs) == 1 else "a file")


def _upload_batch(run: _Run, blobs: Sequence[_Blob]) -> None:
    length = batch_length([(b.digest, b.size) for b in blobs])
    if all(b.data is not None for b in blobs):
        ready, n = _batch_bytes(blobs), sum(b.size for b in blobs)
        body: Callable[[], Any] = lambda: _counted(ready, n, run)  # the same bytes on every try
    else:
        body = lambda: _batch_body(blobs, run)  # read the files again on every try
    try:
        resp = _request(
            run,
            "POST",
            "/api/v1/blobs/batch",
            params=run.params,
            body=body,
            headers={"Content-Type": BATCH_CONTENT_TYPE, "Content-Length": str(length)},
        )
    except Exception as exc:
        if _is_digest_mismatch(exc):
            raise _which_changed(blobs) from None
        raise
    stored = set(_json(resp).get("stored") or ())
    lost = [b for b in blobs if b.digest not in stored]
    if lost:
        raise PublishError(f"the hub did not store {len(lost)} of {len(blobs)} uploaded blobs (first: {lost[0].file.rel_path})")


def _upload_single(run: _Run, blob: _Blob) -> None:
    try:
        _request(
            run,
            "PUT",
            f"/api/v1/blobs/sha256/{blob.digest}",
            params=run.params,
            body=lambda: _read_exact(blob.file, 0, blob.size, run),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
        )
    except Exception as exc:
        if _is_digest_mismatch(exc):
            raise FileChangedError(blob.file.rel_path) from None
        raise


def _upload_resumable(run: _Run, blob: _Blob, chunk: int | None = None,
                      digest_later: Callable[[], str] | None = None) -> bool:
    """Upload a large blob in chunks; a broken connection resumes from the hub's offset.

    With ``digest_later`` the upload starts before the file is hashed (``blob.digest``
    is unused) and the digest, from ``digest_later()``, is declared after the last
    byte. The hub allows that only for a size the space holds no blob of; if it
    refuses, nothing is sent and the answer is False.
    """
    from tether.hubclient.errors import HubError
    from tether.hubclient.transport import WireError

    chunk = chunk or CHUNK_SIZE
    start_body: dict[str, Any] = {**run.params, "size": blob.size}
    if digest_later is None:
        start_body["digest"] = blob.digest
    try:
        created = _json(_request(run, "POST", "/api/v1/uploads", json=start_body))
    except HubError as exc:
        # size-known (the hub may have it), or a hub that wants a digest first (older hubs: 422)
        if digest_later is not None and (exc.slug in ("size-known", "digest-required") or exc.status == 422):
            return False
        raise
    upload_id = str(created.get("id") or "")
    if not upload_id:
        raise PublishError("the hub did not return an upload id")
    url = f"/api/v1/uploads/{_q(upload_id)}"
    offset = int(created.get("offset") or 0)
    failures = 0

    def resync(attempt: int, hint: float | None = None) -> int | None:
        """Where the hub's copy stands; None if the upload is done (its answer was lost)."""
        _sleep(attempt, hint)
        try:
            state = _json(_request(run, "GET", url))
        except HubError as exc:
            if exc.status != 404:
                raise
            # Gone: finished while its answer was lost on the way, or expired. The blob tells.
            digest = blob.digest or (digest_later() if digest_later is not None else "")
            if digest and digest not in _ask_missing(run.http, run.params, [digest])[0]:
                return None
            raise
        return int(state.get("offset") or 0)

    while True:
        if run.cancelled.is_set():
            raise PublishError("cancelled")
        if not 0 <= offset <= blob.size:
            raise PublishError(f"the hub reports offset {offset} outside 0..{blob.size} for {blob.file.rel_path}")
        # at offset == size an empty PUT asks the hub to finish the upload
        start, end = plan_chunks(blob.size, offset, chunk)[0] if offset < blob.size else (offset, offset)
        params: dict[str, Any] = {"offset": start}
        if start == blob.size and digest_later is not None:
            params["digest"] = digest_later()  # waits for the hashing to get to the end of the file
        try:
            resp = run.http.request(
                "PUT",
                url,
                params=params,
                content=_read_exact(blob.file, start, end, run),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(end - start)},
            )
        except FileChangedError:
            raise
        except WireError as exc:
            failures += 1
            if failures >= MAX_TRIES:
                raise _transport_error(run, exc) from None
            at = resync(failures)  # resume where the hub got to, not from zero
            if at is None:
                return True
            offset = at
            continue
        if resp.status_code == 409 or resp.status_code in RETRY_STATUSES:
            failures += 1
            if failures >= MAX_TRIES:
                raise _hub_error(resp)
            hint = _retry_after(resp) if resp.status_code in RETRY_STATUSES else 0.0
            at = resync(failures, hint)  # 409: our offset was wrong; ask for the right one
            if at is None:
                return True
            offset = at
            continue
        if not resp.is_success:
            err = _hub_error(resp)
            if _is_digest_mismatch(err):
                raise FileChangedError(blob.file.rel_path) from None
            raise err
        state = _json(resp)
        if state.get("complete"):
            return True
        new = int(state.get("offset") or 0)
        if new > offset:
            failures = 0
        else:
            failures += 1
            if failures >= MAX_TRIES:
                raise PublishError(f"the hub made no progress on {blob.file.rel_path} at offset {offset}")
        offset = new


def _ask_missing(http: Any, params: dict[str, str], digests: Sequence[str]) -> tuple[set[str], float]:
    missing: set[str] = set()
    lease = float("inf")
    for i in range(0, len(digests), MISSING_BATCH):
        part = list(digests[i : i + MISSING_BATCH])
        data = _json(_request(http, "POST", "/api/v1/blobs/missing", json={**params, "digests": part}))
        asked = set(part)
        missing.update(d for d in data.get("missing") or () if d in asked)
        if data.get("lease_seconds") is not None:
            lease = min(lease, float(data["lease_seconds"]))
    return missing, lease


def _upload_all(run: _Run, blobs: list[_Blob], jobs: int) -> None:
    small = [b for b in blobs if classify(b.size) == "small"]
    medium = [b for b in blobs if classify(b.size) == "medium"]
    large = [b for b in blobs if classify(b.size) == "large"]
    by_digest = {b.digest: b for b in small}
    tasks: list[tuple[Callable[..., None], Any]] = []
    for b in sorted(large, key=lambda b: -b.size):
        tasks.append((_upload_resumable, b))
    for b in sorted(medium, key=lambda b: -b.size):
        tasks.append((_upload_single, b))
    for batch in pack_batches([(b.digest, b.size) for b in small], BATCH_MAX_BYTES, BATCH_MAX_BLOBS):
        tasks.append((_upload_batch, [by_digest[d] for d, _ in batch]))
    if not tasks:
        return
    if jobs <= 1 or len(tasks) == 1:
        for fn, arg in tasks:
            fn(run, arg)
        return
    # imported where used: publishing an unchanged tree needs no threads (3 ms of start-up)
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=min(jobs, len(tasks)), thread_name_prefix="tether-up") as pool:
        futures: list[Future[None]] = [pool.submit(fn, run, arg) for fn, arg in tasks]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C: stop the workers at their next read
            run.cancelled.set()
            for f in futures:
                f.cancel()
            raise
        failed = [f for f in done if f.exception() is not None]
        if failed:
            # The first real failure; the others will only say "cancelled".
            run.cancelled.set()
            for f in futures:
                f.cancel()
            raise failed[0].exception()  # type: ignore[misc]


class _Gate:
    """The progress bar as the upload workers see it: silent until :meth:`open`
    (while hashing has the bar)."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._open = False

    def open(self) -> None:
        self._open = True

    def advance(self, n: int) -> None:
        if self._open:
            self._bar.advance(n)


MAX_IN_MEMORY = 3  # groups holding file bytes that may wait for or be in upload at once
EARLY_JOBS = 2  # large files sent while they are hashed, at once


class _Unhashed:
    """A large file being uploaded while it is hashed; the hashing hands over its digest."""

    def __init__(self, file: LocalFile, run: _Run) -> None:
        self.file = file
        self.run = run
        self.digest = ""
        self.known = threading.Event()

    def wait(self) -> str:
        while not self.known.wait(0.2):
            if self.run.cancelled.is_set():
                raise PublishError("cancelled")
        return self.digest


class _Uploader:
    """Takes groups of hashed files (see ``hash_files(on_group=...)``) and, in the
    background, asks the hub which of their digests it lacks and uploads those.

    Small files arrive with their bytes (read once, for hashing and upload); at most
    :data:`MAX_IN_MEMORY` such groups exist at a time, so memory stays bounded when
    the hub is slower than the disk. :meth:`finish` waits for every upload and, if the
    first answer is older than most of the hub's lease, asks again about the blobs it
    skipped. Used as a context manager: leaving it early cancels the uploads.
    """

    def __init__(self, run: _Run, jobs: int, trusted: dict[str, str] | None = None) -> None:
        self.run = run
        self.jobs = jobs
        self.blobs: dict[str, _Blob] = {}  # every distinct content handed over
        self.uploaded: set[str] = set()
        self.skipped: list[str] = []  # the hub had them when asked
        # file -> digest from the hash cache, taken to be on the hub without asking (the
        # commit checks; see send_assumed), and the digests so taken
        self.trusted = trusted or {}
        self.assumed: list[str] = []
        self.first_ask: float | None = None
        self.lease = float("inf")
        self.queued_bytes = 0
        self._lock = threading.Lock()
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="tether-up")
        self._futures: list[Future[None]] = []
        self._in_memory = threading.BoundedSemaphore(MAX_IN_MEMORY)
        # Large files sent before they are hashed run in a pool of their own: while they
        # wait for their digest they must not hold the workers the hashing waits for.
        self._unhashed: dict[str, _Unhashed] = {}
        self._early_pool: ThreadPoolExecutor | None = None
        self._early: list[Future[None]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.run.cancelled.set()
            with self._lock:
                for f in self._futures + self._early:
                    f.cancel()
        if self._early_pool is not None:
            self._early_pool.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def send_unhashed(self, files: list[LocalFile]) -> None:
        """Start uploading large files before they are hashed (call before hashing).

        The hub takes such an upload only when the space holds no blob of the file's
        size, so it cannot already have the content; otherwise the file goes the usual
        way once hashed (ask, then upload only if missing). Only files whose size no
        other file of the publish has: two files of one size may be one content."""
        if self.jobs <= 1 or not files:
            return
        from concurrent.futures import ThreadPoolExecutor

        self._early_pool = ThreadPoolExecutor(max_workers=EARLY_JOBS, thread_name_prefix="tether-early")
        for f in files:
            spec = self._unhashed[f.abs_path] = _Unhashed(f, self.run)
            self._early.append(self._early_pool.submit(self._send_unhashed, spec))

    def _send_unhashed(self, spec: _Unhashed) -> None:
        blob = _Blob("", spec.file.size, spec.file)
        with self._lock:
            self.queued_bytes += blob.size
        if _upload_resumable(self.run, blob, digest_later=spec.wait):
            self.uploaded.add(spec.digest)
            return
        with self._lock:
            self.queued_bytes -= blob.size
        digest = spec.wait()  # refused: ask about it and upload it like any other file
        self._ask_and_send(self.run, [self.blobs[digest]])

    def add(self, group: Group) -> None:
        """Hand over a group of hashed files (called by the hashing thread)."""
        self._raise_failure()
        new: list[_Blob] = []
        holds_bytes = False
        for f, d, data in group:
            spec = self._unhashed.get(f.abs_path)
            if spec is not None:  # already on its way: it only needed the digest
                self.blobs.setdefault(d, _Blob(d, f.size, f))
                spec.digest = d
                spec.known.set()
                continue
            if d not in self.blobs:
                if self.trusted.get(f.abs_path) == d:
                    self.blobs[d] = _Blob(d, f.size, f)
                    self.assumed.append(d)
                    continue
                if data is not None and classify(f.size) != "small":
                    data = None
                b = self.blobs[d] = _Blob(d, f.size, f, data)
                new.append(b)
                holds_bytes = holds_bytes or data is not None
        if not new:
            return
        if holds_bytes:
            self._in_memory.acquire()  # wait while too many groups hold file bytes
        self._submit(self._ask_and_send, new, release=holds_bytes, uploads=False)

    def _ask_and_send(self, run: _Run, new: list[_Blob]) -> None:
        asked_at = time.monotonic()
        missing, lease = _ask_missing(run.http, run.params, [b.digest for b in new])
        in_memory: list[_Blob] = []
        cold: list[_Blob] = []
        alone: list[_Blob] = []
        with self._lock:
            if self.first_ask is None or asked_at < self.first_ask:
                self.first_ask = asked_at
            self.lease = min(self.lease, lease)
            for b in new:
                if b.digest not in missing:
                    self.skipped.append(b.digest)
                    b.data = None
                    continue
                self.queued_bytes += b.size
                kind = classify(b.size)
                if b.data is not None:
                    in_memory.append(b)
                elif kind == "small":
                    cold.append(b)
                else:
                    alone.append(b)
        for b in alone:
            self._submit(_upload_resumable if classify(b.size) == "large" else _upload_single, b)
        for batch in _batches(cold):  # digests from the cache: the bytes come from the files
            self._submit(_upload_batch, batch)
        for batch in _batches(in_memory):
            _upload_batch(run, batch)
            self.uploaded.update(b.digest for b in batch)

    def _submit(self, fn: Callable[[_Run, Any], None], arg: Any, release: bool = False, uploads: bool = True) -> None:
        def task() -> None:
            try:
                fn(self.run, arg)
                if uploads:  # fn uploaded what arg names
                    self.uploaded.update(b.digest for b in (arg if isinstance(arg, list) else [arg]))
            finally:
                if release:
                    for b in arg:
                        b.data = None
                    self._in_memory.release()

        if self.jobs <= 1:
            task()
            return
        with self._lock:
            self._futures.append(self._pool.submit(task))

    def _raise_failure(self) -> None:
        with self._lock:
            futures = self._futures + self._early
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                self.run.cancelled.set()
                raise f.exception()  # type: ignore[misc]

    def _wait(self) -> None:
        from concurrent.futures import FIRST_EXCEPTION, wait

        while True:
            with self._lock:
                futures, self._futures = self._futures, []
            if not futures:
                return
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if not f.cancelled() and f.exception() is not None]
            if failed:
                # The first real failure; the others will only say "cancelled".
                self.run.cancelled.set()
                with self._lock:
                    for f in futures + self._futures:
                        f.cancel()
                raise failed[0].exception()  # type: ignore[misc]

    def finish(self) -> set[str]:
        """Wait for every upload; re-check what was skipped if the lease is running out."""
        from concurrent.futures import FIRST_EXCEPTION, wait

        if self._early:
            # first the early uploads: one the hub refused queues its usual upload
            done, _ = wait(self._early, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    self.run.cancelled.set()
                    raise f.exception()  # type: ignore[misc]
            wait(self._early)
        self._wait()
        skipped = self.skipped
        for _round in range(2):
            # The hub's "you have it" holds for `lease` seconds: if hashing and uploading
            # took longer than most of it, ask again about what we skipped.
            if not skipped or self.first_ask is None or time.monotonic() - self.first_ask < 0.8 * self.lease:
                break
            self.first_ask = time.monotonic()
            missing, self.lease = _ask_missing(self.run.http, self.run.params, skipped)
            blobs = [self.blobs[d] for d in skipped if d in missing]
            skipped = [d for d in skipped if d not in missing]
            _upload_all(self.run, blobs, self.jobs)
            self.uploaded.update(b.digest for b in blobs)
        return self.uploaded

    def send_assumed(self) -> set[str]:
        """The hub refused the commit for missing blobs: ask about the digests taken on
        trust, upload those it lacks; every digest uploaded."""
        assumed, self.assumed = self.assumed, []
        missing, _ = _ask_missing(self.run.http, self.run.params, assumed)
        blobs = [self.blobs[d] for d in assumed if d in missing]
        _upload_all(self.run, blobs, self.jobs)
        self.uploaded.update(b.digest for b in blobs)
        return self.uploaded


def _unhashed_candidates(pairs: list[tuple[LocalFile, str]], hits: dict[str, str]) -> list[LocalFile]:
    """Large files with no cached digest and a size no other file here has, largest first."""
    unique = {f.abs_path: f for f, _ in pairs}
    sizes = Counter(f.size for f in unique.values())
    return sorted((f for p, f in unique.items() if p not in hits and f.size >= UNHASHED_MIN and sizes[f.size] == 1),
                  key=lambda f: -f.size)


def _batches(blobs: list[_Blob]) -> list[list[_Blob]]:
    by_digest = {b.digest: b for b in blobs}
    return [[by_digest[d] for d, _ in batch]
            for batch in pack_batches([(b.digest, b.size) for b in blobs], BATCH_MAX_BYTES, BATCH_MAX_BLOBS)]


def _resolve_space(http: Any, space: str | None) -> str:
    if space:
        return space
    env = os.environ.get(ENV_SPACE, "").strip()
    if env:
        return env
    from tether.hubclient.errors import HubError

    scopes = None
    try:
        data = _json(_request(http, "GET", "/api/v1/tokens/self"))
        scopes = data.get("scopes")
    except HubError as exc:
        if exc.status not in (400, 404):
            raise
    found = space_from_scopes(scopes)
    if found is None:
        raise PublishError(
            "which space? say --space SPACE (or set TETHER_SPACE)",
            exit_code=2,
            hint="the space can be guessed only from a token with exactly one publish: scope",
        )
    return found


class _BlobsMissing(Exception):
    """The hub refused a commit because blobs it names were never uploaded."""


def _manifest(pairs: list[tuple[LocalFile, str]], hashed: dict[str, str]) -> list[dict[str, Any]]:
    return [{"path": dest, "digest": hashed[f.abs_path], "size": f.size, "mode": f.mode} for f, dest in pairs]


def _commit_body(manifest: list[dict[str, Any]], public: bool | None, latest: bool) -> bytes:
    return json.dumps({"files": manifest, "public": public, "latest": latest}, ensure_ascii=False,
                      separators=(",", ":")).encode()


def _manifest_digest(manifest: list[dict[str, Any]]) -> str:
    return manifest_digest([(e["path"], e["digest"], e["size"], e["mode"]) for e in manifest])


def _commit(http: Any, space: str, build_type: str, build: str, manifest: list[dict[str, Any]] | bytes | None,
            public: bool | None, latest: bool = False, quiet_missing: bool = False,
            same_as: str | None = None) -> dict[str, Any] | None:
    """Commit the build: by the manifest's digest ``same_as`` first if given, then (if the
    hub knows no build with it) by the whole ``manifest`` (the entries, or the request body
    ``_commit_body`` made of them); with no ``manifest``, None then."""
    from tether.hubclient.errors import HubError

    retried = False

    def note_retry() -> None:
        nonlocal retried
        retried = True

    url = f"/api/v1/publish/{_q(space)}/{_q(build_type)}/{_q(build)}"
    try:
        if same_as is not None:
            # An unchanged tree: name the manifest by its digest; the hub copies the
            # earlier build that has it, or says it knows none and gets the whole manifest.
            try:
                return _json(_request(http, "POST", url, json={"same_as": same_as, "public": public,
                                                               "latest": latest}, on_transport_retry=note_retry))
            except HubError as exc:
                if exc.status != 404 or exc.slug != "unknown-manifest":
                    raise
                if manifest is None:
                    return None
        assert manifest is not None
        body = _commit_body(manifest, public, latest) if isinstance(manifest, list) else manifest
        resp = _request(http, "POST", url, content=body, headers={"Content-Type": "application/json"},
                        on_transport_retry=note_retry)
    except HubError as exc:
        if exc.status == 409:
            hint = (
                "an earlier try of this commit lost its answer and may have published it: check the build's URL"
                if retried
                else None
            )
            raise _build_exists(build, hint) from None
        if exc.status == 400 and quiet_missing and exc.slug == "missing-blobs":
            raise _BlobsMissing() from None
        if exc.status == 400:
            raise PublishError(f"the hub refused the build: {exc.message}", exit_code=2, status=400) from None
        raise
    return _json(resp)


def _build_exists(build: str, hint: str | None = None) -> PublishError:
    return PublishError(f"build {build} already exists; publish under a new id", exit_code=1, hint=hint, status=409)


# -- the flow -------------------------------------------------------------------------


def publish(
    hub_url: str | None,
    token: str | None,
    space: str | None,
    type: str,
    build: str,
    globs: list[str],
    root: str | Path = ".",
    strip: int = 0,
    jobs: int = DEFAULT_JOBS,
    public: bool | None = None,
    dry_run: bool = False,
    progress: bool = False,
    *,
    latest: bool = False,
    client: HubClient | ClientConfig | Callable[[], HubClient | ClientConfig] | None = None,
    ca_bundle: str | None = None,
    cache: HashCache | str | Path | bool | None = None,
    handler: Handler | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Publish the files matching ``globs`` under ``root`` as build ``build``.

    Returns the summary (files, bytes, bytes_hashed, bytes_sent,
    deduplicated, uploaded, seconds, space, type, build, path, url).
    Raises InputError (bad local input, exit 2), PublishError (with its
    ``exit_code``), or tether.hubclient.errors' HubError / TransportError.

    ``client`` takes the hub, token and TLS settings from a HubClient (its URL,
    token, timeout and TLS context) or a ClientConfig (hub, token, CA bundle),
    or from a function returning either, called once the local input has passed
    its checks, instead of ``hub_url``/``token``/``ca_bundle``;
    ``cache`` is a HashCache, a path for one, False for none, or None for the
    default (``$XDG_CACHE_HOME/tether/hashes.sqlite``); ``handler`` answers the
    requests instead of the hub (see :class:`tether.hubclient.transport.WireClient`; for tests).
    """
    t0 = time.monotonic()
    try:
        validate_type(type)
        validate_build_id(build)
    except PathError as exc:
        raise InputError(str(exc)) from None
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, not {jobs}")

    files = expand(Path(root), list(globs))

    own_cache = not isinstance(cache, HashCache)
    hc: HashCache | None
    if cache is False:
        hc = None
    elif isinstance(cache, HashCache):
        hc = cache
    else:
        hc = HashCache(cache if cache not in (None, True) else None)  # type: ignore[arg-type]
    # A tree published from here before, unchanged since (every path, size, mtime, ctime, inode and
    # mode the same), has the manifest it had then: it is committed by that manifest's digest
    # without planning its paths, looking up its digests or building its manifest again.
    tree: tuple[bytes, bytes] | None = None
    known: str | None = None
    published_before = False  # this tree (root, patterns, strip) was published from here before
    try:
        if hc is not None and hc.usable and not dry_run:
            tree = (tree_key(str(root), list(globs), strip), tree_signature(files))
            stored = hc.get_tree(tree[0])
            published_before = stored is not None
            known = stored[1] if stored is not None and stored[0] == tree[1] else None
        pairs = plan(files, strip) if known is None else []
    except BaseException:
        if own_cache and hc is not None:
            hc.close()
        raise
    total_bytes = sum(f.size for f in files)
    summary: dict[str, Any] = {
        "files": len(files),
        "bytes": total_bytes,
        "bytes_hashed": 0,
        "bytes_sent": 0,
        "deduplicated": 0,
        "uploaded": 0,
        "seconds": 0.0,
        "space": space or os.environ.get(ENV_SPACE) or None,
        "type": type,
        "build": build,
        "path": None,
        "url": None,
    }
    bar: Any = _RichProgress() if progress else _NoProgress()

    def hash_all(on_group: Callable[[Group], None] | None = None, hits: dict[str, str] | None = None,
                 defer_cache: bool = False) -> HashResult:
        return hash_files(
            [f for f, _ in pairs],
            hc,
            jobs,
            on_bytes=bar.advance,
            on_plan=lambda total: bar.phase("hashing", total),
            on_group=on_group,
            hits=hits,
            defer_cache=defer_cache,
        )

    if dry_run:
        try:
            hashed = hash_all()
        finally:
            bar.close()
            if own_cache and hc is not None:
                hc.close()
        summary["bytes_hashed"] = hashed.bytes_hashed
        summary["dry_run"] = True
        summary["manifest"] = [
            {"path": dest, "digest": hashed[f.abs_path], "size": f.size, "mode": f.mode, "source": f.rel_path}
            for f, dest in pairs
        ]
        summary["seconds"] = round(time.monotonic() - t0, 3)
        return summary

    try:
        if callable(client):
            client = client()  # a factory: resolve the hub only now that the local input is known good
        verify = None
        if hasattr(client, "_http"):  # a HubClient
            hub_url, token, timeout, verify = client.hub_url, client.token, client.timeout, client.ssl_context
        elif client is not None:  # a ClientConfig
            hub_url, token, ca_bundle = client.require_hub(), client.token, client.ca_bundle
        if not hub_url:
            from tether.hubclient.config import NO_HUB

            raise NO_HUB
        # tether.hubclient.transport, not httpx: its import and set-up were a third of an unchanged re-publish
        from tether import __version__
        from tether.hubclient.errors import HubError
        from tether.hubclient.transport import WireClient, tls_context

        headers = {"User-Agent": f"tether/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if verify is None:
            verify = tls_context(hub_url, ca_bundle)
        try:
            http = WireClient(hub_url, headers=headers, timeout=timeout, verify=verify, handler=handler)
        except ValueError as exc:  # a hub or proxy URL it cannot use
            raise PublishError(str(exc), exit_code=2,
                               hint="check --hub / TETHER_HUB and the http(s)_proxy variables") from None
    except BaseException:
        bar.close()
        if own_cache and hc is not None:
            hc.close()
        raise
    try:
        space = _resolve_space(http, space)
        summary["space"] = space
        run = _Run(http, space, type, build, _Gate(bar))
        result = None
        uploaded: set[str] = set()
        hashed = HashResult()
        if known is not None:
            result = _commit(http, space, type, build, None, public, latest, same_as=known)
            if result is None:  # this hub (or space) has no build with that manifest
                pairs = plan(files, strip)
        hits = hc.get_many(f for f, _ in pairs) if hc is not None and result is None else {}
        # A tree published from here before, partly changed: the unchanged files' contents
        # are most likely on the hub, so only the changed files' digests are asked about and
        # the commit checks the rest (if it finds some missing, they are asked about and
        # sent, and the commit is made again). 10,000 files, 100 changed: one question about
        # 100 digests instead of 10,000.
        trust = published_before and bool(hits)
        if hits and len(hits) == len({f.abs_path for f, _ in pairs}):
            # Every digest is in the hash cache, so this tree was most likely published
            # before: commit straight away, first by the manifest's digest alone. The hub
            # checks in the commit's own transaction that every blob exists; only if some
            # are missing do we ask and upload.
            hashed = HashResult(hits)
            hashed.settled = True
            manifest = _manifest(pairs, hashed)
            try:
                # (by its digest only if the tree's remembered digest was not just refused)
                result = _commit(http, space, type, build, manifest, public, latest, quiet_missing=True,
                                 same_as=_manifest_digest(manifest) if known is None else None)
            except _BlobsMissing:
                result = None
                trust = False  # the hub lacks some of what the cache knows: ask about everything
        if result is None:
            # Hashing and uploading overlap: each group of digests is asked about and its
            # missing blobs are sent (small ones from the bytes just hashed) while the
            # next group is read.
            saver: threading.Thread | None = None
            try:
                with _Uploader(run, jobs, trusted=hits if trust else None) as up:
                    up.send_unhashed(_unhashed_candidates(pairs, hits))
                    hashed = hash_all(up.add, hits, defer_cache=True)
                    bar.phase("uploading", max(up.queued_bytes - run.sent.value, 0))
                    run.progress.open()
                    # the commit's body, made while the last uploads are still under way
                    manifest = _manifest(pairs, hashed)
                    body = _commit_body(manifest, public, latest)
                    uploaded = up.finish()
                # the new digests go into the hash cache while the hub commits (the cache is
                # written from one thread at a time: this one is joined before it is used again)
                if hc is not None:
                    saver = threading.Thread(target=hashed.save, args=(hc,), name="tether-cache")
                    saver.start()
                if up.assumed:
                    try:
                        result = _commit(http, space, type, build, body, public, latest, quiet_missing=True)
                    except _BlobsMissing:
                        uploaded = up.send_assumed()
                if result is None:
                    result = _commit(http, space, type, build, body, public, latest)
            finally:
                if saver is not None:
                    saver.join()
                if hc is not None:
                    hashed.save(hc)  # if an upload failed: the digests hold, a retry need not hash them (else a no-op)
        if tree is not None and known is None and hashed.settled:
            # every digest is in the hash cache now: the next publish of this unchanged tree
            # can skip straight to the commit
            hc.put_tree(tree[0], tree[1], _manifest_digest(manifest))  # type: ignore[union-attr]
    except HubError as exc:
        if exc.slug == "build-exists":  # said before anything was sent (blobs/missing, uploads)
            raise _build_exists(build) from None
        raise
    finally:
        bar.close()
        if own_cache and hc is not None:
            hc.close()
        http.close()

    summary["bytes_hashed"] = hashed.bytes_hashed
    summary.update(
        {
            "bytes_sent": run.sent.value,
            "uploaded": len(uploaded),
            "deduplicated": len(files) - len(uploaded),
            "space": result.get("space", space),
            "type": result.get("type", type),
            "build": result.get("build", build),
            "path": result.get("path"),
            "url": result.get("url"),
            "same_as": result.get("same_as"),  # the earlier build whose files the hub copied, if it did
            "seconds": round(time.monotonic() - t0, 3),
        }
    )
    return summary


__all__ = [
    "BATCH_MAX_BLOBS",
    "BATCH_MAX_BYTES",
    "CHUNK_SIZE",
    "MAX_TRIES",
    "MEDIUM_MAX",
    "MISSING_BATCH",
    "SMALL_MAX",
    "FileChangedError",
    "InputError",
    "PublishError",
    "batch_length",
    "classify",
    "decode_frames",
    "encode_frames",
    "frame_header",
    "human_bytes",
    "pack_batches",
    "plan_chunks",
    "publish",
    "space_from_scopes",
    "summary_line",
]
