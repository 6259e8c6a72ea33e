"""The hub options every command that talks to a hub takes (``--hub``, ``--token``,
``--ca-bundle``), passing the callback a lazy :class:`~tether.hubclient.hub.Conn`.
click's side of the hub client: imported by command modules only."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from tether.console import echo, emit_json, emit_table, handle_errors
from tether.hubclient.hub import Conn

F = TypeVar("F", bound=Callable[..., Any])


def hub_option(f: F) -> F:
    return click.option(
        "--hub",
        "hub",
        metavar="URL",
        envvar="TETHER_HUB",
        show_envvar=True,
        help="Hub URL (default: from `tether login`).",
    )(f)


def token_option(f: F | None = None, *, flag: str = "--token") -> Any:
    """The --token option (or another flag name, e.g. where --token means a filter)."""

    def deco(fn: F) -> F:
        return click.option(
            flag,
            "token",
            metavar="TOKEN",
            envvar="TETHER_TOKEN",
            show_envvar=True,
            help="Bearer token (default: from `tether login`).",
        )(fn)

    return deco(f) if f is not None else deco


def ca_bundle_option(f: F) -> F:
    return click.option(
        "--ca-bundle",
        "ca_bundle",
        metavar="FILE",
        envvar="TETHER_CA_BUNDLE",
        show_envvar=True,
        type=click.Path(dir_okay=False),
        help="PEM file of CA certificates to trust for the hub's TLS.",
    )(f)


def client_options(f: F | None = None, *, token_flag: str = "--token") -> Any:
    """Add --hub/--token/--ca-bundle and pass a lazy ``conn: Conn`` to the callback.

    The callback is also wrapped with :func:`~tether.console.handle_errors`, so
    HubError, TransportError and ConfigError become clean messages and exit codes.
    Use ``@client_options`` or ``@client_options(token_flag="--auth-token")``.
    """

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, hub: str | None, token: str | None, ca_bundle: str | None, **kwargs: Any) -> Any:
            conn = Conn(hub, token, ca_bundle)
            try:
                return handle_errors(fn, lambda: conn)(*args, conn=conn, **kwargs)
            finally:
                conn.close()

        return hub_option(token_option(ca_bundle_option(wrapper), flag=token_flag))  # type: ignore[return-value]

    return deco(f) if f is not None else deco


def show_rows(conn: Conn, path: str, columns: Sequence[str], *, as_json: bool, empty: str,
              params: dict[str, str] | None = None) -> None:
    """Ask the hub for the rows at PATH and print them: as the hub's JSON array with
    ``--json``, else as a table of COLUMNS (EMPTY, on stderr, when there are none)."""
    rows = conn.client.get(path, params=params) or []
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, columns, empty=empty)


def end_share(conn: Conn, path: str, name: str, with_user: str) -> None:
    """End the share at PATH (``.../shares/USER``) of NAME with WITH_USER, and say so."""
    conn.client.request("DELETE", path)
    echo(f"{name} is no longer shared with {with_user}")


__all__ = ["ca_bundle_option", "client_options", "end_share", "hub_option", "show_rows", "token_option"]
