"""``tether token``: scoped tokens with caveats.

A token is a bearer secret (``tth_...``) bound to a user and narrowed by
caveats: scopes, expiry, not-before, source networks, and budgets of uses,
files and bytes. A token can mint narrower children (attenuate); revoking a
token revokes its descendants too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tether.cli.actions import TOKEN_FIELDS, token_id_arg
from tether.console import SIZE, echo, emit_json, emit_object, json_option
from tether.hubclient.hub import Conn, q
from tether.hubclient.options import client_options

F = TypeVar("F", bound=Callable[..., Any])


def caveat_options(f: F) -> F:
    """The caveat flags shared by `mint` and `attenuate`."""
    opts = [
        click.option("--scope", "scopes", metavar="S", multiple=True,
                     help="What the token may do, e.g. publish:builds/android. Repeatable."),
        click.option("--expires", metavar="E",
                     help="When it stops working: a duration (30m, 1h, 7d) or a timestamp."),
        click.option("--not-before", metavar="T", help="When it starts working: a duration or timestamp."),
        click.option("--source", "sources", metavar="CIDR", multiple=True,
                     help="Only accept it from this network, e.g. 10.0.0.0/8. Repeatable."),
        click.option("--max-uses", type=click.IntRange(min=0), metavar="N", help="At most N requests."),
        click.option("--max-files", type=click.IntRange(min=0), metavar="N", help="At most N files uploaded."),
        click.option("--max-bytes", type=SIZE, metavar="N",
                     help="At most N bytes uploaded; units allowed: 500MB, 2GiB."),
        click.option("--label", metavar="L", help="A name for the token, e.g. the CI job id."),
        json_option,
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@click.group()
def token() -> None:
    """Mint, attenuate, inspect, list and revoke scoped tokens.

    \b
    Examples:
      T=$(tether token mint --scope publish:builds/android --expires 1h \\
            --source 10.0.0.0/8 --max-files 500 --label job-123 --json | jq -r .token)
      tether token inspect
      tether token revoke 42
    """


@token.command("mint")
@click.option("--for", "for_user", metavar="USER", help="Mint for USER instead of yourself (admin).")
@caveat_options
@client_options
def token_mint(conn: Conn, for_user: str | None, as_json: bool, **kw: Any) -> None:
    """Mint a new token and print its secret.

    Without --json the secret alone is printed on stdout and the details go to
    stderr, so `T=$(tether token mint ...)` captures just the secret. With
    --json the hub's token object (with `token` and `id`) goes to stdout.
    The secret is shown only once; the hub keeps only its hash.

    \b
    Examples:
      T=$(tether token mint --scope publish:builds/android --expires 1h \\
            --source 10.0.0.0/8 --max-files 500 --label job-123 --json | jq -r .token)
      tether token mint --for ci-android --scope publish:builds --expires 7d
      tether token mint --scope log:logs:read --max-uses 10 --max-bytes 1GiB
    """
    from tether.cli.actions import token_mint as run

    run(conn, for_user, as_json, **kw)


@token.command("attenuate")
@caveat_options
@client_options
def token_attenuate(conn: Conn, as_json: bool, **kw: Any) -> None:
    """Mint a child of the token in use, narrowed by the given caveats.

    The child keeps every caveat of its parent and adds yours: it can only be
    narrower, never wider. Revoking the parent revokes the child. Output is as
    for `tether token mint`.

    \b
    Examples:
      TETHER_TOKEN=$T tether token attenuate --scope publish:builds/android/job-123 --expires 10m
      C=$(tether token attenuate --max-files 1 --label one-file)
    """
    from tether.cli.actions import token_mint as run

    run(conn, None, as_json, inherit=True, **kw)


@token.command("inspect")
@click.argument("token_id", metavar="[ID|TOKEN]", required=False)
@client_options
@json_option
def token_inspect(conn: Conn, token_id: str | None, as_json: bool) -> None:
    """Show a token's owner, caveats and usage; without ID, the token in use.

    ID is a token's id (16 hex digits, as `tether token list` shows) or the whole
    token (only its id is sent).

    \b
    Examples:
      tether token inspect
      tether token inspect 3dfb14015f005ac4 --json | jq .uses
      tether token inspect "$T"
    """
    path = "/api/v1/tokens/self" if token_id is None else f"/api/v1/tokens/{q(token_id_arg(token_id, 'ID'))}"
    t = conn.client.get(path) or {}
    if as_json:
        emit_json(t)
        return
    emit_object(t, TOKEN_FIELDS + [k for k in t if k not in TOKEN_FIELDS and k != "token"])


@token.command("list")
@click.option("--user", "user", metavar="U", help="Only tokens of user U (admin for other users).")
@click.option("--all", "all_", is_flag=True, help="Every user's tokens (hub admin only); ignored with --user.")
@client_options
@json_option
def token_list(conn: Conn, user: str | None, all_: bool, as_json: bool) -> None:
    """List your tokens (never their secrets), revoked and expired ones included.

    With --json, prints a JSON array of token objects.

    \b
    Examples:
      tether token list
      tether token list --user ci-android
      tether token list --all
      tether token list --json | jq -r '.[] | select(.label == "job-123") | .id'
    """
    from tether.cli.actions import token_list as run

    run(conn, user, all_, as_json)


@token.command("revoke")
@click.argument("token_id", metavar="ID|TOKEN")
@client_options
@json_option
def token_revoke(conn: Conn, token_id: str, as_json: bool) -> None:
    """Revoke token ID and every token minted from it.

    ID is a token's id (16 hex digits, as `tether token list` shows) or the whole
    token (only its id is sent). Prints how many tokens were revoked. Exits 1 if
    there is no such token.

    \b
    Examples:
      tether token revoke 3dfb14015f005ac4
      tether token revoke "$T"                  # the token a job was handed
      tether token revoke 3dfb14015f005ac4 --json | jq '.revoked | length'
    """
    r = conn.client.delete(f"/api/v1/tokens/{q(token_id_arg(token_id, 'ID'))}") or {}
    if as_json:
        emit_json(r)
        return
    revoked = r.get("revoked") or []
    n = len(revoked)
    echo(f"revoked {n} token{'s' if n != 1 else ''}" + (f": {', '.join(map(str, revoked))}" if revoked else ""))
