"""``tether log``: an immutable record log kept in a local SQLite file, with
git-like remotes and push/pull/sync over the hub's HTTP API (see docs/log.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tether.console import SIZE, emit_json, emit_object, emit_table, json_option
from tether.log.command import _db_path, _fmt_ms, add, list_records, log_errors, since_ms
from tether.problems import EXIT_NO, EXIT_USAGE, TetherError

F = TypeVar("F", bound=Callable[..., Any])

DB_HELP = "The log's SQLite file (default ./.tether/log.db)."


def db_option(f: F) -> F:
    return click.option("--db", "db", metavar="FILE", envvar="TETHER_LOG_DB", show_envvar=True,
                        type=click.Path(dir_okay=False), default=None, help=DB_HELP)(f)


def _since_ms(text: str) -> int:
    """``1700000000000`` (Unix ms), ``2h``/``3d`` (that long ago) or an ISO 8601 time."""
    try:
        return since_ms(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use Unix milliseconds, a duration ago (2h, 3d) or an ISO 8601 time",
                                 param_hint="--since") from None


@click.group()
def log() -> None:
    """Add, list and show records of an immutable log.

    Each record has a UUIDv7 id (ids sort by creation time), a creation time,
    an author and a text or JSON body. Records never change: a record that
    comes back with a known id but different content is refused as a conflict.
    The log lives in ./.tether/log.db unless --db (or TETHER_LOG_DB) says
    otherwise.

    Remotes work like git's: `tether log remote add origin https://hub/SPACE`,
    then `tether log push`, `pull` or `sync`; only the records the other side
    lacks are sent.

    \b
    Examples:
      tether log add 'build 1234 passed'
      make test 2>&1 | tail -n 20 | tether log add -
      tether log list --since 1h --author ci
      tether log sync origin
    """


@log.command("add")
@click.argument("body", metavar="BODY|-")
@click.option("--json", "as_json", is_flag=True, help="The body is JSON: check it and store it as JSON.")
@click.option("--author", metavar="NAME", default=None, envvar="TETHER_LOG_AUTHOR", show_envvar=True,
              help="Author name (default: the hub user `tether login` saved, else the local user name). "
                   "A hub accepts pushed records authored by the pushing user only.")
@click.option("--max-body", type=SIZE, default=None, metavar="SIZE", help="Refuse bodies larger than this (default 64KiB).")
@db_option
@log_errors
def log_add(body: str, as_json: bool, author: str | None, max_body: int | None, db: str | None) -> None:
    """Add a record with BODY (or stdin, with -) and print its id.

    Exits 2 for an empty, oversized or (with --json) invalid body.

    \b
    Examples:
      tether log add 'deployed v1.2 to staging'
      tether log add --json '{"build": 1234, "status": "passed"}'
      ./collect-metrics | tether log add --json -
    """
    add(body, as_json, author, max_body, db)


@log.command("list")
@click.option("--since", metavar="TIME", default=None, help="Only records created since TIME: 2h, 3d, an ISO 8601 time or Unix ms.")
@click.option("--author", metavar="NAME", default=None, help="Only records by this author.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many records (the oldest first).")
@json_option
@db_option
@log_errors
def log_list(since: str | None, author: str | None, limit: int | None, as_json: bool, db: str | None) -> None:
    """List records, oldest first. With --json, prints a JSON array of records.

    \b
    Examples:
      tether log list
      tether log list --since 2h --author alice
      tether log list --json | jq -r '.[] | select(.kind == "json") | .body.status'
    """
    list_records(_since_ms(since) if since is not None else None, author, limit, as_json, db)


@log.command("show")
@click.argument("record_id", metavar="ID")
@json_option
@db_option
@log_errors
def log_show(record_id: str, as_json: bool, db: str | None) -> None:
    """Show the record ID in full. Exits 1 if there is no such record.

    \b
    Examples:
      tether log show 0190b6f2-6a3e-7c41-9d2a-51f0c2e3a4b5
      tether log show "$(tether log add 'hello')" --json
    """
    from tether.log.store import LogStore, NotFound, parse_id

    parse_id(record_id)
    path = _db_path(db)
    if not path.exists():
        raise NotFound(f"no record {record_id}: there is no log at {path}")
    with LogStore(path) as store:
        record = store.get(record_id)
    if as_json:
        emit_json(record.to_dict())
        return
    emit_object({"id": record.id, "created": _fmt_ms(record.created), "author": record.author, "kind": record.kind})
    click.echo()
    click.echo(record.body)


# ---------------------------------------------------------------- remotes


@log.group("remote")
def remote() -> None:
    """Name the hubs (and spaces) this log syncs with.

    \b
    URLs:
      https://HUB/SPACE               the hub's HTTP API (plain http only to loopback)
      ssh://USER@HOST[:PORT]/SPACE    over SSH to the hub's server account (your
                                      ssh, ~/.ssh/config and known_hosts; TETHER_SSH
                                      overrides the ssh command)

    \b
    Examples:
      tether log remote add origin https://hub.example.org/builds
      tether log remote list --json
      tether log remote rm origin
    """


@remote.command("add")
@click.argument("name")
@click.argument("url")
@db_option
@log_errors
def remote_add(name: str, url: str, db: str | None) -> None:
    """Add a remote NAME for URL. Exits 1 if NAME exists, 2 for a bad URL.

    \b
    Examples:
      tether log remote add origin https://hub.example.org/builds
      tether log remote add local http://127.0.0.1:8580/test
      tether log remote add shared ssh://tether@hub.example.org/shared
    """
    from tether.log.client import parse_remote_url
    from tether.log.store import ConflictError, LogStore

    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-" for c in name):
        raise TetherError(f"invalid remote name {name[:64]!r}", EXIT_USAGE, "use letters, digits and ._-")
    r = parse_remote_url(url)
    with LogStore(_db_path(db)) as store:
        try:
            store.add_remote(name, r.url)
        except ConflictError:
            raise TetherError(f"a remote named {name!r} already exists", EXIT_NO,
                              f"remove it first: tether log remote rm {name}") from None


@remote.command("list")
@json_option
@db_option
@log_errors
def remote_list(as_json: bool, db: str | None) -> None:
    """List remotes.

    \b
    Examples:
      tether log remote list
      tether log remote list --json
    """
    from tether.log.store import LogStore

    path = _db_path(db)
    rows: list[dict[str, str]] = []
    if path.exists():
        with LogStore(path) as store:
            rows = [{"name": n, "url": u} for n, u in store.remotes()]
    if as_json:
        emit_json(rows)
        return
    emit_table(rows, ["name", "url"], empty="no remotes")


@remote.command("rm")
@click.argument("name")
@db_option
@log_errors
def remote_rm(name: str, db: str | None) -> None:
    """Remove the remote NAME (its records stay). Exits 1 if there is none.

    \b
    Example:
      tether log remote rm origin
    """
    from tether.log.store import LogStore

    path = _db_path(db)
    if not path.exists():
        raise TetherError(f"no remote named {name!r}", EXIT_NO)
    with LogStore(path) as store:
        store.remove_remote(name)


# ---------------------------------------------------------------- push / pull / sync


def _transfer(name: str, token: str | None, ca_bundle: str | None, as_json: bool, db: str | None,
              push: bool, pull: bool) -> None:
    from tether.log.client import open_remote, parse_remote_url, sync
    from tether.log.store import LogStore, NotFound

    path = _db_path(db)
    if not path.exists():
        raise TetherError(f"no log at {path}", EXIT_USAGE, "run it where the log is, or pass --db")
    with LogStore(path) as store:
        try:
            url = store.remote(name)
        except NotFound:
            raise TetherError(f"no remote named {name!r}", EXIT_USAGE,
                              f"add one: tether log remote add {name} https://HUB/SPACE") from None
        mode = "sync" if push and pull else ("push" if push else "pull")
        with open_remote(parse_remote_url(url), token, ca_bundle, mode=mode) as remote:
            result = sync(store, remote, push=push, pull=pull)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(_summary(name, result.pushed, result.pulled, push, pull))
    if result.conflicts:
        shown = ", ".join(result.conflicts[:5]) + (f" and {len(result.conflicts) - 5} more"
                                                   if len(result.conflicts) > 5 else "")
        raise TetherError(
            f"conflict: {len(result.conflicts)} record(s) held here and on {name!r} with different content: {shown}",
            EXIT_NO, "records are immutable: neither copy was changed; `tether log show ID` shows ours")


def _records(n: int) -> str:
    return f"{n} record" + ("" if n == 1 else "s")


def _summary(remote: str, pushed: int, pulled: int, push: bool, pull: bool) -> str:
    """What moved, in the words of the command that ran: a pull pushes nothing."""
    said = []
    if pull:
        said.append(f"pulled {_records(pulled)} from {remote}" if pulled else f"nothing to pull from {remote}")
    if push:
        said.append(f"pushed {_records(pushed)} to {remote}" if pushed else f"nothing to push to {remote}")
    return "; ".join(said)


def _transfer_command(verb: str, push: bool, pull: bool, doc: str):
    @log.command(verb, help=doc)
    @click.argument("remote_name", metavar="[REMOTE]", default="origin")
    @click.option("--token", metavar="TOKEN", default=None,
                  help="Hub token (default: TETHER_TOKEN, or the one saved by `tether login` for this hub).")
    @click.option("--ca-bundle", metavar="FILE", default=None, envvar="TETHER_CA_BUNDLE",
                  help="PEM file of CAs to trust for the hub.")
    @json_option
    @db_option
    @log_errors
    def command(remote_name: str, token: str | None, ca_bundle: str | None, as_json: bool, db: str | None) -> None:
        _transfer(remote_name, token, ca_bundle, as_json, db, push, pull)

    return command


_EXITS = """
    Exit codes: 0 done; 1 conflict (a record id held on both sides with
    different content: neither copy changes, everything else still moves;
    --json lists them under "conflicts"); 2 bad remote or usage; 3 the hub is
    unreachable; 4 the token is refused or lacks the grant.
