"""Range-based set reconciliation (Negentropy-style) over sorted 16-byte ids.

A sans-IO core: no sockets, no database, no clock. Each side wraps its ids in
a :class:`RangeStorage` (a sorted set answering range counts, range
fingerprints and range scans) and drives a :class:`Reconciler`::

    a, b = Reconciler(store_a), Reconciler(store_b)
    msg = a.initiate()
    while msg is not None:
        msg, have, need = b.reconcile(msg)   # b learns what it has / needs
        if msg is None:
            break
        msg, have, need = a.reconcile(msg)   # a learns what it has / needs

``have`` are ids this side holds and the peer lacks (to push); ``need`` are ids
the peer holds and this side lacks (to pull). Both sides learn both lists.
The exchange ends when a side has nothing to say (``reply is None``); the
transport tells the peer so (an empty frame, end of stream...).

How it works
------------
A message is a sequence of contiguous ranges ``[lower, upper)`` covering the id
space from ``00…00`` upwards; each range says one of:

* ``SKIP`` -- nothing to do here;
* ``FP`` -- "my ids in this range hash to F". The receiver compares with its own
  fingerprint. Equal: skip. Different: it splits its own ids of the range into
  buckets of equal count and sends a fingerprint for each (or, when it holds at
  most ``idlist_threshold`` ids there, sends them as an ``IDLIST``);
* ``IDLIST`` -- "these are all my ids in this range". The receiver now knows
  both sides of the range exactly; it records its ``have``/``need`` and replies
  ``DIFF`` (if it holds too many ids there, it splits into fingerprints instead);
* ``DIFF`` -- "these ids of mine you lack, and these ids of yours I lack".
  The receiver records them; nothing more to say about the range.

Buckets: a message in which at least half the fingerprints mismatch is *dense*
and mismatched ranges split into ``buckets`` (16) parts; otherwise it is
*sparse* (differences are few and far apart) and they split into
``sparse_buckets`` (4). Sixteen buckets cost nothing extra when nearly every
bucket differs anyway; when one bucket in sixteen differs, four buckets per
message (16 per round trip) halve the fingerprint bytes. Either way a round
trip divides the ranges' sizes by at least 16, so rounds grow as log16(n).

Items: ids and content tags
---------------------------
Each id carries an 8-byte *tag*: a digest of the record's content (the log
uses ``tether.log.store.record_digest``; plain id sets use zeros). Ranges and
bounds are over ids alone, but fingerprints and id lists cover the tags too, so
two sides holding the same id with different contents see the range differ,
narrow it down like any difference, and both learn the id as a *conflict*
(:attr:`Reconciler.conflicts`) instead of syncing past it.

Fingerprints
------------
``fingerprint(items) = sha256(b"tether-rsr-v2\\0" + id_1 + ... + id_k + tag_1 + ... + tag_k)[:16]``
over the items of the range in ascending id order (the length fixes ``k``).
Peers are untrusted and log ids
are chosen by writers (UUIDv7, not content hashes), so the additive
fingerprints of Negentropy (sum of ids mod 2**256) would let a writer craft
records that make two different ranges look equal and hide a record from a
sync. A hash over the concatenation cannot be forged that way (16 bytes: 2**128
for a second preimage, 2**64 even if the attacker chooses both sets); the cost
is that a range fingerprint takes a pass over the range, which is fast
(hashlib streams ~1 GB/s, a range of a million ids is 16 MB) and memory-bounded.

Bounds
------
A bucket boundary is the shortest prefix of an id that separates it from the
id before it, zero-padded to 16 bytes; on the wire it is one header byte
``(shared << 4) | (length - 1)`` (bytes shared with the previous bound, capped
at 14, and the prefix length) followed by the unshared bytes. ``0xF0`` is the
upper bound "infinity".

Wire format (version 2)
-----------------------
::

    message = 0x02 range*
    range   = bound mode payload
    mode    = 0 SKIP | 1 FP fp[16] | 2 IDLIST varint(n) id[16]*n tag[8]*n
            | 3 DIFF varint(n) id[16]*n varint(m) id[16]*m varint(c) id[16]*c

In a DIFF the first list is ids the receiver lacks, the second ids the sender
lacks, the third ids both hold with different tags (conflicts).

Parsing is strict and bounded: a message larger than ``max_message``, a
truncated field, an unknown mode, bounds that do not increase, ids out of
their range or out of order, counts larger than the bytes left: each raises
:class:`ReconcileError` and nothing else. Replies are cut at ``frame_limit``
bytes: the rest of the id space is then sent as one fingerprint, to be
continued in the next round.
"""

