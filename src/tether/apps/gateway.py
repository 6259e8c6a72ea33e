"""The gateway's resolver for app instances: each instance is the route ``APP--USER``.

For a request whose route names an instance it decides: refuse (no session, not
the owner, a token without ``app:SPACE/APP``), start the instance first (it was
stopped while idle: scale to zero), relay to its socket when this replica holds
its sandbox, or pass the request to the replica that does. The app never sees
tether's credentials (the gateway strips its cookie and Authorization); it gets the
signed-in user's name in ``X-Tether-User``, which no client can set.

A running instance's row and an allowed credential's check are reused for at most
:data:`tether.auth.recent.CHECK_SECONDS` (forward's pattern), so a busy instance costs
no database read and no thread hop per request. What this replica takes away (a token
revoked, a user disabled, an unshare, a stop or rm: :mod:`tether.auth.epoch`), or an
instance its supervisor stopped, is refused at once; what another replica takes away,
within that second.
"""

from __future__ import annotations

import asyncio
import html
import logging
import ssl
from urllib.parse import parse_qs

from tether.apps.service import Instance
from tether.apps.supervisor import AppsRuntime
from tether.gateway import core as gw
from tether.gateway.proxy import Decision, Forward, Refuse, Reply, Request, TCPUpstream, UnixUpstream
from tether.auth.recent import Checks, Recent
from tether.problems import Problem

log = logging.getLogger("tether.apps")

_PAGE_HEADERS = [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]


