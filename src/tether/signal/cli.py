"""``tether signal`` (and the ``remaphore`` console script): a remote semaphore over NATS.

Two interfaces, one engine:

* remaphore's flags (``-s``, ``-r``, ``-t``, ``-u``...), with the same
  output and exit codes, so scripts written for remaphore run unchanged;
* spelled-out subcommands: ``send``, ``wait``, ``request`` (thin aliases for
  ``-s``, the default receive mode and ``-r``), ``keygen`` and ``peers``.

How a subcommand is told apart from a receive SCRIPT (remaphore takes the
script as a positional argument): a subcommand name counts only as the
**very first argument** of ``tether signal`` (``tether signal send ...``).
Anywhere else it is a script, as in remaphore: ``tether signal -t 24h send``
runs a program called ``send``, and so do ``tether signal ./send`` and
``tether signal -- send``. The ``remaphore`` command has no subcommands at
all: it is remaphore's interface, exactly.

Heavy imports (nats-py, asyncio machinery, the hub client) happen only once a
command runs, never for ``--help``.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import click

from tether.console import Group
from tether.hubclient.options import client_options
from tether.problems import EXIT_AUTH, EXIT_NO, EXIT_RUNTIME, EXIT_USAGE, TetherError

DEFAULT_CONFIG = "/etc/remaphore/remaphore.conf"
SUBCOMMANDS = ("send", "wait", "request", "keygen", "peers", "init", "peer")


def _go_duration(text: str) -> int:
    """A Go duration in nanoseconds; negative ones too (remaphore: a timeout <= 0 is none)."""
    from tether.signal.core import parse_duration

    return parse_duration(text, allow_negative=True)


class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return _go_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Duration()


def _prog() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().info_name if ctx is not None and ctx.find_root().info_name else "tether"


def _log(message: str) -> None:
    click.echo(f"{_prog()}: {message}", err=True)


def go_syntax(cmd: click.Command, ctx: click.Context, args: list[str]) -> list[str]:
    """Read ``args`` with Go's flag rules (as remaphore does) and hand click one canonical argv."""
    from tether.signal import goflags

    flags: dict[str, bool] = {}
    spelling: dict[str, str] = {}
    check: dict[str, Any] = {}
    for param in cmd.params:
        if not isinstance(param, click.Option):
            continue
        for opt in param.opts:
            name = opt.lstrip("-")
            flags[name], spelling[name] = bool(param.is_flag), opt
            if param.type is DURATION:
                check[name] = _go_duration
    try:
        parsed = goflags.parse(args, flags, check)
    except goflags.FlagError as exc:
        raise click.UsageError(str(exc), ctx) from None
    return goflags.canonical(parsed, spelling)


