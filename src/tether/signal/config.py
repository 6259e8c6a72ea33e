"""remaphore's config file, parsed as-is, plus the NATS options real clusters need.

Format (``/etc/remaphore/remaphore.conf`` by default)::

    server: nats://natsserver:4222        # repeatable, for failover
    credentials: /path/to/credentials/file  # a NATS creds file; may be left out
    subject: remaphore
    default_identity: <base58 public key>
    destination: com.crypto.us.left
    allow_skew: 5s                         # Go duration: 5s, 1h2m3s4ms

    [ Identities ]
    <pubkey> <privkey> [ping, pong]        # [*] means every verb

    [ Peers ]
    com.crypto.us.right <pubkey> [ping]

Keys tether adds (remaphore ignores unknown keys, so a shared file still
works there): ``token``, ``nkey_seed``, ``user``, ``password``, ``tls_ca``, ``tls_cert``,
``tls_key``, ``max_handlers``, ``durable`` and ``durable_retention``.

:func:`parse_config` is pure (text in, :class:`SignalConfig` or
:class:`ConfigError` with a line number out); :func:`load_config` reads the
file and checks that files it names exist.
"""

from __future__ import annotations

import os
from collections import namedtuple

from tether.problems import ConfigError  # re-exported: what reading a config raises, with path and line

# tether.signal.wire, not core: a one-shot send reads its config with this module, and
# wire is the half of the protocol that imports little (no dataclasses; see there)
from tether.signal.wire import (
    DEFAULT_SUBJECT,
    KeyError_,
    Peer,
    Peers,
    SigningKey,
    format_duration,
    parse_duration,
    parse_public_key,
)

__all__ = ["DEFAULT_PATH", "ConfigError", "Identity", "SignalConfig", "parse_config", "load_config", "example_config",
           "append_peer"]

DEFAULT_PATH = "/etc/remaphore/remaphore.conf"
DEFAULT_SKEW_NS = 3_000_000_000  # remaphore's value when allow_skew is absent
DEFAULT_MAX_HANDLERS = 16
#: remaphore's example placeholder; treated as "no credentials".
PLACEHOLDER_CREDS = "/path/to/credentials/file"

KNOWN_KEYS = {
    "server",
    "credentials",
    "subject",
    "default_identity",
    "destination",
    "allow_skew",
    # tether's additions
    "token",
    "nkey_seed",
    "user",
    "password",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "max_handlers",
    "durable",
    "durable_retention",
}


class Identity(namedtuple("Identity", ["key", "verbs"])):
    """An ``[ Identities ]`` line: a :class:`SigningKey` and the verbs it may send (a frozenset of str)."""

    __slots__ = ()

    def allows(self, verb: str | None) -> bool:
        return verb is None or "*" in self.verbs or verb in self.verbs


class SignalConfig:
    """A parsed config: every setting, with remaphore's defaults for those left out.
    (A plain class, not a dataclass: see the import of tether.signal.wire above.)"""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.servers: list[str] = []
        self.credentials: str | None = None
        self.subject = DEFAULT_SUBJECT
        self.default_identity: bytes | None = None
        self.destination = ""
        self.allow_skew_ns = DEFAULT_SKEW_NS
        self.identities: list[Identity] = []
        self.peers = Peers()
        self.token: str | None = None
        #: a file holding a NATS user's nkey seed (SU...), for servers with `nkey` users
        self.nkey_seed: str | None = None
        self.user: str | None = None
        self.password: str | None = None
        self.tls_ca: str | None = None
        self.tls_cert: str | None = None
        self.tls_key: str | None = None
        self.max_handlers = DEFAULT_MAX_HANDLERS
        self.durable = False
        self.durable_retention_ns = 3_600_000_000_000
        #: lines that were ignored (unknown keys), for a log line each
        self.warnings: list[str] = []

    def __repr__(self) -> str:  # (no token or password)
        return f"SignalConfig(path={self.path!r}, servers={self.servers!r}, subject={self.subject!r})"

    def identity(self, public: bytes | None, verb: str | None) -> Identity | None:
        """The identity to sign with: ``public`` (or the default one), if it may use ``verb``."""
        want = public or self.default_identity
        for ident in self.identities:
            if ident.key.public == want:
                return ident if ident.allows(verb) else None
        return None


_SECTION_TITLES = {"general": "the settings", "identities": "[ Identities ]", "peers": "[ Peers ]"}


