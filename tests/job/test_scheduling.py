"""Scheduling jobs: who may create a group, that a group and its node tokens are
made together or not at all, and that a stopping hub answers held waits at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.hubproc import unique
from tests.job.conftest import node_client


def test_a_whole_space_scoped_token_can_schedule_a_group_of_its_space(scheduler):
    hub = scheduler.hub
    with scheduler.client() as c:
        r = c.post("/api/v1/tokens", json={"scopes": [f"space:{scheduler.space}:admin"], "expires": "1h"})
        assert r.status_code == 201, r.text
        scoped = r.json()["token"]
        other = hub.make_space()
    with hub.client(scoped) as c:
        r = c.post("/api/v1/jobs", json={"name": unique("g"), "space": scheduler.space, "roles": {"r": 2}})
        assert r.status_code == 201, r.text
        g = r.json()
        # ...and not one of another space, even where its user is admin there too
        refused = c.post("/api/v1/jobs", json={"name": unique("g"), "space": other, "roles": {"r": 1}})
    assert refused.status_code == 403
    a, b = g["nodes"]
    with node_client(hub, a) as c:  # the node tokens are narrow as ever: their own node only
        assert c.post(f"/api/v1/jobs/{g['group']}/nodes/{a['node']}/send", json={"id": "m"}).status_code == 200
        assert c.post(f"/api/v1/jobs/{g['group']}/nodes/{b['node']}/send", json={"id": "m"}).status_code == 403


def test_a_space_read_token_cannot_mint_node_tokens(scheduler):
    with scheduler.client() as c:
        scoped = c.post("/api/v1/tokens", json={"scopes": [f"space:{scheduler.space}:read"]}).json()["token"]
    with scheduler.hub.client(scoped) as c:
        r = c.post("/api/v1/jobs", json={"name": unique("g"), "space": scheduler.space, "roles": {"r": 1}})
    assert r.status_code == 403


def _tokens_labelled(scheduler, group: str) -> list[dict]:
    with scheduler.client() as c:
        r = c.get("/api/v1/tokens")  # the user's own, revoked ones included
        r.raise_for_status()
    return [t for t in r.json()["tokens"] if (t.get("label") or "").startswith(f"job {group} ")]


def test_racing_creates_of_one_name_leave_only_the_winners_tokens(scheduler):
    """The group, its nodes and their tokens are one transaction: the creates that
    lose the race leave no token behind (none minted, then revoked)."""
    name = unique("g")
    body = {"name": name, "space": scheduler.space, "roles": {"r": 3}}

    def create(_):
        with scheduler.client() as c:
            return c.post("/api/v1/jobs", json=body)

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(create, range(6)))
    assert sorted(r.status_code for r in replies) == [201] + [409] * 5, [r.text for r in replies]
    won = next(r.json() for r in replies if r.status_code == 201)
    tokens = _tokens_labelled(scheduler, name)
    assert sorted(t["id"] for t in tokens) == sorted(n["token_id"] for n in won["nodes"])
    assert all(not t.get("revoked_at") for t in tokens)


def test_a_stopping_hub_answers_its_held_waits_at_once(start_hub):
    """SIGTERM: the held long-polls are answered "pending" (the node asks again, of
    this hub once it is back or of another replica) and the hub exits, instead of
    holding its shutdown for up to a long-poll's 25 s."""
    hub = start_hub()
    with hub.admin() as c:
        space = unique("s")
        c.post("/api/v1/spaces", json={"name": space}).raise_for_status()
        g = c.post("/api/v1/jobs", json={"name": unique("g"), "space": space, "roles": {"r": 2}}).json()
    a = g["nodes"][0]
    got: dict = {}

    def waiter():
        with node_client(hub, a, timeout=40) as c:
            r = c.post(f"/api/v1/jobs/{g['group']}/nodes/{a['node']}/wait",
                       json={"id": "never", "kind": "any", "timeout": 25})
            got["reply"], got["at"] = r.json(), time.monotonic()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(1.0)  # held by now
    stopping = time.monotonic()
    hub.proc.terminate()
    hub.proc.wait(20)
    exited = time.monotonic()
    t.join(20)
    assert got["reply"]["state"] == "pending", got
    assert got["at"] - stopping < 5 and exited - stopping < 8, (got["at"] - stopping, exited - stopping)
