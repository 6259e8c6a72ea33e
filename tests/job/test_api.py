"""The job API on a real hub (SQLite and PostgreSQL): push wake-ups, barriers,
liveness, and every bad input refused with a clear error and nothing changed."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.job.conftest import Scheduler, node_client, open_files, rss_mib, wait_quiet


def path(g: dict, node: dict, what: str) -> str:
    return f"/api/v1/jobs/{g['group']}/nodes/{node['node']}/{what}"


def wait(hub, g, node, msg_id, kind="any", timeout=10, **kw):
    with node_client(hub, node) as c:
        return c.post(path(g, node, "wait"), json={"id": msg_id, "kind": kind, "timeout": timeout, **kw})


def status(scheduler, g) -> dict:
    with scheduler.client() as c:
        return c.get(f"/api/v1/jobs/{g['group']}").json()


def test_a_wait_returns_within_milliseconds_of_the_send(scheduler):
    hub = scheduler.hub
    g = scheduler.create(roles={"server": 1, "client": 1})
    server, client = g["nodes"]
    got = {}

    def waiter():
        r = wait(hub, g, client, "ready")
        got["at"], got["reply"] = time.perf_counter(), r.json()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)  # the wait is held by the hub
    with node_client(hub, server) as c:
        c.post(path(g, server, "send"), json={"id": "warmup", "data": {}})
        sent = time.perf_counter()
        r = c.post(path(g, server, "send"), json={"id": "ready", "data": {"ip": "10.0.0.5"}})
        done = time.perf_counter()
    t.join(15)
    assert r.status_code == 200 and r.json()["stored"] is True
    assert got["reply"]["state"] == "done" and got["reply"]["data"] == {server["node"]: {"ip": "10.0.0.5"}}
    # the wait returned no later than a short moment after the send's own answer
    assert got["at"] - done < 0.25, (got["at"] - sent, done - sent)


def test_the_same_send_is_idempotent_and_other_data_is_409_naming_it(scheduler):
    g = scheduler.create(roles={"r": 2})
    a = g["nodes"][0]
    with node_client(scheduler.hub, a) as c:
        assert c.post(path(g, a, "send"), json={"id": "m", "data": {"k": "1"}}).json()["stored"] is True
        assert c.post(path(g, a, "send"), json={"id": "m", "data": {"k": "1"}}).json()["stored"] is False
        r = c.post(path(g, a, "send"), json={"id": "m", "data": {"k": "2"}})
    assert r.status_code == 409 and r.json()["nodes"] == [a["node"]] and "'m'" in r.json()["detail"]
    assert status(scheduler, g)["messages"][0]["sent"] == {a["node"]: {"k": "1"}}


def test_a_node_token_acts_only_as_its_node_and_group(scheduler):
    g = scheduler.create(roles={"r": 2})
    other = scheduler.create(roles={"r": 1})
    a, b = g["nodes"]
    with node_client(scheduler.hub, a) as c:
        assert c.post(path(g, b, "send"), json={"id": "m"}).status_code == 403  # another node
        assert c.post(path(other, other["nodes"][0], "send"), json={"id": "m"}).status_code == 403  # another group
        assert c.post(path(g, b, "wait"), json={"id": "m", "kind": "any", "timeout": 0}).status_code == 403
        assert c.get(f"/api/v1/jobs/{g['group']}").status_code == 403  # status is the scheduler's
        assert c.post(f"/api/v1/jobs/{g['group']}/cancel", json={}).status_code == 403
        assert c.post("/api/v1/jobs", json={"name": "x1", "space": scheduler.space, "roles": {"r": 1}}).status_code == 403
        me = c.get("/api/v1/jobs/me").json()
    assert (me["group"], me["node"], me["role"]) == (g["group"], a["node"], "r")
    s = status(scheduler, g)
    assert s["messages"] == [] and all(n["state"] == "pending" for n in s["nodes"] if n["node"] == b["node"])


BAD_IDS = ["has space", "a=b", "a:b", "new\nline", "tab\there", "nul\x00", "bell\x07", "", "x" * 129]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_refused_and_nothing_changes(scheduler, bad):
    g = scheduler.create(roles={"r": 1})
    a = g["nodes"][0]
    with node_client(scheduler.hub, a) as c:
        r1 = c.post(path(g, a, "send"), json={"id": bad, "data": {}})
        r2 = c.post(path(g, a, "send"), json={"id": "ok", "data": {bad: "v"}})
        r3 = c.post(path(g, a, "wait"), json={"id": bad, "kind": "sync", "timeout": 0})
    for r in (r1, r2, r3):
        assert r.status_code in (400, 422), r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    s = status(scheduler, g)
    assert s["messages"] == [] and s["barriers"] == []


@pytest.mark.parametrize("data,why", [
    ({"k": "x" * 4097}, "longer than 4096 bytes"),
    ({"k": "two\nlines"}, "control character"),
    ({f"k{i}": "v" for i in range(65)}, "at most 64 keys"),
    ({"k": 5}, "must be a string"),
])
def test_bad_values_are_refused(scheduler, data, why):
    g = scheduler.create(roles={"r": 1})
    a = g["nodes"][0]
    with node_client(scheduler.hub, a) as c:
        r = c.post(path(g, a, "send"), json={"id": "m", "data": data})
    assert r.status_code == 400 and why in r.json()["detail"]
    assert status(scheduler, g)["messages"] == []


def test_bad_groups_are_refused(scheduler):
    with scheduler.client() as c:
        for body, code, why in [
            ({"name": "Bad Name", "roles": {"r": 1}}, 400, "group name"),
            ({"name": "me", "roles": {"r": 1}}, 400, "group name"),
            ({"name": "g-ok1", "roles": {}}, 400, "at least one node"),
            ({"name": "g-ok2", "roles": {"a b": 1}}, 400, "role"),
            ({"name": "g-ok3", "roles": {"r": 1}, "essential": ["db"]}, 400, "essential"),
            ({"name": "g-ok4", "roles": {"r": 1}, "timeout": "soon"}, 400, "timeout"),
        ]:
            r = c.post("/api/v1/jobs", json={"space": scheduler.space, **body})
            assert r.status_code == code and why in r.json()["detail"], r.text
        assert c.get("/api/v1/jobs", params={"space": scheduler.space}).json() == []
    g = scheduler.create(roles={"r": 1})
    with scheduler.client() as c:
        r = c.post("/api/v1/jobs", json={"name": g["group"], "space": scheduler.space, "roles": {"x": 2}})
    assert r.status_code == 409
    assert [n["role"] for n in status(scheduler, g)["nodes"]] == ["r"]


def test_wait_all_for_a_role_the_group_lacks_is_400(scheduler):
    g = scheduler.create(roles={"server": 1, "client": 1})
    r = wait(scheduler.hub, g, g["nodes"][0], "m", kind="all", role="database", timeout=0)
    assert r.status_code == 400 and "no role 'database'" in r.json()["detail"]


def test_wait_all_with_a_role_waits_for_every_node_of_it(scheduler):
    """LAVA released a role's wait-all after the first of its nodes had sent."""
    g = scheduler.create(roles={"server": 1, "client": 2})
    server, c1, c2 = g["nodes"]
    with node_client(scheduler.hub, c1) as c:
        c.post(path(g, c1, "send"), json={"id": "up", "data": {"n": "1"}})
    r = wait(scheduler.hub, g, server, "up", kind="all", role="client", timeout=0.5).json()
    assert r["state"] == "pending" and r["awaited"] == [c2["node"]]
    with node_client(scheduler.hub, c2) as c:
        c.post(path(g, c2, "send"), json={"id": "up", "data": {"n": "2"}})
    r = wait(scheduler.hub, g, server, "up", kind="all", role="client").json()
    assert r["state"] == "done" and r["data"] == {c1["node"]: {"n": "1"}, c2["node"]: {"n": "2"}}


