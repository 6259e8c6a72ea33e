"""Authentication and scoped tokens: the storage side of the token rules.

The rules themselves live in the pure cores (``caveats``, ``policy``); this module
loads what they need, applies their answers and keeps counters atomic.
"""

from __future__ import annotations

import ipaddress
from contextlib import nullcontext
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, text, update
from sqlalchemy.orm import Session

from tether.auth import epoch
from tether.auth import tokens as tokfmt
from tether.auth.caveats import (
    AttenuationError,
    CaveatError,
    Caveats,
    Level,
    Remaining,
    check_budget,
    check_request,
    derive,
    parse_duration,
    parse_scope,
    parse_source,
    parse_time,
)
from tether.auth.policy import Principal, Resource, authorize
from tether.db import Database
from tether.db.models import Grant, Space, Token, User
from tether.problems import Problem, bad_request, forbidden, not_found, unauthenticated

# Refusals of a credential that is no longer (or not yet) valid are 401; the rest 403.
_UNAUTHENTICATED_CODES = {"token-expired", "token-not-yet-valid"}


@dataclass
class AuthContext:
    """Who is calling: the user, the token (None for an SSH-key login) and its caveats."""

    user: UserRef
    token: TokenRef | None = None
    caveats: Caveats | None = None
    grants: Mapping[str, Level] = field(default_factory=dict)
    source: str | None = None
    # What the audit trail should say about this request: action, resource, reason.
    trail: dict = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        return Principal(
            user=self.user.name,
            is_admin=self.user.is_admin,
            disabled=self.user.disabled,
            grants=self.grants,
            scopes=self.caveats.scopes if self.caveats else None,
            token_id=self.token.id if self.token else None,
        )

    def require(self, action: str, resource: Resource = Resource()) -> None:
        decision = authorize(self.principal, action, resource)
        self.trail["action"] = action
        self.trail["resource"] = describe(resource)
        if not decision.allowed:
            raise forbidden(decision.detail, slug=decision.code, action=action)


def describe(r: Resource) -> str:
    """A short resource name for audit records: space:builds/path, user:alice, token:…"""
    parts = []
    if r.space:
        parts.append(f"space:{r.space}" + (f"/{r.path}" if r.path else ""))
    if r.job:
        parts.append(f"job:{r.job}")
    if r.user:
        parts.append(f"user:{r.user}")
    if r.token_ancestry:
        parts.append(f"token:{r.token_ancestry[0]}")
    return " ".join(parts)


# ---------------------------------------------------------------- authentication


@dataclass(frozen=True)
class UserRef:
    """The calling user as loaded for one request (a plain value, not an ORM row)."""

    id: int
    name: str
    kind: str
    is_admin: bool
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class TokenRef:
    """The calling token as loaded for one request (counters as of that request)."""

    id: str
    user_id: int
    parent_id: str | None
    ancestry: str
    caveats: dict
    limited: dict
    minted_by: str | None = None
    expires_at: datetime | None = None
    max_uses: int | None = None
    uses: int = 0
    max_files: int | None = None
    files: int = 0
    max_bytes: int | None = None
    bytes: int = 0
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def chain(self) -> list[str]:
        return [p for p in self.ancestry.split("/") if p] + [self.id]


class LazyGrants(Mapping):
    """A user's grants, loaded on first look: most token checks never need them."""

    def __init__(self, db: Database, user_id: int):
        self._db, self._user_id, self._grants = db, user_id, None

    def _load(self) -> dict[str, Level]:
        if self._grants is None:
            with self._db.connect() as conn:
                self._grants = {name: Level(level) for name, level in conn.execute(_GRANTS_QUERY, {"uid": self._user_id})}
        return self._grants

    def __getitem__(self, key):
        return self._load()[key]

    def __iter__(self):
        return iter(self._load())

    def __len__(self):
        return len(self._load())


