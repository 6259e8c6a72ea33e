"""``tether key``: a user's SSH and signing keys."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

import click

from tether.console import emit_json, emit_table, json_option
from tether.hubclient.hub import Conn, q
from tether.hubclient.options import client_options
from tether.problems import EXIT_USAGE, TetherError

KEY_FIELDS = ["id", "kind", "algorithm", "fingerprint", "comment", "created_at"]


@click.group()
def key() -> None:
    """Add, list and remove a user's public keys.

    SSH keys let the user reach the hub over SSH; signing keys (ed25519)
    sign messages the hub should trust as coming from that user.

    \b
    Examples:
      tether key add alice ~/.ssh/id_ed25519.pub
      tether key add scheduler signing.pub --signing --comment "scheduler 2024"
      tether key list alice
      tether key rm alice SHA256:abc...
      tether key authorized-keys --data /var/lib/tether --output ~tether/.ssh/authorized_keys
      tether key check ~tether/.ssh/authorized_keys
    """


@key.command("add")
@click.argument("user")
@click.argument("pubkey_file", type=click.File("r", encoding="utf-8"))
@click.option("--signing", is_flag=True, help="Register it as a signing key (default: detect; usually SSH).")
@click.option("--comment", metavar="C", help="A note stored with the key (default: the key's own comment).")
@client_options
@json_option
def key_add(conn: Conn, user: str, pubkey_file: IO[str], signing: bool, comment: str | None, as_json: bool) -> None:
    """Add the public key in PUBKEY_FILE to USER; prints its fingerprint.

    PUBKEY_FILE is an OpenSSH public key line (as in ~/.ssh/id_ed25519.pub);
    use `-` to read it from stdin. Private keys are refused without being sent.
    Exits 1 if the key is already registered.

    \b
    Examples:
      tether key add alice ~/.ssh/id_ed25519.pub
      ssh-add -L | head -1 | tether key add alice -
      FP=$(tether key add ci ci.pub --comment "runner 7")
    """
    try:
        text = pubkey_file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise TetherError(f"cannot read {pubkey_file.name}: {exc}", EXIT_USAGE) from None
    if "PRIVATE KEY" in text:
        raise TetherError(
            f"{pubkey_file.name} holds a private key; nothing was sent",
            EXIT_USAGE,
            "pass the public half, e.g. ~/.ssh/id_ed25519.pub",
        )
    public_key = text.strip()
    if not public_key:
        raise TetherError(f"{pubkey_file.name} is empty", EXIT_USAGE)
    body = {"public_key": public_key, "kind": "signing" if signing else None, "comment": comment}
    k = conn.client.post(f"/api/v1/users/{q(user)}/keys", json=body) or {}
    if as_json:
        emit_json(k)
        return
    click.echo(k.get("fingerprint", ""))
    click.echo(f"added {k.get('kind', 'key')} key {k.get('id', '')} ({k.get('algorithm', '?')}) to {user}", err=True)


@key.command("list")
@click.argument("user")
@client_options
@json_option
def key_list(conn: Conn, user: str, as_json: bool) -> None:
    """List USER's keys. With --json, prints a JSON array of key objects.

    \b
    Examples:
      tether key list alice
      tether key list alice --json | jq -r '.[].fingerprint'
    """
    keys = (conn.client.get(f"/api/v1/users/{q(user)}/keys") or {}).get("keys", [])
    if as_json:
        emit_json(keys)
        return
    emit_table(keys, KEY_FIELDS, empty=f"{user} has no keys")


@key.command("rm")
@click.argument("user")
@click.argument("fingerprint_or_id")
@client_options
def key_rm(conn: Conn, user: str, fingerprint_or_id: str) -> None:
    """Remove one of USER's keys, named by fingerprint or id.

    Exits 1 if USER has no such key.

    \b
    Examples:
      tether key rm alice SHA256:4d3e...
      tether key rm alice 17
    """
    conn.client.delete(f"/api/v1/users/{q(user)}/keys/{q(fingerprint_or_id)}")
    click.echo(f"removed key {fingerprint_or_id} from {user}")


@key.command("authorized-keys")
@click.option("--user", "users", metavar="U", multiple=True, help="Only this user's keys (repeatable).")
@click.option("--command", "command_path", metavar="PATH", default=None,
              help="The tether executable sshd runs (default: the absolute path of this one).")
@click.option("--output", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Replace FILE atomically (mode 0600) instead of printing to stdout.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Hub TOML settings (default /etc/tether/hub.toml when it exists).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The hub's data directory. Env TETHER_DATA_DIR.")
@click.option("--database-url", default=None, help="The hub's database URL. Env TETHER_DATABASE_URL.")
def key_authorized_keys(users: tuple[str, ...], command_path: str | None, output: Path | None,
                        config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Write authorized_keys lines for the hub's SSH keys (run on the hub machine).

    Reads the hub's database directly. One line per SSH key of every enabled
    user (or of each --user), each bound to the forced command:

    \b
      restrict,command="PATH ssh-serve USER" ssh-ed25519 AAAA... tether:USER:SHA256:...

    so every key logs into the one server account and the key decides the
    tether user. With --output the file is replaced atomically (temp file in
    the same directory, fsync, rename) with mode 0600. Exits 1 if a --user
    does not exist or is disabled.

    \b
    Examples:
      tether key authorized-keys --data /var/lib/tether
      sudo -u tether tether key authorized-keys --data /var/lib/tether \\
          --output ~tether/.ssh/authorized_keys
      tether key authorized-keys --user alice --command /opt/tether/bin/tether
    """
    from tether.auth.identities import ssh_keys_by_user
    from tether.problems import EXIT_NO, EXIT_RUNTIME
    from tether.config import ConfigError, load_settings
    from tether.db import Database
    from tether.ssh.authorized_keys import forced_line

    try:
        settings = load_settings(config_file, data_dir=data_dir, database_url=database_url)
    except ConfigError as exc:
        raise TetherError(str(exc), EXIT_USAGE) from None
    url = settings.effective_database_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise TetherError(f"no hub database at {url[len('sqlite:///'):]}", EXIT_USAGE,
                          "pass --data DIR or --database-url URL (run this on the hub machine)")
    path = command_path or _own_executable()
    if not os.path.isabs(path):
        raise TetherError(f"--command must be an absolute path, not {path!r}", EXIT_USAGE)
    db = Database(url)
    try:
        rows = ssh_keys_by_user(db)
    except Exception as exc:  # noqa: BLE001 - any storage failure is reported the same way
        raise TetherError(f"cannot read the hub's database: {exc}", EXIT_RUNTIME) from None
    finally:
        db.dispose()
    known = {r[0]: r[1] for r in rows}
    for u in users:
        if u not in known:
            raise TetherError(f"no user {u!r} on this hub", EXIT_NO)
        if known[u]:
            raise TetherError(f"user {u!r} is disabled", EXIT_NO)
    lines = []
    for name, disabled, public_key, fingerprint in rows:
        if disabled or public_key is None or (users and name not in users):
            continue
        lines.append(forced_line(path, name, public_key, fingerprint))
    text = "".join(line + "\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        from tether.files import write_private

        write_private(output, text)
    except OSError as exc:
        raise TetherError(f"cannot write {output}: {exc.strerror or exc}", EXIT_RUNTIME) from None
    click.echo(f"wrote {len(lines)} key(s) to {output}", err=True)


def _own_executable() -> str:
    """The absolute path of the running ``tether`` (or a ``python -m tether`` equivalent)."""
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "tether":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found:
            return os.path.abspath(found)
    beside = Path(sys.executable).parent / "tether"
    if beside.exists():
        return str(beside.absolute())
    found = shutil.which("tether")
    if found:
        return os.path.abspath(found)
    raise TetherError("cannot tell where the tether executable is", EXIT_USAGE, "pass --command PATH")


@key.command("check")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
def key_check(file: Path, as_json: bool) -> None:
    """Report authorized_keys lines that let a key in without a forced command,
    or with forwarding (port, agent, X11), a pty, environment= or permitopen.

    A safe line has command="..." and either restrict (with nothing re-enabled
    after it) or all of no-port-forwarding, no-agent-forwarding,
    no-X11-forwarding and no-pty. Lines sshd cannot parse are reported too.
    Exits 1 if any line is unsafe, 0 if all are safe.

    \b
    Examples:
      tether key check ~tether/.ssh/authorized_keys
      tether key check /etc/ssh/authorized_keys/tether --json | jq '.[] | select(.safe | not)'
    """
    from tether.problems import EXIT_NO
    from tether.ssh.authorized_keys import check_text

    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TetherError(f"cannot read {file}: {exc.strerror or exc}", EXIT_USAGE) from None
    reports = check_text(text)
    bad = [r for r in reports if not r.safe]
    if as_json:
        emit_json([{"line": r.lineno, "safe": r.safe, "reasons": r.reasons,
                    "comment": r.key.comment if r.key else None} for r in reports])
    else:
        for r in bad:
            for reason in r.reasons:
                click.echo(f"{file}:{r.lineno}: {reason}")
        click.echo(f"{len(reports)} key line(s), {len(bad)} unsafe", err=True)
    if bad:
        sys.exit(EXIT_NO)
