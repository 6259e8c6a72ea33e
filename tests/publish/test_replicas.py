"""Publishing through two hub replicas on one PostgreSQL and one blob store (a shared
directory, or S3), behind a round-robin nginx with no affinity (tests/replicas.py).

A resumable upload is state in the database and pieces in the shared store, so any
replica continues it where it stands; two commits of one build id racing on two
replicas give the loser the documented ``build-exists``."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

MiB = 1 << 20
TETHER = str(Path(sys.executable).with_name("tether"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["fs", "s3"])
def replicas(request, replica_set):
    rs = replica_set(request.param)
    space = rs.make_space()
    _, token = rs.make_user(grants={space: "write"})
    return rs, space, token


def _cut_put(replica, token: str, upload_id: str, offset: int, data: bytes, send: int) -> None:
    """A PUT of ``data`` at ``offset`` whose connection drops after ``send`` bytes of the body."""
    s = socket.create_connection(("127.0.0.1", replica.port), timeout=30)
    head = (f"PUT /api/v1/uploads/{upload_id}?offset={offset} HTTP/1.1\r\nHost: 127.0.0.1:{replica.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    s.sendall(head + data[:send])
    time.sleep(0.5)
    s.close()


def test_a_resumable_upload_moves_between_replicas_and_continues_where_it_stands(replicas):
    rs, space, token = replicas
    a, b = rs.replicas
    data = os.urandom(12 * MiB + 12345)
    where = {"space": space, "type": "ci", "build": "moved"}
    with a.client(token) as ca, b.client(token) as cb:
        up = ca.post("/api/v1/uploads", json={**where, "digest": sha(data), "size": len(data)})
        assert up.status_code == 201, up.text
        uid = up.json()["id"]
        assert cb.get(f"/api/v1/uploads/{uid}").json()["offset"] == 0  # the other replica knows it
        r = cb.put(f"/api/v1/uploads/{uid}", params={"offset": 0}, content=data[: 3 * MiB])
        assert r.status_code == 200 and r.json()["offset"] == 3 * MiB, r.text
        # the next chunk lands on the first replica: it continues, it does not restart
        assert ca.get(f"/api/v1/uploads/{uid}").json()["offset"] == 3 * MiB
        r = ca.put(f"/api/v1/uploads/{uid}", params={"offset": 0}, content=data[: 3 * MiB])
        assert r.status_code == 409 and r.json()["offset"] == 3 * MiB  # a stale offset: where it stands
        # a chunk cut short on one replica keeps what arrived; the other carries on from there
        _cut_put(a, token, uid, 3 * MiB, data[3 * MiB : 9 * MiB], send=4 * MiB)
        deadline = time.monotonic() + 20
        while (at := cb.get(f"/api/v1/uploads/{uid}").json()["offset"]) == 3 * MiB and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 3 * MiB < at <= 7 * MiB
        r = cb.put(f"/api/v1/uploads/{uid}", params={"offset": at}, content=data[at:])
        assert r.status_code == 200 and r.json()["complete"] is True, r.text
        assert ca.get(f"/api/v1/uploads/{uid}").status_code == 404  # finished, on both
        entry = {"path": "big.bin", "digest": sha(data), "size": len(data)}
        assert ca.post(f"/api/v1/publish/{space}/ci/moved", json={"files": [entry]}).status_code == 201
    with rs.client(token) as c:  # through the balancer, whichever replica answers
        for _ in range(2):
            assert sha(c.get(f"/files/{space}/ci/moved/big.bin").content) == sha(data)


def test_the_same_chunk_on_both_replicas_at_once_counts_once(replicas):
    rs, space, token = replicas
    a, b = rs.replicas
    data = os.urandom(2 * MiB)
    with a.client(token) as ca:
        uid = ca.post("/api/v1/uploads", json={"space": space, "type": "ci", "build": "race", "digest": sha(data),
                                               "size": len(data)}).json()["id"]
    for start in (0, MiB):
        answers = []

        def put(replica):
            with replica.client(token) as c:
                answers.append(c.put(f"/api/v1/uploads/{uid}", params={"offset": start},
                                     content=data[start : start + MiB]))

        threads = [threading.Thread(target=put, args=(r,)) for r in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = sorted(r.status_code for r in answers)
        # one stored the chunk; the other was told where the upload stands (or, when it came
        # second, that the last chunk is already being stored / was stored): never a 500
        assert statuses[0] == 200 and statuses[1] in (200, 404, 409, 503), [r.text for r in answers]
    with rs.client(token) as c:
        assert c.post("/api/v1/blobs/missing", json={"space": space, "type": "ci", "build": "race",
                                                     "digests": [sha(data)]}).json()["missing"] == []


def test_two_commits_of_one_build_id_racing_on_two_replicas_get_build_exists(replica_set, pg_server):
    """The commits are held at the builds table (a lock the test takes) after each checked
    that the id is free, then let go together: one lands, the other is refused with the
    slug docs/publish.md names."""
    import psycopg

    rs = replica_set("fs")
    a, b = rs.replicas
    space = rs.make_space()
    _, token = rs.make_user(grants={space: "write"})
    one, two = os.urandom(100), os.urandom(100)
    with rs.client(token) as c:
        for d in (one, two):
            assert c.put(f"/api/v1/blobs/sha256/{sha(d)}", params={"space": space, "type": "ci", "build": "b"},
                         content=d).status_code in (200, 201)
    answers = {}

    def commit(replica, data):
        with replica.client(token) as c:
            answers[replica.port] = c.post(f"/api/v1/publish/{space}/ci/b",
                                           json={"files": [{"path": "f", "digest": sha(data), "size": 100}]})

    dsn = rs.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=False) as lock:
        lock.execute("LOCK TABLE builds IN SHARE ROW EXCLUSIVE MODE")  # reads pass, inserts wait
        threads = [threading.Thread(target=commit, args=(r, d)) for r, d in ((a, one), (b, two))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # both held: on the table, or the second behind the first on their token's row
            waiting = lock.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]
            if waiting == 2:
                break
            time.sleep(0.05)
        assert waiting == 2
        lock.rollback()
    for t in threads:
        t.join(30)
    statuses = sorted(r.status_code for r in answers.values())
    assert statuses == [201, 409], [r.text for r in answers.values()]
    lost = next(r for r in answers.values() if r.status_code == 409)
    assert lost.json()["type"] == "urn:tether:problem:build-exists", lost.text


def test_tether_publish_of_200_mib_through_the_round_robin_balancer(replicas, tmp_path):
    rs, space, token = replicas
    work = tmp_path / "w"
    (work / "out").mkdir(parents=True)
    big = work / "out" / "disk.img"
    h = hashlib.sha256()
    with open(big, "wb") as fh:
        for _ in range(200):
            block = os.urandom(MiB)
            h.update(block)
            fh.write(block)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update({"TETHER_HUB": rs.url, "TETHER_TOKEN": token, "XDG_CACHE_HOME": str(tmp_path / "cache"),
                "HOME": str(tmp_path)})
    r = subprocess.run([TETHER, "publish", "--type", "ci", "--space", space, "--json", "1", "out/**"],
                       env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes_sent"] < 210 * MiB  # no chunk was sent again from zero
    got = hashlib.sha256()
    with httpx.Client(base_url=rs.url, headers={"Authorization": f"Bearer {token}"}, timeout=300) as c:
        with c.stream("GET", f"/files/{space}/ci/1/out/disk.img") as resp:
            assert resp.status_code == 200
            for block in resp.iter_bytes(MiB):
                got.update(block)
    assert got.hexdigest() == h.hexdigest()
