"""Apps with two hub replicas on one PostgreSQL (and one blob store): instances are rows,
so both replicas give the same answers; either gateway serves an instance (the one not
running its sandbox passes the request on to the one that does); stopping, starting and
removing through either replica is carried out by the one holding the sandbox; its
output is read through the replica running it (the other says which)."""

from __future__ import annotations

import json
import pytest

from tests.apps.hubs import gateway_get, replicas, wait_for

@pytest.fixture
def pair(pg_server, tmp_path):
    """Two replicas sharing apps_root (the supported set-up: an instance's /data follows it)."""
    yield from replicas(pg_server, tmp_path, shared_root=True)


@pytest.fixture
def unshared(pg_server, tmp_path):
    """Two replicas each with an apps_root of its own."""
    yield from replicas(pg_server, tmp_path, shared_root=False)



def visit(h, user, token, path="/api/whoami"):
    return gateway_get(h.gw_port, f"demo--{user}.localhost:{h.gw_port}", path, {"Authorization": f"Bearer {token}"})


def spawn_on(h) -> str:
    """Register demo and spawn alice's instance through replica ``h`` (it runs there); her token."""
    r = h.cli("olga", "register", "demo", "--space", "apps", "--dir", str(h.demo_dir()), "--cmd", "python3", "app.py")
    assert r.returncode == 0, r.stderr
    assert h.cli("alice", "spawn", "demo").returncode == 0
    return h.tokens["alice"]



def test_two_replicas_give_the_same_answers(pair):
    a, b = pair
    token = spawn_on(a)
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
    code, _, page = visit(a, "alice", token, "/")
    assert code == 200 and b'id="visits">1<' in page  # the first page visit
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


def test_data_follows_an_instance_between_replicas_sharing_apps_root(pair):
    a, b = pair
    token = spawn_on(a)
    assert b'id="visits">1<' in visit(a, "alice", token, "/")[2]
    assert b.cli("alice", "stop", "demo").returncode == 0
    wait_for(lambda: json.loads(a.cli("alice", "status", "demo", "--json").stdout)["state"] == "stopped",
             what="a to stop it")
    assert json.loads(b.cli("alice", "start", "demo", "--json").stdout)["holder"] == f"127.0.0.1:{b.gw_port}"
    assert b'id="visits">2<' in visit(b, "alice", token, "/")[2]  # the same /data, now on b


def test_replicas_not_sharing_apps_root_refuse_what_would_lose_data(unshared):
    a, b = unshared
    token = spawn_on(a)  # its /data is in a's apps_root
    assert b'id="visits">1<' in visit(a, "alice", token, "/")[2]
    assert a.cli("alice", "stop", "demo").returncode == 0
    for verb in ("start", "rm"):  # through b: refused, nothing changed
        r = b.cli("alice", verb, "demo")
        assert r.returncode == 1 and f"in the apps_root of replica 127.0.0.1:{a.gw_port}" in r.stderr, r.stderr
        assert "share apps_root" in r.stderr
    st = json.loads(a.cli("alice", "status", "demo", "--json").stdout)
    assert st["state"] == "stopped" and st["holder"] is None
    assert json.loads(a.cli("alice", "start", "demo", "--json").stdout)["state"] == "running"
    assert b'id="visits">2<' in visit(a, "alice", token, "/")[2]  # through a: its data, kept
    assert visit(b, "alice", token, "/")[0] == 200  # b's gateway passes it to a, which runs it
    assert a.cli("alice", "rm", "demo").returncode == 0
