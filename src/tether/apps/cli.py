"""``tether app``: register web apps, spawn per-user sandboxed instances, grant them
destinations, and open them through the hub's gateway."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from tether.console import emit_json, emit_object, emit_table, json_option
from tether.hubclient.hub import Conn, q
from tether.hubclient.options import client_options, end_share, show_rows

INSTANCE_HELP = "APP (your own) or APP--USER"


@click.group()
def app() -> None:
    """Per-user web apps in sandboxes, served through the hub's gateway.

    An operator registers an app (its files, its command, its limits); each user
    spawns an instance of their own, which runs under bubblewrap as a uid of its
    own, in its own namespaces, with no network but what is granted, and is served
    at http(s)://APP--USER.<gateway domain>/ to that user only.

    \b
    Examples:
      tether app register demo --space apps --dir ./demo --cmd python3 app.py
      tether app spawn demo
      tether app open demo
      tether app status demo --json
      tether app grant demo--alice tcp 192.0.2.10:5432 --expires 2h --reason "course database"
      tether app revoke demo--alice tcp 192.0.2.10:5432
      tether app stop demo; tether app rm demo
    """


class _ArgvTail(click.Command):
    """``--cmd ARGV...`` takes every word after it (so it comes last) and ``--install
    ARGV...`` every word up to ``--cmd``: argv lists as typed, never a shell string."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--cmd" not in args:
            if "--help" in args or "-h" in args or not args:
                return super().parse_args(ctx, args)
            raise click.UsageError("give the app's command last: --cmd PROGRAM [ARG...]", ctx)
        at = args.index("--cmd")
        head, ctx.meta["app_cmd"] = args[:at], args[at + 1:]
        if not ctx.meta["app_cmd"]:
            raise click.UsageError("--cmd needs a program: --cmd python3 app.py", ctx)
        if "--install" in head:
            i = head.index("--install")
            head, ctx.meta["app_install"] = head[:i], head[i + 1:]
            if not ctx.meta["app_install"]:
                raise click.UsageError("--install needs a program: --install pip install -r requirements.txt "
                                       "--cmd ...", ctx)
        return super().parse_args(ctx, head)


@app.command("register", cls=_ArgvTail)
@click.argument("name")
@click.option("--space", required=True, help="The space the app belongs to (admin on it needed).")
@click.option("--version", "version", default="1", show_default=True, help="The version this registers.")
@click.option("--dir", "src_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The app's files: sent as a build (only what the hub lacks travels).")
@click.option("--build", metavar="SPACE/TYPE/ID", help="Instead of --dir: a build already published.")
@click.option("--memory", metavar="SIZE", help="Memory limit, e.g. 256M (default 256M).")
@click.option("--cpu", metavar="CORES", help="CPU limit in cores, e.g. 0.5 (default 0.5).")
@click.option("--pids", metavar="N", help="Processes and threads at once (default 128).")
@click.option("--disk", metavar="SIZE", help="The size of each instance's /data, e.g. 4G (default 1G; 16M to 1T).")
@click.option("--grant", "grants", multiple=True, metavar="tcp:HOST:PORT",
              help="A destination every instance may reach (repeat).")
@click.option("--tcp", "tcp", is_flag=False, flag_value="8000", default=None, metavar="[PORT]",
              help="For an app that only speaks TCP: it listens on 127.0.0.1:$PORT inside its own network "
              "namespace (PORT 1-65535, default 8000), not on $TETHER_SOCKET.")
