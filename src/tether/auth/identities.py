"""Users, their keys, spaces and grants: the storage side of identities.

Every function takes the caller's ``AuthContext`` and asks the single policy
function (``ctx.require``) before it reads or changes anything.
"""

from __future__ import annotations

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tether.auth import epoch
from tether.auth.caveats import Level
from tether.auth.policy import Resource, authorize
from tether.auth.service import AuthContext, iso
from tether.db import Database
from tether.db.models import Grant, PublicKey, Space, User, utcnow
from tether.problems import bad_request, conflict, not_found
from tether.units import NAME_RE as SPACE_NAME_RE
from tether.units import USER_NAME_RE

_MAX_ID = 2**31 - 1  # integer primary keys (PostgreSQL's integer)
USER_KINDS = ("person", "service")


# ---------------------------------------------------------------- users and keys


def user_info(u: User) -> dict:
    return {"name": u.name, "kind": u.kind, "admin": u.is_admin, "disabled": u.disabled, "created_at": iso(u.created_at)}


def key_info(k: PublicKey) -> dict:
    return {
        "id": k.id, "kind": k.kind, "algorithm": k.algorithm, "fingerprint": k.fingerprint,
        "comment": k.comment, "public_key": k.public_key, "created_at": iso(k.created_at),
    }


def check_user_name(name: str) -> None:
    if not USER_NAME_RE.match(name):
        raise bad_request(
            f"user name {name!r} is not valid: use 1-32 characters a-z, 0-9, '_', '.', '-', starting with a letter or '_'",
            "invalid-name",
        )


def create_user(db: Database, ctx: AuthContext, name: str, kind: str, admin: bool) -> dict:
    ctx.require("user.create", Resource(user=name))
    check_user_name(name)
    if kind not in USER_KINDS:
        raise bad_request(f"user kind {kind!r} is not one of: {', '.join(USER_KINDS)}")
    try:
        with db.write() as s:
            u = User(name=name, kind=kind, is_admin=admin, created_at=utcnow())
            s.add(u)
            s.flush()
            return user_info(u)
    except IntegrityError:
        raise conflict(f"user {name} already exists") from None


def user_row(s: Session, name: str) -> User:
    u = s.scalar(select(User).where(User.name == name))
    if u is None:
        raise not_found(f"user {name}")
    return u


def set_disabled(db: Database, ctx: AuthContext, name: str, disabled: bool) -> dict:
    ctx.require("user.disable" if disabled else "user.enable", Resource(user=name))
    with db.write() as s:
        u = user_row(s, name)
        if disabled and u.id == ctx.user.id:
            raise bad_request("you cannot disable yourself; ask another admin")
        u.disabled = disabled
        info = user_info(u)
    if disabled:
        epoch.bump()
    return info


def show_user(db: Database, ctx: AuthContext, name: str) -> dict:
    ctx.require("user.read", Resource(user=name))
    with db.read() as s:
        u = user_row(s, name)
        info = user_info(u)
        info["keys"] = [key_info(k) for k in s.scalars(select(PublicKey).where(PublicKey.user_id == u.id).order_by(PublicKey.id))]
        info["grants"] = [
            {"space": sp, "level": Level(lv).name.lower()}
            for sp, lv in s.execute(
                select(Space.name, Grant.level).join(Grant, Grant.space_id == Space.id).where(Grant.user_id == u.id).order_by(Space.name)
            )
        ]
        return info


def list_users(db: Database, ctx: AuthContext) -> list[dict]:
    ctx.require("user.list")
    with db.read() as s:
        return [user_info(u) for u in s.scalars(select(User).order_by(User.name))]


def add_key(db: Database, ctx: AuthContext, name: str, text: str, kind: str | None, comment: str | None) -> dict:
    from tether.auth.keys import InvalidKey, parse_public_key

    ctx.require("key.add", Resource(user=name))
    if kind not in (None, "ssh", "signing"):
        raise bad_request(f"key kind {kind!r} is not 'ssh' or 'signing'")
    try:
        parsed = parse_public_key(text, kind)
    except InvalidKey as exc:
        raise bad_request(str(exc), "invalid-key") from None
    try:
        with db.write() as s:
            u = user_row(s, name)
            k = PublicKey(
                user_id=u.id, kind=parsed.kind, algorithm=parsed.algorithm, public_key=parsed.public_key,
                fingerprint=parsed.fingerprint, comment=(comment if comment is not None else parsed.comment)[:200],
                created_at=utcnow(),
            )
            s.add(k)
            s.flush()
            return key_info(k)
    except IntegrityError:
        raise conflict(f"{parsed.kind} key {parsed.fingerprint} is already registered (a key maps to one user)") from None


def list_keys(db: Database, ctx: AuthContext, name: str) -> list[dict]:
    ctx.require("key.list", Resource(user=name))
    with db.read() as s:
        u = user_row(s, name)
        return [key_info(k) for k in s.scalars(select(PublicKey).where(PublicKey.user_id == u.id).order_by(PublicKey.id))]


def remove_key(db: Database, ctx: AuthContext, name: str, ref: str) -> None:
    ctx.require("key.remove", Resource(user=name))
    with db.write() as s:
        u = user_row(s, name)
        cond = PublicKey.fingerprint == ref
        if ref.isascii() and ref.isdigit() and int(ref) <= _MAX_ID:  # a larger number is no key's id
            cond = or_(cond, PublicKey.id == int(ref))
        keys = list(s.scalars(select(PublicKey).where(PublicKey.user_id == u.id, cond)))
        if not keys:
            raise not_found(f"key {ref} of user {name}")
        for k in keys:
            s.delete(k)


