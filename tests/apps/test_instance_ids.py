"""Instance ids name sandboxes (``a1``: namespace, interfaces, nft sets, cgroups, /data),
so an id is never handed out twice, on SQLite as on PostgreSQL: after the newest
instance is removed, the next one gets a new id. Migration 0022 (SQLite: the table
copied with AUTOINCREMENT) keeps every instance, grant and share; downgrading it too."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text

from tether.apps import core
from tether.db import Database
from tether.db.models import App, AppGrant, AppInstance, AppShare, AppVersion, Space, User, utcnow

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def setup_rows(db: Database) -> tuple[int, int, int]:
    """A space, users alice and bob, an app with one version: (version id, alice's id, bob's id)."""
    now = utcnow()
    with db.write() as s:
        space = Space(name="apps")
        alice, bob = User(name="alice"), User(name="bob")
        s.add_all([space, alice, bob])
        s.flush()
        app = App(space_id=space.id, name="demo", current_version="1", created_by="olga", created_at=now)
        s.add(app)
        s.flush()
        version = AppVersion(app_id=app.id, version="1", build_ref="apps/app/1", manifest="0" * 64,
                             argv=["python3", "app.py"], memory_bytes=1 << 28, cpu=0.5, pids=64, grants=[],
                             created_by="olga", created_at=now)
        s.add(version)
        s.flush()
        return version.id, alice.id, bob.id


def spawn(db: Database, version_id: int, user_id: int) -> int:
    """An instance row as the service makes one (the uid derives from the id); its id."""
    now = utcnow()
    with db.write() as s:
        app_id = s.scalar(select(AppVersion.app_id).where(AppVersion.id == version_id))
        row = AppInstance(app_id=app_id, user_id=user_id, version_id=version_id, uid=-user_id, state="stopped",
                          desired="stopped", reason="", created_by="olga", created_at=now, last_activity_at=now)
        s.add(row)
        s.flush()
        row.uid = core.allocate_uid(row.id, 1_500_000_000, 1_000_000)
        return row.id


def rm(db: Database, instance_id: int) -> None:
    with db.write() as s:
        s.execute(delete(AppInstance).where(AppInstance.id == instance_id))


def children(db: Database) -> tuple[list, list]:
    with db.read() as s:
        grants = s.execute(select(AppGrant.instance_id, AppGrant.address, AppGrant.port)).all()
        shares = s.execute(select(AppShare.instance_id, AppShare.user_id, AppShare.read_only)).all()
    return [tuple(g) for g in grants], [tuple(x) for x in shares]


def test_an_instance_id_is_never_handed_out_again(database_url):
    db = Database(database_url)
    db.migrate()
    version, alice, bob = setup_rows(db)
    first = spawn(db, version, alice)
    rm(db, first)  # the newest instance removed: its id must not come back
    second = spawn(db, version, alice)
    assert core.instance_id(second) != core.instance_id(first)
    rm(db, second)
    third = spawn(db, version, bob)
    assert third not in (first, second) and third > second


def test_0022_keeps_instances_grants_and_shares(database_url):
    db = Database(database_url)
    db.migrate("0021")
    version, alice, bob = setup_rows(db)
    kept, gone = spawn(db, version, alice), spawn(db, version, bob)
    with db.write() as s:
        s.add(AppGrant(instance_id=kept, proto="tcp", address="192.0.2.10", port=5432, host="db.example",
                       created_by="olga", created_at=utcnow()))
        s.add(AppShare(instance_id=kept, user_id=bob, read_only=True, created_at=utcnow()))
    before = children(db)
    db.migrate()
    assert children(db) == before == ([(kept, "192.0.2.10", 5432)], [(kept, bob, True)])
    rm(db, gone)
    again = spawn(db, version, bob)
    assert again != gone
    if db.dialect == "sqlite":
        with db.read() as s:
            sql = s.scalar(text("SELECT sql FROM sqlite_master WHERE name = 'app_instances'"))
        assert "AUTOINCREMENT" in sql and "uq_app_instances_app_user" in sql
    db.downgrade("0021")
    assert children(db) == before
    with db.read() as s:
        assert sorted(s.scalars(select(AppInstance.id)).all()) == [kept, again]
