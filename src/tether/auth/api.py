"""The management API: whoami, users, keys, spaces, grants, tokens, audit, authz checks.

Every route authenticates through ``caller`` and asks ``AuthContext.require`` (the
single policy function) before touching anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from tether.auth import audit, identities, service
from tether.auth.deps import Caller, StrictModel, hub_state
from tether.auth.policy import ACTIONS, Resource, authorize
from tether.auth.service import MintRequest
from tether.db.models import utcnow
from tether.problems import Problem, bad_request
from tether.units import parse_since

router = APIRouter(prefix="/api/v1")


class UserIn(StrictModel):
    name: str = Field(max_length=64)
    kind: Literal["person", "service"] = "person"
    admin: bool = False


class KeyIn(StrictModel):
    public_key: str = Field(max_length=16384)
    kind: Literal["ssh", "signing"] | None = None
    comment: str | None = Field(default=None, max_length=200)


class SpaceIn(StrictModel):
    name: str = Field(max_length=128)
    description: str = Field(default="", max_length=500)
    public_builds: bool = False


class SpacePatch(StrictModel):
    description: str | None = Field(default=None, max_length=500)
    public_builds: bool | None = None


class GrantIn(StrictModel):
    level: str = Field(max_length=16)


class TokenIn(StrictModel):
    for_user: str | None = Field(default=None, max_length=64)
    inherit: bool = False
    scopes: list[Annotated[str, Field(max_length=1200)]] | None = Field(default=None, max_length=64)
    expires: str | None = Field(default=None, max_length=64)
    not_before: str | None = Field(default=None, max_length=64)
    sources: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None, max_length=64)
    max_uses: int | None = Field(default=None, ge=1, le=2**62)
    max_files: int | None = Field(default=None, ge=1, le=2**62)
    max_bytes: int | None = Field(default=None, ge=1, le=2**62)
    label: str | None = Field(default=None, max_length=200)


class CheckIn(StrictModel):
    action: str = Field(max_length=64)
    space: str | None = Field(default=None, max_length=128)
    path: str | None = Field(default=None, max_length=4096)
    job: str | None = Field(default=None, max_length=128)
    user: str | None = Field(default=None, max_length=64)
    files: int = Field(default=0, ge=0, le=2**62)
    bytes: int = Field(default=0, ge=0, le=2**62)


# ---------------------------------------------------------------- who am I


# whoami and tokens/self touch no storage beyond the token check, so they are async:
# one thread hop per request (the check) instead of two.
@router.get("/whoami", tags=["identity"])
async def whoami(ctx: Caller):
    ctx.require("whoami")
    token = service.token_info(ctx.token, ctx.user.name) if ctx.token is not None else None
    return JSONResponse({"user": identities.user_info(ctx.user), "token": token})


@router.post("/authz/check", tags=["identity"])
async def authz_check(body: CheckIn, ctx: Caller, request: Request):
    """Dry run: may this token do ACTION on the resource (and fit FILES/BYTES in its budget)?
    Nothing is drawn or changed, so an allowed check is not an audited change."""
    ctx.require("whoami")
    request.state.read_only = True
    if body.action not in ACTIONS:
        raise bad_request(f"unknown action {body.action!r}; see docs/hub.md for the list", "unknown-action")
    resource = Resource(space=body.space, path=body.path, job=body.job, user=body.user)
    decision = authorize(ctx.principal, body.action, resource)
    if not decision.allowed:
        return JSONResponse({"allowed": False, "code": decision.code, "detail": decision.detail})
    if ctx.token is not None and (body.files or body.bytes):
        try:
            await run_in_threadpool(service.check_draw, hub_state(request).db, ctx.token, files=body.files, nbytes=body.bytes)
        except Problem as p:
            return JSONResponse({"allowed": False, "code": p.slug, "detail": p.detail, "caveat": p.extra.get("caveat")})
    return JSONResponse({"allowed": True, "code": "ok", "detail": "allowed"})


# ---------------------------------------------------------------- users and keys


@router.post("/users", status_code=201, tags=["users"])
def create_user(body: UserIn, ctx: Caller, request: Request):
    return identities.create_user(hub_state(request).db, ctx, body.name, body.kind, body.admin)


@router.get("/users", tags=["users"])
def list_users(ctx: Caller, request: Request):
    return {"users": identities.list_users(hub_state(request).db, ctx)}


@router.get("/users/{name}", tags=["users"])
def show_user(name: str, ctx: Caller, request: Request):
    return identities.show_user(hub_state(request).db, ctx, name)


@router.post("/users/{name}/disable", tags=["users"])
def disable_user(name: str, ctx: Caller, request: Request):
    return identities.set_disabled(hub_state(request).db, ctx, name, True)


@router.post("/users/{name}/enable", tags=["users"])
def enable_user(name: str, ctx: Caller, request: Request):
    return identities.set_disabled(hub_state(request).db, ctx, name, False)


@router.post("/users/{name}/keys", status_code=201, tags=["keys"])
def add_key(name: str, body: KeyIn, ctx: Caller, request: Request):
    return identities.add_key(hub_state(request).db, ctx, name, body.public_key, body.kind, body.comment)


@router.get("/users/{name}/keys", tags=["keys"])
def list_keys(name: str, ctx: Caller, request: Request):
    return {"keys": identities.list_keys(hub_state(request).db, ctx, name)}


@router.delete("/users/{name}/keys/{ref:path}", status_code=204, tags=["keys"])
def remove_key(name: str, ref: str, ctx: Caller, request: Request):
    identities.remove_key(hub_state(request).db, ctx, name, ref)
    return Response(status_code=204)


# ---------------------------------------------------------------- spaces and grants


@router.post("/spaces", status_code=201, tags=["spaces"])
def create_space(body: SpaceIn, ctx: Caller, request: Request):
    return identities.create_space(hub_state(request).db, ctx, body.name, body.description, body.public_builds)


@router.patch("/spaces/{name}", tags=["spaces"])
def configure_space(name: str, body: SpacePatch, ctx: Caller, request: Request):
    return identities.configure_space(
        hub_state(request).db, ctx, name, description=body.description, public_builds=body.public_builds
    )


@router.get("/spaces", tags=["spaces"])
def list_spaces(ctx: Caller, request: Request):
    return {"spaces": identities.list_spaces(hub_state(request).db, ctx)}


@router.get("/spaces/{name}", tags=["spaces"])
def show_space(name: str, ctx: Caller, request: Request):
    return identities.show_space(hub_state(request).db, ctx, name)


@router.put("/spaces/{name}/grants/{user}", tags=["spaces"])
def grant(name: str, user: str, body: GrantIn, ctx: Caller, request: Request):
    return identities.set_grant(hub_state(request).db, ctx, name, user, body.level)


@router.delete("/spaces/{name}/grants/{user}", status_code=204, tags=["spaces"])
def revoke_grant(name: str, user: str, ctx: Caller, request: Request):
    identities.set_grant(hub_state(request).db, ctx, name, user, None)
    return Response(status_code=204)


# ---------------------------------------------------------------- tokens


@router.post("/tokens", status_code=201, tags=["tokens"])
def mint_token(body: TokenIn, ctx: Caller, request: Request):
    hub = hub_state(request)
    row, secret = service.mint(
        hub.db, ctx, MintRequest(**body.model_dump()), now=utcnow(),
        max_lifetime=hub.max_lifetime, default_lifetime=hub.default_lifetime,
    )
    ctx.trail["resource"] = f"token:{row.id}"
    owner = body.for_user or ctx.user.name
    return JSONResponse(service.token_info(row, owner) | {"token": secret}, status_code=201)


@router.get("/tokens", tags=["tokens"])
def list_tokens(ctx: Caller, request: Request, user: str | None = Query(default=None, max_length=64), all: bool = False):
    with hub_state(request).db.read() as s:
        return {"tokens": service.list_tokens(s, ctx, user=user, include_all=all)}


@router.get("/tokens/self", tags=["tokens"])
async def token_self(ctx: Caller):
    ctx.require("whoami")
    if ctx.token is None:
        raise bad_request("this request was not made with a token")
    return JSONResponse(service.token_info(ctx.token, ctx.user.name))


@router.get("/tokens/{token_id}", tags=["tokens"])
def inspect_token(token_id: str, ctx: Caller, request: Request):
    with hub_state(request).db.read() as s:
        return service.inspect_token(s, ctx, token_id)


@router.delete("/tokens/{token_id}", tags=["tokens"])
def revoke_token(token_id: str, ctx: Caller, request: Request):
    return {"revoked": service.revoke(hub_state(request).db, ctx, token_id, now=utcnow())}


# ---------------------------------------------------------------- audit


@router.get("/audit", tags=["audit"])
def read_audit(
    ctx: Caller,
    request: Request,
    since: str | None = Query(default=None, max_length=64, description="ISO 8601 time or a duration ago (1h, 7d)"),
    user: str | None = Query(default=None, max_length=64),
    token: str | None = Query(default=None, max_length=32),
    action: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=1000, ge=1, le=100_000),
):
    ctx.require("audit.read")
    since_at: datetime | None = None
    if since:
        try:
            since_at = parse_since(since, now=utcnow())
        except ValueError as exc:
            raise bad_request(f"since: {exc}") from None
    hub = hub_state(request)
    hub.audit_writer.flush()  # read what this hub has queued as if it were written at once
    records = audit.query(hub.db, since=since_at, user=user, token=token, action=action, limit=limit)
    return {"records": records}


