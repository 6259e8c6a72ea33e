"""What every command prints and how it ends: output helpers, and a TetherError shown
as ``tether: error: <what>`` with a ``tether: hint: <what to do>`` line where one
helps, on stderr, ending with its exit code; never a traceback, never a token secret.

Exit codes (DESIGN.md Conventions; :mod:`tether.problems` holds them and the table
from the hub's HTTP statuses): 0 done; 1 a clean "no" (not found, already exists);
2 usage or configuration error; 3 runtime or transport failure; 4 authentication or
permission denied.

Below the capabilities and the CLI, so that both can use it. It imports no click at
module level (click's import is a third of a command's start-up): the quick commands of
:mod:`tether.cli.quick` print through :func:`echo`, which writes what ``click.echo``
writes, and the click-bound parts (:class:`Failure`, :class:`Group`, :data:`SIZE`) are
made on first use.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys

from tether.problems import EXIT_RUNTIME, TetherError

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any, Protocol, TypeVar

    import click

    F = TypeVar("F", bound=Callable[..., Any])

    class Context(Protocol):
        """What a command's hub connection adds to its errors (tether.hubclient.hub.Conn)."""

        token_secret: str | None

        def explain(self, exc: BaseException) -> BaseException: ...


_SECRET_RE = re.compile(r"tth_[A-Za-z0-9_\-]{8,}")


# -- errors -------------------------------------------------------------------


def scrub(text: str, secret: str | None = None) -> str:
    """Remove token secrets from a message."""
    if secret:
        text = text.replace(secret, "<token>")
    return _SECRET_RE.sub("tth_…", text)


def _click_classes() -> dict[str, Any]:
    """Failure, Group, SizeType and SIZE: the click-bound names of this module, made
    (importing click) the first time one is asked for (see :func:`__getattr__`)."""
    import click

    class Failure(click.ClickException):
        """How click shows a TetherError (click reports only its own exceptions)."""

        def __init__(self, message: str, exit_code: int = EXIT_RUNTIME, hint: str | None = None):
            super().__init__(message)
            self.exit_code = exit_code
            self.hint = hint

        def show(self, file: Any = None) -> None:
            click.echo(f"tether: error: {self.format_message()}", file=file, err=True)
            if self.hint:
                click.echo(f"tether: hint: {self.hint}", file=file, err=True)

    class Group(click.Group):
        """A click group that shows a TetherError raised by any command below it, so a
        command raises what it means (``TetherError(..., EXIT_USAGE, hint)``) wherever it is."""

        def invoke(self, ctx: click.Context) -> Any:
            try:
                return super().invoke(ctx)
            except TetherError as exc:
                raise as_click(exc) from None  # type: ignore[misc]

    class SizeType(click.ParamType):
        """A size option: :func:`tether.units.parse_size`."""

        name = "SIZE"

        def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
            if isinstance(value, int):
                return value
            from tether.units import parse_size

            try:
                return parse_size(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)

    for cls in (Failure, Group, SizeType):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return {"Failure": Failure, "Group": Group, "SizeType": SizeType, "SIZE": SizeType()}


def __getattr__(name: str) -> Any:
    if name in ("Failure", "Group", "SizeType", "SIZE"):
        globals().update(_click_classes())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe(exc: BaseException, conn: Context | None = None) -> tuple[str, int, str | None] | None:
    """What to show for a known failure: message (without token secrets), exit code and
    hint; None for anything unexpected."""
    secret = conn.token_secret if conn is not None else None
    if conn is not None:
        exc = conn.explain(exc)
    if isinstance(exc, TetherError):
        return scrub(str(exc), secret), exc.exit_code, exc.hint
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror or exc}{where}", EXIT_RUNTIME, None
    return None


def as_click(exc: BaseException, conn: Context | None = None) -> click.ClickException | None:
    """A known failure as click shows it; None for anything unexpected."""
    import click

    if isinstance(exc, click.ClickException):
        return exc
    known = describe(exc, conn)
    return None if known is None else __getattr__("Failure")(*known)


def handle_errors(fn: F, conn_of: Callable[[], Context | None] = lambda: None) -> F:
    """Wrap a command callback so known failures exit with the right code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import click

        try:
            return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(EXIT_RUNTIME)
        except Exception as exc:
            err = as_click(exc, conn_of())
            if err is None:
                raise
            raise err from None

    return wrapper  # type: ignore[return-value]


def _quiet_stdout() -> None:
    """The reader went away (e.g. `| head`): stay quiet, as other tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def exit_code_of(exc: BaseException, conn: Context | None = None) -> int:
    """Report an exception that ended a command run without click (the quick way of
    `tether publish`, see tether.publish.command) as :func:`handle_errors` and click's
    standalone mode would, and return the exit code they would exit with. Anything
    unknown is raised again, as click lets it go."""
    if isinstance(exc, BrokenPipeError):
        _quiet_stdout()
        return EXIT_RUNTIME
    if isinstance(exc, (KeyboardInterrupt, EOFError)):
        echo("", err=True)
        echo("Aborted!", err=True)
        return 1
    import click  # (a failure is shown as click shows it, by click: the quick way stays quick when it works)

    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    err = as_click(exc, conn) if isinstance(exc, Exception) else None
    if err is None:
        raise exc
    err.show()
    return err.exit_code


# -- options --------------------------------------------------------------------


def json_option(f: F) -> F:
    import click

    return click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout instead of text.")(f)


