"""The publishing client without a hub: wire format, upload planning, and the
whole flow against an in-process fake that speaks the HTTP contract (through
tether.hubclient.transport's handler, in httpx's request/response types), including dropped
connections and retries."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.hubclient.errors import HubError
from tether.publish import client as pc
from tether.publish import uploads
from tether.publish.client import (
    BATCH_MAX_BLOBS,
    BATCH_MAX_BYTES,
    PublishError,
    batch_length,
    classify,
    decode_frames,
    encode_frames,
    frame_header,
    human_bytes,
    pack_batches,
    plan_chunks,
    publish,
    space_from_scopes,
    summary_line,
)
from tether.publish.core import manifest_digest
from tether.publish.files import FileChangedError, InputError

OLD = time.time_ns() - 3600 * 10**9


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- framing ---------------------------------------------------------------------------


def test_frame_header():
    d = sha(b"abc")
    assert frame_header(d, 3) == f"{d} 3\n".encode()
    with pytest.raises(ValueError):
        frame_header("ABC", 3)
    with pytest.raises(ValueError):
        frame_header(d, -1)


def test_encode_frames_layout_and_roundtrip():
    blobs = [(sha(b"one"), b"one"), (sha(b""), b""), (sha(b"\n\n3 4\n"), b"\n\n3 4\n")]
    body = encode_frames(blobs)
    assert body.startswith(f"{sha(b'one')} 3\none".encode())
    assert f"{sha(b'')} 0\n{sha(chr(10).encode() * 2 + b'3 4' + chr(10).encode())} 6\n".encode() in body
    assert decode_frames(body) == blobs
    assert len(body) == batch_length([(d, len(b)) for d, b in blobs])


def test_decode_frames_refuses_truncation():
    body = encode_frames([(sha(b"hello"), b"hello")])
    with pytest.raises(ValueError, match="truncated"):
        decode_frames(body[:-1])


# -- planning ----------------------------------------------------------------------------


def test_classify():
    assert classify(0) == classify(1 << 20) == "small"
    assert classify((1 << 20) + 1) == classify(64 << 20) == "medium"
    assert classify((64 << 20) + 1) == "large"


def test_pack_batches_respects_count_and_bytes():
    d = "0" * 64
    items = [(d, 10)] * (2 * BATCH_MAX_BLOBS + 500)
    batches = pack_batches(items)
    assert [len(b) for b in batches] == [BATCH_MAX_BLOBS, BATCH_MAX_BLOBS, 500]
    big = [(d, 1 << 20)] * 40
    batches = pack_batches(big)
    assert all(batch_length(b) <= BATCH_MAX_BYTES for b in batches)
    assert sum(len(b) for b in batches) == 40
    assert len(batches) == 3  # 15 + 15 + 10: headers push the 16th MiB over


def test_pack_batches_small_limits_and_oversized_item():
    d = "a" * 64
    assert pack_batches([(d, 5)] * 5, max_bytes=10_000, max_blobs=2) == [[(d, 5)] * 2, [(d, 5)] * 2, [(d, 5)]]
    assert pack_batches([(d, 50), (d, 1)], max_bytes=20) == [[(d, 50)], [(d, 1)]]
    assert pack_batches([]) == []


def test_plan_chunks():
    assert plan_chunks(10, 0, 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan_chunks(10, 6, 4) == [(6, 10)]
    assert plan_chunks(8, 8, 4) == []
    assert plan_chunks(0, 0, 4) == []
    size = (1 << 30) + 5
    chunks = plan_chunks(size)
    assert chunks[0] == (0, pc.CHUNK_SIZE) and chunks[-1][1] == size
    assert all(b - a <= pc.CHUNK_SIZE for a, b in chunks)
    assert all(chunks[i][1] == chunks[i + 1][0] for i in range(len(chunks) - 1))
    with pytest.raises(ValueError):
        plan_chunks(10, 11)
    with pytest.raises(ValueError):
        plan_chunks(10, 0, 0)


@pytest.mark.parametrize(
    "scopes, space",
    [
        (["publish:builds/android"], "builds"),
        (["publish:builds"], "builds"),
        (["publish:builds/a", "publish:builds/b:write", "log:ops"], "builds"),
        (["publish:a", "publish:b"], None),
        (["log:ops"], None),
        ([], None),
        (None, None),
    ],
)
def test_space_from_scopes(scopes, space):
    assert space_from_scopes(scopes) == space


def test_human_bytes_and_summary_line():
    assert human_bytes(0) == "0 B"
    assert human_bytes(1_234_567) == "1.2 MB"
    line = summary_line({
        "files": 3, "bytes": 2_000_000, "url": "https://hub/files/s/t/1/", "bytes_hashed": 1_000_000,
        "bytes_sent": 500_000, "deduplicated": 1, "seconds": 1.25,
    })  # fmt: skip
    assert line == (
        "published 3 files (2.0 MB) to https://hub/files/s/t/1/: hashed 1.0 MB, sent 500.0 kB, 1 deduplicated, 1.2 s"
    )


# -- the flow against a fake hub -----------------------------------------------------------


class FakeHub:
    """Just enough of the hub's publish API to drive the client."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.builds: dict[tuple[str, str, str], list[dict]] = {}
        self.uploads: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.scopes: list[str] | None = ["publish:builds/android"]
        self.fail: dict[str, list] = {}  # "METHOD path-prefix" -> queue of actions
        self.sent_bytes = 0
        self.asked: list[str] = []  # digests asked about in blobs/missing

    def _action(self, request: httpx.Request):
        for key, queue in self.fail.items():
            method, _, prefix = key.partition(" ")
            if request.method == method and request.url.path.startswith(prefix) and queue:
                return queue.pop(0)
        return None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        action = self._action(request)
        if action == "drop-before":
            raise httpx.ConnectError("connection refused")
        if isinstance(action, int):
            return httpx.Response(action, headers={"Retry-After": "0"}, json={"title": "busy"})
        body = request.read()
        self.sent_bytes += len(body)
        if action == "corrupt":  # what arrives is not what the client hashed (the file changed meanwhile)
            body = bytes([body[0] ^ 1]) + body[1:]
        if action == "drop-half":
            # the hub keeps half of an upload chunk, then the connection breaks
            m = re.fullmatch(r"/api/v1/uploads/(\w+)", path)
            up = self.uploads[m.group(1)]
            up["data"] += body[: len(body) // 2]
            raise httpx.ReadError("connection reset")
        resp = self._route(request, path, body)
        if action == "drop-answer":  # the hub did it all, then the connection broke before the answer
            raise httpx.ReadError("connection reset")
        if action == "gone":  # another replica finished the upload just before this request reached one
            return httpx.Response(404, json={"type": "urn:tether:problem:not-found", "title": "Not Found",
                                             "status": 404, "detail": "upload not found"})
        return resp

    def _route(self, request: httpx.Request, path: str, body: bytes) -> httpx.Response:
        if path == "/api/v1/tokens/self":
            return httpx.Response(200, json={"scopes": self.scopes})
        if path == "/api/v1/blobs/missing":
            data = json.loads(body)
            self.asked.extend(data["digests"])
            return httpx.Response(200, json={"missing": [d for d in data["digests"] if d not in self.blobs], "lease_seconds": 3600})
        if path == "/api/v1/blobs/batch":
            assert request.headers["content-type"] == "application/x-tether-blobs"
            assert int(request.headers["content-length"]) == len(body)
            stored = []
            for d, data in decode_frames(body):
                if sha(data) != d:
                    return self._mismatch(d)
                self.blobs[d] = data
                stored.append(d)
            return httpx.Response(200, json={"stored": stored})
        m = re.fullmatch(r"/api/v1/blobs/sha256/([0-9a-f]{64})", path)
        if m:
            assert int(request.headers["content-length"]) == len(body)
            if sha(body) != m.group(1):
                return self._mismatch(m.group(1))
            self.blobs[m.group(1)] = body
            return httpx.Response(201, json={"digest": m.group(1), "size": len(body)})
        if path == "/api/v1/uploads" and request.method == "POST":
            data = json.loads(body)
            if "digest" not in data and any(len(b) == data["size"] for b in self.blobs.values()):
                return httpx.Response(409, json={"type": "urn:tether:problem:size-known", "detail": "hash first"})
            uid = f"u{len(self.uploads)}"
            self.uploads[uid] = {"digest": data.get("digest"), "size": data["size"], "data": b""}
            return httpx.Response(201, json={"id": uid, "offset": 0, "size": data["size"]})
        m = re.fullmatch(r"/api/v1/uploads/(\w+)", path)
        if m:
            up = self.uploads.get(m.group(1))
            if up is None:
                return httpx.Response(404, json={"type": "urn:tether:problem:not-found", "detail": "no such upload"})
            if request.method == "GET":
                return httpx.Response(200, json={"offset": len(up["data"]), "size": up["size"]})
            offset = int(request.url.params["offset"])
            if offset != len(up["data"]):
                return httpx.Response(409, json={"detail": "wrong offset", "offset": len(up["data"])})
            up["data"] += body
            if "digest" in request.url.params:
                up["digest"] = request.url.params["digest"]
            if len(up["data"]) < up["size"] or up["digest"] is None:
                return httpx.Response(200, json={"offset": len(up["data"]), "complete": False})
            if sha(up["data"]) != up["digest"]:
                return self._mismatch(up["digest"])
            self.blobs[up["digest"]] = up["data"]
            del self.uploads[m.group(1)]  # as the hub does: a finished upload is gone
            return httpx.Response(200, json={"offset": up["size"], "complete": True})
        m = re.fullmatch(r"/api/v1/publish/([^/]+)/([^/]+)/([^/]+)", path)
        if m:
            key = m.groups()
            if key in self.builds:
                return httpx.Response(409, json={"detail": "exists"})
            data = json.loads(body)
            if "same_as" in data:  # the hub copies an earlier build of the space with that manifest
                source = next((k for k, v in self.builds.items() if k[0] == key[0] and manifest_digest(
                    [(f["path"], f["digest"], f["size"], f["mode"]) for f in v]) == data["same_as"]), None)
                if source is None:
                    return httpx.Response(404, json={"type": "urn:tether:problem:unknown-manifest",
                                                      "detail": "no build has that manifest"})
                self.builds[key] = self.builds[source]
                return httpx.Response(201, json={"space": key[0], "type": key[1], "build": key[2],
                                                 "path": f"{key[1]}/{key[2]}", "same_as": f"{source[1]}/{source[2]}"})
            files = data["files"]
            for f in files:
                if f["digest"] not in self.blobs:
                    return httpx.Response(400, json={"type": "urn:tether:problem:missing-blobs",
                                                      "detail": f"blob {f['digest']} was never uploaded"})
            self.builds[key] = files
            url = f"http://hub.test/files/{key[0]}/{key[1]}/{key[2]}/"
            return httpx.Response(201, json={
                "space": key[0], "type": key[1], "build": key[2], "path": f"{key[1]}/{key[2]}",
                "files": len(files), "bytes": sum(f["size"] for f in files), "url": url,
            })  # fmt: skip
        return httpx.Response(404, json={"detail": f"no route {path}"})

    @staticmethod
    def _mismatch(digest: str) -> httpx.Response:
        return httpx.Response(
            400,
            json={"type": "urn:tether:problem:blob-digest-mismatch", "detail": f"blob {digest}: the bytes do not match the digest"},
        )

    def content(self, key: tuple[str, str, str]) -> dict[str, bytes]:
        return {f["path"]: self.blobs[f["digest"]] for f in self.builds[key]}


@pytest.fixture(autouse=True)
def fast(monkeypatch, tmp_path):
    monkeypatch.setattr(pc, "BACKOFF", 0.001)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TETHER_SPACE", raising=False)


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


def make(root: Path, rel: str, data: bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, ns=(OLD, OLD))
    return p


def wire_handler(hub: FakeHub):
    """The fake hub as a tether.hubclient.transport handler: httpx.Request in, httpx.Response out, and
    its dropped connections as the OSErrors a socket would raise."""

    def handle(method: str, target: str, headers: dict[str, str], body: bytes):
        request = httpx.Request(method, "http://hub.test" + target, headers=headers, content=body)
        try:
            resp = hub(request)
        except httpx.ConnectError as exc:
            raise ConnectionRefusedError(str(exc)) from None
        except httpx.ReadError as exc:
            raise ConnectionResetError(str(exc)) from None
        return resp.status_code, dict(resp.headers), resp.read()

    return handle


def run(hub: FakeHub, root: Path, build: str = "1", globs=("**",), **kw):
    return publish(
        "http://hub.test", "tth_test", kw.pop("space", None), kw.pop("type", "android"), build, list(globs),
        root=root, handler=wire_handler(hub), **kw,
    )  # fmt: skip


def test_flow_small_files_dedup_and_republish(hub, tmp_path):
    root = tmp_path / "tree"
    files = {f"out/f{i:03}.txt": f"file {i}".encode() for i in range(50)}
    files["out/dup.txt"] = b"file 7"  # same content as f007
    files["out/sub/bin.sh"] = b"#!/bin/sh\n"
    for rel, data in files.items():
        make(root, rel, data)
    (root / "out/sub/bin.sh").chmod(0o755)

    s = run(hub, root, strip=1)
    assert s["files"] == 52 and s["space"] == "builds"  # space from the token's one publish: scope
    assert s["deduplicated"] == 1 and s["uploaded"] == 51
    assert s["bytes_sent"] == sum(len(v) for k, v in files.items() if k != "out/dup.txt")
    assert s["bytes_hashed"] == s["bytes"]
    assert s["url"] == "http://hub.test/files/builds/android/1/"
    assert hub.content(("builds", "android", "1")) == {k.removeprefix("out/"): v for k, v in files.items()}
    modes = {f["path"]: f["mode"] for f in hub.builds[("builds", "android", "1")]}
    assert modes["sub/bin.sh"] == 0o755 and modes["f000.txt"] == 0o644
    assert sum(1 for m, p in hub.requests if p == "/api/v1/blobs/batch") == 1

    # unchanged re-publish under a new id: nothing hashed, nothing sent
    hub.requests.clear()
    s2 = run(hub, root, build="2", strip=1)
    assert (s2["bytes_hashed"], s2["bytes_sent"], s2["deduplicated"]) == (0, 0, 52)
    # every digest came from the hash cache: the commit goes first, by the manifest's digest alone
    assert [p for _, p in hub.requests] == ["/api/v1/tokens/self", "/api/v1/publish/builds/android/2"]
    assert s2["same_as"] == "android/1" and hub.builds[("builds", "android", "2")] == hub.builds[("builds", "android", "1")]


def test_all_cached_but_the_hub_lacks_blobs_uploads_then_commits(hub, tmp_path):
    root = tmp_path / "tree"
    make(root, "a.txt", b"aaa")
    make(root, "b.txt", b"bbb")
    run(hub, root, space="builds")
    # e.g. another hub, or the build was removed by retention and its blobs garbage-collected since
    del hub.builds[("builds", "android", "1")]
    del hub.blobs[sha(b"bbb")]
    hub.requests.clear()
    s = run(hub, root, space="builds", build="2")
    assert (s["bytes_hashed"], s["bytes_sent"], s["uploaded"], s["deduplicated"]) == (0, 3, 1, 1)
    assert s["same_as"] is None
    assert [p for _, p in hub.requests] == [
        "/api/v1/publish/builds/android/2",  # by the manifest's digest: unknown
        "/api/v1/publish/builds/android/2",  # the whole manifest: a blob is missing
        "/api/v1/blobs/missing", "/api/v1/blobs/batch",
        "/api/v1/publish/builds/android/2",
    ]
    assert hub.content(("builds", "android", "2")) == {"a.txt": b"aaa", "b.txt": b"bbb"}


def test_flow_medium_and_large_files(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(pc, "SMALL_MAX", 1000)
    monkeypatch.setattr(pc, "MEDIUM_MAX", 10_000)
    monkeypatch.setattr(pc, "CHUNK_SIZE", 4096)
    root = tmp_path / "tree"
    medium = os.urandom(5000)
    large = os.urandom(20_000)
    make(root, "m.bin", medium)
    make(root, "l.bin", large)
    make(root, "s.txt", b"small")
    s = run(hub, root, space="builds", jobs=3)
    assert hub.content(("builds", "android", "1")) == {"m.bin": medium, "l.bin": large, "s.txt": b"small"}
    assert s["bytes_sent"] == 25_005
    puts = [p for m, p in hub.requests if m == "PUT" and p.startswith("/api/v1/uploads/")]
    assert len(puts) == 5  # 20,000 bytes in 4 KiB chunks
    assert ("PUT", f"/api/v1/blobs/sha256/{sha(medium)}") in hub.requests


def small_chunks(monkeypatch) -> None:
    """Limits of a few bytes: anything over 100 bytes goes in resumable chunks of 1000."""
    monkeypatch.setattr(pc, "SMALL_MAX", 10)
    monkeypatch.setattr(pc, "MEDIUM_MAX", 100)
    monkeypatch.setattr(pc, "CHUNK_SIZE", 1000)


def test_large_upload_resumes_from_the_hubs_offset(hub, tmp_path, monkeypatch):
    small_chunks(monkeypatch)
    root = tmp_path / "tree"
    large = os.urandom(3000)
    make(root, "l.bin", large)
    hub.fail["PUT /api/v1/uploads/"] = [None, "drop-half"]  # second chunk breaks half way
    s = run(hub, root, space="builds")
    assert hub.content(("builds", "android", "1")) == {"l.bin": large}
    # resumed from 1500, not from zero: 1000 + 1000 (broken) + 500 + 1000
    assert s["bytes_sent"] == 3500
    gets = [p for m, p in hub.requests if m == "GET" and p.startswith("/api/v1/uploads/")]
    assert len(gets) == 1


@pytest.fixture
def early(monkeypatch):
    """Sizes scaled down: files of 1,000 bytes and more may be sent before they are hashed."""
    small_chunks(monkeypatch)
    monkeypatch.setattr(pc, "UNHASHED_MIN", 1000)


def test_a_large_new_file_is_sent_while_it_is_hashed(hub, tmp_path, early):
    root = tmp_path / "tree"
    large = os.urandom(3000)
    make(root, "l.bin", large)
    s = run(hub, root, space="builds")
    assert hub.content(("builds", "android", "1")) == {"l.bin": large}
    assert (s["bytes_sent"], s["bytes_hashed"], s["uploaded"]) == (3000, 3000, 1)
    # never asked about: the upload started without its digest, declared at the end
    assert not any(p == "/api/v1/blobs/missing" for _, p in hub.requests)
    assert hub.blobs == {sha(large): large} and hub.uploads == {}  # declared, checked, finished
    assert [m for m, p in hub.requests if p.startswith("/api/v1/uploads/")] == ["PUT"] * 4  # 3 chunks + declare


def test_a_large_file_whose_size_the_hub_knows_is_hashed_first_and_not_sent_again(hub, tmp_path, early):
    root = tmp_path / "tree"
    large = os.urandom(3000)
    make(root, "l.bin", large)
    run(hub, root, space="builds", cache=False)
    hub.requests.clear()
    s = run(hub, root, space="builds", build="2", cache=False)  # no hash cache, as on a fresh builder
    assert (s["bytes_sent"], s["deduplicated"]) == (0, 1)
    assert [p for _, p in hub.requests] == ["/api/v1/uploads", "/api/v1/blobs/missing", "/api/v1/publish/builds/android/2"]
    # another content of the same size: refused early, then asked about and uploaded
    make(root, "l.bin", os.urandom(3000))
    s = run(hub, root, space="builds", build="3", cache=False)
    assert (s["bytes_sent"], s["uploaded"]) == (3000, 1)
    assert hub.content(("builds", "android", "3"))["l.bin"] == (root / "l.bin").read_bytes()


def test_a_file_that_changed_under_an_early_upload_is_refused(hub, tmp_path, early):
    root = tmp_path / "tree"
    make(root, "l.bin", os.urandom(3000))
    hub.fail["PUT /api/v1/uploads/"] = ["corrupt"]
    with pytest.raises(FileChangedError, match="l.bin"):
        run(hub, root, space="builds")
    assert hub.builds == {} and hub.blobs == {}


@pytest.mark.parametrize("jobs", [1, 4])
def test_files_of_one_size_and_single_job_runs_are_hashed_first(hub, tmp_path, early, jobs):
    root = tmp_path / "tree"
    make(root, "a.bin", os.urandom(2000))
    make(root, "b.bin", os.urandom(2000))  # same size: maybe the same content, so hash first
    make(root, "c.bin", os.urandom(2500))  # a size of its own: early, unless --jobs 1
    s = run(hub, root, space="builds", jobs=jobs)
    assert s["bytes_sent"] == 6500
    digests = {n: sha((root / n).read_bytes()) for n in ("a.bin", "b.bin", "c.bin")}
    assert hub.content(("builds", "android", "1")) == {n: (root / n).read_bytes() for n in digests}
    expected = {"a.bin", "b.bin"} | ({"c.bin"} if jobs == 1 else set())
    assert sorted(hub.asked) == sorted(digests[n] for n in expected)


@pytest.mark.parametrize("early_upload", [False, True])
def test_a_lost_answer_to_the_last_chunk_is_not_a_failure(hub, tmp_path, early, early_upload):
    """The hub finished the upload (and forgot it), but its answer never arrived: the
    client finds the upload gone, asks whether the blob is there, and carries on."""
    root = tmp_path / "tree"
    large = os.urandom(2500)
    make(root, "l.bin", large)
    if early_upload:  # chunks 1-3, then the empty PUT that declares the digest
        hub.fail["PUT /api/v1/uploads/"] = [None, None, None, "drop-answer"]
    else:  # one job: hashed first, the digest given at the start; the last chunk's answer is lost
        hub.fail["PUT /api/v1/uploads/"] = [None, None, "drop-answer"]
    s = run(hub, root, space="builds", cache=False, jobs=4 if early_upload else 1)
    assert hub.content(("builds", "android", "1")) == {"l.bin": large}
    assert s["uploaded"] == 1
    gets = [p for m, p in hub.requests if m == "GET" and p.startswith("/api/v1/uploads/")]
    assert len(gets) == 1  # the resync that found it gone


def test_an_upload_another_replica_is_finishing_is_waited_for_then_found_stored(hub, tmp_path, monkeypatch):
    """The last chunk meets 503 upload-finishing (another replica is storing the upload):
    the client waits as told, asks where the upload stands, sends again, and finds the
    upload gone (404: that replica stored it): it asks whether the blob is there, and
    carries on."""
    small_chunks(monkeypatch)
    root = tmp_path / "tree"
    large = os.urandom(2500)
    make(root, "l.bin", large)
    hub.fail["PUT /api/v1/uploads/"] = [None, None, 503, "gone"]  # chunks of 1000, 1000, 500
    run(hub, root, space="builds", cache=False, jobs=1)
    assert hub.content(("builds", "android", "1")) == {"l.bin": large}
    assert [m for m, p in hub.requests if p.startswith("/api/v1/uploads/")] == ["PUT", "PUT", "PUT", "GET", "PUT", "GET"]


def test_wrong_offset_409_resyncs(hub, tmp_path, monkeypatch):
    small_chunks(monkeypatch)
    root = tmp_path / "tree"
    large = os.urandom(2500)
    make(root, "l.bin", large)
    hub.fail["PUT /api/v1/uploads/"] = [409]
    run(hub, root, space="builds")
    assert hub.content(("builds", "android", "1")) == {"l.bin": large}


def test_transient_errors_are_retried(hub, tmp_path):
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    hub.fail["POST /api/v1/blobs/missing"] = ["drop-before", 503]
    hub.fail["POST /api/v1/blobs/batch"] = [429, 502]
    hub.fail["POST /api/v1/publish/"] = [504]
    run(hub, root, space="builds")
    assert hub.content(("builds", "android", "1")) == {"a.txt": b"a"}


def test_retries_give_up_after_five_tries(hub, tmp_path):
    from tether.hubclient.errors import TransportError

    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    hub.fail["POST /api/v1/blobs/missing"] = ["drop-before"] * 5
    with pytest.raises(TransportError):
        run(hub, root, space="builds")
    assert sum(1 for _, p in hub.requests if p == "/api/v1/blobs/missing") == 5
    assert not hub.builds


def test_existing_build_is_a_clean_no(hub, tmp_path):
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    run(hub, root, space="builds")
    with pytest.raises(PublishError, match="build 1 already exists; publish under a new id") as e:
        run(hub, root, space="builds")
    assert e.value.exit_code == 1


def test_digests_reach_the_hash_cache_even_when_the_commit_is_refused(hub, tmp_path):
    # the new digests are written to the cache while the commit runs, not before it
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    run(hub, root, space="builds")
    make(root, "b.txt", b"bb")
    with pytest.raises(PublishError, match="build 1 already exists"):
        run(hub, root, space="builds")
    s = run(hub, root, space="builds", build="2")
    assert (s["bytes_hashed"], s["bytes_sent"]) == (0, 0)
    assert hub.content(("builds", "android", "2")) == {"a.txt": b"a", "b.txt": b"bb"}


def test_digests_reach_the_hash_cache_even_when_an_upload_fails(hub, tmp_path):
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    make(root, "b.txt", b"bb")
    hub.fail["POST /api/v1/blobs/batch"] = [403]  # not worth a retry: the publish fails at once
    with pytest.raises(HubError):
        run(hub, root, space="builds")
    assert not hub.builds and not hub.blobs
    s = run(hub, root, space="builds")  # the retry hashes nothing again
    assert (s["bytes_hashed"], s["bytes_sent"]) == (0, 3)
    assert hub.content(("builds", "android", "1")) == {"a.txt": b"a", "b.txt": b"bb"}


def test_file_changed_while_publishing(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(pc, "SMALL_MAX", 2)  # a.txt is sent from its file, after hashing
    root = tmp_path / "tree"
    p = make(root, "a.txt", b"aaaa")
    real = uploads._upload_single

    def change_then_upload(run_, blob):
        p.write_bytes(b"bbbb")  # same size, new content, after hashing
        return real(run_, blob)

    monkeypatch.setattr(uploads, "_upload_single", change_then_upload)
    with pytest.raises(FileChangedError, match="a.txt changed while it was being published; re-run"):
        run(hub, root, space="builds")
    assert not hub.builds


def test_small_file_changed_after_hashing_publishes_what_was_hashed(hub, tmp_path, monkeypatch):
    # Small files are read once, for hashing and upload: a later change cannot mix
    # old digest and new bytes; the build holds the content as it was read.
    root = tmp_path / "tree"
    p = make(root, "a.txt", b"aaaa")
    real = uploads._upload_batch

    def change_then_upload(run_, blobs):
        p.write_bytes(b"bbbb")
        return real(run_, blobs)

    monkeypatch.setattr(uploads, "_upload_batch", change_then_upload)
    run(hub, root, space="builds")
    assert hub.content(("builds", "android", "1")) == {"a.txt": b"aaaa"}


def test_space_must_be_said_when_the_token_cannot_tell(hub, tmp_path, monkeypatch):
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    hub.scopes = ["publish:a", "publish:b"]
    with pytest.raises(PublishError, match="--space") as e:
        run(hub, root)
    assert e.value.exit_code == 2
    monkeypatch.setenv("TETHER_SPACE", "b")
    assert run(hub, root)["space"] == "b"


def test_dry_run_sends_nothing(hub, tmp_path):
    root = tmp_path / "tree"
    make(root, "out/a.txt", b"a")
    s = run(hub, root, strip=1, dry_run=True)
    assert hub.requests == []
    assert s["dry_run"] and s["files"] == 1
    assert s["manifest"] == [{"path": "a.txt", "digest": sha(b"a"), "size": 1, "mode": 0o644, "source": "out/a.txt"}]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"type": "Bad Type"}, "build type"),
        ({"build": "../x"}, "build id"),
        ({"globs": ["nothing-*"]}, "matched no files"),
        ({"strip": 5}, "cannot strip"),
        ({"jobs": 0}, "--jobs"),
    ],
)
def test_bad_input_sends_nothing(hub, tmp_path, kw, message):
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    with pytest.raises(InputError, match=message):
        run(hub, root, space="builds", **kw)
    assert hub.requests == []


