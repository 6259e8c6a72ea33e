"""A large upload started before the client has hashed the file (digest declared at the
end), over real HTTP against a running hub on every backend. The hub allows it only
for a size the space holds no blob of, verifies the declared digest against the bytes
it received, and stores nothing when they differ."""

from __future__ import annotations

import hashlib
import os

import pytest

from tether.publish.core import UNHASHED_MIN


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def big(tag: bytes, extra: int = 0) -> bytes:
    return os.urandom(64) + tag + bytes(UNHASHED_MIN + extra - 64 - len(tag))


def start(c, space, size, digest=None, build="1"):
    body = {"space": space, "type": "ci", "build": build, "size": size}
    if digest is not None:
        body["digest"] = digest
    return c.post("/api/v1/uploads", json=body)


def missing(c, space, digests):
    r = c.post("/api/v1/blobs/missing", json={"space": space, "type": "ci", "build": "1", "digests": digests})
    assert r.status_code == 200, r.text
    return r.json()["missing"]


@pytest.fixture
def publisher(pub_hub):
    space = pub_hub.make_space()
    _, token = pub_hub.make_user(grants={space: "write"})
    return pub_hub, space, token



def _upload_files(hub) -> set[str]:
    """What uploads keep on disk: local spools, and (a filesystem store) resumable uploads' pieces."""
    dirs = [hub.data_dir / "uploads"] + ([hub.blob_dir / "uploads"] if hub.backend.endswith("-fs") else [])
    return {name for d in dirs if d.exists() for name in os.listdir(d)}

def test_digest_declared_after_the_last_byte(publisher):
    hub, space, token = publisher
    data = big(b"after", 7)
    half = len(data) // 2
    with hub.client(token) as c:
        r = start(c, space, len(data))
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        assert c.put(f"/api/v1/uploads/{uid}", params={"offset": 0}, content=data[:half]).json()["offset"] == half
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": half}, content=data[half:])
        assert r.json() == {"id": uid, "offset": len(data), "size": len(data), "complete": False}
        assert c.get(f"/api/v1/uploads/{uid}").json()["digest"] is None
        assert missing(c, space, [sha(data)]) == [sha(data)]  # nothing stored before the digest is known
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": len(data), "digest": sha(data)}, content=b"")
        assert r.json()["complete"] is True, r.text
        assert missing(c, space, [sha(data)]) == []
        entry = {"path": "big.img", "digest": sha(data), "size": len(data), "mode": 0o644}
        c.post(f"/api/v1/publish/{space}/ci/1", json={"files": [entry]}).raise_for_status()
        got = c.get(f"/files/{space}/ci/1/big.img", headers={"Range": "bytes=0-127"})
        assert got.status_code == 206 and got.content == data[:128]
        assert got.headers["etag"] == f'"sha256:{sha(data)}"'


def test_digest_declared_with_a_chunk_finishes_at_the_last_byte(publisher):
    hub, space, token = publisher
    data = big(b"early")
    with hub.client(token) as c:
        uid = start(c, space, len(data)).json()["id"]
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": 0, "digest": sha(data)}, content=data)
        assert r.json()["complete"] is True, r.text
        assert missing(c, space, [sha(data)]) == []


def test_a_declared_digest_the_bytes_do_not_have_stores_nothing(publisher):
    hub, space, token = publisher
    data = big(b"lie")
    claimed = sha(b"something else")
    with hub.client(token) as c:
        uid = start(c, space, len(data)).json()["id"]
        c.put(f"/api/v1/uploads/{uid}", params={"offset": 0}, content=data).raise_for_status()
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": len(data), "digest": claimed}, content=b"")
        assert r.status_code == 400 and r.json()["type"].endswith("blob-digest-mismatch"), r.text
        assert "nothing was stored" in r.json()["detail"]
        assert missing(c, space, [claimed, sha(data)]) == [claimed, sha(data)]
        assert c.get(f"/api/v1/uploads/{uid}").status_code == 404  # gone, not half-kept
    assert uid not in _upload_files(hub)  # its pieces are gone too


def test_refused_when_the_space_holds_a_blob_of_that_size(publisher, pub_hub):
    hub, space, token = publisher
    first = big(b"one", 3)
    with hub.client(token) as c:
        r = start(c, space, len(first), digest=sha(first))
        c.put(f"/api/v1/uploads/{r.json()['id']}", params={"offset": 0}, content=first).raise_for_status()
        r = start(c, space, len(first))  # same size: the hub may have it; hash first
        assert r.status_code == 409 and r.json()["type"].endswith("size-known"), r.text
        assert "blobs/missing" in r.json()["detail"]
        assert start(c, space, len(first) + 1).status_code == 201  # another size is fine
    # another space with no blob of that size may: sizes are answered per space only
    other = pub_hub.make_space()
    _, token2 = pub_hub.make_user(grants={other: "write"})
    with hub.client(token2) as c:
        assert start(c, other, len(first)).status_code == 201


