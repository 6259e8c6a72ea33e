"""Routes and app instances share one set of names per user, also when two hub replicas
on one PostgreSQL are asked at the same moment: a forward of NAME through one replica
and a spawn of app NAME through the other, for the same user, raced many times; exactly
one wins each round, the other is refused 409 name-taken (and keeps no token)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import delete, select

from tether.apps.service import AppsService
from tether.auth import identities
from tether.auth import service as auth
from tether.config import HubSettings
from tether.db import Database
from tether.db.models import App, AppInstance, AppVersion, ForwardRoute, Space, Token, utcnow
from tether.forward.service import ForwardService
from tether.problems import Problem
from tests.hubproc import unique

ROUNDS = 25


@pytest.fixture
def replicas(pg_server):
    url = pg_server.create_database(unique("names").replace("-", "_"))
    first = Database(url)
    first.migrate()
    auth.create_bootstrap_admin(first, now=utcnow())
    admin = auth.context_for_user(first, "admin")
    identities.create_user(first, admin, "alice", "person", False)
    identities.create_space(first, admin, "apps", "")
    identities.set_grant(first, admin, "apps", "alice", "read")
    with first.write() as s:  # apps "n0".."n24" (their registration is not what is raced here)
        space = s.scalar(select(Space).where(Space.name == "apps"))
        for i in range(ROUNDS):
            app = App(space_id=space.id, name=f"n{i}", current_version="1", created_by="admin")
            s.add(app)
            s.flush()
            s.add(AppVersion(app_id=app.id, version="1", build_ref="apps/app/1", manifest="0" * 64, argv=["true"],
                             memory_bytes=64 << 20, cpu=0.5, pids=64, grants=[], created_by="admin"))
    settings = HubSettings(database_url=url)
    dbs = [first, Database(url)]  # two replicas: two engines, two pools, one database
    yield AppsService(settings, dbs[0]), ForwardService(settings, dbs[1]), first
    for db in dbs:
        db.dispose()


def test_a_name_raced_by_a_forward_and_a_spawn_goes_to_one(replicas):
    apps, forward, db = replicas
    alice = auth.context_for_user(db, "alice")
    outcomes = []
    for i in range(ROUNDS):
        name = f"n{i}"
        start = threading.Barrier(2)
        won: dict[str, object] = {}

        def spawn():
            start.wait()
            try:
                won["app"] = apps.spawn(alice, name)
            except Problem as p:
                won["app_refused"] = p

        def route():
            start.wait()
            try:
                won["route"] = forward.register("alice", name, node="10.0.0.9", holder="b#1")
            except Problem as p:
                won["route_refused"] = p

        threads = [threading.Thread(target=spawn), threading.Thread(target=route)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert ("app" in won) != ("route" in won), f"round {i}: {won}"
        refused = won.get("app_refused") or won.get("route_refused")
        assert refused.status == 409 and refused.slug == "name-taken" and name in refused.detail
        outcomes.append("app" if "app" in won else "route")
        with db.read() as s:  # exactly one row holds the name, and the loser's token is revoked
            instances = s.scalars(select(AppInstance).join(App).where(App.name == name)).all()
            routes = s.scalars(select(ForwardRoute).where(ForwardRoute.name == name)).all()
            assert len(instances) + len(routes) == 1
            live = s.scalars(select(Token.id).where(Token.user_id == alice.user.id, Token.revoked_at.is_(None))).all()
            assert len(live) == i + 1  # one per winner
    with db.write() as s:
        s.execute(delete(AppInstance))
    print("winners:", outcomes)
