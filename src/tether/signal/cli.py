"""``tether signal`` (and the ``remaphore`` console script): a remote semaphore over NATS.

Flags, output and exit codes are remaphore's, so scripts written for
remaphore run unchanged. Heavy imports (nats-py, asyncio machinery) happen
only once a command runs, never for ``--help``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from tether.cli.common import EXIT_USAGE, TetherError

DEFAULT_CONFIG = "/etc/remaphore/remaphore.conf"


class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from tether.signal.core import parse_duration

        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _prog() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().info_name if ctx is not None and ctx.find_root().info_name else "tether"


def _log(message: str) -> None:
    click.echo(f"{_prog()}: {message}", err=True)


@click.command(
    "signal",
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
Exit codes: 0 received (or sent), 1 nothing before the timeout, 2 usage or
config error, 3 runtime error (no known receivers, no responders, NATS down),
4 NATS refused our credentials.
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
@click.option("-t", "timeout", type=_Duration(), default=None, help="Timeout, e.g. 30s or 1h2m3s4ms (default: none).")
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
    from tether.signal import config as config_mod
    from tether.signal import core

    if print_config:
        click.echo(config_mod.example_config())
        return
    if send_only and request_reply:
        raise TetherError("-r and -s are mutually exclusive", EXIT_USAGE)
    if no_dest and dest:
        raise TetherError("-d and -D are mutually exclusive", EXIT_USAGE)
    sender = None
    if pubkey:
        try:
            sender = core.parse_public_key(pubkey)
        except core.KeyError_ as exc:
            raise TetherError(f"-p: {exc}", EXIT_USAGE) from None
    verb_list = [v.strip() for v in verbs.split(",") if v.strip()]
    try:
        cfg = config_mod.load_config(config_path)
    except config_mod.ConfigError as exc:
        raise TetherError(str(exc), EXIT_USAGE, exc.hint) from None
    for w in cfg.warnings:
        _log(w)
    if max_handlers is not None:
        cfg.max_handlers = max_handlers
    if durable:
        cfg.durable = True
    timeout_s = timeout / 1e9 if timeout else None
    code = _run(cfg, send_only, request_reply, dest, no_dest, sender, uuid, verb_list, once, timeout_s, subject,
                verbose, list(args))
    sys.exit(code)


def _run(cfg: Any, send_only: bool, request_reply: bool, dest: str, no_dest: bool, sender: bytes | None, uuid: str,
         verb_list: list[str], once: bool, timeout_s: float | None, subject: str, verbose: bool, args: list[str]) -> int:
    import asyncio

    from tether.signal import core, transport

    async def main() -> int:
        if send_only or request_reply:
            verb = verb_list[0] if verb_list else core.DEFAULT_VERB
            payload = " ".join(args) or core.DEFAULT_VERB
            for name, value in (("destination", dest), ("verb", verb)):
                if "," in value:
                    raise TetherError(f"the {name} may not contain a comma: {value!r}", EXIT_USAGE)
            if send_only:
                await transport.send(cfg, subject=subject, public=sender, dest=dest, verb=verb, payload=payload, uuid=uuid or None,
                                     durable=cfg.durable)
                return 0

            def out(block: str) -> None:
                sys.stdout.write(block)
                sys.stdout.flush()

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
                                      timeout=timeout_s, log=_log, verbose=verbose, durable=cfg.durable)

    async def guarded() -> int:
        import signal as signals

        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        for sig in (signals.SIGTERM, signals.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await main()
        except asyncio.CancelledError:
            return 130

    try:
        return asyncio.run(guarded())
    except transport.SignalError as exc:
        raise TetherError(str(exc), exc.exit_code, exc.hint) from None


def remaphore_main() -> None:
    """The ``remaphore`` console script: the same command under remaphore's name."""
    signal.main(prog_name="remaphore")


__all__ = ["signal", "remaphore_main"]
