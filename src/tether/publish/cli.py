"""``tether publish``: publish build artifacts to a hub, uploading only what it lacks.

Its options and help; the work is :func:`tether.publish.command.execute`, which the
``tether`` executable also runs without click when the arguments are plain (see
:mod:`tether.publish.command`): an option added here must be added there too.
"""

from __future__ import annotations

from typing import Any

import click

from tether.console import json_option
from tether.hubclient.hub import Conn
from tether.hubclient.options import client_options
from tether.problems import TetherError


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
def publish(conn: Conn, **params: Any) -> None:
    """Publish the files matching GLOB... as build BUILD_ID of type TYPE.

    Patterns are expanded by tether, not the shell (quote them), relative to
    --root: `*` stays within a directory, `**` crosses directories, and
    hidden names match only patterns that start with a dot. Symbolic links
    are followed only when they point inside the root.

    Files are hashed (sha256, with a local cache so unchanged files are not
    re-read), the hub is asked which contents it lacks, only those are
    uploaded (in parallel, resumably for large files), and the build is
    committed in one step: nothing of it is visible before, all of it after.
    A build id is used once; publishing it again fails (exit 1) before
    anything is sent, unless the hub's config lets the type overwrite.

    A one-line summary goes to stderr; --json prints an object on stdout
    with files, bytes, bytes_hashed, bytes_sent, deduplicated, uploaded,
    seconds, space, type, build, path, url and same_as (the earlier build
    whose files the hub reused for an unchanged tree, else null); with
    --dry-run, dry_run and manifest (path, digest, size, mode, source per
    file) instead of what the hub would have said.

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
    from tether.publish.command import execute, known_error

    try:
        execute(conn, **params)  # the parameters by their names above
    except Exception as exc:
        known = known_error(exc)
        if known is None:
            raise
        raise TetherError(*known) from None
