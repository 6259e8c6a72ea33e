"""The OpenSSH front door to the SSH entry: ``tether ssh-serve USER``, the forced
command behind each hub key in the server account's ``authorized_keys``.

sshd authenticated the key; the key's line names USER. This module loads the hub's
settings and database and hands the client's ``SSH_ORIGINAL_COMMAND`` to
:func:`tether.ssh.entry.serve_session`, which authorizes before reading anything
and dispatches to the capability's handler. The command itself is in
:mod:`tether.cli.ssh_serve`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from tether.ssh.entry import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_FRAME,
    Exit,
    Handler,
    problem_frame,
    serve_session,
    usage,
)
from tether.ssh.frames import FrameError, write_all
from tether.units import USER_NAME_RE


def _say(message: str) -> None:
    print(message if message.startswith("tether: ") else f"tether ssh-serve: {message}", file=sys.stderr)


def ssh_source() -> str | None:
    """The client's address as sshd reports it (``SSH_CLIENT=addr port port``)."""
    parts = os.environ.get("SSH_CLIENT", "").split()
    return parts[0] if parts else None


def serve(handlers: Mapping[str, Handler], user: str, original: str | None, *, config_file: Path | None = None,
          data_dir: Path | None = None, database_url: str | None = None,
          idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_frame: int = DEFAULT_MAX_FRAME,
          infd: int = 0, outfd: int = 1) -> int:
    """Run one session for USER; returns the exit code."""
    try:
        if original is None and os.isatty(infd):
            raise Exit(2, 400, "no-command", usage(handlers))
        if not USER_NAME_RE.match(user):
            raise Exit(2, 400, "invalid-user", f"invalid user name {user[:40]!r} in the forced command")
        db, settings = _open_hub(config_file, data_dir, database_url)
    except Exit as e:
        _say(e.detail if e.slug == "no-command" else f"error: {e.detail}")
        if e.slug != "no-command" or original is not None:
            try:
                write_all(outfd, problem_frame(e.status, e.slug, e.detail), timeout=5)
            except (OSError, FrameError):
                pass
        return e.code
    return serve_session(handlers, settings, db, user, original, infd=infd, outfd=outfd, source=ssh_source(),
                         say=_say, idle_timeout=idle_timeout, max_frame=max_frame)


def _open_hub(config_file: Path | None, data_dir: Path | None, database_url: str | None):
    from tether.config import ConfigError, load_settings
    from tether.db import Database

    try:
        settings = load_settings(config_file, data_dir=data_dir, database_url=database_url)
    except ConfigError as exc:
        raise Exit(2, 500, "hub-config", f"hub configuration: {exc}") from None
    url = settings.effective_database_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise Exit(3, 500, "no-database", f"no hub database at {url[len('sqlite:///'):]}; "
                   "pass --data or --database-url (or set them in /etc/tether/hub.toml)")
    return Database(url), settings
