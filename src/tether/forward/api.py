"""HTTP routes for forward: list and stop routes, share them, make share links and
sign-in links. Thin: the rules live in :mod:`tether.forward.service`.

* ``GET /api/v1/forward/routes[?all=true]`` -- the caller's live routes (all: admins)
* ``DELETE /api/v1/forward/routes/{owner}/{name}`` -- stop a route (its owner or an admin)
* ``POST /api/v1/forward/routes/{name}/signin`` -- a one-time sign-in link for the owner
* ``GET|PUT|DELETE /api/v1/forward/routes/{name}/shares[/{user}]`` -- who else may see it
* ``POST|GET /api/v1/forward/routes/{name}/links`` -- make a share link (a token scoped to the route), list them
* ``GET /api/v1/routes?inactive_since=ISO`` -- JupyterHub's proxy API shape, for idle cullers (admins)
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from tether.auth.deps import Caller, StrictModel
from tether.auth.params import path_segment
from tether.forward.core import RESERVED_NAMES
from tether.forward.runtime import GatewayAddress
from tether.forward.service import ForwardService, Route
from tether.problems import bad_request, forbidden

router = APIRouter(prefix="/api/v1", tags=["forward"])


# DELETE .../OWNER/NAME: never a word other operations' paths put there (no route takes one)
path_segment("stoppable_name", f"(?!(?:{'|'.join(RESERVED_NAMES)})$)[^/]+")
StoppableName = Annotated[str, Path(json_schema_extra={"not": {"enum": list(RESERVED_NAMES)}})]


def _svc(request: Request) -> tuple[ForwardService, GatewayAddress]:
    state = request.app.state
    svc = getattr(state, "forward_service", None)
    if svc is None:
        hub = state.hub
        svc = state.forward_service = (ForwardService(hub.settings, hub.db), GatewayAddress(hub.settings))
    return svc


def _info(route: Route, address: GatewayAddress) -> dict:
    return {**route.info(), "url": address.url(route.owner, route.name)}


@router.get("/forward/routes")
async def list_routes(ctx: Caller, request: Request, all: bool = False):
    svc, address = _svc(request)
    routes = await anyio.to_thread.run_sync(lambda: svc.list_routes(ctx, everyone=all))
    return JSONResponse([_info(r, address) for r in routes])


@router.delete("/forward/routes/{owner}/{name:stoppable_name}", status_code=204, responses={405: {
    "description": "NAME is links, shares or signin (no route's name): that URL is other operations' (its Allow)"}})
def stop_route(owner: str, name: StoppableName, ctx: Caller, request: Request):
    svc, _ = _svc(request)
    ctx.trail.update(action="forward.stop", resource=f"route:{owner}/{name}")
    route = svc.owned_route(ctx, owner, name)
    svc.close(route, f"stopped by {ctx.user.name}")
    return Response(status_code=204)


@router.post("/forward/routes/{name}/signin")
def signin_link(name: str, ctx: Caller, request: Request):
    """A one-time sign-in link for your own live route (five minutes, one use)."""
    svc, address = _svc(request)
    ctx.trail.update(action="forward.signin-link", resource=f"route:{ctx.user.name}/{name}")
    route = svc.owned_route(ctx, ctx.user.name, name)
    secret = svc.signin_link(route)
    return JSONResponse({"url": address.url(route.owner, name),
                         "signin": address.signin_url(route.owner, name, secret)})


class ShareIn(StrictModel):
    read_only: bool = False


@router.get("/forward/routes/{name}/shares")
def list_shares(name: str, ctx: Caller, request: Request):
    svc, _ = _svc(request)
    return JSONResponse(svc.shares(svc.owned_route(ctx, ctx.user.name, name)))


@router.put("/forward/routes/{name}/shares/{user}")
def share(name: str, user: str, body: ShareIn, ctx: Caller, request: Request):
    svc, _ = _svc(request)
    ctx.trail.update(action="forward.share", resource=f"route:{ctx.user.name}/{name} with {user}")
    svc.share(ctx, name, user, read_only=body.read_only)
    return JSONResponse({"route": name, "user": user, "read_only": body.read_only})


@router.delete("/forward/routes/{name}/shares/{user}", status_code=204)
def unshare(name: str, user: str, ctx: Caller, request: Request):
    svc, _ = _svc(request)
    ctx.trail.update(action="forward.unshare", resource=f"route:{ctx.user.name}/{name} with {user}")
    svc.unshare(ctx, name, user)
    return Response(status_code=204)


class LinkIn(StrictModel):
    expires: str = Field(default="2h", max_length=40)
    read_only: bool = False


@router.post("/forward/routes/{name}/links", status_code=201)
def make_link(name: str, body: LinkIn, ctx: Caller, request: Request):
    """A share link: anyone holding it gets through (read-only: GET/HEAD only) until it
    expires or its token is revoked (`tether token revoke ID`)."""
    svc, address = _svc(request)
    ctx.trail.update(action="forward.link", resource=f"route:{ctx.user.name}/{name}")
    token_id, secret = svc.link(ctx, name, expires=body.expires, read_only=body.read_only)
    return JSONResponse({"id": token_id, "read_only": body.read_only,
                         "url": address.signin_url(ctx.user.name, name, secret)}, status_code=201)


@router.get("/forward/routes/{name}/links")
def list_links(name: str, ctx: Caller, request: Request):
    """The route's share links that still work (ids, access, expiry; never their secrets)."""
    svc, _ = _svc(request)
    return JSONResponse(svc.links(ctx, name))


@router.get("/routes", tags=["forward"])
def jupyterhub_routes(ctx: Caller, request: Request,
                      inactive_since: str | None = Query(default=None, max_length=64)):
    """JupyterHub's configurable-http-proxy shape, so an idle culler can drive routes:
    ``{"/NAME--USER": {"target": URL, "data": {"user", "last_activity"}}}``."""
    if not ctx.user.is_admin:
        raise forbidden("listing every route needs a hub admin", "admin-only")
    since = None
    if inactive_since is not None:
        try:
            since = datetime.fromisoformat(inactive_since.replace("Z", "+00:00"))
        except ValueError:
            raise bad_request(f"inactive_since {inactive_since[:40]!r} is not an ISO 8601 time") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
    svc, address = _svc(request)
    routes = svc.list_routes(ctx, everyone=True, inactive_since=since)
    return JSONResponse({f"/{r.name}--{r.owner}": {
        "target": address.url(r.owner, r.name),
        "data": {"user": r.owner, "name": r.name, "last_activity": r.info()["last_activity"]}} for r in routes})
