"""HTTP routes for jobs. Thin: parsing and the long-poll; the rules live in
``job.service`` and ``job.core``.

Scheduler (a token with ``job.admin`` on the space):

* ``POST /api/v1/jobs`` -- create a group; the reply holds each node's token.
* ``GET /api/v1/jobs[?space=S]``, ``GET /api/v1/jobs/{group}`` -- list, status.
* ``POST /api/v1/jobs/{group}/cancel`` -- end it; every wait fails at once.

Nodes (the node's own token, scope ``job:GROUP/NODE``):

* ``GET /api/v1/jobs/me`` -- which group, node and role the token is for.
* ``POST /api/v1/jobs/{group}/nodes/{node}/send`` -- ``{"id", "data"}``.
* ``POST /api/v1/jobs/{group}/nodes/{node}/wait`` -- ``{"id", "kind": "any" |
  "all" | "sync", "role"?, "generation"?, "timeout"}``: a long-poll. The hub
  holds the request until the wait completes, fails, or ``timeout`` (at most
  25 s) passes, and answers ``{"state": "done" | "failed" | "pending", …}``; on
  ``pending`` the client asks again (with the ``generation`` it was given, for a
  sync). The answer leaves within milliseconds of the change that completes it.
  A replica holds at most ``job_max_waits`` of them: past it, 503 with
  ``Retry-After`` at once, and the client asks again after it.
* ``POST /api/v1/jobs/{group}/nodes/{node}/state`` -- ``joined``, ``done`` or
  ``failed`` (the node itself, or the scheduler marking it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Annotated, Any, Callable, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from tether.auth.deps import BEARER, Caller, StrictModel, caller
from tether.auth.recent import Checks, Recent
from tether.auth.policy import Resource
from tether.auth.service import AuthContext, normalise_source
from tether.job import core
from tether.job.service import NOTIFY_CHANNEL, JobService, Place, Waker, problem_of, topic_of
from tether.problems import Problem

log = logging.getLogger("tether.job")

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

MAX_HOLD = 25.0  # seconds a long-poll is held; below common proxies' idle timeouts
BUSY_RETRY_AFTER = 1  # seconds a wait refused past job_max_waits is told to wait before asking again
Name = Annotated[str, Field(max_length=core.MAX_NAME)]


def _svc(request: Request) -> JobService:
    return _svc_for(request.app)


def _svc_for(app) -> JobService:
    """The app's job service, made on first use from the event loop: the changes it
    commits (in worker threads) wake this replica's waiters on that loop."""
    svc = getattr(app.state, "job_service", None)
    if svc is None:
        hub = app.state.hub
        svc = app.state.job_service = JobService(
            hub.db, max_lifetime=hub.max_lifetime, default_lifetime=hub.default_lifetime)
        waker, loop = waker_of(app), asyncio.get_running_loop()
        svc.wake = lambda group, topic, snap: loop.call_soon_threadsafe(waker.notify, group, topic, snap)
        svc.waiting = waker.waiting
    return svc


class NodeCalls:
    """Who calls a node's routes (send, wait) and which node that is, checked once and
    reused for at most ``CHECK_SECONDS`` (:class:`tether.auth.recent.Checks`, as the
    gateway does), so a node's calls after its first cost no token lookup, no
    group lookup and no trip to a worker thread before their own work. A token revoked
    or a user disabled through this replica takes effect at once (the cache starts
    afresh), through another within ``CHECK_SECONDS``; expiry and source caveats are
    checked on every call; a token that counts its uses is checked every time. A node's
    place (group, space, role) never changes once the group is created."""

    def __init__(self, svc: JobService):
        self.svc = svc
        self.checks = Checks()  # (group, node, sha256 of the secret) -> the allowed AuthContext
        self.places = Recent()  # (group, node) -> Place

    async def place(self, request: Request, group: str, node: str) -> tuple[AuthContext, Place]:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        key = Checks.key(group, node, secret=secret.strip())
        host = request.client.host if request.client else None
        known = self.checks.allowed(key, host) if scheme.lower() == "bearer" else None  # else: checked in full
        place = self.places.get((group, node)) if known is not None else None
        if place is not None:
            ctx = replace(known, source=normalise_source(host), trail={})
            ctx.require("job.write", Resource(space=place.space, job=group, path=node))  # the audit's fields
            request.state.auth = ctx
            return ctx, place

        def check() -> tuple[AuthContext, Place]:
            ctx = caller(request)
            return ctx, self.svc.place(ctx, group, node)

        ctx, place = await _run(check)
        self.checks.keep(key, ctx)
        self.places.put((group, node), place)
        return ctx, place