def test_progress_bar_does_not_break_the_flow(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(pc, "SMALL_MAX", 10)
    monkeypatch.setattr(pc, "MEDIUM_MAX", 100)
    monkeypatch.setattr(pc, "CHUNK_SIZE", 64)
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    make(root, "big.bin", os.urandom(500))
    s = run(hub, root, space="builds", progress=True)
    assert s["files"] == 2


def test_hub_settings_from_a_hub_client_or_a_client_config(hub, tmp_path):
    from tether.hubclient.hub import Hub
    from tether.hubclient.config import ClientConfig
    from tether.problems import ConfigError

    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    tokens = []
    handle = wire_handler(hub)

    def spy(method, target, headers, body):
        tokens.append(headers.get("authorization"))
        return handle(method, target, headers, body)

    with Hub("http://hub.test", token="tth_from_client") as hc:
        publish(None, None, "builds", "android", "1", ["*.txt"], root=root, client=hc, handler=spy)
    assert set(tokens) == {"Bearer tth_from_client"}
    tokens.clear()
    publish(None, None, "builds", "android", "2", ["*.txt"], root=root, handler=spy,
            client=lambda: ClientConfig("http://hub.test", token="tth_from_config"))  # fmt: skip
    assert set(tokens) == {"Bearer tth_from_config"}
    assert ("builds", "android", "2") in hub.builds
    with pytest.raises(ConfigError, match="no hub configured"):
        publish(None, None, "builds", "android", "3", ["*.txt"], root=root, client=lambda: ClientConfig(None))


# -- the command line (no hub needed) ---------------------------------------------------------


@pytest.fixture
def cli(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tether.cli import main

    env = {
        "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TETHER_HUB": None, "TETHER_TOKEN": None, "TETHER_CA_BUNDLE": None, "TETHER_SPACE": None,
    }  # fmt: skip

    def invoke(*args: str):
        return CliRunner().invoke(main, ["publish", *args], env=env)

    return invoke


def test_cli_dry_run_lists_the_plan(cli, tmp_path):
    root = tmp_path / "tree"
    make(root, "out/a.txt", b"a")
    make(root, "out/b.txt", b"bb")
    r = cli("--type", "android", "--strip", "1", "--root", str(root), "--dry-run", "1234", "out/*.txt")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith("a.txt  1  644  ")
    assert "<- out/a.txt" in r.stdout
    assert r.stderr.startswith("dry run: would publish 2 files (3 B) as build 1234 of type android in the space "
                               "of the token's scope: hashed 3 B")
    r = cli("--type", "android", "--root", str(root), "--space", "builds", "--dry-run", "1234", "out/*.txt")
    assert r.stderr.startswith("dry run: would publish 2 files (3 B) as build 1234 of type android in space builds:")


def test_cli_dry_run_json(cli, tmp_path):
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    r = cli("--type", "android", "--root", str(root), "--dry-run", "--json", "--space", "builds", "7", "*.txt")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    for key in ("files", "bytes_hashed", "bytes_sent", "deduplicated", "seconds", "build", "space", "type"):
        assert key in data
    assert data["build"] == "7" and data["space"] == "builds" and data["manifest"][0]["path"] == "a.txt"


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["nothing-*"], "matched no files"),
        ("outside", ["*"], "outside the root"),
        ("collide", ["*/*"], "collide"),
        (None, ["../x"], "inside --root"),
    ],
)
def test_cli_bad_input_exit_2(cli, tmp_path, setup, args, message):
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    if setup == "outside":
        make(tmp_path, "secret", b"s")
        (root / "leak").symlink_to(tmp_path / "secret")
    if setup == "collide":
        make(root, "x/A", b"1")
        make(root, "y/a", b"2")
        args = ["--strip", "1", *args]
    r = cli("--type", "android", "--root", str(root), "--hub", "http://127.0.0.1:1", "1", *args)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("tether: error: ") and message in r.stderr
    assert "Traceback" not in r.output


