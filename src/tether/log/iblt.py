"""Set reconciliation for logs that have drifted far apart: an estimate, then
invertible Bloom lookup tables (IBLTs) sized from it (protocol version 3).

A sans-IO core beside :mod:`tether.log.reconcile` (version 2, range-based), on
the same item sets: ascending 16-byte ids, each with an 8-byte content tag, as
two blobs (:class:`tether.log.reconcile.SortedIds`). The client drives a
:class:`DriftReconciler`; the hub answers each message with :func:`answer`,
statelessly (any replica can answer any round)::

    rec = DriftReconciler(client_items, salt=os.urandom(16))
    msg = rec.initiate()
    while msg is not None:
        msg = rec.receive(answer(hub_items, msg))
    rec.have, rec.need, rec.conflicts

How the sync decides
--------------------
Round 1 carries the client's count, a fingerprint of its whole set and a
*strata estimate*: every item is hashed (a keyed hash, the key derived from
the session's random salt) to a level (the hash's trailing zero bits: level
``t`` holds a share ``2**-(t+1)`` of the items) and a column, and each of the
``levels x columns`` cells holds the XOR of 16 bits of its items' checksums. The
hub compares them with its own: a cell differs when a difference falls in it,
so the share of differing cells per level gives a maximum-likelihood estimate
``d`` of the number of differences (within about 10%). Equal fingerprints: the
hub answers with an empty message and the sync is over. Otherwise the hub
picks the cheaper of

* an **IBLT** of ``1.45 d + 24`` cells (32 bytes each): every item is XORed
  into three cells (one in each third of the table) as ``id | tag | checksum``;
  the client XORs its own items in, and what is left are the differences,
  which it *peels*: a cell holding one item shows a checksum matching its
  contents, so that item is taken out of its other two cells, which may then
  hold one item, and so on. A decoded item the client holds is one to push; one
  it does not, to pull; an id decoded both ways (same id, different tags) is a
  conflict. Three cells per item decode with high probability once the table
  has more than 1.22 cells per difference;
* the hub's **whole list** of items (24 bytes each), when that is smaller (the
  logs share little): the client compares it with its own.

If peeling stops early (the estimate was low), the client counts the cells
that were empty before peeling to estimate the remaining differences closely
and asks for a fresh, smaller IBLT (new hash keys) for those; after
:data:`MAX_IBLT_ROUNDS` tables it asks for the list. Replies larger than the
client's ``max_reply`` come in parts (the hub recomputes; it keeps no state).

Keyed hashing: ids are chosen by writers, so a fixed hash would let a writer
make items that always share their three cells (they never peel) or whose
checksums cancel. Every hash here mixes in keys derived from the session's
salt, which no writer knew when its ids were made; a peer that crafts
collisions after learning the salt only spoils its own sync, which then ends
with the list.

Wire format (version 3)
-----------------------
::

    request = 0x03 ( 'B' salt[16] varint(n) fp[16] u8(levels) u8(columns) cell[2]*levels*columns varint(max_reply)
                   | 'I' salt[16] u8(round) varint(size) varint(offset) varint(max_reply)
                   | 'L' start[16] varint(max_reply) )
    reply   = empty                                  (only to 'B': the sets are equal)
            | 0x03 'I' varint(n) u8(round) varint(size) varint(offset) varint(count) cell[32]*count
            | 0x03 'L' varint(n) u8(more) varint(count) item[24]*count

``fp`` is :func:`tether.log.reconcile.fingerprint` of the whole set; an IBLT
cell is four little-endian 64-bit words (id high, id low, tag, checksum); a
list item is an id and its tag, ascending from ``start``. Parsing is strict:
anything truncated, oversized, out of order or over a limit raises
:class:`tether.log.reconcile.ReconcileError`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import numpy as np

from tether.log.reconcile import (
    ID_LEN,
    TAG_LEN,
    ReconcileError,
    SortedIds,
    _fingerprint_blob,
    decode_varint,
    encode_varint,
)

__all__ = ["VERSION", "DriftReconciler", "answer", "estimate_differences"]

VERSION = 0x03
SALT_LEN = 16
CELL_LEN = 32
ITEM_LEN = ID_LEN + TAG_LEN
COLUMNS = 64
MAX_LEVELS = 40
MAX_COLUMNS = 256
#: Most cells an IBLT may have (2**26 x 32 bytes = 2 GiB described, never held whole).
MAX_CELLS = 1 << 26
MAX_IBLT_ROUNDS = 3
#: Replies are cut at this many bytes (the client may ask for less).
DEFAULT_MAX_REPLY = 16 << 20
#: Nor less than this: each part of a table costs the hub a pass over its whole log,
#: so a client may not ask for it 4 KiB at a time.
MIN_REPLY = 1 << 20
#: IBLT size per estimated difference, and the constant on top.
OVERHEAD, EXTRA_CELLS = 1.45, 24
_CHUNK = 1 << 17  # items hashed at a time: memory stays bounded whatever the set size
_DOMAIN = b"tether-iblt-v1\x00"

_U = np.uint64
_C1, _C2 = _U(0xFF51AFD7ED558CCD), _U(0xC4CEB9FE1A85EC53)


# --------------------------------------------------------------------------
# Keyed hashing
# --------------------------------------------------------------------------


def _keys(salt: bytes, round_: int) -> tuple[np.uint64, ...]:
    d = hashlib.sha256(_DOMAIN + salt + bytes([round_])).digest()
    return tuple(_U(int.from_bytes(d[k : k + 8], "little")) for k in range(0, 32, 8))


def _fmix(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (a bijection), in place."""
    x ^= x >> _U(33)
    x *= _C1
    x ^= x >> _U(33)
    x *= _C2
    x ^= x >> _U(33)
    return x