@client_options
@json_option
def register(conn: Conn, name: str, space: str, version: str, src_dir: Path | None, build: str | None,
             memory: str | None, cpu: str | None, pids: str | None, disk: str | None, grants: tuple[str, ...],
             tcp: str | None, as_json: bool) -> None:
    """Register app NAME (or a new --version of it).

    \b
    After the options:
      --install ARGV...   run once per version, before any instance (what it writes
                          to /data, instances see read-only at /app/.install)
      --cmd ARGV...       the app's command, LAST: every word after it is an argument,
                          passed exactly as written (quotes, $(...), newlines: literally)

    The app runs in /app (its files, read-only), with a writable /data of its own
    (a filesystem of --disk bytes: writing past it fails with "No space left on
    device"), and listens on the UNIX socket $TETHER_SOCKET, or, with --tcp, on
    127.0.0.1:$PORT inside its own network namespace (the gateway reaches it
    there; the instance still reaches nothing it was not granted).

    \b
    Examples:
      tether app register demo --space apps --dir ./demo --cmd python3 app.py
      tether app register demo --space apps --version 2 --build apps/apps/demo-2 --cmd python3 app.py
      tether app register files --space apps --dir ./www --tcp 8080 \\
          --cmd python3 -m http.server --bind 127.0.0.1 8080
      tether app register nb --space lab --dir ./nb --memory 1G --cpu 1 --pids 256 --disk 4G \\
          --grant tcp:192.0.2.10:5432 --install python3 -m pip install --target /data -r req.txt \\
          --cmd python3 server.py
    """
    ctx = click.get_current_context()
    cmd, install = ctx.meta["app_cmd"], ctx.meta.get("app_install")
    from tether.apps import client
    from tether.apps.core import (AppError, check_app_name, check_argv, check_version, parse_destination,
                                  parse_limits, parse_tcp_port)
    from tether.problems import TetherError

    try:  # what can be checked here is, before any file travels (the hub checks it all again)
        check_app_name(name)
        check_version(version)
        parse_limits(memory, cpu, pids, disk)
        check_argv(cmd, "--cmd")
        if install is not None:
            check_argv(install, "--install")
        for g in grants:
            parse_destination(None, g)
        if tcp is not None:
            parse_tcp_port(tcp)
    except AppError as exc:
        raise TetherError(exc.detail, 2) from None
    if bool(src_dir) == bool(build):
        late = [w for w in cmd if w in ("--dir", "--build")]
        raise click.UsageError(f"{late[0]} came after --cmd, so it is part of the app's command: put --cmd last"
                               if late and not (src_dir or build) else
                               "give the app's files with either --dir DIR or --build SPACE/TYPE/ID")
    sent = None
    if src_dir is not None:
        try:
            build, sent = client.send_tree(conn.client, src_dir, space=space, app=name)
        except client.TreeError as exc:
            raise click.UsageError(str(exc)) from None
    body = {"space": space, "version": version, "build": build, "cmd": cmd, "install": install,
            "memory": memory, "cpu": cpu, "pids": pids, "disk": disk, "grants": list(grants),
            **({"tcp": tcp} if tcp is not None else {})}
    out = client.register(conn.client, name, body)
    if sent is not None:
        out["files_sent"] = sent
    if as_json:
        emit_json(out)
        return
    what = "unchanged" if out.get("unchanged") else "registered"
    click.echo(f"{what}: {name} {version} in {space} (build {build}" +
               (f", {sent} files sent" if sent is not None else "") + ")")


@app.command("spawn")
@click.argument("name")
@click.option("--for", "for_user", metavar="USER", help="Spawn USER's instance (admin on the app's space).")
@client_options
@json_option
def spawn(conn: Conn, name: str, for_user: str | None, as_json: bool) -> None:
    """Spawn your instance of app NAME (or USER's) and start it.

    \b
    Examples:
      tether app spawn demo
      tether app spawn demo --for alice
    """
    out = conn.client.post(f"/api/v1/apps/{q(name)}/spawn", json={"for_user": for_user}) or {}
    if as_json:
        emit_json(out)
        return
    click.echo(f"{out.get('instance')} is {out.get('state')} at {out.get('url')}")
    if not for_user:
        click.echo(f"sign in with `tether app open {name}`", err=True)


def _instance_command(verb: str, doc: str):
    @app.command(verb, help=doc)
    @click.argument("instance")
    @client_options
    @json_option
    def command(conn: Conn, instance: str, as_json: bool) -> None:
        out = conn.client.post(f"/api/v1/app-instances/{q(instance)}/{verb}", json={}) or {}
        if as_json:
            emit_json(out)
            return
        click.echo(f"{out.get('instance')}: {out.get('state')}")

    return command


_instance_command("stop", f"Stop INSTANCE ({INSTANCE_HELP}); its data stays.\n\n\b\nExamples:\n  tether app stop demo\n"
                  "  tether app stop demo--alice")
_instance_command("start", f"Start a stopped INSTANCE ({INSTANCE_HELP}).\n\n\b\nExamples:\n  tether app start demo")
_instance_command("restart", f"Stop and start INSTANCE ({INSTANCE_HELP}).\n\n\b\nExamples:\n"
                  "  tether app restart demo")


@app.command("rm")
@click.argument("instance")
@client_options
def rm(conn: Conn, instance: str) -> None:
    """Remove INSTANCE: its sandbox, its data, its grants. Nothing is left behind.

    \b
    Examples:
      tether app rm demo
      tether app rm demo--alice
    """
    out = conn.client.delete(f"/api/v1/app-instances/{q(instance)}") or {}
    click.echo(f"removed {instance}" if out.get("removed") else out.get("detail", "removal pending"))


