"""Two hub replicas on one database never hand out two different NATS servers for signal: with the
embedded server (one per replica) every replica refuses clearly; with a cluster configured, every
replica names the same one. Through the documented balancer, as a real site runs them."""

from __future__ import annotations

import os

import httpx


def nats_answers(rs, tries: int = 4) -> list[httpx.Response]:
    """POST /api/v1/signal/nats through the balancer (round robin: each replica in turn) and to each replica."""
    got = []
    with rs.client(rs.admin_token) as c:
        got += [c.post("/api/v1/signal/nats", json={}) for _ in range(tries)]
    for r in rs.replicas:
        with r.client(rs.admin_token) as c:
            got.append(c.post("/api/v1/signal/nats", json={}))
    return got


def test_embedded_nats_on_two_replicas_is_refused_clearly_then_served_by_the_one_left(replica_set):
    rs = replica_set(shared_ok=False)
    for r in nats_answers(rs):
        assert r.status_code == 409, r.text
        assert "each run their own embedded NATS" in r.json()["detail"] and "signal_nats" in r.json()["detail"]
    assert "another replica of this hub" in rs.log_text()  # the replica that started second said so at start
    # one replica left (the other stopped, its database session with it): it serves its NATS again
    rs.replicas[1].stop()
    with rs.replicas[0].client(rs.admin_token) as c:
        r = c.post("/api/v1/signal/nats", json={})
    assert r.status_code == 200, r.text
    assert "BEGIN NATS USER JWT" in r.json()["creds"]


def test_a_configured_cluster_is_the_same_answer_on_every_replica(replica_set):
    cluster = "nats://n1.example:4222,nats://n2.example:4222"
    rs = replica_set(shared_ok=False, env={"TETHER_SIGNAL_NATS": cluster})
    answers = nats_answers(rs)
    assert {r.status_code for r in answers} == {200}
    assert all(r.json() == {"servers": cluster.split(","), "creds": None, "expires": None} for r in answers)


def test_replica_guard_counts_live_holders_of_this_database_only(pg_server):
    from sqlalchemy import text

    from tether.db.engine import Database
    from tether.signal.embedded import ReplicaGuard

    dbs = [Database(pg_server.create_database(f"guard_{i}_{os.getpid()}")) for i in range(2)]
    try:
        one, two, elsewhere = ReplicaGuard(dbs[0]), ReplicaGuard(dbs[0]), ReplicaGuard(dbs[1])
        assert (one.others(), two.others(), elsewhere.others()) == (1, 1, 0)  # another database does not count
        two.close()
        assert one.others() == 0
        # a replica whose database session died stops counting, and closing it afterwards does not raise
        with dbs[0].connect() as c:
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                           "AND objid = :k"), {"k": 0x7E7E_0020})
        three = ReplicaGuard(dbs[0])
        assert three.others() == 0
        one.close()
        three.close()
        elsewhere.close()
    finally:
        for db in dbs:
            db.dispose()