def test_a_sync_barrier_releases_everyone_and_is_reusable(scheduler):
    g = scheduler.create(roles={"r": 4})
    for round_ in (1, 2):
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda n: wait(scheduler.hub, g, n, "step", kind="sync").json(), g["nodes"]))
        assert [r["state"] for r in replies] == ["done"] * 4
        assert {r["generation"] for r in replies} == {round_}
    assert status(scheduler, g)["barriers"] == [
        {"id": "step", "generation": 2, "arrived": sorted(n["node"] for n in g["nodes"]), "awaited": []}]


def test_bare_syncs_asked_back_to_back_each_reach_the_next_generation(scheduler):
    """A sync without a generation or call token (curl, a script) is told from a repeat of
    the last one by what the hub recorded that the node was told: that must be written
    before the answer leaves, or a node asking at once is taken for its last call, answered
    'done' for the old generation, and the others wait for it at the new one."""
    g = scheduler.create(roles={"r": 2})

    def node(n) -> list:
        with node_client(scheduler.hub, n) as c:  # one kept connection: the next call comes at once
            return [c.post(path(g, n, "wait"), json={"id": "tick", "kind": "sync", "timeout": 10}).json()
                    for _ in range(30)]

    with ThreadPoolExecutor(2) as pool:
        rounds = list(zip(*pool.map(node, g["nodes"])))
    for round_, replies in enumerate(rounds, 1):
        assert [(r["state"], r["generation"]) for r in replies] == [("done", round_)] * 2, (round_, replies)


