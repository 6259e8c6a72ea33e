"""``tether key``: a user's SSH and signing keys."""

from __future__ import annotations

from typing import IO

import click

from tether.cli.common import EXIT_USAGE, Conn, TetherError, client_options, emit_json, emit_table, json_option, q

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
