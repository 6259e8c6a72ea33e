"""``tether ssh-serve USER``: the authorized_keys forced command (see :mod:`tether.ssh.serve`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tether.ssh.entry import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FRAME


@click.command("ssh-serve")
@click.argument("user")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Hub TOML settings (default /etc/tether/hub.toml when it exists).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The hub's data directory (its SQLite database). Env TETHER_DATA_DIR.")
@click.option("--database-url", default=None, help="The hub's database URL. Env TETHER_DATABASE_URL.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=DEFAULT_IDLE_TIMEOUT, show_default=True,
              envvar="TETHER_SSH_IDLE_TIMEOUT", show_envvar=True,
              help="Seconds a peer may take to send (or read) one frame before it is cut off.")
@click.option("--max-frame", type=click.IntRange(min=1024), default=DEFAULT_MAX_FRAME, show_default=True,
              help="Largest frame accepted, in bytes.")
def ssh_serve(user: str, config_file: Path | None, data_dir: Path | None, database_url: str | None,
              idle_timeout: float, max_frame: int) -> None:
    """Serve tether to USER over an SSH channel (the authorized_keys forced command).

    Not for interactive use: sshd runs it for a key whose authorized_keys line
    says command="tether ssh-serve USER"; the client's request comes in
    SSH_ORIGINAL_COMMAND (`tether-log pull|push|sync SPACE`). Without one it
    prints usage and exits 2. USER's grants on SPACE are checked before any
    data is read.

    \b
    Exit codes: 0 done; 1 no such space; 2 usage (no or unknown command, bad
    configuration); 3 protocol or runtime failure (bad frame, idle peer,
    database); 4 unknown or disabled user, or no grant.

    \b
    Examples:
      tether key authorized-keys --output ~tether/.ssh/authorized_keys
      SSH_ORIGINAL_COMMAND='tether-log pull builds' tether ssh-serve alice --data /var/lib/tether
    """
    from tether.hub.capabilities import ssh_handlers
    from tether.ssh.serve import serve

    sys.exit(serve(ssh_handlers(), user, os.environ.get("SSH_ORIGINAL_COMMAND"), config_file=config_file,
                   data_dir=data_dir, database_url=database_url, idle_timeout=idle_timeout, max_frame=max_frame))
