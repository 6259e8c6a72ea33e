"""The local SQLite log: ids, immutability, bad input, and the reconciler adapter."""

from __future__ import annotations

import dataclasses
import os
import random
import stat
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.log.reconcile import INF, MIN_BOUND, Reconciler, SortedIds
from tether.log.store import (
    ConflictError,
    LogStore,
    NotFound,
    Record,
    RecordError,
    id_timestamp,
    make_record,
    parse_id,
    record_digest,
    uuid7,
)


@pytest.fixture
def store(tmp_path):
    s = LogStore(tmp_path / "d" / "log.db")
    yield s
    s.close()


def test_uuid7_shape_and_order(monkeypatch):
    ids = [uuid7() for _ in range(5000)]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert [u.bytes for u in ids] == sorted(u.bytes for u in ids)
    assert len(set(ids)) == len(ids)
    # the clock going back never breaks the order
    import tether.log.store as mod

    monkeypatch.setattr(mod, "_last", (0, 0))
    monkeypatch.setattr(mod.time, "time_ns", lambda: 2_000_000_000_000 * 10**6)
    a = uuid7()
    monkeypatch.setattr(mod.time, "time_ns", lambda: 1_000_000_000_000 * 10**6)
    b = uuid7()
    assert b.bytes > a.bytes and id_timestamp(b) == 2_000_000_000_000
    assert id_timestamp(uuid7(now_ms=5)) == 5
    assert parse_id(str(a)) == a


# a UUIDv4 and a UUIDv1 (fixed strings: xdist workers must collect the same ids)
@pytest.mark.parametrize("bad", ["", "nope", "0" * 32, "0ac4a016-a9c8-4132-92af-7facddd3d0a1", "x" * 100, "027a2814-e6e5-11f1-ac29-02fc00000001"])
def test_invalid_ids(bad, store):
    with pytest.raises(RecordError):
        parse_id(bad)
    with pytest.raises(RecordError):
        store.get(bad)


def test_file_modes(tmp_path):
    s = LogStore(tmp_path / "new" / "log.db")
    s.add("x", "alice")
    s.close()
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "log.db").st_mode) == 0o600


def test_add_get_list(store):
    r1 = store.add("hello", "alice", now_ms=1_700_000_000_000)
    r2 = store.add('{"a": 1}', "bob", kind="json", now_ms=1_700_000_000_500)
    assert store.get(r1.id) == r1
    assert r1.created == id_timestamp(uuid.UUID(r1.id)) == 1_700_000_000_000
    assert [r.id for r in store.list()] == [r1.id, r2.id]
    assert store.list(author="bob") == [r2]
    assert store.list(since=1_700_000_000_001) == [r2]
    assert store.list(since=2**60) == []
    assert r2.to_dict()["body"] == {"a": 1}
    with pytest.raises(NotFound):
        store.get(str(uuid7()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"body": "x" * (64 * 1024 + 1), "author": "a"}, "limit"),
        ({"body": "{nope", "author": "a", "kind": "json"}, "not valid JSON"),
        ({"body": "x", "author": ""}, "invalid author"),
        ({"body": "x", "author": "bad name"}, "invalid author"),
        ({"body": "x", "author": "a", "kind": "xml"}, "invalid kind"),
        ({"body": "a\x00b", "author": "a"}, "NUL"),
        ({"body": "\udc80", "author": "a"}, "UTF-8"),
    ],
)
def test_bad_records_write_nothing(store, kwargs, match):
    with pytest.raises(RecordError, match=match):
        store.add(**kwargs)
    assert len(store) == 0


def test_size_limit_is_configurable(tmp_path):
    s = LogStore(tmp_path / "log.db", max_body=10)
    s.add("x" * 10, "a")
    with pytest.raises(RecordError, match="limit of 10"):
        s.add("x" * 11, "a")


def test_insert_many_idempotent_and_conflicts_write_nothing(store):
    a = make_record("one", "alice")
    b = make_record("two", "alice")
    assert store.insert_many([a, b]) == 2
    assert store.insert_many([a, b]) == 0  # identical: a no-op
    c = make_record("three", "bob")
    evil = dataclasses.replace(a, body="rewritten")
    with pytest.raises(ConflictError) as err:
        store.insert_many([c, evil])
    assert err.value.ids == [a.id] and "different content" in str(err.value)
    assert len(store) == 2 and store.get(a.id).body == "one"
    with pytest.raises(ConflictError):  # two versions inside one batch
        store.insert_many([c, dataclasses.replace(c, author="mallory")])
    assert len(store) == 2


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: dataclasses.replace(r, id="not-a-uuid"), "invalid record id"),
        (lambda r: dataclasses.replace(r, id=str(uuid.uuid4())), "not a UUIDv7"),
        (lambda r: dataclasses.replace(r, created=r.created + 1), "does not match"),
        (lambda r: dataclasses.replace(r, created="soon"), "integer"),
        (lambda r: dataclasses.replace(r, id=123), "string"),
    ],
)
def test_bad_incoming_records_write_nothing(store, mutate, match):
    good = make_record("fine", "alice")
    with pytest.raises(RecordError, match=match):
        store.insert_many([good, mutate(make_record("x", "alice"))])
    assert len(store) == 0


