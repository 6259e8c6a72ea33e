"""Forward's storage and rules: routes, shares, sign-in links and gateway sessions.

Routes are rows (``forward_routes``); which hub replica holds a route's SSH connection
is on the row. Each live route has a token of its own, minted for its owner and
scoped to the route; sign-in links and the sessions they open descend from it, so
ending the route (its node hung up, it was stopped or reaped) revokes them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from tether.auth import epoch as auth_epoch
from tether.auth import service as auth
from tether.auth.identities import user_row
from tether.db import Database
from tether.db.names import hold_user_names
from tether.db.models import App, AppInstance, ForwardRoute, ForwardShare, Token, User, utcnow
from tether.forward.core import (
    Access,
    GatewayError,
    check_forward_name,
    decide,
    route_scope,
)
from tether.problems import Problem, bad_request, conflict, forbidden, not_found

SIGNIN_LINK_LIFETIME = "5m"
SESSION_HOURS = 12
SIGNIN_LABEL = "forward sign-in link"


@dataclass(frozen=True)
class Route:
    id: int
    owner: str
    name: str
    state: str
    node: str | None
    holder: str | None
    token_id: str | None
    idle_seconds: int | None
    created_at: datetime
    last_activity_at: datetime
    bytes_up: int
    bytes_down: int
    open_connections: int = 0

    def info(self) -> dict[str, Any]:
        return {"owner": self.owner, "name": self.name, "state": self.state, "node": self.node,
                "created": auth.iso(self.created_at), "last_activity": auth.iso(self.last_activity_at),
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                "open_connections": self.open_connections, "idle_seconds": self.idle_seconds}


def _route(row: ForwardRoute, owner: str) -> Route:
    return Route(row.id, owner, row.name, row.state, row.node, row.holder, row.token_id, row.idle_seconds,
                 row.created_at, row.last_activity_at, row.bytes_up, row.bytes_down, row.open_connections or 0)


def _check_name(name: str) -> None:
    try:
        check_forward_name(name)
    except GatewayError as exc:
        raise bad_request(exc.detail, exc.slug) from None


def _name_free(s, user_id: int, owner: str, name: str) -> None:
    """Refuse ``name`` if an app instance of the same user holds it (one set of names per user)."""
    if s.scalar(select(AppInstance.id).join(App, App.id == AppInstance.app_id).where(
            AppInstance.user_id == user_id, App.name == name)) is not None:
        raise Problem(409, "name-taken", f"{owner} has an instance of app {name}; routes and app instances "
                      f"share one set of names per user: choose another name, or remove it "
                      f"(`tether app rm {name}`)")


class ForwardService:
    def __init__(self, settings: Any, db: Database):
        self.settings = settings
        self.db = db
        self.max_lifetime = auth.parse_lifetime(settings.token_max_lifetime, "token_max_lifetime")

    # ------------------------------------------------------------------ routes

    def register(self, owner: str, name: str, *, node: str | None, holder: str, replace: bool = False,
                 idle_seconds: int | None = None, now: datetime | None = None) -> Route:
        """Make ``owner``'s route ``name`` live, held by ``holder``.

        A route whose node is reconnecting is taken up again with its token, so signed-in
        browsers keep their sessions across a short outage. A live route is 409 unless
        ``replace`` (the same user's other node gives it up)."""
        now = now or utcnow()
        _check_name(name)
        ctx = auth.context_for_user(self.db, owner, source=node)
        with self.db.write() as s:
            _name_free(s, ctx.user.id, owner, name)
            row = s.scalar(select(ForwardRoute).where(ForwardRoute.user_id == ctx.user.id, ForwardRoute.name == name)
                           .with_for_update())
            keep = None
            if row is not None and row.state == "live" and not replace:
                raise conflict(f"route {name} is already live (from {row.node or 'another node'}); "
                               "stop it first, or replace it (tether forward --replace, or ssh -R /NAME?replace:…)")
            if row is not None and row.state in ("live", "reconnecting"):
                keep = row.token_id
        minted = None
        if keep is None:
            token, _secret = auth.mint(
                self.db, ctx, auth.MintRequest(scopes=[route_scope(owner, name)], label=f"forward route {name}"),
                now=now, max_lifetime=self.max_lifetime, default_lifetime=self.max_lifetime)
            keep = minted = token.id
        try:
            return self._claim(ctx.user.id, owner, name, node=node, holder=holder, token_id=keep,
                               idle_seconds=idle_seconds, now=now)
        except Problem:
            if minted is not None:
                self._revoke(owner, minted, now)
            raise

    def _claim(self, user_id: int, owner: str, name: str, *, node: str | None, holder: str, token_id: str,
               idle_seconds: int | None, now: datetime) -> Route:
        """Make the route's row live: the name checked again and claimed in one transaction,
        under the user's names lock (an app instance of the same name may have come meanwhile)."""
        with self.db.write() as s:
            hold_user_names(s, user_id)
            _name_free(s, user_id, owner, name)
            row = s.scalar(select(ForwardRoute).where(ForwardRoute.user_id == user_id, ForwardRoute.name == name))
            fresh = row is None or row.state == "closed"
            if row is None:
                row = ForwardRoute(user_id=user_id, name=name)
                s.add(row)
            row.state, row.node, row.holder, row.token_id, row.idle_seconds = "live", node, holder, token_id, idle_seconds
            row.last_activity_at, row.closed_at, row.closed_reason = now, None, None
            if fresh:
                row.created_at, row.bytes_up, row.bytes_down = now, 0, 0
            s.flush()
            return _route(row, owner)

    def disconnected(self, route: Route, *, now: datetime | None = None) -> bool:
        """The node's connection is gone: the route waits for it (503 to browsers) until
        :meth:`expire_reconnecting` ends it, unless the node comes back first."""
        with self.db.write() as s:
            return bool(s.execute(update(ForwardRoute).where(
                ForwardRoute.id == route.id, ForwardRoute.state == "live", ForwardRoute.holder == route.holder,
            ).values(state="reconnecting", holder=None, last_activity_at=now or utcnow())).rowcount)

    def orphans_to_reconnecting(self, address: str, holder: str, *, now: datetime | None = None) -> int:
        """Routes a previous run of this replica (same gateway address, another holder) held:
        their nodes lost that connection, so they wait for them like any other."""
        with self.db.write() as s:
            return s.execute(update(ForwardRoute).where(
                ForwardRoute.state == "live", ForwardRoute.holder.like(f"{address}#%"),
                ForwardRoute.holder.not_like(f"{holder}/%"),
            ).values(state="reconnecting", holder=None, last_activity_at=now or utcnow())).rowcount

    def expire_reconnecting(self, grace: timedelta, *, now: datetime | None = None) -> list[Route]:
        """End the routes whose node has not come back within ``grace``."""
        now = now or utcnow()
        with self.db.read() as s:
            rows = s.execute(select(ForwardRoute, User.name).join(User, User.id == ForwardRoute.user_id).where(
                ForwardRoute.state == "reconnecting", ForwardRoute.last_activity_at < now - grace)).all()
        gone = [_route(r, o) for r, o in rows]
        return [r for r in gone if self.close(r, "node did not reconnect", now=now, states=("reconnecting",))]

    def close(self, route: Route, reason: str, *, now: datetime | None = None,
              states: tuple[str, ...] = ("live", "reconnecting")) -> bool:
        """End a route (only the registration ``route`` names: a replaced route's old
        connection cannot close its successor). Its links and sessions are revoked."""
        now = now or utcnow()
        with self.db.write() as s:
            done = s.execute(update(ForwardRoute).where(
                ForwardRoute.id == route.id, ForwardRoute.state.in_(states), ForwardRoute.token_id == route.token_id,
            ).values(state="closed", closed_at=now, closed_reason=reason[:200])).rowcount
        if done and route.token_id:
            self._revoke(route.owner, route.token_id, now)
        if done:
            auth_epoch.bump()
        return bool(done)

    def _revoke(self, owner: str, token_id: str, now: datetime) -> None:
        try:
            auth.revoke(self.db, auth.context_for_user(self.db, owner), token_id, now=now)
        except Problem:
            pass  # already gone with its user

    def lookup(self, owner: str, name: str) -> Route | None:
        with self.db.read() as s:
            row = s.execute(select(ForwardRoute, User.name).join(User, User.id == ForwardRoute.user_id)
                            .where(User.name == owner, ForwardRoute.name == name)).first()
        return _route(row[0], row[1]) if row else None

    def touch(self, counts: dict[int, tuple[int, int]], now: datetime | None = None, *,
              open_connections: dict[int, int] | None = None) -> None:
        """Add bytes that passed (up, down) per route id and mark them active; record the
        connections open to each route the caller holds."""
        now = now or utcnow()
        with self.db.write() as s:
            for route_id, (up, down) in counts.items():
                s.execute(update(ForwardRoute).where(ForwardRoute.id == route_id).values(
                    bytes_up=ForwardRoute.bytes_up + up, bytes_down=ForwardRoute.bytes_down + down,
                    last_activity_at=now))
            for route_id, n in (open_connections or {}).items():
                s.execute(update(ForwardRoute).where(ForwardRoute.id == route_id).values(open_connections=n))

    def states(self, route_ids: list[int]) -> dict[int, tuple[str, str | None, str | None]]:
        """(state, token id, why it closed) of each route: a replica checks the routes it holds."""
        if not route_ids:
            return {}
        with self.db.read() as s:
            rows = s.execute(select(ForwardRoute.id, ForwardRoute.state, ForwardRoute.token_id,
                                    ForwardRoute.closed_reason).where(ForwardRoute.id.in_(route_ids))).all()
        return {i: (st, tok, why) for i, st, tok, why in rows}

    def idle_routes(self, *, hub_idle: timedelta | None, now: datetime | None = None) -> list[Route]:
        """Live routes past their idle limit (their own, else the hub's)."""
        now = now or utcnow()
        with self.db.read() as s:
            rows = s.execute(select(ForwardRoute, User.name).join(User, User.id == ForwardRoute.user_id)
                             .where(ForwardRoute.state == "live")).all()
        out = []
        for row, owner in rows:
            limit = timedelta(seconds=row.idle_seconds) if row.idle_seconds else hub_idle
            if limit is not None and now - row.last_activity_at > limit:
                out.append(_route(row, owner))
        return out

    def list_routes(self, ctx: auth.AuthContext, *, everyone: bool = False, inactive_since: datetime | None = None,
                    ) -> list[Route]:
        if everyone and not ctx.user.is_admin:
            raise forbidden("listing every user's routes needs a hub admin", "admin-only")
        q = select(ForwardRoute, User.name).join(User, User.id == ForwardRoute.user_id).where(
            ForwardRoute.state != "closed").order_by(User.name, ForwardRoute.name)
        if not everyone:
            q = q.where(ForwardRoute.user_id == ctx.user.id)
        if inactive_since is not None:
            q = q.where(ForwardRoute.last_activity_at < inactive_since)
        with self.db.read() as s:
            return [_route(r, o) for r, o in s.execute(q).all()]

    def owned_route(self, ctx: auth.AuthContext, owner: str, name: str) -> Route:
        """A live route the caller owns (or, for stopping, administers)."""
        _check_name(name)
        route = self.lookup(owner, name)
        if route is None or route.state == "closed":
            raise not_found(f"live route {name} of {owner}")
        if ctx.user.name != owner and not ctx.user.is_admin:
            raise forbidden(f"route {name} belongs to {owner}", "not-route-owner")
        if ctx.caveats is not None and ctx.caveats.scopes is not None:
            if decide(owner=owner, name=name, user=owner, scopes=ctx.caveats.scopes, share=None, method=b"POST",
                      upgrade=False).allowed is False:
                raise forbidden(f"this token's scopes do not reach route {name}", "token-scope")
        return route

    # ------------------------------------------------------------------ shares

    def share(self, ctx: auth.AuthContext, name: str, with_user: str, *, read_only: bool) -> None:
        route = self.owned_route(ctx, ctx.user.name, name)
        with self.db.write() as s:
            target = user_row(s, with_user)
            row = s.get(ForwardShare, (route.id, target.id))
            if row is None:
                s.add(ForwardShare(route_id=route.id, user_id=target.id, read_only=read_only, created_at=utcnow()))
            else:
                row.read_only = read_only
        auth_epoch.bump()  # a share narrowed to read-only takes effect at once

    def unshare(self, ctx: auth.AuthContext, name: str, with_user: str) -> bool:
        route = self.owned_route(ctx, ctx.user.name, name)
        with self.db.write() as s:
            target = user_row(s, with_user)
            row = s.get(ForwardShare, (route.id, target.id))
            if row is not None:
                s.delete(row)
        auth_epoch.bump()
        return row is not None

    def shares(self, route: Route) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.execute(select(User.name, ForwardShare.read_only).join(User, User.id == ForwardShare.user_id)
                             .where(ForwardShare.route_id == route.id).order_by(User.name)).all()
        return [{"user": u, "read_only": ro} for u, ro in rows]

    def link(self, ctx: auth.AuthContext, name: str, *, expires: str, read_only: bool) -> tuple[str, str]:
        """A share link: a child of the caller's token scoped to the route; (token id, secret)."""
        route = self.owned_route(ctx, ctx.user.name, name)
        token, secret = auth.mint(
            self.db, ctx, auth.MintRequest(scopes=[route_scope(route.owner, name, read_only=read_only)],
                                           expires=expires, label=f"forward share link {name}"),
            now=utcnow(), max_lifetime=self.max_lifetime, default_lifetime=self.max_lifetime)
        return token.id, secret

    def links(self, ctx: auth.AuthContext, name: str) -> list[dict[str, Any]]:
        """The route's share links that still work: id, access, expiry (never a secret)."""
        route = self.owned_route(ctx, ctx.user.name, name)
        label = f"forward share link {name}"
        with self.db.read() as s:
            rows = s.execute(select(Token).where(Token.user_id == ctx.user.id, Token.revoked_at.is_(None))
                             .order_by(Token.created_at)).scalars().all()
        now = utcnow()
        out = []
        for t in rows:
            caveats = t.caveats or {}
            if caveats.get("label") != label or (t.expires_at is not None and t.expires_at <= now):
                continue
            read_only = all(str(sc).endswith(":read") for sc in caveats.get("scopes") or [])
            out.append({"id": t.id, "route": route.name, "read_only": read_only,
                        "created": auth.iso(t.created_at), "expires": auth.iso(t.expires_at)})
        return out

    # ------------------------------------------------------------------ the gateway's checks

    def signin_link(self, route: Route, *, now: datetime | None = None) -> str:
        """A one-time sign-in secret for the route's owner: one use, five minutes."""
        ctx = auth.context_for_token(self.db, route.token_id)
        _, secret = auth.mint(
            self.db, ctx, auth.MintRequest(scopes=[route_scope(route.owner, route.name)], expires=SIGNIN_LINK_LIFETIME,
                                           max_uses=1, label=SIGNIN_LABEL),
            now=now or utcnow(), max_lifetime=self.max_lifetime, default_lifetime=self.max_lifetime)
        return secret

    def authorize(self, route: Route, secret: str, *, source: str | None, method: bytes, upgrade: bool,
                  now: datetime | None = None) -> tuple[Access, auth.AuthContext]:
        """Authenticate a bearer or session secret and decide this request (Problem on a bad token)."""
        ctx = auth.authenticate(self.db, secret, source=auth.normalise_source(source), now=now or utcnow())
        return self._decide(route, ctx, method, upgrade), ctx

    def _decide(self, route: Route, ctx: auth.AuthContext, method: bytes, upgrade: bool) -> Access:
        share = None
        if ctx.user.name != route.owner:
            with self.db.read() as s:
                row = s.get(ForwardShare, (route.id, ctx.user.id))
            share = row.read_only if row is not None else None
        scopes = ctx.caveats.scopes if ctx.caveats is not None else None
        return decide(owner=route.owner, name=route.name, user=ctx.user.name, scopes=scopes, share=share,
                      method=method, upgrade=upgrade)

    def open_session(self, route: Route, secret: str, *, source: str | None,
                     now: datetime | None = None) -> tuple[str, int, Access]:
        """Exchange a sign-in link or share link for a session on this route:
        (session secret, max-age seconds, access). A one-time link is spent here."""
        now = now or utcnow()
        ctx = auth.authenticate(self.db, secret, source=auth.normalise_source(source), now=now)
        access = self._decide(route, ctx, b"GET", False)
        if not access.allowed:
            raise forbidden(access.reason, access.slug)
        spent_link = ctx.token is not None and ctx.caveats is not None and ctx.caveats.label == SIGNIN_LABEL
        if spent_link:
            if route.token_id not in ctx.token.chain:
                raise forbidden("this sign-in link is for another route", "wrong-route")
            parent = auth.context_for_token(self.db, route.token_id)  # the session outlives the 5-minute link
        else:
            parent = ctx
        lifetime = timedelta(hours=SESSION_HOURS)
        until = now + lifetime
        if parent.token is not None and parent.token.expires_at is not None:
            until = min(until, parent.token.expires_at)  # never past the link or grant it came from
        token, session = auth.mint(
            self.db, parent, auth.MintRequest(scopes=[route_scope(route.owner, route.name, read_only=access.read_only)],
                                              expires=until.isoformat(), label=f"forward session {route.name}"),
            now=now, max_lifetime=lifetime, default_lifetime=lifetime)
        left = int(((token.expires_at or now + lifetime) - now).total_seconds())
        return session, max(1, left), access
