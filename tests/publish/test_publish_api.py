"""Publishing over real HTTP against a running hub (SQLite and PostgreSQL; filesystem blobs).

Every bad input the issue names is refused with a clear error, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time

import pytest

from tests.hubproc import unique


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_blob(c, data: bytes, space, type_="ci", build="1", digest=None):
    digest = digest or sha(data)
    return c.put(f"/api/v1/blobs/sha256/{digest}", params={"space": space, "type": type_, "build": build}, content=data)


def missing(c, digests, space, type_="ci", build="1"):
    r = c.post("/api/v1/blobs/missing", json={"space": space, "type": type_, "build": build, "digests": digests})
    assert r.status_code == 200, r.text
    return r.json()["missing"]


def commit(c, space, files, type_="ci", build="1", **kw):
    return c.post(f"/api/v1/publish/{space}/{type_}/{build}", json={"files": files, **kw})


def entry(path, data, mode=0o644):
    return {"path": path, "digest": sha(data), "size": len(data), "mode": mode}


@pytest.fixture
def publisher(pub_hub):
    hub = pub_hub
    space = hub.make_space()
    name, token = hub.make_user(grants={space: "write"})
    return hub, space, token


def test_full_flow_upload_commit_download(publisher):
    hub, space, token = publisher
    files = {"out/boot.img": os.urandom(5000), "out/readme.txt": b"hello\n", "logs/build.log": b"ok\n" * 100}
    with hub.client(token) as c:
        digests = [sha(d) for d in files.values()]
        assert sorted(missing(c, digests, space)) == sorted(digests)
        for data in files.values():
            r = put_blob(c, data, space)
            assert r.status_code == 201, r.text
        assert missing(c, digests, space) == []  # "you already have it"
        r = commit(c, space, [entry(p, d) for p, d in files.items()], public=False)
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["path"] == "ci/1" and out["files"] == 3 and out["bytes"] == sum(map(len, files.values()))
        got = c.get(f"/files/{space}/ci/1/out/boot.img")
        assert got.status_code == 200 and got.content == files["out/boot.img"]
        assert got.headers["etag"] == f'"sha256:{sha(files["out/boot.img"])}"'
        assert got.headers["content-type"] == "application/octet-stream"
        assert c.get(f"/files/{space}/ci/1/out/readme.txt").headers["content-type"].startswith("text/plain")
        assert c.get(f"/files/{space}/ci/1/out/boot.img", headers={"If-None-Match": got.headers["etag"]}).status_code == 304
        part = c.get(f"/files/{space}/ci/1/out/boot.img", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == files["out/boot.img"][100:200]
        assert part.headers["content-range"] == "bytes 100-199/5000"
        tail = c.get(f"/files/{space}/ci/1/out/boot.img", headers={"Range": "bytes=-10"})
        assert tail.content == files["out/boot.img"][-10:]
        assert c.get(f"/files/{space}/ci/1/out/boot.img", headers={"Range": "bytes=9000-"}).status_code == 416
        index = c.get(f"/files/{space}/ci/1/")
        assert index.status_code == 200 and 'href="out/"' in index.text and 'href="logs/"' in index.text
        listing = c.get(f"/files/{space}/ci/1/out/", params={"format": "json"}).json()
        assert [e["name"] for e in listing["entries"]] == ["boot.img", "readme.txt"]
        top = c.get(f"/files/{space}/", params={"format": "json"}).json()
        assert top["entries"] == [{"name": "ci", "dir": True}]
    # private: no token, no file
    with hub.client() as anon:
        assert anon.get(f"/files/{space}/ci/1/out/readme.txt").status_code == 401
        assert anon.get(f"/files/{space}/", params={"format": "json"}).status_code == 404


def test_public_builds_need_no_token_and_cannot_script_the_hub(publisher):
    hub, space, token = publisher
    page = b"<script>alert(document.cookie)</script>"
    with hub.client(token) as c:
        put_blob(c, page, space, build="pub").raise_for_status()
        assert commit(c, space, [entry("x.html", page)], build="pub", public=True).status_code == 201
    with hub.client() as anon:
        r = anon.get(f"/files/{space}/ci/pub/x.html")
    assert r.status_code == 200 and r.content == page
    assert "sandbox" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_digest_mismatch_is_refused_and_nothing_stored(publisher):
    hub, space, token = publisher
    with hub.client(token) as c:
        lie = sha(b"something else")
        r = put_blob(c, b"the real bytes", space, digest=lie)
        assert r.status_code == 400 and r.json()["type"].endswith("blob-digest-mismatch")
        assert "nothing was stored" in r.json()["detail"]
        assert missing(c, [lie, sha(b"the real bytes")], space) == [lie, sha(b"the real bytes")]
        for bad in ["ABC", "../../etc/passwd", "0" * 63, "g" * 64]:
            r = c.put(f"/api/v1/blobs/sha256/{bad}", params={"space": space, "type": "ci", "build": "1"}, content=b"x")
            assert r.status_code in (400, 404), (bad, r.status_code)


@pytest.mark.parametrize("bad_path", [
    "../escape", "/etc/passwd", "a/../../b", "nul\x00byte", "bell\x07", "back\\slash", "a//b", "./a", "",
])
def test_bad_manifest_paths_are_refused(publisher, bad_path):
    hub, space, token = publisher
    data = b"payload"
    build = unique("b")
    with hub.client(token) as c:
        put_blob(c, data, space, build=build).raise_for_status()
        r = commit(c, space, [entry(bad_path, data)], build=build)
        assert r.status_code == 400, r.text
        assert r.json()["type"].endswith("invalid-manifest") and "nothing was published" in r.json()["detail"]
        assert c.get(f"/files/{space}/ci/{build}/", params={"format": "json"}).status_code == 404


def test_manifest_sizes_past_the_databases_integers_are_refused(publisher):
    hub, space, token = publisher
    with hub.client(token) as c:
        put_blob(c, b"x", space).raise_for_status()
        for size in (2**63, 10**30, -1):
            r = commit(c, space, [{**entry("a", b"x"), "size": size}], build="huge")
            assert r.status_code == 400 and r.json()["type"].endswith("invalid-manifest"), (size, r.text)
            assert "size must be an integer from 0 to" in r.json()["detail"]
        assert c.get(f"/files/{space}/ci/huge/", params={"format": "json"}).status_code == 404


def test_colliding_names_and_file_dir_clash_are_refused(publisher):
    hub, space, token = publisher
    data = b"x"
    with hub.client(token) as c:
        put_blob(c, data, space).raise_for_status()
        for files in (
            [entry("A.txt", data), entry("a.txt", data)],
            [entry("caf\u00e9", data), entry("cafe\u0301", data)],  # NFC vs NFD
            [entry("a", data), entry("a/b", data)],
        ):
            r = commit(c, space, files, build="coll")
            assert r.status_code == 400 and "invalid-manifest" in r.json()["type"], r.text
        assert c.get(f"/files/{space}/ci/coll/", params={"format": "json"}).status_code == 404


def test_manifest_naming_a_blob_never_uploaded(publisher):
    hub, space, token = publisher
    with hub.client(token) as c:
        put_blob(c, b"here", space).raise_for_status()
        r = commit(c, space, [entry("a", b"here"), entry("b", b"never uploaded")], build="nope")
        assert r.status_code == 400 and r.json()["type"].endswith("missing-blobs")
        assert r.json()["missing"] == [sha(b"never uploaded")]
        assert c.get(f"/files/{space}/ci/nope/a").status_code == 404


def test_manifest_with_a_wrong_size_or_a_missing_blob_among_thousands(publisher):
    """The commit's check names exactly the bad entries, wherever they sit in a long
    manifest (SQLite checks it in parts of at most 1,000)."""
    hub, space, token = publisher
    blobs = [f"blob {i}".encode() for i in range(2_100)]
    body = b"".join(f"{sha(b)} {len(b)}\n".encode() + b for b in blobs[:-1])  # the last is never sent
    with hub.client(token) as c:
        c.post("/api/v1/blobs/batch", params={"space": space, "type": "ci", "build": "big"},
               content=body).raise_for_status()
        files = [entry(f"f{i:04}", b) for i, b in enumerate(blobs)]
        r = commit(c, space, files, build="big")
        assert r.status_code == 400 and r.json()["type"].endswith("missing-blobs"), r.text
        assert r.json()["missing"] == [sha(blobs[-1])]
        files = files[:-1]
        files[1500] = {**files[1500], "size": files[1500]["size"] + 1}
        r = commit(c, space, files, build="big")
        assert r.status_code == 400 and r.json()["type"].endswith("invalid-manifest"), r.text
        assert f"a size that is not the uploaded blob's for 1 digest(s) (e.g. {files[1500]['digest']})" in r.json()["detail"]
        assert "nothing was published" in r.json()["detail"]
        assert c.get(f"/files/{space}/ci/big/", params={"format": "json"}).status_code == 404
        files[1500] = entry("f1500", blobs[1500])
        assert commit(c, space, files, build="big").status_code == 201


def test_knowing_a_digest_does_not_reach_another_spaces_blob(publisher):
    """Dedup is scoped per space: a blob stored for space A is "missing" for space B
    and B's manifest may not name it until B uploads the bytes itself (proof of
    possession) -- through a single, a batch or a resumable upload."""
    hub, space_a, token_a = publisher
    space_b = hub.make_space()
    _, token_b = hub.make_user(grants={space_b: "write"})
    secret, packed, big = os.urandom(3000), os.urandom(200), os.urandom(70_000)
    with hub.client(token_a) as c:
        put_blob(c, secret, space_a).raise_for_status()
        body = f"{sha(packed)} {len(packed)}\n".encode() + packed
        c.post("/api/v1/blobs/batch", params={"space": space_a, "type": "ci", "build": "1"}, content=body).raise_for_status()
        up = c.post("/api/v1/uploads", json={"space": space_a, "type": "ci", "build": "1", "digest": sha(big),
                                             "size": len(big)}).json()
        c.put(f"/api/v1/uploads/{up['id']}", params={"offset": 0}, content=big).raise_for_status()
        assert commit(c, space_a, [entry("s", secret), entry("p", packed), entry("b", big)]).status_code == 201
    names = [sha(secret), sha(packed), sha(big)]
    with hub.client(token_b) as c:
        assert missing(c, names, space_b) == names  # B is told nothing about A's content
        r = commit(c, space_b, [entry("stolen", secret)], build="x")
        assert r.status_code == 400 and r.json()["type"].endswith("missing-blobs"), r.text
        assert r.json()["missing"] == [sha(secret)]
        assert c.get(f"/files/{space_b}/ci/x/stolen").status_code == 404
        # B holds the bytes after all: uploading them is the proof, then it dedups as usual
        assert put_blob(c, secret, space_b).status_code == 201
        assert missing(c, names, space_b) == names[1:]
        assert commit(c, space_b, [entry("mine", secret)], build="y").status_code == 201
        assert c.get(f"/files/{space_b}/ci/y/mine").content == secret
    with hub.client(token_a) as c:  # A's own re-publish still dedups everything
        assert missing(c, names, space_a, build="2") == []
        assert commit(c, space_a, [entry("s", secret), entry("p", packed), entry("b", big)], build="2").status_code == 201


def test_oversized_manifest_is_refused(start_hub):
    h = start_hub(env={"TETHER_MAX_MANIFEST_BYTES": "4096"})
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "big"}).raise_for_status()
        files = [{"path": f"f{i}", "digest": "0" * 64, "size": 1} for i in range(200)]
        r = commit(c, "big", files)
        assert r.status_code == 413 and r.json()["type"].endswith("request-too-large")


def test_republish_is_409_unless_the_type_allows_overwrite(start_hub):
    types = json.dumps({"nightly": {"path": "nightly/{build_id}", "overwrite": True}, "release": {"path": "rel/{build_id}"}})
    h = start_hub(env={"TETHER_PUBLISH_TYPES": types})
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "b"}).raise_for_status()
        for data in (b"one", b"two"):
            put_blob(c, data, "b", type_="release").raise_for_status()
        assert commit(c, "b", [entry("f", b"one")], type_="release", build="1.0").status_code == 201
        r = commit(c, "b", [entry("f", b"two")], type_="release", build="1.0")
        assert r.status_code == 409 and "already exists" in r.json()["detail"]
        assert c.get("/files/b/rel/1.0/f").content == b"one"
        assert commit(c, "b", [entry("f", b"one")], type_="nightly", build="n").status_code == 201
        assert commit(c, "b", [entry("g", b"two")], type_="nightly", build="n").status_code == 201
        assert c.get("/files/b/nightly/n/g").content == b"two"
        assert c.get("/files/b/nightly/n/f").status_code == 404


def test_tokens_refused_for_publishing(publisher):
    hub, space, token = publisher
    data = b"artifact"
    with hub.client(token) as c:
        put_blob(c, data, space).raise_for_status()
        wrong_source = c.post("/api/v1/tokens", json={"sources": ["10.0.0.0/8"], "expires": "1h"}).json()["token"]
        scoped = c.post("/api/v1/tokens", json={"scopes": [f"publish:{space}/android"], "expires": "1h"}).json()
        revoked = c.post("/api/v1/tokens", json={"expires": "1h"}).json()
        c.delete(f"/api/v1/tokens/{revoked['id']}").raise_for_status()
        short = c.post("/api/v1/tokens", json={"expires": "1s"}).json()["token"]
    time.sleep(1.2)
    cases = [(wrong_source, 403, "token-source"), (scoped["token"], 403, "token-scope"),
             (revoked["token"], 401, "token-revoked"), (short, 401, "token-expired")]
    for t, status, slug in cases:
        with hub.client(t) as c:
            r = commit(c, space, [entry("a", data)], build=f"refused-{slug}")
            assert r.status_code == status and r.json()["type"].endswith(slug), r.text
            r = put_blob(c, b"more bytes " + slug.encode(), space, build="x")
            assert r.status_code == status
    with hub.client(token) as c:
        assert missing(c, [sha(b"more bytes token-scope")], space) != []
        for _, _, slug in cases:
            assert c.get(f"/files/{space}/ci/refused-{slug}/a").status_code == 404
    # the scoped token works inside its prefix (type "android" maps to android/BUILD)
    with hub.client(scoped["token"]) as c:
        put_blob(c, data, space, type_="android", build="7").raise_for_status()
        assert commit(c, space, [entry("a", data)], type_="android", build="7").status_code == 201


def test_budget_exhaustion_leaves_no_partial_build(publisher):
    hub, space, token = publisher
    blobs = [b"1", b"22", b"333"]
    with hub.client(token) as c:
        for b in blobs:
            put_blob(c, b, space).raise_for_status()
        limited = c.post("/api/v1/tokens", json={"max_files": 2, "max_bytes": 100, "expires": "1h"}).json()["token"]
    with hub.client(limited) as c:
        r = commit(c, space, [entry(f"f{i}", b) for i, b in enumerate(blobs)], build="over")
        assert r.status_code == 403 and r.json()["caveat"] == "max_files", r.text
        # a token never used: the message gives its limit, not "no budget left"
        assert r.json()["detail"].startswith("this request adds 3 files, but this token allows 2 files in all "
                                             "(max_files) and has used 0, leaving 2"), r.text
        assert c.get(f"/files/{space}/ci/over/f0").status_code == 404
        assert commit(c, space, [entry("f0", b"1"), entry("f1", b"22")], build="fits").status_code == 201
        info = c.get("/api/v1/tokens/self").json()
        assert (info["files"], info["bytes"]) == (2, 3)
        r = commit(c, space, [entry("f0", b"1")], build="after")
        assert r.status_code == 403 and r.json()["caveat"] == "max_files"
        assert "this token has reached its max_files limit of 2 files (2 used, none left)" in r.json()["detail"]


def test_batch_upload_many_small_blobs(publisher):
    hub, space, token = publisher
    blobs = [os.urandom(n) for n in (0, 1, 100, 5000, 70000)]
    body = b"".join(f"{sha(b)} {len(b)}\n".encode() + b for b in blobs)
    with hub.client(token) as c:
        r = c.post("/api/v1/blobs/batch", params={"space": space, "type": "ci", "build": "1"}, content=body,
                   headers={"content-type": "application/x-tether-blobs"})
        assert r.status_code == 200, r.text
        assert r.json()["stored"] == [sha(b) for b in blobs]
        assert missing(c, [sha(b) for b in blobs], space) == []
        bad = f"{sha(b'abc')} 3\n".encode() + b"abd"
        r = c.post("/api/v1/blobs/batch", params={"space": space, "type": "ci", "build": "1"}, content=bad)
        assert r.status_code == 400 and r.json()["type"].endswith("blob-digest-mismatch"), r.text
        assert sha(b"abc") in r.json()["detail"] and "nothing was stored" in r.json()["detail"], r.text
        assert missing(c, [sha(b"abc"), sha(b"abd")], space) == [sha(b"abc"), sha(b"abd")]
        r = c.post("/api/v1/blobs/batch", params={"space": space, "type": "ci", "build": "1"}, content=b"garbage\n")
        assert r.status_code == 400 and r.json()["type"].endswith("bad-frame")


def test_resumable_upload(publisher):
    hub, space, token = publisher
    data = os.urandom(300_000)
    with hub.client(token) as c:
        up = c.post("/api/v1/uploads", json={"space": space, "type": "ci", "build": "1", "digest": sha(data),
                                             "size": len(data)})
        assert up.status_code == 201, up.text
        uid = up.json()["id"]
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": 0}, content=data[:100_000])
        assert r.json() == {"id": uid, "offset": 100_000, "size": len(data), "complete": False}
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": 50_000}, content=data[50_000:60_000])
        assert r.status_code == 409 and r.json()["offset"] == 100_000
        assert c.get(f"/api/v1/uploads/{uid}").json()["offset"] == 100_000
        assert missing(c, [sha(data)], space) == [sha(data)]
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": 100_000}, content=data[100_000:])
        assert r.json()["complete"] is True
        assert missing(c, [sha(data)], space) == []
        assert c.get(f"/api/v1/uploads/{uid}").status_code == 404
        # a resumable upload whose bytes don't match its digest is refused at the end
        lie = c.post("/api/v1/uploads", json={"space": space, "type": "ci", "build": "1", "digest": sha(b"other"),
                                              "size": 5}).json()
        r = c.put(f"/api/v1/uploads/{lie['id']}", params={"offset": 0}, content=b"wrong")
        assert r.status_code == 400 and r.json()["type"].endswith("blob-digest-mismatch")
        assert missing(c, [sha(b"other"), sha(b"wrong")], space) == [sha(b"other"), sha(b"wrong")]
    other_name, other = hub.make_user(grants={space: "write"})
    with hub.client(other) as c:  # someone else's upload id is not theirs to touch
        up = c.post("/api/v1/uploads", json={"space": space, "type": "ci", "build": "1", "digest": sha(b"z"), "size": 1}).json()
    with hub.client(token) as c:
        assert c.get(f"/api/v1/uploads/{up['id']}").status_code == 404


def test_curl_recipe(publisher, tmp_path):
    hub, space, token = publisher
    art = tmp_path / "app.tar.gz"
    art.write_bytes(os.urandom(10_000))
    digest = subprocess.run(["sha256sum", str(art)], capture_output=True, text=True, check=True).stdout.split()[0]
    auth = ["-H", f"Authorization: Bearer {token}"]
    base = hub.url

    def curl(*args):
        r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *auth, *args], capture_output=True, text=True)
        body, _, code = r.stdout.rpartition("\n")
        return int(code), body

    code, body = curl("-X", "POST", "-H", "content-type: application/json", f"{base}/api/v1/blobs/missing",
                      "-d", json.dumps({"space": space, "type": "ci", "build": "9", "digests": [digest]}))
    assert code == 200 and json.loads(body)["missing"] == [digest]
    code, body = curl("-T", str(art), f"{base}/api/v1/blobs/sha256/{digest}?space={space}&type=ci&build=9")
    assert code == 201, body
    manifest = json.dumps({"files": [{"path": "app.tar.gz", "digest": digest, "size": 10_000}]})
    code, body = curl("-X", "POST", "-H", "content-type: application/json",
                      f"{base}/api/v1/publish/{space}/ci/9", "-d", manifest)
    assert code == 201, body
    code, body = curl("-T", str(art), f"{base}/api/v1/publish/{space}/ci/10/dist/app.tar.gz")
    assert code == 201, body
    with hub.client(token) as c:
        assert c.get(f"/files/{space}/ci/10/dist/app.tar.gz").content == art.read_bytes()
        assert c.get(f"/files/{space}/ci/9/app.tar.gz").content == art.read_bytes()
    code, body = curl("-T", str(art), f"{base}/api/v1/publish/{space}/ci/11/..%2Fx")
    assert code == 400, body


def test_latest_pointer(publisher):
    hub, space, token = publisher
    with hub.client(token) as c:
        for b in ("1", "2"):
            put_blob(c, b.encode(), space).raise_for_status()
            assert commit(c, space, [entry("v", b.encode())], build=b, latest=(b == "1")).status_code == 201
        assert c.get(f"/files/{space}/ci/latest/v").content == b"1"
        # the type's index lists latest beside the builds, in JSON and HTML
        names = [e["name"] for e in c.get(f"/files/{space}/ci/", params={"format": "json"}).json()["entries"]]
        assert names == ["1", "2", "latest"]
        assert 'href="latest/"' in c.get(f"/files/{space}/ci/").text
        assert [e["name"] for e in c.get(f"/files/{space}/ci/latest/", params={"format": "json"}).json()["entries"]] == ["v"]
    other = hub.make_space()
    with hub.client(hub.admin_token) as c:
        for b in ("1", "2"):
            put_blob(c, b.encode(), other).raise_for_status()
            assert commit(c, other, [entry("v", b.encode())], build=b).status_code == 201
        names = [e["name"] for e in c.get(f"/files/{other}/ci/", params={"format": "json"}).json()["entries"]]
        assert names == ["1", "2"]  # no latest pointer, no entry


def test_gc_keeps_referenced_and_leased_blobs(start_hub):
    from datetime import timedelta

    from tests.hubproc import HubProcess
    from tether.db import Database
    from tether.db.models import Blob, utcnow

    env = {"TETHER_GC_GRACE": "1s", "TETHER_BLOB_LEASE_SECONDS": "60"}
    h = start_hub(env=env)
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "g"}).raise_for_status()
        for d in (b"kept", b"orphan"):
            put_blob(c, d, "g").raise_for_status()
        commit(c, "g", [entry("k", b"kept")]).raise_for_status()
        time.sleep(1.5)
        # both are still leased (uploaded < 60 s ago): nothing goes
        assert c.post("/api/v1/gc", json={}).json()["blobs_removed"] == 0
    _, user_token = h.make_user()
    with h.client(user_token) as c:
        assert c.post("/api/v1/gc", json={}).status_code == 403
    h.stop()
    db = Database(f"sqlite:///{h.data_dir / 'tether.db'}")  # let the leases run out
    with db.write() as s:
        for b in s.query(Blob):
            b.leased_until = utcnow() - timedelta(seconds=1)
    db.dispose()
    h2 = HubProcess(h.data_dir, env=env).start()
    try:
        with h2.admin() as c:
            dry = c.post("/api/v1/gc", json={"dry_run": True}).json()
            assert dry["blobs_removed"] == 1 and dry["dry_run"]
            assert missing(c, [sha(b"orphan")], "g", build="2") == []  # dry run deleted nothing (and this re-leases it)
        db = Database(f"sqlite:///{h.data_dir / 'tether.db'}")
        with db.write() as s:
            for b in s.query(Blob):
                b.leased_until = utcnow() - timedelta(seconds=1)
        db.dispose()
        with h2.admin() as c:
            assert c.post("/api/v1/gc", json={}).json()["blobs_removed"] == 1
            assert missing(c, [sha(b"kept"), sha(b"orphan")], "g", build="2") == [sha(b"orphan")]
            assert c.get("/files/g/ci/1/k").content == b"kept"
    finally:
        h2.stop()


def test_retention_keep_last_spares_latest(start_hub):
    types = json.dumps({"nightly": {"path": "nightly/{build_id}", "keep_last": 2}})
    h = start_hub(env={"TETHER_PUBLISH_TYPES": types})
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "r"}).raise_for_status()
        for n in ("n1", "n2", "n3", "n4"):
            put_blob(c, n.encode(), "r", type_="nightly").raise_for_status()
            commit(c, "r", [entry("f", n.encode())], type_="nightly", build=n, latest=(n == "n1")).raise_for_status()
            time.sleep(0.01)
        dry = c.post("/api/v1/gc", json={"dry_run": True}).json()
        assert dry["builds_removed"] == ["r/nightly/n2"]
        assert c.get("/files/r/nightly/n2/f").status_code == 200
        assert c.post("/api/v1/gc", json={}).json()["builds_removed"] == ["r/nightly/n2"]
        assert c.get("/files/r/nightly/n2/f").status_code == 404
        for n in ("n1", "n3", "n4"):
            assert c.get(f"/files/r/nightly/{n}/f").content == n.encode()
        assert c.get("/files/r/nightly/latest/f").content == b"n1"


def test_retention_keep_days_spares_latest_and_young_builds(start_hub):
    from datetime import timedelta

    from tether.db import Database
    from tether.db.models import Build, utcnow

    types = json.dumps({"daily": {"path": "daily/{build_id}", "keep_days": 7}, "ci": {"path": "ci/{build_id}"}})
    h = start_hub(env={"TETHER_PUBLISH_TYPES": types})
    age = {"d1": 10, "d2": 10, "d3": 6, "d4": 0, "c1": 30}
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "r"}).raise_for_status()
        for n in age:
            type_ = "ci" if n.startswith("c") else "daily"
            put_blob(c, n.encode(), "r", type_=type_).raise_for_status()
            commit(c, "r", [entry("f", n.encode())], type_=type_, build=n, latest=(n == "d2")).raise_for_status()
    db = Database(f"sqlite:///{h.data_dir / 'tether.db'}")
    with db.write() as s:
        for b in s.query(Build):
            b.created_at = utcnow() - timedelta(days=age[b.build_id], minutes=1)
    db.dispose()
    import sys
    from pathlib import Path

    tether = [str(Path(sys.executable).with_name("tether")), "gc", "--dry-run", "--hub", h.url, "--token", h.admin_token]
    shown = subprocess.run(tether, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/nonexistent"})
    assert shown.returncode == 0 and "builds_removed: 1" in shown.stdout, shown.stdout + shown.stderr
    assert "  would remove r/daily/d1\n" in shown.stdout, shown.stdout  # the text output names them too
    with h.admin() as c:
        dry = c.post("/api/v1/gc", json={"dry_run": True}).json()
        assert dry["builds_removed"] == ["r/daily/d1"] and c.get("/files/r/daily/d1/f").status_code == 200
        assert c.post("/api/v1/gc", json={}).json()["builds_removed"] == ["r/daily/d1"]
        assert c.get("/files/r/daily/d1/f").status_code == 404
        for n, type_ in (("d2", "daily"), ("d3", "daily"), ("d4", "daily"), ("c1", "ci")):  # latest, young, no rule
            assert c.get(f"/files/r/{type_}/{n}/f").content == n.encode()


def test_the_same_build_id_published_at_once_is_one_build(publisher):
    """Four commits of one build id racing: one wins whole, the others get 409."""
    from concurrent.futures import ThreadPoolExecutor

    hub, space, token = publisher
    contents = [os.urandom(2000) for _ in range(8)]
    with hub.client(token) as c:
        for data in contents:
            put_blob(c, data, space).raise_for_status()

    def publish(build: str, i: int):
        with hub.client(token) as c:
            return commit(c, space, [entry(f"f{j}", contents[(i + j) % 8]) for j in range(4)], build=build)

    for round_ in range(3):
        build = f"race{round_}"
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: publish(build, i), range(4)))
        assert sorted(r.status_code for r in answers) == [201, 409, 409, 409], [r.text for r in answers]
        for r in answers:
            if r.status_code == 409:
                assert r.json()["type"].endswith(("build-exists", "conflict")), r.text
        winner = next(i for i, r in enumerate(answers) if r.status_code == 201)
        with hub.client(token) as c:  # the winner's files, all of them, and nothing else
            listing = c.get(f"/files/{space}/ci/{build}/", params={"format": "json"}).json()["entries"]
            assert sorted(e["name"] for e in listing) == ["f0", "f1", "f2", "f3"]
            for j in range(4):
                assert c.get(f"/files/{space}/ci/{build}/f{j}").content == contents[(winner + j) % 8]


def test_head_requests_give_headers_only(publisher):
    hub, space, token = publisher
    data = os.urandom(4096)
    with hub.client(token) as c:
        put_blob(c, data, space, build="head").raise_for_status()
        commit(c, space, [entry("f.bin", data)], build="head").raise_for_status()
        r = c.head(f"/files/{space}/ci/head/f.bin")
        assert r.status_code == 200 and r.headers["content-length"] == "4096" and r.content == b""
        assert r.headers["etag"] == f'"sha256:{sha(data)}"'


def test_visibility_defaults_publish_over_type_over_space(start_hub):
    types = json.dumps({"docs": {"path": "docs/{build_id}", "public": False}})
    h = start_hub(env={"TETHER_PUBLISH_TYPES": types})
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "snap", "public_builds": True}).raise_for_status()
        put_blob(c, b"v", "snap").raise_for_status()
        commit(c, "snap", [entry("f", b"v")], build="1").raise_for_status()                    # space default: public
        commit(c, "snap", [entry("f", b"v")], type_="docs", build="1").raise_for_status()      # type says private
        commit(c, "snap", [entry("f", b"v")], build="2", public=False).raise_for_status()      # the publish says private
        r = c.patch("/api/v1/spaces/snap", json={"public_builds": False})
        assert r.status_code == 200 and r.json()["public_builds"] is False
        commit(c, "snap", [entry("f", b"v")], build="3").raise_for_status()                    # now private
    with h.client() as anon:
        assert anon.get("/files/snap/ci/1/f").status_code == 200
        for path in ("docs/1/f", "ci/2/f", "ci/3/f"):
            assert anon.get(f"/files/snap/{path}").status_code == 401, path
    _, user = h.make_user(grants={"snap": "write"})
    with h.client(user) as c:
        assert c.patch("/api/v1/spaces/snap", json={"public_builds": True}).status_code == 403


def test_gc_sweeps_abandoned_uploads(start_hub):
    from datetime import timedelta

    from tether.db import Database
    from tether.db.models import Upload, utcnow

    h = start_hub()
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "u"}).raise_for_status()
        fresh = c.post("/api/v1/uploads", json={"space": "u", "type": "ci", "build": "1", "digest": sha(b"a"), "size": 9}).json()
        old = c.post("/api/v1/uploads", json={"space": "u", "type": "ci", "build": "1", "digest": sha(b"b"), "size": 9}).json()
        c.put(f"/api/v1/uploads/{old['id']}", params={"offset": 0}, content=b"1234").raise_for_status()
    db = Database(f"sqlite:///{h.data_dir / 'tether.db'}")
    with db.write() as s:
        s.get(Upload, old["id"]).created_at = utcnow() - timedelta(days=2)
    db.dispose()
    assert (h.blob_dir / "uploads" / old["id"]).is_dir()  # its piece, in the shared store
    with h.admin() as c:
        assert c.post("/api/v1/gc", json={}).json()["uploads_removed"] == 1
        assert c.get(f"/api/v1/uploads/{old['id']}").status_code == 404
        assert c.get(f"/api/v1/uploads/{fresh['id']}").status_code == 200
    assert not (h.blob_dir / "uploads" / old["id"]).exists()


def test_gc_sweeps_upload_files_left_without_a_row(start_hub):
    """Local upload files (one-file spools, uploads of hubs before migration 0016) and pieces
    in the blob store without an upload row, once a day old; never a live upload's."""
    h = start_hub()
    uploads = h.data_dir / "uploads"
    uploads.mkdir(mode=0o700, exist_ok=True)
    orphan, young = uploads / "orphan-from-a-downgrade", uploads / "being-started-now"
    orphan.write_bytes(b"x" * 100)
    young.write_bytes(b"y")
    pieces = h.blob_dir / "uploads"
    lost, new = pieces / ("a" * 32), pieces / ("b" * 32)  # pieces whose upload has no row
    for d in (lost, new):
        d.mkdir(parents=True)
        (d / ("0" * 16)).write_bytes(b"z")
    day_and_more = time.time() - 86400 - 60
    os.utime(orphan, (day_and_more, day_and_more))
    os.utime(lost, (day_and_more, day_and_more))
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "u"}).raise_for_status()
        live = c.post("/api/v1/uploads", json={"space": "u", "type": "ci", "build": "1", "digest": sha(b"a"),
                                               "size": 9}).json()
        c.put(f"/api/v1/uploads/{live['id']}", params={"offset": 0}, content=b"1234").raise_for_status()
        os.utime(pieces / live["id"], (day_and_more, day_and_more))  # old piece, but its upload is alive
        c.post("/api/v1/gc", json={}).raise_for_status()
        assert c.get(f"/api/v1/uploads/{live['id']}").json()["offset"] == 4
    assert not orphan.exists() and young.exists()
    assert not lost.exists() and new.exists() and (pieces / live["id"]).exists()


