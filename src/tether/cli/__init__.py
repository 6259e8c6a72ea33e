"""The ``tether`` command line.

Subcommands are loaded lazily: the root group knows each command's import path
and one-line summary, so ``tether --help`` imports none of them, and
``tether user list`` imports only ``tether.cli.user`` (and the hub client,
:mod:`tether.hubclient`, once it talks to the hub). Keep it that way: no heavy imports at module level here.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from tether import __version__
from tether.console import Group

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


class LazyGroup(Group):
    """A click group whose subcommands are imported on first use (and whose commands
    may raise a TetherError, see :class:`tether.console.Group`)."""

    def __init__(self, *args: Any, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in self.lazy_commands:
            return None
        target = self.lazy_commands[cmd_name][0]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # a real missing dependency inside the module: show it
            raise click.UsageError(f"the `{cmd_name}` command is not available in this build", ctx) from None
        cmd = getattr(module, attr)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{target} is not a click command")
        self.commands[cmd_name] = cmd
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Summaries come from the table, so help does not import every module.
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy_commands:
                rows.append((name, self.lazy_commands[name][1]))
            else:
                cmd = self.commands[name]
                if not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="tether", message="%(prog)s %(version)s")
def main() -> None:
    """tether: hand results, signals and app traffic from machines you don't
    fully trust to a hub you do, with narrow credentials.

    \b
    Get started:
      tether login https://hub.example.org --token tth_...
      tether whoami
      T=$(tether token mint --scope publish:builds/android --expires 1h)

    Exit codes: 0 done, 1 not found / already exists, 2 usage or configuration
    error, 3 runtime or transport failure, 4 authentication or permission denied.
    """


__all__ = ["main", "LazyGroup", "COMMANDS"]
