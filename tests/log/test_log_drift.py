"""Logs that have drifted apart, synced against real hubs over HTTP and over SSH with
protocol 3 (estimate, then an IBLT or the hub's list), conflicts found during the
reconciliation, and the fall-back to protocol 2 for a hub that does not speak 3."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

import pytest

from tether.hubclient.errors import HubError
from tether.log.client import HttpRemote, SshRemote, parse_remote_url, sync
from tether.log.store import LogStore, Record, make_record
from tests.log.test_log_ssh import _ssh_prefix, remote_url, world  # noqa: F401  (the SSH world fixture)

COMMON, EACH_SIDE, CLASHES = 3000, 600, 5


def records(author: str, n: int, rng: random.Random) -> list[Record]:
    return [make_record(f"drift {rng.getrandbits(64):x}", author) for _ in range(n)]


def drifted(tmp_path, author: str, remote_factory, seed: int):
    """Fill the hub (through a first sync from a seed log) with COMMON + EACH_SIDE
    records, and a client log with the COMMON ones, EACH_SIDE of its own and CLASHES
    of the common ids with other bodies; returns (client store, its own, the hub's own,
    the clashing ids)."""
    rng = random.Random(seed)
    common = records(author, COMMON, rng)
    hub_only = records(author, EACH_SIDE, rng)
    mine = records(author, EACH_SIDE, rng)
    with LogStore(tmp_path / "seed.db") as seed_store:
        seed_store.insert_many(common + hub_only)
        with remote_factory() as rem:
            res = sync(seed_store, rem)
        assert res.pushed == COMMON + EACH_SIDE and res.method in ("list", "equal")
    clashing = common[:CLASHES]
    store = LogStore(tmp_path / "client.db")
    store.insert_many([replace(r, body=r.body + " (the client's copy)") for r in clashing]
                      + common[CLASHES:] + mine)
    return store, mine, hub_only, {r.id for r in clashing}


def check_sync(store: LogStore, remote_factory, mine, hub_only, clashing):
    with remote_factory() as rem:
        res = sync(store, rem)
    # 1,210 differences in 3,605 records: an IBLT (~56 KiB) beats the hub's list (~86 KiB)
    assert res.method == "iblt" and res.rounds <= 2
    assert (res.pushed, res.pulled) == (EACH_SIDE, EACH_SIDE)
    assert set(res.conflicts) == clashing  # found by the reconciliation: neither copy moved
    held = {r.id: r for r in store.list()}
    assert {r.id for r in hub_only} <= held.keys() and len(held) == COMMON + 2 * EACH_SIDE
    assert all(held[i].body.endswith("(the client's copy)") for i in clashing)
    with remote_factory() as rem:  # again: only the conflicts differ, nothing moves
        again = sync(store, rem)
    assert (again.pushed, again.pulled, set(again.conflicts)) == (0, 0, clashing) and again.method == "iblt"
    assert again.bytes < 10_000


def test_drifted_logs_sync_over_http(hub, tmp_path):
    space = hub.make_space()
    u, t = hub.make_user(grants={space: "write"})
    url = parse_remote_url(f"{hub.url}/{space}")
    store, mine, hub_only, clashing = drifted(tmp_path, u, lambda: HttpRemote(url, t), seed=1)
    with store:
        check_sync(store, lambda: HttpRemote(url, t), mine, hub_only, clashing)
    with hub.admin() as c:
        assert c.get(f"/api/v1/log/{space}").json()["records"] == COMMON + 2 * EACH_SIDE
        got = c.post(f"/api/v1/log/{space}/records/get", json={"ids": sorted(clashing)}).json()["records"]
    assert not any(r["body"].endswith("(the client's copy)") for r in got)


def test_drifted_logs_sync_over_ssh(world, tmp_path):  # noqa: F811
    url = parse_remote_url(remote_url(world))
    prefix = _ssh_prefix(world, "user1")
    store, mine, hub_only, clashing = drifted(tmp_path, "user1", lambda: SshRemote(url, "sync", prefix=prefix), 2)
    with store:
        check_sync(store, lambda: SshRemote(url, "sync", prefix=prefix), mine, hub_only, clashing)


def test_a_hub_without_protocol_3_gets_protocol_2(start_hub, tmp_path):
    """A hub that answers only protocol 2 (as every hub before protocol 3, here one
    with ``log_sync_v3 = false``) refuses the first message as an unknown version;
    the client syncs with ranges instead, and gets the same result."""
    hub = start_hub(env={"TETHER_LOG_SYNC_V3": "false"})
    space = hub.make_space()
    u, t = hub.make_user(grants={space: "write"})
    url = parse_remote_url(f"{hub.url}/{space}")
    rng = random.Random(3)
    with LogStore(tmp_path / "a.db") as a, LogStore(tmp_path / "b.db") as b:
        a.insert_many(records(u, 300, rng))
        b.insert_many(records(u, 200, rng))
        with HttpRemote(url, t) as rem:
            assert sync(a, rem).method == "ranges"
        with HttpRemote(url, t) as rem:
            res = sync(b, rem)
        assert res.method == "ranges" and (res.pushed, res.pulled) == (200, 300)
        with HttpRemote(url, t) as rem, pytest.raises(HubError, match="unsupported protocol version 3"):
            sync(b, rem, protocol="drift")  # protocol 3 only: the refusal shows
        with HttpRemote(url, t) as rem:
            assert sync(a, rem).pulled == 200
        assert {uuid.UUID(r.id) for r in a.list()} == {uuid.UUID(r.id) for r in b.list()}
