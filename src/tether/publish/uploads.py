"""The upload workers of a publish: requests with retries, batch bodies, streamed and
resumable uploads, and the :class:`Uploader` that asks the hub which blobs it lacks
while the files are hashed and sends those in parallel.

What to send and in which order is decided in :mod:`tether.publish.plan` (sizes in a
:class:`~tether.publish.plan.Limits`); the bytes of a batch are framed by
:mod:`tether.publish.frames`. The flow that drives this is :mod:`tether.publish.client`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

from tether.hubclient.retry import RetryPolicy
from tether.publish import plan
from tether.publish.files import READ_CHUNK, FileChangedError, Group, LocalFile, hash_file
from tether.publish.frames import batch_length, frame_header
from tether.publish.plan import (
    DEFAULT_LIMITS,
    Limits,
    classify,
    lease_running_out,
    next_chunk,
    pack_batches,
    upload_tasks,
)

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from tether.hubclient.transport import WireClient, WireResponse

BATCH_CONTENT_TYPE = "application/x-tether-blobs"


class PublishError(Exception):
    """Publishing failed; ``exit_code`` follows DESIGN.md (1 no, 2 usage, 3 runtime, 4 auth)."""

    def __init__(self, message: str, exit_code: int = 3, hint: str | None = None, status: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.hint = hint
        self.status = status


PUBLISH_RETRY = RetryPolicy(tries=5, backoff=0.5, jitter=0.5, methods=None,
                            statuses=frozenset({429, 502, 503, 504}), retry_after_cap=60.0)
"""How a publish retries (the one :class:`~tether.hubclient.retry.RetryPolicy`, with
publish's numbers): every method, since each of its requests may be repeated (a blob is
stored once whatever its tries, a commit that lost its answer gets 409 build-exists),
five tries in all, 0.5 s doubled with ±25% jitter, or the hub's Retry-After up to 60 s;
429 as well as 502-504."""


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


class Run:
    """One publish as the workers see it: the connection, where the build goes, its
    progress, its sizes and retry policy, the bytes sent, and whether it was cancelled."""

    __slots__ = ("http", "space", "type", "build", "progress", "sent", "cancelled", "limits", "retry")

    def __init__(self, http: WireClient, space: str, type: str, build: str, progress: Any,
                 limits: Limits = DEFAULT_LIMITS, retry: RetryPolicy = PUBLISH_RETRY):
        self.http = http
        self.space = space
        self.type = type
        self.build = build
        self.progress = progress
        self.sent = _Counter()
        self.cancelled = threading.Event()
        self.limits = limits
        self.retry = retry

    @property
    def params(self) -> dict[str, str]:
        return {"space": self.space, "type": self.type, "build": self.build}


def _q(segment: str) -> str:
    """A URL path segment (a space, type, build or upload id), every reserved character escaped."""
    return quote(segment, safe="")


def _hub_error(resp: WireResponse) -> Exception:
    from tether.hubclient.errors import HubError, problem_from as _problem_from

    return HubError(resp.status_code, _problem_from(resp))


def _transport_error(run: Run, exc: Exception) -> Exception:
    from tether.hubclient.errors import TransportError

    base = str(getattr(run.http, "base_url", "")).rstrip("/")
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


def request(
    run: Run,
    method: str,
    url: str,
    *,
    body: Callable[[], Any] | None = None,
    ok: Iterable[int] = (),
    on_transport_retry: Callable[[], None] | None = None,
    cancellable: bool = True,
    **kw: Any,
) -> WireResponse:
    """One request with retries (``run.retry``); returns a 2xx response (or one whose
    status is in ``ok``).

    ``body`` builds a fresh request body for each try (a generator cannot be
    replayed). Raises HubError for other statuses, TransportError when the
    hub stays unreachable. ``cancellable``: refused once the run is cancelled.
    """
    from tether.hubclient.transport import WireError

    ok = set(ok)
    failed: list[BaseException] = []  # the last try's transport failure, if it had one

    def send() -> WireResponse:
        failed.clear()
        if cancellable and run.cancelled.is_set():
            raise PublishError("cancelled")
        kwargs = dict(kw)
        if body is not None:
            kwargs["content"] = body()
        try:
            return run.http.request(method, url, **kwargs)
        except WireError as exc:
            failed.append(exc)
            raise

    def on_retry(attempt: int) -> None:
        if failed and on_transport_retry is not None:
            on_transport_retry()  # (a status asking to retry means the try was not handled)

    try:
        resp = run.retry.call(method, send, status=lambda r: r.status_code, transient=WireError, on_retry=on_retry)
    except WireError as exc:
        raise _transport_error(run, exc) from None
    if resp.is_success or resp.status_code in ok:
        return resp
    raise _hub_error(resp)


def json_answer(resp: WireResponse) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise PublishError(f"the hub sent an unexpected {resp.status_code} answer to {resp.url_path}")
    return data


def _read_exact(f: LocalFile, start: int, end: int, run: Run | None) -> Iterator[bytes]:
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


def _counted(body: bytes, n: int, run: Run) -> bytes:
    run.sent.add(n)
    run.progress.advance(n)
    return body


def _batch_body(blobs: Sequence[_Blob], run: Run) -> Iterator[bytes]:
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


def _upload_batch(run: Run, blobs: Sequence[_Blob]) -> None:
    length = batch_length([(b.digest, b.size) for b in blobs])
    if all(b.data is not None for b in blobs):
        ready, n = _batch_bytes(blobs), sum(b.size for b in blobs)
        body: Callable[[], Any] = lambda: _counted(ready, n, run)  # the same bytes on every try
    else:
        body = lambda: _batch_body(blobs, run)  # read the files again on every try
    try:
        resp = request(
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
    stored = set(json_answer(resp).get("stored") or ())
    lost = [b for b in blobs if b.digest not in stored]
    if lost:
        raise PublishError(f"the hub did not store {len(lost)} of {len(blobs)} uploaded blobs (first: {lost[0].file.rel_path})")


def _upload_single(run: Run, blob: _Blob) -> None:
    try:
        request(
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


def _upload_resumable(run: Run, blob: _Blob, chunk: int | None = None,
                      digest_later: Callable[[], str] | None = None) -> bool:
    """Upload a large blob in chunks; a broken connection resumes from the hub's offset.

    With ``digest_later`` the upload starts before the file is hashed (``blob.digest``
    is unused) and the digest, from ``digest_later()``, is declared after the last
    byte. The hub allows that only for a size the space holds no blob of; if it
    refuses, nothing is sent and the answer is False.
    """
    from tether.hubclient.errors import HubError
    from tether.hubclient.transport import WireError

    chunk = chunk or run.limits.chunk_size
    retry = run.retry
    start_body: dict[str, Any] = {**run.params, "size": blob.size}
    if digest_later is None:
        start_body["digest"] = blob.digest
    try:
        created = json_answer(request(run, "POST", "/api/v1/uploads", json=start_body))
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
        retry.sleep(attempt, hint)
        try:
            state = json_answer(request(run, "GET", url))
        except HubError as exc:
            if exc.status != 404:
                raise
            # Gone: finished while its answer was lost on the way, or expired. The blob tells.
            digest = blob.digest or (digest_later() if digest_later is not None else "")
            if digest and digest not in _ask_missing(run, [digest])[0]:
                return None
            raise
        return int(state.get("offset") or 0)

    while True:
        if run.cancelled.is_set():
            raise PublishError("cancelled")
        if not 0 <= offset <= blob.size:
            raise PublishError(f"the hub reports offset {offset} outside 0..{blob.size} for {blob.file.rel_path}")
        # at offset == size an empty PUT asks the hub to finish the upload
        start, end = next_chunk(blob.size, offset, chunk)
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
            if failures >= retry.tries:
                raise _transport_error(run, exc) from None
            at = resync(failures)  # resume where the hub got to, not from zero
            if at is None:
                return True
            offset = at
            continue
        if resp.status_code in (404, 409) or retry.retries(resp.status_code):
            failures += 1
            if failures >= retry.tries:
                raise _hub_error(resp)
            hint = retry.retry_after(resp) if retry.retries(resp.status_code) else 0.0
            # 409: our offset was wrong, ask for the right one; 404: another request (on
            # another replica) finished the upload, or it expired: the resync tells which
            at = resync(failures, hint)
            if at is None:
                return True
            offset = at
            continue
        if not resp.is_success:
            err = _hub_error(resp)
            if _is_digest_mismatch(err):
                raise FileChangedError(blob.file.rel_path) from None
            raise err
        state = json_answer(resp)
        if state.get("complete"):
            return True
        new = int(state.get("offset") or 0)
        if new > offset:
            failures = 0
        else:
            failures += 1
            if failures >= retry.tries:
                raise PublishError(f"the hub made no progress on {blob.file.rel_path} at offset {offset}")
        offset = new


def _ask_missing(run: Run, digests: Sequence[str]) -> tuple[set[str], float]:
    """Which of ``digests`` the hub lacks, and how long its answer about the others holds."""
    missing: set[str] = set()
    lease = float("inf")
    step = run.limits.missing_batch
    for i in range(0, len(digests), step):
        part = list(digests[i : i + step])
        data = json_answer(request(run, "POST", "/api/v1/blobs/missing", json={**run.params, "digests": part},
                                   cancellable=False))
        asked = set(part)
        missing.update(d for d in data.get("missing") or () if d in asked)
        if data.get("lease_seconds") is not None:
            lease = min(lease, float(data["lease_seconds"]))
    return missing, lease


def _upload_all(run: Run, blobs: list[_Blob], jobs: int) -> None:
    """Upload ``blobs`` (distinct contents) as the plan says, ``jobs`` at a time."""
    by_digest = {b.digest: b for b in blobs}
    tasks: list[tuple[Callable[..., None], Any]] = []
    for kind, what in upload_tasks([(b.digest, b.size) for b in blobs], run.limits):
        if kind == "batch":
            tasks.append((_upload_batch, [by_digest[d] for d in what]))
        else:
            tasks.append((_upload_resumable if kind == "large" else _upload_single, by_digest[what]))
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


MAX_IN_MEMORY = 3  # groups holding file bytes that may wait for or be in upload at once
EARLY_JOBS = 2  # large files sent while they are hashed, at once


class _Unhashed:
    """A large file being uploaded while it is hashed; the hashing hands over its digest."""

    def __init__(self, file: LocalFile, run: Run) -> None:
        self.file = file
        self.run = run
        self.digest = ""
        self.known = threading.Event()

    def wait(self) -> str:
        while not self.known.wait(0.2):
            if self.run.cancelled.is_set():
                raise PublishError("cancelled")
        return self.digest


class Uploader:
    """Takes groups of hashed files (see ``hash_files(on_group=...)``) and, in the
    background, asks the hub which of their digests it lacks and uploads those.

    Small files arrive with their bytes (read once, for hashing and upload); at most
    :data:`MAX_IN_MEMORY` such groups exist at a time, so memory stays bounded when
    the hub is slower than the disk. :meth:`finish` waits for every upload and, if the
    first answer is older than most of the hub's lease, asks again about the blobs it
    skipped. Used as a context manager: leaving it early cancels the uploads.
    """

    def __init__(self, run: Run, jobs: int, trusted: dict[str, str] | None = None) -> None:
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
                if data is not None and classify(f.size, self.run.limits) != "small":
                    data = None
                b = self.blobs[d] = _Blob(d, f.size, f, data)
                new.append(b)
                holds_bytes = holds_bytes or data is not None
        if not new:
            return
        if holds_bytes:
            self._in_memory.acquire()  # wait while too many groups hold file bytes
        self._submit(self._ask_and_send, new, release=holds_bytes, uploads=False)

    def _ask_and_send(self, run: Run, new: list[_Blob]) -> None:
        asked_at = time.monotonic()
        missing, lease = _ask_missing(run, [b.digest for b in new])
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
                kind = classify(b.size, run.limits)
                if b.data is not None:
                    in_memory.append(b)
                elif kind == "small":
                    cold.append(b)
                else:
                    alone.append(b)
        for b in alone:
            self._submit(_upload_resumable if classify(b.size, run.limits) == "large" else _upload_single, b)
        for batch in _batches(cold, run.limits):  # digests from the cache: the bytes come from the files
            self._submit(_upload_batch, batch)
        for batch in _batches(in_memory, run.limits):
            _upload_batch(run, batch)
            self.uploaded.update(b.digest for b in batch)

    def _submit(self, fn: Callable[[Run, Any], None], arg: Any, release: bool = False, uploads: bool = True) -> None:
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
            if not skipped or self.first_ask is None or not lease_running_out(time.monotonic() - self.first_ask,
                                                                              self.lease):
                break
            self.first_ask = time.monotonic()
            missing, self.lease = _ask_missing(self.run, skipped)
            blobs = [self.blobs[d] for d in skipped if d in missing]
            skipped = [d for d in skipped if d not in missing]
            _upload_all(self.run, blobs, self.jobs)
            self.uploaded.update(b.digest for b in blobs)
        return self.uploaded

    def send_assumed(self) -> set[str]:
        """The hub refused the commit for missing blobs: ask about the digests taken on
        trust, upload those it lacks; every digest uploaded."""
        assumed, self.assumed = self.assumed, []
        missing, _ = _ask_missing(self.run, assumed)
        blobs = [self.blobs[d] for d in assumed if d in missing]
        _upload_all(self.run, blobs, self.jobs)
        self.uploaded.update(b.digest for b in blobs)
        return self.uploaded


def unhashed_candidates(pairs: list[tuple[LocalFile, str]], hits: dict[str, str],
                        limits: Limits = DEFAULT_LIMITS) -> list[LocalFile]:
    """Large files with no cached digest and a size no other file here has, largest first
    (the rule: :func:`tether.publish.plan.unhashed_candidates`)."""
    unique = {f.abs_path: f for f, _ in pairs}
    return [unique[p] for p in plan.unhashed_candidates([(p, f.size) for p, f in unique.items()], hits, limits)]


def _batches(blobs: list[_Blob], limits: Limits) -> list[list[_Blob]]:
    by_digest = {b.digest: b for b in blobs}
    return [[by_digest[d] for d, _ in batch]
            for batch in pack_batches([(b.digest, b.size) for b in blobs], limits.batch_max_bytes,
                                      limits.batch_max_blobs)]

