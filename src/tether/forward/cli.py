"""``tether forward``: serve an app on this node through the hub's gateway, and manage routes."""

from __future__ import annotations

import os
import sys

import click

from tether.console import emit_json, json_option
from tether.hubclient.hub import Conn, q
from tether.hubclient.options import client_options, end_share, show_rows


class _RunByDefault(click.Group):
    """``tether forward NAME -- CMD`` runs; ``tether forward list`` and the like manage."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_RunByDefault)
def forward() -> None:
    """Serve a web app running on this node through the hub's gateway, over SSH.

    The app listens on a UNIX socket in a private directory (its path is
    $TETHER_SOCKET, or {socket} in its arguments); tether connects to the hub's
    SSH server with your key, and the app appears at
    http(s)://NAME--USER.<gateway domain>/ for you, once signed in with the
    one-time link printed, and for whoever you share it with.

    \b
    Examples:
      tether forward demo --ssh hub.example.org:2222 -- uvicorn --uds {socket} myapp:app
      tether forward lab --ssh hub:2222 -- jupyter lab --no-browser --sock {socket}
      tether forward board --tcp --ssh hub:2222 -- python3 -m http.server --bind 127.0.0.1 {port}
      tether forward list
      tether forward share demo --with bob --read-only
      tether forward share demo --link --expires 2h --read-only
      tether forward links demo
      tether forward stop demo

    Without tether on the node, plain OpenSSH works too:
      ssh -N -R /demo:$PWD/app.sock -p 2222 hub.example.org
    """


@forward.command("run", context_settings={"ignore_unknown_options": False})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--ssh", "ssh_target", envvar="TETHER_SSH_HUB", show_envvar=True, required=True,
              metavar="[USER@]HOST[:PORT]", help="The hub's SSH server (tether hub --ssh-listen).")
@click.option("-i", "--identity", type=click.Path(dir_okay=False, exists=True),
              help="SSH private key (default: your ~/.ssh keys and agent).")
@click.option("--known-hosts", type=click.Path(dir_okay=False, exists=True),
              help="known_hosts file with the hub's host key (default ~/.ssh/known_hosts).")
@click.option("--replace", is_flag=True, help="Take the route over if another node of yours holds it.")
@click.option("--tcp", is_flag=True, help="Give the app a loopback TCP port ({port}, $TETHER_PORT) instead of a "
              "UNIX socket: for apps that cannot listen on one (weaker: every user of this node can reach it).")
@click.option("--idle", metavar="DURATION", help="End the route (and stop the app) after this long without "
              "traffic, e.g. 2h.")
@click.option("--start-timeout", type=click.FloatRange(min=1), default=60, show_default=True,
              help="Seconds the app may take to accept connections.")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON lines (connect, live, data, "
              "failed, exit).")
def run(name: str, command: tuple[str, ...], ssh_target: str, identity: str | None, known_hosts: str | None,
        replace: bool, tcp: bool, idle: str | None, start_timeout: float, as_json: bool) -> None:
    """Run COMMAND and serve it as route NAME until it exits (or Ctrl-C).

    Exit codes: 0 the app exited 0 (or you stopped it); 1 the app failed or the
    hub ended the route (stopped, idle); 2 bad arguments or the route is live
    elsewhere (--replace); 3 the app did not start or the hub is unreachable;
    4 the hub refused your key or its host key is unknown.

    \b
    Examples:
      tether forward demo --ssh hub:2222 -- uvicorn --uds {socket} tether.forward.demo:app
      tether forward demo --ssh hub:2222 --idle 2h --json -- my-dashboard --socket {socket}
    """
    import asyncio

    from tether.forward.client import Forwarder, parse_target
    from tether.forward.core import GatewayError, check_forward_name

    try:
        check_forward_name(name)
        target = parse_target(ssh_target)
    except (GatewayError, ValueError) as exc:
        raise click.UsageError(getattr(exc, "detail", str(exc))) from None
    if identity:
        _check_identity(identity)
    idle_seconds = None
    if idle:
        from tether.units import parse_duration

        try:
            idle_seconds = int(parse_duration(idle).total_seconds())
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--idle") from None
    runner = Forwarder(name, list(command), target, identity=identity, known_hosts=known_hosts, replace=replace,
                       tcp=tcp, idle=idle_seconds, as_json=as_json, start_timeout=start_timeout)
    sys.exit(asyncio.run(runner.run()))


def _check_identity(path: str) -> None:
    """-i must be a private key this command can use without asking: checked before the
    app starts (a .pub given by mistake, or a key with a passphrase, ended in a traceback)."""
    import asyncssh

    try:
        asyncssh.read_private_key(path)
        return
    except OSError as exc:
        why = f"cannot read it: {exc.strerror}"
    except asyncssh.KeyImportError as exc:
        why = f"not a private key tether can use ({exc})"
        if "passphrase" in str(exc).lower():
            why = f"it has a passphrase, which tether does not ask for: put it in your ssh-agent (`ssh-add {path}`) " \
                  "and leave out -i"
        else:
            try:
                asyncssh.read_public_key(path)
                why = "it is a public key: give the private half (the same name without .pub)"
            except (asyncssh.KeyImportError, OSError):
                pass
    raise click.BadParameter(f"{path}: {why}", param_hint="-i")


@forward.command("list")
@click.option("--all", "everyone", is_flag=True, help="Every user's routes (hub admins).")
@client_options
@json_option
def list_routes(conn: Conn, everyone: bool, as_json: bool) -> None:
    """List your live routes: state, URL, node, created, last activity, bytes each way,
    connections open now.

    \b
    Examples:
      tether forward list
      tether forward list --all --json | jq '.[] | select(.state == "reconnecting")'
    """
    show_rows(conn, "/api/v1/forward/routes", ["owner", "name", "state", "url", "node", "created", "last_activity",
                                                "bytes_up", "bytes_down", "open_connections"],
              as_json=as_json, empty="no live routes", params={"all": "true"} if everyone else None)


@forward.command("stop")
@click.argument("name")
@click.option("--user", "owner", metavar="USER", help="Another user's route (hub admins).")
@client_options
def stop(conn: Conn, name: str, owner: str | None) -> None:
    """End route NAME: browsers lose it, its sessions and links end, its node stops the app.

    \b
    Examples:
      tether forward stop demo
      tether forward stop lab --user alice
    """
    owner = owner or _whoami(conn)
    conn.client.request("DELETE", f"/api/v1/forward/routes/{q(owner)}/{q(name)}")
    click.echo(f"stopped {name} of {owner}")


@forward.command("share")
@click.argument("name")
@click.option("--with", "with_user", metavar="USER", help="The user to let through (they sign in with a token "
              "of their own).")
@click.option("--link", "as_link", is_flag=True, help="Instead, make a share link: whoever opens it gets a "
              "session; revoke it with `tether token revoke ID`.")
@click.option("--expires", default="2h", show_default=True, help="How long a --link works.")
@click.option("--read-only", is_flag=True, help="GET and HEAD only, no websockets.")
@client_options
@json_option
def share(conn: Conn, name: str, with_user: str | None, as_link: bool, expires: str, read_only: bool,
          as_json: bool) -> None:
    """Let USER through to your route NAME, or (--link) make a share link for it.

    \b
    Examples:
      tether forward share demo --with bob
      tether forward share demo --with carol --read-only
      tether forward share demo --link --expires 2h --read-only
    """
    if bool(with_user) == as_link:
        raise click.UsageError("give either --with USER or --link")
    if as_link:
        made = conn.client.post(f"/api/v1/forward/routes/{q(name)}/links",
                                json={"expires": expires, "read_only": read_only}) or {}
        if as_json:
            emit_json(made)
            return
        click.echo(made.get("url", ""))
        click.echo(f"tether: link token {made.get('id')}; revoke with `tether token revoke {made.get('id')}`",
                   err=True)
        return
    done = conn.client.put(f"/api/v1/forward/routes/{q(name)}/shares/{q(with_user)}", json={"read_only": read_only})
    if as_json:
        emit_json(done)
        return
    click.echo(f"shared {name} with {with_user}" + (" (read-only)" if read_only else ""))


@forward.command("unshare")
@click.argument("name")
@click.option("--with", "with_user", required=True, metavar="USER")
@client_options
def unshare(conn: Conn, name: str, with_user: str) -> None:
    """Stop sharing route NAME with USER.

    \b
    Examples:
      tether forward unshare demo --with bob
    """
    end_share(conn, f"/api/v1/forward/routes/{q(name)}/shares/{q(with_user)}", name, with_user)


@forward.command("links")
@click.argument("name")
@client_options
@json_option
def links(conn: Conn, name: str, as_json: bool) -> None:
    """List route NAME's share links that still work (revoke one with `tether token revoke ID`).

    \b
    Examples:
      tether forward links demo
    """
    show_rows(conn, f"/api/v1/forward/routes/{q(name)}/links", ["id", "read_only", "created", "expires"],
              as_json=as_json, empty="no share links")


@forward.command("signin")
@click.argument("name")
@client_options
@json_option
def signin(conn: Conn, name: str, as_json: bool) -> None:
    """Print a fresh one-time sign-in link for your route NAME (five minutes, one use).

    \b
    Examples:
      tether forward signin demo
    """
    made = conn.client.post(f"/api/v1/forward/routes/{q(name)}/signin", json={}) or {}
    if as_json:
        emit_json(made)
        return
    click.echo(made.get("signin", ""))


def _whoami(conn: Conn) -> str:
    return (conn.client.get("/api/v1/whoami") or {}).get("user", {}).get("name") or os.environ.get("USER", "")
