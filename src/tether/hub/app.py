"""Assemble the hub's ASGI application: storage, errors, metrics, audit, routes."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from datetime import timedelta
from urllib.parse import unquote

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tether import __version__
from tether.auth import audit
from tether.auth.failures import failure_limiter
from tether.auth.service import parse_lifetime
from tether.config import HubSettings
from tether.db import Database
from tether.db.models import utcnow
from tether.hub import openapi
from tether.hub.bodies import timed_receive
from tether.hub.limits import UploadSlots
from tether.hub.metrics import Metrics
from tether.log.reconcile import DEFAULT_MAX_MESSAGE
from tether.problems import Problem

log = logging.getLogger("tether.hub")

PROBLEM_JSON = "application/problem+json"
_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
_REFUSALS = {401, 403, 429}


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


class HubState:
    """Everything a request handler needs, hung on ``app.state.hub``."""

    def __init__(self, settings: HubSettings, db: Database):
        self.settings = settings
        self.db = db
        self.max_lifetime = parse_lifetime(settings.token_max_lifetime, "token_max_lifetime")
        self.default_lifetime = min(
            parse_lifetime(settings.token_default_lifetime, "token_default_lifetime"), self.max_lifetime
        )
        self.limiter = failure_limiter(db, settings.auth_failures_per_minute)  # shared on PostgreSQL
        self.metrics = Metrics()
        self.audit_writer = audit.AuditWriter(db)  # runs while the app does (see its lifespan)
        self.refusals = audit.RefusalTally()  # written every audit_anonymous_interval (see the lifespan)
        self.reads = audit.ReadTally()  # scoped tokens' reads, written every audit_read_interval
        # Uploads store their bodies in a pool of their own: however many are in progress,
        # the threads of the API, downloads and /healthz stay free.
        self.upload_slots = UploadSlots(db, settings.uploads_per_token, settings.uploads_per_user,
                                        settings.upload_lease_seconds)  # leases in the database (see its lifespan)
        self.metrics.uploads.set_function(lambda: self.upload_slots.in_progress)
        self.upload_threads = anyio.CapacityLimiter(settings.upload_threads)


def _scoped(ctx) -> bool:
    """A scoped token's request (what an untrusted machine holds)."""
    return ctx is not None and ctx.caveats is not None and bool(ctx.caveats.scopes)


def problem_response(p: Problem, request: Request | None = None) -> JSONResponse:
    if request is not None:
        request.state.problem = p
    return JSONResponse(p.body(), status_code=p.status, headers=p.headers, media_type=PROBLEM_JSON)


