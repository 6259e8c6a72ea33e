"""NATS transport for signal: a thin asyncio adapter around :mod:`tether.signal.core`.

Every decision (is this message trusted, is it for us, what is printed) is the
core's; this module only connects, publishes, subscribes, runs scripts and
keeps time. Structured concurrency: every task and process started here is
finished or killed before the public coroutine returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nats
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from tether.signal import core
from tether.signal.config import SignalConfig

__all__ = ["SignalError", "NoReceivers", "CredentialsRefused", "connect", "connect_retrying", "send", "request", "listen", "MAX_OUTPUT"]

#: a script's combined output is cut here so the reply fits in a NATS payload
MAX_OUTPUT = 512 * 1024
#: handlers waiting for a slot beyond this are dropped (with a log line)
MAX_QUEUED = 10_000

Log = Callable[[str], None]


class SignalError(Exception):
    """A runtime failure; ``exit_code`` follows the tether conventions."""

    def __init__(self, message: str, exit_code: int = 3, hint: str | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.hint = hint


class NoReceivers(SignalError):
    pass


def _tls_context(cfg: SignalConfig) -> ssl.SSLContext | None:
    if not (cfg.tls_ca or cfg.tls_cert) and not any(s.startswith("tls://") for s in cfg.servers):
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca) if cfg.tls_ca else ssl.create_default_context()
    if cfg.tls_cert:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


#: what nats-server (or its TLS layer, for a client certificate) says when it refuses who we are
_REFUSED = ("authorization", "authentication", "user credentials", "nkey", "certificate required", "bad certificate",
            "certificate unknown", "unknown ca", "certificate revoked", "certificate expired")


class CredentialsRefused(SignalError):
    """NATS refused our credentials. Exit codes as remaphore's binary: 1 for a receiver (it reports nothing
    received), 3 for a sender or requester (its publish fails on the closed connection)."""


async def _connect_once(cfg: SignalConfig, name: str, refused_code: int) -> NATS:
    opts: dict = dict(
        servers=cfg.servers,
        name=name,
        connect_timeout=2,
        reconnect_time_wait=0.2,
        max_reconnect_attempts=2,
        ping_interval=3,
        max_outstanding_pings=3,
        allow_reconnect=True,
    )
    if cfg.credentials:
        opts["user_credentials"] = cfg.credentials
    if cfg.nkey_seed:
        opts["nkeys_seed"] = cfg.nkey_seed
    if cfg.token:
        opts["token"] = cfg.token
    if cfg.user:
        opts["user"] = cfg.user
        opts["password"] = cfg.password
    tls = _tls_context(cfg)
    if tls is not None:
        opts["tls"] = tls
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc) or type(exc).__name__)

    opts["error_cb"] = on_error
    try:
        return await nats.connect(**opts)
    except Exception as exc:  # nats-py raises a zoo of types here
        detail = "; ".join(dict.fromkeys(errors)) or str(exc) or type(exc).__name__
        where = f"NATS at {', '.join(cfg.servers)}"
        if any(w in detail.lower() for w in _REFUSED):
            raise CredentialsRefused(
                f"{where} refused our credentials: {detail}", exit_code=refused_code,
                hint="check `credentials` (the .creds file), `nkey_seed`, `token`, `user`/`password` or the TLS "
                     "client certificate in the config, and that the server still knows that user") from None
        raise SignalError(f"cannot connect to {where}: {detail}", exit_code=3,
                          hint="is nats-server running and reachable?") from None


async def connect(cfg: SignalConfig, *, name: str = "tether-signal", refused_code: int = 3) -> NATS:
    """Connect to the first reachable ``server``; fail within a few seconds if none is.

    ``refused_code``: the exit code when the server refuses our credentials (3 when sending, as remaphore).
    """
    nc = await _connect_once(cfg, name, refused_code)
    # Once connected, ride out server restarts for as long as we run.
    nc.options["max_reconnect_attempts"] = -1
    return nc


async def connect_retrying(cfg: SignalConfig, until: float, log: Log, *, name: str = "tether-signal") -> NATS | None:
    """Connect, retrying an unreachable server until ``until`` (``time.monotonic()``; ``inf``: for ever).

    That is what remaphore's receivers do. None when the deadline passed first;
    refused credentials are never retried.
    """
    pause, told = 0.2, False
    while True:
        left = until - time.monotonic()
        try:
            # a black-holed address must not hold us past the deadline
            nc = await asyncio.wait_for(connect(cfg, name=name, refused_code=1), None if left == float("inf") else max(left, 0.1))
        except CredentialsRefused:
            raise
        except (SignalError, TimeoutError) as exc:
            if not told:
                why = str(exc) or f"cannot connect to NATS at {', '.join(cfg.servers)}: no answer"
                log(f"{why}; retrying " + ("until the timeout (-t)" if until != float("inf") else "(no -t: for ever)"))
                told = True
            left = until - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 2.0)
            continue
        if told:
            log("connected to NATS")
        return nc


async def _close(nc: NATS) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2)


def _signer(cfg: SignalConfig, public: bytes | None, verb: str | None) -> core.SigningKey:
    ident = cfg.identity(public, verb)
    if ident is None:
        who = core.b58encode(public) if public else "the default identity"
        raise SignalError(f"no private key with permission for verb {verb!r}: {who}", exit_code=3,
                          hint="add the verb to that identity's [verbs] in [ Identities ], or pick another with -p")
    return ident.key


def _encode(cfg: SignalConfig, *, public: bytes | None, dest: str, verb: str, payload: str, uuid: str | None, request: bool) -> bytes:
    key = _signer(cfg, public, verb)
    try:
        return core.encode(key, destination=dest, verb=verb, payload=payload, time_ns=time.time_ns(),
                           uuid=core.make_uuid(uuid), request=request)
    except core.EnvelopeError as exc:
        raise SignalError(str(exc), exit_code=2) from None


def stream_name(subject: str) -> str:
    """The JetStream stream that keeps one broadcast subject for durable mode."""
    return "SIGNAL_" + re.sub(r"[^A-Za-z0-9_-]", "_", subject)


def consumer_name(cfg: SignalConfig) -> str:
    """One durable consumer per node: its destination plus its key, so two configs never share one."""
    key = hashlib.sha256(cfg.default_identity or b"").hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "_", cfg.destination)[:80] + "_" + key


async def ensure_stream(nc: NATS, cfg: SignalConfig, subj: str):
    from nats.js.api import StreamConfig

    js = nc.jetstream(timeout=5)
    age = cfg.durable_retention_ns / 1e9
    conf = StreamConfig(name=stream_name(subj), subjects=[subj], max_age=age, duplicate_window=min(age, 3600.0))
    try:
        try:
            await js.add_stream(conf)
        except nats.js.errors.BadRequestError:
            await js.update_stream(conf)
    except Exception as exc:
        raise SignalError(f"cannot set up the JetStream stream for durable mode: {exc}",
                          hint="durable mode needs a nats-server with JetStream enabled (-js)") from None
    return js


async def send(cfg: SignalConfig, *, subject: str | None, public: bytes | None, dest: str, verb: str, payload: str,
               uuid: str | None, durable: bool = False) -> None:
    """Send and forget (``-s``). Durable: also stored in a JetStream stream, deduplicated by digest."""
    raw = _encode(cfg, public=public, dest=dest or core.DEFAULT_DESTINATION_PATTERN, verb=verb, payload=payload,
                  uuid=uuid, request=False)
    subj = core.broadcast_subject(cfg.subject, subject)
    nc = await connect(cfg)
    try:
        if durable:
            js = await ensure_stream(nc, cfg, subj)
            try:
                await js.publish(subj, raw, headers={"Nats-Msg-Id": hashlib.sha256(raw).hexdigest()})
            except Exception as exc:
                raise SignalError(f"JetStream did not store the message: {exc}") from None
        else:
            await nc.publish(subj, raw)
            await nc.flush(timeout=5)
    finally:
        await _close(nc)


async def request(cfg: SignalConfig, *, subject: str | None, public: bytes | None, dest: str, verb: str, payload: str,
                  uuid: str | None, timeout: float | None, out: Callable[[str], None], log: Log) -> int:
    """Request/response (``-r``): 0 when at least one reply came, else 1."""
    dest = dest or core.DEFAULT_DESTINATION_PATTERN
    collector = core.ResponseCollector(cfg.peers, dest, cfg.allow_skew_ns, core.new_separator())
    if collector.done:
        raise NoReceivers(f"no known receivers: no [ Peers ] destination matches {dest!r}", exit_code=3)
    raw = _encode(cfg, public=public, dest=dest, verb=verb, payload=payload, uuid=uuid, request=True)
    finished = asyncio.Event()
    no_responders = False

    async def on_reply(msg: Msg) -> None:
        got = collector.reply(msg.data, time.time_ns())
        if isinstance(got, str):
            out(got)
        else:
            log(f"reply {got}")
        if collector.done:
            finished.set()

    async def on_status(msg: Msg) -> None:
        nonlocal no_responders
        if msg.headers and msg.headers.get("Status") == "503":
            no_responders = True
            finished.set()

    nc = await connect(cfg)
    try:
        await nc.subscribe(core.reply_subject(cfg.subject, raw), cb=on_reply)
        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=on_status, max_msgs=1)
        await nc.publish(core.broadcast_subject(cfg.subject, subject), raw, reply=inbox)
        await nc.flush(timeout=5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout)
    finally:
        await _close(nc)
    if no_responders and not collector.received:
        # remaphore waits out -t and exits 1 (nothing received): the same code, said at once
        raise SignalError("no responders: nothing is listening on "
                          f"{core.broadcast_subject(cfg.subject, subject)}", exit_code=1,
                          hint="start a receiver there first, or check -S and the config's subject")
    return 0 if collector.received else 1


def _seconds(timeout: float | None) -> str:
    return core.format_duration(int((timeout or 0) * 1e9))


@dataclass
class _Run:
    exit_code: int | None
    output: str


async def _run_script(argv: Sequence[str], env: dict[str, str], log: Log) -> _Run:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REMAPHORE_")}
    full_env.update(env)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=full_env, start_new_session=True,
        )
    except OSError as exc:
        log(f"cannot run {argv[0]}: {exc.strerror or exc}")
        return _Run(-1, "")
    try:
        chunks: list[bytes] = []
        size = 0
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            if size < MAX_OUTPUT:
                chunks.append(chunk[: MAX_OUTPUT - size])
            size += len(chunk)
        rc = await proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    if size > MAX_OUTPUT:
        log(f"{argv[0]}: output cut to {MAX_OUTPUT} bytes (was {size})")
    code = rc if rc >= 0 else -1  # killed by a signal: -1, as remaphore reports it
    log(f"ran {argv[0]}: exit {code}")
    return _Run(code, b"".join(chunks).decode("utf-8", "surrogateescape"))


async def listen(cfg: SignalConfig, receiver: core.Receiver, *, subject: str | None, script: Sequence[str],
                 once: bool, timeout: float | None, log: Log, verbose: bool = False,
                 ready: Callable[[], None] | None = None, durable: bool = False,
                 out: Callable[[str], None] | None = None) -> int:
    """Receive (the default mode): 0 when a message was handled, 1 when none came before the timeout.

    ``out`` gets each script's combined output, whole (outputs never interleave).
    """
    reply_key = _signer(cfg, None, None)
    sem = asyncio.Semaphore(cfg.max_handlers)
    tasks: set[asyncio.Task] = set()
    handled = asyncio.Event()
    state = {"received": 0, "claimed": False}
    subs: list = []
    # as remaphore: the timeout runs from the start, and an unreachable server is retried until then
    deadline = time.monotonic() + timeout if timeout is not None else float("inf")
    maybe = await connect_retrying(cfg, deadline, log)
    if maybe is None:
        log(f"timed out after {_seconds(timeout)} without reaching NATS: nothing received")
        return 1
    nc = maybe

    async def handle(acc: core.Accepted, msg: Msg) -> None:
        env = acc.envelope
        async with sem:
            if script:
                run = await _run_script(core.script_argv(script, env), core.script_env(env, acc.destmatch), log)
                if out is not None and run.output:
                    out(run.output if run.output.endswith("\n") else run.output + "\n")
            else:
                run = _Run(None, "")
            if env.request:
                raw = core.encode(reply_key, destination="", verb=core.REPLY_VERB,
                                  payload=core.reply_payload(run.exit_code, run.output), time_ns=time.time_ns(),
                                  uuid=core.make_uuid(None), request=False)
                try:
                    await nc.publish(core.reply_subject(cfg.subject, env.raw), raw)
                    await nc.flush(timeout=5)
                except Exception as exc:
                    log(f"reply failed: {exc}")
            if durable:
                with contextlib.suppress(Exception):
                    await msg.ack()
        if once:
            handled.set()

    async def consumed(msg: Msg) -> None:
        if durable:  # settled for this node: never delivered again
            with contextlib.suppress(Exception):
                await msg.ack()

    async def on_msg(msg: Msg) -> None:
        if once and state["claimed"]:
            if durable:  # handed back at once, so the next run gets it
                with contextlib.suppress(Exception):
                    await msg.nak()
            return
        got = receiver.receive(msg.data, time.time_ns())
        if isinstance(got, core.Refused):
            log(f"message {got}")
            await consumed(msg)
            return
        if isinstance(got, core.Ignored):
            if verbose:
                log(f"message {got}")
            await consumed(msg)
            return
        if len(tasks) >= MAX_QUEUED:
            log("too many messages waiting for a handler slot: dropped one")
            return
        state["claimed"] = True
        state["received"] += 1
        if once and durable and subs:
            with contextlib.suppress(Exception):
                await subs[0].unsubscribe()  # stop deliveries; the consumer (and its place) stays
        env = got.envelope
        log(f"incoming {env.verb!r} from {got.peer.destination} ({env.sender_b58})")
        task = asyncio.get_running_loop().create_task(handle(got, msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        sub_name = core.broadcast_subject(cfg.subject, subject)
        if durable:
            js = await ensure_stream(nc, cfg, sub_name)
            from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

            jsub = await js.subscribe(sub_name, cb=on_msg, durable=consumer_name(cfg), manual_ack=True,
                               stream=stream_name(sub_name),
                               config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30,
                                                     deliver_policy=DeliverPolicy.ALL))
            subs.append(jsub)
        else:
            await nc.subscribe(sub_name, cb=on_msg, pending_msgs_limit=65536)
        await nc.flush(timeout=5)
        log(f"ready, listening on {sub_name}")
        if ready is not None:
            ready()
        left = None if timeout is None else max(deadline - time.monotonic(), 0.0)
        with contextlib.suppress(TimeoutError):
            if once:
                await asyncio.wait_for(handled.wait(), left)
            elif left is not None:
                await asyncio.sleep(left)
            else:
                await asyncio.Event().wait()
        if not state["received"]:
            log(f"timed out after {_seconds(timeout)}: no matching message received")
    finally:
        for t in list(tasks):
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await _close(nc)
    return 0 if state["received"] else 1