_t, _u = Token.__table__, User.__table__
# Built once: the token check is the hottest path in the hub.
_AUTH_QUERY = (
    select(
        _t.c.id, _t.c.secret_hash, _t.c.user_id, _t.c.parent_id, _t.c.ancestry, _t.c.caveats, _t.c.limited,
        _t.c.minted_by, _t.c.expires_at, _t.c.max_uses, _t.c.uses, _t.c.max_files, _t.c.files, _t.c.max_bytes,
        _t.c.bytes, _t.c.created_at, _t.c.revoked_at,
        _u.c.name, _u.c.kind, _u.c.is_admin, _u.c.disabled, _u.c.created_at.label("user_created_at"),
    )
    .join_from(_t, _u, _t.c.user_id == _u.c.id)
    .where(_t.c.id == bindparam("tid"))
)
_GRANTS_QUERY = (
    select(Space.__table__.c.name, Grant.__table__.c.level)
    .join_from(Grant.__table__, Space.__table__, Grant.__table__.c.space_id == Space.__table__.c.id)
    .where(Grant.__table__.c.user_id == bindparam("uid"))
)
_COUNT_USE = (
    update(_t)
    .where(_t.c.id == bindparam("tid"), _t.c.uses < _t.c.max_uses)
    .values(uses=_t.c.uses + 1)
)
# A token's caveats never change after mint, so their parsed form can be kept.
_caveat_cache: dict[str, Caveats] = {}
_CAVEAT_CACHE_MAX = 10_000


def _caveats_of(token_id: str, data: dict) -> Caveats:
    cached = _caveat_cache.get(token_id)
    if cached is None:
        cached = Caveats.from_json(data)
        if len(_caveat_cache) >= _CAVEAT_CACHE_MAX:
            _caveat_cache.clear()
        _caveat_cache[token_id] = cached
    return cached


def authenticate(db: Database, bearer: str, *, source: str | None, now: datetime) -> AuthContext:
    """Resolve a bearer token to a caller, enforcing every per-request caveat."""
    parts = tokfmt.split_token(bearer)
    if parts is None:
        raise unauthenticated("the token is malformed: tether tokens look like tth_<id>_<secret>", "invalid-token")
    token_id, secret = parts
    with db.connect() as conn:
        row = conn.execute(_AUTH_QUERY, {"tid": token_id}).first()
    # Compare even for an unknown id so timing does not reveal which ids exist.
    ok = tokfmt.secret_matches(secret, row.secret_hash if row is not None else "0" * 64)
    if row is None or not ok:
        raise unauthenticated("the token is not valid for this hub", "invalid-token", token_id=token_id)
    user = UserRef(row.user_id, row.name, row.kind, row.is_admin, row.disabled, row.user_created_at)
    token = TokenRef(
        row.id, row.user_id, row.parent_id, row.ancestry, row.caveats, row.limited, row.minted_by, row.expires_at,
        row.max_uses, row.uses + (1 if row.id in row.limited.get("uses", ()) else 0),  # this request's use
        row.max_files, row.files, row.max_bytes, row.bytes, row.created_at, row.revoked_at,
    )
    try:
        if row.revoked_at is not None:
            raise unauthenticated(
                f"token {token.id} was revoked at {row.revoked_at.isoformat()}", "token-revoked",
                caveat="revoked", token_id=token.id,
            )
        caveats = _caveats_of(token.id, token.caveats)
        refusal = check_request(caveats, now=now, source=source)
        if refusal is not None:
            make = unauthenticated if refusal.code in _UNAUTHENTICATED_CODES else forbidden
            raise make(refusal.detail, refusal.code, caveat=refusal.caveat, token_id=token.id)
        if user.disabled:
            raise forbidden(f"user {user.name} is disabled", "user-disabled", token_id=token.id)
        if token.limited.get("uses"):
            _count_use(db, token)
    except Problem as p:
        raise _with_user(user, p) from None
    return AuthContext(user=user, token=token, caveats=caveats, grants=LazyGrants(db, user.id), source=source)