def test_cli_unreachable_hub_exit_3(cli, tmp_path):
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    r = cli("--type", "android", "--root", str(root), "--hub", "http://127.0.0.1:1", "--token", "tth_0123456789abcdef_secret",
            "--space", "builds", "1", "*.txt")  # fmt: skip
    assert r.exit_code == 3, r.output
    assert "cannot reach hub" in r.stderr and "secret" not in r.output


def test_cli_no_hub_exit_2(cli, tmp_path):
    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    r = cli("--type", "android", "--root", str(root), "1", "*.txt")
    assert r.exit_code == 2, r.output
    assert "no hub configured" in r.stderr


def test_cli_publish_does_not_import_httpx(tmp_path):
    # httpx's import and set-up were a third of an unchanged re-publish: `tether publish`
    # talks to the hub with tether.hubclient.transport, errors included.
    import subprocess
    import sys

    root = tmp_path / "tree"
    make(root, "a.txt", b"a")
    code = "import sys\nfrom tether.cli import main\nfrom tether.publish import client\nclient.BACKOFF = 0.001\n" \
           "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print('exit', e.code, 'httpx' in sys.modules)\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    r = subprocess.run([sys.executable, "-c", code, "publish", "--type", "android", "--root", str(root),
                        "--hub", "http://127.0.0.1:1", "--token", "tth_x", "--space", "builds", "1", "*.txt"],
                       env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.stdout.strip() == "exit 3 False", r.stdout + r.stderr
    assert "cannot reach hub at http://127.0.0.1:1" in r.stderr