class HubMiddleware:
    """Pure ASGI middleware: request-size limit, metrics and the audit trail.

    Pure ASGI rather than BaseHTTPMiddleware: it costs little per request and
    never buffers a streamed body.
    """

    def __init__(self, app, hub: HubState):
        self.app = app
        self.hub = hub

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})
        observed = False
        audited = False

        limit = self._body_limit(scope["method"], scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if _has_control(scope.get("path", "")) or _has_control(unquote(scope.get("query_string", b"").decode("latin-1"))):
            p = Problem(400, "bad-request", "control characters (such as NUL) are not allowed in URLs")
            state["problem"] = p
            await problem_response(p)(scope, receive, send)
            status = 400
        elif declared is not None and limit is not None and (not declared.isdigit() or int(declared) > limit):
            p = Problem(413, "request-too-large", f"request bodies are limited to {limit} bytes")
            state["problem"] = p
            await problem_response(p)(scope, receive, send)
            status = 413
        else:
            seen = 0
            timed = timed_receive(receive, idle=self.hub.settings.body_idle_timeout,
                                  min_rate=self.hub.settings.body_min_rate)

            async def limited_receive():
                nonlocal seen
                message = await timed()
                if message["type"] == "http.request" and limit is not None:
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise Problem(413, "request-too-large", f"request bodies are limited to {limit} bytes")
                return message

            async def record_change() -> None:
                """A long-poll (a job's wait) records its change when it makes it, durably,
                and not when its answer leaves, maybe minutes later with a thousand others
                (it sets ``read_only`` too, so the answer is not recorded again)."""
                await self._audit_durably(self._audit_fields(scope, state, 200))

            state["record_change"] = record_change

            async def capture_send(message):
                nonlocal status, observed, audited
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if scope["method"] in _MUTATING and status < 400 and not state.get("read_only"):
                        # An acknowledged change has its audit row: written (and committed)
                        # before the answer starts, so a replica killed right after
                        # answering has not lost it.
                        audited = True
                        await self._audit_durably(self._audit_fields(scope, state, status))
                elif message["type"] == "http.response.body" and not message.get("more_body") and not observed:
                    # Count before the last byte leaves, so a client that reads /metrics
                    # right after a response sees that response counted.
                    observed = True
                    self._observe(scope, status, started)
                await send(message)

            try:
                await self.app(scope, limited_receive, capture_send)
            except Problem as p:  # raised from limited_receive outside any handler
                state["problem"] = p
                status = p.status
                await problem_response(p)(scope, receive, send)
            finally:
                timed.close()

        if not observed:
            self._observe(scope, status, started)
        read_only = state.get("read_only") and status < 400  # e.g. an allowed dry-run check
        if not audited and ((scope["method"] in _MUTATING and not read_only) or status in _REFUSALS):
            fields = self._audit_fields(scope, state, status)
            if fields["user"] is None and status >= 400:  # anyone can send these, in floods: counted
                self.hub.refusals.add(fields)
            elif not self.hub.audit_writer.submit(fields):  # not running, or too far behind
                await anyio.to_thread.run_sync(self._audit, fields)
        elif scope["method"] in ("GET", "HEAD") and status < 400 and _scoped(state.get("auth")):
            # what an untrusted machine's token read (a download): counted per token and path
            self.hub.reads.add(self._audit_fields(scope, state, status))

    def _body_limit(self, method: str, path: str) -> int | None:
        """JSON bodies are small; manifests and reconcile messages larger; blob
        uploads are streamed and limited by the publishing code itself (None here)."""
        if method in ("PUT", "POST") and path.startswith(("/api/v1/blobs/sha256/", "/api/v1/blobs/batch", "/api/v1/uploads/")):
            return None
        if method == "PUT" and path.startswith("/api/v1/publish/"):
            return None
        if method == "POST" and path.startswith("/api/v1/publish/"):
            return self.hub.settings.max_manifest_bytes
        if method == "POST" and path.startswith("/api/v1/log/") and path.endswith("/reconcile"):
            return DEFAULT_MAX_MESSAGE  # the reconciler's own bound (frames of 1 MiB plus one range)
        return self.hub.settings.max_request_bytes

    def _observe(self, scope, status: int, started: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        self.hub.metrics.observe(scope["method"], route, status, time.perf_counter() - started)

    def _audit_fields(self, scope, state, status: int) -> dict:
        ctx = state.get("auth")
        trail = getattr(ctx, "trail", None) or state.get("trail") or {}
        problem: Problem | None = state.get("problem")
        client = scope.get("client")
        outcome = "allowed" if status < 400 else ("denied" if status in _REFUSALS else "failed")
        return {
            "at": utcnow(),
            "user": ctx.user.name if ctx is not None else trail.get("user"),
            "token_id": (ctx.token.id if ctx is not None and ctx.token is not None else trail.get("token_id")),
            "action": trail.get("action") or f"http.{scope['method']}",
            "resource": trail.get("resource") or scope.get("path", ""),
            "source": client[0] if client else None,
            "outcome": outcome,
            "status": status,
            "reason": (f"{problem.slug}: {problem.detail}" if problem is not None else ""),
        }

    async def _audit_durably(self, fields: dict) -> None:
        """Write a record and return once it is committed (with whatever else the audit
        writer had queued: one commit for many concurrent requests)."""
        loop = asyncio.get_running_loop()
        written = loop.create_future()

        def done() -> None:
            loop.call_soon_threadsafe(lambda: written.done() or written.set_result(None))

        if self.hub.audit_writer.submit(fields, done=done):
            await written
        else:  # not running, or too far behind: write it here
            await anyio.to_thread.run_sync(self._audit, fields)

    def _audit(self, fields: dict) -> None:
        try:
            audit.record(self.hub.db, **fields)
        except Exception:  # never let auditing turn a response into a 500; but say so loudly
            log.exception("could not write an audit record")


def create_app(settings: HubSettings, db: Database | None = None, listeners: dict | None = None) -> FastAPI:
    """The hub's app. ``listeners``: sockets ``tether hub`` bound (setting name ->
    socket: ``ssh_listen``, ``gateway_listen``, ``lava_listen``), served as they are;
    a listener without one binds its setting's address when the app starts."""
    db = db or Database(settings.effective_database_url())
    hub = HubState(settings, db)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        acceptor = gateway = runtime = None
        apps = app.state.apps_runtime
        socks = app.state.listeners
        if settings.gateway_listen:
            gateway, runtime, registrar = await _start_gateway(settings, db, hub.metrics, app.state.apps_resolver,
                                                               socks.get("gateway_listen"))
        if settings.ssh_listen:
            from tether.config import split_listen
            from tether.hub.capabilities import ssh_handlers
            from tether.ssh.embedded import start_server

            host, port = split_listen(settings.ssh_listen)
            acceptor = await start_server(ssh_handlers(runtime), settings, db, host, port,
                                          listener=registrar if runtime is not None else None,
                                          sock=socks.get("ssh_listen"))
        hub.audit_writer.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_prune_audit_forever, hub)
                tg.start_soon(hub.upload_slots.renew_forever)
                tg.start_soon(job_background, app)  # cross-replica wake-ups; the LAVA listener
                if runtime is not None:
                    tg.start_soon(runtime.run)
                if apps is not None:
                    tg.start_soon(apps.run)
                tg.start_soon(_write_tally_forever, hub, hub.refusals, settings.audit_anonymous_interval)
                tg.start_soon(_write_tally_forever, hub, hub.reads, settings.audit_read_interval)
                yield
                tg.cancel_scope.cancel()
        finally:
            if acceptor is not None:
                acceptor.close()
            if gateway is not None:
                gateway.close()
            await _write_tally(hub, hub.refusals)
            await _write_tally(hub, hub.reads)
            # Requests have finished: write the records still queued before exiting.
            await anyio.to_thread.run_sync(hub.audit_writer.stop)

    app = FastAPI(
        title="tether hub",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # hub/openapi.py serves it, with its assets packaged rather than from a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.listeners = dict(listeners or {})
    # Called when the server starts to stop, before it waits for open requests to end:
    # a capability holding requests (job's long-polls) answers them now.
    app.state.drain_hooks = []

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # Name the field and the rule; never echo the input (it may hold a secret).
        errors = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors[:5])
        sent = request.headers.get("content-type", "")
        if any(e["loc"] == ["body"] for e in errors) and "json" not in sent:
            summary += (f" (the body was sent as {sent!r}: send JSON with Content-Type: application/json)" if sent
                        else " (send the body as JSON with Content-Type: application/json)")
        return problem_response(Problem(422, "invalid-request", f"the request is not valid: {summary}", errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, Problem):  # e.g. a body over the limit, met while FastAPI read it
            return problem_response(exc.__cause__, request)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = openapi.allowed_methods(request.app, request.scope)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.url.path} (see /api/v1/openapi.json)"
        return problem_response(Problem(exc.status_code, slug, detail, headers=headers), request)

    @app.exception_handler(OperationalError)
    async def _storage(request: Request, exc: OperationalError):
        # The database is unreachable, restarting or busy: the client should retry.
        log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
        return problem_response(
            Problem(503, "storage-unavailable", "the hub's database is unavailable; retry shortly",
                    headers={"Retry-After": "1"}),
            request,
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect):
        # The client closed the connection in the middle of its body: its mistake (or its
        # network's), not the hub's; each handler keeps only what it had fully received
        log.info("client closed the connection during %s %s", request.method, request.url.path)
        return problem_response(Problem(400, "truncated-request", "the request body ended early: the client "
                                        "closed the connection before sending all of it"), request)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "internal-error", "the hub hit an internal error; see its log"), request)

    @app.get("/healthz", include_in_schema=False)
    async def healthz():  # on the event loop: answers even when every thread is busy
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics():
        body, content_type = hub.metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    from tether.auth.api import router
    from tether.auth.sessions import router as sessions_router
    from tether.blobs import open_store
    from tether.publish.api import files_router
    from tether.publish.api import router as publish_router
    from tether.publish.service import Publisher

    store = open_store(settings.effective_blob_store(), endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
    app.state.publisher = Publisher(settings, db, store)
    app.state.apps_runtime = app.state.apps_resolver = None
    if settings.gateway_listen:  # instances are served by the gateway: no gateway, no apps
        from tether.hub.capabilities import apps_runtime

        app.state.apps_runtime, app.state.apps_resolver = apps_runtime(settings, db, store, hub.metrics)
    app.include_router(router)
    app.include_router(publish_router)
    app.include_router(files_router)
    from tether.publish.home import router as home_router

    app.include_router(home_router)  # "/" and "/files/": what the caller may read
    app.include_router(sessions_router)
    from tether.forward.api import router as forward_router
    from tether.log.api import router as log_router

    app.include_router(log_router)
    app.include_router(forward_router)
    from tether.job.api import background as job_background
    from tether.job.api import router as job_router

    app.include_router(job_router)
    from tether.signal.api import router as signal_router

    app.include_router(signal_router)
    from tether.apps.api import router as apps_router

    app.include_router(apps_router)
    openapi.install(app)
    from tether.hub.urlcheck import UrlCheck

    app.add_middleware(UrlCheck, settings=settings)  # inside HubMiddleware: its refusals are counted and audited
    app.add_middleware(HubMiddleware, hub=hub)
    return app


async def _start_gateway(settings: HubSettings, db: Database, metrics: Metrics, apps_resolver=None, sock=None):
    """The gateway's listener (forwarded apps and app instances), with the replica's forward state."""
    import ssl

    from tether.config import split_listen
    from tether.gateway.proxy import Gateway, Limits, serve
    from tether.hub.capabilities import forward_runtime, gateway_resolver

    runtime, forward_resolver, registrar = forward_runtime(settings, db, metrics)
    resolver = gateway_resolver(forward_resolver, apps_resolver, runtime.address.domain)
    context = None
    if settings.gateway_tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.gateway_tls_cert, settings.gateway_tls_key)
    host, port = split_listen(settings.gateway_listen)
    # the same head limits as the API listener's (431 past them)
    limits = Limits(max_head_bytes=settings.max_header_bytes, max_headers=settings.max_headers,
                    head_timeout=settings.header_timeout, answer_timeout=settings.gateway_answer_timeout)
    gateway = Gateway(resolver, scheme="https" if context else "http", limits=limits,
                      on_refusal=lambda status: metrics.gateway_requests.labels("-", str(status)).inc(),
                      on_connections=metrics.gateway_connections.set)
    server = await serve(gateway, host, port, ssl=context, sock=sock)
    return server, runtime, registrar


