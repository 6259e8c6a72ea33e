"""The signal protocol's sending half: keys, base58, the envelope's encoding, subjects,
destination patterns, peers and Go durations.

A one-shot ``tether signal -s`` (:mod:`tether.signal.quicksend`) reads its config
(:mod:`tether.signal.config`) and signs one envelope with this module alone, so it
imports nothing a send does not use: no dataclasses (the records here are named
tuples), no regular expressions until a duration is parsed, no hashlib, secrets or
cryptography until a call needs them, base58 written out below and signatures by
:mod:`tether.signal.ed25519`. The receiving half (parsing, verifying, filters, the
replay cache, replies) is :mod:`tether.signal.core`, which re-exports every name here:
callers import ``core``. The wire format is described there.

Sans-IO, like core: no sockets, files or clock; randomness only through ``rand``.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable

from tether.signal import ed25519

__all__ = [
    "UUID_LEN", "PUBLIC_KEY_LEN", "PRIVATE_KEY_LEN", "SIGNATURE_LEN", "DEFAULT_SUBJECT",
    "DEFAULT_DESTINATION_PATTERN", "DEFAULT_VERB", "NO_DATA", "REPLY_VERB", "MAX_TIME_NS", "KeyError_",
    "EnvelopeError", "b58encode", "b58decode", "parse_public_key", "SigningKey", "make_uuid", "signed_part",
    "encode", "make_subject", "broadcast_subject", "reply_subject", "match_destination", "Peer", "Peers",
    "parse_duration", "format_duration",
]  # fmt: skip

UUID_LEN = 12
PUBLIC_KEY_LEN = 32
PRIVATE_KEY_LEN = 64
SIGNATURE_LEN = 64
DEFAULT_SUBJECT = "remaphore"
DEFAULT_DESTINATION_PATTERN = "**"
DEFAULT_VERB = "ping"
NO_DATA = "NO_DATA"
REPLY_VERB = "reply"
#: remaphore's payload and argument text may be any bytes; we keep them as
#: str with surrogateescape so they round-trip exactly.
_TEXT = ("utf-8", "surrogateescape")
MAX_TIME_NS = 2**63 - 1


def _text(b: bytes) -> str:
    return b.decode(*_TEXT)


def _bytes(s: str) -> bytes:
    return s.encode(*_TEXT)


# --------------------------------------------------------------------------
# Base58 and keys
# --------------------------------------------------------------------------


class KeyError_(ValueError):
    """A key that is not valid base58 or not the right length."""


class EnvelopeError(ValueError):
    """A payload that is not a well-formed remaphore envelope."""


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_VALUE = {c: i for i, c in enumerate(_B58)}


def b58encode(data: bytes) -> str:
    """Bitcoin base58, as remaphore (btcutil) writes it: each leading zero byte is a ``1``."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, digit = divmod(n, 58)
        out.append(_B58[digit])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str | bytes) -> bytes:
    """Decode Bitcoin base58; :class:`KeyError_` for any character outside it."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    n = 0
    for c in text:
        digit = _B58_VALUE.get(c)
        if digit is None:
            raise KeyError_(f"not base58: {text!r}")
        n = n * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


def parse_public_key(text: str) -> bytes:
    """A base58 ed25519 public key (32 bytes)."""
    raw = b58decode(text.strip())
    if len(raw) != PUBLIC_KEY_LEN:
        raise KeyError_(f"a public key must be {PUBLIC_KEY_LEN} bytes, {text!r} decodes to {len(raw)}")
    return raw


class SigningKey(namedtuple("SigningKey", ["public", "private"])):
    """An ed25519 identity: ``public`` (32 bytes) and ``private`` (64: seed + public)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public!r})"  # never the private half

    @classmethod
    def generate(cls) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        return cls.from_seed(Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise KeyError_("an ed25519 seed is 32 bytes")
        secret = ed25519.secret_key(seed)
        return cls(secret[32:], secret)

    @classmethod
    def from_base58(cls, public: str, private: str) -> SigningKey:
        """Parse a ``[ Identities ]`` key pair and check that the halves belong together."""
        pub = parse_public_key(public)
        priv = b58decode(private.strip())
        if len(priv) != PRIVATE_KEY_LEN:
            raise KeyError_(f"a private key must be {PRIVATE_KEY_LEN} bytes (seed + public key), got {len(priv)}")
        key = cls.from_seed(priv[:32])
        if key.public != priv[32:] or key.public != pub:
            raise KeyError_(f"private key does not belong to public key {public}")
        return key

    @property
    def public_b58(self) -> str:
        return b58encode(self.public)

    @property
    def private_b58(self) -> str:
        return b58encode(self.private)

    def sign(self, data: bytes) -> bytes:
        # the public half re-derived from the seed, as signing with the seed alone would
        return ed25519.sign(ed25519.secret_key(self.private[:32]), data)


def _token_bytes(n: int) -> bytes:
    import secrets

    return secrets.token_bytes(n)


def make_uuid(value: str | bytes | None, rand: Callable[[int], bytes] = _token_bytes) -> bytes:
    """The uuid for ``-u``: as-is up to 12 bytes, else the first 12 bytes of its sha256; random if absent."""
    if value is None or len(value) == 0:
        return rand(UUID_LEN)
    raw = _bytes(value) if isinstance(value, str) else bytes(value)
    if len(raw) <= UUID_LEN:
        return raw
    import hashlib

    return hashlib.sha256(raw).digest()[:UUID_LEN]


def _check_field(name: str, value: str) -> bytes:
    raw = _bytes(value)
    if b"," in raw:
        raise EnvelopeError(f"{name} may not contain a comma: {value!r}")
    return raw


def signed_part(destination: str, time_ns: int, uuid: bytes, verb: str, request: bool, payload: str) -> bytes:
    """``DEST,HEXTIME,HEXUUID,VERB,RR,PAYLOAD`` as bytes."""
    if not 0 <= time_ns <= MAX_TIME_NS:
        raise EnvelopeError(f"time out of range: {time_ns}")
    return b",".join(
        [
            _check_field("destination", destination),
            format(time_ns, "x").encode(),
            uuid.hex().encode(),
            _check_field("verb", verb),
            b"Q" if request else b"_",
            _bytes(payload),
        ]
    )


def encode(
    key: SigningKey,
    *,
    destination: str,
    verb: str,
    payload: str,
    time_ns: int,
    uuid: bytes,
    request: bool = False,
) -> bytes:
    """Sign and encode one message. :class:`EnvelopeError` for a comma in destination or verb."""
    body = signed_part(destination, time_ns, uuid, verb, request, payload)
    sig = key.sign(body)
    return b",".join([b58encode(key.public).encode(), b58encode(sig).encode(), body])


# --------------------------------------------------------------------------
# Subjects
# --------------------------------------------------------------------------


def make_subject(*parts: str) -> str:
    """remaphore's subject rule: join the non-empty parts with dots; one part alone gets ``.all``."""
    kept = [p for p in parts if p]
    if len(kept) == 1:
        return f"{kept[0]}.all"
    return ".".join(kept)


def broadcast_subject(subject: str, sub: str | None = None) -> str:
    """Where messages are published and heard: ``<subject>.<S>`` or ``<subject>.all``."""
    return make_subject(subject, sub or "")


def reply_subject(subject: str, request_raw: bytes) -> str:
    """Where the replies to a request go: ``<subject>.<hex(sha256(request payload))>``."""
    import hashlib

    return make_subject(subject, hashlib.sha256(request_raw).hexdigest())


# --------------------------------------------------------------------------
# Destination patterns
# --------------------------------------------------------------------------


def _segment_matches(name: str, pattern: str) -> bool:
    if name == pattern:
        return True
    stars = pattern.count("*")
    if stars == 0:
        return False
    if stars > 1:  # one wildcard per segment; `**` is a whole-segment token handled by the caller
        return False
    prefix, suffix = pattern.split("*")
    return len(name) >= len(prefix) + len(suffix) and name.startswith(prefix) and name.endswith(suffix)


def match_destination(name: str, pattern: str) -> bool:
    """Does the local destination ``name`` match the message's ``pattern``?

    Both are reverse-dot names (``com.crypto.host.us``). In the pattern, a
    segment may hold one ``*`` (``prefix*suffix``, the two not overlapping);
    ``**`` may only be the last segment and matches one or more segments. A
    name containing ``*`` never matches. Never raises for any pair of strings.
    """
    if not isinstance(name, str) or not isinstance(pattern, str) or "*" in name:
        return False
    names = name.split(".")
    pats = pattern.split(".")
    for i, pat in enumerate(pats):
        if pat == "**":
            return i == len(pats) - 1 and len(names) > i
        if i >= len(names) or not _segment_matches(names[i], pat):
            return False
    return len(names) == len(pats)


# --------------------------------------------------------------------------
# Peers and the receive pipeline
# --------------------------------------------------------------------------


class Peer(namedtuple("Peer", ["destination", "public", "verbs"])):
    """A ``[ Peers ]`` line: who may send us which verbs (``destination``: str, ``public``:
    32 bytes, ``verbs``: a frozenset of str)."""

    __slots__ = ()

    def allows(self, verb: str | None) -> bool:
        """``None`` asks "is this key known at all" (used for replies)."""
        return verb is None or "*" in self.verbs or verb in self.verbs

    @property
    def public_b58(self) -> str:
        return b58encode(self.public)


class Peers:
    """The peer list, looked up by key. The first line for a key wins, as in remaphore."""

    def __init__(self, peers: Iterable[Peer] = ()):
        self._list = list(peers)
        self._by_key: dict[bytes, Peer] = {}
        for p in self._list:
            self._by_key.setdefault(p.public, p)

    def __iter__(self):
        return iter(self._list)

    def __len__(self) -> int:
        return len(self._list)

    def get(self, public: bytes) -> Peer | None:
        return self._by_key.get(public)

    def receivers(self, pattern: str) -> list[Peer]:
        """Peers whose destination matches ``pattern``: who should answer a request (one per key)."""
        seen: set[bytes] = set()
        out = []
        for p in self._list:
            if p.public not in seen and match_destination(p.destination, pattern):
                seen.add(p.public)
                out.append(p)
        return out


# --------------------------------------------------------------------------
# Go-style durations (allow_skew, -t)
# --------------------------------------------------------------------------

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# a number and its unit; the unit runs to the next digit or dot, so "1sx" is refused
_DUR_PART = r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)(?![^0-9.])"


