"""The ``tether`` command line.

Subcommands are loaded lazily: the root group knows each command's import path
and one-line summary, so ``tether --help`` imports none of them, and
``tether user list`` imports only ``tether.cli.user`` (and the hub client,
:mod:`tether.hubclient`, once it talks to the hub). Keep it that way: no heavy imports at module level here.

This package's own module holds only the table of commands: the click group (``main``,
in :mod:`tether.cli.root`) is imported on first use, so that the quick command line
(:mod:`tether.cli.quick`, which lives in this package) runs without click.
"""

from __future__ import annotations

#: name -> ("module:attribute", one-line help shown by `tether --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "hub": ("tether.cli.hub:hub", "Run and administer a hub server."),
    "login": ("tether.cli.login:login", "Save a hub URL and token for later commands."),
    "whoami": ("tether.cli.login:whoami", "Show the user and token the hub sees."),
    "user": ("tether.cli.user:user", "Add, list, show, disable and enable users."),
    "key": ("tether.cli.key:key", "Add, list and remove a user's SSH and signing keys."),
    "space": ("tether.cli.space:space", "Create spaces and grant users access to them."),
    "token": ("tether.cli.token:token", "Mint, attenuate, inspect, list and revoke scoped tokens."),
    "audit": ("tether.cli.audit:audit", "Show the hub's audit log."),
    "gc": ("tether.cli.gc:gc", "Garbage-collect unreferenced blobs and apply retention (admins)."),
    "publish": ("tether.publish.cli:publish", "Publish build artifacts, uploading only what the hub lacks."),
    "log": ("tether.log.cli:log", "An immutable record log: add, list, show; push/pull/sync with a hub."),
    "ssh-serve": ("tether.cli.ssh_serve:ssh_serve", "Serve tether over SSH as USER (an authorized_keys forced command)."),
    "job": ("tether.job.cli:job", "Multi-node jobs: roles, send / wait / sync (LAVA MultiNode compatible)."),
    "signal": ("tether.signal.cli:signal", "Send or wait for signed messages over NATS (remaphore-compatible)."),
    "forward": ("tether.forward.cli:forward", "Serve an app on this node through the hub's gateway, over SSH."),
    "app": ("tether.apps.cli:app", "Register web apps; spawn per-user sandboxed instances behind the gateway."),
}


def __getattr__(name: str) -> object:  # (no typing import: see tether.cli.quick)
    if name in ("main", "LazyGroup", "CONTEXT_SETTINGS"):
        from tether.cli import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["main", "LazyGroup", "COMMANDS"]  # noqa: F822 - main and LazyGroup: see __getattr__
