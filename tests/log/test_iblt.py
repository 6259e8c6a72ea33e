"""Protocol 3's sans-IO core (tether.log.iblt): the estimate, IBLTs, the list,
strict parsing, and ids crafted against its hashing."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.log import iblt
from tether.log.iblt import DriftReconciler, answer
from tether.log.reconcile import ReconcileError, SortedIds

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def items(pairs) -> SortedIds:
    return SortedIds(list(pairs))


def run(mine: SortedIds, theirs: SortedIds, salt: bytes = b"s" * 16, **kw):
    """A whole exchange in memory; returns the client and the bytes both ways."""
    rec = DriftReconciler(mine, salt, **kw)
    msg = rec.initiate()
    total = len(msg)
    while msg is not None:
        reply = answer(theirs, msg)
        total += len(reply or b"")
        msg = rec.receive(reply)
        total += len(msg or b"")
        assert rec.rounds < 50
    return rec, total


def check(a: dict[bytes, bytes], b: dict[bytes, bytes], **kw):
    rec, total = run(items(a.items()), items(b.items()), **kw)
    clash = {i for i in a.keys() & b.keys() if a[i] != b[i]}
    assert rec.have == a.keys() - b.keys()
    assert rec.need == b.keys() - a.keys()
    assert rec.conflicts == clash
    return rec, total


ids = st.binary(min_size=16, max_size=16)
tags = st.binary(min_size=8, max_size=8)


@SETTINGS
@given(common=st.dictionaries(ids, tags, max_size=300), a=st.dictionaries(ids, tags, max_size=60),
       b=st.dictionaries(ids, tags, max_size=60), salt=st.binary(min_size=16, max_size=16))
def test_random_sets_learn_exactly_the_difference(common, a, b, salt):
    check({**common, **a}, {**b, **common}, salt=salt)


@SETTINGS
@given(n=st.integers(0, 400), d=st.integers(0, 120), split=st.floats(0, 1), clashes=st.integers(0, 5),
       seed=st.integers(0, 2**32))
def test_every_split_of_the_differences(n, d, split, clashes, seed):
    """All differences on one side, on the other, or any share in between; same
    ids with other tags as conflicts, on top."""
    rng = random.Random(seed)
    common = {rng.randbytes(16): rng.randbytes(8) for _ in range(n)}
    mine = round(d * split)
    a = {**common, **{rng.randbytes(16): rng.randbytes(8) for _ in range(mine)}}
    b = {**common, **{rng.randbytes(16): rng.randbytes(8) for _ in range(d - mine)}}
    for i in list(common)[:clashes]:
        b[i] = bytes(8) if a[i] != bytes(8) else b"\1" * 8
    rec, _ = check(a, b, salt=rng.randbytes(16))
    assert rec.rounds <= 4


@pytest.mark.parametrize("d", [0, 1, 2, 10, 100, 1000])
def test_rounds_and_bytes_stay_near_the_floor(d):
    """Five thousand common items: equal sets take one round and a few KiB; d
    differences take one or two rounds and ~3-5x the 16-byte ids (24-byte items
    plus checksums, in 1.45 cells per difference)."""
    rng = random.Random(d)
    common = {rng.randbytes(16): rng.randbytes(8) for _ in range(5000)}
    a = {**common, **{rng.randbytes(16): bytes(8) for _ in range(d // 2)}}
    b = {**common, **{rng.randbytes(16): bytes(8) for _ in range(d - d // 2)}}
    rec, total = check(a, b)
    if d == 0:
        assert rec.method == "equal" and rec.rounds == 1 and total < 3000
    else:
        assert rec.method == "iblt" and rec.rounds <= 2
        assert total < 3200 + 80 * d  # the estimate (2 KiB here) and 24 spare cells, then ~48 B a difference


def test_disjoint_sets_use_the_list():
    rng = random.Random(1)
    a = {rng.randbytes(16): bytes(8) for _ in range(2000)}
    b = {rng.randbytes(16): bytes(8) for _ in range(2000)}
    rec, total = check(a, b)
    assert rec.method == "list" and total < 2000 * 24 + 4000


def test_replies_in_parts_when_larger_than_max_reply(monkeypatch):
    """A client asking for small replies gets the IBLT in parts and the list in
    pages; the answer is the same. (Replies of at least 1 MiB, normally: smaller
    here, to keep the sets small.)"""
    monkeypatch.setattr(iblt, "MIN_REPLY", 4096)
    rng = random.Random(2)
    common = {rng.randbytes(16): bytes(8) for _ in range(3000)}
    a = {**common, **{rng.randbytes(16): bytes(8) for _ in range(300)}}
    b = {**common, **{rng.randbytes(16): bytes(8) for _ in range(300)}}
    rec, _ = check(a, b, max_reply=4096)
    assert rec.method == "iblt" and rec.rounds >= 4
    rec, _ = check(a, {rng.randbytes(16): bytes(8) for _ in range(1000)}, max_reply=4096)
    assert rec.method == "list" and rec.rounds >= 6


def test_a_low_estimate_is_made_up_by_a_second_table(monkeypatch):
    """Peeling that stops (a table too small) asks for a second, fresh table for
    what is left, and still learns exactly the difference."""
    monkeypatch.setattr(iblt, "plan", lambda n, d: 3 * int(0.25 * d))  # the hub's first table: too small
    rng = random.Random(3)
    common = {rng.randbytes(16): bytes(8) for _ in range(4000)}
    a = {**common, **{rng.randbytes(16): bytes(8) for _ in range(200)}}
    b = {**common, **{rng.randbytes(16): bytes(8) for _ in range(200)}}
    rec, _ = check(a, b)
    assert rec.method == "iblt" and rec.rounds == 2


@pytest.mark.parametrize("d", [30, 300, 3000])
def test_the_estimate_is_close(d):
    rng = random.Random(d)
    common = [(rng.randbytes(16), bytes(8)) for _ in range(20000)]
    a = items(common + [(rng.randbytes(16), bytes(8)) for _ in range(d // 2)])
    b = items(common + [(rng.randbytes(16), bytes(8)) for _ in range(d // 2)])
    salt = rng.randbytes(16)
    levels = iblt.levels_for(len(a))
    est = iblt.estimate_differences(iblt.strata(a, salt, levels, 64), iblt.strata(b, salt, levels, 64), levels, 64)
    assert 0.7 * d <= est <= 1.4 * d


def test_chunked_hashing_matches_one_pass(monkeypatch):
    """Sets are hashed a chunk at a time and a part of a table is computed alone
    (bounded memory); the cells are the same."""
    rng = random.Random(4)
    s = items((rng.randbytes(16), rng.randbytes(8)) for _ in range(1000))
    whole = iblt.iblt(s, b"k" * 16, 1, 99), iblt.strata(s, b"k" * 16, 10, 64)
    assert np.array_equal(iblt.iblt(s, b"k" * 16, 1, 99, 40, 70), whole[0][:, 40:70])
    monkeypatch.setattr(iblt, "_CHUNK", 7)
    assert np.array_equal(iblt.iblt(s, b"k" * 16, 1, 99), whole[0])
    assert np.array_equal(iblt.strata(s, b"k" * 16, 10, 64), whole[1])


# ------------------------------------------------------------ adversarial ids


def crafted_pairs(salt: bytes, count: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    """Pairs of different (id, tag) items whose keyed hash is equal under ``salt``'s
    round-1 keys, so they share all three cells and their checksums cancel:
    made by someone who knows the salt (never a writer, who wrote before it existed)."""
    k = [int(x) for x in iblt._keys(salt, 1)]

    def fm(x: int) -> int:
        return int(iblt._fmix(np.array([x], dtype=np.uint64))[0])

    out = []
    for _ in range(count):
        x0, y0, x1, x2 = (rng.getrandbits(64) for _ in range(4))
        # fmix(fmix(x0^k0) ^ x1 ^ k1) must equal fmix(fmix(y0^k0) ^ y1 ^ k1)
        y1 = fm(x0 ^ k[0]) ^ x1 ^ fm(y0 ^ k[0])
        x = x0.to_bytes(8, "big") + x1.to_bytes(8, "big"), x2.to_bytes(8, "big")
        y = y0.to_bytes(8, "big") + y1.to_bytes(8, "big"), x2.to_bytes(8, "big")
        out.append((x, y))
    return out


def test_ids_crafted_for_one_salt_do_not_collide_under_another():
    """Each pair collides under the attacker's salt (same hash: same cells, the
    checksums cancel, nothing peels); a session's fresh salt pulls them apart and
    the IBLT decodes."""
    rng = random.Random(5)
    attacker_salt = b"A" * 16
    pairs = crafted_pairs(attacker_salt, 40, rng)
    w = np.array([[int.from_bytes(i[:8], "big"), int.from_bytes(i[8:], "big"), int.from_bytes(t, "big")]
                  for p in pairs for i, t in p], dtype=np.uint64)
    h, _ = iblt._hash(w, iblt._keys(attacker_salt, 1))
    assert all(h[2 * k] == h[2 * k + 1] for k in range(len(pairs)))
    common = {rng.randbytes(16): bytes(8) for _ in range(2000)}
    a = {**common, **{x[0]: x[1] for x, _ in pairs}}
    b = {**common, **{y[0]: y[1] for _, y in pairs}}
    rec, _ = check(a, b, salt=rng.randbytes(16))
    assert rec.method == "iblt" and rec.rounds == 1


def test_ids_crafted_for_the_sessions_salt_end_with_the_list():
    """A peer that learned the session's salt and crafted colliding items only
    spoils the IBLTs: the exchange still ends with exactly the difference."""
    rng = random.Random(6)
    salt = b"S" * 16
    pairs = crafted_pairs(salt, 60, rng)
    common = {rng.randbytes(16): bytes(8) for _ in range(2000)}
    a = {**common, **{x[0]: x[1] for x, _ in pairs}}
    b = {**common, **{y[0]: y[1] for _, y in pairs}}
    rec, _ = check(a, b, salt=salt)
    assert rec.method in ("iblt", "list")


# ------------------------------------------------------------ strict parsing


def _valid_messages():
    iblt.MIN_REPLY, saved = 4096, iblt.MIN_REPLY
    rng = random.Random(7)
    a = items((rng.randbytes(16), bytes(8)) for _ in range(300))
    b = items((rng.randbytes(16), bytes(8)) for _ in range(250))
    rec = DriftReconciler(a, b"p" * 16, max_reply=4096)
    msgs, replies = [rec.initiate()], []
    while msgs[-1] is not None:
        replies.append(answer(b, msgs[-1]))
        msgs.append(rec.receive(replies[-1]))
    iblt.MIN_REPLY = saved
    return a, b, [m for m in msgs if m], [r for r in replies if r]


A, B, MSGS, REPLIES = _valid_messages()


@SETTINGS
@given(k=st.integers(0, len(MSGS) - 1), cut=st.integers(0, 10_000), junk=st.binary(max_size=40))
def test_hub_refuses_truncated_or_garbled_requests(k, cut, junk):
    msg = MSGS[k]
    for bad in (msg[: cut % len(msg)], msg + junk[:1] if junk else msg + b"\0", junk):
        try:
            answer(B, bad)
        except ReconcileError:
            pass


@SETTINGS
@given(k=st.integers(0, len(REPLIES) - 1), cut=st.integers(1, 10_000), flip=st.integers(0, 10_000))
def test_client_refuses_truncated_or_garbled_replies(k, cut, flip):  # replies of 4 KiB (see _valid_messages)
    """Any reply cut short or with a byte changed: a ReconcileError or a wrong but
    bounded answer (the peer lied), never a hang or another exception."""
    for bad in (REPLIES[k][: cut % len(REPLIES[k])],
                REPLIES[k][: flip % len(REPLIES[k])] + bytes([REPLIES[k][flip % len(REPLIES[k])] ^ 0x5A])
                + REPLIES[k][flip % len(REPLIES[k]) + 1 :]):
        rec = DriftReconciler(A, b"p" * 16, max_reply=4096)
        rec.initiate()
        try:
            for reply in REPLIES[:k] + [bad]:
                rec.receive(reply)
        except ReconcileError:
            pass


def test_limits_are_enforced():
    with pytest.raises(ReconcileError, match="version"):
        answer(B, b"\x04B" + bytes(40))
    with pytest.raises(ReconcileError, match="limit"):
        answer(B, bytes([3, ord("I")]) + b"s" * 16 + b"\x01" + iblt.encode_varint(1 << 30) + b"\0\0")
    with pytest.raises(ReconcileError):
        answer(B, bytes([3, ord("B")]) + b"s" * 16 + b"\x00" + bytes(16) + bytes([0, 64]))
    with pytest.raises(ReconcileError, match="exceeds"):
        answer(B, bytes([3, ord("B")]) + bytes(2 << 20))


def test_a_hub_table_that_never_ends_peeling_is_refused():
    """A lying hub can build a table whose peeling would go round forever (an item
    pure in two cells puts itself back): refused, bounded."""
    salt = b"c" * 16
    a = items([])
    rec = DriftReconciler(a, salt)
    rec.initiate()
    size = 30
    keys = iblt._keys(salt, 1)
    w = np.array([[1, 2, 3]], dtype=np.uint64)
    h, check = iblt._hash(w, keys)
    pos = iblt._positions(h, size)[:, 0]
    table = np.zeros((4, size), dtype=np.uint64)
    for p in pos[:2]:
        table[:, p] = [1, 2, 3, int(check[0])]
    body = table.T.astype("<u8").tobytes()
    reply = (bytes([3, ord("I")]) + iblt.encode_varint(1000) + b"\x01" + iblt.encode_varint(size)
             + iblt.encode_varint(0) + iblt.encode_varint(size) + body)
    with pytest.raises(ReconcileError, match="does not decode"):
        rec.receive(reply)


def test_a_client_cannot_ask_for_tiny_parts():
    """Every part of a table costs the hub a pass over its log: parts are at least
    1 MiB whatever the client asks for."""
    req = (bytes([3, ord("I")]) + b"t" * 16 + b"\x01" + iblt.encode_varint(60_000) + iblt.encode_varint(0)
           + iblt.encode_varint(4096))
    reply = answer(B, req)
    assert len(reply) > 1 << 19 and (1 << 20) - 64 <= len(reply) <= 1 << 20