def _clean(s: str) -> str:
    s = s.strip()
    p = s.find("#")
    return s[:p].strip() if p >= 0 else s


def _verbs(text: str, path: str | None, lineno: int) -> frozenset[str]:
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ConfigError(f"verbs must be a bracketed list like [ping, pong] or [*], got {text!r}", path=path, line=lineno)
    verbs = frozenset(v.strip().lower() for v in text[1:-1].split(",") if v.strip())
    return verbs


def _bool(value: str, key: str, path: str | None, lineno: int) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key} must be true or false, got {value!r}", path=path, line=lineno)


def parse_config(text: str, path: str | None = None) -> SignalConfig:
    """Parse remaphore's format. Raises :class:`ConfigError` with the line number."""
    cfg = SignalConfig(path=path)
    section = "general"
    where = path or "config"
    for lineno, line in enumerate(text.splitlines(), 1):
        line = _clean(line)
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip().lower()
            if name in ("identities", "peers"):
                section = name
            else:  # remaphore skips the header and reads on in the section it was in
                cfg.warnings.append(f"{where}:{lineno}: unknown section {line} ignored: the lines after it are read "
                                    f"as part of {_SECTION_TITLES[section]}, as remaphore does")
            continue
        if section == "general":
            key, sep, value = line.partition(":")
            key, value = key.strip().lower(), value.strip()
            # remaphore skips these lines without a word; we say so
            if not sep or not key:
                cfg.warnings.append(f"{where}:{lineno}: not a `key: value` line, ignored: {line!r}")
                continue
            if key not in KNOWN_KEYS:
                cfg.warnings.append(f"{where}:{lineno}: unknown key {key!r} ignored")
                continue
            if not value:
                cfg.warnings.append(f"{where}:{lineno}: {key} has no value: line ignored")
                continue
            _set(cfg, key, value, path, lineno)
            continue
        if line.split(" ", 2) != line.split(None, 2):  # remaphore splits on single spaces
            cfg.warnings.append(f"{where}:{lineno}: fields separated by a tab or several spaces: remaphore refuses "
                                "this line (exit 2); separate them with one space")
        if section == "identities":
            parts = line.split(None, 2)
            if len(parts) != 3:
                raise ConfigError("an identity is `publickey privatekey [verbs]`", path=path, line=lineno)
            try:
                key = SigningKey.from_base58(parts[0], parts[1])
            except KeyError_ as exc:
                raise ConfigError(f"bad identity: {exc}", path=path, line=lineno) from None
            cfg.identities.append(Identity(key, _verbs(parts[2], path, lineno)))
        else:
            parts = line.split(None, 2)
            if len(parts) != 3:
                raise ConfigError("a peer is `destination publickey [verbs]`", path=path, line=lineno)
            try:
                pub = parse_public_key(parts[1])
            except KeyError_ as exc:
                raise ConfigError(f"bad peer key: {exc}", path=path, line=lineno) from None
            if "," in parts[0]:
                raise ConfigError(f"a destination may not contain a comma: {parts[0]!r}", path=path, line=lineno)
            cfg.peers = Peers([*cfg.peers, Peer(parts[0], pub, _verbs(parts[2], path, lineno))])
    _validate(cfg, path)
    return cfg


def _set(cfg: SignalConfig, key: str, value: str, path: str | None, lineno: int) -> None:
    if key == "server":
        cfg.servers.append(value)
    elif key == "credentials":
        cfg.credentials = None if value in (PLACEHOLDER_CREDS, "none", "-") else value
    elif key == "subject":
        cfg.subject = value
    elif key == "destination":
        if "," in value:
            raise ConfigError(f"destination may not contain a comma: {value!r}", path=path, line=lineno)
        cfg.destination = value
    elif key == "default_identity":
        try:
            cfg.default_identity = parse_public_key(value)
        except KeyError_ as exc:
            raise ConfigError(f"bad default_identity: {exc}", path=path, line=lineno) from None
    elif key == "allow_skew":
        try:
            cfg.allow_skew_ns = parse_duration(value)
        except ValueError as exc:
            raise ConfigError(str(exc), path=path, line=lineno) from None
        if cfg.allow_skew_ns == 0:
            cfg.allow_skew_ns = DEFAULT_SKEW_NS
    elif key == "max_handlers":
        if not value.isdigit() or not 1 <= int(value) <= 10000:
            raise ConfigError(f"max_handlers must be a number from 1 to 10000, got {value!r}", path=path, line=lineno)
        cfg.max_handlers = int(value)
    elif key == "durable":
        cfg.durable = _bool(value, key, path, lineno)
    elif key == "durable_retention":
        try:
            cfg.durable_retention_ns = parse_duration(value)
        except ValueError as exc:
            raise ConfigError(str(exc), path=path, line=lineno) from None
    else:  # token, nkey_seed, user, password, tls_*
        setattr(cfg, key, value)


