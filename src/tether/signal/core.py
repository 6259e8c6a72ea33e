"""The signal protocol: remaphore's wire envelope, destination patterns and
receive filters.

A sans-IO core. Nothing here opens a socket, reads the clock or starts a
process: callers pass ``now_ns`` (Unix time in nanoseconds) and raw payload
bytes, and get back values, :class:`Refused` or :class:`Ignored` results. The
only randomness (a fresh uuid, a response separator) comes from an injectable
``rand`` callable.

Wire format (remaphore's, byte for byte)
----------------------------------------
One NATS payload, comma separated::

    B58(pubkey),B58(sig),DEST,HEXTIME,HEXUUID,VERB,RR,PAYLOAD

* ``pubkey``: the sender's 32-byte ed25519 public key, Bitcoin base58;
* ``sig``: the ed25519 signature of the bytes after the signature field
  (``DEST,HEXTIME,HEXUUID,VERB,RR,PAYLOAD``), base58;
* ``HEXTIME``: send time in Unix nanoseconds, lowercase hex, no padding;
* ``HEXUUID``: the uuid (12 bytes unless a short one was given) in lowercase hex;
* ``RR``: ``Q`` for a request that wants replies, ``_`` otherwise;
* ``PAYLOAD``: the rest; it may contain commas (DEST and VERB may not).

Broadcasts go to ``<subject>.<S>`` (``<subject>.all`` without ``-S``); the
replies to a request go to ``<subject>.<hex(sha256(request payload))>``.

The sending half (keys, base58, :func:`encode`, subjects, destination patterns, peers,
durations) is :mod:`tether.signal.wire`, re-exported here; this module adds the
receiving half: :func:`parse`, :func:`verify`, the filters, the replay cache, replies.

Stricter than remaphore, on purpose
-----------------------------------
* :func:`parse` accepts only the canonical encoding remaphore itself produces
  (lowercase hex, ``Q`` or ``_``), and never raises anything but
  :class:`EnvelopeError`.
* :func:`match_destination` never crashes and never lets a segment's prefix
  and suffix overlap (``ab*b`` does not match ``ab``).
* :class:`ReplayCache` refuses a message seen before inside the skew window.
"""

from __future__ import annotations

import enum
import heapq
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# The sending half lives in tether.signal.wire (a one-shot `tether signal -s` imports
# that alone); every name of it is this module's too.
from tether.signal.wire import (
    DEFAULT_DESTINATION_PATTERN,
    DEFAULT_SUBJECT,
    DEFAULT_VERB,
    MAX_TIME_NS,
    NO_DATA,
    PRIVATE_KEY_LEN,
    PUBLIC_KEY_LEN,
    REPLY_VERB,
    SIGNATURE_LEN,
    UUID_LEN,
    EnvelopeError,
    KeyError_,
    Peer,
    Peers,
    SigningKey,
    _text,
    _token_bytes,
    b58decode,
    b58encode,
    broadcast_subject,
    encode,
    format_duration,
    make_subject,
    make_uuid,
    match_destination,
    parse_duration,
    parse_public_key,
    reply_subject,
    signed_part,
)

__all__ = [
    "UUID_LEN",
    "PUBLIC_KEY_LEN",
    "PRIVATE_KEY_LEN",
    "SIGNATURE_LEN",
    "DEFAULT_SUBJECT",
    "DEFAULT_DESTINATION_PATTERN",
    "DEFAULT_VERB",
    "NO_DATA",
    "REPLY_VERB",
    "MAX_TIME_NS",
    "KeyError_",
    "EnvelopeError",
    "b58encode",
    "b58decode",
    "parse_public_key",
    "SigningKey",
    "Envelope",
    "make_uuid",
    "signed_part",
    "encode",
    "parse",
    "verify",
    "make_subject",
    "broadcast_subject",
    "reply_subject",
    "match_destination",
    "Peer",
    "Peers",
    "RefusalKind",
    "Refused",
    "Ignored",
    "Accepted",
    "Filter",
    "ReplayCache",
    "Receiver",
    "script_argv",
    "script_env",
    "reply_payload",
    "format_response",
    "new_separator",
    "ResponseCollector",
    "parse_duration",
    "format_duration",
]

