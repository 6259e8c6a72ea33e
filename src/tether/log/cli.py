"""``tether log``: an immutable record log kept in a local SQLite file.

Push/pull with remotes is not here yet (see docs/log.md).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tether.cli.common import (
    EXIT_NO,
    EXIT_RUNTIME,
    EXIT_USAGE,
    SIZE,
    TetherError,
    emit_json,
    emit_object,
    emit_table,
    json_option,
)

F = TypeVar("F", bound=Callable[..., Any])

DB_HELP = "The log's SQLite file (default ./.tether/log.db)."


def db_option(f: F) -> F:
    return click.option("--db", "db", metavar="FILE", envvar="TETHER_LOG_DB", show_envvar=True,
                        type=click.Path(dir_okay=False), default=None, help=DB_HELP)(f)


def log_errors(fn: F) -> F:
    """Turn the log's errors into clean messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import sqlite3

        from tether.log.store import ConflictError, NotFound, RecordError

        try:
            return fn(*args, **kwargs)
        except RecordError as exc:
            raise TetherError(str(exc), EXIT_USAGE) from None
        except NotFound as exc:
            raise TetherError(str(exc), EXIT_NO, "see `tether log list` for the ids in this log") from None
        except ConflictError as exc:
            raise TetherError(str(exc), EXIT_NO, "records are immutable; nothing was written") from None
        except sqlite3.DatabaseError as exc:
            raise TetherError(f"cannot use the log database: {exc}", EXIT_RUNTIME,
                              "check --db points at a tether log file") from None
        except OSError as exc:
            where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            raise TetherError(f"{exc.strerror or exc}{where}", EXIT_RUNTIME) from None

    return wrapper  # type: ignore[return-value]


def _db_path(db: str | None) -> Path:
    from tether.log.store import DEFAULT_DB

    return Path(db) if db else DEFAULT_DB


def _local_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise TetherError("cannot tell the local user name", EXIT_USAGE, "pass --author NAME") from None


def _since_ms(text: str) -> int:
    """``1700000000000`` (Unix ms), ``2h``/``3d`` (that long ago) or an ISO 8601 time."""
    import datetime as dt

    from tether.auth.caveats import CaveatError, parse_duration, parse_time

    text = text.strip()
    if text.isdigit():
        return int(text)
    now = dt.datetime.now(dt.UTC)
    try:
        return int((now - parse_duration(text, caveat="since")).timestamp() * 1000)
    except CaveatError:
        pass
    except OverflowError:
        return 0
    try:
        return int(parse_time(text, now=now, caveat="since").timestamp() * 1000)
    except CaveatError:
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

    \b
    Examples:
      tether log add 'build 1234 passed'
      make test 2>&1 | tail -n 20 | tether log add -
      tether log list --since 1h --author ci
    """


@log.command("add")
@click.argument("body", metavar="BODY|-")
@click.option("--json", "as_json", is_flag=True, help="The body is JSON: check it and store it as JSON.")
@click.option("--author", metavar="NAME", default=None, help="Author name (default: the local user name).")
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
    from tether.log.store import (
        DEFAULT_MAX_BODY,
        LogStore,
        validate_author,
        validate_body,
    )

    limit = DEFAULT_MAX_BODY if max_body is None else max_body
    if body == "-":
        raw = sys.stdin.buffer.read(limit + 1)
        if len(raw) > limit:
            raise TetherError(f"the body read from stdin is more than the limit of {limit} bytes", EXIT_USAGE)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TetherError("stdin is not UTF-8 text", EXIT_USAGE) from None
    if not body.strip():
        raise TetherError("empty body", EXIT_USAGE, "pass the text as BODY, or - to read it from stdin")
    author = validate_author(author if author is not None else _local_user())
    kind = "json" if as_json else "text"
    validate_body(body, kind, limit)  # before creating any file
    with LogStore(_db_path(db), max_body=limit) as store:
        record = store.add(body, author, kind=kind)
    click.echo(record.id)


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
    from tether.log.store import LogStore

    since_ms = _since_ms(since) if since is not None else None
    path = _db_path(db)
    records = []
    if path.exists():
        with LogStore(path) as store:
            records = store.list(since=since_ms, author=author, limit=limit)
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    rows = [{"id": r.id, "created": _fmt_ms(r.created), "author": r.author, "body": _preview(r.body)} for r in records]
    emit_table(rows, ["id", "created", "author", "body"], empty="no records")


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


def _fmt_ms(ms: int) -> str:
    import datetime as dt

    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}Z"


def _preview(body: str, width: int = 60) -> str:
    one = " ".join(body.split())
    return one if len(one) <= width else one[: width - 1] + "…"
