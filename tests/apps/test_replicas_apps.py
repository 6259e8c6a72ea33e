"""Apps with two hub replicas on one PostgreSQL (and one blob store): instances are rows,
so both replicas give the same answers; either gateway serves an instance (the one not
running its sandbox passes the request on to the one that does); stopping, starting and
removing through either replica is carried out by the one holding the sandbox; its
output is read through the replica running it (the other says which)."""

from __future__ import annotations

import json
import pytest

from tests.apps.hubs import AppsHub, clean, gateway_get, wait_for
from tests.hubproc import unique

@pytest.fixture
def pair(pg_server, tmp_path):
    url = pg_server.create_database(unique("apprep").replace("-", "_"))
    a = AppsHub(tmp_path, database_url=url, env={"TETHER_BLOB_STORE": str(tmp_path / "blobs")}, data="a")
    # one public address for both gateways (a load balancer's), so both answer with the same URLs
    env = {"TETHER_BLOB_STORE": str(tmp_path / "blobs"), "TETHER_GATEWAY_PUBLIC_PORT": str(a.gw_port)}
    a = AppsHub(tmp_path, database_url=url, env=env, data="a", gw_port=a.gw_port)
    b = AppsHub(tmp_path, database_url=url, env=env, data="b")
    try:
        a.start().setup({"alice": "read", "olga": "admin"})
        b.start()
        b.tokens = a.tokens
        yield a, b
    finally:
        for h in (a, b):
            h.stop()
        for h in (a, b):
            clean(h.sandbox_root)

def visit(h, user, token, path="/api/whoami"):
    return gateway_get(h.gw_port, f"demo--{user}.localhost:{h.gw_port}", path, {"Authorization": f"Bearer {token}"})

def test_two_replicas_give_the_same_answers(pair):
    a, b = pair
    assert a.cli("olga", "register", "demo", "--space", "apps", "--dir", str(a.demo_dir()), "--cmd", "python3",
                 "app.py").returncode == 0
    assert a.cli("alice", "spawn", "demo").returncode == 0  # runs on a
    token = a.tokens["alice"]
    for h in (a, b):  # either gateway: b passes the request on to a
        code, _, body = visit(h, "alice", token)
        assert code == 200 and json.loads(body)["user"] == "alice"
    assert visit(b, "alice", "tth_0123456789abcdef_" + "A" * 43)[0] == 401  # b checks it first
    # the same rows, read through either replica (counters the holder flushes may move between two reads)
    listed = wait_for(lambda: (ls := [json.loads(h.cli("alice", "list", "--json").stdout) for h in (a, b)])
                      and ls[0] == ls[1] and ls, what="the same answer from both replicas")
    assert listed[0][0]["holder"] == f"127.0.0.1:{a.gw_port}"
    assert json.loads(b.cli("olga", "list", "--apps", "--json").stdout)[0]["name"] == "demo"

    # grants made through b are applied by a, and listed alike by both
    r = b.cli("olga", "grant", "demo--alice", "tcp", "192.0.2.7:443", "--reason", "via b")
    assert r.returncode == 0, r.stderr
    assert [json.loads(h.cli("alice", "grants", "demo", "--json").stdout) for h in (a, b)][0][0]["reason"] == "via b"

    # stopped through b: a (which holds the sandbox) stops it
    assert b.cli("alice", "stop", "demo").returncode == 0
    wait_for(lambda: json.loads(a.cli("alice", "status", "demo", "--json").stdout)["state"] == "stopped",
             what="a to stop it")
    assert visit(a, "alice", token)[0] == 503
    # started through b: b runs it now, and a passes requests on to b
    st = json.loads(b.cli("alice", "start", "demo", "--json").stdout)
    assert st["state"] == "running" and st["holder"] == f"127.0.0.1:{b.gw_port}"
    assert visit(a, "alice", token)[0] == 200
    # its output is on b, which runs it; a (which ran it before) says where, and does not serve its stale copy
    assert "demo: serving on" in b.cli("alice", "logs", "demo").stdout
    for args in (["logs", "demo"], ["logs", "demo", "-f"]):
        r = a.cli("alice", *args)
        assert r.returncode == 1 and f"runs on another hub replica (127.0.0.1:{b.gw_port}" in r.stderr, r.stderr
        assert "--hub" in r.stderr and r.stdout == ""
    # removed through a while b holds it: b removes it
    r = a.cli("alice", "rm", "demo")
    assert r.returncode == 0 and "removes it within" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: a.cli("alice", "status", "demo").returncode == 1, what="b to remove it")
    assert visit(b, "alice", token)[0] == 404 and visit(a, "alice", token)[0] == 404