def context_for_token(db: Database, token_id: str) -> AuthContext:
    """The caller a token would be, loaded by id without its secret: for the hub itself
    to mint children of a token it holds by id (a forwarded route's sign-in links and
    sessions descend from the route's token, so revoking it ends them all)."""
    with db.connect() as conn:
        row = conn.execute(_AUTH_QUERY, {"tid": token_id}).first()
    if row is None or row.revoked_at is not None:
        raise unauthenticated(f"token {token_id} is not valid any more", "token-revoked", token_id=token_id)
    user = UserRef(row.user_id, row.name, row.kind, row.is_admin, row.disabled, row.user_created_at)
    token = TokenRef(row.id, row.user_id, row.parent_id, row.ancestry, row.caveats, row.limited, row.minted_by,
                     row.expires_at, row.max_uses, row.uses, row.max_files, row.files, row.max_bytes, row.bytes,
                     row.created_at, row.revoked_at)
    return AuthContext(user=user, token=token, caveats=_caveats_of(token.id, token.caveats),
                       grants=LazyGrants(db, user.id))


def _with_user(user: User, p: Problem) -> Problem:
    p.trail["user"] = user.name
    return p


def context_for_user(db: Database, name: str, *, source: str | None = None) -> AuthContext:
    """A caller authenticated by other means (an SSH key): the user's own grants, no caveats."""
    with db.read() as s:
        u = s.scalar(select(User).where(User.name == name))
        if u is None:
            raise unauthenticated(f"user {name} does not exist", "unknown-user")
        if u.disabled:
            raise forbidden(f"user {name} is disabled", "user-disabled")
        user = UserRef(u.id, u.name, u.kind, u.is_admin, u.disabled, u.created_at)
    return AuthContext(user=user, grants=LazyGrants(db, user.id), source=source)


def _count_use(db: Database, token: TokenRef) -> None:
    """Count one use on every limited token of the chain, all or nothing."""
    with db.write_connection() as conn:
        for tid in sorted(token.limited["uses"]):  # fixed order: no lock-order deadlocks
            done = conn.execute(_COUNT_USE, {"tid": tid}).rowcount
            if done != 1:
                whose = "this token" if tid == token.id else f"its parent token {tid}"
                raise forbidden(
                    f"{whose} has used up its max_uses", "token-uses-exhausted", caveat="max_uses", token_id=token.id
                )


def remaining(s: Session, token: Token) -> Remaining:
    """What is left of the uses/files/bytes budgets along the token's chain."""
    ids = {tid for ids in token.limited.values() for tid in ids}
    if not ids:
        return Remaining()
    rows = {t.id: t for t in s.scalars(select(Token).where(Token.id.in_(ids)))}

    def least(kind: str, cap: str, used: str) -> int | None:
        left = [getattr(rows[t], cap) - getattr(rows[t], used) for t in token.limited.get(kind, []) if t in rows]
        return max(0, min(left)) if left else None

    return Remaining(
        uses=least("uses", "max_uses", "uses"),
        files=least("files", "max_files", "files"),
        bytes=least("bytes", "max_bytes", "bytes"),
    )


def check_draw(db: Database, token: Token, *, files: int, nbytes: int) -> None:
    """Refuse (without drawing) a request for more files/bytes than the chain has left."""
    BudgetCheck(db, token).need(files=files, nbytes=nbytes)


class BudgetCheck:
    """What a token's chain has left, read once, against which one request's growing
    needs are checked as they become known (an upload's bytes as they arrive)."""

    def __init__(self, db: Database, token: Token):
        self.token = token
        self.left = Remaining()
        if token.limited.get("files") or token.limited.get("bytes"):
            with db.read() as s:
                left = remaining(s, token)
            # uses are counted when a request is authenticated: this request's own use is
            # already drawn, and the last allowed use must still be able to upload
            self.left = Remaining(files=left.files, bytes=left.bytes)

    def need(self, *, files: int = 0, nbytes: int = 0) -> None:
        """Refuse (403, without drawing) ``files``/``nbytes`` in all, if more than is left."""
        refusal = check_budget(self.left, files=files, bytes=nbytes)
        if refusal is not None:
            raise forbidden(refusal.detail, refusal.code, caveat=refusal.caveat, token_id=self.token.id)


