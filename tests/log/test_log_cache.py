"""The hub's cache of each space's ids (``IdSnapshots``), on SQLite and PostgreSQL.

Two ``LogService`` objects on one database stand for two hub replicas, each with
its own cache: whatever one stores, the other's next reconciliation must see,
and a replica's own pushes update its copy without reading the ids again.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import pytest

from tether.auth.service import AuthContext, create_bootstrap_admin
from tether.config import HubSettings
from tether.db import Database
from tether.db.models import LogHead, Space, Token, User, utcnow
from tether.log.reconcile import NO_TAG, Reconciler, SortedIds
from tether.log.service import IdSnapshots, LogService
from tether.log.store import make_record, record_digest, record_from_wire

on_both = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def setup(url, tmp_path, **settings):
    db = Database(url)
    db.migrate()
    create_bootstrap_admin(db, now=utcnow())
    with db.write() as s:
        s.add(Space(name="logs"))
    with db.read() as s:
        admin = s.query(User).filter_by(name="admin").one()
        root = s.query(Token).filter_by(user_id=admin.id).one()
    hub = HubSettings(data_dir=tmp_path, database_url=url, **settings)
    return db, hub, lambda: AuthContext(user=admin, token=root)


def wire(n, start=0):
    return [asdict(make_record(f"m{start + i}", "admin")) for i in range(n)]


def diff(svc, ctx, local: list[tuple[bytes, bytes]]):
    """Reconcile ``local`` items against the service; (have, need, rounds)."""
    rec = Reconciler(SortedIds(local), frame_limit=4096)
    msg, rounds = rec.initiate(), 0
    while msg is not None:
        reply = svc.reconcile(ctx(), "logs", msg)
        rounds += 1
        if not reply:
            break
        msg = rec.reconcile(reply).reply
    return rec.have, rec.need, rounds


def ids_of(records):
    return [uuid.UUID(r["id"]).bytes for r in records]


def items_of(records):
    """What a client holding these records reconciles with: (id, content tag)."""
    return [(uuid.UUID(r["id"]).bytes, record_digest(record_from_wire(r))) for r in records]


@on_both
def test_rounds_are_served_from_one_load_and_pushes_keep_the_copy(database_url, tmp_path):
    db, hub, ctx = setup(database_url, tmp_path)
    svc = LogService(hub, db)
    records = wire(3000)
    for k in range(0, 3000, 1000):
        svc.push(ctx(), "logs", records[k : k + 1000])
    local = items_of(records[:2900]) + items_of(wire(40, start=10_000))
    have, need, rounds = diff(svc, ctx, local)
    assert rounds >= 3 and need == set(ids_of(records[2900:])) and len(have) == 40
    assert svc.snapshots.loads == 1  # every round after the first came from memory

    more = wire(25, start=20_000)
    assert svc.push(ctx(), "logs", more)["new"] == 25
    _, need, _ = diff(svc, ctx, local)
    assert need == set(ids_of(records[2900:] + more))
    assert svc.snapshots.loads == 1  # its own push was merged into the copy

    assert svc.push(ctx(), "logs", more)["new"] == 0  # known records change nothing
    with db.read() as s:
        assert s.get(LogHead, s.query(Space).filter_by(name="logs").one().id).records == 3025
    db.dispose()


@on_both
def test_a_replica_sees_what_another_stored(database_url, tmp_path):
    db, hub, ctx = setup(database_url, tmp_path)
    a, b = LogService(hub, db), LogService(hub, db)
    first = wire(500)
    a.push(ctx(), "logs", first)
    assert diff(a, ctx, items_of(first)) == (set(), set(), 1)
    later = wire(30, start=1000)
    b.push(ctx(), "logs", later)  # a's copy is now stale
    assert diff(a, ctx, items_of(first))[1] == set(ids_of(later))
    assert a.snapshots.loads == 2

    # Concurrent pushes through both replicas: afterwards each sees exactly the database.
    batches = [wire(40, start=5000 + 100 * k) for k in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda k: (a if k % 2 else b).push(ctx(), "logs", batches[k]), range(12)))
    everything = items_of(first + later) + [i for bt in batches for i in items_of(bt)]
    for svc in (a, b):
        assert diff(svc, ctx, everything) == (set(), set(), 1)
        assert diff(svc, ctx, items_of(first))[1] == {i for i, _ in everything} - set(ids_of(first))
    db.dispose()


@on_both
def test_the_cache_is_bounded(database_url, tmp_path):
    db, hub, ctx = setup(database_url, tmp_path, log_cache_bytes=24 * 150)
    svc = LogService(hub, db)
    svc.push(ctx(), "logs", wire(200))  # 3,200 bytes of ids: more than the cache holds
    for _ in range(3):
        diff(svc, ctx, [])
    assert svc.snapshots.loads == 3 and not svc.snapshots._items
    db.dispose()


@on_both
def test_records_stored_before_content_tags_get_them(database_url, tmp_path):
    """Migration 0006 tags every record already in the hub and makes cached ids stale."""
    from sqlalchemy import text

    db = Database(database_url)
    db.migrate("0005")
    recs = [record_from_wire(r) for r in wire(30)]
    with db.write() as s:
        s.execute(text("INSERT INTO spaces (id, name, description, created_at, public_builds) "
                       "VALUES (7, 'old', '', :t, false)"), {"t": utcnow()})
        s.execute(text("INSERT INTO log_records (space_id, id, created, author, kind, body, pushed_by, pushed_at) "
                       "VALUES (7, :id, :created, :author, :kind, :body, 'admin', :t)"),
                  [{"id": r.id_bytes, "created": r.created, "author": r.author, "kind": r.kind, "body": r.body,
                    "t": utcnow()} for r in recs])
        s.execute(text("INSERT INTO log_heads (space_id, version, records) VALUES (7, 'before', 30)"))
    db.migrate()
    with db.read() as s:
        got = dict(s.execute(text("SELECT id, digest FROM log_records WHERE space_id = 7")).all())
        assert s.execute(text("SELECT version FROM log_heads WHERE space_id = 7")).scalar() != "before"
    assert {bytes(k): bytes(v) for k, v in got.items()} == {r.id_bytes: record_digest(r) for r in recs}
    db.dispose()


def test_snapshot_lru_and_stale_merges():
    snaps = IdSnapshots(max_bytes=24 * 5)  # 24 bytes per record: id and tag
    ids = [bytes([k]) * 16 for k in range(1, 8)]
    snaps._put(1, "v1", SortedIds(ids[:2]))
    snaps._put(2, "v1", SortedIds(ids[2:4]))
    snaps.pushed(1, "v0", "v2", [(ids[6], NO_TAG)])  # not the version we hold: ignored
    assert snaps._items[1][0] == "v1"
    snaps.pushed(1, "v1", "v2", [(ids[6], NO_TAG)])
    assert snaps._items[1] == ("v2", snaps._items[1][1]) and len(snaps._items[1][1]) == 3
    # 7 ids > 5: the least recently used (2; 1 was just updated) goes.
    snaps._put(3, "v1", SortedIds(ids[4:6]))
    assert list(snaps._items) == [1, 3]


@on_both
def test_protocol_3_rounds_go_to_any_replica(database_url, tmp_path, monkeypatch):
    """Protocol 3 keeps nothing between messages: an IBLT sent in parts (small
    replies asked for) comes from two replicas in turn, and the client learns
    exactly the difference."""
    import os

    from tether.log import iblt
    from tether.log.iblt import DriftReconciler

    monkeypatch.setattr(iblt, "MIN_REPLY", 4096)  # parts of 4 KiB (1 MiB at least, normally)

    db, hub, ctx = setup(database_url, tmp_path)
    a, b = LogService(hub, db), LogService(hub, db)
    # 900 differences in 3,000: the table (about 1.45 cells of 32 bytes each) is
    # well under the hub's list (24 bytes a record) whatever the estimate's error,
    # so the method is the table's, in parts, not a random pick near the border
    # (800 records and 350 differences chose the list now and then).
    stored = wire(3000)
    for k in range(0, len(stored), 1000):
        a.push(ctx(), "logs", stored[k : k + 1000])
    mine = [(os.urandom(16), os.urandom(8)) for _ in range(300)]
    rec = DriftReconciler(SortedIds(items_of(stored[:2400]) + mine), os.urandom(16), max_reply=4096)
    msg, k = rec.initiate(), 0
    while msg is not None:
        msg = rec.receive((a, b)[k % 2].reconcile(ctx(), "logs", msg))
        k += 1
    assert rec.method == "iblt" and k >= 4
    assert rec.have == {i for i, _ in mine} and rec.need == set(ids_of(stored[2400:])) and not rec.conflicts
    db.dispose()