# -- an unchanged tree is committed from its remembered manifest digest -------------------


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for i in range(20):
        make(root, f"out/f{i:02}.txt", f"file {i}".encode())
    return root


def test_an_unchanged_tree_goes_straight_to_the_commit(hub, tmp_path):
    import sqlite3

    root = _tree(tmp_path)
    run(hub, root, space="builds", strip=1)
    # the digests' cache is emptied: only the tree's record can tell the manifest now
    with sqlite3.connect(tmp_path / "cache" / "tether" / "hashes.sqlite") as db:
        db.execute("DELETE FROM dirs")
    hub.requests.clear()
    s = run(hub, root, space="builds", build="2", strip=1)
    assert (s["files"], s["bytes_hashed"], s["bytes_sent"], s["deduplicated"]) == (20, 0, 0, 20)
    assert s["same_as"] == "android/1" and s["bytes"] == sum(len(f"file {i}") for i in range(20))
    assert [p for _, p in hub.requests] == ["/api/v1/publish/builds/android/2"]
    assert hub.builds[("builds", "android", "2")] == hub.builds[("builds", "android", "1")]


@pytest.mark.parametrize("change", ["content", "same size and mtime", "mode", "added", "removed", "strip"])
def test_any_change_to_the_tree_takes_the_full_way(hub, tmp_path, change):
    root = _tree(tmp_path)
    run(hub, root, space="builds", strip=1)
    strip = 1
    if change == "content":
        make(root, "out/f03.txt", b"new content")
    elif change == "same size and mtime":  # rewritten in place, its mtime put back: only the ctime differs
        p, ctime = root / "out/f03.txt", (root / "out/f03.txt").stat().st_ctime_ns
        for _ in range(100):  # until the ctime moves (coarse kernel clocks tick every 4-10 ms)
            with open(p, "r+b") as fh:
                fh.write(b"FILE 3")
            os.utime(p, ns=(OLD, OLD))
            if p.stat().st_ctime_ns != ctime:
                break
            time.sleep(0.005)
    elif change == "mode":
        (root / "out/f03.txt").chmod(0o755)
    elif change == "added":
        make(root, "out/new.txt", b"new")
    elif change == "removed":
        (root / "out/f03.txt").unlink()
    else:
        strip = 0
    s = run(hub, root, space="builds", build="2", strip=strip)
    published = {f["path"]: f for f in hub.builds[("builds", "android", "2")]}
    on_disk = {p.relative_to(root / "out" if strip else root).as_posix(): p for p in (root / "out").iterdir()}
    assert set(published) == set(on_disk)
    for path, p in on_disk.items():
        assert published[path]["digest"] == sha(p.read_bytes())
        assert published[path]["mode"] == (0o755 if p.stat().st_mode & 0o100 else 0o644)
    assert s["same_as"] is None or change == "strip"  # only a new prefix keeps the same files