_HEX_TIME_RE = re.compile(rb"\A(0|[1-9a-f][0-9a-f]{0,15})\Z")
_HEX_RE = re.compile(rb"\A(?:[0-9a-f]{2})*\Z")

# --------------------------------------------------------------------------
# The envelope
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """One parsed message. ``raw`` is the whole payload as received or sent."""

    sender: bytes
    signature: bytes
    destination: str
    time_ns: int
    uuid: bytes
    verb: str
    request: bool
    payload: str
    raw: bytes = field(repr=False)

    @property
    def signed(self) -> bytes:
        """The bytes the signature covers: everything after the signature field."""
        return self.raw.split(b",", 2)[2]

    @property
    def digest(self) -> bytes:
        """sha256 of the whole payload: names the reply subject and the replay entry."""
        import hashlib

        return hashlib.sha256(self.raw).digest()

    @property
    def sender_b58(self) -> str:
        return b58encode(self.sender)


def parse(raw: bytes) -> Envelope:
    """Split a payload into its fields. Raises only :class:`EnvelopeError`.

    The signature is *not* checked here; see :func:`verify`.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise EnvelopeError("payload must be bytes")
    raw = bytes(raw)
    head = raw.split(b",", 2)
    if len(head) != 3:
        raise EnvelopeError("truncated message: fewer than 8 fields")
    fields = head[2].split(b",", 5)
    if len(fields) != 6:
        raise EnvelopeError("truncated message: fewer than 8 fields")
    dest, hextime, hexuuid, verb, rr, payload = fields
    try:
        sender = b58decode(head[0])
        signature = b58decode(head[1])
    except KeyError_ as exc:
        raise EnvelopeError(f"bad base58 in key or signature: {exc}") from None
    if len(sender) != PUBLIC_KEY_LEN:
        raise EnvelopeError(f"sender key is {len(sender)} bytes, not {PUBLIC_KEY_LEN}")
    if len(signature) != SIGNATURE_LEN:
        raise EnvelopeError(f"signature is {len(signature)} bytes, not {SIGNATURE_LEN}")
    if not _HEX_TIME_RE.match(hextime):
        raise EnvelopeError(f"bad time field {hextime[:40]!r}")
    time_ns = int(hextime, 16)
    if time_ns > MAX_TIME_NS:
        raise EnvelopeError("time field out of range")
    if not _HEX_RE.match(hexuuid):
        raise EnvelopeError(f"bad uuid field {hexuuid[:40]!r}")
    if rr not in (b"Q", b"_"):
        raise EnvelopeError(f"bad request field {rr[:10]!r}")
    return Envelope(
        sender=sender,
        signature=signature,
        destination=_text(dest),
        time_ns=time_ns,
        uuid=bytes.fromhex(hexuuid.decode("ascii")),
        verb=_text(verb),
        request=rr == b"Q",
        payload=_text(payload),
        raw=raw,
    )


def verify(env: Envelope) -> bool:
    """True when ``env.signature`` is the sender's signature of :attr:`Envelope.signed`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(env.sender).verify(env.signature, env.signed)
    except (InvalidSignature, ValueError):
        return False
    return True


class RefusalKind(enum.Enum):
    MALFORMED = "malformed"
    UNKNOWN_PEER = "unknown peer"
    VERB_NOT_ALLOWED = "verb not allowed"
    BAD_SIGNATURE = "bad signature"
    CLOCK_SKEW = "outside allowed clock skew"
    REPLAY = "replay"


@dataclass(frozen=True)
class Refused:
    """A message we do not trust: log it, never act on it."""

    kind: RefusalKind
    detail: str

    def __str__(self) -> str:
        return f"refused ({self.kind.value}): {self.detail}"


@dataclass(frozen=True)
class Ignored:
    """A trusted message that is not for us (destination, uuid, verb or sender filter)."""

    envelope: Envelope
    detail: str

    def __str__(self) -> str:
        return f"ignored: {self.detail}"


