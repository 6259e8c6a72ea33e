"""Forward's rules, sans-IO: who may register a route, and who gets through the gateway.

A route is a user's app: ``NAME--USER.<domain>``. Through the gateway go:

- the route's owner, signed in (a session cookie minted from a one-time sign-in
  link) or with a bearer token of theirs;
- users the owner shared the route with (``tether forward share NAME --with USER``),
  read-only when the share says so;
- holders of a share link (a token scoped ``forward:OWNER/NAME:read``): GET and
  HEAD only, no websocket;
- API clients with a token scoped ``forward:OWNER/NAME`` (or ``forward:OWNER``).

A token with scopes must carry a forward scope for the route, whatever its user may
do otherwise; read access (``:read``) means GET and HEAD only. Hub admins stop routes
but do not read users' apps unless shared with them: an app is its owner's.
"""

from __future__ import annotations


from tether.auth.caveats import Level, Scope
from tether.gateway.core import ROUTE_NAME_RE, Access, GatewayError, check_route_name

__all__ = ["ROUTE_NAME_RE", "RESERVED_NAMES", "Access", "check_forward_name", "check_route_name", "decide",
           "route_scope", "GatewayError"]

READ_METHODS = frozenset({b"GET", b"HEAD"})
#: the words the API's paths put after a route's name (``/forward/routes/NAME/links``): were
#: a route named so, ``DELETE /forward/routes/OWNER/links`` would be another operation's URL
RESERVED_NAMES = ("links", "shares", "signin")


def check_forward_name(name: str) -> None:
    """A name a new route may take: a gateway route name, and none of :data:`RESERVED_NAMES`."""
    check_route_name(name)
    if name in RESERVED_NAMES:
        raise GatewayError(400, "invalid-route-name", f"route name {name!r} is reserved (the API's paths use "
                           f"{', '.join(RESERVED_NAMES)} after a route's name); pick another")


def route_scope(owner: str, name: str, *, read_only: bool = False) -> str:
    """The scope that lets a token through to one route."""
    return f"forward:{owner}/{name}" + (":read" if read_only else "")




def _scoped_level(scopes: tuple[Scope, ...], owner: str, name: str) -> Level | None:
    """The best access the token's forward scopes give to this route (None: none)."""
    best = None
    for s in scopes:
        if s.kind == "forward" and s.target == owner and s.prefix in ("", name):
            best = s.access if best is None else max(best, s.access)
    return best


def decide(*, owner: str, name: str, user: str, scopes: tuple[Scope, ...] | None, share: bool | None,
           method: bytes, upgrade: bool) -> Access:
    """May ``user`` (with a token of ``scopes``, None when unscoped) make this request
    on route ``owner``/``name``? ``share``: None when not shared with the user, else
    whether the share is read-only."""
    if user == owner:
        read_only = False
    elif share is not None:
        read_only = share
    else:
        return Access(False, 403, "route-not-shared",
                      f"route {name} of {owner} is not shared with {user}; ask {owner} to run "
                      f"`tether forward share {name} --with {user}`")
    if scopes is not None:
        level = _scoped_level(scopes, owner, name)
        if level is None:
            return Access(False, 403, "token-scope",
                          f"this token is limited to other scopes; reaching this route needs "
                          f"{route_scope(owner, name)} (or :read)")
        read_only = read_only or level < Level.WRITE
    if read_only and (method not in READ_METHODS or upgrade):
        what = "a websocket" if upgrade else method.decode("latin-1")
        return Access(False, 403, "read-only", f"this access to {name} is read-only: {what} is not allowed "
                      "(only GET and HEAD)", read_only=True)
    return Access(True, read_only=read_only)