def node_calls_of(app) -> NodeCalls:
    c = getattr(app.state, "job_node_calls", None)
    if c is None:
        c = app.state.job_node_calls = NodeCalls(_svc_for(app))
    return c


class EndWriter:
    """The bookkeeping of answered waits (last seen, what a node waits on, that a
    barrier's completion was told), written after the answers leave and in batches:
    the answers one wake-up releases are one transaction, not a thousand."""

    def __init__(self, svc: JobService):
        self.svc = svc
        self.pending: list[tuple[Place, bool, core.Sync | None]] = []
        self.task: asyncio.Future | None = None

    def add(self, place: Place, finished: bool, told: core.Sync | None) -> None:
        if not finished:
            return  # a pending answer writes nothing (see JobService.end)
        self.pending.append((place, finished, told))
        if self.task is None:
            self.task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self.pending:
                await asyncio.sleep(0.005)  # the other answers of this wake-up queue theirs meanwhile
                batch, self.pending = self.pending, []
                try:
                    await _run(self.svc.end_many, batch)
                except Exception:  # the database blinked: the nodes' next calls write it again
                    log.exception("could not record %d answered waits", len(batch))
        finally:
            self.task = None


def end_writer_of(app) -> EndWriter:
    w = getattr(app.state, "job_end_writer", None)
    if w is None:
        w = app.state.job_end_writer = EndWriter(_svc_for(app))
    return w


def waker_of(app) -> Waker:
    w = getattr(app.state, "job_waker", None)
    if w is None:
        w = app.state.job_waker = Waker()
        # hub shutdown answers held waits at once (tether.cli.hub runs these hooks)
        getattr(app.state, "drain_hooks", []).append(w.close)
    return w


class CreateIn(StrictModel):
    name: str = Field(max_length=64)
    space: str = Field(max_length=128)
    roles: dict[Name, int] = Field(default_factory=dict, max_length=256)
    nodes: dict[Name, Name] = Field(default_factory=dict, max_length=core.MAX_NODES)
    timeout: str | None = Field(default=None, max_length=32)
    expires: str | None = Field(default=None, max_length=32)
    essential: list[Name] = Field(default_factory=list, max_length=256)
    lost_after: str | None = Field(default=None, max_length=32)


class SendIn(StrictModel):
    id: str = Field(max_length=1024)  # the core names what is wrong with a bad one
    data: dict[str, Any] | None = None


class WaitIn(StrictModel):
    id: str = Field(max_length=1024)
    kind: Literal["any", "all", "sync"]
    role: str | None = Field(default=None, max_length=1024)
    generation: int | None = Field(default=None, ge=1, le=2**31)
    call: str | None = Field(default=None, max_length=64)  # a sync call's token: asking again is the same call
    timeout: float = Field(default=MAX_HOLD, ge=0, le=3600)


class StateIn(StrictModel):
    state: Literal["joined", "done", "failed"]
    reason: str = Field(default="", max_length=500)


class CancelIn(StrictModel):
    reason: str = Field(default="", max_length=500)


async def _run(fn, *args):
    return await anyio.to_thread.run_sync(fn, *args)


@router.post("", status_code=201)
async def create(body: CreateIn, ctx: Caller, request: Request):
    """Create a group and mint one token per node (scope ``job:GROUP/NODE``)."""
    svc = _svc(request)
    out = await _run(lambda: svc.create(
        ctx, body.name, body.space, body.roles, body.nodes, timeout=body.timeout, expires=body.expires,
        essential=body.essential, lost_after=body.lost_after))
    return JSONResponse(out, status_code=201)


@router.get("")
async def list_groups(ctx: Caller, request: Request, space: Annotated[str | None, Query(max_length=128)] = None):
    return await _run(_svc(request).list, ctx, space)


@router.get("/me")
async def me(ctx: Caller, request: Request):
    """The group, node and role of the calling node token, and the group's nodes (for lava-group)."""
    return await _run(_svc(request).whoami, ctx)


@router.get("/{group}")
async def status(group: str, ctx: Caller, request: Request):
    return await _run(_svc(request).status, ctx, group)


@router.post("/{group}/cancel")
async def cancel(group: str, body: CancelIn, ctx: Caller, request: Request):
    return await _run(_svc(request).cancel, ctx, group, body.reason)


@router.post("/{group}/nodes/{node}/state")
async def set_state(group: str, node: str, body: StateIn, ctx: Caller, request: Request):
    svc = _svc(request)
    return await _run(lambda: svc.mark(ctx, svc.place(ctx, group, node), body.state, body.reason))


# The node routes check their caller themselves (NodeCalls): the token as Caller does it,
# reused for a second. BEARER only declares the scheme in the API's description.
Bearer = Annotated[Any, Depends(BEARER)]


