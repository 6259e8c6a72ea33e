"""``tether login`` and ``tether whoami``."""

from __future__ import annotations

import sys
from typing import Any

import click

from tether.console import handle_errors, json_option
from tether.hubclient.hub import Conn
from tether.hubclient.options import ca_bundle_option, client_options, token_option
from tether.problems import EXIT_USAGE, TetherError


def _read_token() -> str:
    if sys.stdin.isatty():
        token = click.prompt("Token", hide_input=True, err=True)
    else:
        token = sys.stdin.readline()
    token = (token or "").strip()
    if not token:
        raise TetherError("no token given", EXIT_USAGE, "pass --token T, set TETHER_TOKEN or pipe the token on stdin")
    return token


def _describe(me: dict[str, Any]) -> tuple[str, str | None]:
    user = me.get("user") or {}
    tok = me.get("token") or {}
    return str(user.get("name", "?")), (str(tok["id"]) if tok.get("id") is not None else None)


@click.command()
@click.argument("hub_url", metavar="HUB_URL")
@token_option
@ca_bundle_option
@click.option(
    "--insecure-http",
    is_flag=True,
    help="Allow plain http:// to a host that is not loopback (the token travels in clear).",
)
def login(hub_url: str, token: str | None, ca_bundle: str | None, insecure_http: bool) -> None:
    """Check a token against HUB_URL and save both for later commands.

    Without --token (or TETHER_TOKEN) the token is read from stdin; on a
    terminal you are prompted for it, without echo. The hub is asked who the
    token belongs to before anything is saved. The config file is
    $XDG_CONFIG_HOME/tether/config.toml (default ~/.config/tether/config.toml),
    written with mode 0600.

    Plain http:// is refused for hosts other than localhost/loopback unless
    --insecure-http is given.

    \b
    Examples:
      tether login https://hub.example.org --token tth_...
      pass show tether/token | tether login https://hub.example.org
      tether login https://hub.internal --ca-bundle /etc/ssl/our-ca.pem
    """
    state: dict[str, Conn] = {}

    def run() -> None:
        from tether.hubclient.config import is_loopback_url, normalize_hub, save
        from tether.hubclient.errors import TransportError

        url = normalize_hub(hub_url)
        if url.rstrip("/").endswith("/api/v1"):  # the API address `tether hub` prints beside the hub's
            raise TetherError(f"{hub_url} is the hub's API; log in to the hub itself", EXIT_USAGE,
                              f"tether login {url.rstrip('/').removesuffix('/api/v1')} ...")
        if url.startswith("http://") and not is_loopback_url(url) and not insecure_http:
            raise TetherError(
                f"refusing to send a token over plain http to {url}",
                EXIT_USAGE,
                "use https://, or pass --insecure-http if you accept the risk",
            )
        secret = token or _read_token()
        conn = state["conn"] = Conn(url, secret, ca_bundle)
        try:
            me = conn.client.get("/api/v1/whoami") or {}
        except TransportError as exc:
            if not exc.tls:  # login takes the hub as HUB_URL, not --hub / TETHER_HUB
                exc.hint = f"is the hub running and reachable at {url}? check the HUB_URL given to `tether login`"
            raise
        finally:
            conn.close()
        name, token_id = _describe(me)
        path = save(url, secret, conn.config.ca_bundle, user=name if name != "?" else None)
        suffix = f" (token {token_id})" if token_id else ""
        click.echo(f"logged in to {url} as {name}{suffix}")
        click.echo(f"saved to {path}", err=True)

    handle_errors(run, lambda: state.get("conn"))()


@click.command()
@client_options
@json_option
def whoami(conn: Conn, as_json: bool) -> None:
    """Show the user and token the hub sees for this client.

    \b
    Examples:
      tether whoami
      tether whoami --json | jq -r .user.name
      TETHER_TOKEN=$T tether whoami
    """
    from tether.cli.actions import whoami as run

    run(conn, as_json)