def batch_body(blobs):
    return b"".join(f"{sha(b)} {len(b)}\n".encode() + b for b in blobs)


def post_batch(c, space, body):
    return c.post("/api/v1/blobs/batch", params={"space": space, "type": "ci", "build": "1"}, content=body,
                  headers={"content-type": "application/x-tether-blobs"})


def test_batch_blobs_are_served_whole_and_in_ranges(publisher):
    hub, space, token = publisher
    a, b = os.urandom(3000), os.urandom(70_000)
    with hub.client(token) as c:
        # the same content twice in one batch is stored once and reported twice
        r = post_batch(c, space, batch_body([a, b, a]))
        assert r.status_code == 200 and r.json()["stored"] == [sha(a), sha(b), sha(a)], r.text
        assert post_batch(c, space, batch_body([b])).status_code == 200  # again: harmless
        assert commit(c, space, [entry("a", a), entry("d/b", b)], build="ranges").status_code == 201
        assert c.get(f"/files/{space}/ci/ranges/a").content == a
        got = c.get(f"/files/{space}/ci/ranges/d/b", headers={"Range": "bytes=100-199"})
        assert got.status_code == 206 and got.content == b[100:200]
        assert c.get(f"/files/{space}/ci/ranges/d/b", headers={"Range": "bytes=-10"}).content == b[-10:]
    if hub.backend.endswith("-fs"):  # one pack per batch, no file per blob
        blobs = hub.blob_dir
        assert not (blobs / "sha256" / sha(a)[:2] / sha(a)[2:4] / sha(a)).exists()
        assert len(list((blobs / "packs").iterdir())) >= 1


