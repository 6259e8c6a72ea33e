"""Refusals on every way in that carries bytes: the batch, a blob sent without a length,
the one-file ``PUT``, a chunked manifest, a body cut short. Each is refused with a clear
error, and nothing of it is kept: the hub still says it lacks the blob, no build appears.

On SQLite and PostgreSQL with filesystem blobs, and PostgreSQL with S3 (SeaweedFS)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from tests.publish.test_publish_api import commit, entry, missing, put_blob, sha

BATCH_TYPE = {"content-type": "application/x-tether-blobs"}


@pytest.fixture
def publisher(pub_hub):
    space = pub_hub.make_space()
    _, token = pub_hub.make_user(grants={space: "write"})
    return pub_hub, space, token


def _child(hub, token: str, **caveats) -> str:
    with hub.client(token) as c:
        r = c.post("/api/v1/tokens", json={"expires": "1h", **caveats})
        assert r.status_code == 201, r.text
        return r.json()["token"]


def _refused(r, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"].endswith(slug), body
    return body


def _chunked(data: bytes, piece: int = 16):
    """A body without Content-Length (httpx sends a generator chunked)."""
    def gen():
        for i in range(0, len(data), piece):
            yield data[i:i + piece]
    return gen()


def _packs(hub) -> list[str]:
    packs = hub.data_dir / "blobs" / "packs"
    return sorted(p.name for p in packs.rglob("*") if p.is_file()) if packs.exists() else []


def test_a_batch_over_the_byte_budget_keeps_none_of_its_blobs(publisher):
    hub, space, token = publisher
    limited = _child(hub, token, max_bytes=2500)
    blobs = [os.urandom(1000) for _ in range(5)]
    body = b"".join(f"{sha(b)} {len(b)}\n".encode() + b for b in blobs)
    before = _packs(hub)
    with hub.client(limited) as c:
        r = c.post("/api/v1/blobs/batch", params={"space": space, "type": "ci", "build": "1"}, content=body,
                   headers=BATCH_TYPE)
        problem = _refused(r, 403, "token-bytes-exhausted")
        assert problem["caveat"] == "max_bytes" and "2500" in problem["detail"], problem
    with hub.client(token) as c:
        assert missing(c, [sha(b) for b in blobs], space) == [sha(b) for b in blobs]  # not one of them kept
    assert _packs(hub) == before
    with hub.client(limited) as c:  # what fits still goes
        fits = b"".join(f"{sha(b)} {len(b)}\n".encode() + b for b in blobs[:2])
        r = c.post("/api/v1/blobs/batch", params={"space": space, "type": "ci", "build": "1"}, content=fits,
                   headers=BATCH_TYPE)
        assert r.status_code == 200 and r.json()["stored"] == [sha(b) for b in blobs[:2]], r.text


def test_a_blob_sent_without_a_length_is_held_to_the_byte_budget(publisher):
    hub, space, token = publisher
    limited = _child(hub, token, max_bytes=50)
    big, small = os.urandom(100), os.urandom(40)
    with hub.client(limited) as c:
        for body in (_chunked(big), big):  # without Content-Length, and with it
            r = c.put(f"/api/v1/blobs/sha256/{sha(big)}", params={"space": space, "type": "ci", "build": "1"},
                      content=body)
            _refused(r, 403, "token-bytes-exhausted")
        r = c.put(f"/api/v1/blobs/sha256/{sha(small)}", params={"space": space, "type": "ci", "build": "1"},
                  content=_chunked(small))
        assert r.status_code == 201, r.text
    with hub.client(token) as c:
        assert missing(c, [sha(big), sha(small)], space) == [sha(big)]


def test_the_last_use_of_a_counted_token_may_still_upload(publisher):
    hub, space, token = publisher
    once = _child(hub, token, max_uses=1, max_bytes=1000)  # its one use is this very request
    data = os.urandom(100)
    with hub.client(once) as c:
        assert put_blob(c, data, space).status_code == 201
        _refused(put_blob(c, os.urandom(10), space), 403, "token-uses-exhausted")


def test_an_oversized_manifest_sent_chunked_is_413(start_hub):
    h = start_hub(env={"TETHER_MAX_MANIFEST_BYTES": "4096"})
    files = [{"path": f"f{i}", "digest": "0" * 64, "size": 1} for i in range(200)]
    with h.admin() as c:
        c.post("/api/v1/spaces", json={"name": "big"}).raise_for_status()
        r = c.post("/api/v1/publish/big/ci/1", content=_chunked(json.dumps({"files": files}).encode(), 1024),
                   headers={"content-type": "application/json"})
        problem = _refused(r, 413, "request-too-large")
        assert "4096" in problem["detail"]
        assert c.get("/files/big/ci/1/", params={"format": "json"}).status_code == 404


# -- the one-file PUT ------------------------------------------------------------------------


def _put_file(c, space, path, data, build="1", **kw):
    return c.put(f"/api/v1/publish/{space}/ci/{build}/{path}", content=data, **kw)


@pytest.mark.parametrize("path, slug", [
    ("%2E%2E/x", "invalid-path"),
    ("a/%2E%2E/%2E%2E/b", "invalid-path"),
    ("%2E/a", "invalid-path"),
    ("/etc/passwd", "invalid-path"),  # .../1//etc/passwd: an absolute path
    ("back%5Cslash", "invalid-path"),
    ("bell%07.txt", "bad-request"),  # control characters never pass the URL check
    ("nul%00.txt", "bad-request"),
    ("rtl%E2%80%AEtxt.exe", "invalid-path"),  # U+202E, a format character
])
def test_a_one_file_put_with_a_bad_path_stores_nothing(publisher, path, slug):
    hub, space, token = publisher
    data = os.urandom(64)
    with hub.client(token) as c:
        r = _put_file(c, space, path, data)
        assert r.status_code == 400, r.text
        if not (hub.backend.startswith("replicas") and "%00" in path):  # nginx refuses a NUL itself
            assert r.json()["type"].endswith(slug), r.text
        assert missing(c, [sha(data)], space) == [sha(data)]
        assert c.get(f"/files/{space}/ci/1/", params={"format": "json"}).status_code == 404


def test_a_one_file_put_to_a_taken_build_id_stores_nothing(publisher):
    hub, space, token = publisher
    first, second = os.urandom(64), os.urandom(64)
    with hub.client(token) as c:
        assert _put_file(c, space, "f.bin", first).status_code == 201
        problem = _refused(_put_file(c, space, "f.bin", second), 409, "build-exists")
        assert "already exists" in problem["detail"] and "new id" in problem["detail"]
        assert missing(c, [sha(second)], space, build="2") == [sha(second)]
        assert c.get(f"/files/{space}/ci/1/f.bin").content == first


def test_a_one_file_put_over_a_budget_stores_nothing(publisher):
    hub, space, token = publisher
    one_file = _child(hub, token, max_files=1)
    few_bytes = _child(hub, token, max_bytes=50)
    a, b, c_ = os.urandom(64), os.urandom(64), os.urandom(100)
    with hub.client(one_file) as c:
        assert _put_file(c, space, "a.bin", a, build="1").status_code == 201
        _refused(_put_file(c, space, "b.bin", b, build="2"), 403, "token-files-exhausted")
    with hub.client(few_bytes) as c:
        for body in (_chunked(c_), c_):  # without Content-Length, and with it
            _refused(_put_file(c, space, "c.bin", body, build="3"), 403, "token-bytes-exhausted")
    with hub.client(token) as c:
        assert missing(c, [sha(b), sha(c_)], space, build="4") == [sha(b), sha(c_)]
        for build in ("2", "3"):
            assert c.get(f"/files/{space}/ci/{build}/", params={"format": "json"}).status_code == 404


# -- a body cut short ---------------------------------------------------------------------------


def _cut_short(hub, token: str, target: str, declared: int, sent: bytes) -> bytes:
    """Send a request whose body stops before its Content-Length, close our side, and
    return whatever the hub answers."""
    host, port = hub.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"PUT {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Length: {declared}\r\n\r\n".encode() + sent)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def test_a_body_cut_short_keeps_nothing_and_is_no_internal_error(publisher):
    hub, space, token = publisher
    data = os.urandom(100_000)
    part = data[:40_000]
    # the blob is named by the digest of the part that arrives: only the check that the
    # body ended early can refuse it
    targets = [f"/api/v1/publish/{space}/ci/cut/f.bin",
               f"/api/v1/blobs/sha256/{sha(part)}?space={space}&type=ci&build=cut"]
    for target in targets:
        answer = _cut_short(hub, token, target, len(data), part)
        # uvicorn closes a connection whose client ended its side mid-body, so usually no
        # answer gets out; if one does, it says what happened
        if answer:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400"), answer[:300]
            assert b"truncated-request" in body and b"closed the connection" in body, body
    with hub.client(token) as c:
        assert missing(c, [sha(data), sha(part)], space) == [sha(data), sha(part)]
        assert c.get(f"/files/{space}/ci/cut/", params={"format": "json"}).status_code == 404
    assert "internal error" not in hub.log_text()


def test_a_taken_build_id_is_the_answer_to_a_commit_by_digest(publisher):
    hub, space, token = publisher
    data = os.urandom(64)
    with hub.client(token) as c:
        assert _put_file(c, space, "f.bin", data).status_code == 201
        for digest in ("0" * 64, "1" * 64):  # no build has these manifests: still 409, not 404
            r = c.post(f"/api/v1/publish/{space}/ci/1", json={"same_as": digest})
            _refused(r, 409, "build-exists")


def test_a_manifest_not_sent_as_json_says_how_to_send_it(publisher):
    hub, space, token = publisher
    data = os.urandom(64)
    body = json.dumps({"files": [entry("f", data)]}).encode()
    with hub.client(token) as c:
        put_blob(c, data, space).raise_for_status()
        for headers, said in (({"content-type": "application/x-www-form-urlencoded"}, "sent as"), ({}, "send")):
            r = c.post(f"/api/v1/publish/{space}/ci/1", content=body, headers=headers)
            problem = _refused(r, 422, "invalid-request")
            assert said in problem["detail"] and "Content-Type: application/json" in problem["detail"], problem
        assert c.get(f"/files/{space}/ci/1/", params={"format": "json"}).status_code == 404


def test_every_way_in_refuses_a_token_that_may_not_be_used(publisher):
    """Wrong source, out of scope, expired, revoked: each way of sending bytes refuses
    with the caveat's own slug, and nothing arrives."""
    import time

    hub, space, token = publisher
    with hub.client(token) as c:
        revoked = c.post("/api/v1/tokens", json={"expires": "1h"}).json()
        c.delete(f"/api/v1/tokens/{revoked['id']}").raise_for_status()
    tokens = [(_child(hub, token, sources=["10.0.0.0/8"]), 403, "token-source"),
              (_child(hub, token, scopes=[f"publish:{space}/android"]), 403, "token-scope"),
              (revoked["token"], 401, "token-revoked"),
              (_child(hub, token, expires="1s"), 401, "token-expired")]
    time.sleep(1.2)
    where = {"space": space, "type": "ci", "build": "1"}
    for bad, status, slug in tokens:
        data = os.urandom(64) + slug.encode()
        with hub.client(bad) as c:
            answers = [
                c.post("/api/v1/blobs/missing", json={**where, "digests": [sha(data)]}),
                put_blob(c, data, space),
                c.post("/api/v1/blobs/batch", params=where, content=f"{sha(data)} {len(data)}\n".encode() + data,
                       headers=BATCH_TYPE),
                c.post("/api/v1/uploads", json={**where, "digest": sha(data), "size": len(data)}),
                _put_file(c, space, "f.bin", data),
                commit(c, space, [entry("f.bin", data)]),
            ]
            for r in answers:
                _refused(r, status, slug)
        with hub.client(token) as c:
            assert missing(c, [sha(data)], space) == [sha(data)]
            assert c.get(f"/files/{space}/ci/1/", params={"format": "json"}).status_code == 404