from __future__ import annotations

import bisect
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

__all__ = [
    "FP_LEN",
    "ID_LEN",
    "INF",
    "MIN_BOUND",
    "NO_TAG",
    "TAG_LEN",
    "RangeStorage",
    "ReconcileError",
    "Reconciler",
    "SortedIds",
    "Step",
    "decode_varint",
    "encode_varint",
    "fingerprint",
]

ID_LEN = 16
FP_LEN = 16
TAG_LEN = 8
NO_TAG = bytes(TAG_LEN)
VERSION = 0x02
MIN_BOUND = bytes(ID_LEN)
#: The upper bound of the id space: greater than every 16-byte id.
INF = b"\xff" * (ID_LEN + 1)
_FP_DOMAIN = b"tether-rsr-v2\x00"
_INF_HEADER = 0xF0
_MAX_SHARED = 14

SKIP, FP, IDLIST, DIFF = 0, 1, 2, 3
_MODES = {SKIP, FP, IDLIST, DIFF}

DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
DEFAULT_FRAME_LIMIT = 1024 * 1024


class ReconcileError(ValueError):
    """A malformed, truncated, oversized or inconsistent message from the peer."""


# --------------------------------------------------------------------------
# Fingerprints and varints
# --------------------------------------------------------------------------


def fingerprint(items: Iterable[bytes | tuple[bytes, bytes]]) -> bytes:
    """The range fingerprint of ``items``: ascending ids, each a 16-byte id
    (tag :data:`NO_TAG`) or an ``(id, tag)`` pair."""
    h = hashlib.sha256(_FP_DOMAIN)
    tags = bytearray()
    for item in items:
        i, t = (item, NO_TAG) if isinstance(item, bytes) else item
        h.update(i)
        tags += t
    h.update(tags)
    return h.digest()[:FP_LEN]


def _fingerprint_blob(ids: bytes | memoryview, tags: bytes | memoryview) -> bytes:
    h = hashlib.sha256(_FP_DOMAIN)
    h.update(ids)
    h.update(tags)
    return h.digest()[:FP_LEN]


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128."""
    if n < 0:
        raise ValueError("varint must be >= 0")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 at ``pos``; at most 9 bytes (63 bits)."""
    n = 0
    shift = 0
    for k in range(9):
        if pos + k >= len(buf):
            raise ReconcileError("truncated varint")
        b = buf[pos + k]
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and k > 0:
                raise ReconcileError("non-canonical varint")
            return n, pos + k + 1
        shift += 7
    raise ReconcileError("varint too long")


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def separator(before: bytes, after: bytes) -> bytes:
    """The smallest-prefix bound ``s`` with ``before < s <= after`` (zero-padded)."""
    cut = _common_prefix(before, after) + 1
    return after[:cut] + bytes(ID_LEN - cut)


# --------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------


class Bucket(NamedTuple):
    upper: bytes  # exclusive upper bound of the bucket
    fp: bytes


