"""Authorization: who may do what, as one pure function over one table.

:func:`authorize` takes a :class:`Principal` (who is asking, with their
grants and, for a scoped token, its scopes), an action name from
:data:`ACTIONS` and the :class:`Resource` acted on, and returns a
:class:`Decision`. It never raises and never does I/O.

Order of the rules:

1. unknown action -> ``unknown-action``
2. disabled user -> ``user-disabled``
3. grant check (hub admins pass every grant check) -> ``forbidden``
4. scoped tokens: the action must be allowed for scoped tokens and some
   scope must allow it (scopes restrict admins too) -> ``token-scope``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from tether.auth.caveats import NOT_SPACE_KINDS, Level, Scope, scope_allows

__all__ = [
    "Action",
    "ACTIONS",
    "Principal",
    "Resource",
    "Decision",
    "authorize",
    "action_table_markdown",
]

NEEDS = ("authenticated", "self_or_admin", "hub_admin", "space")


@dataclass(frozen=True)
class Action:
    """One action of the API and what it needs."""

    name: str
    capability: str | None
    needs: str
    level: Level = Level.NONE
    scoped_ok: bool = False
    description: str = ""


def _a(
    name: str,
    needs: str,
    description: str,
    *,
    level: Level = Level.NONE,
    capability: str | None = None,
    scoped_ok: bool = False,
) -> Action:
    assert needs in NEEDS, needs
    assert (needs == "space") == (level != Level.NONE), name
    return Action(name, capability, needs, level, scoped_ok, description)


def _space_actions(
    cap: str, what: dict[Level, str], verbs: tuple[str, str, str] = ("read", "write", "admin")
) -> list[Action]:
    return [
        _a(f"{cap}.{verb}", "space", what[lv], level=lv, capability=cap, scoped_ok=True)
        for verb, lv in zip(verbs, (Level.READ, Level.WRITE, Level.ADMIN))
    ]


_TABLE: list[Action] = [
    _a("whoami", "authenticated", "Show who the caller is and what the credential allows.",
       scoped_ok=True),
    _a("token.mint", "authenticated",
       "Mint a child token, equal to or narrower than the caller's credential.",
       scoped_ok=True),
    _a("token.mint_for", "hub_admin", "Mint a root token for another user."),
    _a("token.list", "self_or_admin", "List a user's tokens (without their secrets)."),
    _a("token.list_all", "hub_admin", "List every user's tokens (`tether token list --all`)."),
    _a("token.inspect", "self_or_admin", "Show one token's caveats, ancestry and usage."),
    _a("token.revoke", "self_or_admin", "Revoke a token and every token derived from it.",
       scoped_ok=True),
    _a("user.create", "hub_admin", "Create a user."),
    _a("user.list", "hub_admin", "List all users."),
    _a("user.read", "self_or_admin", "Show a user, their grants and their keys."),
    _a("user.disable", "hub_admin", "Disable a user; all their credentials stop working."),
    _a("user.enable", "hub_admin", "Re-enable a disabled user."),
    _a("key.add", "self_or_admin", "Add an SSH or signing public key to a user."),
    _a("key.list", "self_or_admin", "List a user's SSH and signing keys."),
    _a("key.remove", "self_or_admin", "Remove a key from a user."),
    _a("space.create", "hub_admin", "Create a space."),
    _a("space.delete", "hub_admin", "Delete a space and everything in it."),
    _a("space.list", "authenticated", "List spaces."),
    _a("space.read", "space", "Show a space's settings and grants.",
       level=Level.READ, capability="space", scoped_ok=True),
    _a("space.grant", "space", "Grant a user read, write or admin on a space.",
       level=Level.ADMIN, capability="space", scoped_ok=True),
    _a("space.revoke", "space", "Revoke a user's grant on a space.",
       level=Level.ADMIN, capability="space", scoped_ok=True),
    _a("space.configure", "space", "Change a space's description and default build visibility.",
       level=Level.ADMIN, capability="space", scoped_ok=True),
    _a("audit.read", "hub_admin", "Read the hub's audit log."),
    _a("gc.run", "hub_admin", "Garbage-collect unreferenced blobs and apply retention rules."),
    *_space_actions("publish", {
        Level.READ: "List and download published builds and files.",
        Level.WRITE: "Upload files and publish builds.",
        Level.ADMIN: "Delete or hide builds and change a space's publishing settings.",
    }),
    *_space_actions("log", {
        Level.READ: "Pull records from a log.",
        Level.WRITE: "Push records to a log.",
        Level.ADMIN: "Create, delete and configure logs.",
    }),
    _a("signal.connect", "authenticated",
       "Get credentials for the hub's NATS server (`tether signal init`); not with a scoped token."),
    *_space_actions("signal", {
        Level.READ: "Wait for and receive signals.",
        Level.WRITE: "Send signals and requests.",
        Level.ADMIN: "Configure signal destinations and verbs.",
    }, ("receive", "send", "admin")),
    *_space_actions("job", {
        Level.READ: "Show a multi-node job, its roles and its messages.",
        Level.WRITE: "Take part in a job: join, send, wait and sync.",
        Level.ADMIN: "Create, cancel and reconfigure jobs.",
    }),
    *_space_actions("app", {
        Level.READ: "See a space's apps; spawn, stop, start, restart and remove your own instance, read its logs.",
        Level.WRITE: "Grant (and revoke) your own instance a destination outside the hub's machine.",
        Level.ADMIN: "Register apps and versions; spawn, stop and remove other users' instances; grant "
                     "destinations on the hub's own machine.",
    }),
]

ACTIONS: dict[str, Action] = {a.name: a for a in _TABLE}


@dataclass(frozen=True)
class Principal:
    """Who is asking.

    ``scopes`` is None for an unrestricted credential (an SSH key or a token
    without scopes); otherwise the token may act only inside its scopes.
    """

    user: str
    is_admin: bool = False
    disabled: bool = False
    grants: Mapping[str, Level] = field(default_factory=dict)
    scopes: tuple[Scope, ...] | None = None
    token_id: str | None = None


@dataclass(frozen=True)
class Resource:
    """What is acted on. ``token_ancestry`` is the target token's id followed
    by the ids of its ancestors (used by ``token.revoke``)."""

    space: str | None = None
    path: str | None = None
    user: str | None = None
    job: str | None = None
    token_ancestry: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The outcome. ``code`` is ``ok``, ``unknown-action``, ``user-disabled``,
    ``forbidden`` or ``token-scope``; ``detail`` is a sentence for humans."""

    allowed: bool
    code: str
    detail: str

    def __bool__(self) -> bool:
        return self.allowed