def _validate(cfg: SignalConfig, path: str | None) -> None:
    if not cfg.servers:
        raise ConfigError("no `server:` configured", path=path, hint="add a line like `server: nats://127.0.0.1:4222`")
    if not cfg.identities:
        raise ConfigError("no identities configured", path=path, hint="run `tether signal -C` for an example with a fresh key")
    if not cfg.destination:
        raise ConfigError("no `destination:` configured", path=path)
    if cfg.default_identity is None:
        cfg.default_identity = cfg.identities[0].key.public
    elif not any(i.key.public == cfg.default_identity for i in cfg.identities):
        raise ConfigError("default_identity is not one of the [ Identities ]", path=path)
    if cfg.user and cfg.password is None:
        raise ConfigError("`user:` needs a `password:`", path=path)
    if cfg.tls_cert and not cfg.tls_key:
        raise ConfigError("`tls_cert:` needs a `tls_key:`", path=path)


def load_config(path: str) -> SignalConfig:
    """Read and parse ``path``; also check that the files it names can be read."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(
            "config file not found", path=path, hint="pass -c FILE, or create one from `tether signal -C`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", path=path) from None
    cfg = parse_config(text, path)
    for key in ("credentials", "nkey_seed", "tls_ca", "tls_cert", "tls_key"):
        value = getattr(cfg, key)
        if value and not os.access(value, os.R_OK):
            raise ConfigError(f"{key} file {value} does not exist or is not readable", path=path)
    return cfg


def append_peer(text: str, line: str) -> str:
    """``text`` with ``line`` added to its [ Peers ] (a new ``[ Peers ]`` header first unless that is the last section)."""
    last = "general"
    for raw in text.splitlines():
        clean = _clean(raw)
        if clean.startswith("[") and clean.endswith("]") and clean[1:-1].strip().lower() in ("identities", "peers"):
            last = clean[1:-1].strip().lower()
    body = text.rstrip("\n") + "\n"
    if last != "peers":
        body += "\n[ Peers ]\n"
    return body + line + "\n"


def replace_connection(text: str, servers: list[str], credentials: str | None) -> str:
    """``text`` with its ``server:`` and ``credentials:`` lines replaced by these (``credentials`` None:
    keep the file's own); every other line (identity, destination, peers, comments) kept as it was.
    The new lines go where the first old one was."""
    out: list[str] = []
    placed = False
    section = "general"
    for raw in text.splitlines():
        clean = _clean(raw)
        if clean.startswith("[") and clean.endswith("]"):
            section = clean[1:-1].strip().lower()
        key = clean.partition(":")[0].strip().lower() if ":" in clean else ""
        new = [f"server: {u}" for u in servers] + ([f"credentials: {credentials}"] if credentials is not None else [])
        if section == "general" and (key == "server" or (key == "credentials" and credentials is not None)):
            if not placed:
                out += new
                placed = True
            continue
        out.append(raw)
    if not placed:
        out = new + out
    return "\n".join(out) + "\n"


def example_config(key: SigningKey | None = None) -> str:
    """What ``-C`` prints: a working config with a freshly generated identity."""
    key = key or SigningKey.generate()
    return "\n".join(
        [
            "server: nats://natsserver:4222",
            # remaphore refuses a config without it; tether reads the placeholder as "no credentials"
            f"credentials: {PLACEHOLDER_CREDS}",
            f"subject: {DEFAULT_SUBJECT}",
            f"default_identity: {key.public_b58}",
            "destination: all",
            f"allow_skew: {format_duration(5_000_000_000)}",
            "",
            "[ Identities ]",
            f"{key.public_b58} {key.private_b58} [ping]",
            "",
            "[ Peers ]",
            "# destination publickey [verbs]   ([*] = every verb)",
            "",
        ]
    )