def test_batch_refusals_keep_the_good_frames_before_them(publisher):
    hub, space, token = publisher
    good, late = os.urandom(500), os.urandom(600)
    with hub.client(token) as c:
        # truncated: the last frame declares more bytes than the body holds
        body = batch_body([good]) + f"{sha(late)} {len(late)}\n".encode() + late[:100]
        r = post_batch(c, space, body)
        assert r.status_code == 400 and r.json()["type"].endswith("truncated-upload"), r.text
        assert missing(c, [sha(good), sha(late)], space) == [sha(late)]
        # a header that never ends
        r = post_batch(c, space, b"a" * 300)
        assert r.status_code == 400 and r.json()["type"].endswith("bad-frame")
        # a frame over the batch limit is refused before its bytes are read
        r = post_batch(c, space, f"{sha(b'x')} {17 << 20}\n".encode() + b"x")
        assert r.status_code == 400
        # size field with a sign, or hex digits in upper case
        for header in (f"{sha(late)} -1\n", f"{sha(late).upper()} 600\n"):
            r = post_batch(c, space, header.encode() + late)
            assert r.status_code == 400 and r.json()["type"].endswith("bad-frame")
        assert missing(c, [sha(late)], space) == [sha(late)]


def _expire_leases(h):
    from datetime import timedelta

    from tether.db import Database
    from tether.db.models import Blob, utcnow

    db = Database(h.env.get("TETHER_DATABASE_URL") or f"sqlite:///{h.data_dir / 'tether.db'}")
    with db.write() as s:
        for b in s.query(Blob):
            b.leased_until = utcnow() - timedelta(seconds=1)
    db.dispose()


