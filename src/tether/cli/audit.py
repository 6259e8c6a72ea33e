"""``tether audit``: read the hub's audit log."""

from __future__ import annotations

import click

from tether.console import json_option
from tether.hubclient.hub import Conn
from tether.hubclient.options import client_options

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
    from tether.cli.actions import audit as run

    run(conn, since, user, token_id, action, limit, as_json)