def _hash(w: np.ndarray, keys: tuple[np.uint64, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For items as rows of three words: a keyed 64-bit hash and the checksum."""
    h = _fmix(w[:, 0] ^ keys[0])
    h ^= w[:, 1]
    h ^= keys[1]
    h = _fmix(h)
    h ^= w[:, 2]
    h ^= keys[2]
    h = _fmix(h)
    check = _fmix(h ^ keys[3])
    return h, check


def _positions(h: np.ndarray, size: int) -> np.ndarray:
    """Each item's three cells, one in each third of a table of ``size`` cells."""
    q = _U(size // 3)
    out = np.empty((3, len(h)), dtype=np.int64)
    for j in range(3):
        z = _fmix(h + _U((0x9E3779B97F4A7C15 * (j + 1)) & 0xFFFFFFFFFFFFFFFF))
        out[j] = ((z >> _U(32)) * q >> _U(32)).astype(np.int64) + j * (size // 3)
    return out


def _words(ids: memoryview | bytes, tags: memoryview | bytes) -> np.ndarray:
    n = len(ids) // ID_LEN
    w = np.empty((n, 3), dtype=np.uint64)
    w[:, 0:2] = np.frombuffer(ids, dtype=">u8").reshape(n, 2)
    w[:, 2] = np.frombuffer(tags, dtype=">u8")
    return w


def _chunks(items: SortedIds) -> Iterator[np.ndarray]:
    ids, tags = memoryview(items.ids_blob), memoryview(items.tags_blob)
    for k in range(0, len(items), _CHUNK):
        e = min(k + _CHUNK, len(items))
        yield _words(ids[k * ID_LEN : e * ID_LEN], tags[k * TAG_LEN : e * TAG_LEN])


def _to_items(w: np.ndarray) -> list[tuple[bytes, bytes]]:
    raw = w.astype(">u8").tobytes()
    return [(raw[k : k + ID_LEN], raw[k + ID_LEN : k + ITEM_LEN]) for k in range(0, len(raw), ITEM_LEN)]


# --------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------


def levels_for(n: int) -> int:
    return min(MAX_LEVELS, max(4, n.bit_length() + 3))


def strata(items: SortedIds, salt: bytes, levels: int, columns: int) -> np.ndarray:
    """The estimator's cells: ``levels x columns`` XORs of 16-bit checksums."""
    keys = _keys(salt, 0)
    cells = np.zeros(levels * columns, dtype=np.uint16)
    for w in _chunks(items):
        h, check = _hash(w, keys)
        low = h & (~h + _U(1))  # lowest set bit
        t = np.minimum(np.bitwise_count(low - _U(1)), levels - 1).astype(np.int64)
        col = ((h >> _U(40)) % _U(columns)).astype(np.int64)
        np.bitwise_xor.at(cells, t * columns + col, (check & _U(0xFFFF)).astype(np.uint16))
    return cells


def estimate_differences(mine: np.ndarray, theirs: np.ndarray, levels: int, columns: int) -> float:
    """Maximum-likelihood number of differences from two sides' strata cells."""
    diff = (mine != theirs).reshape(levels, columns).sum(axis=1).astype(np.float64)
    if not diff.any():
        return 0.0
    share = np.array([2.0 ** -(t + 1) for t in range(levels - 1)] + [2.0 ** -(levels - 1)])
    grid = np.geomspace(0.5, 8.0 * columns * 2.0 ** levels, 6000)
    lam = grid[:, None] * share[None, :] / columns
    with np.errstate(divide="ignore"):
        ll = (diff * np.log(-np.expm1(-lam)) - (columns - diff) * lam).sum(axis=1)
    return float(grid[int(np.argmax(ll))])


def _zero_estimate(zero: np.ndarray, size: int) -> float:
    """Differences in an IBLT of ``size`` cells from the share of its cells (given)
    that held none: each difference lands in one cell of each third."""
    frac = max(float(zero.mean()), 0.5 / max(len(zero), 1))
    return -math.log(frac) * (size // 3)


# --------------------------------------------------------------------------
# IBLTs
# --------------------------------------------------------------------------


def iblt(items: SortedIds, salt: bytes, round_: int, size: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Cells ``[lo, hi)`` (default: all) of the ``(4, size)`` table of ``items`` for
    IBLT round ``round_`` (>= 1): memory for those cells only, whatever ``size``."""
    keys = _keys(salt, round_)
    hi = size if hi is None else hi
    table = np.zeros((4, hi - lo), dtype=np.uint64)
    for w in _chunks(items):
        _xor_in(table, w, keys, size, lo)
    return table


def _xor_in(table: np.ndarray, w: np.ndarray, keys: tuple[np.uint64, ...], size: int, lo: int = 0) -> np.ndarray:
    """XOR items (rows of three words) and their checksums into their cells; ``table``
    holds cells ``lo`` onwards of a table of ``size``. Returns the items' positions."""
    h, check = _hash(w, keys)
    pos = _positions(h, size)
    whole = lo == 0 and table.shape[1] == size
    for j in range(3):
        p, sel = pos[j], slice(None)
        if not whole:
            inside = (p >= lo) & (p < lo + table.shape[1])
            p, sel = p[inside] - lo, inside
        for k in range(3):
            np.bitwise_xor.at(table[k], p, w[sel, k])
        np.bitwise_xor.at(table[3], p, check[sel])
    return pos


def _peel(table: np.ndarray, keys: tuple[np.uint64, ...]) -> np.ndarray:
    """Take every item out of ``table`` that can be; returns them (rows of three words)."""
    size = table.shape[1]
    third = size // 3
    found: list[np.ndarray] = []
    cand = np.flatnonzero(table.any(axis=0))
    total = 0
    while len(cand):
        w = np.ascontiguousarray(table[0:3, cand].T)
        h, check = _hash(w, keys)
        ok = check == table[3, cand]
        if ok.any():
            # a pure cell's item must also map to that very cell
            j = cand[ok] // third
            ok[ok] = _positions(h[ok], size)[j, np.arange(int(ok.sum()))] == cand[ok]
        if not ok.any():
            break
        _, first = np.unique(check[ok], return_index=True)  # an item pure in two cells: once
        w = w[ok][first]
        total += len(w)
        if total > size:  # an honest table yields at most one item per cell
            raise ReconcileError("the hub's IBLT does not decode consistently")
        found.append(w)
        pos = _xor_in(table, w, keys, size)
        cand = np.unique(pos)
        cand = cand[table[:, cand].any(axis=0)]
    return np.concatenate(found) if found else np.empty((0, 3), dtype=np.uint64)


# --------------------------------------------------------------------------
# Encoding helpers
# --------------------------------------------------------------------------


class _Reader:
    def __init__(self, msg: bytes, max_message: int):
        if not isinstance(msg, (bytes, bytearray, memoryview)):
            raise ReconcileError("message must be bytes")
        if len(msg) > max_message:
            raise ReconcileError(f"message of {len(msg)} bytes exceeds the limit of {max_message}")
        self.buf = memoryview(bytes(msg))
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ReconcileError(f"truncated {what}")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def varint(self, limit: int, what: str) -> int:
        v, self.pos = decode_varint(self.buf, self.pos)
        if v > limit:
            raise ReconcileError(f"{what} {v} is over the limit of {limit}")
        return v

    def byte(self) -> int:
        return self.take(1, "message")[0]

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ReconcileError("trailing bytes after the message")


def _header(r: _Reader) -> int:
    if len(r.buf) < 2:
        raise ReconcileError("empty message")
    if r.byte() != VERSION:
        raise ReconcileError(f"unsupported protocol version {r.buf[0]}")
    return r.byte()


def _iblt_reply(items: SortedIds, salt: bytes, round_: int, size: int, offset: int, max_reply: int) -> bytes:
    count = min(size - offset, max(1, (max_reply - 64) // CELL_LEN))
    part = iblt(items, salt, round_, size, offset, offset + count).T.astype("<u8")
    return (bytes([VERSION, ord("I")]) + encode_varint(len(items)) + bytes([round_]) + encode_varint(size)
            + encode_varint(offset) + encode_varint(count) + part.tobytes())


def _list_reply(items: SortedIds, start: bytes, max_reply: int) -> bytes:
    i = items.position(start)
    count = min(len(items) - i, max(1, (max_reply - 64) // ITEM_LEN))
    ids = items.ids_blob[i * ID_LEN : (i + count) * ID_LEN]
    tags = items.tags_blob[i * TAG_LEN : (i + count) * TAG_LEN]
    body = np.empty((count, ITEM_LEN), dtype=np.uint8)
    body[:, :ID_LEN] = np.frombuffer(ids, dtype=np.uint8).reshape(count, ID_LEN)
    body[:, ID_LEN:] = np.frombuffer(tags, dtype=np.uint8).reshape(count, TAG_LEN)
    more = i + count < len(items)
    return (bytes([VERSION, ord("L")]) + encode_varint(len(items)) + bytes([more]) + encode_varint(count)
            + body.tobytes())


def plan(n_hub: int, d: float) -> int:
    """The hub's choice for an estimate of ``d`` differences: an IBLT's size
    (cells, a multiple of 3), or 0 to send the whole list instead."""
    size = 3 * math.ceil((OVERHEAD * d + EXTRA_CELLS) / 3)
    if size > MAX_CELLS or size * CELL_LEN >= n_hub * ITEM_LEN:
        return 0
    return size


# --------------------------------------------------------------------------
# The hub's side
# --------------------------------------------------------------------------


def answer(items: SortedIds, msg: bytes, *, max_reply: int = DEFAULT_MAX_REPLY,
           max_message: int = 1 << 20) -> bytes | None:
    """The hub's reply to one version-3 message (``None``: the sets are equal)."""
    r = _Reader(msg, max_message)
    kind = _header(r)
    if kind == ord("B"):
        salt = r.take(SALT_LEN, "salt")
        r.varint(1 << 62, "count")
        fp = r.take(16, "fingerprint")
        levels, columns = r.byte(), r.byte() or 256
        if not 1 <= levels <= MAX_LEVELS:
            raise ReconcileError(f"{levels} estimator levels: 1 to {MAX_LEVELS}")
        theirs = np.frombuffer(r.take(2 * levels * columns, "estimator cells"), dtype="<u2")
        want = r.varint(1 << 40, "max_reply")
        r.end()
        if _fingerprint_blob(items.ids_blob, items.tags_blob) == fp:
            return None
        d = estimate_differences(strata(items, salt, levels, columns), theirs.astype(np.uint16), levels, columns)
        size = plan(len(items), d)
        cap = max(MIN_REPLY, min(max_reply, want))
        if size:
            return _iblt_reply(items, salt, 1, size, 0, cap)
        return _list_reply(items, bytes(ID_LEN), cap)
    if kind == ord("I"):
        salt = r.take(SALT_LEN, "salt")
        round_ = r.byte()
        size = r.varint(MAX_CELLS, "IBLT size")
        offset = r.varint(MAX_CELLS, "offset")
        want = r.varint(1 << 40, "max_reply")
        r.end()
        if not 1 <= round_ <= MAX_IBLT_ROUNDS or size < 3 or size % 3 or offset >= size:
            raise ReconcileError("bad IBLT request (round 1-3, size a multiple of 3, offset inside)")
        return _iblt_reply(items, salt, round_, size, offset, max(MIN_REPLY, min(max_reply, want)))
    if kind == ord("L"):
        start = r.take(ID_LEN, "start id")
        want = r.varint(1 << 40, "max_reply")
        r.end()
        return _list_reply(items, start, max(MIN_REPLY, min(max_reply, want)))
    raise ReconcileError(f"unknown version-3 message type {kind}")


# --------------------------------------------------------------------------
# The client's side
# --------------------------------------------------------------------------


class DriftReconciler:
    """The client's side of a version-3 exchange. One per sync; not thread-safe.

    After the exchange :attr:`have` (ids to push), :attr:`need` (ids to pull)
    and :attr:`conflicts` (ids both sides hold with different tags) are set;
    :attr:`method` says how it went (``equal``, ``iblt`` or ``list``).
    """

    def __init__(self, items: SortedIds, salt: bytes, *, max_reply: int = DEFAULT_MAX_REPLY,
                 columns: int = COLUMNS):
        if len(salt) != SALT_LEN:
            raise ValueError(f"the salt is {SALT_LEN} bytes")
        if not 1 <= columns <= MAX_COLUMNS:
            raise ValueError(f"1 to {MAX_COLUMNS} columns")
        self.items = items
        self.salt = salt
        self.max_reply = max(MIN_REPLY, max_reply)
        self.columns = columns
        self.levels = levels_for(len(items))
        self.have: set[bytes] = set()
        self.need: set[bytes] = set()
        self.conflicts: set[bytes] = set()
        self.method = ""
        self.rounds = 0
        self.bytes_sent = 0
        self._decoded: list[np.ndarray] = []  # items taken out in earlier IBLT rounds
        self._table: np.ndarray | None = None  # the IBLT being received
        self._round = 0
        self._listed = 0  # items of the hub's list received
        self._start = bytes(ID_LEN)  # where the next page of the list starts

    def _send(self, msg: bytes) -> bytes:
        self.bytes_sent += len(msg)
        return msg

    def initiate(self) -> bytes:
        cells = strata(self.items, self.salt, self.levels, self.columns)
        fp = _fingerprint_blob(self.items.ids_blob, self.items.tags_blob)
        return self._send(bytes([VERSION, ord("B")]) + self.salt + encode_varint(len(self.items)) + fp
                          + bytes([self.levels, self.columns % 256]) + cells.astype("<u2").tobytes()
                          + encode_varint(self.max_reply))

    def receive(self, reply: bytes | None) -> bytes | None:
        """Take the hub's reply; returns the next request, or ``None`` when done."""
        self.rounds += 1
        if reply is None or len(reply) == 0:
            if self.rounds > 1:
                raise ReconcileError("the hub ended the exchange early")
            self.method = "equal"
            return None
        r = _Reader(reply, self.max_reply + 64)
        kind = _header(r)
        if kind == ord("I"):
            return self._on_iblt(r)
        if kind == ord("L"):
            return self._on_list(r)
        raise ReconcileError(f"unknown version-3 reply type {kind}")

    # -- IBLTs ---------------------------------------------------------------

    def _on_iblt(self, r: _Reader) -> bytes | None:
        n_hub = r.varint(1 << 62, "count")
        round_ = r.byte()
        size = r.varint(MAX_CELLS, "IBLT size")
        offset = r.varint(MAX_CELLS, "offset")
        count = r.varint(MAX_CELLS, "cell count")
        body = r.take(count * CELL_LEN, "IBLT cells")
        r.end()
        if size < 3 or size % 3 or not count or offset + count > size or size > max(n_hub, 3):
            raise ReconcileError("the hub sent a malformed IBLT")  # (an honest one is smaller than the list)
        if offset == 0:
            if round_ != self._round + 1 or round_ > MAX_IBLT_ROUNDS:
                raise ReconcileError("the hub sent an IBLT out of turn")
            self._round = round_
            self._table = np.zeros((4, size), dtype=np.uint64)
        elif self._table is None or self._table.shape[1] != size or round_ != self._round:
            raise ReconcileError("the hub sent a part of an IBLT out of turn")
        self._table[:, offset : offset + count] = np.frombuffer(body, dtype="<u8").reshape(count, 4).T
        if offset + count < size:
            return self._send(self._iblt_request(size, offset + count))
        return self._decode(size)

    def _iblt_request(self, size: int, offset: int) -> bytes:
        return (bytes([VERSION, ord("I")]) + self.salt + bytes([self._round]) + encode_varint(size)
                + encode_varint(offset) + encode_varint(self.max_reply))

    def _decode(self, size: int) -> bytes | None:
        keys = _keys(self.salt, self._round)
        table = self._table
        assert table is not None
        table ^= iblt(self.items, self.salt, self._round, size)
        for w in self._decoded:  # differences already found: take them out too
            _xor_in(table, w, keys, size)
        empty_before = ~table.any(axis=0)
        found = _peel(table, keys)
        if len(found):
            self._decoded.append(found)
        self._table = None
        if not table.any():
            self.method = "iblt"
            self._classify(np.concatenate(self._decoded) if self._decoded else found)
            return None
        if self._round >= MAX_IBLT_ROUNDS:
            return self._start_list()
        # Peeling stopped: estimate what is left from the cells that were empty.
        left = max(_zero_estimate(empty_before, size) - len(found), float(table.any(axis=0).sum()) / 2, 1.0)
        nxt = 3 * math.ceil((1.3 * OVERHEAD * left + EXTRA_CELLS) / 3)
        if nxt * CELL_LEN >= len(self.items) * ITEM_LEN + size * CELL_LEN:
            return self._start_list()
        return self._send(bytes([VERSION, ord("I")]) + self.salt + bytes([self._round + 1])
                          + encode_varint(nxt) + encode_varint(0) + encode_varint(self.max_reply))

    def _classify(self, found: np.ndarray) -> None:
        raw = np.frombuffer(found.astype(">u8").tobytes(), dtype=np.uint8).reshape(len(found), ITEM_LEN)
        ids = np.ascontiguousarray(raw[:, :ID_LEN]).view("S16").ravel()
        tags = np.ascontiguousarray(raw[:, ID_LEN:]).view("S8").ravel()
        held, same = _lookup(self.items, ids, tags)
        have = _id_set(ids[held & same])
        need = _id_set(ids[~(held & same)])
        self.conflicts = (have & need) | _id_set(ids[held & ~same])
        self.have = have - self.conflicts
        self.need = need - self.conflicts

    # -- the list ------------------------------------------------------------

    def _start_list(self) -> bytes:
        """Give up on tables: the hub's whole list, compared with ours from scratch."""
        self.have, self.need, self.conflicts = set(), set(), set()
        self._start = bytes(ID_LEN)
        return self._send(self._list_request(self._start))

    def _list_request(self, start: bytes) -> bytes:
        return bytes([VERSION, ord("L")]) + start + encode_varint(self.max_reply)

    def _on_list(self, r: _Reader) -> bytes | None:
        """A page of the hub's list, from ``self._start``: compared at once with our
        items of the same span, so memory stays one page whatever the log's size."""
        r.varint(1 << 62, "count")
        more = r.byte()
        count = r.varint(1 << 40, "item count")
        body = np.frombuffer(r.take(count * ITEM_LEN, "items"), dtype=np.uint8).reshape(count, ITEM_LEN)
        r.end()
        if more not in (0, 1) or (more and not count):
            raise ReconcileError("the hub sent a malformed list")
        ids = np.ascontiguousarray(body[:, :ID_LEN]).tobytes()
        key = np.frombuffer(ids, dtype="S16")
        if count and (ids[:ID_LEN] < self._start or bool((key[1:] <= key[:-1]).any())):
            raise ReconcileError("the hub's list is not in ascending order from where it was asked")
        lo, hi = self.items.position(self._start), len(self.items)
        if more:
            last = int.from_bytes(ids[-ID_LEN:], "big")
            if last == (1 << 128) - 1:
                raise ReconcileError("the hub's list goes on past the last id")
            nxt = (last + 1).to_bytes(ID_LEN, "big")
            hi = self.items.position(nxt)
        mine = SortedIds.from_sorted_blob(self.items.ids_blob[lo * ID_LEN : hi * ID_LEN],
                                          self.items.tags_blob[lo * TAG_LEN : hi * TAG_LEN])
        theirs = SortedIds.from_sorted_blob(ids, np.ascontiguousarray(body[:, ID_LEN:]).tobytes())
        have, need, clash = compare(mine, theirs)
        self.have |= have
        self.need |= need
        self.conflicts |= clash
        self._listed += count
        if more:
            self._start = nxt
            return self._send(self._list_request(self._start))
        self.method = "list"
        return None


def _id_set(ids: np.ndarray) -> set[bytes]:
    return {bytes(x).ljust(ID_LEN, b"\0") for x in ids}  # numpy drops trailing NULs of bytes


def _lookup(mine: SortedIds, ids: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ids (S16) and tags (S8): which ids ``mine`` holds, and which with that tag."""
    a = np.frombuffer(mine.ids_blob, dtype="S16")
    ta = np.frombuffer(mine.tags_blob, dtype="S8")
    if not len(a):
        no = np.zeros(len(ids), dtype=bool)
        return no, no
    at = np.minimum(np.searchsorted(a, ids), len(a) - 1)
    held = a[at] == ids
    return held, held & (ta[at] == tags)


def compare(mine: SortedIds, theirs: SortedIds) -> tuple[set[bytes], set[bytes], set[bytes]]:
    """(ids only in ``mine``, ids only in ``theirs``, ids in both with different tags)."""
    b = np.frombuffer(theirs.ids_blob, dtype="S16")
    tb = np.frombuffer(theirs.tags_blob, dtype="S8")
    held, same = _lookup(mine, b, tb)
    a = np.frombuffer(mine.ids_blob, dtype="S16")
    ta = np.frombuffer(mine.tags_blob, dtype="S8")
    in_b_id, _ = _lookup(theirs, a, ta)
    return _id_set(a[~in_b_id]), _id_set(b[~held]), _id_set(b[held & ~same])
