"""HTTP routes for publishing and downloads. Thin: parsing and streaming only;
the rules live in ``publish.core`` and ``publish.service``."""

from __future__ import annotations

import hashlib
import html
import mimetypes
import os
import re
import secrets
from collections.abc import Iterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import Field

from tether.auth.service import AuthContext
from tether.blobs import BlobNotFound
from tether.db.models import utcnow
from tether.hub.errors import Problem, bad_request
from tether.hub.routes import Caller, StrictModel, caller
from tether.publish.core import DIGEST_RE
from tether.publish.service import Publisher

router = APIRouter()
files_router = APIRouter()


def _pub(request: Request) -> Publisher:
    return request.app.state.publisher


def optional_caller(request: Request) -> AuthContext | None:
    """Downloads of public builds need no token; a token, if sent, must be valid."""
    if "authorization" not in request.headers:
        return None
    return caller(request)


def _chunks_from(request: Request) -> Iterator[bytes]:
    """The request body as a plain iterator, for code running in a worker thread."""
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = anyio.from_thread.run(stream.__anext__)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


class MissingIn(StrictModel):
    space: str = Field(max_length=128)
    type: str = Field(max_length=128)
    build: str = Field(max_length=256)
    digests: list[Annotated[str, Field(max_length=128)]] = Field(max_length=10_000)


class ManifestIn(StrictModel):
    files: list[dict[str, Any]] = Field(max_length=100_000)
    public: bool | None = None
    latest: bool = False


class UploadIn(StrictModel):
    space: str = Field(max_length=128)
    type: str = Field(max_length=128)
    build: str = Field(max_length=256)
    digest: str = Field(max_length=128)
    size: int = Field(ge=0)


class GcIn(StrictModel):
    dry_run: bool = False


# ---------------------------------------------------------------- blobs


@router.post("/api/v1/blobs/missing", tags=["publish"])
def blobs_missing(body: MissingIn, ctx: Caller, request: Request):
    """Which of these digests does the hub lack? Present ones are pinned until the lease ends."""
    pub = _pub(request)
    t = pub.target(ctx, body.space, body.type, body.build)
    return pub.missing(ctx, t, body.digests, now=utcnow())


@router.put("/api/v1/blobs/sha256/{digest}", status_code=201, tags=["publish"])
async def put_blob(
    digest: str, request: Request, ctx: Caller,
    space: str = Query(max_length=128), type: str = Query(max_length=128), build: str = Query(max_length=256),
):
    """Upload one blob; the hub hashes the bytes and refuses them if they don't match DIGEST."""
    pub = _pub(request)
    t = await anyio.to_thread.run_sync(pub.target, ctx, space, type, build)
    ctx.trail["resource"] = f"space:{t.space}/{t.prefix} blob:{digest[:16]}"
    size = await anyio.to_thread.run_sync(
        lambda: pub.write_blob(ctx, digest, _chunks_from(request), declared=_declared_length(request), now=utcnow())
    )
    return JSONResponse({"digest": digest, "size": size}, status_code=201)


