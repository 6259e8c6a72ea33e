"""HTTP routes for apps. Thin: rules in :mod:`tether.apps.service`, running in
:mod:`tether.apps.supervisor`. An instance is named ``APP`` (the caller's own),
or ``APP--USER`` in the paths below.

* ``GET /api/v1/apps`` -- the apps the caller may see
* ``POST /api/v1/apps/{name}`` -- register an app, or a version of it (admin on its space)
* ``POST /api/v1/apps/{name}/spawn`` -- spawn the caller's instance (or ``for_user``'s: admin)
* ``GET /api/v1/app-instances[?all=true]`` -- instances: the caller's, or all they administer
* ``GET|DELETE /api/v1/app-instances/{ref}`` -- status (refused counters included), remove
* ``POST /api/v1/app-instances/{ref}/{stop,start,restart,signin}``
* ``GET /api/v1/app-instances/{ref}/logs[?offset=N]`` -- the app's output
* ``GET|POST|DELETE /api/v1/app-instances/{ref}/grants`` -- destinations it may reach
* ``GET /api/v1/app-instances/{ref}/shares``, ``PUT|DELETE .../shares/{user}`` -- who else may use it
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, StrictInt

from tether.apps.service import AppsService, Instance
from tether.auth.deps import Caller, StrictModel
from tether.auth.params import path_segment
from tether.problems import Problem

router = APIRouter(prefix="/api/v1", tags=["apps"])

Arg = Annotated[str, Field(max_length=4096)]


def _runtime(request: Request):
    runtime = getattr(request.app.state, "apps_runtime", None)
    if runtime is None:  # the hub's configuration, not a failure: retrying does not help
        raise Problem(409, "apps-unavailable", "apps are served through the gateway, and this hub runs none: "
                      "start it with --gateway-listen HOST:PORT")
    return runtime


def _svc(request: Request) -> AppsService:
    runtime = getattr(request.app.state, "apps_runtime", None)
    if runtime is not None:
        return runtime.service
    state = request.app.state
    if getattr(state, "apps_service", None) is None:
        state.apps_service = AppsService(state.hub.settings, state.hub.db)
    return state.apps_service


def _info(request: Request, inst: Instance) -> dict:
    info = _svc(request).info(inst)
    runtime = getattr(request.app.state, "apps_runtime", None)
    if runtime is not None:
        info["url"] = runtime.address.url(inst.owner, inst.app)
    return info


class RegisterIn(StrictModel):
    space: str = Field(max_length=64)
    version: str = Field(max_length=64)
    build: str = Field(max_length=400, description="SPACE/TYPE/ID of a published build holding the app's files")
    cmd: list[Arg] = Field(max_length=256, description="argv, run as is (never through a shell)")
    install: list[Arg] | None = Field(default=None, max_length=256)
    memory: str | None = Field(default=None, max_length=20)
    cpu: str | None = Field(default=None, max_length=20)
    pids: str | None = Field(default=None, max_length=20)
    disk: str | None = Field(default=None, max_length=20, description="the size of each instance's /data")
    grants: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=64)
    tcp: StrictInt | Annotated[str, Field(max_length=20)] | None = Field(default=None, description="the app listens on 127.0.0.1:PORT in its own network "
                                  "namespace instead of on $TETHER_SOCKET (1-65535)")


@router.get("/apps")
def list_apps(ctx: Caller, request: Request):
    return JSONResponse(_svc(request).list_apps(ctx))


@router.post("/apps/{name}", status_code=201)
def register(name: str, body: RegisterIn, ctx: Caller, request: Request):
    """Register app ``name`` (or a new version): its files are the build named; re-registering
    the same version with the same files and command changes nothing (``unchanged``)."""
    out = _svc(request).register(ctx, space=body.space, name=name, version=body.version, build=body.build,
                                 argv=body.cmd, install=body.install, memory=body.memory, cpu=body.cpu,
                                 pids=body.pids, grants=body.grants, disk=body.disk, tcp=body.tcp)
    ctx.trail.update(action="app.register", resource=f"app:{body.space}/{name} version {body.version}")
    return JSONResponse(out, status_code=200 if out["unchanged"] else 201)


class SpawnIn(StrictModel):
    for_user: str | None = Field(default=None, max_length=32)


@router.post("/apps/{name}/spawn", status_code=201)
def spawn(name: str, body: SpawnIn, ctx: Caller, request: Request):
    """Spawn an instance and start it on this replica; answers once its socket accepts."""
    runtime = _runtime(request)
    svc = runtime.service
    why = runtime.unavailable()
    if why:
        raise Problem(503, "apps-unavailable", f"apps cannot run on this hub: {why}")
    inst = svc.spawn(ctx, name, for_user=body.for_user)
    ctx.trail.update(action="app.spawn", resource=f"app:{inst.space}/{name} instance of {inst.owner}")
    inst = runtime.ensure_running(inst, states=("starting",))
    return JSONResponse(_info(request, inst), status_code=201)


@router.get("/app-instances")
def list_instances(ctx: Caller, request: Request, all: bool = False):
    svc = _svc(request)
    return JSONResponse([_info(request, i) for i in svc.list_instances(ctx, everyone=all)])


@router.get("/app-instances/{ref}/grants")
def list_grants(ref: str, ctx: Caller, request: Request):
    svc = _svc(request)
    return JSONResponse(svc.grants(svc.find(ctx, ref)))


class GrantIn(StrictModel):
    proto: str | None = Field(default=None, max_length=3, description="tcp or udp (or give tcp:HOST:PORT)")
    destination: str = Field(max_length=300, description="HOST:PORT, or tcp:HOST:PORT without proto")
    expires: str | None = Field(default=None, max_length=40)
    reason: str = Field(default="", max_length=500)


@router.post("/app-instances/{ref}/grants", status_code=201)
def grant(ref: str, body: GrantIn, ctx: Caller, request: Request):
    """Open one destination to the instance; its sandbox applies it at once (or, held by
    another replica, within a sweep)."""
    svc = _svc(request)
    inst = svc.find(ctx, ref)
    out = svc.grant(ctx, inst, body.proto, body.destination, expires=body.expires, reason=body.reason)
    ctx.trail["action"] = "app.grant"
    _apply(request, inst)
    return JSONResponse(out, status_code=201)


@router.delete("/app-instances/{ref}/grants", status_code=200)
def revoke(ref: str, ctx: Caller, request: Request,
           destination: str | None = Query(default=None, max_length=300),
           proto: str | None = Query(default=None, max_length=3)):
    """Close one destination (``destination``), or every one; existing flows end at once."""
    svc = _svc(request)
    inst = svc.find(ctx, ref)
    n = svc.revoke(ctx, inst, proto, destination)
    ctx.trail["action"] = "app.revoke"
    _apply(request, inst)
    return JSONResponse({"revoked": n})


def _apply(request: Request, inst: Instance) -> None:
    runtime = getattr(request.app.state, "apps_runtime", None)
    if runtime is not None and runtime.mine(inst):
        runtime.apply_grants(inst)


@router.get("/app-instances/{ref}/logs")
def logs(ref: str, ctx: Caller, request: Request, offset: int = Query(default=0, ge=0),
         limit: int = Query(default=1 << 20, ge=1, le=8 << 20)):
    """The app's output from ``offset`` (bytes); ``X-Tether-Log-Offset`` says where the next read
    starts, ``X-Tether-Instance-State`` whether more may come (``running``, ``idle``...) or not
    (``stopped``, ``failed``). 409 held-elsewhere when another replica runs it (its output is there)."""
    runtime = _runtime(request)
    inst = runtime.service.find(ctx, ref)
    data, next_offset = runtime.read_log(inst, offset, limit)
    return Response(data, media_type="text/plain; charset=utf-8",
                    headers={"X-Tether-Log-Offset": str(next_offset), "X-Tether-Instance-State": inst.state})


@router.post("/app-instances/{ref}/signin")
def signin(ref: str, ctx: Caller, request: Request):
    """A one-time sign-in link to your own instance (five minutes, one use)."""
    runtime = _runtime(request)
    inst = runtime.service.find(ctx, ref, shared=True)
    if inst.owner != ctx.user.name and runtime.service.share_of(inst, ctx) is None:
        raise Problem(403, "not-instance-owner", f"only {inst.owner} and those they share it with sign in to "
                      "their instance")
    ctx.trail["action"] = "app.signin-link"
    secret = runtime.service.signin_link(inst, caller=ctx if inst.owner != ctx.user.name else None)
    return JSONResponse({"url": runtime.address.url(inst.owner, inst.app),
                         "signin": runtime.address.signin_url(inst.owner, inst.app, secret)})


class LinkIn(StrictModel):
    expires: str = Field(default="2h", max_length=40)
    read_only: bool = False


@router.post("/app-instances/{ref}/links", status_code=201)
def share_link(ref: str, body: LinkIn, ctx: Caller, request: Request):
    """A share link to your instance: whoever opens it gets a session (read-only: GET and
    HEAD only) until it expires or its token is revoked (`tether token revoke ID`)."""
    runtime = _runtime(request)
    inst = runtime.service.find(ctx, ref)
    token_id, secret = runtime.service.share_link(ctx, inst, expires=body.expires, read_only=body.read_only)
    ctx.trail["action"] = "app.share-link"
    return JSONResponse({"id": token_id, "read_only": body.read_only,
                         "url": runtime.address.signin_url(inst.owner, inst.app, secret)}, status_code=201)


class ShareIn(StrictModel):
    read_only: bool = False


@router.get("/app-instances/{ref}/shares")
def list_shares(ref: str, ctx: Caller, request: Request):
    """Who else your instance is shared with."""
    svc = _svc(request)
    return JSONResponse(svc.shares(svc.find(ctx, ref)))


@router.put("/app-instances/{ref}/shares/{user}")
def share(ref: str, user: str, body: ShareIn, ctx: Caller, request: Request):
    """Let a named user through the gateway to your instance (as themselves; read_only: GET and HEAD only)."""
    svc = _svc(request)
    inst = svc.find(ctx, ref)
    ctx.trail["action"] = "app.share"
    return JSONResponse(svc.share(ctx, inst, user, read_only=body.read_only))


@router.delete("/app-instances/{ref}/shares/{user}", status_code=204)
def unshare(ref: str, user: str, ctx: Caller, request: Request):
    """Stop sharing your instance with a user: their next request is refused."""
    svc = _svc(request)
    inst = svc.find(ctx, ref)
    ctx.trail["action"] = "app.unshare"
    svc.unshare(ctx, inst, user)
    return Response(status_code=204)


path_segment("instance_verb", "stop|start|restart")  # so .../logs is its own operation's alone


@router.post("/app-instances/{ref}/{verb:instance_verb}", responses={405: {
    "description": "VERB is not a verb but another operation's word (logs, shares): that URL is its (its Allow)"}})
def control(ref: str, verb: Literal["stop", "start", "restart"], ctx: Caller, request: Request):
    """stop, start or restart an instance."""
    runtime = _runtime(request)
    svc = runtime.service
    inst = svc.find(ctx, ref)
    ctx.trail["action"] = f"app.{verb}"
    elsewhere = inst.holder is not None and not runtime.mine(inst)
    if verb in ("stop", "restart"):
        if elsewhere and verb == "restart":
            raise Problem(409, "held-elsewhere", f"{inst.app} of {inst.owner} runs on replica "
                          f"{inst.holder.partition('#')[0]}; restart it there, or stop and start it")
        svc.set_desired(inst, "stopped", f"stopped by {ctx.user.name}")
        if runtime.mine(inst):
            runtime.stop(inst, reason=f"stopped by {ctx.user.name}")
        elif inst.holder is None:
            svc.mark(inst.id, state="stopped")
    if verb in ("start", "restart"):
        svc.set_desired(inst, "running")
        inst = runtime.ensure_running(svc.get(inst.id), states=("stopped", "idle", "failed", "starting"))
    return JSONResponse(_info(request, svc.get(inst.id)))


@router.get("/app-instances/{ref}")
def status(ref: str, ctx: Caller, request: Request):
    svc = _svc(request)
    return JSONResponse(_info(request, svc.find(ctx, ref)))


@router.delete("/app-instances/{ref}", status_code=200)
def remove(ref: str, ctx: Caller, request: Request):
    """Remove an instance: its sandbox, data, socket and grants; nothing is left behind."""
    runtime = _runtime(request)
    svc = runtime.service
    inst = svc.find(ctx, ref)
    ctx.trail["action"] = "app.rm"
    if inst.holder is not None and not runtime.mine(inst):
        svc.set_desired(inst, "removed", f"removed by {ctx.user.name}")
        return JSONResponse({"removed": False, "pending": True,
                             "detail": f"the replica holding it removes it within {runtime.settings.apps_sweep_seconds:g} s"},
                            status_code=202)
    runtime.remove(inst)
    return JSONResponse({"removed": True})
