"""The sans-IO reconciliation core: convergence, rounds, bytes, strict parsing."""

from __future__ import annotations

import math
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.log.reconcile import (
    INF,
    MIN_BOUND,
    NO_TAG,
    RangeStorage,
    ReconcileError,
    Reconciler,
    SortedIds,
    decode_message,
    decode_varint,
    encode_varint,
    fingerprint,
)


def sync(a_ids, b_ids, storage=SortedIds, **kw):
    """Run a whole exchange in memory; returns (A, B, rounds, total bytes)."""
    a, b = Reconciler(storage(a_ids), **kw), Reconciler(storage(b_ids), **kw)
    msg = a.initiate()
    rounds, total = 1, len(msg)
    side = b
    for _ in range(1000):
        reply, _have, _need = side.reconcile(msg)
        if reply is None:
            return a, b, rounds, total
        total += len(reply)
        if side is b:
            side = a
        else:
            side = b
            rounds += 1  # a round = one message from the initiator and its reply
        msg = reply
    raise AssertionError("did not terminate")


def round_bound(n: int) -> int:
    return math.ceil(math.log(max(n, 1), 16)) + 2


def check(a_ids, b_ids, **kw):
    a_set, b_set = set(a_ids), set(b_ids)
    a, b, rounds, total = sync(a_set, b_set, **kw)
    assert a.have == a_set - b_set and a.need == b_set - a_set
    assert b.have == b_set - a_set and b.need == a_set - b_set
    return rounds, total


def uuid7ish(rng: random.Random, ms: int) -> bytes:
    return ((ms << 80) | rng.getrandbits(80)).to_bytes(16, "big")


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------

ids16 = st.binary(min_size=16, max_size=16)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ids16, st.sampled_from(["a", "b", "ab"])), max_size=120))
def test_small_sets_converge(pool):
    a = {i for i, w in pool if "a" in w}
    b = {i for i, w in pool if "b" in w}
    rounds, _ = check(a, b)
    assert rounds <= round_bound(len(a | b))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n_common=st.integers(0, 4000),
    n_a=st.integers(0, 300),
    n_b=st.integers(0, 300),
    clustered=st.booleans(),
)
def test_random_pairs_converge_in_log16_rounds(seed, n_common, n_a, n_b, clustered):
    rng = random.Random(seed)
    if clustered:  # UUIDv7-like: a few bursts of records in time
        starts = [rng.randrange(2**40) for _ in range(3)]
        gen = lambda: uuid7ish(rng, rng.choice(starts) + rng.randrange(1000))
    else:
        gen = lambda: rng.getrandbits(128).to_bytes(16, "big")
    common = {gen() for _ in range(n_common)}
    a = common | {gen() for _ in range(n_a)}
    b = common | {gen() for _ in range(n_b)}
    rounds, _ = check(a, b)
    assert rounds <= round_bound(len(a | b))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n_common=st.integers(0, 3000),
    n_clash=st.integers(0, 40),
    n_a=st.integers(0, 100),
    n_b=st.integers(0, 100),
    frame=st.sampled_from([300, 4096, 1 << 20]),
)
def test_same_id_different_content_is_a_conflict_on_both_sides(seed, n_common, n_clash, n_a, n_b, frame):
    """Ids both hold with different tags are found (by both sides), never synced;
    everything else converges as usual."""
    rng = random.Random(seed)
    gen = lambda: rng.getrandbits(128).to_bytes(16, "big")
    tag = lambda: rng.getrandbits(64).to_bytes(8, "big")
    common = {gen(): tag() for _ in range(n_common)}
    clash = {gen() for _ in range(n_clash)}
    only_a = {gen(): tag() for _ in range(n_a)}
    only_b = {gen(): tag() for _ in range(n_b)}
    a_items = {**common, **only_a, **{i: b"A" * 8 for i in clash}}
    b_items = {**common, **only_b, **{i: b"B" * 8 for i in clash}}
    a, b, rounds, _ = sync(a_items.items(), b_items.items(), frame_limit=frame, max_diff_ids=64)
    assert a.conflicts == b.conflicts == clash
    assert a.have == b.need == set(only_a) and a.need == b.have == set(only_b)
    if frame == 1 << 20:
        assert rounds <= round_bound(len(a_items) + len(only_b))