def test_gc_deletes_dead_packs_and_copies_out_the_last_live_blobs(start_hub):
    from tests.hubproc import HubProcess

    env = {"TETHER_GC_GRACE": "1s"}
    h = start_hub(env=env)
    packs = h.data_dir / "blobs" / "packs"
    small_live, big_dead = b"live-1" * 2, os.urandom(5000)  # pack 1: mostly dead
    only_dead = os.urandom(300)  # pack 2: all dead
    big_live, small_dead = os.urandom(5000), b"dead-3"  # pack 3: mostly live
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "p"}).raise_for_status()
        for blobs in ([small_live, big_dead], [only_dead], [big_live, small_dead]):
            assert post_batch(c, "p", batch_body(blobs)).status_code == 200
        commit(c, "p", [entry("s", small_live), entry("b", big_live)]).raise_for_status()
    assert len(list(packs.iterdir())) == 3
    h.stop()
    _expire_leases(h)
    time.sleep(1.1)  # past gc_grace
    h2 = HubProcess(h.data_dir, env=env).start()
    try:
        with h2.admin() as c:
            got = c.post("/api/v1/gc", json={}).json()
            assert got["blobs_removed"] == 3, got
            assert len(list(packs.iterdir())) == 1  # pack 3 stays; 1 copied out and gone; 2 gone
            assert c.get("/files/p/ci/1/s").content == small_live
            assert c.get("/files/p/ci/1/b").content == big_live
            assert missing(c, [sha(small_live), sha(big_live), sha(big_dead), sha(only_dead), sha(small_dead)],
                           "p", build="2") == [sha(big_dead), sha(only_dead), sha(small_dead)]
            blob_dir = h.data_dir / "blobs" / "sha256"
            assert (blob_dir / sha(small_live)[:2] / sha(small_live)[2:4] / sha(small_live)).is_file()
    finally:
        h2.stop()


