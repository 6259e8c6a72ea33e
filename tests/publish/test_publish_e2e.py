"""The whole flow as a new user runs it: the scheduler mints a scoped token, a builder
shell publishes with only that token (the real `tether publish`), then browse,
download, re-publish with dedup, and garbage-collect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

TETHER = str(Path(sys.executable).with_name("tether"))


def run(args, *, env, cwd, check=True):
    r = subprocess.run([TETHER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, r.stderr
    return r


def make_tree(root: Path) -> dict[str, bytes]:
    files = {}
    for i in range(40):
        files[f"out/f{i:02}.bin"] = os.urandom(1000 + i * 200)
    files["out/images/boot.img"] = os.urandom(3 << 20)
    files["out/images/system.img"] = os.urandom(70 << 20)  # > 64 MiB: the resumable path
    files["out/.hidden"] = b"not published by out/**"
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        past = time.time() - 3600  # settled files: the hash cache may keep them
        os.utime(p, (past, past))
    return files


def test_scheduler_builder_browse_dedup_gc(pub_hub, tmp_path):
    hub = pub_hub
    space = hub.make_space()
    sched, sched_token = hub.make_user(grants={space: "write"}, kind="service")
    base = {**os.environ, "TETHER_HUB": hub.url, "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "HOME": str(tmp_path)}
    base.pop("TETHER_TOKEN", None)
    # the trusted scheduler mints a narrow token for one job
    job = run(["token", "mint", "--scope", f"publish:{space}/android", "--expires", "1h", "--source", "127.0.0.0/8",
               "--max-files", "200", "--label", "job-1", "--json"], env={**base, "TETHER_TOKEN": sched_token},
              cwd=tmp_path)
    token = json.loads(job.stdout)["token"]
    builder = {**base, "TETHER_TOKEN": token}
    work = tmp_path / "build"
    files = make_tree(work)
    published = {k: v for k, v in files.items() if ".hidden" not in k}

    first = json.loads(run(["publish", "--type", "android", "--strip", "1", "--json", "eng-1", "out/**"],
                           env=builder, cwd=work).stdout)
    assert first["files"] == len(published) and first["deduplicated"] == 0
    assert first["bytes_sent"] == sum(map(len, published.values()))
    assert first["url"].startswith(hub.url) and first["path"] == "android/eng-1"  # space came from the token's scope

    with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        index = c.get(f"/files/{space}/android/eng-1/")
        assert "images/" in index.text and "f00.bin" in index.text and ".hidden" not in index.text
        assert c.get(f"/files/{space}/android/eng-1/images/boot.img").content == files["out/images/boot.img"]
        big = c.get(f"/files/{space}/android/eng-1/images/system.img", headers={"Range": "bytes=1000-1999"})
        assert big.status_code == 206 and big.content == files["out/images/system.img"][1000:2000]

    # unchanged re-publish under a new id: nothing hashed (cache), nothing sent (dedup)
    again = json.loads(run(["publish", "--type", "android", "--strip", "1", "--latest", "--json", "eng-2", "out/**"],
                           env=builder, cwd=work).stdout)
    assert again["bytes_hashed"] == 0 and again["bytes_sent"] == 0 and again["deduplicated"] == len(published)
    assert again["same_as"] == "android/eng-1"  # committed by the manifest's digest: the hub copied eng-1

    with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        assert c.get(f"/files/{space}/android/latest/f00.bin").content == files["out/f00.bin"]  # --latest
    # one file changed: only it travels
    changed = work / "out/f07.bin"
    changed.write_bytes(os.urandom(1400))
    third = json.loads(run(["publish", "--type", "android", "--strip", "1", "--json", "eng-3", "out/**"],
                           env=builder, cwd=work).stdout)
    assert third["bytes_sent"] == 1400 and third["uploaded"] == 1 and third["same_as"] is None

    # the same build id again is a clean "no"
    dup = run(["publish", "--type", "android", "--strip", "1", "eng-3", "out/**"], env=builder, cwd=work, check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    # outside the token's scope: refused, nothing published
    out = run(["publish", "--type", "ubuntu", "--space", space, "x-1", "out/f00.bin"], env=builder, cwd=work,
              check=False)
    assert out.returncode == 4
    # the budget was drawn: 3 builds of 42 files
    info = json.loads(run(["token", "inspect", "--json"], env=builder, cwd=work).stdout)
    assert info["files"] == 3 * len(published)

    # garbage collection as the admin: nothing referenced goes
    admin = {**base, "TETHER_TOKEN": hub.admin_token}
    gc = json.loads(run(["gc", "--json"], env=admin, cwd=tmp_path).stdout)
    assert gc["blobs_removed"] == 0
    with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"/files/{space}/android/eng-1/f07.bin").content == files["out/f07.bin"]


def test_builder_refuses_bad_local_input_and_sends_nothing(hub, tmp_path):
    space = hub.make_space()
    _, token = hub.make_user(grants={space: "write"})
    env = {**os.environ, "TETHER_HUB": hub.url, "TETHER_TOKEN": token, "XDG_CACHE_HOME": str(tmp_path / "c"),
           "HOME": str(tmp_path)}
    work = tmp_path / "w"
    (work / "out").mkdir(parents=True)
    (work / "out/ok.txt").write_text("ok")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not publish")
    (work / "out/link").symlink_to(secret)
    r = run(["publish", "--type", "ci", "--space", space, "1", "out/**"], env=env, cwd=work, check=False)
    assert r.returncode == 2 and "outside" in r.stderr
    (work / "out/link").unlink()
    (work / "out/OK.txt").write_text("clash")
    r = run(["publish", "--type", "ci", "--space", space, "1", "out/**"], env=env, cwd=work, check=False)
    assert r.returncode == 2 and "ok.txt" in r.stderr.lower()
    r = run(["publish", "--type", "ci", "--space", space, "1", "nothing/*"], env=env, cwd=work, check=False)
    assert r.returncode == 2
    with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"/files/{space}/ci/1/", params={"format": "json"}).status_code == 404