class RangeStorage(ABC):
    """A sorted set of distinct 16-byte ids, each with a tag, queried by ranges
    ``[lo, hi)`` of ids.

    ``hi`` may be :data:`INF`. Implement :meth:`count` and :meth:`iter_items`;
    override :meth:`fingerprint`, :meth:`buckets`, :meth:`items` and
    :meth:`contains` when the backend can do better than a scan.
    """

    @abstractmethod
    def count(self, lo: bytes, hi: bytes) -> int:
        """Number of ids in ``[lo, hi)``."""

    @abstractmethod
    def iter_items(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The ``(id, tag)`` pairs in ``[lo, hi)``, ascending."""

    def items(self, lo: bytes, hi: bytes) -> list[tuple[bytes, bytes]]:
        return list(self.iter_items(lo, hi))

    def ids(self, lo: bytes, hi: bytes) -> list[bytes]:
        return [i for i, _ in self.iter_items(lo, hi)]

    def contains(self, id_: bytes) -> bool:
        hi = (int.from_bytes(id_, "big") + 1).to_bytes(ID_LEN + 1, "big")[1:] if id_ != b"\xff" * ID_LEN else INF
        return self.count(id_, hi) > 0

    def fingerprint(self, lo: bytes, hi: bytes) -> bytes:
        return fingerprint(self.iter_items(lo, hi))

    def buckets(self, lo: bytes, hi: bytes, parts: int, count: int) -> list[Bucket]:
        """Split the ``count`` ids of ``[lo, hi)`` into ``parts`` buckets of equal
        count (``2 <= parts <= count``), one pass; the last bucket ends at ``hi``."""
        cuts = [(count * k) // parts for k in range(1, parts)]
        out: list[Bucket] = []
        h, tags = hashlib.sha256(_FP_DOMAIN), bytearray()
        prev = b""
        nxt = 0
        for n, (id_, tag) in enumerate(self.iter_items(lo, hi)):
            if nxt < len(cuts) and n == cuts[nxt]:
                h.update(tags)
                out.append(Bucket(separator(prev, id_), h.digest()[:FP_LEN]))
                h, tags = hashlib.sha256(_FP_DOMAIN), bytearray()
                nxt += 1
            h.update(id_)
            tags += tag
            prev = id_
        h.update(tags)
        out.append(Bucket(hi, h.digest()[:FP_LEN]))
        return out


_STRIDE = 16


class _Keys:
    """The ids of a blob as a read-only sequence, for :mod:`bisect`."""

    __slots__ = ("_blob", "_n")

    def __init__(self, blob: bytes):
        self._blob = blob
        self._n = len(blob) // ID_LEN

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:
        return self._blob[i * ID_LEN : (i + 1) * ID_LEN]


class SortedIds(RangeStorage):
    """An in-memory :class:`RangeStorage` over two contiguous blobs, the ascending
    ids and their tags in the same order: a range fingerprint hashes two slices
    without building a Python object per id, and a million items take 24 MB.

    Build it from any iterable of ids (tag :data:`NO_TAG`) or ``(id, tag)``
    pairs (sorted and deduplicated here), or with :meth:`from_sorted_blob` from
    blobs already in strictly ascending id order (what ``ORDER BY id`` on a
    primary key returns), which skips the sort. :meth:`with_items` returns a
    copy with more items merged in.
    """

    def __init__(self, items: Iterable[bytes | tuple[bytes, bytes]] = ()):
        pairs: dict[bytes, bytes] = {}
        for item in items:
            i, t = (item, NO_TAG) if isinstance(item, bytes) else item
            _check_item(i, t)
            if pairs.setdefault(i, t) != t:
                raise ValueError(f"id {i.hex()} given twice with different tags")
        keys = sorted(pairs)
        self._set_blobs(b"".join(keys), b"".join(pairs[k] for k in keys))

    @classmethod
    def from_sorted_blob(cls, ids: bytes, tags: bytes | None = None) -> SortedIds:
        """Wrap ids already concatenated in strictly ascending order, and their tags
        (default: all :data:`NO_TAG`). Not re-checked: only for a trusted source
        such as the local database."""
        if len(ids) % ID_LEN:
            raise ValueError(f"a blob of ids must be a multiple of {ID_LEN} bytes, got {len(ids)}")
        n = len(ids) // ID_LEN
        if tags is None:
            tags = bytes(n * TAG_LEN)
        if len(tags) != n * TAG_LEN:
            raise ValueError(f"{n} ids need {n * TAG_LEN} bytes of tags, got {len(tags)}")
        self = cls.__new__(cls)
        self._set_blobs(bytes(ids), bytes(tags))
        return self

    @classmethod
    def from_rows(cls, cursor: Any) -> SortedIds:
        """Read a DB-API cursor over ``(id, tag)`` rows in strictly ascending id order
        (a NULL tag reads as :data:`NO_TAG`) in batches, straight into the two blobs."""
        ids: list[bytes] = []
        tags: list[bytes] = []
        while rows := cursor.fetchmany(65536):
            ids.append(b"".join([r[0] for r in rows]))
            tags.append(b"".join([r[1] or NO_TAG for r in rows]))
        return cls.from_sorted_blob(b"".join(ids), b"".join(tags))

    def _set_blobs(self, ids: bytes, tags: bytes) -> None:
        self._blob = ids
        self._tags = tags
        self._keys = _Keys(ids)
        self._index: list[bytes] | None = None  # every _STRIDE-th id, built on first use
        self._memo: dict[bytes, int] = {}  # bound -> position: a round asks for most bounds twice

    @property
    def ids_blob(self) -> bytes:
        """The ids, ascending, concatenated."""
        return self._blob

    @property
    def tags_blob(self) -> bytes:
        """The tags, in the same order."""
        return self._tags

    def position(self, bound: bytes) -> int:
        """How many ids are below ``bound``."""
        return self._pos(bound)

    @property
    def nbytes(self) -> int:
        return len(self._blob) + len(self._tags)

    def __len__(self) -> int:
        return len(self._keys)

    def with_items(self, items: Iterable[tuple[bytes, bytes]]) -> SortedIds:
        """A new :class:`SortedIds` holding these items and ``items`` (O(n) copy);
        an id we hold already keeps its tag."""
        new = sorted({i: t for i, t in items if not self.contains(i)}.items())
        for i, t in new:
            _check_item(i, t)
        ids: list[bytes] = []
        tags: list[bytes] = []
        prev = 0
        for i, t in new:
            at = self._pos(i)
            ids += (self._blob[prev * ID_LEN : at * ID_LEN], i)
            tags += (self._tags[prev * TAG_LEN : at * TAG_LEN], t)
            prev = at
        ids.append(self._blob[prev * ID_LEN :])
        tags.append(self._tags[prev * TAG_LEN :])
        return SortedIds.from_sorted_blob(b"".join(ids), b"".join(tags))

    def _pos(self, bound: bytes) -> int:
        """bisect_left of ``bound``: a C bisect over every 16th id, then at most
        four steps through the blob (a bisect through ``_Keys`` alone calls
        Python twenty times per lookup in a million ids)."""
        pos = self._memo.get(bound)
        if pos is not None:
            return pos
        if self._index is None:
            b = self._blob
            self._index = [b[k : k + ID_LEN] for k in range(0, len(b), _STRIDE * ID_LEN)]
        block = bisect.bisect_left(self._index, bound)
        if block == 0:
            pos = 0
        else:
            lo = (block - 1) * _STRIDE
            pos = bisect.bisect_left(self._keys, bound, lo + 1, min(lo + _STRIDE, len(self._keys)))
        if len(self._memo) >= 1 << 16:
            self._memo.clear()
        self._memo[bound] = pos
        return pos

    def _span(self, lo: bytes, hi: bytes) -> tuple[int, int]:
        i = self._pos(lo)
        return i, max(i, self._pos(hi))

    def _slice(self, i: int, j: int) -> list[bytes]:
        b = self._blob
        return [b[k : k + ID_LEN] for k in range(i * ID_LEN, j * ID_LEN, ID_LEN)]

    def count(self, lo: bytes, hi: bytes) -> int:
        i, j = self._span(lo, hi)
        return j - i

    def iter_items(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter(self.items(lo, hi))

    def items(self, lo: bytes, hi: bytes) -> list[tuple[bytes, bytes]]:
        i, j = self._span(lo, hi)
        t = self._tags
        return list(zip(self._slice(i, j), (t[k : k + TAG_LEN] for k in range(i * TAG_LEN, j * TAG_LEN, TAG_LEN))))

    def ids(self, lo: bytes, hi: bytes) -> list[bytes]:
        return self._slice(*self._span(lo, hi))

    def contains(self, id_: bytes) -> bool:
        i = self._pos(id_)
        return i < len(self._keys) and self._keys[i] == id_

    def _fp(self, i: int, j: int) -> bytes:
        return _fingerprint_blob(memoryview(self._blob)[i * ID_LEN : j * ID_LEN],
                                 memoryview(self._tags)[i * TAG_LEN : j * TAG_LEN])

    def fingerprint(self, lo: bytes, hi: bytes) -> bytes:
        return self._fp(*self._span(lo, hi))

    def buckets(self, lo: bytes, hi: bytes, parts: int, count: int) -> list[Bucket]:
        i, j = self._span(lo, hi)
        edges = [i + (count * k) // parts for k in range(parts)] + [j]
        keys = self._keys
        out = []
        for k in range(parts):
            a, b = edges[k], edges[k + 1]
            upper = hi if k == parts - 1 else separator(keys[b - 1], keys[b])
            out.append(Bucket(upper, self._fp(a, b)))
        return out


def _check_item(i: bytes, t: bytes) -> None:
    if not isinstance(i, bytes) or len(i) != ID_LEN:
        raise ValueError(f"ids must be {ID_LEN} bytes, got {len(i) if isinstance(i, bytes) else type(i).__name__}")
    if not isinstance(t, bytes) or len(t) != TAG_LEN:
        raise ValueError(f"tags must be {TAG_LEN} bytes")


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


class _Writer:
    """Builds one message: coalesces skips, compresses bounds."""

    def __init__(self) -> None:
        self.buf = bytearray([VERSION])
        self.prev = MIN_BOUND  # last bound written
        self.pending_skip: bytes | None = None
        self.ranges = 0

    def __len__(self) -> int:
        return len(self.buf)

    def _bound(self, upper: bytes) -> None:
        if upper == INF:
            self.buf.append(_INF_HEADER)
        else:
            p = upper.rstrip(b"\x00")
            shared = min(_common_prefix(self.prev, p), len(p) - 1, _MAX_SHARED)
            self.buf.append((shared << 4) | (len(p) - 1))
            self.buf += p[shared:]
        self.prev = upper

    def skip(self, upper: bytes) -> None:
        self.pending_skip = upper

    def _range(self, upper: bytes, mode: int) -> None:
        if self.pending_skip is not None:
            self._bound(self.pending_skip)
            self.buf.append(SKIP)
            self.pending_skip = None
        self._bound(upper)
        self.buf.append(mode)
        self.ranges += 1

    def fp(self, upper: bytes, fp: bytes) -> None:
        self._range(upper, FP)
        self.buf += fp

    def idlist(self, upper: bytes, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._range(upper, IDLIST)
        self.buf += encode_varint(len(items))
        self.buf += b"".join(i for i, _ in items)
        self.buf += b"".join(t for _, t in items)

    def diff(self, upper: bytes, yours_missing: Sequence[bytes], mine_missing: Sequence[bytes],
             conflicts: Sequence[bytes] = ()) -> None:
        self._range(upper, DIFF)
        for lst in (yours_missing, mine_missing, conflicts):
            self.buf += encode_varint(len(lst))
            self.buf += b"".join(lst)

    def finish(self) -> bytes | None:
        return bytes(self.buf) if self.ranges else None


class _Range(NamedTuple):
    lower: bytes
    upper: bytes
    mode: int
    fp: bytes = b""
    ids: tuple[bytes, ...] = ()
    ids2: tuple[bytes, ...] = ()
    ids3: tuple[bytes, ...] = ()
    tags: tuple[bytes, ...] = ()


def _read_ids(buf: memoryview, pos: int, lower: bytes, upper: bytes) -> tuple[tuple[bytes, ...], int]:
    n, pos = decode_varint(buf, pos)
    if n * ID_LEN > len(buf) - pos:
        raise ReconcileError(f"id list of {n} ids is longer than the rest of the message")
    raw = bytes(buf[pos : pos + n * ID_LEN])
    ids = tuple(raw[k : k + ID_LEN] for k in range(0, len(raw), ID_LEN))
    prev = None
    for i in ids:
        if not (lower <= i < upper):
            raise ReconcileError("id outside its range")
        if prev is not None and i <= prev:
            raise ReconcileError("ids not in ascending order")
        prev = i
    return ids, pos + n * ID_LEN


def decode_message(msg: bytes, max_message: int = DEFAULT_MAX_MESSAGE) -> list[_Range]:
    """Parse and validate a message; :class:`ReconcileError` on anything wrong."""
    if not isinstance(msg, (bytes, bytearray, memoryview)):
        raise ReconcileError("message must be bytes")
    if len(msg) > max_message:
        raise ReconcileError(f"message of {len(msg)} bytes exceeds the limit of {max_message}")
    buf = memoryview(bytes(msg))
    if len(buf) == 0:
        raise ReconcileError("empty message")
    if buf[0] != VERSION:
        raise ReconcileError(f"unsupported protocol version {buf[0]}")
    pos = 1
    lower = MIN_BOUND
    out: list[_Range] = []
    while pos < len(buf):
        if lower == INF:
            raise ReconcileError("range after the infinity bound")
        h = buf[pos]
        pos += 1
        if h == _INF_HEADER:
            upper = INF
        else:
            shared, length = h >> 4, (h & 0x0F) + 1
            if shared > _MAX_SHARED or shared >= length:
                raise ReconcileError(f"bad bound header 0x{h:02x}")
            take = length - shared
            if pos + take > len(buf):
                raise ReconcileError("truncated bound")
            prefix = lower[:shared] + bytes(buf[pos : pos + take])
            pos += take
            upper = prefix + bytes(ID_LEN - length)
        if upper <= lower:
            raise ReconcileError("range bounds do not increase")
        if pos >= len(buf):
            raise ReconcileError("truncated range: no mode")
        mode = buf[pos]
        pos += 1
        if mode == SKIP:
            out.append(_Range(lower, upper, SKIP))
        elif mode == FP:
            if pos + FP_LEN > len(buf):
                raise ReconcileError("truncated fingerprint")
            out.append(_Range(lower, upper, FP, fp=bytes(buf[pos : pos + FP_LEN])))
            pos += FP_LEN
        elif mode == IDLIST:
            ids, pos = _read_ids(buf, pos, lower, upper)
            if len(ids) * TAG_LEN > len(buf) - pos:
                raise ReconcileError("truncated tags of an id list")
            raw = bytes(buf[pos : pos + len(ids) * TAG_LEN])
            pos += len(raw)
            tags = tuple(raw[k : k + TAG_LEN] for k in range(0, len(raw), TAG_LEN))
            out.append(_Range(lower, upper, IDLIST, ids=ids, tags=tags))
        elif mode == DIFF:
            ids, pos = _read_ids(buf, pos, lower, upper)
            ids2, pos = _read_ids(buf, pos, lower, upper)
            ids3, pos = _read_ids(buf, pos, lower, upper)
            out.append(_Range(lower, upper, DIFF, ids=ids, ids2=ids2, ids3=ids3))
        else:
            raise ReconcileError(f"unknown range mode {mode}")
        lower = upper
    return out


# --------------------------------------------------------------------------
# The state machine
# --------------------------------------------------------------------------


class Step(NamedTuple):
    """What one :meth:`Reconciler.reconcile` call produced."""

    reply: bytes | None  # the message to send, or None: nothing more to say
    have: list[bytes]  # newly learned: ids we hold that the peer lacks
    need: list[bytes]  # newly learned: ids the peer holds that we lack


class Reconciler:
    """One side of a reconciliation. Not thread-safe; one per exchange.

    The storage must not change during an exchange in ways that matter (adding
    ids is harmless: they show up in a later sync). ``have``/``need`` learned so
    far are kept in :attr:`have` and :attr:`need` (memory grows with the
    number of differences, not with the size of the sets).
    """

    def __init__(
        self,
        storage: RangeStorage,
        *,
        buckets: int = 16,
        sparse_buckets: int = 4,
        idlist_threshold: int = 8,
        max_diff_ids: int = 4096,
        max_message: int = DEFAULT_MAX_MESSAGE,
        frame_limit: int = DEFAULT_FRAME_LIMIT,
    ):
        if not 2 <= sparse_buckets <= buckets <= 256:
            raise ValueError("need 2 <= sparse_buckets <= buckets <= 256")
        if idlist_threshold < 1:
            raise ValueError("idlist_threshold must be >= 1")
        if frame_limit + 3 * max_diff_ids * ID_LEN + 64 * buckets > max_message:
            raise ValueError("frame_limit plus one range's worth of output must fit in max_message")
        self.storage = storage
        self.buckets = buckets
        self.sparse_buckets = sparse_buckets
        self.idlist_threshold = idlist_threshold
        self.max_diff_ids = max_diff_ids
        self.max_message = max_message
        self.frame_limit = frame_limit
        self.have: set[bytes] = set()
        self.need: set[bytes] = set()
        #: ids both sides hold with different tags (contents): never synced, reported.
        self.conflicts: set[bytes] = set()
        self.messages_sent = 0
        self.bytes_sent = 0

    # -- helpers -------------------------------------------------------------

    def _sent(self, msg: bytes | None) -> bytes | None:
        if msg is not None:
            self.messages_sent += 1
            self.bytes_sent += len(msg)
        return msg

    def _split(self, out: _Writer, lo: bytes, hi: bytes, parts: int, count: int | None = None) -> None:
        """Describe our ids of ``[lo, hi)``: an id list if few, else bucket fingerprints."""
        c = self.storage.count(lo, hi) if count is None else count
        if c <= self.idlist_threshold:
            out.idlist(hi, self.storage.items(lo, hi))
            return
        for b in self.storage.buckets(lo, hi, min(parts, c), c):
            out.fp(b.upper, b.fp)

    def _learn(self, have: Iterable[bytes], need: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
        new_have = [i for i in have if i not in self.have]
        new_need = [i for i in need if i not in self.need]
        self.have.update(new_have)
        self.need.update(new_need)
        return new_have, new_need

    # -- protocol ------------------------------------------------------------

    def initiate(self) -> bytes:
        """The first message: our whole id space, as buckets or an id list."""
        out = _Writer()
        self._split(out, MIN_BOUND, INF, self.buckets)
        msg = out.finish()
        assert msg is not None
        return self._sent(msg)  # type: ignore[return-value]

    def reconcile(self, msg: bytes) -> Step:
        """Process a peer message; returns the reply and what was newly learned."""
        ranges = decode_message(msg, self.max_message)
        store = self.storage

        # First pass: which fingerprints differ, to choose the bucket count.
        mismatched: dict[int, int] = {}  # index -> our count there
        n_fp = 0
        for k, r in enumerate(ranges):
            if r.mode == FP:
                n_fp += 1
                if store.fingerprint(r.lower, r.upper) != r.fp:
                    mismatched[k] = store.count(r.lower, r.upper)
        parts = self.buckets if n_fp and 2 * len(mismatched) >= n_fp else self.sparse_buckets

        out = _Writer()
        have: list[bytes] = []
        need: list[bytes] = []
        conflicts: list[bytes] = []
        for k, r in enumerate(ranges):
            if len(out) > self.frame_limit:
                # Too much for one frame: the rest of the space goes as one
                # fingerprint and continues next round.
                out.fp(INF, store.fingerprint(r.lower, INF))
                break
            if r.mode == SKIP:
                out.skip(r.upper)
            elif r.mode == FP:
                if k in mismatched:
                    self._split(out, r.lower, r.upper, parts, mismatched[k])
                else:
                    out.skip(r.upper)
            elif r.mode == IDLIST:
                c = store.count(r.lower, r.upper)
                if c > self.max_diff_ids:
                    self._split(out, r.lower, r.upper, self.buckets, c)
                    continue
                ours = dict(store.items(r.lower, r.upper))
                theirs = dict(zip(r.ids, r.tags))
                they_lack = [i for i in ours if i not in theirs]
                we_lack = [i for i in r.ids if i not in ours]
                clash = [i for i in r.ids if i in ours and ours[i] != theirs[i]]
                have += they_lack
                need += we_lack
                conflicts += clash
                if they_lack or we_lack or clash:
                    out.diff(r.upper, they_lack, we_lack, clash)
                else:
                    out.skip(r.upper)
            else:  # DIFF: r.ids are ours to take, r.ids2 ours to give, r.ids3 in conflict
                need += [i for i in r.ids if not store.contains(i)]
                have += [i for i in r.ids2 if store.contains(i)]
                conflicts += [i for i in r.ids3 if store.contains(i)]
                out.skip(r.upper)
        self.conflicts.update(conflicts)
        new_have, new_need = self._learn(have, need)
        return Step(self._sent(out.finish()), new_have, new_need)
