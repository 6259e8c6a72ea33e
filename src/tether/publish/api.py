"""HTTP routes for publishing and downloads. Thin: parsing and streaming only;
the rules live in ``publish.core`` and ``publish.service``."""

from __future__ import annotations

import asyncio
import html
import mimetypes
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import Field, WithJsonSchema

from tether.auth.deps import Caller, StrictModel, caller
from tether.auth.identities import SPACE_NAME_RE
from tether.auth.params import SpaceName, field, query_param
from tether.auth.service import AuthContext
from tether.auth.sessions import session_caller, sign_in_page
from tether.blobs import BlobNotFound
from tether.db.models import utcnow
from tether.problems import Problem, bad_request
from tether.publish.apidoc import (DOWNLOAD_RESPONSES, FILE_ENTRY, BuildId, BuildQuery, BuildType, Digest,
                                   SpaceQuery, TypeQuery, UploadId)
from tether.publish.core import BUILD_ID_RE, DIGEST_RE, TYPE_RE
from tether.publish.service import Publisher
from tether.publish.sinks import BatchSink, BlobSink, SingleFileSink, Sink

router = APIRouter()
files_router = APIRouter()
T = TypeVar("T")


def _pub(request: Request) -> Publisher:
    return request.app.state.publisher


def optional_caller(request: Request) -> AuthContext | None:
    """Downloads of public builds need no token; a token, if sent (a header, or a browser's
    session cookie from /login), must be valid."""
    if "authorization" not in request.headers:
        return session_caller(request)
    return caller(request)


BODY_PIECE = 1 << 20
BODY_AHEAD = 4  # pieces the event loop may read ahead of the thread storing them


class _Body:
    """A request body that the event loop reads ahead, in ~1 MiB pieces, for a sink.

    Receiving (on the event loop) and storing (hashing and writing, a piece at a time
    in a thread) overlap: while a thread stores one piece the loop collects the next
    ones, at most :data:`BODY_AHEAD` of them, so memory stays bounded. The server hands
    the body over in pieces of 64 KiB or less; a thread is taken once per collected
    piece, not once per 64 KiB, and never while the body is awaited."""

    def __init__(self, request: Request, piece: int = BODY_PIECE, ahead: int = BODY_AHEAD):
        self._request = request
        self._piece = piece
        self._send, self._recv = anyio.create_memory_object_stream[list[bytes]](ahead)
        self._error: Exception | None = None

    async def pump(self) -> None:
        try:
            parts: list[bytes] = []
            size = 0
            async for chunk in self._request.stream():
                if chunk:
                    parts.append(chunk)
                    size += len(chunk)
                if size >= self._piece:
                    await self._send.send(parts)  # handed over as they came: no copy
                    parts, size = [], 0
            if parts:
                await self._send.send(parts)
        except Exception as exc:  # noqa: BLE001 - the sink's to judge (its close)
            if parts:  # what did arrive, for a sink that keeps it (a resumable chunk)
                await self._send.send(parts)
            self._error = exc
        finally:
            self._send.close()

    async def next_piece(self) -> list[bytes] | None:
        """On the event loop: the next piece, or None at the end of the body (or where it
        broke off: see :attr:`error`)."""
        try:
            return await self._recv.receive()
        except anyio.EndOfStream:
            return None

    @property
    def error(self) -> Exception | None:
        """What cut the body short (a broken connection, a stall past the body timeout)."""
        return self._error


async def _into_sink(request: Request, ctx: AuthContext, open_sink: Callable[[], Sink]) -> Any:
    """The request body into a sink (``publish/sinks.py``), each ~1 MiB piece handed to a
    thread of the upload pool as it arrives: waiting for the body holds no thread at all,
    however slowly it comes. A body that breaks off is the sink's to judge
    (``close(error)``: a resumable chunk keeps what arrived, others nothing). One of the
    caller's uploads in progress (429 past ``uploads_per_token``/``uploads_per_user``)."""
    hub = request.app.state.hub
    limiter = hub.upload_threads
    async with hub.upload_slots.hold(ctx.user.name, ctx.token.id if ctx.token is not None else None):
        body = _Body(request)
        pump = asyncio.ensure_future(body.pump())
        try:
            sink = await anyio.to_thread.run_sync(open_sink, limiter=limiter)
            try:
                while (parts := await body.next_piece()) is not None:
                    await anyio.to_thread.run_sync(sink.feed, parts, limiter=limiter)
            except BaseException:
                await anyio.to_thread.run_sync(sink.abort, limiter=limiter)
                raise
            return await anyio.to_thread.run_sync(sink.close, body.error, limiter=limiter)
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


