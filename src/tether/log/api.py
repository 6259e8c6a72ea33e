"""HTTP routes for log sync. Thin: parsing only; the rules live in ``log.service``.

* ``POST /api/v1/log/{space}/reconcile`` -- body: one reconcile message
  (``application/octet-stream``); reply: the next message, or an empty body
  when the hub has nothing more to say. Needs ``log.read``.
* ``POST /api/v1/log/{space}/records`` -- push: a JSON list of records. Needs
  ``log.write``; known ids with different content are a 409 listing the ids,
  records authored by someone else a 403; either way nothing is written.
* ``POST /api/v1/log/{space}/records/get`` -- pull: ``{"ids": [...]}`` ->
  ``{"records": [...], "missing": [...], "more": [...]}``; replies stop near
  4 MiB and ``more`` lists the ids to ask for again. Needs ``log.read``.
* ``GET /api/v1/log/{space}`` -- how many records the hub holds. Needs ``log.read``.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from tether.auth.deps import Caller, StrictModel
from tether.auth.params import SpaceName
from tether.log.service import MAX_PULL_IDS, MAX_PUSH_RECORDS, LogService

router = APIRouter(prefix="/api/v1/log", tags=["log"])

OCTET = "application/octet-stream"


def _svc(request: Request) -> LogService:
    svc = getattr(request.app.state, "log_service", None)
    if svc is None:
        hub = request.app.state.hub
        svc = request.app.state.log_service = LogService(hub.settings, hub.db)
    return svc


class PullIn(StrictModel):
    ids: list[Annotated[str, Field(max_length=64)]] = Field(max_length=MAX_PULL_IDS)


@router.post(
    "/{space}/reconcile",
    response_class=Response,
    openapi_extra={"requestBody": {"required": True, "content": {OCTET: {"schema": {"type": "string", "format": "binary"}}}}},
    responses={200: {"content": {OCTET: {}}, "description": "the next message; empty when done"}},
)
async def reconcile(space: SpaceName, request: Request, ctx: Caller):
    """One round of range-based set reconciliation (see docs/log.md for the wire format)."""
    message = await request.body()
    reply = await anyio.to_thread.run_sync(_svc(request).reconcile, ctx, space, message)
    return Response(reply or b"", media_type=OCTET)


@router.post("/{space}/records")
def push(space: SpaceName, ctx: Caller, request: Request,
         records: Annotated[list[Any], Body(max_length=MAX_PUSH_RECORDS * 2)]):
    """Push records (immutable: identical known records are skipped, different ones refused)."""
    return JSONResponse(_svc(request).push(ctx, space, records))


@router.post("/{space}/records/get")
def pull(space: SpaceName, body: PullIn, ctx: Caller, request: Request):
    """Fetch records by id; unknown ids are listed under ``missing``."""
    return JSONResponse(_svc(request).get(ctx, space, body.ids))


@router.get("/{space}")
def info(space: SpaceName, ctx: Caller, request: Request):
    return JSONResponse(_svc(request).count(ctx, space))
