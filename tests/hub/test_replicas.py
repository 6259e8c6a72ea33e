"""Two hub replicas on one PostgreSQL: no state that matters lives in one replica's memory."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.hubproc import HubProcess, unique


def test_revocation_and_use_counts_hold_across_replicas(replica_set):
    rs = replica_set(shared_ok=False)
    a, b = rs.replicas
    try:
        # The replicas started together; one created `admin`, the other found it and made no token.
        assert [(r.data_dir / "admin.token").exists() for r in rs.replicas].count(True) == 1
        with a.admin() as c:
            t = c.post("/api/v1/tokens", json={"expires": "1h"}).json()
            limited = c.post("/api/v1/tokens", json={"expires": "1h", "max_uses": 10}).json()
        with b.client(t["token"]) as c:
            assert c.get("/api/v1/whoami").status_code == 200
        with a.admin() as c:
            c.delete(f"/api/v1/tokens/{t['id']}").raise_for_status()
        with b.client(t["token"]) as c:
            r = c.get("/api/v1/whoami")
        assert r.status_code == 401 and r.json()["type"].endswith("token-revoked")

        def use(i):
            replica = a if i % 2 else b
            with replica.client(limited["token"]) as c:
                return c.get("/api/v1/whoami").status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(use, range(30)))
        assert statuses.count(200) == 10 and statuses.count(403) == 20
    finally:
        rs.stop()


def test_replicas_starting_together_on_an_empty_database_all_come_up(replica_set):
    rs = replica_set(n=3, shared_ok=False)  # ReplicaSet starts its hubs at the same moment
    try:
        assert [(r.data_dir / "admin.token").exists() for r in rs.replicas].count(True) == 1
        for r in rs.replicas:
            with r.admin() as c:
                users = c.get("/api/v1/users").json()["users"]
            assert [u["name"] for u in users] == ["admin"]
    finally:
        rs.stop()


def test_first_start_creates_one_admin_however_many_race(pg_server):
    """The first-start initialisation under a real race: eight starts at one barrier, on
    three empty databases. Exactly one creates `admin`; none fails."""
    from tether.auth.service import create_bootstrap_admin
    from tether.db import Database
    from tether.db.models import utcnow

    for _ in range(3):
        db = Database(pg_server.create_database(unique("boot").replace("-", "_")))
        db.migrate()
        barrier = threading.Barrier(8)

        def start():
            barrier.wait()
            return create_bootstrap_admin(db, now=utcnow())

        try:
            with ThreadPoolExecutor(8) as pool:
                made = [f.result() for f in [pool.submit(start) for _ in range(8)]]
        finally:
            db.dispose()
        assert sum(m is not None for m in made) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_acknowledged_change_keeps_its_audit_row_through_kill_9(start_hub, backend):
    """Every 2xx answer to a change is sent only once its audit row is committed: a hub
    killed (SIGKILL) the moment the client has its 201 has not lost the row."""
    hub = start_hub(backend)
    names = []
    for _ in range(3):
        name = unique("s")
        with hub.admin() as c:
            assert c.post("/api/v1/spaces", json={"name": name}).status_code == 201
        hub.proc.kill()  # at once, before anything batched after the answer could be written
        hub.proc.wait(10)
        hub.log.close()
        names.append(name)
        hub.start()
    with hub.admin() as c:
        recs = c.get("/api/v1/audit", params={"user": "admin", "limit": 1000}).json()["records"]
    recorded = [r["resource"] for r in recs if r["status"] == 201]
    assert all(any(n in res for res in recorded) for n in names), (names, recorded)


def test_database_outage_is_503_and_the_hub_recovers(tmp_path):
    from tests.services.postgres import PostgresServer

    pg = PostgresServer(tmp_path / "pg")
    pg.start()
    (tmp_path / "h").mkdir()
    h = HubProcess(tmp_path / "h" / "data", database_url=pg.create_database("outage"))
    try:
        h.start()
        with h.admin() as c:
            assert c.get("/api/v1/whoami").status_code == 200
        port = pg.port
        pg.stop()
        with h.admin() as c:
            for _ in range(3):  # every pooled connection is dead: each request is a 503, never a 500
                r = c.get("/api/v1/whoami")
                assert r.status_code == 503, r.text
        assert r.json()["type"] == "urn:tether:problem:storage-unavailable" and r.headers["retry-after"]
        pg.start(port=port)
        with h.admin() as c:
            statuses = [c.get("/api/v1/whoami").status_code for _ in range(25)]
        # at most the stale pooled connections fail once each, then it is back
        assert statuses[-5:] == [200] * 5, statuses
    finally:
        h.stop()
        pg.stop()
