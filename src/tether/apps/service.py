"""Apps' storage and rules: apps and their versions, instances, grants.

Every method takes an :class:`AuthContext` and asks the policy first. What runs is
not decided here: an instance's row says what its user wants (``desired``) and which
hub replica holds its sandbox (``holder``); that replica's supervisor
(:mod:`tether.apps.supervisor`) makes it so. Names resolve here (a grant's host),
so the rules in :mod:`tether.apps.core` stay pure.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from tether.apps import core
from tether.auth import epoch as auth_epoch
from tether.auth import service as auth
from tether.auth.identities import user_row
from tether.auth.policy import Resource, authorize
from tether.db import Database
from tether.db.names import hold_user_names
from tether.db.models import (
    App,
    AppGrant,
    AppInstance,
    AppShare,
    AppVersion,
    Build,
    ForwardRoute,
    Space,
    User,
    utcnow,
)
from tether.problems import Problem, bad_request, conflict, forbidden, not_found
from tether.units import parse_duration

SIGNIN_LABEL = "app sign-in link"
SESSION_HOURS = 12


def _problem(exc: core.AppError) -> Problem:
    return Problem(exc.status, exc.slug, exc.detail)


def missing(detail: str) -> Problem:
    """404 with a sentence of its own (``not_found`` says "X does not exist", which reads
    badly after a hint)."""
    return Problem(404, "not-found", detail)


def checked(fn, *args):
    """Call a core rule; its AppError becomes the Problem the API answers with."""
    try:
        return fn(*args)
    except core.AppError as exc:
        raise _problem(exc) from None


@dataclass(frozen=True)
class Instance:
    """An instance as the supervisor and the gateway need it (a plain value)."""

    id: int
    sandbox: str  # core.instance_id(id)
    app: str
    space: str
    owner: str
    version: str
    uid: int
    state: str
    desired: str
    holder: str | None
    data_at: str | None  # the replica whose apps_root holds its /data (None: none made yet)
    token_id: str | None
    argv: tuple[str, ...]
    install_argv: tuple[str, ...] | None
    manifest: str
    build_id: int | None
    limits: core.AppLimits
    tcp_port: int | None  # the app listens on 127.0.0.1:PORT in its netns (None: on $TETHER_SOCKET)
    failures: int
    last_activity_at: datetime
    started_at: datetime | None

    @property
    def route(self) -> str:
        return core.route_name(self.app)


def hub_addresses() -> list[core.IPAddress]:
    """Every address of this machine's interfaces (``ip -j addr``), loopback included."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=5, check=True)
        found = [ipaddress.ip_address(a["local"]) for link in json.loads(out.stdout) for a in link.get("addr_info", [])
                 if "local" in a]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        found = []
    return found or [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def resolve(host: str) -> list[core.IPAddress]:
    literal = core.literal_address(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos]


class AppsService:
    def __init__(self, settings: Any, db: Database):
        self.settings = settings
        self.db = db
        self.max_lifetime = auth.parse_lifetime(settings.token_max_lifetime, "token_max_lifetime")
        self.resolve = resolve  # replaced in tests of the rules, never by the hub
        self.hub_addresses = hub_addresses

    # ------------------------------------------------------------------ apps

    def register(self, ctx: auth.AuthContext, *, space: str, name: str, version: str, build: str,
                 argv: list[str], install: list[str] | None, memory: Any, cpu: Any, pids: Any,
                 grants: list[str], disk: Any = None, tcp: Any = None) -> dict:
        """Register ``name`` (or a new version of it) from build ``SPACE/TYPE/ID``. The same
        version with the same files and command is an answer, not an error ("unchanged").
        ``tcp``: the app listens on 127.0.0.1:PORT in its own network namespace, not on
        $TETHER_SOCKET (None: on the socket)."""
        checked(core.check_app_name, name)
        checked(core.check_version, version)
        argv_t = checked(core.check_argv, argv, "--cmd")
        install_t = checked(core.check_argv, install, "--install") if install is not None else None
        limits = checked(core.parse_limits, memory, cpu, pids, disk)
        tcp_port = checked(core.parse_tcp_port, tcp) if tcp is not None else None
        ctx.require("app.admin", Resource(space=space, path=name))
        destinations = [self._check_grant(ctx, space, name, None, g, admin=True) for g in grants]
        b_space, b_type, b_id = self._split_build(build)
        ctx.require("publish.read", Resource(space=b_space, path=f"{b_type}/{b_id}"))
        ctx.require("app.admin", Resource(space=space, path=name))  # the trail names the app, not the build
        with self.db.write() as s:
            space_row = s.scalar(select(Space).where(Space.name == space))
            if space_row is None:
                raise not_found(f"space {space}")
            build_row = s.scalar(select(Build).join(Space, Space.id == Build.space_id).where(
                Space.name == b_space, Build.type == b_type, Build.build_id == b_id))
            if build_row is None or not build_row.manifest:
                raise missing(f"no published build {build}: publish the app's files first, or give --dir")
            app = s.scalar(select(App).where(App.name == name).with_for_update())
            if app is not None and app.space_id != space_row.id:
                raise conflict(f"app {name} is registered in another space; app names are unique on the hub "
                               "(they name APP--USER addresses): choose another name")
            if app is None:
                app = App(space_id=space_row.id, name=name, current_version=version, created_by=ctx.user.name,
                          created_at=utcnow())
                s.add(app)
                s.flush()
            keys = sorted(d.key() for d in destinations)
            existing = s.scalar(select(AppVersion).where(AppVersion.app_id == app.id, AppVersion.version == version))
            if existing is not None:
                same = (existing.manifest == build_row.manifest and tuple(existing.argv) == argv_t
                        and (tuple(existing.install_argv) if existing.install_argv is not None else None) == install_t
                        and (existing.memory_bytes, existing.cpu, existing.pids, _disk(existing.disk_bytes)) ==
                        (limits.memory_bytes, limits.cpu, limits.pids, limits.disk_bytes)
                        and sorted(existing.grants) == keys and existing.tcp_port == tcp_port)
                if not same:
                    raise conflict(f"version {version} of {name} is already registered with other files, command, "
                                   "limits, grants or --tcp; register a new --version")
                app.current_version = version
                return {**self._app_info(app, space), "version": version, "unchanged": True,
                        "manifest": build_row.manifest, "build": build}
            s.add(AppVersion(app_id=app.id, version=version, build_id=build_row.id, build_ref=build,
                             manifest=build_row.manifest, argv=list(argv_t),
                             install_argv=list(install_t) if install_t is not None else None,
                             memory_bytes=limits.memory_bytes, cpu=limits.cpu, pids=limits.pids,
                             disk_bytes=limits.disk_bytes, grants=keys, tcp_port=tcp_port,
                             created_by=ctx.user.name, created_at=utcnow()))
            app.current_version = version
            return {**self._app_info(app, space), "version": version, "unchanged": False,
                    "manifest": build_row.manifest, "build": build}

    @staticmethod
    def _split_build(build: str) -> tuple[str, str, str]:
        parts = build.split("/") if isinstance(build, str) else []
        if len(parts) != 3 or not all(parts) or any(p in (".", "..") for p in parts):
            raise bad_request(f"--build {str(build)[:100]!r} is not SPACE/TYPE/ID (a published build)",
                              "invalid-build")
        return parts[0], parts[1], parts[2]

    def _app_info(self, app: App, space: str) -> dict:
        return {"name": app.name, "space": space, "current_version": app.current_version,
                "created_by": app.created_by, "created": auth.iso(app.created_at)}

    def list_apps(self, ctx: auth.AuthContext) -> list[dict]:
        with self.db.read() as s:
            rows = s.execute(select(App, Space.name).join(Space, Space.id == App.space_id).order_by(App.name)).all()
            out = []
            for app, space in rows:
                if not authorize(ctx.principal, "app.read", Resource(space=space, path=app.name)):
                    continue
                v = s.scalar(select(AppVersion).where(AppVersion.app_id == app.id,
                                                      AppVersion.version == app.current_version))
                out.append({**self._app_info(app, space), "argv": v.argv if v else None,
                            "limits": {"memory": v.memory_bytes, "cpu": v.cpu, "pids": v.pids,
                                       "disk": _disk(v.disk_bytes)} if v else None,
                            "tcp_port": v.tcp_port if v else None,
                            "versions": s.scalars(select(AppVersion.version).where(
                                AppVersion.app_id == app.id).order_by(AppVersion.id)).all()})
        return out

    def _app(self, s, name: str) -> tuple[App, str]:
        checked(core.check_app_name, name)
        row = s.execute(select(App, Space.name).join(Space, Space.id == App.space_id).where(App.name == name)).first()
        if row is None:
            raise missing(f"no app named {name}; see `tether app list`")
        return row[0], row[1]

    # ------------------------------------------------------------------ instances

    def spawn(self, ctx: auth.AuthContext, name: str, *, for_user: str | None = None,
              now: datetime | None = None) -> Instance:
        """Make ``for_user``'s instance of app ``name`` (the caller's own by default). It
        starts on the replica that asks (see :class:`tether.apps.supervisor.AppsRuntime`)."""
        now = now or utcnow()
        owner = for_user or ctx.user.name
        with self.db.read() as s:
            app, space = self._app(s, name)
        ctx.require("app.read" if owner == ctx.user.name else "app.admin", Resource(space=space, path=name))
        with self.db.read() as s:
            user = s.scalar(select(User).where(User.name == owner))
            if user is None:
                raise not_found(f"user {owner}")
            if user.disabled:
                raise forbidden(f"user {owner} is disabled; enable them first (`tether user enable {owner}`)",
                                "user-disabled")
            _name_free(s, user.id, owner, name)
        owner_ctx = auth.context_for_user(self.db, owner)
        if owner != ctx.user.name and not authorize(owner_ctx.principal, "app.read", Resource(space=space, path=name)):
            raise Problem(409, "owner-not-granted", f"{owner} has no grant on space {space}, so they could not open "
                          f"the instance: grant them read first (`tether space grant {space} {owner} read`), then "
                          "spawn it again")
        token, _ = auth.mint(self.db, owner_ctx, auth.MintRequest(scopes=[core.app_scope(space, name)],
                                                                  label=f"app instance {name}"),
                             now=now, max_lifetime=self.max_lifetime, default_lifetime=self.max_lifetime)
        try:
            with self.db.write() as s:
                hold_user_names(s, owner_ctx.user.id)  # checked again, claimed at once: no route may come between
                _name_free(s, owner_ctx.user.id, owner, name)
                version = s.scalar(select(AppVersion).where(AppVersion.app_id == app.id,
                                                            AppVersion.version == app.current_version))
                # a placeholder uid no instance can hold (the real one derives from the row's id)
                row = AppInstance(app_id=app.id, user_id=owner_ctx.user.id, version_id=version.id,
                                  uid=-1 - secrets.randbelow(1 << 30),
                                  state="starting", desired="running", holder=None, token_id=token.id, reason="",
                                  failures=0, restarts=0, refused={}, oom_kills=0, created_by=ctx.user.name,
                                  created_at=now, last_activity_at=now, bytes_up=0, bytes_down=0)
                s.add(row)
                s.flush()
                row.uid = core.allocate_uid(row.id, self.settings.apps_uid_base, self.settings.apps_uid_count)
                s.flush()
                for key in version.grants:
                    proto, address, port = _split_key(key)
                    s.add(AppGrant(instance_id=row.id, proto=proto, address=address, port=port, host=address,
                                   on_hub=False, reason=f"granted to every instance of {name} {version.version}",
                                   created_by=app.created_by, created_at=now))
                instance_id = row.id
        except Problem:
            self._revoke_token(owner, token.id)
            raise
        except IntegrityError:
            self._revoke_token(owner, token.id)
            raise conflict(f"{owner} already has an instance of {name}; start it (`tether app start {name}`) or "
                           f"remove it (`tether app rm {name}`)") from None
        return self.get(instance_id)

    def _revoke_token(self, owner: str, token_id: str | None) -> None:
        if token_id is None:
            return
        try:
            auth.revoke(self.db, auth.context_for_user(self.db, owner), token_id, now=utcnow())
        except Problem:
            pass  # gone with its user

    def get(self, instance_id: int) -> Instance:
        with self.db.read() as s:
            row = s.execute(self._query().where(AppInstance.id == instance_id)).first()
        if row is None:
            raise not_found(f"instance {instance_id}")
        return _instance(*row)

    @staticmethod
    def _query():
        """Instances as plain columns (no ORM objects to build: the gateway asks per request)."""
        return (select(AppInstance.id, App.name, Space.name, User.name, AppVersion.version, AppInstance.uid,
                       AppInstance.state, AppInstance.desired, AppInstance.holder, AppInstance.data_at,
                       AppInstance.token_id,
                       AppVersion.argv, AppVersion.install_argv, AppVersion.manifest, AppVersion.build_id,
                       AppVersion.memory_bytes, AppVersion.cpu, AppVersion.pids, AppVersion.disk_bytes,
                       AppVersion.tcp_port, AppInstance.failures,
                       AppInstance.last_activity_at, AppInstance.started_at)
                .join(App, App.id == AppInstance.app_id).join(Space, Space.id == App.space_id)
                .join(User, User.id == AppInstance.user_id).join(AppVersion, AppVersion.id == AppInstance.version_id))

    _by_name = None  # the gateway's lookup, built once (building a five-table select costs more than running it)

    def lookup(self, owner: str, app: str) -> Instance | None:
        """The instance the gateway's route OWNER/APP names (one indexed query per request)."""
        if AppsService._by_name is None:
            AppsService._by_name = self._query().where(User.name == bindparam("owner"), App.name == bindparam("app"))
        with self.db.read() as s:
            row = s.execute(AppsService._by_name, {"owner": owner, "app": app}).first()
        return _instance(*row) if row else None

    def find(self, ctx: auth.AuthContext, ref: str, *, admin_for_others: bool = True, action: str = "app.read",
             shared: bool = False) -> Instance:
        """The instance ``ref`` names (APP, APP--USER or USER/APP) if the caller may act on it:
        ``action`` on the app's space for their own, admin for another's (``shared``: or
        its owner shared it with the caller)."""
        app, owner = checked(core.parse_instance, ref, ctx.user.name)
        inst = self.lookup(owner, app)
        if shared and inst is not None and owner != ctx.user.name and self.share_of(inst, ctx) is not None:
            ctx.trail["resource"] = f"app:{inst.space}/{app} instance of {owner}"
            return inst
        if inst is None:
            with self.db.read() as s:
                _, space = self._app(s, app)
            ctx.require(action if owner == ctx.user.name else "app.admin", Resource(space=space, path=app))
            for_owner = "" if owner == ctx.user.name else f" --for {owner}"
            raise missing(f"{owner} has no instance of {app}; spawn it with `tether app spawn {app}{for_owner}`")
        ctx.require(action if owner == ctx.user.name else "app.admin", Resource(space=inst.space, path=app))
        ctx.trail["resource"] = f"app:{inst.space}/{app} instance of {owner}"
        return inst

    def set_desired(self, inst: Instance, desired: str, reason: str = "") -> None:
        with self.db.write() as s:
            values: dict[str, Any] = {"desired": desired}
            if desired == "running":
                values.update(failures=0, reason="")
            if reason:
                values["reason"] = reason[:500]
            s.execute(update(AppInstance).where(AppInstance.id == inst.id).values(**values))
        if desired != "running":
            auth_epoch.bump()  # this replica's gateway refuses it from the next request

    def list_instances(self, ctx: auth.AuthContext, *, everyone: bool = False) -> list[Instance]:
        q = self._query().order_by(App.name, User.name)
        if not everyone:
            q = q.where(AppInstance.user_id == ctx.user.id)
        with self.db.read() as s:
            rows = [_instance(*r) for r in s.execute(q).all()]
        if everyone:
            rows = [i for i in rows if i.owner == ctx.user.name or
                    authorize(ctx.principal, "app.admin", Resource(space=i.space, path=i.app))]
        return rows

    def info(self, inst: Instance) -> dict:
        with self.db.read() as s:
            row = s.get(AppInstance, inst.id)
            grants = self._grant_rows(s, inst.id)
        return {"app": inst.app, "space": inst.space, "user": inst.owner, "instance": f"{inst.app}--{inst.owner}",
                "id": inst.sandbox, "version": inst.version, "state": row.state, "desired": row.desired,
                "holder": (row.holder or "").partition("#")[0] or None, "uid": row.uid, "reason": row.reason,
                "restarts": row.restarts, "failures": row.failures, "oom_kills": row.oom_kills,
                "refused": dict(row.refused or {}), "grants": len(grants),
                "limits": inst.limits.info(), "tcp_port": inst.tcp_port, "created": auth.iso(row.created_at),
                "started": auth.iso(row.started_at), "last_activity": auth.iso(row.last_activity_at),
                "bytes_up": row.bytes_up, "bytes_down": row.bytes_down}

    def remove_row(self, inst: Instance) -> None:
        with self.db.write() as s:
            s.execute(delete(AppInstance).where(AppInstance.id == inst.id))
        auth_epoch.bump()
        self._revoke_token(inst.owner, inst.token_id)

    # ------------------------------------------------------------------ grants

    def _check_grant(self, ctx: auth.AuthContext, space: str, app: str, owner: str | None, dest: str, *,
                     admin: bool = False, proto: str | None = None) -> core.Checked:
        wanted = checked(core.parse_destination, proto, dest)
        checked_dest = checked(core.check_destination, wanted, self.resolve(wanted.host), self.hub_addresses())
        if checked_dest.host and not admin:
            ctx.require("app.admin", Resource(space=space, path=app))
        return checked_dest

    def grant(self, ctx: auth.AuthContext, inst: Instance, proto: str, dest: str, *, expires: str | None,
              reason: str, now: datetime | None = None) -> dict:
        """Open one destination to the instance (write on the app's space for its owner;
        admin for another's, or for a destination on the hub's own machine)."""
        now = now or utcnow()
        if inst.owner == ctx.user.name:
            ctx.require("app.write", Resource(space=inst.space, path=inst.app))
        d = self._check_grant(ctx, inst.space, inst.app, inst.owner, dest, proto=proto)
        until = None
        if expires:
            try:
                until = now + parse_duration(expires)
            except ValueError as exc:
                raise bad_request(f"--expires: {exc}", "invalid-expiry") from None
        if len(reason) > 500:
            raise bad_request("--reason is limited to 500 characters", "invalid-reason")
        ctx.trail["resource"] = f"app:{inst.space}/{inst.app} instance of {inst.owner} {d.key()}"
        with self.db.write() as s:
            row = s.scalar(select(AppGrant).where(AppGrant.instance_id == inst.id, AppGrant.proto == d.proto,
                                                  AppGrant.address == str(d.address), AppGrant.port == d.port))
            if row is None:
                row = AppGrant(instance_id=inst.id, proto=d.proto, address=str(d.address), port=d.port)
                s.add(row)
            row.host, row.on_hub, row.reason = dest.strip()[:253], d.host, reason
            row.created_by, row.created_at, row.expires_at = ctx.user.name, now, until
            s.flush()
            return _grant_info(row)

    def revoke(self, ctx: auth.AuthContext, inst: Instance, proto: str | None, dest: str | None) -> int:
        """Close one destination (or, with none, every one); the number closed."""
        if inst.owner == ctx.user.name:
            ctx.require("app.write", Resource(space=inst.space, path=inst.app))
        q = delete(AppGrant).where(AppGrant.instance_id == inst.id)
        if dest is not None:
            wanted = checked(core.parse_destination, proto, dest)
            addresses = self.resolve(wanted.host)
            q = q.where(AppGrant.proto == wanted.proto, AppGrant.port == wanted.port,
                        AppGrant.address.in_([str(a) for a in addresses] or [wanted.host]))
            ctx.trail["resource"] = f"app:{inst.space}/{inst.app} instance of {inst.owner} {wanted}"
        with self.db.write() as s:
            n = s.execute(q).rowcount
        if dest is not None and not n:
            raise missing(f"{inst.app}--{inst.owner} has no grant {dest}; "
                          f"see `tether app grants {inst.app}--{inst.owner}`")
        return n

    def _grant_rows(self, s, instance_id: int, now: datetime | None = None) -> list[AppGrant]:
        now = now or utcnow()
        rows = s.scalars(select(AppGrant).where(AppGrant.instance_id == instance_id).order_by(AppGrant.id)).all()
        return [g for g in rows if g.expires_at is None or g.expires_at > now]

    def grants(self, inst: Instance) -> list[dict]:
        with self.db.read() as s:
            return [_grant_info(g) for g in self._grant_rows(s, inst.id)]

    def destinations(self, instance_id: int, now: datetime | None = None) -> list[tuple[str, str, int]]:
        """The instance's live grants as (proto, address, port), for its sandbox."""
        with self.db.read() as s:
            return sorted((g.proto, g.address, g.port) for g in self._grant_rows(s, instance_id, now))

    def expire_grants(self, now: datetime | None = None) -> int:
        with self.db.write() as s:
            return s.execute(delete(AppGrant).where(AppGrant.expires_at <= (now or utcnow()))).rowcount

    # ------------------------------------------------------------------ the supervisor's rows

    def claim(self, inst: Instance, holder: str, *, states: tuple[str, ...]) -> bool:
        """Take the instance's sandbox for this replica (a conditional update: one replica wins)."""
        with self.db.write() as s:
            q = update(AppInstance).where(AppInstance.id == inst.id, AppInstance.state.in_(states))
            if inst.holder is None:
                q = q.where(AppInstance.holder.is_(None))
            else:
                q = q.where(AppInstance.holder == inst.holder)
            return bool(s.execute(q.values(holder=holder, state="starting")).rowcount)

    def mark(self, instance_id: int, **values: Any) -> None:
        if "reason" in values:
            values["reason"] = (values["reason"] or "")[:500]
        with self.db.write() as s:
            s.execute(update(AppInstance).where(AppInstance.id == instance_id).values(**values))

    def held_by(self, holder_prefix: str) -> list[Instance]:
        """Instances whose sandbox a replica at this gateway address holds (any run of it)."""
        with self.db.read() as s:
            rows = s.execute(self._query().where(AppInstance.holder.like(f"{holder_prefix}#%"))).all()
        return [_instance(*r) for r in rows]

    def touch(self, counts: dict[int, tuple[int, int]], now: datetime | None = None) -> None:
        now = now or utcnow()
        with self.db.write() as s:
            for instance_id, (up, down) in counts.items():
                s.execute(update(AppInstance).where(AppInstance.id == instance_id).values(
                    bytes_up=AppInstance.bytes_up + up, bytes_down=AppInstance.bytes_down + down,
                    last_activity_at=now))

    # ------------------------------------------------------------------ the gateway's checks

    def signin_link(self, inst: Instance, *, caller: auth.AuthContext | None = None,
                    now: datetime | None = None) -> str:
        """A one-time sign-in secret (one use, five minutes): for the instance's owner, or
        (``caller``) for a user it is shared with, a child of their own token."""
        ctx = auth.context_for_token(self.db, inst.token_id) if caller is None else caller
        _, secret = auth.mint(self.db, ctx, auth.MintRequest(scopes=[core.app_scope(inst.space, inst.app)],
                                                             expires="5m", max_uses=1, label=SIGNIN_LABEL),
                              now=now or utcnow(), max_lifetime=self.max_lifetime, default_lifetime=self.max_lifetime)
        return secret

    def share_link(self, ctx: auth.AuthContext, inst: Instance, *, expires: str, read_only: bool,
                   now: datetime | None = None) -> tuple[str, str]:
        """A share link to the caller's own instance: a child of the caller's token scoped to
        it (``:read``: GET and HEAD only), so whoever opens it is let in as the owner until
        it expires or is revoked (``tether token revoke ID`` ends its sessions too)."""
        if inst.owner != ctx.user.name:
            raise forbidden(f"only {inst.owner} shares their instance", "not-instance-owner")
        token, secret = auth.mint(self.db, ctx, auth.MintRequest(
            scopes=[core.app_scope(inst.space, inst.app, read_only=read_only)], expires=expires,
            label=f"app share link {inst.app}"), now=now or utcnow(), max_lifetime=self.max_lifetime,
            default_lifetime=self.max_lifetime)
        return token.id, secret

    def share(self, ctx: auth.AuthContext, inst: Instance, with_user: str, *, read_only: bool) -> dict:
        """Let ``with_user`` through the gateway to the caller's own instance (as themselves,
        with their own token or a sign-in; read-only: GET and HEAD only)."""
        self._owner_only(ctx, inst, with_user)
        with self.db.write() as s:
            target = user_row(s, with_user)
            row = s.get(AppShare, (inst.id, target.id))
            if row is None:
                row = AppShare(instance_id=inst.id, user_id=target.id, created_at=utcnow())
                s.add(row)
            narrowed = read_only and row.read_only is False
            row.read_only = read_only
        if narrowed:
            auth_epoch.bump()  # a share narrowed to read-only takes effect at once
        return {"instance": f"{inst.app}--{inst.owner}", "user": with_user, "read_only": read_only}

    def unshare(self, ctx: auth.AuthContext, inst: Instance, with_user: str) -> None:
        self._owner_only(ctx, inst, with_user)
        with self.db.write() as s:
            target = user_row(s, with_user)
            if not s.execute(delete(AppShare).where(AppShare.instance_id == inst.id,
                                                    AppShare.user_id == target.id)).rowcount:
                raise missing(f"{inst.app}--{inst.owner} is not shared with {with_user}; "
                              f"see `tether app shares {inst.app}`")
        auth_epoch.bump()

    def shares(self, inst: Instance) -> list[dict]:
        with self.db.read() as s:
            rows = s.execute(select(User.name, AppShare.read_only, AppShare.created_at)
                             .join(User, User.id == AppShare.user_id)
                             .where(AppShare.instance_id == inst.id).order_by(User.name)).all()
        return [{"user": u, "read_only": ro, "created": auth.iso(at)} for u, ro, at in rows]

    @staticmethod
    def _owner_only(ctx: auth.AuthContext, inst: Instance, with_user: str) -> None:
        if inst.owner != ctx.user.name:
            raise forbidden(f"only {inst.owner} shares their instance", "not-instance-owner")
        if with_user == inst.owner:
            raise bad_request(f"{with_user} owns this instance: there is nothing to share with them", "share-self")
        ctx.trail["resource"] = f"app:{inst.space}/{inst.app} instance of {inst.owner} with {with_user}"

    def authorize(self, inst: Instance, secret: str, *, source: str | None, method: bytes, upgrade: bool,
                  now: datetime | None = None) -> tuple[core.Access, auth.AuthContext]:
        ctx = auth.authenticate(self.db, secret, source=auth.normalise_source(source), now=now or utcnow())
        return self._decide(inst, ctx, method, upgrade), ctx

    def share_of(self, inst: Instance, ctx: auth.AuthContext) -> bool | None:
        """None when ``inst`` is not shared with the caller, else whether the share is read-only."""
        with self.db.read() as s:
            return s.scalar(select(AppShare.read_only).where(AppShare.instance_id == inst.id,
                                                             AppShare.user_id == ctx.user.id))

    def _decide(self, inst: Instance, ctx: auth.AuthContext, method: bytes, upgrade: bool) -> core.Access:
        scopes = ctx.caveats.scopes if ctx.caveats is not None else None
        share = self.share_of(inst, ctx) if ctx.user.name != inst.owner else None
        return core.decide(owner=inst.owner, space=inst.space, app=inst.app, user=ctx.user.name, scopes=scopes,
                           method=method, upgrade=upgrade, share=share)

    def open_session(self, inst: Instance, secret: str, *, source: str | None,
                     now: datetime | None = None) -> tuple[str, int]:
        """Exchange a sign-in link (or the owner's token) for a session on this instance."""
        now = now or utcnow()
        ctx = auth.authenticate(self.db, secret, source=auth.normalise_source(source), now=now)
        access = self._decide(inst, ctx, b"GET", False)
        if not access.allowed:
            raise forbidden(access.reason, access.slug)
        if ctx.token is not None and ctx.caveats is not None and ctx.caveats.label == SIGNIN_LABEL:
            if ctx.user.name != inst.owner:  # a shared user's link: the session descends from their token
                parent = auth.context_for_token(self.db, ctx.token.parent_id) if ctx.token.parent_id else ctx
            elif inst.token_id not in ctx.token.chain:
                raise forbidden("this sign-in link is for another instance", "wrong-instance")
            else:
                parent = auth.context_for_token(self.db, inst.token_id)
        else:
            parent = ctx
        lifetime = timedelta(hours=SESSION_HOURS)
        until = now + lifetime
        if parent.token is not None and parent.token.expires_at is not None:
            until = min(until, parent.token.expires_at)
        token, session = auth.mint(self.db, parent, auth.MintRequest(
            scopes=[core.app_scope(inst.space, inst.app, read_only=access.read_only)], expires=until.isoformat(),
            label=f"app session {inst.app}"), now=now, max_lifetime=lifetime, default_lifetime=lifetime)
        return session, max(1, int(((token.expires_at or until) - now).total_seconds()))


def _name_free(s, user_id: int, owner: str, name: str) -> None:
    """Refuse ``name`` if a live forwarded route of the same user holds it (one set of names per user)."""
    held = s.scalar(select(ForwardRoute.state).where(ForwardRoute.user_id == user_id, ForwardRoute.name == name,
                                                     ForwardRoute.state != "closed"))
    if held is not None:
        raise Problem(409, "name-taken", f"{owner} has a forwarded route named {name} ({held}); routes and app "
                      f"instances share one set of names per user: stop it (`tether forward stop {name}`) first")


def _disk(stored: int | None) -> int:
    return core.DEFAULT_DISK if stored is None else stored  # versions registered before disk limits: the default


def _split_key(key: str) -> tuple[str, str, int]:
    proto, _, rest = key.partition(":")
    address, _, port = rest.rpartition(":")
    return proto, address.strip("[]"), int(port)


def _grant_info(g: AppGrant) -> dict:
    shown = f"[{g.address}]" if ":" in g.address else g.address
    return {"destination": f"{g.proto}:{shown}:{g.port}", "proto": g.proto, "address": g.address, "port": g.port,
            "host": g.host, "on_hub": g.on_hub, "reason": g.reason, "by": g.created_by,
            "created": auth.iso(g.created_at), "expires": auth.iso(g.expires_at)}


def _instance(row_id, app, space, owner, version, uid, state, desired, holder, data_at, token_id, argv, install_argv,
              manifest, build_id, memory, cpu, pids, disk, tcp_port, failures, last_activity_at, started_at) -> Instance:
    return Instance(row_id, core.instance_id(row_id), app, space, owner, version, uid, state, desired, holder,
                    data_at, token_id, tuple(argv), tuple(install_argv) if install_argv else None, manifest, build_id,
                    core.AppLimits(memory, cpu, pids, _disk(disk)), tcp_port, failures, last_activity_at, started_at)