@router.post("/{group}/nodes/{node}/send")
async def send(group: str, node: str, body: SendIn, request: Request, _bearer: Bearer = None):
    svc = _svc(request)
    _, place = await node_calls_of(request.app).place(request, group, node)
    # one trip to a worker thread: a send is what a waiter's wake-up waits for
    return await _run(svc.send, place, body.id, body.data)


class Holds:
    """How many waits this replica holds, at most ``limit`` (``job_max_waits``): each costs
    a socket and ~36 KiB, so past it a wait is refused at once (503, Retry-After) and the
    client asks again, rather than the replica holding without bound."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0

    def take(self) -> None:
        if self.held >= self.limit:
            raise Problem(503, "too-many-waits",
                          f"this hub replica holds its most waits at once ({self.limit}, setting job_max_waits); "
                          f"ask again in {BUSY_RETRY_AFTER} s (`tether job` does so by itself)",
                          headers={"Retry-After": str(BUSY_RETRY_AFTER)})
        self.held += 1

    def give(self) -> None:
        self.held -= 1


def holds_of(app) -> Holds:
    h = getattr(app.state, "job_holds", None)
    if h is None:
        h = app.state.job_holds = Holds(app.state.hub.settings.job_max_waits)
        app.state.hub.metrics.job_waits.set_function(lambda: h.held)
    return h


@router.post("/{group}/nodes/{node}/wait")
async def wait(group: str, node: str, body: WaitIn, request: Request, _bearer: Bearer = None):
    svc = _svc(request)
    _, place = await node_calls_of(request.app).place(request, group, node)
    holds = holds_of(request.app)
    holds.take()  # on the event loop: no lock needed
    try:
        return await _held_wait(svc, place, body, request)
    finally:
        holds.give()


async def _held_wait(svc: JobService, place: Place, body: WaitIn, request: Request) -> Response:
    # The audit record is of the change (an arrival, a new wait), written durably when
    # it is made; asking again changes nothing and is not recorded, and the answers a
    # barrier releases at once do not each wait for an audit commit.
    request.state.read_only = True
    head, told = await hold_answer(svc, waker_of(request.app), place, body.kind,
                                   body.id, body.role, body.generation, min(body.timeout, MAX_HOLD), body.call,
                                   end_writer_of(request.app), request.state.record_change)
    # The bytes as they go: the outcome's part is encoded once for all the waiters it
    # is the same for (a barrier's thousand answers; a wait-all's data, however large).
    return Response(_dumps(head)[:-1] + b"," + told.json() + b"}", media_type="application/json")


def _dumps(value: Any) -> bytes:
    """JSON as JSONResponse writes it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class Told:
    """An outcome as a wait's answer says it: its fields, shared by every waiter it is
    the same for, and their JSON (without the braces), encoded once when first asked."""

    __slots__ = ("fields", "_json")

    def __init__(self, out: core.Outcome):
        if isinstance(out, core.Done):
            self.fields: dict[str, Any] = {"state": "done", "data": out.data}
        elif isinstance(out, core.Failed):
            self.fields = {"state": "failed", "reason": out.reason, "nodes": list(out.nodes)}
        else:
            self.fields = {"state": "pending", "awaited": list(out.awaited)}
        self._json: bytes | None = None

    def json(self) -> bytes:
        if self._json is None:
            self._json = _dumps(self.fields)[1:-1]
        return self._json


async def hold_wait(svc: JobService, waker: Waker, place: Place, kind: str, msg_id: str, role: str | None,
                    generation: int | None, hold: float, call: str | None = None) -> dict[str, Any]:
    """:func:`hold_answer`'s answer as one dictionary (the LAVA listener's)."""
    head, told = await hold_answer(svc, waker, place, kind, msg_id, role, generation, hold, call)
    return {**head, **told.fields}


