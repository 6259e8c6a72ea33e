"""What ``tether whoami``, ``tether token list``, ``tether token mint`` and ``tether audit``
do, without click: the click commands (:mod:`tether.cli.login`, :mod:`tether.cli.token`,
:mod:`tether.cli.audit`) and the quick command line (:mod:`tether.cli.quick`) both call
these, so output and errors are the same either way. Each takes the command's
connection (:class:`tether.hubclient.hub.Conn`) and its parameters by their names.
"""

from __future__ import annotations

from tether.console import echo, emit_json, emit_object, emit_table

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from typing import Any

    from tether.hubclient.hub import Conn

TOKEN_FIELDS = [
    "id", "user", "label", "parent", "minted_by", "scopes", "not_before", "expires_at", "sources",
    "max_uses", "uses", "max_files", "files", "max_bytes", "bytes", "created_at", "revoked_at",
]  # fmt: skip
TOKEN_LIST_COLUMNS = ["id", "user", "label", "scopes", "expires_at", "uses", "revoked_at"]
AUDIT_COLUMNS = ["at", "user", "token_id", "action", "resource", "source", "outcome", "status", "count", "last_at",
                 "reason"]
CAVEATS = ("scopes", "expires", "not_before", "sources", "max_uses", "max_files", "max_bytes", "label")


def whoami(conn: Conn, as_json: bool) -> None:
    me = conn.client.get("/api/v1/whoami") or {}
    if as_json:
        emit_json(me)
        return
    user = me.get("user") or {}
    tok = me.get("token")
    info: dict[str, Any] = {
        "hub": conn.config.hub,
        "user": user.get("name"),
        "kind": user.get("kind"),
        "admin": user.get("admin"),
        "disabled": user.get("disabled"),
    }
    if tok:
        info.update(
            token=tok.get("id"),
            label=tok.get("label"),
            scopes=tok.get("scopes"),
            expires_at=tok.get("expires_at"),
            sources=tok.get("sources"),
        )
    emit_object(info)


def token_body(for_user: str | None, inherit: bool, c: dict[str, Any]) -> dict[str, Any]:
    """The body of POST /api/v1/tokens from the caveat options (:data:`CAVEATS`)."""
    return {
        "for_user": for_user,
        "inherit": inherit,
        "scopes": list(c["scopes"]) or None,
        "expires": c["expires"],
        "not_before": c["not_before"],
        "sources": list(c["sources"]) or None,
        "max_uses": c["max_uses"],
        "max_files": c["max_files"],
        "max_bytes": c["max_bytes"],
        "label": c["label"],
    }


def print_minted(t: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(t)
        return
    echo(t.get("token", ""))
    details = {k: v for k, v in t.items() if k != "token" and v is not None}
    emit_object(details, TOKEN_FIELDS, err=True)


def token_mint(conn: Conn, for_user: str | None, as_json: bool, inherit: bool = False, **caveats: Any) -> None:
    """Mint (or, with ``inherit``, attenuate) and print the new token."""
    t = conn.client.post("/api/v1/tokens", json=token_body(for_user, inherit, {k: caveats[k] for k in CAVEATS})) or {}
    print_minted(t, as_json)


def token_list(conn: Conn, user: str | None, all_: bool, as_json: bool) -> None:
    params: dict[str, str] = {}
    if user:
        params["user"] = user
    if all_:
        params["all"] = "true"
    tokens = (conn.client.get("/api/v1/tokens", params=params) or {}).get("tokens", [])
    if as_json:
        emit_json(tokens)
        return
    emit_table(tokens, TOKEN_LIST_COLUMNS, empty="no tokens")


def audit(conn: Conn, since: str | None, user: str | None, token_id: str | None, action: str | None,
          limit: int | None, as_json: bool) -> None:  # fmt: skip
    if token_id is not None:
        token_id = token_id_arg(token_id, "--token")
    params = {"since": since, "user": user, "token": token_id, "action": action, "limit": limit}
    params = {k: str(v) for k, v in params.items() if v is not None}
    records = (conn.client.get("/api/v1/audit", params=params) or {}).get("records", [])
    if as_json:
        emit_json(records)
        return
    emit_table(records, AUDIT_COLUMNS, empty="no audit records")


def token_id_arg(value: str, what: str) -> str:
    """A token id, or the id of a whole token (``tth_<id>_<secret>``): the secret stays here.
    ``what`` names the argument in the error (``--token``, ``ID``)."""
    from tether.auth.tokens import is_token_id, split_token
    from tether.problems import EXIT_USAGE, TetherError

    value = value.strip()
    parts = split_token(value)
    if parts is not None:
        return parts[0]
    if is_token_id(value):
        return value
    shown = "a token" if value.startswith("tth_") else repr(value[:40])
    raise TetherError(f"{what}: {shown} is neither a token id (16 hex digits) nor a whole token (tth_<id>_<secret>)",
                      EXIT_USAGE, "copy the id from `tether token list`, or pass the token itself")


__all__ = ["audit", "print_minted", "token_body", "token_id_arg", "token_list", "token_mint", "whoami"]
