"""What ``tether publish`` does, without click.

An unchanged re-publish of 10,000 files takes about 0.1 s, and click's import was a
fifth of it. So the ``tether`` executable (:mod:`tether.launch`) hands a ``publish``
command line to :func:`quick` first: :func:`parse` reads the plain forms of its
options and :func:`execute` runs it, and click is imported only to report an error.
Anything :func:`parse` does not take plainly (``--help``, an unknown option, a value
click would refuse or read differently) goes to the click command in
:mod:`tether.publish.cli`, which gives the usual help and errors. Both run
:func:`execute`; tests hold :func:`parse` to click's reading of the same arguments.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.hubclient.hub import Conn

#: option -> (parameter, kind, environment variable, multiple); kinds: "str", "path-dir" (a
#: directory, click.Path(file_okay=False)), "path-file" (click.Path(dir_okay=False)),
#: ("int", min, max) (see tether.console.convert_plain), or the value of a flag
VALUE_OPTIONS: dict[str, tuple[str, Any, str | None, bool]] = {
    "--type": ("build_type", "str", None, False),
    "--strip": ("strip_n", ("int", 0, None), None, False),
    "--space": ("space", "str", "TETHER_SPACE", False),
    "--root": ("root", "path-dir", None, False),
    "--jobs": ("jobs", ("int", 1, 64), None, False),
    "-j": ("jobs", ("int", 1, 64), None, False),
    "--hub": ("hub", "str", "TETHER_HUB", False),
    "--token": ("token", "str", "TETHER_TOKEN", False),
    "--ca-bundle": ("ca_bundle", "path-file", "TETHER_CA_BUNDLE", False),
}
FLAG_OPTIONS: dict[str, tuple[str, bool]] = {
    "--dry-run": ("dry_run", True),
    "--public": ("public", True),
    "--private": ("public", False),
    "--latest": ("latest", True),
    "--json": ("as_json", True),
}
DEFAULTS: dict[str, Any] = {
    "build_type": None, "strip_n": 0, "space": None, "root": ".", "dry_run": False, "jobs": 8, "public": None,
    "latest": False, "as_json": False, "hub": None, "token": None, "ca_bundle": None,
}  # fmt: skip

def parse(argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The keyword arguments of :func:`execute` (and ``hub``, ``token``, ``ca_bundle``)
    for ``tether publish ARGV``, read as click reads them; None when the arguments are
    not all in a plain form (click then reads them, and explains what is wrong)."""
    from tether.console import convert_plain, read_plain

    read = read_plain(argv, VALUE_OPTIONS, FLAG_OPTIONS, environ, joined_short=True)
    if read is None:
        return None
    options, positional = read
    params = {**DEFAULTS, **options}
    if "root" not in options and convert_plain("path-dir", params["root"]) is None:
        return None  # click checks the default too
    if params["build_type"] is None or len(positional) < 2:
        return None
    params["build_id"], params["globs"] = positional[0], tuple(positional[1:])
    return params


def execute(
    conn: Conn,
    build_type: str,
    strip_n: int,
    space: str | None,
    root: str,
    dry_run: bool,
    jobs: int,
    public: bool | None,
    latest: bool,
    as_json: bool,
    build_id: str,
    globs: tuple[str, ...],
) -> None:
    """Publish, then print the JSON summary (``--json``) or the dry run's plan on
    stdout, and the summary line on stderr. Raises what publishing raises."""
    import json

    from tether.publish.client import publish, summary_line

    # The process ends after this command, and what publish allocates (a few objects per
    # file) lives until then: the collector's passes over it find nothing to free and
    # took ~0.1 s of CPU on a 10,000-file publish. Publish makes no reference cycles in
    # proportion to the files, so memory stays as it was (docs/benchmarks.md).
    gc.disable()
    summary = publish(
        None,
        None,
        space,
        build_type,
        build_id,
        list(globs),
        root=root,
        strip=strip_n,
        jobs=jobs,
        public=public,
        dry_run=dry_run,
        progress=_stderr_is_tty(),
        latest=latest,
        # hub, token and CA bundle, resolved only once the local input passed its checks;
        # publish talks to the hub itself (tether.hubclient.transport), without the Hub client
        client=None if dry_run else (lambda: conn.config),
        timeout=conn.timeout,
    )
    out = sys.stdout
    if as_json:
        out.write(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    elif dry_run:
        for m in summary.get("manifest", []):
            src = m["source"]
            arrow = f"  <- {src}" if src != m["path"] else ""
            out.write(f"{m['path']}  {m['size']}  {m['mode']:o}  {m['digest'][:12]}{arrow}\n")
    out.flush()
    sys.stderr.write(summary_line(summary) + "\n")
    sys.stderr.flush()
    # What is left goes with the process: keep it out of the collection the interpreter
    # runs at exit (with the collector off, every object made since start waits in its
    # youngest generation; walking them took 8-17 ms after the work was done).
    gc.freeze()


def known_error(exc: BaseException) -> tuple[str, int, str | None] | None:
    """Message, exit code and hint for a failure of publishing itself (bad local input,
    a file that changed, a refused build); None for anything else."""
    from tether.publish.client import PublishError
    from tether.publish.files import FileChangedError, InputError

    if isinstance(exc, FileChangedError):
        return str(exc), 3, None
    if isinstance(exc, InputError):
        return str(exc), 2, None
    if isinstance(exc, PublishError):
        return str(exc), exc.exit_code, exc.hint
    return None


def quick(argv: Sequence[str]) -> int | None:
    """Run ``tether publish ARGV`` without click; its exit code, or None when the
    arguments need click (see :func:`parse`): nothing has been done then."""
    params = parse(argv, os.environ)
    if params is None:
        return None
    from tether.hubclient.hub import Conn

    conn = Conn(params.pop("hub"), params.pop("token"), params.pop("ca_bundle"))
    try:
        execute(conn, **params)
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported as the click command would
        from tether.console import exit_code_of
        from tether.problems import TetherError

        known = known_error(exc)
        return exit_code_of(TetherError(*known) if known else exc, conn)
    finally:
        conn.close()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