_LEVEL_WORDS = {Level.READ: "read", Level.WRITE: "write", Level.ADMIN: "admin"}


def _level(v: object) -> Level:
    try:
        return Level(v)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return Level.NONE


def _where(r: Resource, action: Action) -> str:
    """A short description of the resource for messages."""
    bits: list[str] = []
    if action.capability == "job" and r.job is not None:
        bits.append(f"job {r.job!r}")
    if r.space is not None:
        bits.append(f"space {r.space!r}")
    if action.capability in ("publish", "app") and r.path is not None:
        bits.append(f"path {r.path!r}")
    return (" on " + " in ".join(bits)) if bits else ""


def _scope_need(action: Action) -> str:
    """What a scoped token needs for ``action``, as a phrase."""
    n = action.name
    if not action.scoped_ok:
        return "no"
    if n in ("whoami", "token.mint"):
        return "yes"
    if n == "token.revoke":
        return "only its own token or a token derived from it"
    if n == "space.read":
        return "with any scope on the space except job:"
    lv = _LEVEL_WORDS[action.level]
    cap = action.capability
    if cap == "job":
        return f"with a job: scope for the job or a space: scope for its space, allowing {lv}"
    if cap == "publish":
        return f"with a publish: or space: scope covering the path, allowing {lv}"
    if cap == "app":
        return f"with an app:SPACE/APP or space: scope, allowing {lv}"
    if cap == "space":
        return f"with a space: scope on the space, allowing {lv}"
    return f"with a {cap}: or space: scope on the space, allowing {lv}"


