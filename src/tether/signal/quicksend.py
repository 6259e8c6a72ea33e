"""``tether signal -s`` (and ``remaphore -s``) on one socket, without click, asyncio or nats-py.

A send is small: read the config (:func:`tether.signal.config.load_config`), sign one
envelope (:func:`tether.signal.wire.encode`, which core re-exports, so the bytes on the wire
are the same as the full path's), and speak NATS's text protocol over one TCP connection: the
server's ``INFO``, our ``CONNECT`` (with the creds' JWT and the server's nonce signed
by the creds' seed, an nkey seed's signature, a token or a user and password), then
``PING`` and its ``PONG`` (the server took us), ``PUB`` and one more ``PING``/``PONG``
(the server has the message). nats-py with asyncio is most of the full path's start-up;
the rest of what a send needs is chosen for its import cost too: signatures (the
envelope's, the nonce's) by libsodium through :mod:`tether.signal.ed25519`, the nkey seed
read by :mod:`tether.signal.nkey`, base58 and the envelope by :mod:`tether.signal.wire`
(``benchmarks/ed25519_start.py`` and ``benchmarks/cli_start.py`` measure them).

Only the plain case is taken here: ``-s`` with ``-c``, ``-v``, ``-D``, ``-p``, ``-u``,
``-S`` and a MESSAGE, a plain ``nats://`` server, a config that loads without
warnings. Anything else, and any failure before the message was handed to the server
(no server reachable, credentials refused, TLS required), returns None having sent
nothing: the click command then runs as before and says what is wrong in its words.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

#: The flags of `tether signal` (name -> boolean?), as its click command defines them
#: (tests/signal/test_quick_send.py holds the two equal).
SIGNAL_FLAGS = {
    "s": True, "r": True, "D": False, "d": True, "p": False, "u": False, "v": False, "o": True, "t": False,
    "S": False, "c": False, "C": True, "max-handlers": False, "durable": True, "verbose": True,
}  # fmt: skip
#: the ones a quick send takes
SEND_FLAGS = frozenset({"s", "c", "v", "D", "p", "u", "S"})
DEFAULT_CONFIG = "/etc/remaphore/remaphore.conf"  # tether.signal.cli.DEFAULT_CONFIG (held equal by a test)
ENV_CONFIG = "TETHER_SIGNAL_CONFIG"
SUBCOMMANDS = ("send", "wait", "request", "keygen", "peers", "init", "peer")  # only first: see tether.signal.cli
TIMEOUT = 2.0  # seconds for each step: nats-py's connect_timeout in the full path
MAX_LINE = 1 << 16


class _Declined(Exception):
    """Nothing was sent: leave the command to the full path."""


class _Broken(Exception):
    """The connection failed after the message was handed over."""


def quick(argv: Sequence[str], prog: str = "tether", environ: Mapping[str, str] | None = None) -> int | None:
    """Send ``tether signal ARGV`` (``prog`` "remaphore": ``remaphore ARGV``) here, or
    return None having sent nothing."""
    from tether.signal import goflags

    environ = os.environ if environ is None else environ
    if prog == "tether" and argv[:1] and argv[0] in SUBCOMMANDS:
        return None
    try:
        parsed = goflags.parse(list(argv), SIGNAL_FLAGS)
    except goflags.FlagError:
        return None
    values = parsed.values()
    if parsed.help or values.get("s") is not True or set(values) - SEND_FLAGS:
        return None
    config_path = str(values["c"]) if "c" in values else environ.get(ENV_CONFIG) or DEFAULT_CONFIG
    try:
        raw, subject, cfg = _envelope(config_path, values, parsed.args)
        _publish(cfg, subject, raw)
    except _Declined:
        return None
    except _Broken as exc:
        servers = ", ".join(cfg.servers)
        sys.stderr.write(f"{prog}: error: NATS at {servers} broke off after the message was sent: {exc}\n"
                         f"{prog}: hint: the message may or may not have been delivered; check the server\n")
        return 3
    return 0


def _envelope(config_path: str, values: Mapping[str, Any], args: Sequence[str]) -> tuple[bytes, str, Any]:
    """The signed message, its subject and the config; _Declined for anything unusual."""
    import time

    from tether.signal import config as config_mod
    from tether.signal import wire  # (core's sending half: core itself imports much more)

    verbs = [v.strip() for v in str(values.get("v", "")).split(",") if v.strip()]
    verb = verbs[0] if verbs else wire.DEFAULT_VERB
    dest = str(values.get("D", "")) or wire.DEFAULT_DESTINATION_PATTERN
    try:
        sender = wire.parse_public_key(str(values["p"])) if values.get("p") else None
        cfg = config_mod.load_config(config_path)
    except (wire.KeyError_, config_mod.ConfigError):
        raise _Declined() from None
    if cfg.warnings or cfg.durable or not cfg.servers or cfg.tls_ca or cfg.tls_cert:
        raise _Declined()
    ident = cfg.identity(sender, verb)
    if ident is None or "," in dest or "," in verb:
        raise _Declined()
    try:
        raw = wire.encode(ident.key, destination=dest, verb=verb, payload=" ".join(args), time_ns=time.time_ns(),
                          uuid=wire.make_uuid(str(values.get("u", "")) or None, os.urandom), request=False)
    except wire.EnvelopeError:
        raise _Declined() from None
    return raw, wire.broadcast_subject(cfg.subject, str(values.get("S", "")) or None), cfg


def _publish(cfg: Any, subject: str, raw: bytes) -> None:
    """Hand ``raw`` to the first server that takes us; _Declined if none did."""
    for url in cfg.servers:
        address = _address(url)
        try:
            conn = _Conn(address)
        except OSError:
            continue
        with conn:
            try:
                conn.connect(cfg, len(raw))
            except (OSError, ValueError, _Declined):
                continue
            try:
                conn.publish(subject, raw)
            except (OSError, ValueError, _Declined) as exc:
                raise _Broken(str(exc) or type(exc).__name__) from None
            return
    raise _Declined()


def _address(url: str) -> tuple[str, int]:
    """host and port of a ``nats://host:port`` URL (or ``host:port``); _Declined for
    anything else (tls://, credentials in the URL)."""
    rest = url.strip()
    if "://" in rest:
        scheme, _, rest = rest.partition("://")
        if scheme != "nats":
            raise _Declined()
    rest = rest.rstrip("/")
    if "@" in rest or "/" in rest:
        raise _Declined()
    if rest.startswith("["):  # [v6]:port
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host or (port and not port.isdigit()):
        raise _Declined()
    return host, int(port or 4222)


class _Conn:
    """One client connection speaking NATS's text protocol, blocking, each step within TIMEOUT."""

    def __init__(self, address: tuple[str, int]):
        import socket

        host, port = address
        try:  # an ASCII name as bytes: a str would have socket import the idna codec to encode it
            address = (host.encode("ascii"), port)
        except UnicodeEncodeError:
            pass
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.reader = self.sock.makefile("rb")

    def __enter__(self) -> _Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()
        self.sock.close()

    def _line(self) -> bytes:
        line = self.reader.readline(MAX_LINE)
        if not line.endswith(b"\r\n"):
            raise ValueError("the server closed the connection" if not line else "a line longer than expected")
        return line[:-2]

    def _until_pong(self) -> None:
        """Read to our PING's PONG; a PING of the server's is answered, INFO and +OK skipped."""
        while True:
            line = self._line()
            op = line.split(b" ", 1)[0].upper()
            if op == b"PONG":
                return
            if op == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif op == b"-ERR":
                raise _Declined()
            elif op not in (b"INFO", b"+OK"):
                raise ValueError(f"unexpected {line[:40]!r}")

    def connect(self, cfg: Any, size: int) -> None:
        """INFO, then CONNECT with our credentials and PING: returns once the server took us."""
        import json

        from tether import __version__

        line = self._line()
        if not line.startswith(b"INFO "):
            raise ValueError("not a NATS server")
        info = json.loads(line[5:])
        if info.get("tls_required") or size > int(info.get("max_payload", 1 << 20)):
            raise _Declined()
        options: dict[str, Any] = {"verbose": False, "pedantic": False, "tls_required": False, "name": "tether-signal",
                                   "lang": "python3", "version": __version__, "protocol": 1, "headers": True,
                                   "no_responders": True}  # fmt: skip
        options.update(_credentials(cfg, str(info.get("nonce", ""))))
        self.sock.sendall(b"CONNECT " + json.dumps(options).encode() + b"\r\nPING\r\n")
        self._until_pong()

    def publish(self, subject: str, raw: bytes) -> None:
        """PUB and PING: returns once the server has the message."""
        self.sock.sendall(b"PUB %s %d\r\n%s\r\nPING\r\n" % (subject.encode(), len(raw), raw))
        self._until_pong()


def _credentials(cfg: Any, nonce: str) -> dict[str, str]:
    """The CONNECT fields that say who we are, as nats-py sends them for the same config."""
    fields: dict[str, str] = {}
    seed = None
    if cfg.credentials:
        jwt, seed = _read_creds(cfg.credentials)
        fields["jwt"] = jwt
    elif cfg.nkey_seed:
        with open(cfg.nkey_seed, "rb") as fh:
            seed = fh.read().strip()
    if seed is not None:
        import base64

        from tether.signal import ed25519, nkey

        try:
            role, raw_seed = nkey.decode_seed(seed)
        except nkey.NkeyError:
            raise _Declined() from None  # the full path explains
        secret = ed25519.secret_key(raw_seed)
        if not cfg.credentials:
            fields["nkey"] = nkey.encode_public(role, secret[32:])
        if nonce:
            fields["sig"] = base64.urlsafe_b64encode(ed25519.sign(secret, nonce.encode())).rstrip(b"=").decode()
    if cfg.token:
        fields["auth_token"] = cfg.token
    if cfg.user:
        fields["user"], fields["pass"] = cfg.user, cfg.password or ""
    return fields


def _read_creds(path: str) -> tuple[str, bytes]:
    """The user JWT and nkey seed of a ``.creds`` file (the line after each BEGIN marker)."""
    with open(path, "rb") as fh:
        lines = [ln.strip() for ln in fh.read().splitlines()]
    found: dict[bytes, bytes] = {}
    for i, ln in enumerate(lines):
        for marker in (b"BEGIN NATS USER JWT", b"BEGIN USER NKEY SEED"):
            if marker in ln:
                found[marker] = next((x for x in lines[i + 1 :] if x), b"")
    jwt, seed = found.get(b"BEGIN NATS USER JWT"), found.get(b"BEGIN USER NKEY SEED")
    if not jwt or not seed:
        raise _Declined()  # the full path explains
    return jwt.decode(), seed


def remaphore_main() -> None:
    """The ``remaphore`` console script: a plain send here, anything else the click command
    (:func:`tether.signal.cli.remaphore_main`)."""
    if "-s" in sys.argv[1:]:
        code = quick(sys.argv[1:], prog="remaphore")
        if code is not None:
            sys.exit(code)
    from tether.signal.cli import remaphore_main as full

    full()


__all__ = ["SIGNAL_FLAGS", "quick", "remaphore_main"]