@app.command("list")
@click.option("--all", "everyone", is_flag=True, help="Every instance of the apps you administer.")
@click.option("--apps", "apps", is_flag=True, help="The registered apps instead of instances.")
@client_options
@json_option
def list_(conn: Conn, everyone: bool, apps: bool, as_json: bool) -> None:
    """List your instances (state, URL, restarts, refused attempts), or --apps.

    \b
    Examples:
      tether app list
      tether app list --all --json
      tether app list --apps
    """
    if apps:
        rows = conn.client.get("/api/v1/apps") or []
        if as_json:
            emit_json(rows)
            return
        emit_table(rows, ["name", "space", "current_version", "versions", "created_by"], empty="no apps")
        return
    rows = conn.client.get("/api/v1/app-instances", params={"all": "true"} if everyone else None) or []
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        r["refused"] = sum((r.get("refused") or {}).values())
    emit_table(rows, ["instance", "version", "state", "url", "restarts", "refused", "grants", "last_activity"],
               empty="no instances")


@app.command("status")
@click.argument("instance")
@client_options
@json_option
def status(conn: Conn, instance: str, as_json: bool) -> None:
    """Show INSTANCE: state, why, limits, restarts, memory kills, and refused attempts
    by kind (host, other instances, outside, IPv6, metadata...).

    \b
    Examples:
      tether app status demo
      tether app status demo--alice --json
    """
    out = conn.client.get(f"/api/v1/app-instances/{q(instance)}") or {}
    if as_json:
        emit_json(out)
        return
    emit_object(out, ["instance", "version", "state", "desired", "reason", "url", "holder", "uid", "limits", "tcp_port",
                      "restarts", "oom_kills", "refused", "grants", "started", "last_activity", "bytes_up", "bytes_down"])


@app.command("logs")
@click.argument("instance")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the instance stops "
              "(or Ctrl-C).")
@client_options
def logs(conn: Conn, instance: str, follow: bool) -> None:
    """Print INSTANCE's output (its stdout and stderr since it last started).

    Only the hub replica running the instance has its output: through another
    replica this fails (exit 1) and names the one that has it.

    \b
    Examples:
      tether app logs demo
      tether app logs demo--alice -f
    """
    path, offset = f"/api/v1/app-instances/{q(instance)}/logs", 0
    try:
        while True:
            resp = conn.client.send("GET", path, params={"offset": offset})
            if not resp.is_success:
                conn.client.request("GET", path, params={"offset": offset})  # raises the hub's error
            sys.stdout.buffer.write(resp.content)
            sys.stdout.flush()
            offset = int(resp.headers.get("X-Tether-Log-Offset") or offset)
            if not follow:
                return
            if not resp.content:
                state = resp.headers.get("X-Tether-Instance-State", "")
                if state in ("stopped", "failed"):
                    click.echo(f"tether: {instance} is {state}: no more output (see `tether app status "
                               f"{instance}`)", err=True)
                    return
                time.sleep(1)
    except KeyboardInterrupt:  # Ctrl-C is how a follow ends
        return


@app.command("open")
@click.argument("name")
@client_options
@json_option
def open_(conn: Conn, name: str, as_json: bool) -> None:
    """Print a one-time sign-in link to your instance of NAME (five minutes, one use).

    \b
    Examples:
      tether app open demo
    """
    out = conn.client.post(f"/api/v1/app-instances/{q(name)}/signin", json={}) or {}
    if as_json:
        emit_json(out)
        return
    click.echo(out.get("signin", ""))


@app.command("share")
@click.argument("name")
@click.option("--with", "with_user", metavar="USER", help="Share with this user (they sign in as themselves) "
              "instead of making a link.")
