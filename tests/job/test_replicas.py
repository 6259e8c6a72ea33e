"""Push wake-ups across replicas (PostgreSQL NOTIFY) and state that survives a restart."""

from __future__ import annotations

import threading
import time

from tests.job.conftest import Scheduler, node_client


def test_a_send_on_one_replica_wakes_a_waiter_on_the_other_at_once(replica_set):
    a, b = replica_set().replicas  # the session's two replicas (tests/replicas.py)
    s = Scheduler(a)
    g = s.create(roles={"server": 1, "client": 1})
    server, client = g["nodes"]
    latencies = []
    for i in range(5):
        got = {}

        def waiter():
            with node_client(b, client) as c:  # the waiter is held by replica b
                r = c.post(f"/api/v1/jobs/{g['group']}/nodes/{client['node']}/wait",
                           json={"id": f"m{i}", "kind": "any", "timeout": 20})
            got["at"], got["r"] = time.perf_counter(), r.json()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.4)
        with node_client(a, server) as c:  # the send goes to replica a
            c.post(f"/api/v1/jobs/{g['group']}/nodes/{server['node']}/send",
                   json={"id": f"m{i}", "data": {"i": str(i)}}).raise_for_status()
            answered = time.perf_counter()
        t.join(25)
        assert got["r"]["state"] == "done" and got["r"]["data"] == {server["node"]: {"i": str(i)}}
        latencies.append(got["at"] - answered)
    # without NOTIFY the waiter would sit out its 20 s hold
    assert sorted(latencies)[2] < 0.1 and max(latencies) < 1, latencies


def test_a_restart_loses_nothing_and_a_waiting_node_carries_on(start_hub):
    from tether.hubclient.hub import Hub as HubClient
    from tether.job.client import JobClient

    hub = start_hub()
    s = Scheduler(hub)
    g = s.create(roles={"r": 2})
    a, b = g["nodes"]
    with HubClient(hub.url, token=a["token"]) as ha:
        JobClient(ha).send("before", {"k": "v"})
    result = {}

    def waiter():  # b waits through the restart, with the client library's retries
        with HubClient(hub.url, token=b["token"]) as hb:
            result["r"] = JobClient(hb).wait("sync", "after-restart", timeout=60)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(1)
    hub.stop()
    time.sleep(0.5)
    hub.start()
    with HubClient(hub.url, token=a["token"]) as ha:
        j = JobClient(ha)
        assert j.wait("any", "before", timeout=10)["data"] == {a["node"]: {"k": "v"}}
        assert j.wait("sync", "after-restart", timeout=30)["state"] == "done"
    t.join(30)
    assert result["r"]["state"] == "done" and result["r"]["generation"] == 1