class MissingIn(StrictModel):
    space: str = field(SPACE_NAME_RE, 128)
    type: str = field(TYPE_RE, 128)
    build: str = field(BUILD_ID_RE, 256)
    digests: list[Annotated[str, field(DIGEST_RE, 128)]] = Field(max_length=10_000)


class ManifestIn(StrictModel):
    # plain dicts, checked by publish.core in one pass (a model per entry costs 10,000 objects)
    files: Annotated[list[dict[str, Any]], WithJsonSchema({"type": "array", "items": FILE_ENTRY, "maxItems": 100_000})
                     ] | None = Field(default=None, max_length=100_000)
    # instead of files: the manifest digest of an earlier build of the space with the same files
    same_as: str | None = field(DIGEST_RE, 64, default=None)
    public: bool | None = None
    latest: bool = False


class UploadIn(StrictModel):
    space: str = field(SPACE_NAME_RE, 128)
    type: str = field(TYPE_RE, 128)
    build: str = field(BUILD_ID_RE, 256)
    digest: str | None = field(DIGEST_RE, 128, default=None)  # None: declared with a later chunk
    size: int = Field(ge=0)


class GcIn(StrictModel):
    dry_run: bool = False


# ---------------------------------------------------------------- blobs


@router.post("/api/v1/blobs/missing", tags=["publish"])
def blobs_missing(body: MissingIn, ctx: Caller, request: Request):
    """Which of these digests does the hub lack? Present ones stay pinned for at least ``lease_seconds``."""
    pub = _pub(request)
    t = pub.target(ctx, body.space, body.type, body.build)
    # JSONResponse, not a dict: FastAPI's generic encoder walks the list item by item
    return JSONResponse(pub.missing(ctx, t, body.digests, now=utcnow()))


@router.put("/api/v1/blobs/sha256/{digest}", status_code=201, tags=["publish"])
async def put_blob(
    digest: Digest, request: Request, ctx: Caller,
    space: SpaceQuery, type: TypeQuery, build: BuildQuery,
):
    """Upload one blob; the hub hashes the bytes and refuses them if they don't match DIGEST."""
    pub = _pub(request)
    t = await anyio.to_thread.run_sync(pub.target, ctx, space, type, build)
    ctx.trail["resource"] = f"space:{t.space}/{t.prefix} blob:{digest[:16]}"
    declared = _declared_length(request)
    size = await _into_sink(request, ctx,
                            lambda: BlobSink(pub, ctx, t.space_id, digest, declared=declared, now=utcnow()))
    return JSONResponse({"digest": digest, "size": size}, status_code=201)


@router.post("/api/v1/blobs/batch", tags=["publish"])
async def put_batch(
    request: Request, ctx: Caller,
    space: SpaceQuery, type: TypeQuery, build: BuildQuery,
):
    """Upload many small blobs in one request (body framing: see docs/publish.md)."""
    pub = _pub(request)
    t = await anyio.to_thread.run_sync(pub.target, ctx, space, type, build)
    ctx.trail["resource"] = f"space:{t.space}/{t.prefix} blobs"
    stored = await _into_sink(request, ctx, lambda: BatchSink(pub, ctx, t, now=utcnow()))
    return JSONResponse({"stored": stored})


# ---------------------------------------------------------------- resumable uploads


@router.post("/api/v1/uploads", status_code=201, tags=["publish"])
def start_upload(body: UploadIn, ctx: Caller, request: Request):
    pub = _pub(request)
    t = pub.target(ctx, body.space, body.type, body.build)
    return JSONResponse(pub.start_upload(ctx, t, body.digest, body.size, now=utcnow()), status_code=201)