@dataclass(frozen=True)
class Accepted:
    envelope: Envelope
    peer: Peer
    #: the local destination, when it matched the message's pattern (REMAPHORE_DESTMATCH)
    destmatch: str | None


@dataclass(frozen=True)
class Filter:
    """The receive-side selection: ``-D``/``-d``, ``-u``, ``-v`` and ``-p``."""

    local_destination: str
    exact_destination: str | None = None  # -D
    match_destination: bool = True  # not -d
    uuid: bytes | None = None  # -u, already transformed with make_uuid
    verbs: frozenset[str] | None = None  # -v
    sender: bytes | None = None  # -p

    def check(self, env: Envelope) -> str | None:
        """None when the message passes, else why not."""
        if self.uuid is not None and env.uuid != self.uuid:
            return f"uuid {env.uuid.hex()} is not {self.uuid.hex()}"
        if self.verbs is not None and env.verb not in self.verbs:
            return f"verb {env.verb!r} not in {sorted(self.verbs)}"
        if self.sender is not None and env.sender != self.sender:
            return f"sender {env.sender_b58} is not {b58encode(self.sender)}"
        if self.match_destination:
            if self.exact_destination:
                if env.destination != self.exact_destination:
                    return f"destination {env.destination!r} is not {self.exact_destination!r}"
            elif not match_destination(self.local_destination, env.destination):
                return f"destination pattern {env.destination!r} does not match {self.local_destination!r}"
        return None


class ReplayCache:
    """Remembers authenticated messages until they fall out of the skew window.

    An entry for a message sent at ``t`` lives until ``t + window_ns``: after
    that the skew check refuses the message anyway. Memory is bounded by
    ``max_entries``; when full, the entry closest to expiry is dropped first.
    """

    def __init__(self, window_ns: int, max_entries: int = 65536):
        self.window_ns = max(0, int(window_ns))
        self.max_entries = max(1, int(max_entries))
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now_ns: int) -> None:
        while self._heap and (self._heap[0][0] < now_ns or len(self._expiry) > self.max_entries):
            exp, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == exp:
                del self._expiry[key]

    def seen(self, key: bytes, time_ns: int, now_ns: int) -> bool:
        """True if ``key`` was recorded and is still live; else record it and return False."""
        self._purge(now_ns)
        if key in self._expiry:
            return True
        exp = time_ns + self.window_ns
        self._expiry[key] = exp
        heapq.heappush(self._heap, (exp, key))
        self._purge(now_ns)
        return False


def _authenticate(
    raw: bytes,
    peers: Peers,
    allow_skew_ns: int,
    now_ns: int,
    replay: ReplayCache | None,
    verb_check: bool,
    max_age_ns: int | None = None,
) -> tuple[Envelope, Peer] | Refused:
    try:
        env = parse(raw)
    except EnvelopeError as exc:
        return Refused(RefusalKind.MALFORMED, str(exc))
    peer = peers.get(env.sender)
    if peer is None:
        return Refused(RefusalKind.UNKNOWN_PEER, f"key {env.sender_b58} is not in [ Peers ]")
    if verb_check and not peer.allows(env.verb):
        return Refused(RefusalKind.VERB_NOT_ALLOWED, f"peer {peer.destination} may not send verb {env.verb!r}")
    if not verify(env):
        return Refused(RefusalKind.BAD_SIGNATURE, f"signature from {env.sender_b58} does not verify")
    too_old = now_ns - env.time_ns > max(allow_skew_ns, max_age_ns or 0)
    if too_old or env.time_ns - now_ns > allow_skew_ns:
        return Refused(RefusalKind.CLOCK_SKEW, f"sent {(env.time_ns - now_ns) / 1e9:+.3f}s from local time")
    if replay is not None and replay.seen(env.digest, env.time_ns, now_ns):
        return Refused(RefusalKind.REPLAY, f"message {env.digest.hex()[:16]} from {peer.destination} seen before")
    return env, peer