class GoFlagsCommand(click.Command):
    """A command whose options are read with Go's flag rules (send, wait, request: remaphore's modes spelled out)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, go_syntax(self, ctx, args))


class SignalCommand(Group):
    """remaphore's flag interface, plus subcommands when they come first.

    A click group only in name: without a subcommand it parses and runs like
    a plain command (remaphore's flags and a positional MESSAGE or SCRIPT);
    a subcommand is recognised only as the first argument (see the module
    docstring). ``subcommands_enabled = False`` gives the ``remaphore`` command.
    """

    subcommands_enabled = True

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if self.subcommands_enabled and args and args[0] in self.commands:
            ctx.tether_subcommand = (args[0], list(args[1:]))  # type: ignore[attr-defined]
            return []
        return click.Command.parse_args(self, ctx, go_syntax(self, ctx, args))

    def invoke(self, ctx: click.Context) -> Any:
        sub = getattr(ctx, "tether_subcommand", None)
        if sub is None:
            return click.Command.invoke(self, ctx)
        name, rest = sub
        cmd = self.commands[name]
        ctx.invoked_subcommand = name
        # parent: the caller of `signal`, so usage reads `tether signal send [OPTIONS]`
        # rather than listing the flag interface's positional arguments in between
        with cmd.make_context(f"{ctx.info_name} {name}", rest, parent=ctx.parent) as sub_ctx:
            return cmd.invoke(sub_ctx)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return click.Command.collect_usage_pieces(self, ctx)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_usage(ctx, formatter)
        if self.subcommands_enabled and self.commands:
            formatter.write_usage(ctx.command_path, f"{{{'|'.join(SUBCOMMANDS)}}} [OPTIONS] [ARGS]...", "   or: ")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n in SUBCOMMANDS if n in self.commands] if self.subcommands_enabled else []

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name) if self.subcommands_enabled else None


# -- shared options -----------------------------------------------------------------


def _config_option(f: Any) -> Any:
    return click.option("-c", "--config", "config_path", metavar="FILE", default=DEFAULT_CONFIG,
                        envvar="TETHER_SIGNAL_CONFIG", show_envvar=True,
                        help=f"Config file (default {DEFAULT_CONFIG}).")(f)


def _subject_option(f: Any) -> Any:
    return click.option("-S", "--subject", "subject", metavar="SUBJECT", default="",
                        help="Sub-subject to talk on (default: all).")(f)


def _json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON to stdout instead of text.")(f)


_SUB_CONTEXT = {"help_option_names": ["-h", "--help"]}


# -- the remaphore interface ----------------------------------------------------------


@click.group(
    "signal",
    cls=SignalCommand,
    invoke_without_command=True,
    context_settings={"allow_interspersed_args": False, "help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  # uploader: tell everyone the upload is done
  aws s3 cp bigfile s3://bucket/ && tether signal -s -u upload_done
  # downloaders: wait (at most a day) for that message, then fetch
  tether signal -t 24h -u upload_done && aws s3 cp s3://bucket/bigfile .
  # run a script for each `deploy` message addressed to this node
  tether signal -v deploy -t 24h ./on-deploy.sh
  # ask every node under com.crypto and print what their scripts said
  tether signal -r -t 5s -D 'com.crypto.**' -v status

\b
Spelled out (see `tether signal COMMAND --help`):
  tether signal send --uuid upload_done
  tether signal wait --timeout 24h --uuid upload_done

\b
A subcommand counts only as the first argument after `signal`; anywhere else
a word is a receive SCRIPT, as in remaphore (`tether signal -t 1h send` runs
./send from PATH). The `remaphore` command has no subcommands.

\b
Flags follow Go's flag package, as remaphore's: -u x, -u=x, --u=x; -o=false.

\b
Exit codes (remaphore's): 0 received (or sent), 1 nothing received (the
timeout, no responders to -r, a waiter's credentials refused), 2 usage or
config error, 3 runtime error (sending: NATS down or our credentials refused;
no known receivers), 143 SIGTERM.
""",
)
@click.option("-s", "send_only", is_flag=True, help="Send and forget: MESSAGE... is the payload.")
@click.option("-r", "request_reply", is_flag=True, help="Send a request and print each responder's reply.")
@click.option("-D", "dest", metavar="PATTERN", default="", help="Send: destination pattern (default **). Receive: exact destination to match.")
@click.option("-d", "no_dest", is_flag=True, help="Receive: do not match for destination (dangerous).")
@click.option("-p", "pubkey", metavar="PUBKEY", default="", help="Send: identity to sign with. Receive: accept only this sender.")
@click.option("-u", "uuid", metavar="UUID", default="", help="Send: message uuid. Receive: wait for this uuid (implies -o).")
@click.option("-v", "verbs", metavar="VERB[,VERB...]", default="", help="Send: the verb (default ping). Receive: verbs to match.")
@click.option("-o", "once", is_flag=True, help="Exit after one matching message was handled.")
@click.option("-t", "timeout", type=DURATION, default=None, help="Timeout, e.g. 30s or 1h2m3s4ms (default: none).")
@click.option("-S", "subject", metavar="SUBJECT", default="", help="Sub-subject to talk on (default: all).")
@click.option("-c", "config_path", metavar="FILE", default=DEFAULT_CONFIG, envvar="TETHER_SIGNAL_CONFIG", show_envvar=True,
              help=f"Config file (default {DEFAULT_CONFIG}).")
@click.option("-C", "print_config", is_flag=True, help="Print an example config with a fresh identity and exit.")
@click.option("--max-handlers", type=click.IntRange(1, 10000), default=None, help="Scripts running at once (default 16 or the config's max_handlers).")
@click.option("--durable", is_flag=True, default=None,
              help="Use JetStream: messages are kept (durable_retention, default 1h) and each node gets each exactly once, even if it was offline when they were sent.")
@click.option("--verbose", is_flag=True, help="Also log messages that were trusted but not for this node.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[MESSAGE...|SCRIPT [ARGS...]]")
def signal(send_only: bool, request_reply: bool, dest: str, no_dest: bool, pubkey: str, uuid: str, verbs: str,
           once: bool, timeout: int | None, subject: str, config_path: str, print_config: bool,
           max_handlers: int | None, durable: bool | None, verbose: bool, args: tuple[str, ...]) -> None:
    """Send or wait for signed messages over NATS: a remote semaphore,
    wire-compatible with remaphore (same flags, config file and exit codes).

    Without -s or -r, wait for messages from [ Peers ] addressed to this node
    and, when SCRIPT is given, run `SCRIPT [ARGS...] VERB PAYLOAD` for each,
    with REMAPHORE_SENDER, REMAPHORE_VERB, REMAPHORE_TIME, REMAPHORE_UUID,
    REMAPHORE_MSG and REMAPHORE_DESTMATCH set.
    """
    if print_config:
        from tether.signal import config as config_mod

        click.echo(config_mod.example_config())
        return
    if send_only and request_reply:
        raise TetherError("-r and -s are mutually exclusive", EXIT_USAGE)
    mode = "send" if send_only else "request" if request_reply else "wait"
    _execute(mode, config_path=config_path, subject=subject, dest=dest, no_dest=no_dest, pubkey=pubkey, uuid=uuid,
             verbs=verbs, once=once, timeout=timeout, max_handlers=max_handlers, durable=durable, verbose=verbose,
             args=args)