@router.get("/api/v1/uploads/{upload_id}", tags=["publish"])
def upload_status(upload_id: UploadId, ctx: Caller, request: Request):
    return _pub(request).upload_status(ctx, upload_id)


@router.put("/api/v1/uploads/{upload_id}", tags=["publish"])
async def upload_chunk(upload_id: UploadId, request: Request, ctx: Caller, offset: int = Query(ge=0),
                       digest: str | None = query_param(DIGEST_RE, 128, "the file's sha256, with its last chunk",
                                                        default=None)):
    ctx.require("whoami")
    pub = _pub(request)
    return JSONResponse(await _into_sink(request, ctx, lambda: pub.chunk_sink(ctx, upload_id, offset, now=utcnow(),
                                                                              digest=digest)))


# ---------------------------------------------------------------- builds


@router.post("/api/v1/publish/{space}/{type}/{build}", status_code=201, tags=["publish"])
def commit_build(space: SpaceName, type: BuildType, build: BuildId, body: ManifestIn, ctx: Caller, request: Request):
    """Publish a build atomically: every named blob must be uploaded already."""
    pub = _pub(request)
    t = pub.target(ctx, space, type, build)
    ctx.trail["resource"] = f"space:{t.space}/{t.prefix}"
    if (body.files is None) == (body.same_as is None):
        raise bad_request("send either 'files' (the manifest) or 'same_as' (an earlier build's manifest digest)",
                          "invalid-manifest")
    if body.same_as is not None:
        result = pub.commit_same(ctx, t, body.same_as, public=body.public, latest=body.latest, now=utcnow())
    else:
        result = pub.commit(ctx, t, body.files, public=body.public, latest=body.latest, now=utcnow())
    return JSONResponse(_absolute(request, result), status_code=201)


@router.post("/api/v1/publish/{space}/{type}/{build}/latest", tags=["publish"])
def set_latest(space: SpaceName, type: BuildType, build: BuildId, ctx: Caller, request: Request):
    pub = _pub(request)
    return pub.set_latest(ctx, pub.target(ctx, space, type, build, action="publish.admin"))


@router.put("/api/v1/publish/{space}/{type}/{build}/latest", status_code=201, tags=["publish"])
async def put_file_named_latest(space: SpaceName, type: BuildType, build: BuildId, request: Request, ctx: Caller):
    """A one-file build whose file is named ``latest`` (as ``PUT .../{path}``). Its URL is
    also that of POST, which makes the build the latest of its type: declared here, so
    the description's methods at this URL are the ones the hub serves (its ``Allow``)."""
    return await put_single_file(space, type, build, "latest", request, ctx)


@router.put("/api/v1/publish/{space}/{type}/{build}/{path:path}", status_code=201, tags=["publish"])
async def put_single_file(space: SpaceName, type: BuildType, build: BuildId, path: str, request: Request, ctx: Caller):
    """curl-friendly: publish a one-file build from the request body (the hub hashes it)."""
    pub = _pub(request)
    t = await anyio.to_thread.run_sync(pub.target, ctx, space, type, build)
    ctx.trail["resource"] = f"space:{t.space}/{t.prefix}/{path}"
    declared = _declared_length(request)
    # the path, the build id, the budget: refused before a byte of the body is read
    budget = await anyio.to_thread.run_sync(pub.check_single, ctx, t, path, declared)

    mode = 0o755 if request.headers.get("x-tether-mode") == "0755" else 0o644
    result = await _into_sink(request, ctx, lambda: SingleFileSink(pub, ctx, t, path, declared=declared, budget=budget,
                                                                   mode=mode, now=utcnow()))
    return JSONResponse(_absolute(request, result), status_code=201)


def _absolute(request: Request, result: dict) -> dict:
    # from the configured public URL, never from the Host header (a client may send any)
    return result | {"url": _pub(request).settings.effective_public_url() + result["url"]}


