"""Forward's side of the gateway: which route a request is for, whether it may pass,
and the sign-in that turns a one-time link into a session cookie on the route's origin.

Control paths on every route's origin (never passed to the app):

- ``/_tether/signin?ticket=SECRET&next=PATH``: spend a sign-in or share link, set the
  session cookie (``__Host-`` over HTTPS, HttpOnly, SameSite=Lax, this origin only)
  and redirect to ``next`` on the same route;
- ``/_tether/signout``: revoke the session and drop the cookie.
"""

from __future__ import annotations

import asyncio
import html
import logging
import ssl
from urllib.parse import parse_qs

from tether.forward.runtime import ForwardRuntime
from tether.gateway import core as gw
from tether.gateway.core import Access
from tether.gateway.proxy import Decision, Forward, Refuse, Reply, Request, TCPUpstream
from tether.auth.recent import CHECK_SECONDS, Checks, Recent  # noqa: F401 - CHECK_SECONDS: forward's bound, named here too
from tether.problems import Problem

log = logging.getLogger("tether.forward")

_PAGE_HEADERS = [(b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
                 (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]


class SSHUpstream:
    """One channel back to the node's socket, over the SSH connection that holds the route;
    each one counted as an open connection of the route until it closes."""

    def __init__(self, opener, opened):
        self.opener, self.opened = opener, opened
        self.key = opener  # the same route's channels: one kept per browser connection between requests

    async def connect(self, factory):
        protocol = factory()
        await self.opener(lambda: _ChannelSession(protocol, self.opened))
        return protocol


class _ChannelSession:
    """An asyncssh session that hands a channel to an asyncio protocol: the channel is its
    transport (write, writelines, pause_reading, close...), the session's callbacks are its."""

    def __init__(self, protocol, opened):
        self.protocol, self.opened, self.closed = protocol, opened, None

    def connection_made(self, channel) -> None:
        self.closed = self.opened()
        self.protocol.connection_made(channel)

    def connection_lost(self, exc) -> None:
        if self.closed is not None:
            self.closed()
            self.closed = None
        self.protocol.connection_lost(exc)

    def session_started(self) -> None:
        pass

    def data_received(self, data, datatype) -> None:
        self.protocol.data_received(data)

    def eof_received(self) -> bool:
        return bool(self.protocol.eof_received())

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()


class ForwardResolver:
    def __init__(self, runtime: ForwardRuntime):
        self.runtime = runtime
        self.secure = runtime.address.scheme == "https"
        self.routes = Recent()  # (owner, name) -> a live Route
        self.checks = Checks()  # (route, its token, source, method, upgrade, sha256 of the secret) -> allowed ctx

    def knows(self, route: gw.RouteKey) -> bool:
        """Whether a live route of this name was read within CHECK_SECONDS."""
        return self.routes.get(tuple(route)) is not None

    def _recent(self, owner: str, name: str):
        """The live route read within CHECK_SECONDS, unless this replica's hold on it changed since."""
        route = self.routes.get((owner, name))
        if route is not None:
            held = self.runtime.live.get((owner, name))
            mine = (route.holder or "").partition("#")[0] == self.runtime.internal
            if (held is None and mine) or (held is not None and held.route.token_id != route.token_id):
                return None  # this replica dropped the node, or it registered again since: read it afresh
        return route

    async def _lookup(self, owner: str, name: str):
        route = self._recent(owner, name)
        if route is None:
            route = await asyncio.to_thread(self.runtime.service.lookup, owner, name)
            if route is not None and route.state == "live":  # only a live route: a reconnect shows at once
                self.routes.put((owner, name), route)
        return route

    async def __call__(self, request: Request) -> Decision:
        target = gw.match(request.host, request.target, self.runtime.address.domain)
        owner, name = target.route
        route = await self._lookup(owner, name)
        if route is None or route.state == "closed":
            return Refuse(404, "no-such-route", f"no live route {name} of {owner} on this gateway")
        if route.state == "reconnecting":
            return Refuse(503, "node-reconnecting", f"the node serving {name} is reconnecting; retry shortly",
                          [(b"retry-after", b"5")])
        path = target.path.partition(b"?")[0]
        if path.startswith(gw.CONTROL_PREFIX.encode()):
            return await self._control(request, target, route, path)
        secret = self._credential(request, target)
        upgrade = gw.is_upgrade(request.headers)
        if secret is None:
            return Refuse(401, "sign-in-needed",
                          f"sign in to {name} with the one-time link `tether forward` printed (or send a bearer "
                          f"token scoped forward:{owner}/{name})", [(b"www-authenticate", b'Bearer realm="tether"')])
        key = Checks.key(route.id, route.token_id, request.client_ip, request.method, upgrade, secret=secret)
        if self.checks.allowed(key, request.client_ip) is None:
            try:
                access, _ctx = await asyncio.to_thread(self.runtime.service.authorize, route, secret,
                                                       source=request.client_ip, method=request.method,
                                                       upgrade=upgrade)
            except Problem as p:
                return Refuse(p.status, p.slug, f"{p.detail}; sign in again with a fresh link")
            if access.allowed:
                self.checks.keep(key, _ctx)
        else:
            access = Access(True)
        if not access.allowed:
            await self._audit("forward.access", f"route:{owner}/{name}", request, access.status,
                              f"{access.slug}: {access.reason}", user=_ctx.user.name,
                              token_id=_ctx.token.id if _ctx.token else None)
            return Refuse(access.status, access.slug, access.reason)
        return self._to_route(request, target, route)

    def now(self, request: Request) -> Decision | None:
        """The decision without waiting (so the gateway spends no task on it) when the route
        was read and this credential allowed on it within CHECK_SECONDS and its caveats
        hold now; None when it must be awaited (``__call__``), which checks the rest."""
        target = gw.match(request.host, request.target, self.runtime.address.domain)
        route = self._recent(*target.route)
        if route is None or route.state != "live" or target.path.startswith(gw.CONTROL_PREFIX.encode()):
            return None
        secret = self._credential(request, target)
        if secret is None:
            return None
        key = Checks.key(route.id, route.token_id, request.client_ip, request.method,
                         gw.is_upgrade(request.headers), secret=secret)
        if self.checks.allowed(key, request.client_ip) is None:
            return None
        return self._to_route(request, target, route)

    def _to_route(self, request: Request, target: gw.Target, route) -> Decision:
        """An allowed request: to the node's channel when this replica holds it, else to the replica that does."""
        owner, name = target.route
        held = self.runtime.live.get((owner, name))
        if held is not None and held.route.token_id == route.token_id:
            return Forward(SSHUpstream(held.opener, lambda: self.runtime.connection_opened(route.id)), target,
                           self.runtime.counter(route),
                           on_status=self.runtime.status_counter(route))
        peer = (route.holder or "").partition("#")[0]
        if request.hop() or not peer or peer == self.runtime.internal:
            return Refuse(503, "route-elsewhere", f"route {name} is between nodes or replicas; retry shortly",
                          [(b"retry-after", b"2")])
        # another replica holds the node's connection: pass the request on as it came
        host, _, port = peer.rpartition(":")
        context = ssl.create_default_context() if self.secure else None
        return Forward(TCPUpstream(host.strip("[]"), int(port), ssl=context, server_hostname=request.host),
                       target, on_status=self.runtime.status_counter(route), passthrough=True)

    def _credential(self, request: Request, target: gw.Target) -> str | None:
        return request.credential(gw.cookie_name(self.secure, target.prefix))

    async def _control(self, request: Request, target: gw.Target, route, path: bytes) -> Decision:
        action = path[len(gw.CONTROL_PREFIX):].decode("latin-1")
        query = parse_qs(target.path.partition(b"?")[2].decode("latin-1"), max_num_fields=4)
        if action == "signin" and request.method in (b"GET", b"HEAD"):
            ticket = (query.get("ticket") or [""])[0]
            if not ticket:
                return Refuse(400, "no-ticket", "this sign-in link has no ticket; run `tether forward` again")
            resource = f"route:{route.owner}/{route.name}"
            try:
                session, max_age, _access = await asyncio.to_thread(
                    self.runtime.service.open_session, route, ticket, source=request.client_ip)
            except Problem as p:
                await self._audit("forward.signin", resource, request, 403, f"{p.slug}: {p.detail}",
                                  user=p.trail.get("user"), token_id=p.extra.get("token_id"))
                return Refuse(p.status if p.status != 401 else 403, p.slug,
                              f"this sign-in link cannot be used: {p.detail}; ask for a new one")
            await self._audit("forward.signin", resource, request, 303, "session opened",
                              user=route.owner, token_id=ticket.split("_")[1] if ticket.count("_") >= 2 else None)
            where = gw.safe_next((query.get("next") or [""])[0], target.prefix)
            cookie = gw.session_cookie(gw.cookie_name(self.secure, target.prefix), session, secure=self.secure,
                                       max_age=max_age, prefix=target.prefix)
            return Reply(303, [(b"location", where.encode()), *_PAGE_HEADERS, (b"set-cookie", cookie)])
        if action == "signout":
            secret = self._credential(request, target)
            if secret is not None:
                await asyncio.to_thread(self._end_session, secret)
            body = f"<!doctype html><title>Signed out</title><p>Signed out of {html.escape(route.name)}.".encode()
            return Reply(200, [(b"content-type", b"text/html; charset=utf-8"), *_PAGE_HEADERS,
                               (b"set-cookie", gw.session_cookie(gw.cookie_name(self.secure, target.prefix), "",
                                                                 secure=self.secure, max_age=0, prefix=target.prefix))],
                         body)
        return Refuse(404, "not-found", f"no such gateway page: {gw.CONTROL_PREFIX}{action[:40]}")

    async def _audit(self, action: str, resource: str, request: Request, status: int, reason: str, *,
                     user: str | None, token_id: str | None) -> None:
        """Sign-ins and refusals of known callers go to the audit trail (anonymous refusals
        do not: a flood of them must not fill it)."""
        from tether.auth import audit
        from tether.db.models import utcnow

        outcome = "allowed" if status < 400 else "denied"
        fields = dict(at=utcnow(), user=user, token_id=token_id, action=action, resource=resource + " via gateway",
                      source=request.client_ip, outcome=outcome, status=status, reason=reason[:500])
        try:
            await asyncio.to_thread(audit.record, self.runtime.service.db, **fields)
        except Exception:  # noqa: BLE001 - auditing must not turn an answer into a failure; say so
            log.exception("could not write an audit record")

    def _end_session(self, secret: str) -> None:
        from tether.auth import service as auth
        from tether.db.models import utcnow

        try:
            ctx = auth.authenticate(self.runtime.service.db, secret, source=None, now=utcnow())
            if ctx.token is not None:
                auth.revoke(self.runtime.service.db, ctx, ctx.token.id, now=utcnow())
        except Problem:
            pass  # already ended
