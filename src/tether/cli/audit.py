"""``tether audit``: read the hub's audit log."""

from __future__ import annotations

import click

from tether.console import emit_json, emit_table, json_option
from tether.hubclient.hub import Conn
from tether.hubclient.options import client_options

COLUMNS = ["at", "user", "token_id", "action", "resource", "source", "outcome", "status", "count", "last_at", "reason"]


@click.command()
@click.option("--since", metavar="E", help="Only records newer than this: a duration back (1h, 2d) or a timestamp.")
@click.option("--user", metavar="U", help="Only records of user U.")
@click.option("--token", "token_id", metavar="ID|TOKEN",
              help="Only records made with this token: its id, or the whole token (only its public id is sent).")
@click.option("--action", metavar="A", help="Only records of this action, e.g. token.mint.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the newest N records (printed oldest first).")
@client_options(token_flag="--auth-token")
@json_option
def audit(
    conn: Conn,
    since: str | None,
    user: str | None,
    token_id: str | None,
    action: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Show the hub's audit log: who did what, with which token, from where.

    Here `--token ID` filters by token (a whole token works too: its id is
    taken from it, and the secret is never sent); pass the token to authenticate with
    as --auth-token, TETHER_TOKEN or through `tether login`.

    With --json, prints a JSON array of records.

    \b
    Examples:
      tether audit --since 1h
      tether audit --user ci-android --action token.mint --limit 20
      tether audit --token "$T"                 # the token a job was handed
      tether audit --token e6818ad1675e3c84 --json | jq -r '.[] | select(.outcome != "allowed")'
    """
    if token_id is not None:
        token_id = _token_id(token_id)
    params = {"since": since, "user": user, "token": token_id, "action": action, "limit": limit}
    params = {k: str(v) for k, v in params.items() if v is not None}
    records = (conn.client.get("/api/v1/audit", params=params) or {}).get("records", [])
    if as_json:
        emit_json(records)
        return
    emit_table(records, COLUMNS, empty="no audit records")


def _token_id(value: str) -> str:
    """A token id, or the id of a whole token (``tth_<id>_<secret>``): the secret stays here."""
    from tether.auth.tokens import is_token_id, split_token
    from tether.problems import EXIT_USAGE, TetherError

    value = value.strip()
    parts = split_token(value)
    if parts is not None:
        return parts[0]
    if is_token_id(value):
        return value
    shown = "a token" if value.startswith("tth_") else repr(value[:40])
    raise TetherError(f"--token: {shown} is neither a token id (16 hex digits) nor a whole token (tth_<id>_<secret>)",
                      EXIT_USAGE, "copy the id from `tether token list`, or pass the token itself")
