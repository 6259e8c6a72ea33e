"""Two hub replicas on one PostgreSQL: no state that matters lives in one replica's memory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.hubproc import HubProcess, unique


def test_revocation_and_use_counts_hold_across_replicas(pg_server, tmp_path):
    url = pg_server.create_database(unique("replicas").replace("-", "_"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = HubProcess(tmp_path / "a" / "data", database_url=url).start()
    b = HubProcess(tmp_path / "b" / "data", database_url=url)
    try:
        b.start()
        # Only the first replica bootstrapped; the second found users and made no token.
        assert (a.data_dir / "admin.token").exists() and not (b.data_dir / "admin.token").exists()
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
        b.stop()
        a.stop()


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
