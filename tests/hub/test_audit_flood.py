"""A flood of requests without credentials leaves a bounded audit trail: one record per
source and reason per interval, with a count, and `tether audit` shows the count."""

from __future__ import annotations

import json
import subprocess
import sys
import time

BAD = "tth_0123456789abcdef_" + "B" * 43
INTERVAL = 1  # the test hub's audit_anonymous_interval


def _anonymous(hub) -> list[dict]:
    with hub.admin() as c:
        records = c.get("/api/v1/audit", params={"limit": 100_000}).json()["records"]
    return [r for r in records if r["user"] is None]


def test_a_flood_of_anonymous_refusals_is_counted_not_written_one_by_one(start_hub):
    h = start_hub(env={"TETHER_AUDIT_ANONYMOUS_INTERVAL": str(INTERVAL)})
    started = time.monotonic()
    with h.client() as c:
        assert {c.get("/api/v1/whoami").status_code for _ in range(2000)} == {401}
        assert {c.post("/api/v1/nothing-here").status_code for _ in range(100)} == {404}
    with h.client(BAD) as c:  # 60 unknown tokens, then the failure limiter's 429s
        assert {c.get("/api/v1/whoami").status_code for _ in range(100)} == {401, 429}
    took = time.monotonic() - started
    time.sleep(INTERVAL + 1)  # the last interval's records are written at its end
    rows = _anonymous(h)
    assert sum(r["count"] for r in rows) == 2200
    # one record per source and reason per interval: four reasons here
    assert len(rows) <= 4 * (int(took / INTERVAL) + 2), (len(rows), took)
    by_reason = {}
    for r in rows:
        by_reason[r["reason"].partition(":")[0]] = by_reason.get(r["reason"].partition(":")[0], 0) + r["count"]
    assert by_reason == {"unauthenticated": 2000, "not-found": 100, "invalid-token": 60, "too-many-failures": 40}
    assert {r["source"] for r in rows} == {"127.0.0.1"} and {r["outcome"] for r in rows} == {"denied", "failed"}
    # an authenticated refusal is still written on its own
    name, token = h.make_user()
    with h.client(token) as c:
        assert c.get("/api/v1/audit").status_code == 403
    with h.admin() as c:
        mine = c.get("/api/v1/audit", params={"user": name}).json()["records"]
    assert [(r["status"], r["count"]) for r in mine if r["outcome"] == "denied"] == [(403, 1)]
    shown = subprocess.run([sys.executable, "-m", "tether", "audit", "--hub", h.url, "--auth-token", h.admin_token,
                            "--json"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert sum(r["count"] for r in json.loads(shown.stdout) if r["user"] is None) == 2200
    table = subprocess.run([sys.executable, "-m", "tether", "audit", "--hub", h.url, "--auth-token", h.admin_token],
                           capture_output=True, text=True, timeout=60)
    assert table.stdout.splitlines()[0].split()[-3:] == ["count", "last_at", "reason"], table.stdout[:300]


def test_replicas_count_a_flood_in_one_record_per_interval_between_them(replica_set):
    """Two replicas behind the balancer, each counting half of a flood: their counts go
    into one record per source and reason per interval, not one per replica."""
    interval = 3
    rs = replica_set(shared_ok=False, env={"TETHER_AUDIT_ANONYMOUS_INTERVAL": str(interval)})
    try:
        with rs.client() as c:  # round-robin: half to each replica
            assert {c.get("/api/v1/whoami").status_code for _ in range(40)} == {401}
        time.sleep(2 * interval + 1)  # both replicas' intervals have ended and been written
        rows = [r for r in _anonymous(rs) if r["reason"].startswith("unauthenticated")]
        assert [r["count"] for r in rows] == [40], rows
        for replica in rs.replicas:  # each did count some of them
            with replica.client() as c:
                assert 'status="401"' in c.get("/metrics").text
    finally:
        rs.stop()