def test_a_remembered_tree_the_hub_does_not_know_is_sent_whole(hub, tmp_path):
    root = _tree(tmp_path)
    run(hub, root, space="builds")
    other = FakeHub()  # another hub: no build has that manifest, nor any blob
    s = run(other, root, space="builds", build="2")
    assert other.content(("builds", "android", "2")) == hub.content(("builds", "android", "1"))
    assert s["uploaded"] == 20 and s["bytes_hashed"] == 0  # the digests still came from the cache
    assert [p for _, p in other.requests][:2] == ["/api/v1/publish/builds/android/2"] * 2  # by digest, then whole


def test_a_partly_changed_tree_asks_only_about_the_changed_files(hub, tmp_path):
    root = _tree(tmp_path)
    run(hub, root, space="builds", strip=1)
    make(root, "out/f03.txt", b"new content")
    make(root, "out/new.txt", b"added")
    hub.asked.clear()
    s = run(hub, root, space="builds", build="2", strip=1)
    assert sorted(hub.asked) == sorted([sha(b"new content"), sha(b"added")])  # not the 19 unchanged ones
    assert s["uploaded"] == 2 and s["bytes_sent"] == len(b"new content") + len(b"added")
    assert hub.content(("builds", "android", "2"))["f03.txt"] == b"new content"
    assert len(hub.builds[("builds", "android", "2")]) == 21