def draw_budget(s: Session, token: Token, *, files: int, nbytes: int) -> None:
    """Draw files/bytes from every limited token of the chain inside the caller's write
    transaction; raise (so the caller rolls back everything) if any budget would go negative."""
    if files < 0 or nbytes < 0:
        raise ValueError("draws are never negative")
    ids = sorted(set(token.limited.get("files", [])) | set(token.limited.get("bytes", [])) | {token.id})
    for tid in ids:
        done = s.execute(
            update(Token)
            .where(
                Token.id == tid,
                or_(Token.max_files.is_(None), Token.files + files <= Token.max_files),
                or_(Token.max_bytes.is_(None), Token.bytes + nbytes <= Token.max_bytes),
            )
            .values(files=Token.files + files, bytes=Token.bytes + nbytes)
        ).rowcount
        if done != 1:
            row = s.get(Token, tid)
            over_files = row is not None and row.max_files is not None and row.files + files > row.max_files
            caveat, code = ("max_files", "token-files-exhausted") if over_files else ("max_bytes", "token-bytes-exhausted")
            whose = "this token" if tid == token.id else f"its parent token {tid}"
            raise forbidden(_over_budget(row, whose, caveat, files if over_files else nbytes),
                            code, caveat=caveat, token_id=token.id)


def _over_budget(row: Token | None, whose: str, caveat: str, adding: int) -> str:
    """Why a draw of ``adding`` files or bytes does not fit: the limit, what is used of
    it, and whether it was reached before this request or this request would pass it."""
    unit = caveat[4:]
    what = f"this request adds {adding} {unit}"
    if row is None:
        return f"{what}, past {whose}'s {caveat}"
    limit, used = getattr(row, caveat), getattr(row, unit)
    if used >= limit:
        return (f"{what}, but {whose} has reached its {caveat} limit of {limit} {unit} ({used} used, none left); "
                f"use a token minted with a new budget")
    return (f"{what}, but {whose} allows {limit} {unit} in all ({caveat}) and has used {used}, leaving "
            f"{limit - used}; publish less with it, or use a token minted with a larger {caveat}")


# ---------------------------------------------------------------- tokens


@dataclass
class MintRequest:
    for_user: str | None = None
    inherit: bool = False
    scopes: list[str] | None = None
    expires: str | None = None
    not_before: str | None = None
    sources: list[str] | None = None
    max_uses: int | None = None
    max_files: int | None = None
    max_bytes: int | None = None
    label: str | None = None


def _requested_caveats(req: MintRequest, now: datetime) -> Caveats:
    try:
        return Caveats(
            scopes=tuple(dict.fromkeys(parse_scope(s) for s in req.scopes)) if req.scopes is not None else None,
            expires_at=parse_time(req.expires, now=now, caveat="expires") if req.expires else None,
            not_before=parse_time(req.not_before, now=now, caveat="not_before") if req.not_before else None,
            sources=tuple(parse_source(s) for s in req.sources) if req.sources is not None else None,
            max_uses=req.max_uses,
            max_files=req.max_files,
            max_bytes=req.max_bytes,
            label=req.label,
        )
    except CaveatError as exc:
        raise bad_request(str(exc), "invalid-caveat", caveat=exc.caveat) from None