def test_a_failed_node_fails_the_waits_that_need_it_at_once_naming_it(scheduler):
    g = scheduler.create(roles={"server": 1, "client": 2})
    server, c1, c2 = g["nodes"]
    out = {}

    def waiter():
        t = time.perf_counter()
        out["r"] = wait(scheduler.hub, g, server, "all-up", kind="sync", timeout=20).json()
        out["took"] = time.perf_counter() - t

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.5)
    with scheduler.client() as c:
        r = c.post(path(g, c2, "state"), json={"state": "failed", "reason": "board died"})
    assert r.status_code == 200
    th.join(20)
    assert out["r"]["state"] == "failed" and out["r"]["nodes"] == [c2["node"]]
    assert "board died" in out["r"]["reason"] and out["took"] < 5
    # a node that finished cannot be revived by a stray report
    with node_client(scheduler.hub, c2) as c:
        assert c.post(path(g, c2, "state"), json={"state": "joined"}).status_code == 409


def test_an_essential_role_failing_ends_the_group(scheduler):
    g = scheduler.create(roles={"server": 1, "client": 1}, essential=["server"])
    server, client = g["nodes"]
    with node_client(scheduler.hub, server) as c:
        c.post(path(g, server, "state"), json={"state": "failed", "reason": "crashed"})
    r = wait(scheduler.hub, g, client, "anything").json()
    assert r["state"] == "failed" and "essential role 'server'" in r["reason"]
    with node_client(scheduler.hub, client) as c:
        r = c.post(path(g, client, "send"), json={"id": "late", "data": {}})
    assert r.status_code == 409 and r.json()["type"].endswith("job-ended")
    s = status(scheduler, g)
    assert s["state"] == "ended" and s["messages"] == []


def test_a_send_after_cancel_is_refused_and_waits_end(scheduler):
    g = scheduler.create(roles={"r": 2})
    a = g["nodes"][0]
    with scheduler.client() as c:
        assert c.post(f"/api/v1/jobs/{g['group']}/cancel", json={"reason": "operator"}).json()["state"] == "cancelled"
    with node_client(scheduler.hub, a) as c:
        r = c.post(path(g, a, "send"), json={"id": "m", "data": {}})
    assert r.status_code == 409 and "cancelled: operator" in r.json()["detail"]
    assert wait(scheduler.hub, g, a, "m").json()["state"] == "failed"
    assert status(scheduler, g)["messages"] == []


def test_a_node_not_seen_for_lost_after_fails_the_waits_that_need_it(scheduler):
    g = scheduler.create(roles={"r": 2}, lost_after="1s")
    a, b = g["nodes"]
    with node_client(scheduler.hub, b) as c:
        c.post(path(g, b, "state"), json={"state": "joined"})  # seen once, then silent
    t = time.perf_counter()
    r = wait(scheduler.hub, g, a, "s", kind="sync", timeout=20).json()
    while r["state"] == "pending":  # a's hold is a third of lost_after: it asks again, as the client does
        r = wait(scheduler.hub, g, a, "s", kind="sync", timeout=20, generation=r["generation"]).json()
    assert r["state"] == "failed" and r["nodes"] == [b["node"]] and "not seen" in r["reason"]
    assert time.perf_counter() - t < 5
    # a, asking again all along, was never counted lost itself
    assert next(n for n in status(scheduler, g)["nodes"] if n["node"] == a["node"])["gone"] is None
    # b, back after the others gave up on it, can no longer send: refused, nothing stored
    with node_client(scheduler.hub, b) as c:
        r = c.post(path(g, b, "send"), json={"id": "late", "data": {"k": "v"}})
    assert r.status_code == 409 and "not seen for" in r.json()["detail"] and "nothing was stored" in r.json()["detail"]
    assert status(scheduler, g)["messages"] == []


def test_the_group_timeout_ends_waits(scheduler):
    g = scheduler.create(roles={"r": 2}, timeout="2s")
    r = wait(scheduler.hub, g, g["nodes"][0], "never", timeout=20).json()
    assert r["state"] == "failed" and "timeout" in r["reason"]


