"""What ``tether log add`` and ``tether log list`` do, without click.

The click commands in :mod:`tether.log.cli` and the quick command line
(:mod:`tether.cli.quick`, which runs the plain forms of these commands without
importing click) both call :func:`add` and :func:`list_records`, wrapped in
:func:`log_errors`, so output, errors and exit codes are the same either way.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from tether.console import echo, emit_json, emit_table
from tether.problems import EXIT_NO, EXIT_RUNTIME, EXIT_USAGE, TetherError

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])


def log_errors(fn: F) -> F:
    """Turn the log's errors into clean messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import sqlite3

        from tether.log.store import ConflictError, NotFound, RecordError

        try:
            return fn(*args, **kwargs)
        except TetherError:
            raise
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
        except Exception as exc:
            from tether.log.client import NotImplementedTransport, SshRemoteError

            if isinstance(exc, NotImplementedTransport):
                raise TetherError(str(exc), EXIT_USAGE, "use an http(s):// remote for now") from None
            if isinstance(exc, SshRemoteError):
                from tether.problems import exit_code_for_status

                if exc.status == 0:
                    raise TetherError(str(exc), EXIT_RUNTIME,
                                      "check `ssh` reaches the hub's account (keys, known_hosts, TETHER_SSH)") from None
                hint = None
                if exc.status in (401, 403):
                    hint = "ask the hub's admin for a grant on this space (or to add your SSH key)"
                raise TetherError(str(exc), exit_code_for_status(exc.status), hint) from None
            from tether.console import as_click

            err = as_click(exc)
            if err is None:
                raise
            raise err from None

    return wrapper  # type: ignore[return-value]


def _db_path(db: str | None) -> Path:
    from tether.log.store import DEFAULT_DB

    return Path(db) if db else DEFAULT_DB


def _default_author() -> str:
    """The hub user `tether login` saved (so `log add` then `log push` works), else the
    local user name."""
    from tether.hubclient.config import saved_user
    from tether.problems import ConfigError

    try:
        user = saved_user()
    except ConfigError:  # an unreadable config: the local name, as before
        user = None
    return user or _local_user()


def _local_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise TetherError("cannot tell the local user name", EXIT_USAGE, "pass --author NAME") from None


def since_ms(text: str) -> int:
    """``1700000000000`` (Unix ms), ``2h``/``3d`` (that long ago) or an ISO 8601 time;
    ValueError for anything else."""
    import datetime as dt

    from tether.units import parse_since

    text = text.strip()
    if text.isdigit():
        return int(text)
    return int(parse_since(text, now=dt.datetime.now(dt.UTC)).timestamp() * 1000)


def add(body: str, as_json: bool, author: str | None, max_body: int | None, db: str | None) -> None:
    """``tether log add``: add a record and print its id."""
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
    author = validate_author(author if author is not None else _default_author())
    kind = "json" if as_json else "text"
    validate_body(body, kind, limit)  # before creating any file
    with LogStore(_db_path(db), max_body=limit) as store:
        record = store.add(body, author, kind=kind)
    echo(record.id)


def list_records(since: int | None, author: str | None, limit: int | None, as_json: bool, db: str | None) -> None:
    """``tether log list``: records created since ``since`` (Unix ms), oldest first."""
    from tether.log.store import LogStore

    path = _db_path(db)
    records = []
    if path.exists():
        with LogStore(path) as store:
            records = store.list(since=since, author=author, limit=limit)
    if as_json:
        emit_json([r.to_dict() for r in records])
        return
    rows = [{"id": r.id, "created": _fmt_ms(r.created), "author": r.author, "body": _preview(r.body)} for r in records]
    emit_table(rows, ["id", "created", "author", "body"], empty="no records")


def _fmt_ms(ms: int) -> str:
    import datetime as dt

    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}Z"


def _preview(body: str, width: int = 60) -> str:
    one = " ".join(body.split())
    return one if len(one) <= width else one[: width - 1] + "…"
