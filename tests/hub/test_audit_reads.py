"""What a scoped token read is in the audit trail: downloads by scoped tokens are counted
per token and path over `audit_read_interval`, so a bulk download is one row per file
(with its count and the interval it covers); `tether audit --token` takes the whole
token. On two replicas sharing one PostgreSQL database the counts add up."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from datetime import datetime

from tests.hubproc import HubProcess

INTERVAL = 1  # the test hubs' audit_read_interval
ENV = {"TETHER_AUDIT_READ_INTERVAL": str(INTERVAL)}


def _publish(hub, token: str, space: str, files: dict[str, bytes]) -> None:
    with hub.client(token) as c:
        entries = []
        for path, data in files.items():
            digest = hashlib.sha256(data).hexdigest()
            c.put(f"/api/v1/blobs/sha256/{digest}", params={"space": space, "type": "ci", "build": "1"},
                  content=data).raise_for_status()
            entries.append({"path": path, "digest": digest, "size": len(data)})
        c.post(f"/api/v1/publish/{space}/ci/1", json={"files": entries}).raise_for_status()


def _audit(hub, token: str, admin: str | None = None) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "tether", "audit", "--token", token, "--json", "--hub", hub.url,
                        "--auth-token", admin or hub.admin_token], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [x for x in json.loads(r.stdout) if x["action"] == "publish.read"]


def _parse(t: str) -> datetime:
    return datetime.fromisoformat(t.replace("Z", "+00:00"))


def test_a_bulk_download_by_a_scoped_token_is_one_row_per_file(start_hub):
    hub = start_hub(env=ENV)
    space = hub.make_space()
    _, writer = hub.make_user(grants={space: "write"})
    _publish(hub, writer, space, {"a.bin": b"a" * 100, "b.bin": b"b" * 100})
    with hub.client(writer) as c:
        scoped = c.post("/api/v1/tokens", json={"scopes": [f"publish:{space}:read"], "expires": "1h"}).json()["token"]
    started = time.monotonic()
    with hub.client(scoped) as c:
        for _ in range(200):
            assert c.get(f"/files/{space}/ci/1/a.bin").status_code == 200
        assert c.get(f"/files/{space}/ci/1/b.bin").status_code == 200
        assert c.get(f"/files/{space}/ci/1/", params={"format": "json"}).status_code == 200
    with hub.client(writer) as c:  # an unscoped token (a person's own): not counted here
        assert c.get(f"/files/{space}/ci/1/a.bin").status_code == 200
    took = time.monotonic() - started
    time.sleep(INTERVAL + 1.5)  # an interval's rows are written at its end

    rows = _audit(hub, scoped)  # the whole token, as the job was handed it
    by_path: dict[str, list[dict]] = {}
    for r in rows:
        by_path.setdefault(r["resource"], []).append(r)
    a, b = f"space:{space}/ci/1/a.bin", f"space:{space}/ci/1/b.bin"
    assert sum(r["count"] for r in by_path[a]) == 200
    assert len(by_path[a]) <= int(took / INTERVAL) + 2  # one row per interval, not per request
    assert [r["count"] for r in by_path[b]] == [1] and by_path[b][0]["last_at"] is None
    many = max(by_path[a], key=lambda r: r["count"])
    assert many["count"] > 1 and _parse(many["last_at"]) > _parse(many["at"])  # the interval it covers
    assert {r["outcome"] for r in rows} == {"allowed"} and {r["status"] for r in rows} == {200}
    with hub.admin() as c:
        records = c.get("/api/v1/audit", params={"limit": 10_000}).json()["records"]
    writer_reads = [r for r in records if r["action"] == "publish.read" and r["token_id"] != rows[0]["token_id"]]
    assert writer_reads == []


def test_two_replicas_count_the_same_reads(start_hub, tmp_path):
    a = start_hub("postgresql", env=ENV | {"TETHER_BLOB_STORE": str(tmp_path / "blobs")})
    (tmp_path / "b").mkdir()
    b = HubProcess(tmp_path / "b" / "data", database_url=a.env["TETHER_DATABASE_URL"],
                   env=ENV | {"TETHER_BLOB_STORE": str(tmp_path / "blobs")}).start()
    try:
        space = a.make_space()
        _, writer = a.make_user(grants={space: "write"})
        _publish(a, writer, space, {"f.bin": b"f" * 10})
        with a.client(writer) as c:
            scoped = c.post("/api/v1/tokens", json={"scopes": [f"publish:{space}"], "expires": "1h"}).json()["token"]
        for replica in (a, b):
            with replica.client(scoped) as c:
                for _ in range(30):
                    assert c.get(f"/files/{space}/ci/1/f.bin").status_code == 200
        time.sleep(INTERVAL + 1.5)
        seen_a, seen_b = _audit(a, scoped), _audit(b, scoped, a.admin_token)
        assert seen_a == seen_b  # one database: the same answer from either
        assert sum(r["count"] for r in seen_a) == 60 and 2 <= len(seen_a) <= 6
    finally:
        b.stop()
