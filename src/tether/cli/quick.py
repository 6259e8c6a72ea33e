"""The quick command line: the commonest commands without importing click.

click's import is a third of a command's start-up. So the ``tether`` executable
(:mod:`tether.launch`) first hands its arguments to :func:`quick`, which

* prints ``tether [COMMAND...] --help`` (or ``-h``) from :mod:`tether.cli.quickhelp`,
  click's own output for that command and terminal width, written beforehand;
* runs ``whoami``, ``token list``, ``token mint``, ``audit``, ``log add`` and ``log list``
  when :func:`parse` reads their arguments exactly as click would, with the same
  code the click commands run (:mod:`tether.cli.actions`, :mod:`tether.log.command`)
  and the same output, errors and exit codes.

Anything else (another command, an unknown option, a value click would refuse or might
read otherwise, a terminal width without written help) returns None having done
nothing, and the click command line takes it. :mod:`tether.cli.quickspec` holds each
command's options as read from the click commands by :mod:`tether.cli.quickgen`;
tests/cli/test_quick.py holds :func:`parse` to click's reading and both files to what
the generator makes now.
"""

from __future__ import annotations

import os
import sys

# No typing, re or collections here: `tether --help` imports this module, quickhelp and nothing else.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

HELP_FLAGS = ("--help", "-h")


def quick(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int | None:
    """Run ``tether ARGV`` without click and return its exit code; None (nothing done)
    when click must read it."""
    environ = os.environ if environ is None else environ
    if "_TETHER_COMPLETE" in environ:
        return None  # click's shell completion
    if argv[-1:] and argv[-1] in HELP_FLAGS:
        return _help(tuple(argv[:-1]), environ)
    from tether.cli.quickspec import SPECS

    for path in SPECS:
        if tuple(argv[: len(path)]) == path:
            params = parse(SPECS[path], argv[len(path) :], environ)
            return None if params is None else _run(path, params)
    return None


# -- help ------------------------------------------------------------------------------


def _help(path: tuple[str, ...], environ: Mapping[str, str]) -> int | None:
    if path[:1] and path[0] not in _names() or any(p[:1] == "-" for p in path) or _program_name() != "tether":
        return None
    columns = terminal_columns(environ)
    key = (path, 80 if columns == 80 else 100 if columns >= 100 else 0)
    from tether.cli.quickhelp import HELP

    text = HELP.get(key)
    if text is None:
        return None
    try:  # what click.echo writes (the help has no terminal escapes to strip)
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # click's main exits 1 then, quietly
        from tether.console import _quiet_stdout

        _quiet_stdout()
        return 1
    return 0


def _names() -> frozenset[str]:
    from tether.cli.quickspec import NAMES

    return NAMES


def terminal_columns(environ: Mapping[str, str]) -> int:
    """The terminal's width as click's help formatter reads it (shutil.get_terminal_size:
    COLUMNS, else stdout's terminal, else 80)."""
    try:
        columns = int(environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _program_name() -> str:
    """The name click shows in ``Usage:`` (click.utils._detect_program_name), for the
    usual case: a script run by its path; anything else is left to click."""
    main = sys.modules.get("__main__")
    if getattr(main, "__package__", None) not in (None, ""):
        return ""
    return os.path.basename(sys.argv[0])


# -- arguments -----------------------------------------------------------------------


def parse(spec: Mapping[str, Any], argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The callback's parameters for ARGV, read as click reads them; None when the
    arguments are not all in a plain form (click then reads them and explains)."""
    from tether.console import read_plain

    read = read_plain(argv, spec["values"], spec["flags"], environ)
    if read is None:
        return None
    options, positional = read
    arg_names = spec["args"]
    if len(positional) != len(arg_names):
        return None
    return {**spec["defaults"], **options, **dict(zip(arg_names, positional))}


# -- running ---------------------------------------------------------------------------


def _run(path: tuple[str, ...], params: dict[str, Any]) -> int | None:
    if path[0] == "log":
        from tether.log.command import add, list_records, log_errors, since_ms

        if path[1] == "add":
            return _finish(lambda: log_errors(add)(**params), None)
        if params["since"] is not None:
            try:
                params["since"] = since_ms(params["since"])
            except ValueError:
                return None  # click's error, with its usage line
        return _finish(lambda: log_errors(list_records)(**params), None)
    from tether.cli import actions
    from tether.hubclient.hub import Conn

    conn = Conn(params.pop("hub"), params.pop("token"), params.pop("ca_bundle"))
    action = {("whoami",): actions.whoami, ("audit",): actions.audit, ("token", "list"): actions.token_list,
              ("token", "mint"): actions.token_mint}[path]  # fmt: skip
    try:
        return _finish(lambda: action(conn, **params), conn)
    finally:
        conn.close()


def _finish(work: Any, conn: Any) -> int:
    """Run ``work``; 0, or the exit code of what it raised, reported as click would."""
    try:
        work()
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported as the click command would
        from tether.console import exit_code_of

        return exit_code_of(exc, conn)


__all__ = ["parse", "quick", "terminal_columns"]
