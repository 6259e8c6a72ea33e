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

The modules around this one: the order of the questions to the hub is decided by
:class:`tether.publish.plan.Negotiation` (this module's :func:`publish` drives it), what
is sent how by the rest of :mod:`tether.publish.plan`; the batch body format is
:mod:`tether.publish.frames`; the requests, retries and upload workers are
:mod:`tether.publish.uploads`; the progress bar and the summary line are
:mod:`tether.publish.progress`. The names they had here are still importable from here.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.publish.core import (
    UNHASHED_MIN,
    PathError,
    manifest_digest,
    validate_build_id,
    validate_type,
)
from tether.publish.files import (
    FileChangedError,
    Group,
    HashCache,
    HashResult,
    InputError,
    expand,
    hash_files,
    plan,
    tree_key,
    tree_signature,
)
from tether.publish.frames import batch_length, decode_frames, encode_frames, frame_header
from tether.publish.plan import (
    BATCH_MAX_BLOBS,
    BlobsMissing,
    Cached,
    Commit,
    Committed,
    Done,
    LookUpCache,
    Negotiation,
    SendAssumed,
    Sent,
    UnknownManifest,
    Upload,
    BATCH_MAX_BYTES,
    CHUNK_SIZE,
    MEDIUM_MAX,
    MISSING_BATCH,
    SMALL_MAX,
    Limits,
    classify,
    pack_batches,
    plan_chunks,
)
from tether.publish.progress import Gate, NoProgress, RichProgress, human_bytes, summary_line
from tether.publish.uploads import (
    PUBLISH_RETRY,
    PublishError,
    Run,
    _q,
    Uploader,
    json_answer,
    request,
    unhashed_candidates,
)

if TYPE_CHECKING:
    from tether.hubclient.config import ClientConfig
    from tether.hubclient.hub import Hub as HubClient
    from tether.hubclient.retry import RetryPolicy
    from tether.hubclient.transport import Handler
    from tether.publish.files import LocalFile

KiB = 1 << 10
MiB = 1 << 20

DEFAULT_JOBS = 8

# The retry policy (uploads.PUBLISH_RETRY) and the upload sizes (plan.Limits) of a
# publish, as numbers read when a publish starts: tests change them here.
MAX_TRIES = PUBLISH_RETRY.tries
BACKOFF = PUBLISH_RETRY.backoff  # seconds, doubled per try, with jitter
MAX_RETRY_AFTER = PUBLISH_RETRY.retry_after_cap
RETRY_STATUSES = PUBLISH_RETRY.statuses

ENV_SPACE = "TETHER_SPACE"


def _limits() -> Limits:
    return Limits(small_max=SMALL_MAX, medium_max=MEDIUM_MAX, chunk_size=CHUNK_SIZE, batch_max_bytes=BATCH_MAX_BYTES,
                  batch_max_blobs=BATCH_MAX_BLOBS, unhashed_min=UNHASHED_MIN, missing_batch=MISSING_BATCH)


def _retry() -> RetryPolicy:
    return PUBLISH_RETRY._replace(tries=MAX_TRIES, backoff=BACKOFF, retry_after_cap=MAX_RETRY_AFTER,
                                  statuses=RETRY_STATUSES)


def space_from_scopes(scopes: Sequence[str] | None) -> str | None:
    """The space of the token's only ``publish:`` scope, or None (none, or several spaces)."""
    spaces = set()
    for s in scopes or ():
        kind, _, rest = str(s).strip().partition(":")
        if kind.lower() != "publish" or not rest:
            continue
        spaces.add(rest.split(":", 1)[0].split("/", 1)[0])
    return spaces.pop() if len(spaces) == 1 else None


def _resolve_space(run: Run, space: str | None) -> str:
    if space:
        return space
    env = os.environ.get(ENV_SPACE, "").strip()
    if env:
        return env
    from tether.hubclient.errors import HubError

    scopes = None
    try:
        data = json_answer(request(run, "GET", "/api/v1/tokens/self", cancellable=False))
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


def _manifest(pairs: list[tuple[LocalFile, str]], hashed: dict[str, str]) -> list[dict[str, Any]]:
    return [{"path": dest, "digest": hashed[f.abs_path], "size": f.size, "mode": f.mode} for f, dest in pairs]


def _commit_body(manifest: list[dict[str, Any]], public: bool | None, latest: bool) -> bytes:
    return json.dumps({"files": manifest, "public": public, "latest": latest}, ensure_ascii=False,
                      separators=(",", ":")).encode()


def _manifest_digest(manifest: list[dict[str, Any]]) -> str:
    return manifest_digest([(e["path"], e["digest"], e["size"], e["mode"]) for e in manifest])


def _commit(run: Run, step: Commit, manifest: list[dict[str, Any]] | bytes | None, public: bool | None,
            latest: bool = False) -> Committed | UnknownManifest | BlobsMissing:
    """Commit the build as ``step`` says: by the manifest's digest ``step.same_as`` first if
    given, then (if the hub knows no build with it, and ``step.manifest``) by the whole
    ``manifest`` (the entries, or the request body ``_commit_body`` made of them)."""
    from tether.hubclient.errors import HubError

    retried = False

    def note_retry() -> None:
        nonlocal retried
        retried = True

    url = f"/api/v1/publish/{_q(run.space)}/{_q(run.type)}/{_q(run.build)}"
    try:
        if step.same_as is not None:
            # An unchanged tree: name the manifest by its digest; the hub copies the
            # earlier build that has it, or says it knows none and gets the whole manifest.
            try:
                return Committed(json_answer(request(run, "POST", url, json={"same_as": step.same_as, "public": public,
                                                                              "latest": latest},
                                                     on_transport_retry=note_retry, cancellable=False)))
            except HubError as exc:
                if exc.status != 404 or exc.slug != "unknown-manifest":
                    raise
                if not step.manifest:
                    return UnknownManifest()
        assert manifest is not None
        body = _commit_body(manifest, public, latest) if isinstance(manifest, list) else manifest
        resp = request(run, "POST", url, content=body, headers={"Content-Type": "application/json"},
                       on_transport_retry=note_retry, cancellable=False)
    except HubError as exc:
        if exc.status == 409:
            hint = (
                "an earlier try of this commit lost its answer and may have published it: check the build's URL"
                if retried
                else None
            )
            raise _build_exists(run.build, hint) from None
        if exc.status == 400 and step.expect_missing and exc.slug == "missing-blobs":
            return BlobsMissing()
        if exc.status == 400:
            raise PublishError(f"the hub refused the build: {exc.message}", exit_code=2, status=400) from None
        raise
    return Committed(json_answer(resp))


def _build_exists(build: str, hint: str | None = None) -> PublishError:
    return PublishError(f"build {build} already exists; publish under a new id", exit_code=1, hint=hint, status=409)


# -- the flow -------------------------------------------------------------------------


def publish(    hub_url: str | None,
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
    bar: Any = RichProgress() if progress else NoProgress()

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
        run = Run(http, "", type, build, Gate(bar), _limits(), _retry())
        space = run.space = _resolve_space(run, space)
        summary["space"] = space
        uploaded: set[str] = set()
        hashed = HashResult()
        manifest: list[dict[str, Any]] | None = None
        body: bytes | None = None  # the manifest as the commit's request body, once made
        up: Uploader | None = None
        saver: threading.Thread | None = None
        uploading = False
        # What to ask the hub, in which order (see plan.Negotiation): this loop does what
        # each step says and tells the negotiation how it went.
        talks = Negotiation(remembered=known, published_before=published_before)
        step = talks.next_step()
        try:
            while not isinstance(step, Done):
                outcome: Any
                if isinstance(step, Commit):
                    outcome = _commit(run, step, body if body is not None else manifest, public, latest)
                elif isinstance(step, LookUpCache):
                    if known is not None:  # this hub (or space) has no build with that manifest
                        pairs = plan(files, strip)
                    hits = hc.get_many(f for f, _ in pairs) if hc is not None else {}
                    # Every digest in the hash cache: this tree was most likely published before,
                    # so the commit comes first, by the manifest's digest alone if it can. The hub
                    # checks in the commit's own transaction that every blob exists; only if some
                    # are missing do we ask and upload. A tree partly changed: only the changed
                    # files' digests are asked about, the commit checks the rest (10,000 files,
                    # 100 changed: one question about 100 digests instead of 10,000).
                    distinct = len({f.abs_path for f, _ in pairs})
                    digest = None
                    if hits and len(hits) == distinct:
                        hashed = HashResult(hits)
                        hashed.settled = True
                        manifest = _manifest(pairs, hashed)
                        digest = _manifest_digest(manifest) if known is None else None
                    outcome = Cached(len(hits), distinct, digest)
                elif isinstance(step, Upload):
                    # Hashing and uploading overlap: each group of digests is asked about and
                    # its missing blobs are sent (small ones from the bytes just hashed) while
                    # the next group is read.
                    uploading = True
                    with Uploader(run, jobs, trusted=hits if step.trust else None) as up:
                        up.send_unhashed(unhashed_candidates(pairs, hits, run.limits))
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
                    outcome = Sent(assumed=bool(up.assumed))
                elif isinstance(step, SendAssumed):
                    assert up is not None
                    uploaded = up.send_assumed()
                    outcome = Sent(assumed=False)
                else:  # pragma: no cover
                    raise AssertionError(step)
                step = talks.handle(outcome)
        finally:
            if saver is not None:
                saver.join()
            if uploading and hc is not None:
                hashed.save(hc)  # if an upload failed: the digests hold, a retry need not hash them (else a no-op)
        result = step.result
        if tree is not None and known is None and hashed.settled:
            # every digest is in the hash cache now: the next publish of this unchanged tree
            # can skip straight to the commit
            hc.put_tree(tree[0], tree[1], _manifest_digest(manifest))  # type: ignore[union-attr, arg-type]
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
