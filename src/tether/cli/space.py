"""``tether space``: spaces and who may read, write or administer them."""

from __future__ import annotations

import click

from tether.console import emit_json, emit_object, emit_table, json_option
from tether.hubclient.hub import Conn, q
from tether.hubclient.options import client_options

LEVELS = ["none", "read", "write", "admin"]


@click.group()
def space() -> None:
    """Create spaces and grant users access to them.

    A space is a named area of the hub (published builds, a record log, ...).
    Users get one level per space: none, read, write or admin.

    \b
    Examples:
      tether space create builds --description "CI artefacts"
      tether space grant builds ci-android write
      tether space show builds
    """


@space.command("create")
@click.argument("name")
@click.option("--description", "-d", metavar="D", default="", help="What the space is for.")
@click.option("--public-builds", is_flag=True, help="Builds published here are downloadable without a token "
              "unless the publish or the build type says otherwise.")
@client_options
@json_option
def space_create(conn: Conn, name: str, description: str, public_builds: bool, as_json: bool) -> None:
    """Create space NAME. Exits 1 if it already exists.

    \b
    Examples:
      tether space create builds
      tether space create snapshots --public-builds --description "public nightly builds"
    """
    body = {"name": name, "description": description, "public_builds": public_builds}
    s = conn.client.post("/api/v1/spaces", json=body) or {}
    if as_json:
        emit_json(s)
        return
    click.echo(f"created space {s.get('name', name)}")


@space.command("set")
@click.argument("name")
@click.option("--description", "-d", metavar="D", default=None, help="New description.")
@click.option("--public-builds/--private-builds", default=None,
              help="Default visibility of builds published here from now on.")
@client_options
@json_option
def space_set(conn: Conn, name: str, description: str | None, public_builds: bool | None, as_json: bool) -> None:
    """Change space NAME's settings (space admins).

    \b
    Examples:
      tether space set snapshots --public-builds
      tether space set builds --description "CI artefacts, private"
    """
    if description is None and public_builds is None:
        raise click.UsageError("nothing to change: give --description or --public-builds/--private-builds")
    body = {k: v for k, v in {"description": description, "public_builds": public_builds}.items() if v is not None}
    s = conn.client.request("PATCH", f"/api/v1/spaces/{q(name)}", json=body) or {}
    if as_json:
        emit_json(s)
        return
    emit_object(s, ["name", "description", "public_builds"])


@space.command("list")
@client_options
@json_option
def space_list(conn: Conn, as_json: bool) -> None:
    """List the spaces you can see, with your access level in each.

    With --json, prints a JSON array of space objects.

    \b
    Examples:
      tether space list
      tether space list --json | jq -r '.[] | select(.access == "write") | .name'
    """
    spaces = (conn.client.get("/api/v1/spaces") or {}).get("spaces", [])
    if as_json:
        emit_json(spaces)
        return
    emit_table(spaces, ["name", "access", "description", "created_at"], empty="no spaces")


@space.command("show")
@click.argument("name")
@client_options
@json_option
def space_show(conn: Conn, name: str, as_json: bool) -> None:
    """Show space NAME and its grants. Exits 1 if there is no such space.

    \b
    Examples:
      tether space show builds
      tether space show builds --json | jq '.grants'
    """
    s = conn.client.get(f"/api/v1/spaces/{q(name)}") or {}
    if as_json:
        emit_json(s)
        return
    emit_object(s, [k for k in s if k != "grants"])
    click.echo()
    emit_table(s.get("grants") or [], ["user", "level"], title="grants", empty="grants: none")


@space.command("grant")
@click.argument("space_name", metavar="SPACE")
@click.argument("user")
@click.argument("level", type=click.Choice(LEVELS))
@client_options
@json_option
def space_grant(conn: Conn, space_name: str, user: str, level: str, as_json: bool) -> None:
    """Give USER access LEVEL (none, read, write, admin) to SPACE.

    The new level replaces any earlier grant.

    \b
    Examples:
      tether space grant builds ci-android write
      tether space grant builds alice read
    """
    g = conn.client.put(f"/api/v1/spaces/{q(space_name)}/grants/{q(user)}", json={"level": level}) or {}
    if as_json:
        emit_json(g)
        return
    click.echo(f"granted {g.get('level', level)} on {g.get('space', space_name)} to {g.get('user', user)}")


@space.command("revoke")
@click.argument("space_name", metavar="SPACE")
@click.argument("user")
@client_options
def space_revoke(conn: Conn, space_name: str, user: str) -> None:
    """Remove USER's grant on SPACE (the same as granting `none`).

    Revoking a grant the user does not have succeeds and changes nothing;
    exits 1 if SPACE or USER does not exist.

    \b
    Example:
      tether space revoke builds alice
    """
    conn.client.delete(f"/api/v1/spaces/{q(space_name)}/grants/{q(user)}")
    click.echo(f"revoked {user}'s access to {space_name}")