@pytest.mark.parametrize(
    ("size", "digest", "status", "slug"),
    [
        (UNHASHED_MIN - 1, None, 400, "digest-required"),  # small files are hashed first
        (10, None, 400, "digest-required"),
        (UNHASHED_MIN, "not-a-digest", 400, "invalid-digest"),
        (UNHASHED_MIN, "A" * 64, 400, "invalid-digest"),
    ],
)
def test_bad_starts_are_refused_and_create_nothing(publisher, size, digest, status, slug):
    hub, space, token = publisher
    before = _upload_files(hub)
    with hub.client(token) as c:
        r = start(c, space, size, digest)
        assert r.status_code == status and r.json()["type"].endswith(slug), r.text
    assert _upload_files(hub) == before


def test_bad_declarations_are_refused(publisher):
    hub, space, token = publisher
    data = big(b"decl")
    with hub.client(token) as c:
        uid = start(c, space, len(data)).json()["id"]
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": 0, "digest": "xyz"}, content=b"abc")
        assert r.status_code == 400 and r.json()["type"].endswith("invalid-digest")
        assert c.get(f"/api/v1/uploads/{uid}").json() == {"id": uid, "offset": 0, "size": len(data),
                                                          "complete": False, "digest": None}
        c.put(f"/api/v1/uploads/{uid}", params={"offset": 0, "digest": sha(data)}, content=data[:10])
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": 10, "digest": sha(b"other")}, content=data[10:20])
        assert r.status_code == 400 and r.json()["type"].endswith("digest-conflict"), r.text
        assert c.get(f"/api/v1/uploads/{uid}").json()["offset"] == 10  # the refused chunk was not written


def test_tether_publish_sends_a_new_large_file_while_hashing_and_never_resends_one(publisher, tmp_path):
    """The real client against the real hub: a fresh builder (no hash cache) publishing a
    large file the hub already has in this space sends none of it; one of a new content
    but the same size is hashed first, then uploaded; a new size goes early."""
    from tether.publish.client import publish

    hub, space, token = publisher
    root = tmp_path / "tree"
    root.mkdir()
    data = big(b"cli", 11)
    (root / "big.img").write_bytes(data)

    def pub(build):
        return publish(hub.url, token, space, "ci", build, ["*.img"], root=root, cache=False,
                       ca_bundle=None)

    first = pub("1")
    assert (first["bytes_sent"], first["uploaded"]) == (len(data), 1)
    again = pub("2")  # same content, nothing cached: the hub knows the size, so hash and ask first
    assert (again["bytes_sent"], again["deduplicated"]) == (0, 1)
    other = big(b"same size, other bytes", 11)
    (root / "big.img").write_bytes(other)
    third = pub("3")
    assert (third["bytes_sent"], third["uploaded"]) == (len(other), 1)
    with hub.client(token) as c:
        for build, want in (("1", data), ("2", data), ("3", other)):
            got = c.get(f"/files/{space}/ci/{build}/big.img", headers={"Range": "bytes=0-99"})
            assert got.content == want[:100]
            assert got.headers["etag"] == f'"sha256:{sha(want)}"'


def _doc_blocks(after: str) -> str:
    """The first ```sh block after the line starting with ``after`` in docs/publish.md."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "publish.md").read_text()
    rest = text[text.index(after):]
    start = rest.index("```sh\n") + len("```sh\n")
    return rest[start:rest.index("```", start)]


def test_the_documented_curl_recipes_for_resumable_uploads_work(publisher, tmp_path):
    """docs/publish.md's two resumable-upload recipes, run as written (bash, curl, jq)."""
    import subprocess

    hub, space, token = publisher
    step_by_step = _doc_blocks("Resumable uploads, step by step")
    before_hashing = _doc_blocks("**Sending before hashing.**")
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(os.urandom(300_001))
    large.write_bytes(big(b"curl", 9))
    env = {**os.environ, "HUB": hub.url, "T": token}
    put = step_by_step[: step_by_step.index('"$@"; }') + len('"$@"; }')]  # the helper the second recipe uses
    for script, f in ((step_by_step, small), (put + "\n" + before_hashing, large)):
        script = script.replace('"space\\":\\"builds\\"', f'"space\\":\\"{space}\\"')
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env={**env, "f": str(f)},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert '"complete":true' in r.stdout, r.stdout
    with hub.client(token) as c:
        assert missing(c, space, [sha(small.read_bytes()), sha(large.read_bytes())]) == []


def test_the_same_digest_may_be_declared_again(publisher):
    hub, space, token = publisher
    data = big(b"twice")
    half = len(data) // 2
    with hub.client(token) as c:
        uid = start(c, space, len(data)).json()["id"]
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": 0, "digest": sha(data)}, content=data[:half])
        assert r.status_code == 200, r.text
        r = c.put(f"/api/v1/uploads/{uid}", params={"offset": half, "digest": sha(data)}, content=data[half:])
        assert r.json()["complete"] is True, r.text