class Receiver:
    """Decides, for each payload heard on the broadcast subject, whether to act on it.

    Order: well-formed, sender in ``[ Peers ]`` and allowed the verb, signature
    valid, time within ``allow_skew_ns``, not a replay; then the :class:`Filter`.

    ``max_age_ns`` (durable mode) lets messages from the past be accepted up
    to that age — a node that was offline reads them from a stream later —
    and the replay cache then remembers messages for as long.
    """

    def __init__(self, peers: Peers, allow_skew_ns: int, filter: Filter, replay: ReplayCache | None = None,
                 max_age_ns: int | None = None):
        self.peers = peers
        self.allow_skew_ns = allow_skew_ns
        self.filter = filter
        self.max_age_ns = max_age_ns
        window = max(allow_skew_ns, max_age_ns or 0)
        self.replay = replay if replay is not None else ReplayCache(window)

    def receive(self, raw: bytes, now_ns: int) -> Accepted | Refused | Ignored:
        got = _authenticate(raw, self.peers, self.allow_skew_ns, now_ns, self.replay, verb_check=True,
                            max_age_ns=self.max_age_ns)
        if isinstance(got, Refused):
            return got
        env, peer = got
        why = self.filter.check(env)
        if why is not None:
            return Ignored(env, why)
        local = self.filter.local_destination
        destmatch = local if match_destination(local, env.destination) else None
        return Accepted(env, peer, destmatch)


# --------------------------------------------------------------------------
# Scripts and replies
# --------------------------------------------------------------------------


def script_argv(script: Sequence[str], env: Envelope) -> list[str]:
    """``script... VERB PAYLOAD`` as an argv list (never a shell string)."""
    return [*script, env.verb, env.payload]


def script_env(env: Envelope, destmatch: str | None) -> dict[str, str]:
    """The REMAPHORE_* variables for a script run."""
    out = {
        "REMAPHORE_SENDER": env.sender_b58,
        "REMAPHORE_VERB": env.verb,
        "REMAPHORE_TIME": str(env.time_ns // 1_000_000_000),
        "REMAPHORE_UUID": env.uuid.hex(),
        "REMAPHORE_MSG": env.payload,
    }
    if destmatch is not None:
        out["REMAPHORE_DESTMATCH"] = destmatch
    return out


def reply_payload(exit_code: int | None, output: str | None) -> str:
    """``<exitcode>,<output>``, or ``NO_DATA`` when no script is configured (``exit_code`` None)."""
    if exit_code is None:
        return NO_DATA
    return f"{exit_code},{output or ''}"


def new_separator(rand: Callable[[int], bytes] = _token_bytes) -> str:
    """32 random hex characters, one per request."""
    return rand(16).hex()


def format_response(destination: str, payload: str, sep: str) -> str:
    """One responder's block: ``dest,payload`` or, multi-line, wrapped in ``--> SEP`` / ``--< SEP``."""
    body = payload.strip()
    if "\n" in body:
        return f"--> {sep}\n{destination},{body}\n--< {sep}\n"
    return f"{destination},{body}\n"


class ResponseCollector:
    """The requester's side of request/response.

    ``expected`` are the peers whose destination matches the request's
    pattern; :attr:`done` turns true when each of them has replied. Replies
    must come from a known peer (any verb), verify, be within the skew and not
    be replays; each yields one formatted, never interleaved, output block.
    """

    def __init__(self, peers: Peers, pattern: str, allow_skew_ns: int, sep: str):
        self.peers = peers
        self.allow_skew_ns = allow_skew_ns
        self.sep = sep
        self.pending: dict[bytes, Peer] = {p.public: p for p in peers.receivers(pattern)}
        self.replay = ReplayCache(allow_skew_ns)
        self.received = 0

    @property
    def done(self) -> bool:
        return not self.pending

    def reply(self, raw: bytes, now_ns: int) -> str | Refused | Ignored:
        got = _authenticate(raw, self.peers, self.allow_skew_ns, now_ns, self.replay, verb_check=False)
        if isinstance(got, Refused):
            return got
        env, peer = got
        if env.request:
            return Ignored(env, "a request on the reply subject")
        self.pending.pop(env.sender, None)
        self.received += 1
        return format_response(peer.destination, env.payload, self.sep)