def test_a_conflict_alone_changes_the_fingerprint():
    ids = [bytes([k]) * 16 for k in range(1, 50)]
    same = SortedIds(ids)
    other = SortedIds([(i, b"\x01" * 8 if k == 17 else NO_TAG) for k, i in enumerate(ids)])
    assert same.fingerprint(MIN_BOUND, INF) != other.fingerprint(MIN_BOUND, INF)
    assert same.fingerprint(MIN_BOUND, ids[17]) == other.fingerprint(MIN_BOUND, ids[17])
    assert same.count(MIN_BOUND, INF) == other.count(MIN_BOUND, INF) == 49
    with pytest.raises(ValueError, match="different tags"):
        SortedIds([(ids[0], NO_TAG), (ids[0], b"\x02" * 8)])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 3000), frame=st.integers(120, 2000))
def test_converges_with_tiny_frames(seed, n, frame):
    """Replies cut at the frame limit continue next round; nothing is lost."""
    rng = random.Random(seed)
    pool = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(n)]
    a = {i for i in pool if rng.random() < 0.7}
    b = {i for i in pool if rng.random() < 0.7}
    check(a, b, frame_limit=frame, max_diff_ids=64)


class ScanStorage(RangeStorage):
    """Only the two abstract methods: exercises the streaming defaults (as SQLite does)."""

    def __init__(self, ids):
        self._ids = sorted(set(ids))

    def count(self, lo, hi):
        return sum(1 for i in self._ids if lo <= i < hi)

    def iter_items(self, lo, hi):
        return ((i, NO_TAG) for i in self._ids if lo <= i < hi)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 400))
def test_streaming_default_storage_matches_in_memory(seed, n):
    rng = random.Random(seed)
    pool = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(n)]
    a = {i for i in pool if rng.random() < 0.8}
    b = {i for i in pool if rng.random() < 0.8}
    s1, s2 = SortedIds(a), ScanStorage(a)
    for _ in range(5):
        lo, hi = sorted(rng.sample(pool, 2)) if len(pool) >= 2 else (MIN_BOUND, INF)
        assert s1.fingerprint(lo, hi) == s2.fingerprint(lo, hi) == fingerprint(i for i in sorted(a) if lo <= i < hi)
        c = s1.count(lo, hi)
        if c >= 2:
            assert s1.buckets(lo, hi, min(4, c), c) == s2.buckets(lo, hi, min(4, c), c)
    check(a, b, storage=ScanStorage)


@given(st.integers(0, 2**63 - 1))
def test_varint_roundtrip(n):
    enc = encode_varint(n)
    assert decode_varint(enc, 0) == (n, len(enc))


# --------------------------------------------------------------------------
# examples
# --------------------------------------------------------------------------


def test_edge_cases():
    z, f = bytes(16), b"\xff" * 16
    assert check(set(), set())[0] == 1
    check({z}, set())
    check(set(), {f})
    check({z, f}, {f})
    many = {i.to_bytes(16, "big") for i in range(5000)}
    check(many, set())
    check(set(), many)
    evens = {i.to_bytes(16, "big") for i in range(0, 6000, 2)}
    odds = {i.to_bytes(16, "big") for i in range(1, 6000, 2)}
    rounds, _ = check(evens, odds)
    assert rounds <= round_bound(6000)


def test_equal_sets_take_one_round_and_few_bytes():
    rng = random.Random(1)
    s = {rng.getrandbits(128).to_bytes(16, "big") for _ in range(100_000)}
    rounds, total = check(s, s)
    assert rounds == 1 and total < 400


def test_million_vs_million_differing_by_100():
    """The issue's benchmark shape: 1,000,000 ids each side, 50 + 50 missing."""
    rng = random.Random(4)
    n = 1_000_000
    t0 = 1_700_000_000_000
    common = [uuid7ish(rng, t0 + 3 * k) for k in range(n - 50)]
    extra_a = [uuid7ish(rng, t0 + rng.randrange(3 * n)) for _ in range(50)]
    extra_b = [uuid7ish(rng, t0 + rng.randrange(3 * n)) for _ in range(50)]
    sa, sb = SortedIds(common + extra_a), SortedIds(common + extra_b)
    assert len(sa) == len(sb) == n
    start = time.perf_counter()
    a, b, rounds, total = _sync_stores(sa, sb)
    elapsed = time.perf_counter() - start
    assert a.have == set(extra_a) and a.need == set(extra_b)
    assert b.have == set(extra_b) and b.need == set(extra_a)
    beyond = total - 100 * 16
    print(f"\n1M vs 1M, 100 differences: {rounds} rounds, {total} bytes ({beyond} beyond the ids), {elapsed:.2f} s")
    assert rounds <= round_bound(n)  # 7
    assert beyond <= 64 * 1024  # time is measured in benchmarks/log_sync.py, not asserted here