# ---------------------------------------------------------------- spaces and grants


def space_info(sp: Space) -> dict:
    return {"name": sp.name, "description": sp.description, "public_builds": sp.public_builds,
            "created_at": iso(sp.created_at)}


def configure_space(db: Database, ctx: AuthContext, name: str, *, description: str | None,
                    public_builds: bool | None) -> dict:
    """Change a space's description or its default build visibility (space admins)."""
    ctx.require("space.configure", Resource(space=name))
    if description is not None:
        _check_description(description)
    with db.write() as s:
        sp = get_space(s, name)
        if description is not None:
            sp.description = description
        if public_builds is not None:
            sp.public_builds = public_builds
        return space_info(sp)


def _check_description(description: str) -> None:
    if len(description) > 500 or any(ord(ch) < 32 and ch not in "\t" for ch in description):
        raise bad_request("description must be at most 500 characters, without control characters")


def create_space(db: Database, ctx: AuthContext, name: str, description: str, public_builds: bool = False) -> dict:
    ctx.require("space.create", Resource(space=name))
    if not SPACE_NAME_RE.match(name):
        raise bad_request(
            f"space name {name!r} is not valid: use 1-64 characters a-z, 0-9, '.', '_', '-', starting with a letter or digit",
            "invalid-name",
        )
    _check_description(description)
    try:
        with db.write() as s:
            sp = Space(name=name, description=description, public_builds=public_builds, created_at=utcnow())
            s.add(sp)
            s.flush()
            return space_info(sp)
    except IntegrityError:
        raise conflict(f"space {name} already exists") from None


def get_space(s: Session, name: str) -> Space:
    """The space called ``name``, else 404 ``space NAME``: the one lookup every capability
    uses. Authorize before calling it, so whether a space exists is told only to a caller
    who may use it."""
    sp = s.scalar(select(Space).where(Space.name == name))
    if sp is None:
        raise not_found(f"space {name}")
    return sp


def _access(ctx: AuthContext, space: str) -> Level:
    return Level.ADMIN if ctx.user.is_admin else ctx.grants.get(space, Level.NONE)


def list_spaces(db: Database, ctx: AuthContext) -> list[dict]:
    ctx.require("space.list")
    with db.read() as s:
        out = []
        for sp in s.scalars(select(Space).order_by(Space.name)):
            if authorize(ctx.principal, "space.read", Resource(space=sp.name)).allowed:
                out.append(space_info(sp) | {"access": _access(ctx, sp.name).name.lower()})
        return out


def show_space(db: Database, ctx: AuthContext, name: str) -> dict:
    ctx.require("space.read", Resource(space=name))
    with db.read() as s:
        sp = get_space(s, name)
        info = space_info(sp) | {"access": _access(ctx, name).name.lower()}
        if authorize(ctx.principal, "space.grant", Resource(space=name)).allowed:
            info["grants"] = [
                {"user": u, "level": Level(lv).name.lower()}
                for u, lv in s.execute(
                    select(User.name, Grant.level).join(Grant, Grant.user_id == User.id).where(Grant.space_id == sp.id).order_by(User.name)
                )
            ]
        return info


def set_grant(db: Database, ctx: AuthContext, space: str, user: str, level: str | None) -> dict | None:
    """Set (or with ``level=None``, remove) a user's grant on a space."""
    ctx.require("space.grant" if level is not None else "space.revoke", Resource(space=space))
    parsed: Level | None = None
    if level is not None:
        try:
            parsed = Level.parse(level)
        except ValueError:
            raise bad_request(f"grant level {level!r} is not one of: none, read, write, admin", "invalid-level") from None
    with db.write() as s:
        sp = get_space(s, space)
        u = user_row(s, user)
        s.execute(delete(Grant).where(and_(Grant.space_id == sp.id, Grant.user_id == u.id)))
        if parsed is None:
            return None
        if parsed is not Level.NONE:
            s.add(Grant(space_id=sp.id, user_id=u.id, level=int(parsed)))
        return {"space": space, "user": user, "level": parsed.name.lower()}


def user_for_ssh_key(db: Database, fingerprint: str) -> str | None:
    """The enabled user owning this SSH key (by its SHA256 fingerprint), if any."""
    with db.read() as s:
        row = s.execute(
            select(User.name).join(PublicKey, PublicKey.user_id == User.id)
            .where(PublicKey.kind == "ssh", PublicKey.fingerprint == fingerprint, User.disabled.is_(False))
        ).first()
    return row[0] if row else None


def ssh_keys_by_user(db: Database) -> list[tuple[str, bool, str | None, str | None]]:
    """Every user with each of their SSH keys: ``(name, disabled, public_key, fingerprint)``,
    ordered by user then key; a user without keys appears once with ``None`` for the key."""
    with db.read() as s:
        q = select(User.name, User.disabled, PublicKey.public_key, PublicKey.fingerprint).join(
            PublicKey, (PublicKey.user_id == User.id) & (PublicKey.kind == "ssh"), isouter=True
        ).order_by(User.name, PublicKey.id)
        return [tuple(r) for r in s.execute(q).all()]