def mint(
    db: Database,
    ctx: AuthContext,
    req: MintRequest,
    *,
    now: datetime,
    max_lifetime: timedelta,
    default_lifetime: timedelta,
    session: Session | None = None,
    job_spaces: Mapping[str, str] | None = None,
) -> tuple[Token, str]:
    """Mint a token: a child of the caller's token, or (``for_user``, admins) a new root.
    With ``session``, inside the caller's transaction (it stands or falls with what the
    caller writes beside it); ``job_spaces``: see :func:`tether.auth.caveats.scope_covers`."""
    if req.for_user is not None:
        ctx.require("token.mint_for", Resource(user=req.for_user))
    else:
        ctx.require("token.mint", Resource(user=ctx.user.name))
    requested = _requested_caveats(req, now)
    parent = None if req.for_user is not None else ctx.token
    ceiling = now + max_lifetime
    if requested.expires_at is not None and requested.expires_at > ceiling:
        raise bad_request(
            f"expires: {requested.expires_at.isoformat()} is past this hub's maximum token lifetime "
            f"({ceiling.isoformat()}); ask for a shorter --expires",
            "invalid-caveat", caveat="expires",
        )
    with nullcontext(session) if session is not None else db.write() as s:
        if req.for_user is not None:
            owner = s.scalar(select(User).where(User.name == req.for_user))
            if owner is None:
                raise not_found(f"user {req.for_user}")
            if owner.disabled:
                raise bad_request(f"user {owner.name} is disabled; enable it before minting tokens for it")
        else:
            owner = ctx.user
        if parent is not None:
            # Lock the parent's chain (shared) and look again: a revocation running now either
            # finished first (we refuse) or waits for this mint (and its cascade then sees the child).
            revoked = s.scalars(
                select(Token.id).where(Token.id.in_(parent.chain), Token.revoked_at.is_not(None))
                .with_for_update(read=True)
            ).first()
            if revoked is not None:
                raise unauthenticated(f"token {parent.id} was revoked (with {revoked})", "token-revoked",
                                      caveat="revoked", token_id=parent.id)
        parent_caveats = Caveats.from_json(parent.caveats) if parent is not None else None
        left = remaining(s, parent) if parent is not None else Remaining()
        if not req.inherit and requested.expires_at is None:
            expiry = now + default_lifetime
            if parent_caveats is not None and parent_caveats.expires_at is not None:
                expiry = min(expiry, parent_caveats.expires_at)
            requested = _replace(requested, expires_at=expiry)
        try:
            child = derive(parent_caveats, requested, remaining=left, now=now, job_spaces=job_spaces)
        except AttenuationError as exc:
            raise forbidden(
                f"{exc}: a derived token can only narrow its parent", "attenuation-refused", caveat=exc.caveat
            ) from None
        except CaveatError as exc:
            raise bad_request(str(exc), "invalid-caveat", caveat=exc.caveat) from None
        if not req.inherit:
            child = _replace(child, label=req.label)  # a fresh mint names itself
        if child.expires_at is None or child.expires_at > ceiling:
            # Only the bootstrap admin token lives without an expiry; children get the cap.
            child = _replace(child, expires_at=min(ceiling, now + default_lifetime))
        token_id, secret_hash, secret = tokfmt.new_token()
        parent_limited = parent.limited if parent is not None else {}
        limited = {
            kind: list(parent_limited.get(kind, [])) + ([token_id] if getattr(child, f"max_{kind}") is not None else [])
            for kind in ("uses", "files", "bytes")
        }
        row = Token(
            id=token_id,
            secret_hash=secret_hash,
            user_id=owner.id,
            parent_id=parent.id if parent is not None else None,
            ancestry=(parent.ancestry + parent.id + "/") if parent is not None else "/",
            minted_by=ctx.token.id if ctx.token is not None else None,
            caveats=child.to_json(),
            limited=limited,
            expires_at=child.expires_at,
            max_uses=child.max_uses,
            max_files=child.max_files,
            max_bytes=child.max_bytes,
            created_at=now,
        )
        s.add(row)
    return row, secret


_PG_BOOTSTRAP_LOCK = 0x7E7E_0002  # beside db.engine's migration lock (0x7E7E_0001)


def create_bootstrap_admin(db: Database, *, now: datetime) -> str | None:
    """On an empty hub: create user ``admin`` and a non-expiring admin token; return its secret.

    Replicas starting together on an empty PostgreSQL database take turns here (a
    transaction-scoped advisory lock, as the migrations do): the first creates ``admin``,
    the others then find a user and create nothing. SQLite has one writer at a time."""
    with db.write() as s:
        if db.dialect == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_BOOTSTRAP_LOCK})
        if s.scalar(select(User.id).limit(1)) is not None:
            return None
        admin = User(name="admin", kind="person", is_admin=True, created_at=now)
        s.add(admin)
        s.flush()
        return _root_token(s, admin, "bootstrap admin token", now)


def recover_admin_token(db: Database, name: str, *, now: datetime) -> str:
    """For an operator with access to the hub's storage: a new non-expiring token for an
    existing, enabled hub admin (e.g. after admin.token was lost)."""
    with db.write() as s:
        user = s.scalar(select(User).where(User.name == name))
        if user is None or not user.is_admin or user.disabled:
            raise ValueError(f"{name!r} is not an enabled hub admin on this hub")
        return _root_token(s, user, "recovery admin token", now)


