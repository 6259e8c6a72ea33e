"""The root click group of the ``tether`` command line (``tether.cli.main``): loads each
command of :data:`tether.cli.COMMANDS` on first use."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import click

from tether import __version__
from tether.cli import COMMANDS
from tether.console import Group

# asyncssh (`tether forward`'s SSH, the hub's SSH server) still names DSA, which cryptography
# deprecates: ten lines of warning on every start that no tether user can act on.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\b")


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

    Exit codes: 0 done, 1 a clean "no" (not found, already exists, timed out),
    2 usage or configuration error, 3 runtime or transport failure,
    4 authentication or permission denied.
    """


__all__ = ["CONTEXT_SETTINGS", "LazyGroup", "main"]