@click.option("--expires", default="2h", show_default=True, help="How long the link works (links only).")
@click.option("--read-only", is_flag=True, help="GET and HEAD only, no websockets.")
@client_options
@json_option
def share(conn: Conn, name: str, with_user: str | None, expires: str, read_only: bool, as_json: bool) -> None:
    """Let USER through to your instance of NAME (--with USER: until you unshare it), or
    make a link that lets whoever opens it in, until it expires (revoke it sooner with
    `tether token revoke ID`: its sessions end too).

    \b
    Examples:
      tether app share demo --with bob --read-only
      tether app share demo --expires 1h --read-only
    """
    if with_user is not None:
        done = conn.client.put(f"/api/v1/app-instances/{q(name)}/shares/{q(with_user)}",
                               json={"read_only": read_only}) or {}
        if as_json:
            emit_json(done)
            return
        click.echo(f"shared {name} with {with_user}" + (" (read-only)" if read_only else "") +
                   f"; they open it with `tether app open {done.get('instance', name)}`")
        return
    made = conn.client.post(f"/api/v1/app-instances/{q(name)}/links",
                            json={"expires": expires, "read_only": read_only}) or {}
    if as_json:
        emit_json(made)
        return
    click.echo(made.get("url", ""))
    click.echo(f"tether: link token {made.get('id')}; revoke with `tether token revoke {made.get('id')}`", err=True)


@app.command("unshare")
@click.argument("name")
@click.option("--with", "with_user", metavar="USER", required=True, help="The user to shut out.")
@client_options
def unshare(conn: Conn, name: str, with_user: str) -> None:
    """Stop sharing your instance of NAME with USER: their next request is refused.

    \b
    Examples:
      tether app unshare demo --with bob
    """
    end_share(conn, f"/api/v1/app-instances/{q(name)}/shares/{q(with_user)}", name, with_user)


@app.command("shares")
@click.argument("name")
@client_options
@json_option
def shares(conn: Conn, name: str, as_json: bool) -> None:
    """List who else your instance of NAME is shared with.

    \b
    Examples:
      tether app shares demo --json
    """
    show_rows(conn, f"/api/v1/app-instances/{q(name)}/shares", ["user", "read_only", "created"], as_json=as_json,
              empty="not shared with anyone")


def _destination(proto_or_dest: str, dest: str | None) -> dict:
    if dest is None:
        return {"proto": None, "destination": proto_or_dest}
    return {"proto": proto_or_dest, "destination": dest}


@app.command("grant")
@click.argument("instance")
@click.argument("proto", metavar="tcp|udp")
@click.argument("destination", metavar="HOST:PORT", required=False)
@click.option("--expires", metavar="DURATION", help="Close it after this long, e.g. 2h.")
@click.option("--reason", default="", help="Why (kept with the grant, shown by `tether app grants`).")
@client_options
@json_option
def grant(conn: Conn, instance: str, proto: str, destination: str | None, expires: str | None, reason: str,
          as_json: bool) -> None:
    """Let INSTANCE reach one destination (one address, one port). Everything else stays
    denied. A destination on the hub's own machine needs admin on the app's space.

    \b
    Examples:
      tether app grant demo tcp 192.0.2.10:5432
      tether app grant demo--alice udp:[2001:db8::53]:53 --expires 2h --reason "lab DNS"
    """
    out = conn.client.post(f"/api/v1/app-instances/{q(instance)}/grants",
                           json={**_destination(proto, destination), "expires": expires, "reason": reason}) or {}
    if as_json:
        emit_json(out)
        return
    click.echo(f"granted {out.get('destination')} to {instance}" +
               (f" until {out['expires']}" if out.get("expires") else ""))


@app.command("revoke")
@click.argument("instance")
@click.argument("proto", metavar="tcp|udp", required=False)
@click.argument("destination", metavar="HOST:PORT", required=False)
@click.option("--all", "everything", is_flag=True, help="Every destination of INSTANCE.")
@client_options
def revoke(conn: Conn, instance: str, proto: str | None, destination: str | None, everything: bool) -> None:
    """Close a destination at once (open connections to it included).

    \b
    Examples:
      tether app revoke demo tcp 192.0.2.10:5432
      tether app revoke demo--alice --all
    """
    if bool(proto) == everything:
        raise click.UsageError("name one destination (tcp HOST:PORT) or give --all")
    params = {} if everything else {k: v for k, v in _destination(proto, destination).items() if v}
    out = conn.client.delete(f"/api/v1/app-instances/{q(instance)}/grants", params=params) or {}
    click.echo(f"revoked {out.get('revoked', 0)} destination(s) of {instance}")


@app.command("grants")
@click.argument("instance")
@client_options
@json_option
def grants(conn: Conn, instance: str, as_json: bool) -> None:
    """List the destinations INSTANCE may reach.

    \b
    Examples:
      tether app grants demo --json
    """
    show_rows(conn, f"/api/v1/app-instances/{q(instance)}/grants",
              ["destination", "host", "on_hub", "expires", "reason", "by"], as_json=as_json,
              empty="no grants: it reaches nothing")