def test_unchanged_files_the_hub_lost_are_asked_about_and_sent_after_all(hub, tmp_path):
    """The commit finds a blob missing that the cache took to be on the hub (collected
    since, or another hub): the client asks about every such digest, sends the missing
    ones and commits again; the build is whole."""
    root = _tree(tmp_path)
    run(hub, root, space="builds", strip=1)
    make(root, "out/f03.txt", b"new content")
    lost = sha(b"file 7")
    del hub.blobs[lost]
    hub.asked.clear()
    hub.requests.clear()
    s = run(hub, root, space="builds", build="2", strip=1)
    assert hub.content(("builds", "android", "2")) == {f"f{i:02}.txt": (b"new content" if i == 3 else f"file {i}".encode())
                                                        for i in range(20)}  # fmt: skip
    assert lost in hub.asked and s["uploaded"] == 2
    commits = [p for _, p in hub.requests if p == "/api/v1/publish/builds/android/2"]
    assert len(commits) == 2  # refused for the lost blob, then whole


def test_a_tree_not_published_from_here_asks_about_everything(hub, tmp_path):
    root = _tree(tmp_path)
    run(hub, root, space="builds", strip=0)  # the cache knows every digest, but not this tree with --strip 1
    make(root, "out/f03.txt", b"new content")
    hub.asked.clear()
    s = run(hub, root, space="builds", build="2", strip=1)
    assert s["bytes_hashed"] == len(b"new content")  # the other 19 came from the cache
    assert len(hub.asked) == 20