def parse_duration(text: str, *, allow_negative: bool = False) -> int:
    """Parse a Go duration (``5s``, ``1h2m3s4ms``, ``1.5h``, ``300ms``, ``0``) into nanoseconds.

    Go's ``time.ParseDuration`` grammar, ``[-+]?([0-9]*(\\.[0-9]*)?UNIT)+`` or a
    bare ``0``, with no spaces. Negative durations are refused unless
    ``allow_negative`` (remaphore's ``-t`` takes them: no timeout); a skew or a
    retention never makes sense below zero.
    """
    import re
    from decimal import Decimal

    hint = f"not a duration: {text!r} (try 5s, 1m30s or 1h2m3s4ms)"
    s, negative = text, False
    if s[:1] in ("+", "-"):
        negative, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(hint)
    pos, total = 0, Decimal(0)
    while pos < len(s):
        m = re.compile(_DUR_PART).match(s, pos)  # (re caches the compiled pattern)
        if not m:
            raise ValueError(hint)
        total += Decimal(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if total > MAX_TIME_NS + (1 if negative else 0):
        raise ValueError(f"duration too long: {text!r}")
    if negative and total and not allow_negative:
        raise ValueError(f"a negative duration makes no sense here: {text!r}")
    return -int(total) if negative else int(total)


def format_duration(ns: int) -> str:
    """A compact Go-style rendering (``5s``, ``1m30s``, ``250ms``)."""
    if ns == 0:
        return "0s"
    out = []
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000), ("ns", 1)):
        if ns >= size:
            out.append(f"{ns // size}{unit}")
            ns %= size
    return "".join(out)