async def hold_answer(svc: JobService, waker: Waker, where: Place | Callable[[], Place], kind: str, msg_id: str,
                      role: str | None, generation: int | None, hold: float, call: str | None = None,
                      later: EndWriter | None = None, record=None) -> tuple[dict[str, Any], Told]:
    """Begin (or resume) a wait and hold it until it completes, fails or ``hold`` passes;
    answer this node's part of the reply and the outcome's (shared) part. ``where``: the
    node, or how to resolve it (in the same worker thread as the wait's beginning).
    With ``later``, the closing bookkeeping (last seen, what the node waits on, that
    it was told) is written after the answer leaves, batched with the other answers
    of the same wake-up. Only callers whose calls carry a generation or call token
    may defer it (the HTTP API): LAVA's identical polls need "told" written first.
    ``record``: awaited once the wait changed the group (arrived, joined, began to wait
    on something new), before it is held: the hub's audit record of that change."""
    def begin() -> tuple[Place, core.Wait, bool]:
        place = where() if callable(where) else where
        return place, *svc.begin(place, kind, msg_id, role, generation, call)  # it wakes whom it concerns

    place, w, changed = await _run(begin)
    if changed and record is not None:
        await record()
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + hold
    topic = topic_of(w)
    while True:
        ev = waker.event(place.group, topic)  # before reading: a change after the read sets it
        snap, outcomes = await _shared_snapshot(svc, waker, ev, place, topic, w)
        if snap.lost_after:  # ask again often enough that the asking keeps the node seen
            end = min(end, start + snap.lost_after / 3)
        now = time.time()
        try:
            out, told = _outcome(outcomes, snap, place.node, w, now)
        except core.JobError as exc:
            raise problem_of(exc) from None
        left = end - loop.time()
        if not isinstance(out, core.Pending) or left <= 0 or waker.closing:
            break
        if out.recheck_at is not None:
            left = min(left, max(0.001, out.recheck_at - now + 0.001))
        try:
            async with asyncio.timeout(left):  # no task of its own, unlike wait_for
                await ev.wait()
        except TimeoutError:
            pass
    finished = not isinstance(out, core.Pending)
    synced = w if isinstance(w, core.Sync) and isinstance(out, core.Done) else None
    # a bare sync (no generation, no call token) asking next is told from its last call by
    # "told" alone, so that is written before it answers; everything else is batched
    if later is not None and (synced is None or generation is not None or call is not None):
        later.add(place, finished, synced)
    else:
        await _run(svc.end, place, finished, synced)
    head: dict[str, Any] = {"id": msg_id, "kind": kind, "node": place.node}
    if isinstance(w, core.Sync):
        head["generation"] = w.generation
    return head, told


def _outcome(outcomes: dict, snap: core.Snapshot, me: str, w: core.Wait, now: float) -> tuple[core.Outcome, Told]:
    """``core.evaluate``, decided once per snapshot for every waiter it is the same for:
    a sync's, a wait-all's or a join's outcome does not depend on who asks, nor does a
    wait's once it is done. A pending outcome holds until its ``recheck_at`` (when
    someone it awaits would count as lost); a failure or completion, for good."""
    for key in (w, (w, me)):
        hit = outcomes.get(key)
        if hit is not None and (hit[1] is None or now < hit[1]):
            return hit[0], hit[2]
    out = core.evaluate(snap, me, w, now)
    shared = not isinstance(w, core.WaitAny) or isinstance(out, core.Done)
    told = Told(out)
    outcomes[w if shared else (w, me)] = (out, out.recheck_at if isinstance(out, core.Pending) else None, told)
    return out, told


async def _shared_snapshot(svc: JobService, waker: Waker, ev: asyncio.Event, place: Place, topic: str,
                           w: core.Wait):
    """The waiters of one topic share one read per change, and the outcomes evaluated
    on it: a barrier of a thousand nodes reads the group once when it completes, and
    decides once that it did, not a thousand times."""
    key = (place.group, topic)
    hit = waker.shared.get(key)
    if hit is None or hit[0] is not ev:
        if isinstance(w, core.Sync):
            load = lambda: svc.snapshot(place.group_id, syncs=w.id)  # noqa: E731
        else:
            load = lambda: svc.snapshot(place.group_id, messages=w.id or None)  # noqa: E731
        task = asyncio.ensure_future(_run(load))
        waker.shared[key] = hit = (ev, task, {})
    return await asyncio.shield(hit[1]), hit[2]


# ---------------------------------------------------------------------- background


async def listen_for_changes(database_url: str, waker: Waker) -> None:
    """On PostgreSQL, wake this replica's waiters when another replica changes a group
    (its writes NOTIFY at commit). Reconnects on its own; after a reconnect every
    waiter looks again, since a notification may have been missed meanwhile."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    delay = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                waker.notify_all()
                delay = 0.5
                async for n in conn.notifies():
                    group, _, topic = n.payload.partition("\t")
                    waker.notify(group, topic or None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database restarted or is unreachable: retry
            log.warning("job notifications: %s; reconnecting in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


async def background(app) -> None:
    """What the job capability runs while the hub does."""
    hub = app.state.hub
    async with anyio.create_task_group() as tg:
        if hub.db.dialect == "postgresql":
            tg.start_soon(listen_for_changes, hub.db.url, waker_of(app))
        if hub.settings.lava_listen:
            from tether.job.lava import serve

            tg.start_soon(serve, app, hub.settings.lava_listen, getattr(app.state, "listeners", {}).get("lava_listen"))
