"""Grants are rows: one that expires closes by itself, and after a hub restart the
adopted instance still reaches what it was granted (and nothing else). An IPv6 destination
is granted and revoked like an IPv4 one."""

from __future__ import annotations

import json

import pytest

from tests.apps.hubs import demo_for_alice, gateway_get, outside, wait_for  # noqa: F401 - outside is a fixture


@pytest.fixture
def w(tmp_path):
    yield from demo_for_alice(tmp_path, {"alice": "write", "olga": "admin"})


def reaches(w, dest) -> bool:
    code, _, body = gateway_get(w.gw_port, f"demo--alice.localhost:{w.gw_port}",
                                f"/api/connect?host={dest['ip']}&port={dest['port']}",
                                {"Authorization": f"Bearer {w.tokens['alice']}"})
    assert code == 200, body
    return json.loads(body)["ok"]


def test_an_expiring_grant_closes_by_itself(w, outside):
    assert not reaches(w, outside)
    r = w.cli("alice", "grant", "demo", "tcp", f"{outside['ip']}:{outside['port']}", "--expires", "3s")
    assert r.returncode == 0, r.stderr
    assert reaches(w, outside)
    wait_for(lambda: not reaches(w, outside), timeout=20, what="the grant to expire")
    assert json.loads(w.cli("alice", "grants", "demo", "--json").stdout) == []


def test_grants_hold_across_a_hub_restart(w, outside):
    r = w.cli("alice", "grant", "demo", "tcp", f"{outside['ip']}:{outside['port']}", "--reason", "kept")
    assert r.returncode == 0, r.stderr
    assert reaches(w, outside)
    w.hub.stop()
    w.hub.start()
    assert reaches(w, outside)
    assert w.cli("alice", "revoke", "demo", "--all").returncode == 0
    assert not reaches(w, outside)


def test_an_ipv6_grant_works_and_its_revoke_stops_it(w, outside_server6):
    addr, port = outside_server6
    dest = {"ip": addr, "port": port}
    assert not reaches(w, dest)  # IPv6 is denied like the rest
    r = w.cli("alice", "grant", "demo", "tcp", f"[{addr}]:{port}", "--reason", "v6 lab")
    assert r.returncode == 0, r.stderr
    assert [g["destination"] for g in json.loads(w.cli("alice", "grants", "demo", "--json").stdout)] == [
        f"tcp:[{addr}]:{port}"]
    assert reaches(w, dest)
    assert not reaches(w, {"ip": addr, "port": port + 1})  # that port only
    r = w.cli("alice", "revoke", "demo", "tcp", f"[{addr}]:{port}")
    assert r.returncode == 0, r.stderr
    assert not reaches(w, dest)