def test_files_too_new_for_the_cache_leave_no_tree(hub, tmp_path):
    root = tmp_path / "tree"
    (root / "out").mkdir(parents=True)
    (root / "out/fresh.txt").write_bytes(b"written just now")  # within the racy window: not cached
    run(hub, root, space="builds")
    from tether.publish.files import HashCache, expand, tree_key

    with HashCache(tmp_path / "cache" / "tether" / "hashes.sqlite") as hc:
        assert hc.get_tree(tree_key(str(root), ["**"], 0)) is None
        assert expand(root, ["**"])  # the file is there; only its digest could not be trusted yet


def test_an_unusable_proxy_is_bad_input_not_a_traceback(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    monkeypatch.setenv("https_proxy", "socks5://proxy.example:1080")
    with pytest.raises(PublishError) as e:
        publish("https://hub.example", "tth_test", "builds", "android", "1", ["**"], root=root)
    assert e.value.exit_code == 2 and "proxy" in str(e.value)


def test_a_damaged_tree_record_is_a_miss_not_a_failure(hub, tmp_path):
    import sqlite3

    root = _tree(tmp_path)
    run(hub, root, space="builds")
    with sqlite3.connect(tmp_path / "cache" / "tether" / "hashes.sqlite") as db:
        db.execute("UPDATE trees SET signature = 'not a blob', manifest = x'00'")
    s = run(hub, root, space="builds", build="2")
    assert s["same_as"] == "android/1" and s["bytes_sent"] == 0  # the full way, by the digests' cache


@given(st.lists(st.integers(min_value=0, max_value=10**12), max_size=20))
def test_batch_length_is_the_encoded_length_for_any_sizes(sizes):
    """The Content-Length the client declares is counted, not built: it must equal the body."""
    items = [("ab" * 32, n) for n in sizes]
    assert batch_length(items) == sum(len(frame_header(d, n)) + n for d, n in items)