"""

log_push = _transfer_command("push", True, False, """Send the records REMOTE (default origin) lacks.

    Reconciles first, so only missing records move. Needs a write grant on the
    remote's space; records you push must be authored by your hub user name.
    With --json prints {"pushed": n, "pulled": 0, "rounds": r, "method": m,
    "bytes": b, "conflicts": [ids]}; method is how the logs were compared:
    equal, iblt or list (protocol 3), or ranges (a hub without it).

    \b
    Examples:
      tether log push
      tether log push backup --json
""" + _EXITS)
log_pull = _transfer_command("pull", False, True, """Fetch the records REMOTE (default origin) has and this log lacks.

    Needs a read grant on the remote's space.

    \b
    Examples:
      tether log pull
      TETHER_TOKEN=tth_... tether log pull origin --json
""" + _EXITS)
log_sync = _transfer_command("sync", True, True, """Pull, then push: afterwards both sides hold the union.

    Resumable and idempotent: interrupted at any point and run again, it
    loses nothing and duplicates nothing. However far the logs have drifted
    apart, the first round estimates how many records differ and the hub
    answers with a table of about 46 bytes a difference, or its whole list of
    ids when that is smaller (see docs/log.md, "How a sync decides").

    \b
    Examples:
      tether log sync
      tether log sync origin --json
""" + _EXITS)