def _execute(mode: str, *, config_path: str, subject: str, dest: str = "", no_dest: bool = False, pubkey: str = "",
             uuid: str = "", verbs: str = "", once: bool = False, timeout: int | None = None,
             max_handlers: int | None = None, durable: bool | None = None, verbose: bool = False,
             args: tuple[str, ...] = ()) -> None:
    """The one engine behind the flags and the subcommands; ``mode`` is send, request or wait."""
    from tether.signal import config as config_mod
    from tether.signal import core

    if no_dest and dest:
        raise TetherError("-d and -D are mutually exclusive", EXIT_USAGE)
    sender = None
    if pubkey:
        try:
            sender = core.parse_public_key(pubkey)
        except core.KeyError_ as exc:
            raise TetherError(f"-p: {exc}", EXIT_USAGE) from None
    verb_list = [v.strip() for v in verbs.split(",") if v.strip()]
    cfg = config_mod.load_config(config_path)  # a ConfigError: exit 2, with its hint
    for w in cfg.warnings:
        _log(w)
    if max_handlers is not None:
        cfg.max_handlers = max_handlers
    if durable:
        cfg.durable = True
    timeout_s = timeout / 1e9 if timeout and timeout > 0 else None  # remaphore: -t 0 or below is no timeout
    code = _run(cfg, mode == "send", mode == "request", dest, no_dest, sender, uuid, verb_list, once, timeout_s,
                subject, verbose, list(args))
    sys.exit(code)


