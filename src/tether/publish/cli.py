"""``tether publish``: publish build artifacts to a hub, uploading only what it lacks."""

from __future__ import annotations

import gc
import sys

import click

from tether.cli.common import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    Conn,
    TetherError,
    client_options,
    echo_err,
    emit_json,
    json_option,
)


@click.command("publish")
@click.option("--type", "build_type", metavar="TYPE", required=True,
              help="Build type, e.g. android; the hub maps it to a top-level directory (default TYPE/BUILD_ID).")
@click.option("--strip", "strip_n", metavar="N", type=click.IntRange(min=0), default=0, show_default=True,
              help="Drop N leading path components from every matched file.")
@click.option("--space", metavar="SPACE", envvar="TETHER_SPACE", show_envvar=True,
              help="Space to publish into (default: the space of the token's only publish: scope).")
@click.option("--root", metavar="DIR", default=".", show_default=True,
              type=click.Path(file_okay=False, dir_okay=True),
              help="Directory the glob patterns are relative to.")
@click.option("--dry-run", is_flag=True, help="Match, map and hash the files; print what would be published; send nothing.")
@click.option("--jobs", "-j", metavar="N", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Parallel hashing threads and uploads.")
@click.option("--public/--private", "public", default=None,
              help="Make the build downloadable without a token, or not (default: the type's, else the space's setting).")
@click.option("--latest", is_flag=True,
              help="Also point the type's `latest` at this build (/files/SPACE/TYPE-PATH/latest/...).")
@json_option
@click.argument("build_id", metavar="BUILD_ID")
@click.argument("globs", metavar="GLOB...", nargs=-1, required=True)
@client_options
def publish(
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
    """Publish the files matching GLOB... as build BUILD_ID of type TYPE.

    Patterns are expanded by tether, not the shell (quote them), relative to
    --root: `*` stays within a directory, `**` crosses directories, and
    hidden names match only patterns that start with a dot. Symbolic links
    are followed only when they point inside the root.

    Files are hashed (sha256, with a local cache so unchanged files are not
    re-read), the hub is asked which contents it lacks, only those are
    uploaded (in parallel, resumably for large files), and the build is
    committed in one step: nothing of it is visible before, all of it after.
    A build id is used once; publishing it again fails (exit 1).

    A one-line summary goes to stderr; --json prints an object on stdout
    with files, bytes, bytes_hashed, bytes_sent, deduplicated, seconds,
    build, space, type, path and url.

    \b
    Examples:
      tether publish --token=$T --type=android --strip=2 1234 'out/target/**/*.img'
      tether publish --type=openembedded --strip=1 --space builds 2024.06.1 'deploy/**'
      tether publish --type=docs --public --json v1.2.0 'site/**' '.well-known/*'
      tether publish --type=android --dry-run 1234 'out/**'

    Exit codes: 0 published; 1 the build already exists; 2 bad input (no match,
    unsafe or colliding path, link out of the root) or no space; 3 transport
    failure or a file changed while publishing; 4 token refused.
    """
    from tether.publish.client import PublishError, summary_line
    from tether.publish.client import publish as do_publish
    from tether.publish.files import FileChangedError, InputError

    progress = _stderr_is_tty()
    # The process ends after this command, and what publish allocates (a few objects per
    # file) lives until then: the collector's passes over it find nothing to free and
    # took ~0.1 s of CPU on a 10,000-file publish. Publish makes no reference cycles in
    # proportion to the files, so memory stays as it was (docs/benchmarks.md).
    gc.disable()
    try:
        summary = do_publish(
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
            progress=progress,
            latest=latest,
            # hub, token and CA bundle, resolved only once the local input passed its checks;
            # publish talks to the hub itself (tether.wire), without HubClient and httpx
            client=None if dry_run else (lambda: conn.config),
            timeout=conn.timeout,
        )
    except FileChangedError as exc:
        raise TetherError(str(exc), EXIT_RUNTIME) from None
    except InputError as exc:
        raise TetherError(str(exc), EXIT_USAGE) from None
    except PublishError as exc:
        raise TetherError(str(exc), exc.exit_code, exc.hint) from None

    if as_json:
        emit_json(summary)
    elif dry_run:
        for m in summary.get("manifest", []):
            src = m["source"]
            arrow = f"  <- {src}" if src != m["path"] else ""
            click.echo(f"{m['path']}  {m['size']}  {m['mode']:o}  {m['digest'][:12]}{arrow}")
    echo_err(summary_line(summary))
    # What is left goes with the process: keep it out of the collection the interpreter
    # runs at exit (with the collector off, every object made since start waits in its
    # youngest generation; walking them took 8-17 ms after the work was done).
    gc.freeze()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