def test_resumable_upload_survives_a_hub_restart(start_hub):
    from tests.hubproc import HubProcess

    h = start_hub()
    data = os.urandom(300_000)
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "r"}).raise_for_status()
        up = c.post("/api/v1/uploads", json={"space": "r", "type": "ci", "build": "1", "digest": sha(data),
                                             "size": len(data)}).json()
        assert c.put(f"/api/v1/uploads/{up['id']}", params={"offset": 0}, content=data[:100_000]).status_code == 200
    h.stop()  # the hub's running hash of the upload is gone with it
    h2 = HubProcess(h.data_dir).start()
    try:
        with h2.admin() as c:
            r = c.put(f"/api/v1/uploads/{up['id']}", params={"offset": 100_000}, content=data[100_000:])
            assert r.json()["complete"] is True, r.text
            commit(c, "r", [entry("f", data)]).raise_for_status()
            assert c.get("/files/r/ci/1/f").content == data
    finally:
        h2.stop()


def manifest_digest_of(files):
    from tether.publish.core import manifest_digest

    return manifest_digest([(f["path"], f["digest"], f["size"], f["mode"]) for f in files])


def test_commit_same_as_copies_an_earlier_build_of_the_space(publisher):
    hub, space, token = publisher
    blobs = {"bin/tool": os.urandom(3000), "lib/a.so": os.urandom(2000), "README": b"read me\n"}
    files = [entry(p, d, 0o755 if p == "bin/tool" else 0o644) for p, d in blobs.items()]
    with hub.client(token) as c:
        for d in blobs.values():
            put_blob(c, d, space).raise_for_status()
        assert commit(c, space, files, build="1").status_code == 201
        digest = manifest_digest_of(list(reversed(files)))  # entry order does not matter
        r = c.post(f"/api/v1/publish/{space}/ci/2", json={"same_as": digest})
        assert r.status_code == 201, r.text
        out = r.json()
        assert (out["files"], out["bytes"], out["same_as"]) == (3, sum(map(len, blobs.values())), "ci/1")
        for p, d in blobs.items():
            got = c.get(f"/files/{space}/ci/2/{p}")
            assert got.status_code == 200 and got.content == d
        listing = c.get(f"/files/{space}/ci/2/bin/", params={"format": "json"}).json()["entries"]
        assert [e["name"] for e in listing] == ["tool"]
        # the copy can itself be the source of the next one, under another type
        r = c.post(f"/api/v1/publish/{space}/nightly/3", json={"same_as": digest, "latest": True})
        assert r.status_code == 201, r.text
        assert c.get(f"/files/{space}/nightly/latest/README").content == b"read me\n"
        # the same build id again is still a conflict
        assert c.post(f"/api/v1/publish/{space}/ci/2", json={"same_as": digest}).status_code == 409