def _run(cfg: Any, send_only: bool, request_reply: bool, dest: str, no_dest: bool, sender: bytes | None, uuid: str,
         verb_list: list[str], once: bool, timeout_s: float | None, subject: str, verbose: bool, args: list[str]) -> int:
    import asyncio

    from tether.signal import core, transport

    def out(block: str) -> None:
        sys.stdout.write(block)
        sys.stdout.flush()

    async def main() -> int:
        if send_only or request_reply:
            verb = verb_list[0] if verb_list else core.DEFAULT_VERB
            payload = " ".join(args)  # empty without a MESSAGE, as remaphore sends it
            for name, value in (("destination", dest), ("verb", verb)):
                if "," in value:  # remaphore fails to encode it: exit 3 there, and so here
                    raise TetherError(f"the {name} may not contain a comma: {value!r}", EXIT_RUNTIME,
                                      "a destination pattern is one name; send once per pattern")
            if send_only:
                await transport.send(cfg, subject=subject, public=sender, dest=dest, verb=verb, payload=payload, uuid=uuid or None,
                                     durable=cfg.durable)
                return 0

            return await transport.request(cfg, subject=subject, public=sender, dest=dest, verb=verb, payload=payload,
                                           uuid=uuid or None, timeout=timeout_s, out=out, log=_log)
        filt = core.Filter(
            local_destination=cfg.destination,
            exact_destination=dest or None,
            match_destination=not no_dest,
            uuid=core.make_uuid(uuid) if uuid else None,
            verbs=frozenset(verb_list) if verb_list else None,
            sender=sender,
        )
        receiver = core.Receiver(cfg.peers, cfg.allow_skew_ns, filt,
                                 max_age_ns=cfg.durable_retention_ns if cfg.durable else None)
        return await transport.listen(cfg, receiver, subject=subject, script=args, once=once or bool(uuid),
                                      timeout=timeout_s, log=_log, verbose=verbose, durable=cfg.durable, out=out)

    async def guarded() -> int:
        import signal as signals

        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        caught: list[int] = []

        def stop(sig: int) -> None:
            caught.append(sig)
            task.cancel()

        for sig in (signals.SIGTERM, signals.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        try:
            return await main()
        except asyncio.CancelledError:
            return 128 + caught[0] if caught else 130  # the shell's code for death by that signal: 143, 130

    try:
        return asyncio.run(guarded())
    except transport.SignalError as exc:
        raise TetherError(str(exc), exc.exit_code, exc.hint) from None


# -- send / wait / request: the flags, spelled out ---------------------------------------


@signal.command(
    "send",
    cls=GoFlagsCommand,
    context_settings={**_SUB_CONTEXT, "allow_interspersed_args": False},
    epilog="""\b
Examples:
  tether signal send --uuid upload_done
  tether signal send --to 'com.example.**' --verb deploy v1.2.3
  # remaphore spelling of the same: tether signal -s -D 'com.example.**' -v deploy v1.2.3
""",
)
@click.option("-D", "--to", "dest", metavar="PATTERN", default="", help="Destination pattern (default **: every node).")
@click.option("-v", "--verb", "verb", metavar="VERB", default="", help="The verb (default ping).")
@click.option("-u", "--uuid", "uuid", metavar="UUID", default="", help="Message uuid receivers can wait for.")
@click.option("-p", "--identity", "pubkey", metavar="PUBKEY", default="", help="Sign with this [ Identities ] key (default: default_identity).")
@click.option("--durable", is_flag=True, default=None, help="Also keep the message in JetStream for nodes that are offline.")
@_subject_option
@_config_option
@click.argument("message", nargs=-1, type=click.UNPROCESSED, metavar="[MESSAGE...]")
def send_cmd(dest: str, verb: str, uuid: str, pubkey: str, durable: bool | None, subject: str, config_path: str,
             message: tuple[str, ...]) -> None:
    """Send a message and forget it (the same as `tether signal -s`).

    MESSAGE... is the payload (default: empty). Exit 0 once NATS has it.
    """
    if "," in verb:
        raise TetherError(f"--verb takes one verb, got {verb!r}", EXIT_USAGE)
    _execute("send", config_path=config_path, subject=subject, dest=dest, pubkey=pubkey, uuid=uuid, verbs=verb,
             durable=durable, args=message)


@signal.command(
    "wait",
    cls=GoFlagsCommand,
    context_settings={**_SUB_CONTEXT, "allow_interspersed_args": False},
    epilog="""\b
Examples:
  tether signal wait --timeout 24h --uuid upload_done && aws s3 cp s3://bucket/bigfile .
  tether signal wait --timeout 24h --verbs deploy ./on-deploy.sh
  # remaphore spelling of the same: tether signal -t 24h -v deploy ./on-deploy.sh
""",
)
@click.option("-t", "--timeout", "timeout", type=DURATION, default=None, help="Give up after this long, e.g. 30s or 24h (exit 1).")
@click.option("-o", "--once", "once", is_flag=True, help="Exit after one matching message was handled.")
@click.option("-u", "--uuid", "uuid", metavar="UUID", default="", help="Wait for this uuid (implies --once).")
@click.option("-v", "--verbs", "verbs", metavar="VERB[,VERB...]", default="", help="Only these verbs.")
@click.option("-p", "--from", "pubkey", metavar="PUBKEY", default="", help="Only this sender.")
@click.option("-D", "--dest", "dest", metavar="DEST", default="", help="Match the message's destination exactly instead of this node's pattern match.")
@click.option("-d", "--any-destination", "no_dest", is_flag=True, help="Do not match for destination (dangerous).")
@click.option("--max-handlers", type=click.IntRange(1, 10000), default=None, help="Scripts running at once.")
@click.option("--durable", is_flag=True, default=None, help="Read through this node's JetStream consumer.")
@click.option("--verbose", is_flag=True, help="Also log messages that were trusted but not for this node.")
@_subject_option
@_config_option
@click.argument("script", nargs=-1, type=click.UNPROCESSED, metavar="[SCRIPT [ARGS...]]")
def wait_cmd(timeout: int | None, once: bool, uuid: str, verbs: str, pubkey: str, dest: str, no_dest: bool,
             max_handlers: int | None, durable: bool | None, verbose: bool, subject: str, config_path: str,
             script: tuple[str, ...]) -> None:
    """Wait for messages to this node (the same as `tether signal` without -s/-r).

    For each accepted message run `SCRIPT [ARGS...] VERB PAYLOAD` with the
    REMAPHORE_* variables set. Exit 0 when a message was handled, 1 when
    none came before the timeout.
    """
    _execute("wait", config_path=config_path, subject=subject, dest=dest, no_dest=no_dest, pubkey=pubkey, uuid=uuid,
             verbs=verbs, once=once, timeout=timeout, max_handlers=max_handlers, durable=durable, verbose=verbose,
             args=script)


@signal.command(
    "request",
    cls=GoFlagsCommand,
    context_settings={**_SUB_CONTEXT, "allow_interspersed_args": False},
    epilog="""\b
Examples:
  tether signal request --timeout 5s --to 'com.example.**' --verb status
  # remaphore spelling of the same: tether signal -r -t 5s -D 'com.example.**' -v status
""",
)
@click.option("-t", "--timeout", "timeout", type=DURATION, default=None, help="Stop waiting for replies after this long.")
@click.option("-D", "--to", "dest", metavar="PATTERN", default="", help="Destination pattern (default **).")
@click.option("-v", "--verb", "verb", metavar="VERB", default="", help="The verb (default ping).")
@click.option("-u", "--uuid", "uuid", metavar="UUID", default="", help="Message uuid.")
@click.option("-p", "--identity", "pubkey", metavar="PUBKEY", default="", help="Sign with this [ Identities ] key.")
@_subject_option
@_config_option
@click.argument("message", nargs=-1, type=click.UNPROCESSED, metavar="[MESSAGE...]")
def request_cmd(timeout: int | None, dest: str, verb: str, uuid: str, pubkey: str, subject: str, config_path: str,
                message: tuple[str, ...]) -> None:
    """Send a request and print each responder's reply (the same as `tether signal -r`).

    Waits until every [ Peers ] node matching the pattern answered or the
    timeout passed; prints `destination,exitcode,output` per responder.
    """
    if "," in verb:
        raise TetherError(f"--verb takes one verb, got {verb!r}", EXIT_USAGE)
    _execute("request", config_path=config_path, subject=subject, dest=dest, pubkey=pubkey, uuid=uuid, verbs=verb,
             timeout=timeout, args=message)


# -- keygen ---------------------------------------------------------------------------


@signal.command(
    "keygen",
    context_settings=_SUB_CONTEXT,
    epilog="""\b
Examples:
  tether signal keygen                      # PUBKEY PRIVKEY [ping], for [ Identities ]
  tether signal keygen --verbs 'ping, deploy' -o node.identity   # secret to a 0600 file
  tether signal keygen --json | jq -r .public_key
  # register a node's key on the hub (see `tether signal peers --from-hub`)
  tether signal keygen -o node.identity --json | jq -r .public_key_base64 > node.pub
  tether key add node1 node.pub --signing
""",
)
@click.option("--verbs", "verbs", metavar="VERB[,VERB...]", default="ping", show_default=True,
              help="Verbs this identity may send (`*` for all).")
@click.option("-o", "--output", "output", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the identity line to FILE (created 0600, never overwritten) and print only the public key.")
@_json_option
def keygen_cmd(verbs: str, output: str | None, as_json: bool) -> None:
    """Make a new ed25519 identity for the config's [ Identities ] section.

    Prints `PUBKEY PRIVKEY [VERBS]`: the base58 32-byte public key and the
    base58 64-byte private key (seed then public key), as remaphore writes
    them. Give the public key to the peers that should trust this node.
    """
    import json
    import os

    from tether.signal.core import SigningKey

    verb_list = [v.strip().lower() for v in verbs.split(",") if v.strip()]
    if not verb_list or any(c in v for v in verb_list for c in " []#"):
        raise TetherError(f"--verbs must be a comma list like `ping, deploy` or `*`, got {verbs!r}", EXIT_USAGE)
    key = SigningKey.generate()
    line = f"{key.public_b58} {key.private_b58} [{', '.join(verb_list)}]"
    if output:
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise TetherError(f"{output} already exists; not overwriting a key file", EXIT_NO) from None
        except OSError as exc:
            raise TetherError(f"cannot create {output}: {exc.strerror}", EXIT_USAGE) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(line + "\n")
    if as_json:
        import base64

        obj: dict[str, Any] = {"public_key": key.public_b58, "verbs": verb_list,
                               # the form `tether key add USER FILE --signing` takes, for hub-managed peers
                               "public_key_base64": base64.b64encode(key.public).decode()}
        if output:
            obj["file"] = output
        else:
            obj["private_key"] = key.private_b58
            obj["line"] = line
        click.echo(json.dumps(obj, indent=2))
    else:
        click.echo(key.public_b58 if output else line)


# -- peers ----------------------------------------------------------------------------

#: grant level on the space -> verbs in [ Peers ]; None: not listed
LEVEL_ORDER = ("read", "write", "admin")


def _verb_list(text: str, flag: str) -> list[str]:
    verbs = [v.strip().lower() for v in text.split(",") if v.strip()]
    if any(c in v for v in verbs for c in " []#"):
        raise TetherError(f"{flag} must be a comma list like `ping, deploy` or `*`, got {text!r}", EXIT_USAGE)
    return verbs


def _verbs_text(verbs: Any) -> str:
    items = sorted(verbs)
    if "*" in items:
        items = ["*"]
    return f"[{', '.join(items)}]"


@signal.command(
    "peers",
    context_settings=_SUB_CONTEXT,
    epilog="""\b
Examples:
  tether signal peers                                  # the config's [ Peers ]
  tether signal peers -c node.conf --json
  # export peers from the hub: users granted on space `builds`, their signing keys
  tether signal peers --from-hub builds --destination 'org.example.{user}' >> node.conf
""",
)
@_config_option
@click.option("--from-hub", "space", metavar="SPACE",
              help="Instead of the config, export [ Peers ] lines from the hub: every user with a grant on SPACE, "
                   "one line per ed25519 signing key.")
@click.option("--destination", "template", metavar="TEMPLATE", default="{user}", show_default=True,
              help="With --from-hub: the destination of each peer; {user} is the user name.")
@click.option("--write-verbs", "write_verbs", metavar="VERBS", default="*", show_default=True,
              help="With --from-hub: verbs for users with write or admin on SPACE.")
@click.option("--read-verbs", "read_verbs", metavar="VERBS", default="", show_default="none",
              help="With --from-hub: verbs for users with read on SPACE (none: they receive and reply, never send).")
@_json_option
@client_options
def peers_cmd(config_path: str, space: str | None, template: str, write_verbs: str, read_verbs: str, as_json: bool,
              conn: Any) -> None:
    """List the peers this node trusts, or export them from a hub.

    Without --from-hub: the [ Peers ] of the config (-c), with their verbs.

    With --from-hub SPACE: print `[ Peers ]` lines `DESTINATION PUBKEY [VERBS]`
    for every enabled user with a grant on SPACE and each of their ed25519
    signing keys (`tether key add USER KEYFILE --signing`). The grant decides
    the verbs: write and admin get --write-verbs (default [*]), read gets
    --read-verbs (default [], so they are known receivers and may answer
    requests but cannot send). Needs a token that is admin on SPACE and may
    read the users' keys (a hub admin).
    """
    import json

    if space is None:
        rows = _config_peers(config_path)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            from tether.console import emit_table

            emit_table([{**r, "verbs": _verbs_text(r["verbs"])} for r in rows], ["destination", "public_key", "verbs"],
                       empty="no [ Peers ] in the config")
        return
    if "{user}" not in template or any(c in template for c in " ,\t#"):
        raise TetherError(f"--destination must contain {{user}} and no spaces or commas, got {template!r}", EXIT_USAGE)
    verbs_for = {"read": _verb_list(read_verbs, "--read-verbs"), "write": _verb_list(write_verbs, "--write-verbs")}
    verbs_for["admin"] = verbs_for["write"]
    rows, skipped = _hub_peers(conn.client, space, template, verbs_for)
    for msg in skipped:
        _log(msg)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"# [ Peers ] from {conn.client.hub_url} space {space}: write/admin {_verbs_text(verbs_for['write'])}, "
               f"read {_verbs_text(verbs_for['read'])}")
    click.echo("[ Peers ]")
    for r in rows:
        click.echo(f"{r['destination']} {r['public_key']} {_verbs_text(r['verbs'])}")


def _config_peers(config_path: str) -> list[dict[str, Any]]:
    from tether.signal import config as config_mod

    cfg = config_mod.load_config(config_path)  # a ConfigError: exit 2, with its hint
    for w in cfg.warnings:
        _log(w)
    return [{"destination": p.destination, "public_key": p.public_b58, "verbs": sorted(p.verbs)} for p in cfg.peers]


def _hub_peers(client: Any, space: str, template: str,
               verbs_for: dict[str, list[str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Read the space's grants and each granted user's signing keys; pure mapping after the GETs."""
    import base64
    import binascii

    from tether.hubclient.hub import q
    from tether.signal.core import PUBLIC_KEY_LEN, b58encode

    info = client.get(f"/api/v1/spaces/{q(space)}") or {}
    grants = info.get("grants")
    if grants is None:
        raise TetherError(f"the hub does not show the grants of space {space} to this token", EXIT_AUTH,
                          "exporting peers needs admin on the space (and a hub admin to read users' keys)")
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for grant in sorted(grants, key=lambda g: str(g.get("user"))):
        user, level = str(grant.get("user")), str(grant.get("level"))
        if level not in verbs_for:
            continue
        try:
            u = client.get(f"/api/v1/users/{q(user)}") or {}
        except Exception as exc:
            if getattr(exc, "status", None) == 403:
                raise TetherError(f"this token may not read the keys of user {user}", EXIT_AUTH,
                                  "exporting peers reads every granted user's signing keys: use a hub admin's token") from None
            raise
        if u.get("disabled"):
            skipped.append(f"user {user} is disabled: left out")
            continue
        signing = [k for k in u.get("keys", []) if k.get("kind") == "signing"]
        if not signing:
            skipped.append(f"user {user} has no signing key: left out (add one with `tether key add {user} FILE --signing`)")
            continue
        for k in signing:
            try:
                raw = base64.b64decode(str(k.get("public_key", "")), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if k.get("algorithm") != "ed25519" or len(raw) != PUBLIC_KEY_LEN:
                skipped.append(f"user {user}: signing key {k.get('fingerprint')} is not a 32-byte ed25519 key: left out")
                continue
            rows.append({
                "destination": template.replace("{user}", user),
                "public_key": b58encode(raw),
                "verbs": sorted(verbs_for[level]),
                "user": user,
                "grant": level,
                "fingerprint": k.get("fingerprint"),
            })
    return rows, skipped


# -- init / peer add: a node's config from the hub login, pairing without an editor ---------------


def _nats_credentials(client: Any) -> dict:
    """The hub's NATS servers and this user's credentials; a hub with signal off is a
    configuration to change (exit 2), not a clean "no"."""
    from tether.hubclient.errors import HubError

    try:
        return client.post("/api/v1/signal/nats", json={}) or {}
    except HubError as exc:
        if exc.status != 404:
            raise
        raise TetherError(f"this hub has signal off (signal_nats = off): {client.hub_url} runs no NATS server for "
                          "signal", EXIT_USAGE,
                          "ask its operator to set signal_nats (TETHER_SIGNAL_NATS) to \"embedded\" or your NATS "
                          "cluster's URLs, or write the node config by hand with your own `server:` lines") from None


@signal.command(
    "init",
    context_settings=_SUB_CONTEXT,
    epilog="""\b
Examples:
  tether login http://127.0.0.1:8580 --token "$(cat data/admin.token)"
  tether signal init -c uploader.conf --destination com.example.uploader
  tether signal init --destination org.example.builder1 --verbs 'ping, deploy'
  tether signal init -c uploader.conf --renew     # new credentials, same identity
""",
)
@_config_option
@click.option("--destination", "destination", metavar="NAME",
              help="This node's name, reverse-dot and globally unique (e.g. com.example.eu.node1); "
                   "required unless --renew.")
@click.option("--verbs", "verbs", metavar="VERB[,VERB...]", default="ping", show_default=True,
              help="Verbs this node's identity may send (`*` for all).")
@click.option("--force", is_flag=True, help="Replace an existing config: a new identity, so peers must trust it again.")
@click.option("--renew", is_flag=True,
              help="Only fetch new NATS credentials (and the hub's servers) for an existing CONFIG; its identity, "
                   "destination and peers are kept, so its peers go on trusting it.")
@_json_option
@client_options
def init_cmd(config_path: str, destination: str | None, verbs: str, force: bool, renew: bool, as_json: bool,
             conn: Any) -> None:
    """Write a node config that reaches the hub's NATS server, with a fresh identity.

    Asks the hub you are logged in to (`tether login`) where its NATS server is
    and for NATS credentials of your own, then writes CONFIG (0600) with those
    `server:` lines, `credentials:` (CONFIG.creds, 0600), this --destination and
    a new identity, and no [ Peers ] yet. Prints the line other nodes need to
    trust this one (`tether signal peer add ...`). When the credentials expire
    (30 days by default), `--renew` replaces only the `server:` and
    `credentials:` lines: the identity, and so every peer's trust, stays.
    """
    import json
    import os

    from tether.files import write_private
    from tether.signal import config as config_mod
    from tether.signal.core import SigningKey, b58encode

    if renew:
        if force or destination is not None:
            raise TetherError("--renew keeps the config's identity and destination: give neither --force nor "
                              "--destination with it", EXIT_USAGE)
        if not os.path.exists(config_path):
            raise TetherError(f"{config_path} does not exist: nothing to renew", EXIT_NO,
                              "write it first: tether signal init -c FILE --destination NAME")
        old = config_mod.load_config(config_path)  # a ConfigError: exit 2, and nothing is asked or written
        destination = old.destination
    else:
        if destination is None:
            raise TetherError("--destination NAME is required (or --renew, for new credentials in an existing config)",
                              EXIT_USAGE)
        if any(c in destination for c in " ,\t#[]") or not destination:
            raise TetherError(f"--destination must be one name without spaces or commas, got {destination!r}",
                              EXIT_USAGE)
        if os.path.exists(config_path) and not force:
            raise TetherError(f"{config_path} already exists; not overwriting a node's identity", EXIT_NO,
                              "--renew fetches new credentials and keeps it; --force replaces it, or -c another file")
    verb_list = _verb_list(verbs, "--verbs") or ["ping"]
    got = _nats_credentials(conn.client)
    servers = [str(u) for u in got.get("servers") or []]
    if not servers:
        raise TetherError("the hub named no NATS server", EXIT_RUNTIME, "is signal_nats off on the hub?")
    creds_path = None
    if got.get("creds"):
        creds_path = os.path.abspath(config_path + ".creds")
        write_private(creds_path, str(got["creds"]))
    if renew:
        with open(config_path, encoding="utf-8") as fh:
            text = config_mod.replace_connection(fh.read(), servers, creds_path)  # no creds: the site's own stay
        public_b58 = b58encode(old.default_identity or b"")
    else:
        key = SigningKey.generate()
        public_b58 = key.public_b58
        lines = [f"# written by `tether signal init` from {conn.client.hub_url}"]
        lines += [f"server: {u}" for u in servers]
        # no creds: a cluster of the site's own, whose credentials come from there (remaphore needs the line)
        lines.append(f"credentials: {creds_path or config_mod.PLACEHOLDER_CREDS}")
        text = "\n".join([*lines, "subject: remaphore", f"default_identity: {key.public_b58}",
                          f"destination: {destination}", "allow_skew: 5s", "", "[ Identities ]",
                          f"{key.public_b58} {key.private_b58} [{', '.join(verb_list)}]", "", "[ Peers ]", ""])
    config_mod.parse_config(text, config_path)  # what we write loads
    write_private(config_path, text)
    peer = f"{destination} {public_b58}"
    if as_json:
        click.echo(json.dumps({"config": config_path, "credentials": creds_path, "servers": servers,
                               "destination": destination, "public_key": public_b58,
                               "expires": got.get("expires"), "renewed": renew}, indent=2))
        return
    if renew:
        click.echo(f"renewed {config_path}" + (f" and {creds_path}" if creds_path else "") +
                   f": identity {public_b58} kept, so its peers still trust it")
        return
    click.echo(f"wrote {config_path}" + (f" and {creds_path}" if creds_path else ""))
    click.echo("other nodes trust this one with:")
    click.echo(f"  tether signal peer add -c THEIR.conf {peer}")


@signal.group("peer", context_settings=_SUB_CONTEXT, epilog="""\b
Examples:
  tether signal peer add -c downloader.conf com.example.uploader 6LQevHKUzX7V...
  tether signal peer add -c uploader.conf --from downloader.conf
""")
def peer_group() -> None:
    """Change the [ Peers ] of a config: `tether signal peer add`."""


@peer_group.command(
    "add",
    context_settings=_SUB_CONTEXT,
    epilog="""\b
Examples:
  tether signal peer add -c downloader.conf com.example.uploader 6LQevHKUzX7V...   # [ping]
  tether signal peer add -c downloader.conf --from uploader.conf --verbs '*'
""",
)
@_config_option
@click.option("--from", "other", metavar="CONFIG", type=click.Path(dir_okay=False, exists=True),
              help="Take the peer's destination and public key from its own config file (same machine).")
@click.option("--verbs", "verbs", metavar="VERB[,VERB...]", default="ping", show_default=True,
              help="Verbs this peer may send here (`*` for all; empty: it may only answer requests).")
@click.argument("peer", nargs=-1, metavar="[DESTINATION PUBKEY]")
def peer_add_cmd(config_path: str, other: str | None, verbs: str, peer: tuple[str, ...]) -> None:
    """Trust a node: add `DESTINATION PUBKEY [VERBS]` to the config's [ Peers ].

    The peer is named by DESTINATION and PUBKEY (what `tether signal init`
    printed on that node) or by --from ITS_CONFIG. The file is rewritten
    atomically and only if it still loads; a key already listed is refused.
    """
    from tether.files import write_private
    from tether.signal import config as config_mod
    from tether.signal.core import KeyError_, b58encode, parse_public_key

    if other is not None and peer:
        raise TetherError("give DESTINATION PUBKEY or --from CONFIG, not both", EXIT_USAGE)
    if other is not None:
        theirs = config_mod.load_config(other)
        dest, pub = theirs.destination, theirs.default_identity or b""
    elif len(peer) == 2:
        dest = peer[0]
        try:
            pub = parse_public_key(peer[1])
        except KeyError_ as exc:
            raise TetherError(f"PUBKEY: {exc}", EXIT_USAGE) from None
    else:
        raise TetherError("name the peer: DESTINATION PUBKEY, or --from ITS_CONFIG", EXIT_USAGE)
    if not dest or any(c in dest for c in " ,\t#[]"):
        raise TetherError(f"the destination must be one name without spaces or commas, got {dest!r}", EXIT_USAGE)
    verb_list = _verb_list(verbs, "--verbs")
    cfg = config_mod.load_config(config_path)
    if any(p.public == pub for p in cfg.peers):
        raise TetherError(f"{b58encode(pub)} is already a peer in {config_path}", EXIT_NO,
                          "edit its line to change its verbs")
    with open(config_path, encoding="utf-8") as fh:
        text = fh.read()
    line = f"{dest} {b58encode(pub)} {_verbs_text(verb_list)}"
    text = config_mod.append_peer(text, line)
    config_mod.parse_config(text, config_path)  # still loads: then replace the file
    write_private(config_path, text)
    click.echo(f"{config_path}: trusts {line}")


# -- the remaphore console script -----------------------------------------------------

#: ``remaphore``: the same command with remaphore's interface only (no subcommands).
remaphore = copy.copy(signal)
remaphore.commands = {}
remaphore.subcommands_enabled = False  # type: ignore[attr-defined]
remaphore.epilog = "\n\n".join(
    block for block in (signal.epilog or "").split("\n\n") if "subcommand" not in block.lower() and "spelled out" not in block.lower()
).replace("tether signal", "remaphore")


def remaphore_main() -> None:
    """The ``remaphore`` console script: the same command under remaphore's name."""
    remaphore.main(prog_name="remaphore")


__all__ = ["SUBCOMMANDS", "SignalCommand", "remaphore", "remaphore_main", "signal"]