def test_a_wait_is_audited_when_it_arrives_not_each_time_it_asks_again(scheduler):
    """The audit record of a wait is of its change (an arrival at a barrier), committed
    when the change is made, while the wait is still held; asking again is no change.
    (The answers a barrier releases together do not each wait for an audit commit.)"""
    hub = scheduler.hub
    g = scheduler.create(roles={"r": 2})
    a, b = g["nodes"]

    def of(node):
        with hub.admin() as c:
            return c.get("/api/v1/audit", params={"token": node["token_id"]}).json()["records"]

    got = {}
    t = threading.Thread(target=lambda: got.update(r=wait(hub, g, a, "b", kind="sync", timeout=20)))
    t.start()
    for _ in range(200):  # a's arrival is recorded while its wait is held (b has not come)
        if of(a):
            break
        time.sleep(0.05)
    assert t.is_alive() and "r" not in got
    [arrival] = of(a)
    assert arrival["outcome"] == "allowed" and arrival["action"] == "job.write" and arrival["status"] == 200
    assert f"/{a['node']} " in arrival["resource"]
    # asked again (the same barrier, the generation it was given): no change, no record
    r = wait(hub, g, b, "other", timeout=0.1)
    assert r.json()["state"] == "pending"
    again = wait(hub, g, b, "other", timeout=0.1)
    assert again.json()["state"] == "pending"
    assert len(of(b)) == 1  # b's first wait on "other" is recorded, not the second
    assert wait(hub, g, b, "b", kind="sync").json()["state"] == "done"
    t.join(15)
    assert got["r"].json()["state"] == "done"
    assert len(of(a)) == 1 and len(of(b)) == 2  # the release added no record


def test_a_revoked_node_token_is_refused_at_once_though_its_check_was_reused(scheduler):
    """A node's token check is reused for a second (NodeCalls); revoking the token through
    the hub empties that at once, and a token is reused only for its own node."""
    hub = scheduler.hub
    g = scheduler.create(roles={"r": 2})
    a, b = g["nodes"]
    with node_client(hub, a) as c:
        assert c.post(path(g, a, "send"), json={"id": "one", "data": {}}).status_code == 200  # checked, kept
        assert c.post(path(g, b, "send"), json={"id": "one", "data": {}}).status_code == 403  # not as b
        with scheduler.client() as s:
            assert s.delete(f"/api/v1/tokens/{a['token_id']}").status_code in (200, 204)
        r = c.post(path(g, a, "send"), json={"id": "two", "data": {}})
        assert r.status_code == 401 and r.json()["type"] == "urn:tether:problem:token-revoked", r.text
        r = c.post(path(g, a, "wait"), json={"id": "one", "kind": "any", "timeout": 1})
        assert r.status_code == 401
    assert [m["id"] for m in status(scheduler, g)["messages"]] == ["one"]  # "two" was not stored


HELD = 2_000


def test_many_held_waits_cost_bounded_memory_and_slow_nobody(start_hub):
    """2,000 long-poll waits held at once (raw connections, as many machines would hold
    them): the hub's memory grows by a bounded amount per held wait, another node's
    send still wakes its waiter at once, and every held wait answers when the group ends."""
    hub = start_hub()
    scheduler = Scheduler(hub)
    g = scheduler.create(roles={"r": 3})
    idle, sender, waiter = g["nodes"]
    body = json.dumps({"id": "never", "kind": "all", "timeout": 25}).encode()
    request = (f"POST {path(g, idle, 'wait')} HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {idle['token']}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    with node_client(hub, idle) as c:  # its first wait writes what it waits on; the same wait again writes nothing
        assert c.post(path(g, idle, "wait"), json={"id": "never", "kind": "all", "timeout": 0}).json()["state"] \
            == "pending"
    before = rss_mib(hub.proc.pid)
    held: list[socket.socket] = []
    with open_files(HELD):
        try:
            for _ in range(HELD):
                s = socket.create_connection(("127.0.0.1", hub.port), 10)
                s.sendall(request)
                held.append(s)
            wait_quiet(hub.proc.pid)  # all of them reached the hub and are held
            got = {}
            t = threading.Thread(target=lambda: got.update(r=wait(hub, g, waiter, "go", timeout=10)))
            t.start()
            time.sleep(0.3)
            sent = time.monotonic()
            with node_client(hub, sender) as c:
                assert c.post(path(g, sender, "send"), json={"id": "go", "data": {}}).status_code == 200
            t.join(10)
            woke = time.monotonic() - sent
            grown = rss_mib(hub.proc.pid) - before
            with scheduler.client() as c:
                assert c.post(f"/api/v1/jobs/{g['group']}/cancel", json={}).status_code == 200
            answered = 0
            deadline = time.monotonic() + 10
            for s in held:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    answered += s.recv(64).startswith(b"HTTP/1.1 200")
                except OSError:
                    pass
        finally:
            for s in held:
                s.close()
    assert got["r"].json()["state"] == "done" and woke < 1, woke
    assert grown < HELD * 64 / 1024, f"{grown:.0f} MiB for {HELD} held waits"  # under 64 KiB each (measured: 36)
    assert answered == HELD  # every one was held, and answered when the group ended