class AppsResolver:
    def __init__(self, runtime: AppsRuntime):
        self.runtime = runtime
        self.secure = runtime.address.scheme == "https"
        self.instances = Recent()  # (owner, app) -> its row, while it runs
        self.checks = Checks()  # (instance, its token, source, method, upgrade, sha256 of the secret) -> allowed ctx

    def _recent(self, owner: str, name: str) -> Instance | None:
        """The running instance read within CHECK_SECONDS, unless this replica stopped it since."""
        inst = self.instances.get((owner, name))
        if inst is not None and self.runtime.mine(inst) and not self.runtime.serving(inst):
            return None  # this replica stopped it since (idle, crashed, moved): read it afresh
        return inst

    async def _lookup(self, owner: str, name: str) -> Instance | None:
        inst = self._recent(owner, name)
        if inst is None:
            inst = await asyncio.to_thread(self.runtime.service.lookup, owner, name)
            if inst is not None and inst.state == "running" and inst.desired == "running" and inst.holder:
                self.instances.put((owner, name), inst)
        return inst

    async def __call__(self, request: Request, target: gw.Target) -> Decision | None:
        """A decision for an instance's route, or None when no instance has this name."""
        owner, name = target.route
        inst = await self._lookup(owner, name)
        if inst is None:
            return None
        path = target.path.partition(b"?")[0]
        if path.startswith(gw.CONTROL_PREFIX.encode()):
            return await self._control(request, target, inst, path)
        secret = request.credential(gw.cookie_name(self.secure, target.prefix))
        upgrade = gw.is_upgrade(request.headers)
        if secret is None:
            return Refuse(401, "sign-in-needed", f"sign in to {name} with the link `tether app open {name}` prints "
                          f"(or send a bearer token scoped app:{inst.space}/{name})",
                          [(b"www-authenticate", b'Bearer realm="tether"')])
        key = Checks.key(inst.id, inst.token_id, request.client_ip, request.method, upgrade, secret=secret)
        ctx = self.checks.allowed(key, request.client_ip)
        if ctx is None:
            try:
                access, ctx = await asyncio.to_thread(self.runtime.service.authorize, inst, secret,
                                                      source=request.client_ip, method=request.method,
                                                      upgrade=upgrade)
            except Problem as p:
                return Refuse(p.status, p.slug,
                              f"{p.detail}; sign in again with a fresh link (`tether app open {name}`)")
            if not access.allowed:
                await self._audit("app.access", inst, request, access.status, f"{access.slug}: {access.reason}",
                                  user=ctx.user.name, token_id=ctx.token.id if ctx.token else None)
                return Refuse(access.status, access.slug, access.reason)
            self.checks.keep(key, ctx)
        return await self._route(request, target, inst, ctx.user.name)

    def now(self, request: Request, target: gw.Target) -> Decision | None:
        """The decision without waiting (the gateway spends no task on it) when the running
        instance was read and this credential allowed on it within CHECK_SECONDS and its
        caveats hold now; None when it must be awaited (``__call__``), which checks the rest."""
        inst = self._recent(*target.route)
        if inst is None or target.path.startswith(gw.CONTROL_PREFIX.encode()):
            return None
        secret = request.credential(gw.cookie_name(self.secure, target.prefix))
        if secret is None:
            return None
        key = Checks.key(inst.id, inst.token_id, request.client_ip, request.method, gw.is_upgrade(request.headers),
                         secret=secret)
        ctx = self.checks.allowed(key, request.client_ip)
        if ctx is None:
            return None
        return self._to_instance(request, target, inst, ctx.user.name)

    async def _route(self, request: Request, target: gw.Target, inst: Instance, user: str) -> Decision:
        runtime = self.runtime
        if not runtime.mine(inst) and (inst.holder or "").partition("#")[0] == runtime.internal:
            # a previous run of this replica held it: wait for the adoption after the restart
            if await asyncio.to_thread(runtime.adopted.wait, 20.0):
                inst = await asyncio.to_thread(runtime.service.lookup, inst.owner, inst.app) or inst
        if inst.desired == "stopped" or inst.state == "stopped":
            return Refuse(503, "instance-stopped", f"{inst.app} of {inst.owner} is stopped; start it with "
                          f"`tether app start {inst.app}`")
        if inst.desired == "removed":
            return Refuse(404, "no-such-route", f"{inst.app} of {inst.owner} is being removed")
        if inst.holder is None and inst.state == "failed":
            return Refuse(503, "instance-failed", f"{inst.app} of {inst.owner} did not start; see `tether app "
                          f"status {inst.app}`, then `tether app start {inst.app}`", [(b"retry-after", b"5")])
        if inst.holder is None and inst.state in ("idle", "starting") and not request.hop():
            try:  # stopped while idle: this request starts it again (scale to zero), here
                inst = await asyncio.to_thread(runtime.ensure_running, inst, states=("idle", "starting"))
            except Problem as p:
                return Refuse(p.status, p.slug, p.detail, [(b"retry-after", b"5")])
        return self._to_instance(request, target, inst, user) or Refuse(
            503, "instance-starting", f"{inst.app} of {inst.owner} is starting or moving between replicas; retry "
            "shortly", [(b"retry-after", b"2")])

    def _to_instance(self, request: Request, target: gw.Target, inst: Instance, user: str) -> Decision | None:
        """An allowed request to a running instance: to its socket when this replica holds
        its sandbox, else to the replica that does; None when neither is known here."""
        runtime = self.runtime
        if runtime.mine(inst):
            sock = runtime.root / "run" / inst.sandbox / "app.sock"
            return Forward(UnixUpstream(str(sock)), target, runtime.counter(inst),
                           headers=[(gw.USER_HEADER, user.encode())])
        peer = (inst.holder or "").partition("#")[0]
        if request.hop() or not peer or peer == runtime.internal:
            return None
        host, _, port = peer.rpartition(":")
        context = ssl.create_default_context() if self.secure else None
        return Forward(TCPUpstream(host.strip("[]"), int(port), ssl=context, server_hostname=request.host),
                       target, passthrough=True)

    async def _control(self, request: Request, target: gw.Target, inst: Instance, path: bytes) -> Decision:
        action = path[len(gw.CONTROL_PREFIX):].decode("latin-1")
        query = parse_qs(target.path.partition(b"?")[2].decode("latin-1"), max_num_fields=4)
        cookie = gw.cookie_name(self.secure, target.prefix)
        if action == "signin" and request.method in (b"GET", b"HEAD"):
            ticket = (query.get("ticket") or [""])[0]
            if not ticket:
                return Refuse(400, "no-ticket", f"this sign-in link has no ticket; run `tether app open {inst.app}`")
            try:
                session, max_age = await asyncio.to_thread(self.runtime.service.open_session, inst, ticket,
                                                           source=request.client_ip)
            except Problem as p:
                await self._audit("app.signin", inst, request, 403, f"{p.slug}: {p.detail}",
                                  user=p.trail.get("user"), token_id=p.extra.get("token_id"))
                return Refuse(p.status if p.status != 401 else 403, p.slug,
                              f"this sign-in link cannot be used: {p.detail}; ask for a new one")
            await self._audit("app.signin", inst, request, 303, "session opened", user=inst.owner, token_id=None)
            where = gw.safe_next((query.get("next") or [""])[0], target.prefix)
            return Reply(303, [(b"location", where.encode()), *_PAGE_HEADERS,
                               (b"set-cookie", gw.session_cookie(cookie, session, secure=self.secure, max_age=max_age,
                                                                 prefix=target.prefix))])
        if action == "signout":
            body = f"<!doctype html><title>Signed out</title><p>Signed out of {html.escape(inst.app)}.".encode()
            return Reply(200, [(b"content-type", b"text/html; charset=utf-8"), *_PAGE_HEADERS,
                               (b"set-cookie", gw.session_cookie(cookie, "", secure=self.secure, max_age=0,
                                                                 prefix=target.prefix))], body)
        return Refuse(404, "not-found", f"no such gateway page: {gw.CONTROL_PREFIX}{action[:40]}")

    async def _audit(self, action: str, inst: Instance, request: Request, status: int, reason: str, *,
                     user: str | None, token_id: str | None) -> None:
        from tether.auth import audit
        from tether.db.models import utcnow

        fields = dict(at=utcnow(), user=user, token_id=token_id, action=action,
                      resource=f"app:{inst.space}/{inst.app} instance of {inst.owner} via gateway",
                      source=request.client_ip, outcome="allowed" if status < 400 else "denied", status=status,
                      reason=reason[:500])
        try:
            await asyncio.to_thread(audit.record, self.runtime.db, **fields)
        except Exception:  # noqa: BLE001 - auditing must not turn an answer into a failure; say so
            log.exception("could not write an audit record")