def convert_plain(kind: Any, value: str) -> tuple[Any] | None:
    """``(value,)`` as click's type for an option converts it, or None where click would
    refuse it (or might read it otherwise): for the quick command lines that hold
    themselves to click's reading (tether.cli.quick, tether.publish.command). Kinds:
    "str"; ("int", min, max) for click.IntRange (None: unbounded); "size" for
    :data:`SIZE`; "path-file" and "path-dir" for click.Path(dir_okay=False) and
    click.Path(file_okay=False)."""
    if kind == "str":
        return (value,)
    if isinstance(kind, tuple):  # ("int", min, max): click.IntRange
        if not (value.isascii() and value.isdigit()):
            return None
        n, low, high = int(value), kind[1], kind[2]
        return (n,) if (low is None or n >= low) and (high is None or n <= high) else None
    if kind == "size":
        from tether.units import parse_size

        try:
            return (parse_size(value),)
        except ValueError:
            return None
    # click.Path: an existing path must be of the right kind and readable
    try:
        st = os.stat(value)
    except (OSError, ValueError):
        return (value,)
    from stat import S_ISDIR, S_ISREG

    if (kind == "path-dir" and S_ISREG(st.st_mode)) or (kind == "path-file" and S_ISDIR(st.st_mode)):
        return None
    return (value,) if os.access(value, os.R_OK) else None


def read_plain(
    argv: Sequence[str],
    values: Mapping[str, tuple[str, Any, str | None, bool]],
    flags: Mapping[str, tuple[str, Any]],
    environ: Mapping[str, str],
    *,
    joined_short: bool = False,
) -> tuple[dict[str, Any], list[str]] | None:
    """Read ARGV as click would, for the quick command lines (tether.cli.quick,
    tether.publish.command): ``(params, positional)``, where params holds each option
    given (on the command line, else from its environment variable; a ``multiple`` one
    as a tuple), or None when an argument is not in a plain form (click then reads them
    and explains). ``values``: option -> (parameter, kind for :func:`convert_plain`,
    environment variable, multiple); ``flags``: option -> (parameter, value).

    Long options take ``--name=VALUE`` or ``--name VALUE``. A short value option is
    read only with ``joined_short``: ``-xVALUE`` or ``-x VALUE`` (click reads ``-x=1``
    as the value "=1"); without it, any short option but a flag goes to click."""
    params: dict[str, Any] = {}
    given: set[str] = set()  # the value options given on the command line
    multiple: dict[str, list[Any]] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if arg[:1] != "-" or arg == "-":
            positional.append(arg)
            continue
        long = arg.startswith("--")
        name, eq, value = arg.partition("=") if long or not joined_short else (arg[:2], "", arg[2:])
        if name in flags and not eq and not value:
            param, flag = flags[name]
            params[param] = flag
            continue
        if name not in values or not (long or joined_short):
            return None
        if not eq and not value:
            if i == len(argv) or (argv[i][:1] == "-" and argv[i] != "-"):
                return None  # no value, or one click might take for an option
            value = argv[i]
            i += 1
        param, kind, _, many = values[name]
        converted = convert_plain(kind, value)
        if converted is None:
            return None
        if many:
            multiple.setdefault(param, []).append(converted[0])
        else:
            params[param] = converted[0]
        given.add(param)
    params.update((param, tuple(v)) for param, v in multiple.items())
    for param, kind, envvar, _ in values.values():
        if envvar and param not in given and environ.get(envvar):
            converted = convert_plain(kind, environ[envvar])
            if converted is None:
                return None
            params[param] = converted[0]
            given.add(param)
    return params, positional


# -- output -------------------------------------------------------------------

_ANSI_RE = re.compile(r"\033\[[0-?]*[ -/]*[@-~]")  # click's: what click.echo strips off a pipe


def echo(message: str = "", *, err: bool = False) -> None:
    """Print a line as ``click.echo`` does, without importing click: to stdout (stderr with
    ``err``), terminal escape sequences removed unless the stream is a terminal, flushed."""
    file = sys.stderr if err else sys.stdout
    if file is None:
        return
    out = message + "\n"
    if not _isatty(file):
        out = _ANSI_RE.sub("", out)
    file.write(out)
    file.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001 - click's reading: a stream that cannot tell is no terminal
        return False


def emit_json(obj: Any) -> None:
    echo(json.dumps(obj, indent=2, sort_keys=False))


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
    return _isatty(sys.stdout)


def emit_object(obj: Mapping[str, Any], fields: Sequence[str] | None = None, *, err: bool = False) -> None:
    """Print ``key: value`` lines (in ``fields`` order when given)."""
    keys = [k for k in (fields or list(obj)) if k in obj]
    if not keys:
        return
    width = max(len(k) for k in keys) + 1
    for k in keys:
        echo(f"{(k + ':').ljust(width)} {fmt(obj[k])}", err=err)


_NO_WRAP = frozenset({"id", "token_id", "fingerprint", "name", "user"})


def emit_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, empty: str | None = None, title: str | None = None) -> None:
    """Print rows as a table: rich on a terminal, plain aligned columns otherwise."""
    rows = list(rows)
    if not rows:
        if empty:
            # Inside a composite view (titled table) "none" is part of the
            # output; for a bare list it is a remark, kept off stdout.
            echo(empty, err=title is None)
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
        echo(f"{title}:")
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    for row in [list(columns), *cells]:
        echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def echo_err(message: str) -> None:
    echo(message, err=True)
