"""What every tether command shares: hub options, error handling, output.

Exit codes (see docs/DESIGN Conventions):

    0 done
    1 a clean "no": not found (404), already exists / conflict (409)
    2 usage or configuration error: bad arguments, bad input (400/413/422),
      no hub configured, unreadable config or CA bundle
    3 runtime or transport failure: connection refused, timeouts, 5xx, 429
    4 authentication or permission denied (401/403)

Errors go to stderr as ``tether: error: <what>`` with a ``tether: hint: <what
to do>`` line where one helps; never a traceback, never a token secret.

This module is imported by every command module when ``tether --help`` runs,
so it must not import httpx (or anything heavy) at module level.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import click

from tether.conn import Conn  # re-exported: commands take it from here

EXIT_OK = 0
EXIT_NO = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3
EXIT_AUTH = 4

F = TypeVar("F", bound=Callable[..., Any])

_SECRET_RE = re.compile(r"tth_[A-Za-z0-9_\-]{8,}")


# -- errors -------------------------------------------------------------------


class TetherError(click.ClickException):
    """A user-facing failure with an exit code and an optional hint."""

    def __init__(self, message: str, exit_code: int = EXIT_RUNTIME, hint: str | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.hint = hint

    def show(self, file: Any = None) -> None:
        click.echo(f"tether: error: {self.format_message()}", file=file, err=True)
        if self.hint:
            click.echo(f"tether: hint: {self.hint}", file=file, err=True)


def exit_code_for_status(status: int) -> int:
    """Map an HTTP status from the hub to a tether exit code."""
    if status in (401, 403):
        return EXIT_AUTH
    if status in (404, 409, 410):
        return EXIT_NO
    if status == 429 or status >= 500:
        return EXIT_RUNTIME
    if 400 <= status < 500:
        return EXIT_USAGE
    return EXIT_RUNTIME  # unexpected 1xx/3xx


def scrub(text: str, secret: str | None = None) -> str:
    """Remove token secrets from a message."""
    if secret:
        text = text.replace(secret, "<token>")
    return _SECRET_RE.sub("tth_…", text)


def translate_error(exc: BaseException, conn: Conn | None = None) -> TetherError | None:
    """Turn a known failure into a TetherError; None for anything unexpected."""
    from tether.clientconfig import ConfigError

    secret = conn.token_secret if conn is not None else None
    if isinstance(exc, TetherError):
        return exc
    if isinstance(exc, ConfigError):
        return TetherError(scrub(str(exc), secret), EXIT_USAGE, exc.hint)

    # Loaded with tether.client, or by `tether publish` without it (and without httpx).
    client_mod = sys.modules.get("tether.clienterrors")
    if client_mod is not None:
        if isinstance(exc, client_mod.HubError):
            code = exit_code_for_status(exc.status)
            hint = None
            if exc.status == 401:
                if conn is not None and not secret:
                    hint = "no token was sent: pass --token, set TETHER_TOKEN or run `tether login HUB_URL`"
                    skipped = conn.config_or_none.file_hub_skipped if conn.config_or_none else None
                    if skipped:
                        hint += f" (the saved token is for {skipped})"
                else:
                    hint = "check the token or run `tether login`"
            elif exc.status == 403:
                hint = "see `tether whoami` and `tether token inspect` for what this token may do"
            elif exc.status == 429:
                hint = "the hub is rate limiting; retry later"
            return TetherError(scrub(exc.message, secret), code, hint)
        if isinstance(exc, client_mod.TransportError):
            if exc.tls:
                hint = (
                    "TLS failed: check https:// vs http:// in the hub URL; if the hub uses "
                    "a private CA, pass --ca-bundle FILE or set TETHER_CA_BUNDLE"
                )
            else:
                hint = "is the hub running and reachable? check --hub / TETHER_HUB"
            return TetherError(scrub(str(exc), secret), EXIT_RUNTIME, hint)
        httpx = sys.modules.get("httpx")  # not loaded: then exc is none of its errors
        if httpx is not None and isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
            return TetherError(f"bad hub URL: {scrub(str(exc), secret)}", EXIT_USAGE)
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return TetherError(f"{exc.strerror or exc}{where}", EXIT_RUNTIME)
    return None


def handle_errors(fn: F, conn_of: Callable[[], Conn | None] = lambda: None) -> F:
    """Wrap a command callback so known failures exit with the right code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(EXIT_RUNTIME)
        except Exception as exc:
            err = translate_error(exc, conn_of())
            if err is None:
                raise
            raise err from None

    return wrapper  # type: ignore[return-value]


