"""Uploads whose bodies stall or trickle starve nothing, end with 408, and leave nothing behind;
one token or user can hold only so many uploads at once (429). A real hub, raw sockets."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx

IDLE = 2.5  # the test hub's body_idle_timeout: short, so the stalled ones end soon


def _head(method: str, path: str, token: str, length: int, host: str = "127.0.0.1") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


class _Conn(asyncio.Protocol):
    """A raw client connection that keeps whatever the hub sends, even when a reset follows
    (a trickled byte that meets the hub's close is answered with one; asyncio's streams
    would then drop the answer already received)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = asyncio.get_running_loop().create_future()
        self.more = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.more.set()

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.more.set()

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    async def answer(self, timeout: float) -> tuple[int, dict[str, str], bytes]:
        """The hub's answer, once all of it (Content-Length) is in."""
        async with asyncio.timeout(timeout):
            while True:
                head, sep, body = bytes(self.data).partition(b"\r\n\r\n")
                if sep:
                    lines = head.decode("latin-1").split("\r\n")
                    headers = {k.strip().lower(): v.strip()
                               for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                    if len(body) >= int(headers.get("content-length", "0")):
                        return int(lines[0].split()[1]), headers, body
                if self.closed.done():
                    raise ConnectionError(f"closed after {bytes(self.data)[:200]!r}")
                self.more.clear()
                await self.more.wait()


async def _open(hub, method: str, path: str, token: str, length: int = 1000, host: str = "127.0.0.1") -> _Conn:
    _, conn = await asyncio.get_running_loop().create_connection(_Conn, "127.0.0.1", hub.port)
    conn.write(_head(method, path, token, length, host))
    return conn


async def _trickle(conn: _Conn, seconds: int) -> None:
    """A byte a second, until the hub answers."""
    for _ in range(seconds):
        await asyncio.wait([conn.closed], timeout=1)
        if conn.closed.done() or conn.data:
            return
        conn.write(b"x")


async def _others_answer(c: httpx.AsyncClient, space: str) -> None:
    """/healthz, a download of ci/1/hello.txt and a one-file publish each answer within a second."""
    timings: dict[str, float | str] = {}
    for name, call in [
        ("healthz", lambda: c.get("/healthz")),
        ("download", lambda: c.get(f"/files/{space}/ci/1/hello.txt")),
        ("publish", lambda: c.put(f"/api/v1/publish/{space}/ci/3/small.txt", content=b"small\n")),
    ]:
        started = time.monotonic()
        try:
            r = await call()
        except httpx.TimeoutException:
            timings[name] = "timed out"
            continue
        timings[name] = time.monotonic() - started
        assert r.status_code in (200, 201), (name, r.text)
    assert all(isinstance(t, float) and t < 1 for t in timings.values()), timings


def _drop(tasks: list[asyncio.Future], conns: list[_Conn]) -> None:
    for t in tasks:
        t.cancel()
    for conn in conns:
        conn.transport.close()


def test_stalled_and_trickling_uploads_starve_nothing_and_end_with_408(start_hub):
    hub = start_hub(env={"TETHER_BODY_IDLE_TIMEOUT": str(IDLE), "TETHER_UPLOADS_PER_TOKEN": "1000",
                         "TETHER_UPLOADS_PER_USER": "1000"})
    space = hub.make_space()
    _, token = hub.make_user(grants={space: "write"})
    with hub.client(token) as c:
        assert c.put(f"/api/v1/publish/{space}/ci/1/hello.txt", content=b"hello\n").status_code == 201
    never = hashlib.sha256(b"y" * 1000).hexdigest()
    blob_path = f"/api/v1/blobs/sha256/{never}?space={space}&type=ci&build=2"

    async def scenario():
        conns = []
        answers = []
        trickles = []
        try:
            # 200 stalled and 200 trickling, half of each a blob PUT, half a one-file publish
            for i in range(400):
                path = blob_path if i % 2 else f"/api/v1/publish/{space}/ci/stalled/f{i}.bin"
                conn = await _open(hub, "PUT", path, token)
                conns.append(conn)
                answers.append(asyncio.ensure_future(conn.answer(3 * IDLE + 5)))
                if i >= 200:
                    trickles.append(asyncio.ensure_future(_trickle(conn, int(3 * IDLE))))
            async with httpx.AsyncClient(base_url=hub.url, timeout=5,
                                         headers={"Authorization": f"Bearer {token}"}) as c:
                # every one of them is in the hub, waiting for its body (taking 400 requests
                # in is work of its own, slow on a loaded machine: not what is measured here)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    try:
                        if "tether_uploads_in_progress 400.0" in (await c.get("/metrics", timeout=2)).text:
                            break
                    except httpx.TimeoutException:  # a hub whose threads are all taken
                        break
                    await asyncio.sleep(0.1)
                await _others_answer(c, space)
            # and no piece of a body has come: none of them holds a file yet
            assert list((hub.data_dir / "blobs" / "tmp").iterdir()) == []
            assert list((hub.data_dir / "uploads").iterdir()) == []
            return await asyncio.gather(*answers)
        finally:
            _drop(trickles + answers, conns)

    answers = asyncio.run(scenario())
    statuses = {status for status, _, _ in answers}
    assert statuses == {408}, statuses
    for _, headers, body in answers:
        assert headers["content-type"] == "application/problem+json" and b"body-timeout" in body
    # nothing half-written: no blob, no build, no spool or temporary file
    with hub.client(token) as c:
        r = c.post("/api/v1/blobs/missing", json={"space": space, "type": "ci", "build": "2", "digests": [never]})
        assert r.json()["missing"] == [never]
        assert c.get(f"/files/{space}/ci/stalled/f0.bin").status_code == 404
        assert c.get(f"/files/{space}/ci/3/small.txt").content == b"small\n"
    assert list((hub.data_dir / "blobs" / "tmp").iterdir()) == []
    assert [p.name for p in (hub.data_dir / "uploads").iterdir()] == []


def _two_tokens_of_one_user(hub) -> tuple[str, str, str]:
    """Two tokens of one user who may write to a new space, and a blob PUT's path there."""
    space = hub.make_space()
    user, first = hub.make_user(grants={space: "write"})
    with hub.admin() as c:
        second = c.post("/api/v1/tokens", json={"for_user": user}).json()["token"]
    digest = hashlib.sha256(b"z" * 1000).hexdigest()
    return first, second, f"/api/v1/blobs/sha256/{digest}?space={space}&type=ci&build=1"


def test_uploads_in_progress_are_capped_per_token_and_per_user(start_hub):
    hub = start_hub(env={"TETHER_BODY_IDLE_TIMEOUT": str(IDLE), "TETHER_UPLOADS_PER_TOKEN": "2",
                         "TETHER_UPLOADS_PER_USER": "3"})
    first, second, path = _two_tokens_of_one_user(hub)

    async def scenario():
        held = []
        try:
            for _ in range(2):
                held.append(await _open(hub, "PUT", path, first))
            await asyncio.sleep(0.5)
            status, headers, body = await (await _open(hub, "PUT", path, first)).answer(5)
            assert status == 429 and b"too-many-uploads" in body and b"uploads_per_token" in body, body
            assert headers["retry-after"] == "1"
            held.append(await _open(hub, "PUT", path, second))  # the user's third: allowed
            await asyncio.sleep(0.5)
            status, _, body = await (await _open(hub, "PUT", path, second)).answer(5)
            assert status == 429 and b"uploads_per_user" in body, body
            # the stalled ones end (408) and give their places back
            assert [(await conn.answer(3 * IDLE + 5))[0] for conn in held] == [408, 408, 408]
        finally:
            for conn in held:
                conn.transport.close()

    asyncio.run(scenario())
    with hub.client(first) as c:
        r = c.put(path, content=b"z" * 1000)
        assert r.status_code == 201, r.text


def test_a_stalled_json_body_ends_with_408_too(start_hub):
    hub = start_hub(env={"TETHER_BODY_IDLE_TIMEOUT": str(IDLE)})

    async def scenario():
        conn = await _open(hub, "POST", "/api/v1/tokens", hub.admin_token, length=100)
        conn.write(b'{"expires": ')
        started = time.monotonic()
        status, headers, body = await conn.answer(3 * IDLE + 5)
        return status, headers, body, time.monotonic() - started

    status, headers, body, took = asyncio.run(scenario())
    assert status == 408 and b"body-timeout" in body and headers["connection"] == "close", body
    assert IDLE - 0.5 < took < IDLE + 2
    with hub.admin() as c:  # nothing was minted: the bootstrap token is the only one
        assert len(c.get("/api/v1/tokens", params={"all": True}).json()["tokens"]) == 1


def test_resumable_chunks_that_trickle_after_starting_hold_no_thread(start_hub):
    """Chunks of resumable uploads that start (1.5 MiB at once), then send a byte a second:
    each piece goes to a thread only once it has arrived, so while three times as many of
    them trickle as the upload pool has threads, /healthz, a download and a small publish
    (which needs a thread of that pool) each answer within a second. What arrived is kept."""
    hub = start_hub(env={"TETHER_UPLOAD_THREADS": "4"})
    space = hub.make_space()
    _, token = hub.make_user(grants={space: "write"})
    size = 4 << 20
    with hub.client(token) as c:
        assert c.put(f"/api/v1/publish/{space}/ci/1/hello.txt", content=b"hello\n").status_code == 201
        ids = [c.post("/api/v1/uploads", json={"space": space, "type": "ci", "build": "2", "size": size,
                                               "digest": hashlib.sha256(str(i).encode()).hexdigest()}).json()["id"]
               for i in range(12)]

    async def scenario():
        conns, trickles = [], []
        try:
            for upload_id in ids:
                conn = await _open(hub, "PUT", f"/api/v1/uploads/{upload_id}?offset=0", token, size)
                conn.write(b"x" * (3 << 19))  # 1.5 MiB: a whole piece and more, in hand at once
                conns.append(conn)
                trickles.append(asyncio.ensure_future(_trickle(conn, 60)))
            await asyncio.sleep(2)  # every first piece stored; the chunks now trickle
            async with httpx.AsyncClient(base_url=hub.url, timeout=10,
                                         headers={"Authorization": f"Bearer {token}"}) as c:
                await _others_answer(c, space)
            assert not any(conn.data for conn in conns)  # all still trickling
        finally:
            _drop(trickles, conns)

    asyncio.run(scenario())
    with hub.client(token) as c:  # each cut chunk kept what the hub had read of it
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            offsets = [c.get(f"/api/v1/uploads/{i}").json()["offset"] for i in ids]
            if all(o > 1 << 20 for o in offsets):
                break
            time.sleep(0.2)
        assert all(1 << 20 < o < size for o in offsets), offsets


def test_uploads_of_every_kind_that_stall_half_way_hold_no_thread(start_hub):
    """A blob PUT, a batch and a one-file publish of each kind send half of their body (more
    than a piece: it is in hand and stored) and then stall, or trickle a byte a second:
    three times as many of each as the upload pool has threads. Each piece takes a thread
    only while it is stored, so /healthz, a download and a small publish (which needs a
    thread of that pool) each answer within a second. The stalled ones end 408 and leave
    nothing: no blob, no build, no pack, spool or temporary file."""
    idle = 4.0
    hub = start_hub(env={"TETHER_UPLOAD_THREADS": "2", "TETHER_BODY_IDLE_TIMEOUT": str(idle),
                         "TETHER_BODY_MIN_RATE": str(1 << 20),  # 4 MiB per window: the 2 MiB sent is not enough
                         "TETHER_UPLOADS_PER_TOKEN": "1000", "TETHER_UPLOADS_PER_USER": "1000"})
    space = hub.make_space()
    _, token = hub.make_user(grants={space: "write"})
    with hub.client(token) as c:
        assert c.put(f"/api/v1/publish/{space}/ci/1/hello.txt", content=b"hello\n").status_code == 201
    size, half = 4 << 20, 2 << 20
    blob = b"b" * size
    digest = hashlib.sha256(blob).hexdigest()
    batch_head = f"{digest} {size}\n".encode()
    kinds = {
        "blob": ("PUT", f"/api/v1/blobs/sha256/{digest}?space={space}&type=ci&build=2", size, b""),
        "batch": ("POST", f"/api/v1/blobs/batch?space={space}&type=ci&build=2", len(batch_head) + size, batch_head),
        "file": ("PUT", f"/api/v1/publish/{space}/ci/stalled/{{i}}.bin", size, b""),
    }

    async def scenario():
        conns, answers, trickles = [], [], []
        try:
            for kind, (method, path, length, head) in kinds.items():
                for i in range(12):  # 6 stall, 6 trickle
                    conn = await _open(hub, method, path.format(i=f"{kind}{i}"), token, length)
                    conn.write(head + blob[:half])
                    conns.append(conn)
                    answers.append(asyncio.ensure_future(conn.answer(4 * idle + 10)))
                    if i % 2:
                        trickles.append(asyncio.ensure_future(_trickle(conn, int(4 * idle))))
            await asyncio.sleep(1.5)  # the halves in hand and stored; now they wait for the rest
            async with httpx.AsyncClient(base_url=hub.url, timeout=5,
                                         headers={"Authorization": f"Bearer {token}"}) as c:
                await _others_answer(c, space)
            assert not any(conn.data for conn in conns)  # all still waiting for their bodies
            return await asyncio.gather(*answers)
        finally:
            _drop(trickles + answers, conns)

    answers = asyncio.run(scenario())
    assert [status for status, _, _ in answers] == [408] * len(answers)
    assert all(b"body-timeout" in body for _, _, body in answers)
    with hub.client(token) as c:
        r = c.post("/api/v1/blobs/missing", json={"space": space, "type": "ci", "build": "2", "digests": [digest]})
        assert r.json()["missing"] == [digest]
        assert c.get(f"/files/{space}/ci/stalled/file0.bin").status_code == 404
        assert c.get(f"/files/{space}/ci/stalled/").status_code == 404
        assert c.get(f"/files/{space}/ci/3/small.txt").content == b"small\n"
    store = hub.data_dir / "blobs"
    assert list((store / "tmp").iterdir()) == []
    assert not (store / "packs").is_dir() or list((store / "packs").iterdir()) == []
    assert [p.name for p in (hub.data_dir / "uploads").iterdir()] == []


def test_upload_caps_hold_across_replicas_and_a_dead_replicas_leases_lapse(replica_set):
    """Two replicas on one PostgreSQL: uploads in progress are leases in the database, so
    a token's and a user's caps count the uploads held on every replica (sent to each in
    turn, as a round-robin balancer would). A replica killed with its uploads in progress
    gives nothing back; its leases lapse after upload_lease_seconds and the token may
    upload again on the other replica."""
    ttl = 6
    rs = replica_set(shared_ok=False, env={"TETHER_UPLOADS_PER_TOKEN": "2", "TETHER_UPLOADS_PER_USER": "3",
                                           "TETHER_UPLOAD_LEASE_SECONDS": str(ttl), "TETHER_BODY_IDLE_TIMEOUT": "120"})
    a, b = rs.replicas
    host = f"127.0.0.1:{rs.port}"  # the public name, as the balancer hands it to them
    first, second, path = _two_tokens_of_one_user(rs)

    async def refused(replica, token: str) -> bytes | None:
        """The body of a 429 if ``replica`` refuses an upload now, else None (the upload is held)."""
        conn = await _open(replica, "PUT", path, token, host=host)
        await asyncio.sleep(0.5)
        if not conn.data:
            held.append(conn)
            return None
        status, _, body = await conn.answer(5)
        conn.transport.close()
        assert status == 429, body
        return body

    held: list[_Conn] = []

    async def scenario():
        try:
            assert await refused(a, first) is None
            assert await refused(b, first) is None  # the token's second, on the other replica
            assert b"uploads_per_token" in await refused(a, first)
            assert b"uploads_per_token" in await refused(b, first)
            assert await refused(a, second) is None  # the user's third
            assert b"uploads_per_user" in await refused(b, second)
            on_b = held[1:2]  # the one upload b holds
            b.proc.kill()  # kill -9: b gives back nothing
            b.proc.wait()
            _drop([], on_b)
            assert b"uploads_per_token" in await refused(a, first)  # b's lease still stands
            deadline = time.monotonic() + 3 * ttl
            while (body := await refused(a, first)) is not None:
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.5)
        finally:
            _drop([], held)

    try:
        asyncio.run(scenario())
    finally:
        rs.stop()
