"""The blob store contract, run against both backends: a local directory and S3 (a real SeaweedFS)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import time
import tracemalloc
import uuid

import pytest

from tether.blobs import (
    DIGEST_RE,
    BlobError,
    BlobNotFound,
    BlobTooLarge,
    DigestMismatch,
    FsBlobStore,
    open_store,
)
from tether.blobs.s3 import S3BlobStore
from tests.conftest import S3_BUCKET as BUCKET
MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["fs", "s3"])
def store(request, tmp_path):
    if request.param == "fs":
        return open_store(str(tmp_path / "blobs"))
    server = request.getfixturevalue("seaweed")
    # A fresh prefix per test keeps tests apart inside one bucket.
    return open_store(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}", **server.store_options())


def leftovers(store) -> list[str]:
    """Anything a failed or aborted write could have left behind, visible or not."""
    if isinstance(store, FsBlobStore):
        found = [f"tmp/{p.name}" for p in store.tmp_dir.iterdir()]
        found += [str(p.relative_to(store.root)) for p in store.blob_dir.rglob("*") if p.is_file()]
        return found
    assert isinstance(store, S3BlobStore)
    found = [f"upload {u['Key']}" for u in store.incomplete_uploads()]
    resp = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix + "/")
    found += [obj["Key"] for obj in resp.get("Contents", [])]
    return found


def read_all(store, digest, *args) -> bytes:
    return b"".join(store.open_range(digest, *args))


# -- basic round trip ---------------------------------------------------------


def test_put_exists_size_and_ranges(store):
    data = bytes(range(256)) * 41 + b"tail"  # 10,500 bytes
    d = sha(data)
    assert not store.exists(d)
    assert store.size(d) is None
    assert store.put(d, data) == len(data)
    assert store.exists(d)
    assert store.size(d) == len(data)
    assert read_all(store, d) == data
    n = len(data)
    for start, end in [(0, 1), (0, 100), (5, 4096), (100, None), (n - 1, n), (n - 4, None),
                       (n - 4, n + 1000), (n, None), (n + 10, n + 20), (7, 7), (0, n), (0, None)]:
        assert read_all(store, d, start, end) == data[start:end], (start, end)
    # small chunks: every chunk at most `chunk`, concatenation exact
    chunks = list(store.open_range(d, 3, 3000, chunk=1000))
    assert b"".join(chunks) == data[3:3000]
    assert all(0 < len(c) <= 1000 for c in chunks)
    with pytest.raises(ValueError):
        list(store.open_range(d, -1))
    with pytest.raises(ValueError):
        list(store.open_range(d, 10, 5))


def test_empty_blob(store):
    d = sha(b"")
    assert store.put(d, b"") == 0
    assert store.exists(d)
    assert store.size(d) == 0
    assert read_all(store, d) == b""
    assert read_all(store, d, 0, 10) == b""
    assert read_all(store, d, 0, 0) == b""
    assert list(store.iter_digests()) == [d]


def test_put_accepts_bytes_iterables_and_files(store):
    data = os.urandom(300_000)
    d = sha(data)
    assert store.put(d, io.BytesIO(data)) == len(data)
    assert store.delete(d)
    assert store.put(d, (data[i:i + 7000] for i in range(0, len(data), 7000))) == len(data)
    assert store.delete(d)
    assert store.put(d, memoryview(data)) == len(data)
    assert read_all(store, d) == data


def test_missing_blob(store):
    d = sha(b"never stored")
    # raised at call time, before the first chunk, so a server can answer 404 up front
    with pytest.raises(BlobNotFound):
        store.open_range(d)
    with pytest.raises(BlobNotFound):
        store.open_range(d, 0, 0)
    assert store.size(d) is None
    assert not store.delete(d)


# -- refusals leave nothing behind ----------------------------------------------


@pytest.mark.parametrize("size", [1000, 9 * MiB + 123], ids=["small", "multipart"])
def test_digest_mismatch_refused_and_nothing_visible(store, size):
    data = os.urandom(size)
    claimed = sha(b"something else")
    w = store.writer(claimed)
    for i in range(0, size, MiB):
        w.write(data[i:i + MiB])
    with pytest.raises(DigestMismatch) as e:
        w.commit()
    assert e.value.expected == claimed
    assert e.value.actual == sha(data)
    assert e.value.size == size
    assert str(e.value) == f"the bytes hash to {sha(data)}, not {claimed}"
    assert isinstance(e.value, BlobError)
    assert not store.exists(claimed)
    assert not store.exists(sha(data))
    assert list(store.iter_digests()) == []
    assert leftovers(store) == []
    # the writer is finished: it can neither write nor commit again
    with pytest.raises(BlobError):
        w.write(b"x")
    with pytest.raises(BlobError):
        w.commit()
    w.abort()  # always safe


def test_mismatch_does_not_touch_an_existing_blob(store):
    good = b"the real content"
    d = sha(good)
    store.put(d, good)
    with pytest.raises(DigestMismatch):
        store.put(d, b"an impostor")
    assert read_all(store, d) == good


def test_max_size_refused(store):
    data = os.urandom(10_000)
    d = sha(data)
    with pytest.raises(BlobTooLarge) as e:
        store.put(d, data, max_size=9_999)
    assert e.value.max_size == 9_999
    assert not store.exists(d)
    assert leftovers(store) == []
    # the limit is inclusive
    assert store.put(d, data, max_size=10_000) == 10_000


def test_max_size_refused_mid_stream(store):
    data = os.urandom(12 * MiB)
    d = sha(data)
    w = store.writer(d, max_size=10 * MiB)
    with pytest.raises(BlobTooLarge):
        for i in range(0, len(data), MiB):
            w.write(data[i:i + MiB])
    assert w.size == 10 * MiB  # the refused chunk was not counted
    assert w.state == "aborted"
    assert not store.exists(d)
    assert leftovers(store) == []


@pytest.mark.parametrize("size", [5000, 10 * MiB], ids=["small", "multipart"])
def test_truncated_write_leaves_nothing(store, size):
    data = os.urandom(size)
    d = sha(data)

    class ConnectionLost(Exception):
        pass

    with pytest.raises(ConnectionLost):
        with store.writer(d) as w:
            w.write(data[: size // 2])
            w.write(data[size // 2 : size - 100])
            raise ConnectionLost
    assert w.state == "aborted"
    assert not store.exists(d)
    assert leftovers(store) == []


def test_context_manager_never_commits_by_itself(store):
    data = b"forgotten"
    d = sha(data)
    with store.writer(d) as w:
        w.write(data)
    assert w.state == "aborted"
    assert not store.exists(d)
    assert leftovers(store) == []


def test_explicit_abort_and_truncated_commit(store):
    data = os.urandom(50_000)
    d = sha(data)
    w = store.writer(d)
    w.write(data[:20_000])
    w.abort()
    w.abort()
    assert not store.exists(d)
    # a short upload committed as if complete is a digest mismatch
    w = store.writer(d)
    w.write(data[:-1])
    with pytest.raises(DigestMismatch):
        w.commit()
    assert leftovers(store) == []


def test_commit_is_idempotent(store):
    data = os.urandom(4096)
    d = sha(data)
    assert store.put(d, data) == 4096
    assert store.put(d, data) == 4096
    assert read_all(store, d) == data
    assert list(store.iter_digests()) == [d]


@pytest.mark.parametrize("size", [64 * 1024, 9 * MiB], ids=["small", "multipart"])
def test_concurrent_writers_of_the_same_digest(store, size):
    data = os.urandom(size)
    d = sha(data)
    n = 4
    barrier = threading.Barrier(n)
    results: list[int] = []
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            w = store.writer(d)
            barrier.wait()
            for i in range(0, size, 32 * 1024 if size < MiB else MiB):
                w.write(data[i:i + (32 * 1024 if size < MiB else MiB)])
            barrier.wait()  # everyone has written everything before anyone commits
            results.append(w.commit())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=upload) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results == [size] * n
    assert read_all(store, d) == data
    assert list(store.iter_digests()) == [d]
    left = leftovers(store)
    assert [x for x in left if "upload" in x or x.startswith("tmp/")] == []


def test_delete(store):
    a, b = b"alpha", b"beta"
    store.put(sha(a), a)
    store.put(sha(b), b)
    assert store.delete(sha(a)) is True
    assert store.delete(sha(a)) is False
    assert not store.exists(sha(a))
    with pytest.raises(BlobNotFound):
        store.open_range(sha(a))
    assert store.exists(sha(b))
    assert list(store.iter_digests()) == [sha(b)]


def test_iter_digests(store):
    assert list(store.iter_digests()) == []
    blobs = [f"blob {i}".encode() for i in range(30)]
    for data in blobs:
        store.put(sha(data), data)
    got = list(store.iter_digests())
    assert sorted(got) == sorted(sha(x) for x in blobs)
    assert len(got) == len(set(got))
    assert all(DIGEST_RE.fullmatch(x) for x in got)


BAD_DIGESTS = [
    "../x",
    "../" + "a" * 61,
    "A" * 64,
    sha(b"x").upper(),
    "a" * 63,
    "a" * 65,
    "",
    "g" * 64,
    "a" * 63 + "\n",
    "sha256:" + sha(b"x"),
    "/" + "a" * 63,
    None,
]


@pytest.mark.parametrize("bad", BAD_DIGESTS, ids=repr)
def test_invalid_digests_refused(store, bad):
    calls = [
        lambda: store.writer(bad),
        lambda: store.put(bad, b"x"),
        lambda: store.exists(bad),
        lambda: store.size(bad),
        lambda: store.open_range(bad),
        lambda: store.delete(bad),
        lambda: store.local_path(bad),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert leftovers(store) == []


def test_large_blob_streams_with_bounded_memory(store):
    block = os.urandom(MiB)
    total = 64
    h = hashlib.sha256()
    for i in range(total):
        h.update(block[: MiB - i])
        h.update(i.to_bytes(4, "big") * (i // 4 + 1))
    d = h.hexdigest()
    expected_size = sum(MiB - i + 4 * (i // 4 + 1) for i in range(total))

    tracemalloc.start()
    try:
        with store.writer(d) as w:
            for i in range(total):
                # odd-sized writes, so parts and chunks never line up with writes
                w.write(block[: MiB - i])
                w.write(i.to_bytes(4, "big") * (i // 4 + 1))
            assert w.commit() == expected_size
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        h2 = hashlib.sha256()
        n = 0
        for chunk in store.open_range(d):
            h2.update(chunk)
            n += len(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == expected_size == store.size(d)
    assert h2.hexdigest() == d
    assert write_peak < 40 * MiB, f"write peak {write_peak / MiB:.1f} MiB"
    assert read_peak < 40 * MiB, f"read peak {read_peak / MiB:.1f} MiB"
    # a range deep inside the blob
    assert sum(len(c) for c in store.open_range(d, 50 * MiB, 50 * MiB + 12345)) == 12345


# -- backend specifics ------------------------------------------------------------


def test_fs_layout_permissions_and_local_path(tmp_path):
    store = open_store(f"file://{tmp_path}/blobs")
    assert isinstance(store, FsBlobStore)
    data = b"private build artifact"
    d = sha(data)
    store.put(d, data)
    path = tmp_path / "blobs" / "sha256" / d[:2] / d[2:4] / d
    assert store.local_path(d) == path
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (path.parent, path.parent.parent, store.blob_dir, store.tmp_dir):
        assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0, directory
    assert store.local_path(sha(b"absent")) is None
    # stray files in the tree are not reported as blobs
    (path.parent / "not-a-digest").write_bytes(b"")
    (path.parent / sha(b"wrong shard")).write_bytes(b"")
    assert list(store.iter_digests()) == [d]


def test_fs_sweep_tmp(tmp_path):
    store = FsBlobStore(tmp_path / "blobs")
    w = store.writer(sha(b"in progress"))
    w.write(b"in pro")
    stale = store.tmp_dir / "crashed.part"
    stale.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert store.sweep_tmp(3600) == 1
    assert not stale.exists()
    assert len(list(store.tmp_dir.iterdir())) == 1  # the live writer's file is kept
    w.write(b"gress")
    w.commit()
    assert store.exists(sha(b"in progress"))


def test_s3_sweep_tmp_aborts_abandoned_uploads(seaweed):
    store = open_store(f"s3://{BUCKET}/sweep-{uuid.uuid4().hex[:8]}", **seaweed.store_options())
    assert isinstance(store, S3BlobStore)
    data = os.urandom(9 * MiB)
    w = store.writer(sha(data))
    w.write(data)  # one part uploaded, then the "process dies"
    assert len(store.incomplete_uploads()) == 1
    assert store.sweep_tmp(3600) == 0
    assert store.sweep_tmp(0) == 1
    assert store.incomplete_uploads() == []
    assert not store.exists(sha(data))
    assert store.local_path(sha(data)) is None


def test_s3_key_layout(seaweed):
    store = open_store(f"s3://{BUCKET}/a/b/", **seaweed.store_options())
    d = sha(b"k")
    assert store.key_for(d) == f"a/b/sha256/{d}"
    store.put(d, b"k")
    assert store.client.get_object(Bucket=BUCKET, Key=f"a/b/sha256/{d}")["Body"].read() == b"k"
    store.delete(d)
    bare = S3BlobStore(BUCKET, client=store.client)
    assert bare.key_for(d) == f"sha256/{d}"


def test_open_store_urls(tmp_path):
    assert isinstance(open_store(str(tmp_path / "a")), FsBlobStore)
    assert open_store(f"file://{tmp_path}/b").root == tmp_path / "b"
    s3 = open_store("s3://bucket/some/prefix", endpoint_url="http://127.0.0.1:1", region="us-east-1",
                    access_key="k", secret_key="s")
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    for bad in ("http://example/x", "s3://", "file://otherhost/x", ""):
        with pytest.raises(ValueError):
            open_store(bad)


# -- packs (filesystem store): many small blobs in one file -----------------------------


def test_fs_pack_add_verify_commit_and_read(tmp_path):
    from tether.blobs import BlobTruncated

    st = FsBlobStore(tmp_path / "blobs")
    a, b, c = b"alpha" * 100, os.urandom(3 * MiB), b""
    with st.pack_writer() as pw:
        assert pw.add(sha(a), [a]) == (0, len(a))
        # a blob whose bytes don't match, one that is too big, one that is truncated:
        # each is refused and cut off again, the blobs before it stay
        with pytest.raises(DigestMismatch):
            pw.add(sha(b"x"), [b"y" * 2 * MiB])
        with pytest.raises(BlobTooLarge):
            pw.add(sha(b), [b[:MiB], b[MiB:]], max_size=2 * MiB)
        with pytest.raises(BlobTruncated):
            pw.add(sha(b"zz"), [b"zz"], declared=3)
        assert pw.size == len(a)
        assert pw.add(sha(b), [b[:MiB], b[MiB:]]) == (len(a), len(b))
        assert pw.add(sha(c), []) == (len(a) + len(b), 0)
        name = pw.commit()
    assert os.listdir(st.tmp_dir) == []
    assert st.pack_size(name) == len(a) + len(b)
    assert stat.S_IMODE(os.stat(st.pack_dir / name).st_mode) == 0o600
    assert b"".join(st.open_packed(sha(b), name, len(a), len(b))) == b
    assert b"".join(st.open_packed(sha(a), name, 0, len(a), 10, 20)) == a[10:20]
    assert b"".join(st.open_packed(sha(a), name, 0, len(a), 400)) == a[400:]  # never past the blob's end
    assert b"".join(st.open_packed(sha(c), name, len(a) + len(b), 0)) == b""
    assert [n for n, _ in st.iter_packs()] == [name]
    assert not st.exists(sha(a))  # a packed blob is not a file of its own
    assert st.delete_pack(name) and not st.delete_pack(name)
    with pytest.raises(BlobNotFound):
        st.open_packed(sha(a), name, 0, len(a))


def test_fs_pack_abort_and_empty_leave_nothing(tmp_path):
    st = FsBlobStore(tmp_path / "blobs")
    with st.pack_writer() as pw:
        pw.add(sha(b"kept?"), [b"kept?"])
    # leaving the block without commit discards the pack
    assert os.listdir(st.tmp_dir) == [] and list(st.iter_packs()) == []
    pw = st.pack_writer()
    pw.abort()
    pw.abort()
    with pytest.raises(BlobError):
        pw.add(sha(b"late"), [b"late"])
    assert os.listdir(st.tmp_dir) == []


@pytest.mark.parametrize("bad", ["../x", "A" * 32, "0" * 31, "", "0" * 32 + "/"], ids=repr)
def test_fs_pack_names_are_validated(tmp_path, bad):
    st = FsBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError):
        st.open_packed(sha(b""), bad, 0, 0)
    with pytest.raises(ValueError):
        st.delete_pack(bad)


def test_fs_adopt_with_the_callers_own_hash(tmp_path):
    st = FsBlobStore(tmp_path / "blobs")
    data = os.urandom(5000)
    f = tmp_path / "upload"
    f.write_bytes(data)
    with pytest.raises(DigestMismatch):
        st.adopt(sha(data), f, hashed=sha(b"something else"))
    assert not st.exists(sha(data))
    assert st.adopt(sha(data), f, hashed=sha(data)) == len(data)
    assert read_all(st, sha(data)) == data