class _FrameReader:
    """Reads the batch framing: ``<hex digest> <size>\\n`` then exactly size bytes, repeated."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = b""

    def _fill(self) -> bool:
        try:
            self._buf += next(self._chunks)
            return True
        except StopIteration:
            return False

    def frames(self):
        while True:
            while b"\n" not in self._buf:
                if len(self._buf) > 200:
                    raise bad_request("batch frame header too long: expected '<sha256 hex> <size>\\n'", "bad-frame")
                if not self._fill():
                    if self._buf:
                        raise bad_request("the batch ends inside a frame header; nothing more was stored", "bad-frame")
                    return
            line, self._buf = self._buf.split(b"\n", 1)
            m = re.fullmatch(rb"([0-9a-f]{64}) ([0-9]{1,15})", line)
            if not m:
                raise bad_request("bad batch frame header: expected '<sha256 hex> <size>\\n'", "bad-frame")
            digest, size = m.group(1).decode(), int(m.group(2))
            yield digest, size, self._body(size)

    def _body(self, size: int) -> Iterator[bytes]:
        left = size
        while left:
            if not self._buf and not self._fill():
                return  # truncated: the writer sees fewer bytes than declared
            take, self._buf = self._buf[:left], self._buf[left:]
            left -= len(take)
            yield take


@router.post("/api/v1/blobs/batch", tags=["publish"])
async def put_batch(
    request: Request, ctx: Caller,
    space: str = Query(max_length=128), type: str = Query(max_length=128), build: str = Query(max_length=256),
):
    """Upload many small blobs in one request (body framing: see docs/publish.md)."""
    pub = _pub(request)
    t = await anyio.to_thread.run_sync(pub.target, ctx, space, type, build)
    ctx.trail["resource"] = f"space:{t.space}/{t.prefix} blobs"
    stored = await anyio.to_thread.run_sync(
        lambda: pub.write_batch(ctx, _FrameReader(_chunks_from(request)).frames(), now=utcnow())
    )
    return JSONResponse({"stored": stored})


# ---------------------------------------------------------------- resumable uploads


@router.post("/api/v1/uploads", status_code=201, tags=["publish"])
def start_upload(body: UploadIn, ctx: Caller, request: Request):
    pub = _pub(request)
    t = pub.target(ctx, body.space, body.type, body.build)
    return JSONResponse(pub.start_upload(ctx, t, body.digest, body.size, now=utcnow()), status_code=201)


@router.get("/api/v1/uploads/{upload_id}", tags=["publish"])
def upload_status(upload_id: str, ctx: Caller, request: Request):
    return _pub(request).upload_status(ctx, upload_id)


@router.put("/api/v1/uploads/{upload_id}", tags=["publish"])
async def upload_chunk(upload_id: str, request: Request, ctx: Caller, offset: int = Query(ge=0)):
    ctx.require("whoami")
    pub = _pub(request)
    return await anyio.to_thread.run_sync(
        lambda: pub.upload_chunk(ctx, upload_id, offset, _chunks_from(request), now=utcnow())
    )


# ---------------------------------------------------------------- builds


@router.post("/api/v1/publish/{space}/{type}/{build}", status_code=201, tags=["publish"])
def commit_build(space: str, type: str, build: str, body: ManifestIn, ctx: Caller, request: Request):
    """Publish a build atomically: every named blob must be uploaded already."""
    pub = _pub(request)
    t = pub.target(ctx, space, type, build)
    ctx.trail["resource"] = f"space:{t.space}/{t.prefix}"
    result = pub.commit(ctx, t, body.files, public=body.public, latest=body.latest, now=utcnow())
    return JSONResponse(_absolute(request, result), status_code=201)


@router.post("/api/v1/publish/{space}/{type}/{build}/latest", tags=["publish"])
def set_latest(space: str, type: str, build: str, ctx: Caller, request: Request):
    pub = _pub(request)
    return pub.set_latest(ctx, pub.target(ctx, space, type, build, action="publish.admin"))


@router.put("/api/v1/publish/{space}/{type}/{build}/{path:path}", status_code=201, tags=["publish"])
async def put_single_file(space: str, type: str, build: str, path: str, request: Request, ctx: Caller):
    """curl-friendly: publish a one-file build from the request body (the hub hashes it)."""
    pub = _pub(request)
    t = await anyio.to_thread.run_sync(pub.target, ctx, space, type, build)
    ctx.trail["resource"] = f"space:{t.space}/{t.prefix}/{path}"

    def run():
        from tether.publish.core import PathError, validate_path

        try:
            validate_path(path)
        except PathError as exc:
            raise bad_request(str(exc), "invalid-path") from None
        pub.uploads_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        spool = pub.uploads_dir / f"single-{secrets.token_hex(8)}"
        h = hashlib.sha256()
        size = 0
        try:
            with open(os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                for chunk in _chunks_from(request):
                    h.update(chunk)
                    size += len(chunk)
                    if size > pub.settings.max_blob_bytes:
                        raise Problem(413, "blob-too-large", f"files are limited to {pub.settings.max_blob_bytes} bytes")
                    fh.write(chunk)
            declared = _declared_length(request)
            if declared is not None and declared != size:
                raise bad_request(f"the upload was truncated: {size} of {declared} bytes arrived", "truncated-upload")
            digest = h.hexdigest()

            def read():
                with open(spool, "rb") as fh:
                    while block := fh.read(1 << 20):
                        yield block

            pub.write_blob(ctx, digest, read(), declared=size, now=utcnow())
        finally:
            spool.unlink(missing_ok=True)
        mode = 0o755 if request.headers.get("x-tether-mode") == "0755" else 0o644
        return pub.commit(ctx, t, [{"path": path, "digest": digest, "size": size, "mode": mode}],
                          public=None, latest=False, now=utcnow())

    return JSONResponse(_absolute(request, await anyio.to_thread.run_sync(run)), status_code=201)


def _absolute(request: Request, result: dict) -> dict:
    return result | {"url": str(request.base_url).rstrip("/") + result["url"]}


@router.post("/api/v1/gc", tags=["publish"])
def run_gc(body: GcIn, ctx: Caller, request: Request):
    return _pub(request).gc(ctx, now=utcnow(), dry_run=body.dry_run)


# ---------------------------------------------------------------- downloads


@files_router.api_route("/files/{space}", methods=["GET", "HEAD"], include_in_schema=False)
@files_router.api_route("/files/{space}/{path:path}", methods=["GET", "HEAD"], tags=["downloads"])
def download(space: str, request: Request, ctx: Annotated[AuthContext | None, Depends(optional_caller)],
             path: str = ""):
    """A file (Range, ETag = digest) or, for a directory, an HTML index (JSON with ?format=json)."""
    pub = _pub(request)
    found = pub.resolve(ctx, space, path)
    if found["kind"] == "dir":
        if request.query_params.get("format") == "json" or "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"space": space, "path": found["path"], "entries": found["entries"]})
        if not request.url.path.endswith("/"):
            return Response(status_code=308, headers={"Location": request.url.path + "/"})
        return HTMLResponse(_index_html(space, found["path"], found["entries"]), headers=_SAFE_HEADERS)
    return _serve_file(pub, request, found)


_SAFE_HEADERS = {
    # Builders are not trusted: whatever they publish must not run as the hub's origin.
    "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


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
        body = pub.store.open_range(digest, start, end)
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
        + "".join(rows) + "</table></body></html>"
    )


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


__all__ = ["router", "files_router", "DIGEST_RE"]