def _needs_text(action: Action) -> str:
    if action.needs == "authenticated":
        return "any authenticated principal"
    if action.needs == "self_or_admin":
        return "the user themself or a hub admin"
    if action.needs == "hub_admin":
        return "hub admin"
    return f"{_LEVEL_WORDS[action.level]} on the space"


def _ok(detail: str) -> Decision:
    return Decision(True, "ok", detail)


def _deny(code: str, detail: str) -> Decision:
    return Decision(False, code, detail)


def _grant_check(p: Principal, a: Action, r: Resource) -> Decision | None:
    """Return a denial when the grant check fails, else None."""
    who = repr(p.user)
    if a.needs == "authenticated":
        return None
    if a.needs == "hub_admin":
        if p.is_admin:
            return None
        return _deny("forbidden", f"{a.name} needs a hub admin and {who} is not one")
    if a.needs == "self_or_admin":
        if r.user is None:
            return _deny("forbidden", f"{a.name} needs a target user")
        if p.is_admin or r.user == p.user:
            return None
        return _deny(
            "forbidden",
            f"{who} may not {a.name} for user {r.user!r}; only that user or a hub admin may",
        )
    # needs == "space"
    if r.space is None:
        return _deny("forbidden", f"{a.name} needs a space")
    if p.is_admin:
        return None
    has = _level(p.grants.get(r.space, Level.NONE)) if isinstance(p.grants, Mapping) else Level.NONE
    if has >= a.level:
        return None
    need = _LEVEL_WORDS[a.level]
    if has == Level.NONE:
        return _deny(
            "forbidden",
            f"{who} has no grant on space {r.space!r}; {a.name} needs {need}",
        )
    return _deny(
        "forbidden", f"{who} has {_LEVEL_WORDS[has]} on space {r.space!r}; {a.name} needs {need}"
    )


def _scope_check(p: Principal, a: Action, r: Resource) -> Decision | None:
    """Return a denial when the token's scopes do not allow the action."""
    scopes = tuple(p.scopes or ())
    shown = ", ".join(str(s) for s in scopes) or "(no scopes)"
    if not a.scoped_ok:
        return _deny(
            "token-scope",
            f"this token is limited to scopes {shown}; {a.name} needs an unrestricted token",
        )
    if a.name in ("whoami", "token.mint"):
        return None  # token.mint narrowness is enforced by caveats.derive
    if a.name == "token.revoke":
        if p.token_id is not None and p.token_id in tuple(r.token_ancestry):
            return None
        return _deny(
            "token-scope",
            f"this token is limited to scopes {shown}; a scoped token may only revoke "
            "itself or a token derived from it",
        )
    if a.name == "space.read":
        if r.space is not None and any(s.kind not in NOT_SPACE_KINDS and s.target == r.space for s in scopes):
            return None
        return _deny(
            "token-scope",
            f"this token is limited to scopes {shown}; space.read on space {r.space!r} "
            "needs a scope on that space",
        )
    assert a.capability is not None
    if any(
        scope_allows(s, a.capability, space=r.space, job=r.job, path=r.path, level=a.level)
        for s in scopes
    ):
        return None
    return _deny(
        "token-scope",
        f"this token is limited to scopes {shown}; {a.name}{_where(r, a)} "
        f"needs a token {_scope_need(a)}",
    )


def authorize(p: Principal, action: str, r: Resource = Resource()) -> Decision:
    """Decide whether ``p`` may perform ``action`` on ``r``. Never raises."""
    a = ACTIONS.get(action) if isinstance(action, str) else None
    if a is None:
        return _deny("unknown-action", f"unknown action {action!r}")
    if p.disabled:
        return _deny("user-disabled", f"user {p.user!r} is disabled")
    denied = _grant_check(p, a, r)
    if denied is not None:
        return denied
    if p.scopes is not None:
        denied = _scope_check(p, a, r)
        if denied is not None:
            return denied
    return _ok(f"{p.user!r} may {a.name}{_where(r, a)}")


def action_table_markdown() -> str:
    """The action table as Markdown, for the docs."""
    lines = [
        "| action | needs | scoped tokens | description |",
        "|---|---|---|---|",
    ]
    for a in ACTIONS.values():
        cells = [f"`{a.name}`", _needs_text(a), _scope_need(a), a.description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
