"""The failed-authentication limiter limits failures, not successes; behind a trusted proxy
it counts per client (X-Forwarded-For), and it believes that header from no one else."""

from __future__ import annotations

import pytest

BAD = "tth_0123456789abcdef_" + "B" * 43


def _statuses(hub, token: str, n: int, forwarded: str | None = None) -> list[int]:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with hub.client(token) as c:
        return [c.get("/api/v1/whoami", headers=headers).status_code for _ in range(n)]


def test_bad_tokens_do_not_lock_out_good_ones_from_the_same_source(start_hub):
    h = start_hub(env={"TETHER_AUTH_FAILURES_PER_MINUTE": "3"})
    assert _statuses(h, BAD, 5) == [401, 401, 401, 429, 429]
    # the broken client's neighbour (same address: a NAT) is still served, again and again
    assert _statuses(h, h.admin_token, 3) == [200, 200, 200]
    assert _statuses(h, BAD, 1) == [429]  # and the broken client is still told to back off
    with h.client() as c:  # no token at all from the limited source: refused as before
        assert c.get("/api/v1/whoami").status_code == 429


def test_behind_a_trusted_proxy_each_client_has_its_own_count(start_hub):
    proxied = start_hub(env={"TETHER_AUTH_FAILURES_PER_MINUTE": "3", "TETHER_FORWARDED_ALLOW_IPS": "127.0.0.1"})
    assert _statuses(proxied, BAD, 4, "10.0.0.1") == [401, 401, 401, 429]
    assert _statuses(proxied, BAD, 1, "10.0.0.2") == [401]  # another client behind the proxy
    # a client cannot leave its count by naming another address first: the proxy appends the real one
    assert _statuses(proxied, BAD, 1, "10.9.9.9, 10.0.0.1") == [429]
    assert _statuses(proxied, proxied.admin_token, 1, "10.0.0.1") == [200]

    direct = start_hub(env={"TETHER_AUTH_FAILURES_PER_MINUTE": "3"})  # no trusted proxy: the header is ignored
    assert _statuses(direct, BAD, 3, "10.0.0.1") == [401, 401, 401]
    assert _statuses(direct, BAD, 1, "10.0.0.2") == [429]


def test_a_trusted_proxy_that_is_no_address_is_refused_at_start(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TETHER_FORWARDED_ALLOW_IPS": "127.0.0.1, 10.0.0.l"}  # a typo: l for 1
    r = subprocess.run([sys.executable, "-m", "tether", "hub", "--data", str(tmp_path / "data"),
                        "--listen", "127.0.0.1:0"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'10.0.0.l' is not an address or a network" in r.stderr, r.stderr


# -- several replicas on one PostgreSQL: one budget per source -------------------------------------


def _from(address: str) -> dict:
    """httpx.Client options for requests from loopback address ``address`` (another source)."""
    import httpx

    return {"transport": httpx.HTTPTransport(local_address=address)}


def _not_near_a_minute_end(seconds: float = 20) -> None:
    """The shared counts are per minute of the clock: start a count with ``seconds`` of it to spare."""
    import time

    into = time.time() % 60
    if into > 60 - seconds:
        time.sleep(60 - into + 0.5)


def _failures(db, source: str) -> int:
    from sqlalchemy import func, select

    from tether.db.models import AuthFailure

    with db.read() as s:
        return s.scalar(select(func.coalesce(func.sum(AuthFailure.failures), 0)).where(AuthFailure.source == source))


def test_failures_split_across_replicas_share_one_budget(replica_set):
    from tether.db import Database

    rs = replica_set(n=2, env={"TETHER_AUTH_FAILURES_PER_MINUTE": "60"}, shared_ok=False)
    a, b = rs.replicas
    db = Database(rs.database_url)
    try:
        good = rs.make_user()[1]
        with a.client(good, **_from("127.0.0.4")) as c:  # successes write nothing, on any replica
            assert [c.get("/api/v1/whoami").status_code for _ in range(5)] == [200] * 5
        assert _failures(db, "127.0.0.4") == 0
        _not_near_a_minute_end()
        with a.client(BAD, **_from("127.0.0.2")) as ca, b.client(BAD, **_from("127.0.0.2")) as cb:
            statuses = [(ca if i % 2 else cb).get("/api/v1/whoami").status_code for i in range(60)]
            assert statuses == [401] * 60  # 30 on each replica: alone, each would allow 60
            r = cb.get("/api/v1/whoami")  # the 61st, on the replica that saw as many as the other
            assert r.status_code == 429 and r.json()["type"].endswith("too-many-failures")
            assert 1 <= int(r.headers["Retry-After"]) <= 60
            assert ca.get("/api/v1/whoami").status_code == 429
            assert cb.get("/api/v1/whoami").status_code == 429  # now from this replica's memory
        # the 61st was counted (it found the budget spent); the next two were refused from memory
        assert _failures(db, "127.0.0.2") == 61
        for hub in (a, b):  # a good token from another address works, on either replica
            with hub.client(good, **_from("127.0.0.3")) as c:
                assert c.get("/api/v1/whoami").status_code == 200
            with hub.client(BAD, **_from("127.0.0.3")) as c:  # and its failures have their own budget
                assert c.get("/api/v1/whoami").status_code == 401
            with hub.client(good, **_from("127.0.0.2")) as c:  # as does a good token from the limited source
                assert c.get("/api/v1/whoami").status_code == 200
    finally:
        db.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_racing_failures_on_two_replicas_get_exactly_the_budget(database_url):
    """Two limiters (two replicas' worth) on one database, 100 failures at once from one
    source: exactly 60 are let through as 401s, and once over, the next check asks no one."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import event

    from tether.auth.failures import SharedFailureLimiter
    from tether.db import Database
    from tether.db.models import AuthFailure

    db = Database(database_url)
    db.migrate()
    replicas = [SharedFailureLimiter(db, 60) for _ in range(2)]  # each its own pool, as in two hubs
    _not_near_a_minute_end()
    with db.write() as s:  # a count from two minutes ago: the first failure of a new minute sweeps it
        s.add(AuthFailure(source="192.0.2.9", minute=int(time.time() // 60) - 2, failures=5))
    with ThreadPoolExecutor(max_workers=16) as pool:
        waits = list(pool.map(lambda i: replicas[i % 2].failed("192.0.2.7", time.monotonic()), range(100)))
    assert waits.count(None) == 60 and all(1 <= w <= 60 for w in waits if w is not None)
    assert _failures(db, "192.0.2.7") == 100 and _failures(db, "192.0.2.9") == 0
    statements = []
    for engine in (*(r.engine for r in replicas), db.write_engine):
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert all(1 <= r.retry_after("192.0.2.7", time.monotonic()) <= 60 for r in replicas)
    assert replicas[0].retry_after("192.0.2.8", time.monotonic()) is None
    assert statements == []  # refusing a source known to be over costs no query
    assert replicas[0].failed("192.0.2.8", time.monotonic()) is None  # another source: its own budget
    for d in (db, *replicas):
        d.dispose()


def test_a_single_hub_on_sqlite_counts_in_its_memory(start_hub):
    """SQLite means one hub process: the limiter stays in its memory and the table stays empty."""
    from tether.db import Database

    h = start_hub(env={"TETHER_AUTH_FAILURES_PER_MINUTE": "2"})
    assert _statuses(h, BAD, 3) == [401, 401, 429]
    db = Database(f"sqlite:///{h.data_dir / 'tether.db'}")
    try:
        assert _failures(db, "127.0.0.1") == 0
    finally:
        db.dispose()