def _root_token(s: Session, user: User, label: str, now: datetime) -> str:
    token_id, secret_hash, secret = tokfmt.new_token()
    s.add(
        Token(
            id=token_id, secret_hash=secret_hash, user_id=user.id, caveats=Caveats(label=label).to_json(),
            limited={"uses": [], "files": [], "bytes": []}, created_at=now,
        )
    )
    return secret


def _replace(c: Caveats, **changes) -> Caveats:
    from dataclasses import replace

    return replace(c, **changes)


def token_info(token: Token | TokenRef, owner: str) -> dict:
    """The public view of a token (never its secret or hash)."""
    c = token.caveats
    return {
        "id": token.id,
        "user": owner,
        "parent": token.parent_id,
        "minted_by": token.minted_by,
        "label": c.get("label"),
        "scopes": c.get("scopes"),
        "expires_at": iso(token.expires_at),
        "not_before": c.get("not_before"),
        "sources": c.get("sources"),
        "max_uses": token.max_uses,
        "uses": token.uses,
        "max_files": token.max_files,
        "files": token.files,
        "max_bytes": token.max_bytes,
        "bytes": token.bytes,
        "created_at": iso(token.created_at),
        "revoked_at": iso(token.revoked_at),
    }


def inspect_token(s: Session, ctx: AuthContext, token_id: str) -> dict:
    if not tokfmt.is_token_id(token_id):
        raise bad_request(f"{token_id!r} is not a token id (16 hex digits, as `tether token list` shows)")
    row = s.execute(select(Token, User.name).join(User, Token.user_id == User.id).where(Token.id == token_id)).first()
    if row is None:
        raise not_found(f"token {token_id}")
    token, owner = row
    ctx.require("token.inspect", Resource(user=owner))
    return token_info(token, owner)


def list_tokens(s: Session, ctx: AuthContext, *, user: str | None, include_all: bool) -> list[dict]:
    target = user or ctx.user.name
    if include_all and user is None:
        if not ctx.user.is_admin:
            raise forbidden("listing every user's tokens (--all) needs a hub admin; without --all you see your own")
        ctx.require("token.list_all")  # scopes still apply to admins
    else:
        ctx.require("token.list", Resource(user=target))
    q = select(Token, User.name).join(User, Token.user_id == User.id).order_by(Token.created_at)
    if not (include_all and user is None):
        owner = s.scalar(select(User).where(User.name == target))
        if owner is None:
            raise not_found(f"user {target}")
        q = q.where(Token.user_id == owner.id)
    return [token_info(t, name) for t, name in s.execute(q)]


def revoke(db: Database, ctx: AuthContext, token_id: str, *, now: datetime) -> list[str]:
    """Revoke a token and every token derived from it; return the ids revoked now."""
    if not tokfmt.is_token_id(token_id):
        raise bad_request(f"{token_id!r} is not a token id (16 hex digits, as `tether token list` shows)")
    with db.write() as s:
        token = s.get(Token, token_id)
        if token is None:
            raise not_found(f"token {token_id}")
        owner = s.get(User, token.user_id)
        ancestry = tuple(reversed(token.chain))
        ctx.require("token.revoke", Resource(user=owner.name if owner else None, token_ancestry=ancestry))
        # The target first: its row lock makes a concurrent mint from it (or below it) wait,
        # so the cascade below sees every child that mint commits.
        first = s.execute(update(Token).where(Token.id == token_id, Token.revoked_at.is_(None)).values(revoked_at=now))
        ids = [token_id] if first.rowcount else []
        below = Token.ancestry.like(f"%/{token_id}/%")
        more = list(s.scalars(select(Token.id).where(below, Token.revoked_at.is_(None))))
        if more:
            s.execute(update(Token).where(Token.id.in_(more)).values(revoked_at=now))
    epoch.bump()
    return sorted(ids + more)


# ---------------------------------------------------------------- helpers


def iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def parse_lifetime(value: str, setting: str) -> timedelta:
    try:
        return parse_duration(value, caveat=setting)
    except CaveatError as exc:
        raise ValueError(f"{setting}: {exc.detail}") from None


def normalise_source(host: str | None) -> str | None:
    """An address as the caveat checker wants it (IPv4-mapped IPv6 stays for the core to unmap)."""
    if host is None:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


__all__ = ["AuthContext", "MintRequest", "Problem", "authenticate", "mint"]
