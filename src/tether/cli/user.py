"""``tether user``: manage the hub's users (admin only)."""

from __future__ import annotations

import click

from tether.console import emit_json, emit_object, emit_table, json_option
from tether.hubclient.hub import Conn, q
from tether.hubclient.options import client_options

USER_FIELDS = ["name", "kind", "admin", "disabled", "created_at"]


@click.group()
def user() -> None:
    """Add, list, show, disable and enable users.

    Users are people or services; keys (`tether key`) and tokens
    (`tether token`) belong to a user, and space grants (`tether space grant`)
    say what a user may touch. Most of these commands need an admin token.

    \b
    Examples:
      tether user add alice
      tether user add ci-android --kind service
      tether user list
    """


@user.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["person", "service"]), default="person", show_default=True,
              help="A person (logs in, holds SSH keys) or a service (CI, scheduler).")
@click.option("--admin", is_flag=True, help="Make the user a hub administrator.")
@client_options
@json_option
def user_add(conn: Conn, name: str, kind: str, admin: bool, as_json: bool) -> None:
    """Create user NAME. Prints no secret: give the user keys or mint a token.

    Exits 1 if the user already exists.

    \b
    Examples:
      tether user add alice
      tether user add scheduler --kind service
      tether user add bob --admin
    """
    u = conn.client.post("/api/v1/users", json={"name": name, "kind": kind, "admin": admin}) or {}
    if as_json:
        emit_json(u)
        return
    extra = ", admin" if u.get("admin", admin) else ""
    click.echo(f"created user {u.get('name', name)} ({u.get('kind', kind)}{extra})")


@user.command("list")
@client_options
@json_option
def user_list(conn: Conn, as_json: bool) -> None:
    """List users. With --json, prints a JSON array of user objects.

    \b
    Examples:
      tether user list
      tether user list --json | jq -r '.[] | select(.admin) | .name'
    """
    users = (conn.client.get("/api/v1/users") or {}).get("users", [])
    if as_json:
        emit_json(users)
        return
    emit_table(users, USER_FIELDS, empty="no users")


@user.command("show")
@click.argument("name")
@client_options
@json_option
def user_show(conn: Conn, name: str, as_json: bool) -> None:
    """Show user NAME with their keys and space grants.

    Exits 1 if there is no such user.

    \b
    Examples:
      tether user show alice
      tether user show alice --json | jq -r '.keys[].fingerprint'
    """
    u = conn.client.get(f"/api/v1/users/{q(name)}") or {}
    if as_json:
        emit_json(u)
        return
    emit_object(u, USER_FIELDS)
    click.echo()
    emit_table(u.get("keys") or [], ["id", "kind", "algorithm", "fingerprint", "comment"], title="keys", empty="keys: none")
    click.echo()
    emit_table(u.get("grants") or [], ["space", "level"], title="grants", empty="grants: none")


def _set_disabled(conn: Conn, name: str, disable: bool, as_json: bool) -> None:
    action = "disable" if disable else "enable"
    u = conn.client.post(f"/api/v1/users/{q(name)}/{action}") or {}
    if as_json:
        emit_json(u)
        return
    click.echo(f"{action}d user {u.get('name', name)}")


@user.command("disable")
@click.argument("name")
@client_options
@json_option
def user_disable(conn: Conn, name: str, as_json: bool) -> None:
    """Disable user NAME: their keys and tokens stop working until re-enabled.

    \b
    Example:
      tether user disable alice
    """
    _set_disabled(conn, name, True, as_json)


@user.command("enable")
@click.argument("name")
@client_options
@json_option
def user_enable(conn: Conn, name: str, as_json: bool) -> None:
    """Enable user NAME again after `tether user disable`.

    \b
    Example:
      tether user enable alice
    """
    _set_disabled(conn, name, False, as_json)