def test_record_from_dict_roundtrip_and_rejects():
    r = make_record('{"k": [1, 2]}', "ci", kind="json")
    assert Record.from_dict(r.to_dict()) == dataclasses.replace(r, body='{"k":[1,2]}')
    for bad in [None, [], {"id": r.id}, {**r.to_dict(), "extra": 1}]:
        with pytest.raises(RecordError):
            Record.from_dict(bad)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 300))
def test_range_storage_snapshot_matches_in_memory(tmp_path_factory, seed, n):
    """The store's snapshot (one index scan) holds exactly its ids, in order."""
    rng = random.Random(seed)
    path = tmp_path_factory.mktemp("rs") / "log.db"
    with LogStore(path) as s:
        recs = [make_record(str(k), "a", now_ms=1_700_000_000_000 + rng.randrange(10**6)) for k in range(n)]
        s.insert_many(recs)
        rs, mem = s.range_storage(), SortedIds((r.id_bytes, record_digest(r)) for r in recs)
        assert rs.items(MIN_BOUND, INF) == mem.items(MIN_BOUND, INF) and len(rs) == n
        bounds = sorted({MIN_BOUND, *(rng.choice(recs).id_bytes for _ in range(3) if recs)})
        for lo in bounds:
            for hi in [INF, *(b for b in bounds if b > lo)]:
                assert rs.count(lo, hi) == mem.count(lo, hi)
                assert rs.fingerprint(lo, hi) == mem.fingerprint(lo, hi)
        if recs:
            assert rs.contains(recs[0].id_bytes) and not rs.contains(uuid7().bytes)


def test_two_sqlite_stores_sync(tmp_path):
    """End to end through the core: reconcile two stores, copy what each lacks."""
    with LogStore(tmp_path / "a.db") as a, LogStore(tmp_path / "b.db") as b:
        common = [make_record(f"c{k}", "ops") for k in range(2000)]
        a.insert_many(common)
        b.insert_many(common)
        only_a = [a.add(f"a{k}", "alice") for k in range(30)]
        only_b = [b.add(f"b{k}", "bob") for k in range(20)]
        ra, rb = Reconciler(a.range_storage()), Reconciler(b.range_storage())
        msg, side = ra.initiate(), rb
        while msg is not None:
            msg, _, _ = side.reconcile(msg)
            side = ra if side is rb else rb
        assert ra.have == {r.id_bytes for r in only_a} == rb.need
        assert ra.need == {r.id_bytes for r in only_b} == rb.have
        assert b.insert_many(a.get_many(ra.have)) == 30
        assert a.insert_many(b.get_many(rb.have)) == 20
        assert a.insert_many(b.get_many(rb.have)) == 0  # running it again changes nothing
        assert [r.id for r in a.list()] == [r.id for r in b.list()]


def test_record_digest_covers_every_field():
    r = make_record("body", "alice", now_ms=1_700_000_000_000)
    d = record_digest(r)
    assert len(d) == 8 and record_digest(dataclasses.replace(r)) == d
    for changed in (dict(body="body!"), dict(author="alicf"), dict(kind="json", body='"body"'),
                    dict(created=r.created + 1), dict(body="bo", author="dyalice")):
        assert record_digest(dataclasses.replace(r, **changed)) != d, changed


def test_a_log_made_before_content_tags_gets_them(tmp_path):
    """Opening a log.db of the earlier format adds the column and tags every record."""
    import sqlite3

    path = tmp_path / "old.db"
    recs = [make_record(f"m{k}", "ops", now_ms=1_700_000_000_000 + k) for k in range(50)]
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE records (id BLOB PRIMARY KEY CHECK (length(id) = 16), created INTEGER NOT NULL,
            author TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('text', 'json')), body TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE remotes (name TEXT PRIMARY KEY, url TEXT NOT NULL);
    """)
    conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                     [(r.id_bytes, r.created, r.author, r.kind, r.body) for r in recs])
    conn.commit()
    conn.close()
    with LogStore(path) as s:
        assert s.range_storage().items(MIN_BOUND, INF) == sorted((r.id_bytes, record_digest(r)) for r in recs)
        assert [r.id for r in s.list()] == [r.id for r in recs]
    with LogStore(path) as s:  # idempotent
        assert len(s.range_storage()) == 50