def test_commit_same_as_refusals_write_nothing(publisher):
    hub, space, token = publisher
    other = hub.make_space()
    _, other_token = hub.make_user(grants={other: "write"})
    data = os.urandom(1000)
    files = [entry("secret.bin", data)]
    digest = manifest_digest_of(files)
    with hub.client(other_token) as c:  # another space holds the build
        put_blob(c, data, other).raise_for_status()
        assert commit(c, other, files).status_code == 201
    with hub.client(token) as c:
        cases = [
            ({"same_as": digest}, 404, "unknown-manifest"),  # only builds of this space count
            ({"same_as": "0" * 64}, 404, "unknown-manifest"),
            ({"same_as": "NOT-HEX"}, 400, "invalid-manifest"),
            ({"same_as": digest, "files": files}, 400, "invalid-manifest"),
            ({}, 400, "invalid-manifest"),
        ]
        for i, (body, status, slug) in enumerate(cases):
            r = c.post(f"/api/v1/publish/{space}/ci/r{i}", json=body)
            assert r.status_code == status and r.json()["type"].endswith(slug), r.text
            assert c.get(f"/files/{space}/ci/r{i}/secret.bin").status_code == 404


def test_commit_same_as_draws_budget_and_checks_scope(publisher):
    hub, space, token = publisher
    blobs = [b"1", b"22", b"333"]
    files = [entry(f"f{i}", b) for i, b in enumerate(blobs)]
    with hub.client(token) as c:
        for b in blobs:
            put_blob(c, b, space).raise_for_status()
        assert commit(c, space, files, build="src").status_code == 201
        limited = c.post("/api/v1/tokens", json={"max_files": 4, "expires": "1h"}).json()["token"]
        narrow = c.post("/api/v1/tokens", json={"scopes": [f"publish:{space}/ci/n/f0"], "expires": "1h"}).json()["token"]
    digest = manifest_digest_of(files)
    with hub.client(limited) as c:
        assert c.post(f"/api/v1/publish/{space}/ci/b1", json={"same_as": digest}).status_code == 201
        r = c.post(f"/api/v1/publish/{space}/ci/b2", json={"same_as": digest})
        assert r.status_code == 403 and r.json()["caveat"] == "max_files", r.text
        assert c.get(f"/files/{space}/ci/b2/f0").status_code == 404
        info = c.get("/api/v1/tokens/self").json()
        assert (info["files"], info["bytes"]) == (3, 6)
    with hub.client(narrow) as c:  # its scope covers f0 only, not f1 and f2
        r = c.post(f"/api/v1/publish/{space}/ci/n", json={"same_as": digest})
        assert r.status_code == 403 and r.json()["type"].endswith("token-scope"), r.text
    with hub.client(token) as c:
        assert c.get(f"/files/{space}/ci/n/f0").status_code == 404


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_builds_sharing_entries_outlive_the_build_that_held_them(start_hub, backend):
    """A build committed with the same files as an earlier one shares its entries;
    removing or overwriting the earlier build (retention, overwrite) leaves it whole,
    and gc keeps every blob it names."""
    types = json.dumps({"nightly": {"path": "nightly/{build_id}", "keep_last": 1},
                        "snap": {"path": "snap/{build_id}", "overwrite": True}})
    h = start_hub(backend=backend, env={"TETHER_PUBLISH_TYPES": types, "TETHER_GC_GRACE": "1s"})
    blobs = {f"dir/f{i}": os.urandom(700 + i) for i in range(5)}
    files = [entry(p, d) for p, d in blobs.items()]
    digest = manifest_digest_of(files)
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "sh"}).raise_for_status()
        for d in blobs.values():
            put_blob(c, d, "sh", type_="snap").raise_for_status()
        assert commit(c, "sh", files, type_="snap", build="a").status_code == 201  # holds the entries
        for n in ("n1", "n2"):  # n1 by digest, n2 by the whole manifest: both share a's entries
            body = {"same_as": digest} if n == "n1" else {"files": files}
            assert c.post(f"/api/v1/publish/sh/nightly/{n}", json=body).status_code == 201
            time.sleep(0.01)
        # overwriting a with other files hands its old entries on to n1 (and n2 follows)
        put_blob(c, b"new", "sh", type_="snap").raise_for_status()
        assert commit(c, "sh", [entry("other", b"new")], type_="snap", build="a").status_code == 201
        assert c.get("/files/sh/snap/a/other").content == b"new"
        assert c.get("/files/sh/snap/a/dir/f0").status_code == 404
        # retention (keep_last 1) removes n1, which now holds the entries; n2 keeps them
        time.sleep(1.1)  # past gc_grace
        _expire_leases(h)
        out = c.post("/api/v1/gc", json={}).json()
        assert out.get("builds_removed") == ["sh/nightly/n1"] and out["blobs_removed"] == 0, out
        for p, d in blobs.items():
            assert c.get(f"/files/sh/nightly/n2/{p}").content == d
        listing = c.get("/files/sh/nightly/n2/dir/", params={"format": "json"}).json()["entries"]
        assert [e["name"] for e in listing] == [f"f{i}" for i in range(5)]
        # and a later commit by digest still finds them through n2
        r = c.post("/api/v1/publish/sh/snap/b", json={"same_as": digest})
        assert r.status_code == 201 and r.json()["same_as"] == "nightly/n2", r.text
    # stored once: a's one new entry, and the five that n2 and b share
    from sqlalchemy import text

    from tether.db import Database

    db = Database(h.env.get("TETHER_DATABASE_URL") or f"sqlite:///{h.data_dir / 'tether.db'}")
    with db.read() as s:
        assert s.scalar(text("SELECT count(*) FROM build_files")) == 6
    db.dispose()


def test_the_documented_curl_recipe_runs_as_written(publisher, tmp_path):
    """docs/publish.md's curl recipe, the block itself (bash, curl, sha256sum), with only
    the hub's address and the space name put in."""
    from tests.publish.test_unhashed_upload import _doc_blocks

    hub, space, token = publisher
    script = _doc_blocks("Everything is plain HTTP")
    assert script.startswith("HUB=https://hub.example")
    script = script.split("\n", 1)[1].replace("builds", space)
    (tmp_path / "out").mkdir()
    art = os.urandom(20_000)
    (tmp_path / "out/app.tar.gz").write_bytes(art)
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env={**os.environ, "HUB": hub.url, "T": token},
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with hub.client(token) as c:
        for build in ("123", "124"):
            got = c.get(f"/files/{space}/ci/{build}/app.tar.gz")
            assert got.status_code == 200 and got.content == art
    # run again: the build ids are taken, and --fail-with-body shows why
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env={**os.environ, "HUB": hub.url, "T": token},
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "build-exists" in r.stdout and "already exists" in r.stdout, r.stdout + r.stderr