def _sync_stores(sa, sb):
    a, b = Reconciler(sa), Reconciler(sb)
    msg = a.initiate()
    rounds, total, side = 1, len(msg), b
    while True:
        reply, _, _ = side.reconcile(msg)
        if reply is None:
            return a, b, rounds, total
        total += len(reply)
        side, rounds = (a, rounds) if side is b else (b, rounds + 1)
        msg = reply


# --------------------------------------------------------------------------
# bad input: ReconcileError, never anything else
# --------------------------------------------------------------------------


def _valid_messages():
    rng = random.Random(7)
    pool = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(300)]
    a = Reconciler(SortedIds(pool[:250]))
    b = Reconciler(SortedIds(pool[50:]))
    msgs = [a.initiate()]
    side = b
    while True:
        reply, _, _ = side.reconcile(msgs[-1])
        if reply is None:
            return msgs
        msgs.append(reply)
        side = a if side is b else b


@pytest.mark.parametrize(
    "msg, why",
    [
        (b"", "empty"),
        (b"\x01", "version"),  # version 1 (no tags) is refused
        (b"\x02\xf0", "no mode"),
        (b"\x02\xf0\x09", "unknown range mode"),
        (b"\x02\xf0\x01" + b"x" * 15, "truncated fingerprint"),
        (b"\x02\xf0\x02\x05" + b"x" * 16, "longer than the rest"),
        (b"\x02\xf0\x02\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "longer than the rest"),
        (b"\x02\xf0\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "varint too long"),
        (b"\x02\xf0\x02\x80", "truncated varint"),
        (b"\x02\xf0\x00\xf0\x00", "after the infinity"),
        (b"\x02\x00\x10\x00\x00\x00", "do not increase"),
        (b"\x02\x00\x00\x00", "do not increase"),
        (b"\x02\x10\x10\x00", "bad bound header"),
        (b"\x02\x0f" + b"\x02" * 10, "truncated bound"),
        (b"\x02\xf0\x02\x02" + b"\x02" * 16 + b"\x02" * 16, "ascending"),
        (b"\x02\x00\x10\x02\x01" + b"\x20" * 16, "outside its range"),
        (b"\x02\xf0\x03\x00", "truncated varint"),
        (b"\x02\xf0\x03\x00\x00", "truncated varint"),  # a DIFF without its conflicts list
        (b"\x02\xf0\x02\x01" + b"\x05" * 16 + b"\x00" * 7, "truncated tags"),
    ],
)
def test_malformed_messages(msg, why):
    r = Reconciler(SortedIds([bytes(16)]))
    with pytest.raises(ReconcileError, match=why):
        r.reconcile(msg)


def test_oversized_message_refused_before_parsing():
    r = Reconciler(SortedIds([]), max_message=2 * 1024 * 1024, frame_limit=256 * 1024)
    with pytest.raises(ReconcileError, match="exceeds the limit"):
        r.reconcile(b"\x01" + b"\x00" * (2 * 1024 * 1024))


def test_every_truncation_of_real_messages_is_clean():
    for msg in _valid_messages():
        for cut in range(len(msg)):
            r = Reconciler(SortedIds([bytes(16)]))
            try:
                r.reconcile(msg[:cut])
            except ReconcileError:
                pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_only_reconcile_errors(data):
    r = Reconciler(SortedIds([bytes(16), b"\x80" * 16, b"\xff" * 16]))
    for msg in (data, b"\x01" + data):
        try:
            r.reconcile(msg)
        except ReconcileError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_real_messages(data):
    msgs = _valid_messages()
    msg = bytearray(data.draw(st.sampled_from(msgs)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(msg) - 1))
        msg[pos] = data.draw(st.integers(0, 255))
    r = Reconciler(SortedIds(random.Random(7).getrandbits(128).to_bytes(16, "big") for _ in range(100)))
    try:
        r.reconcile(bytes(msg))
    except ReconcileError:
        pass


def test_decode_gives_contiguous_ranges():
    for msg in _valid_messages():
        lower = MIN_BOUND
        for rng_ in decode_message(msg):
            assert rng_.lower == lower < rng_.upper
            lower = rng_.upper


def test_bad_parameters():
    with pytest.raises(ValueError):
        Reconciler(SortedIds([]), buckets=1)
    with pytest.raises(ValueError):
        Reconciler(SortedIds([]), frame_limit=10**9)
    with pytest.raises(ValueError):
        SortedIds([b"short"])