async def _write_tally_forever(hub: HubState, tally: audit.RefusalTally | audit.ReadTally, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        await _write_tally(hub, tally)


async def _write_tally(hub: HubState, tally: audit.RefusalTally | audit.ReadTally) -> None:
    if tally is hub.refusals:  # merged with the other replicas' counts of the same interval
        rows, interval = tally.take(), hub.settings.audit_anonymous_interval
        try:
            await anyio.to_thread.run_sync(lambda: audit.merge_refusals(hub.db, rows, interval=interval, now=utcnow()))
        except Exception:  # never let auditing stop the hub; but say so loudly
            log.exception("could not write the counts of anonymous refusals")
        return
    left = [fields for fields in tally.take() if not hub.audit_writer.submit(fields)]
    if left:  # the writer is not running, or too far behind
        await anyio.to_thread.run_sync(_record_all, hub.db, left)


def _record_all(db: Database, records: list[dict]) -> None:
    for fields in records:
        try:
            audit.record(db, **fields)
        except Exception:  # never let auditing stop the hub; but say so loudly
            log.exception("could not write an audit record")


async def _prune_audit_forever(hub: HubState) -> None:
    while True:
        cutoff = utcnow() - timedelta(days=hub.settings.audit_retention_days)
        try:
            removed = await anyio.to_thread.run_sync(lambda: audit.prune(hub.db, before=cutoff))
            if removed:
                log.info("pruned %d audit records older than %s days", removed, hub.settings.audit_retention_days)
        except Exception:
            log.exception("audit pruning failed; will retry")
        await anyio.sleep(3600)