@router.post("/api/v1/gc", tags=["publish"])
def run_gc(body: GcIn, ctx: Caller, request: Request):
    return _pub(request).gc(ctx, now=utcnow(), dry_run=body.dry_run)


# ---------------------------------------------------------------- downloads


@files_router.api_route("/files/{space}", methods=["GET", "HEAD"], include_in_schema=False)
@files_router.api_route("/files/{space}/{path:path}", methods=["GET", "HEAD"], tags=["downloads"],
                        responses=DOWNLOAD_RESPONSES, openapi_extra={"security": [{"bearer": []}, {}]})  # public builds: none
def download(space: SpaceName, request: Request, ctx: Annotated[AuthContext | None, Depends(optional_caller)],
             path: str = ""):
    """A file (Range, ETag = digest) or, for a directory, an HTML index (JSON with ?format=json)."""
    pub = _pub(request)
    try:
        found = pub.resolve(ctx, space, path)
    except Problem as p:
        page = sign_in_page(request, p)  # a browser: the sign-in form, not JSON
        if page is None:
            raise
        return page
    if found["kind"] == "dir":
        if request.query_params.get("format") == "json" or "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"space": space, "path": found["path"], "entries": found["entries"]})
        if not request.url.path.endswith("/"):
            # percent-encoded: a header holds Latin-1 only, a path any character
            return Response(status_code=308, headers={"Location": _quote(request.url.path, safe="/") + "/"})
        return HTMLResponse(_index_html(space, found["path"], found["entries"]), headers=_INDEX_HEADERS)
    return _serve_file(pub, request, found)


_SAFE_HEADERS = {
    # Builders are not trusted: whatever they publish must not run as the hub's origin.
    "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}

# A directory index is the hub's own page, sandboxed all the same; its links must still
# download (a sandboxed document may not start a download unless allowed).
_INDEX_HEADERS = _SAFE_HEADERS | {
    "Content-Security-Policy": "sandbox allow-downloads; default-src 'none'; style-src 'unsafe-inline'"}


def _serve_file(pub: Publisher, request: Request, f: dict) -> Response:
    digest, size = f["digest"], f["size"]
    etag = f'"sha256:{digest}"'
    ctype = mimetypes.guess_type(f["path"])[0] or "application/octet-stream"
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=0, must-revalidate",
               **_SAFE_HEADERS}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    start, end, status = 0, size, 200
    rng = request.headers.get("range")
    if rng and request.headers.get("if-range", etag) == etag:
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)) + 1, size) if m.group(2) else size
            else:
                start, end = max(size - int(m.group(2)), 0), size
            if start >= size or start >= end:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}", **_SAFE_HEADERS})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    try:
        body = pub.open_blob(f, start, end)
    except BlobNotFound:
        raise Problem(503, "blob-unavailable", f"the hub's blob store has lost {digest}; tell its operator") from None
    return StreamingResponse(body, status_code=status, media_type=ctype, headers=headers)


def _index_html(space: str, path: str, entries: list[dict]) -> str:
    title = html.escape(f"/{space}/{path}".rstrip("/") + "/")
    rows = []
    if path:
        rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    for e in entries:
        name = html.escape(e["name"]) + ("/" if e["dir"] else "")
        href = html.escape(_quote(e["name"]) + ("/" if e["dir"] else ""), quote=True)
        size = "" if e["dir"] else f"{e['size']:,}"
        digest = "" if e["dir"] else f"<code>{e['digest'][:16]}</code>"
        rows.append(f'<tr><td><a href="{href}">{name}</a></td><td align="right">{size}</td><td>{digest}</td></tr>')
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Index of {title}</title></head><body><h1>Index of {title}</h1>"
        "<table><tr><th align='left'>name</th><th>size</th><th>sha256</th></tr>"
        + "".join(rows) + "</table><p><small><a href='/login'>sign in</a> · <a href='/logout'>sign out</a>"
        "</small></p></body></html>"
    )


def _quote(name: str, safe: str = "") -> str:
    from urllib.parse import quote

    return quote(name, safe=safe)


__all__ = ["router", "files_router", "DIGEST_RE"]
