"""The real ``tether publish`` refused by the real hub: a clear message, the exit code
DESIGN.md names, and nothing written (no build, no blob the hub would count as present)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TETHER = str(Path(sys.executable).with_name("tether"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Builder:
    """A space, its owner's token, a tree of five 1,000-byte files and a way to publish it."""

    def __init__(self, hub, tmp_path: Path):
        self.hub, self.tmp_path = hub, tmp_path
        self.space = hub.make_space()
        _, self.owner = hub.make_user(grants={self.space: "write"})
        self.work = tmp_path / "w"
        (self.work / "out").mkdir(parents=True)
        self.files = {f"out/f{i}.bin": os.urandom(1000) for i in range(5)}
        for rel, data in self.files.items():
            (self.work / rel).write_bytes(data)

    def publish(self, token: str, build: str, *extra: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env.update({"TETHER_HUB": self.hub.url, "TETHER_TOKEN": token,
                    "XDG_CACHE_HOME": str(self.tmp_path / "cache"), "HOME": str(self.tmp_path)})
        r = subprocess.run([TETHER, "publish", "--type", "ci", "--space", self.space, *extra, build, "out/**"],
                           env=env, cwd=self.work, capture_output=True, text=True, timeout=120)
        assert "Traceback" not in r.stderr, r.stderr
        return r

    def missing(self, digests: list[str]) -> list[str]:
        with self.hub.client(self.owner) as c:
            r = c.post("/api/v1/blobs/missing", json={"space": self.space, "type": "ci", "build": "probe",
                                                      "digests": digests})
            assert r.status_code == 200, r.text
            return r.json()["missing"]

    def nothing_written(self, build: str) -> None:
        with self.hub.client(self.owner) as c:
            assert c.get(f"/files/{self.space}/ci/{build}/", params={"format": "json"}).status_code == 404
        digests = [sha(d) for d in self.files.values()]
        assert sorted(self.missing(digests)) == sorted(digests)

    def child(self, **caveats) -> dict:
        with self.hub.client(self.owner) as c:
            r = c.post("/api/v1/tokens", json={"expires": "1h", **caveats})
            assert r.status_code == 201, r.text
            return r.json()

    def revoke(self, token_id: str) -> None:
        with self.hub.client(self.owner) as c:
            c.delete(f"/api/v1/tokens/{token_id}").raise_for_status()


@pytest.fixture
def builder(hub, tmp_path) -> Builder:
    return Builder(hub, tmp_path)


def test_a_token_too_small_for_the_tree_publishes_and_keeps_nothing(builder):
    small = builder.child(max_bytes=2500)["token"]
    r = builder.publish(small, "1")
    assert r.returncode == 4, r.stderr
    assert "byte" in r.stderr and "2500" in r.stderr, r.stderr
    builder.nothing_written("1")


@pytest.mark.parametrize("kind", ["wrong-source", "expired", "revoked"])
def test_a_token_that_may_not_be_used_publishes_nothing(builder, kind):
    if kind == "wrong-source":
        token, expect = builder.child(sources=["10.0.0.0/8"])["token"], "limited to sources 10.0.0.0/8"
    elif kind == "expired":
        token, expect = builder.child(expires="1s")["token"], "expired"
        time.sleep(1.2)
    else:
        minted = builder.child()
        builder.revoke(minted["id"])
        token, expect = minted["token"], "revoked"
    r = builder.publish(token, "1")
    assert r.returncode == 4, r.stderr
    assert expect in r.stderr, r.stderr
    builder.nothing_written("1")


def test_a_taken_build_id_is_refused_before_anything_is_sent(builder):
    assert builder.publish(builder.owner, "1").returncode == 0
    changed = os.urandom(1200)
    (builder.work / "out/f0.bin").write_bytes(changed)
    r = builder.publish(builder.owner, "1", "--json")
    assert r.returncode == 1, r.stderr
    assert "build 1 already exists; publish under a new id" in r.stderr
    assert builder.missing([sha(changed)]) == [sha(changed)]  # the changed file was not sent