def _quiet_stdout() -> None:
    """The reader went away (e.g. `| head`): stay quiet, as other tools do."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def exit_code_of(exc: BaseException, conn: Conn | None = None) -> int:
    """Report an exception that ended a command run without click (the quick way of
    `tether publish`, see tether.publish.command) as :func:`handle_errors` and click's
    standalone mode would, and return the exit code they would exit with. Anything
    unknown is raised again, as click lets it go."""
    if isinstance(exc, BrokenPipeError):
        _quiet_stdout()
        return EXIT_RUNTIME
    if isinstance(exc, (KeyboardInterrupt, EOFError)):
        click.echo(file=sys.stderr)
        click.echo("Aborted!", file=sys.stderr)
        return 1
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        err: click.ClickException | None = exc
    else:
        err = translate_error(exc, conn) if isinstance(exc, Exception) else None
    if err is None:
        raise exc
    err.show()
    return err.exit_code


# -- hub connection -------------------------------------------------------------


def hub_option(f: F) -> F:
    return click.option(
        "--hub",
        "hub",
        metavar="URL",
        envvar="TETHER_HUB",
        show_envvar=True,
        help="Hub URL (default: from `tether login`).",
    )(f)


def token_option(f: F | None = None, *, flag: str = "--token") -> Any:
    """The --token option (or another flag name, e.g. where --token means a filter)."""

    def deco(fn: F) -> F:
        return click.option(
            flag,
            "token",
            metavar="TOKEN",
            envvar="TETHER_TOKEN",
            show_envvar=True,
            help="Bearer token (default: from `tether login`).",
        )(fn)

    return deco(f) if f is not None else deco


def ca_bundle_option(f: F) -> F:
    return click.option(
        "--ca-bundle",
        "ca_bundle",
        metavar="FILE",
        envvar="TETHER_CA_BUNDLE",
        show_envvar=True,
        type=click.Path(dir_okay=False),
        help="PEM file of CA certificates to trust for the hub's TLS.",
    )(f)


def client_options(f: F | None = None, *, token_flag: str = "--token") -> Any:
    """Add --hub/--token/--ca-bundle and pass a lazy ``conn: Conn`` to the callback.

    The callback is also wrapped with :func:`handle_errors`, so HubError,
    TransportError and ConfigError become clean messages and exit codes.
    Use ``@client_options`` or ``@client_options(token_flag="--auth-token")``.
    """

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, hub: str | None, token: str | None, ca_bundle: str | None, **kwargs: Any) -> Any:
            conn = Conn(hub, token, ca_bundle)
            try:
                return handle_errors(fn, lambda: conn)(*args, conn=conn, **kwargs)
            finally:
                conn.close()

        return hub_option(token_option(ca_bundle_option(wrapper), flag=token_flag))  # type: ignore[return-value]

    return deco(f) if f is not None else deco


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout instead of text.")(f)


def q(segment: str) -> str:
    """Quote one URL path segment (names may hold any character)."""
    return quote(segment, safe="")


# -- sizes --------------------------------------------------------------------

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}
_SIZE_RE = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*\Z")


def parse_size(text: str) -> int:
    """Parse ``500``, ``10MB`` (10**7), ``1GiB`` (2**30), ``1.5 kB``... into bytes.

    Units are case-insensitive; decimal (kB, MB, GB, TB, PB) and binary (KiB,
    MiB, GiB, TiB, PiB). A bare ``K``/``M``/``G`` is refused as ambiguous.
    """
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (try 500, 10MB or 1GiB)")
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _SIZE_UNITS:
        if unit in ("k", "m", "g", "t", "p"):
            raise ValueError(f"ambiguous unit {m.group(2)!r} in {text!r}: use {unit.upper()}B (decimal) or {unit.upper()}iB (binary)")
        raise ValueError(f"unknown size unit {m.group(2)!r} in {text!r} (use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    from decimal import Decimal

    value = Decimal(number) * _SIZE_UNITS[unit]
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


class SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


# -- output -------------------------------------------------------------------


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def fmt(value: Any) -> str:
    """Render one value for text output."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=False)
    return str(value)


def _is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def emit_object(obj: Mapping[str, Any], fields: Sequence[str] | None = None, *, err: bool = False) -> None:
    """Print ``key: value`` lines (in ``fields`` order when given)."""
    keys = [k for k in (fields or list(obj)) if k in obj]
    if not keys:
        return
    width = max(len(k) for k in keys) + 1
    for k in keys:
        click.echo(f"{(k + ':').ljust(width)} {fmt(obj[k])}", err=err)


_NO_WRAP = frozenset({"id", "token_id", "fingerprint", "name", "user"})


def emit_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, empty: str | None = None, title: str | None = None) -> None:
    """Print rows as a table: rich on a terminal, plain aligned columns otherwise."""
    rows = list(rows)
    if not rows:
        if empty:
            # Inside a composite view (titled table) "none" is part of the
            # output; for a bare list it is a remark, kept off stdout.
            click.echo(empty, err=title is None)
        return
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    if _is_tty():
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", header_style="bold", pad_edge=False)
        for i, c in enumerate(columns):
            # identifiers get copied and pasted: never fold them
            keep = i == 0 or c in _NO_WRAP
            table.add_column(c, no_wrap=keep, overflow="fold", min_width=len(c) if not keep else None)
        for row in cells:
            table.add_row(*(Text(v) for v in row))
        Console(file=sys.stdout).print(table)
        return
    if title:
        click.echo(f"{title}:")
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    for row in [list(columns), *cells]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def echo_err(message: str) -> None:
    click.echo(message, err=True)
