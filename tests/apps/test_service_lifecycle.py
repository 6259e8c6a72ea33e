"""An instance's life through the real CLI, hub, gateway and sandbox (root, bubblewrap,
cgroups): spawn, reach it through the gateway as its owner only (tether's credentials
never reach the app, the user's name does), logs, stop/start, restart after a crash with
the restart counted, and removal leaving nothing behind. The hub is the module's; each
test starts from the state it needs (alice's instance running, or none), so any one runs
alone or in any order."""

from __future__ import annotations

import json
import pytest

from tests.apps.hubs import AppsHub, clean, gateway_get, leftovers, wait_for

@pytest.fixture(scope="module")
def w(tmp_path_factory):
    w = AppsHub(tmp_path_factory.mktemp("applife")).start().setup({"alice": "read", "bob": "read", "olga": "admin",
                                                                     "dave": ""})
    r = w.cli("olga", "register", "demo", "--space", "apps", "--dir", str(w.demo_dir()), "--memory", "64M",
              "--cmd", "python3", "app.py")
    assert r.returncode == 0, r.stderr
    yield w
    try:
        w.stop()
    finally:
        clean(w.sandbox_root)

def host(w, user, app="demo"):
    return f"{app}--{user}.localhost:{w.gw_port}"

def bearer(w, user):
    return {"Authorization": f"Bearer {w.tokens[user]}"}

def instance_of(w, user="alice"):
    """``user``'s instance of demo as `tether app status --json` shows it, or None."""
    r = w.cli(user, "status", "demo", "--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout) if r.returncode == 0 else None

@pytest.fixture
def no_instance(w):
    """alice has no instance of demo (an earlier test's is removed)."""
    if instance_of(w) is not None:
        r = w.cli("alice", "rm", "demo")
        assert r.returncode == 0, r.stderr

@pytest.fixture
def running(w):
    """alice's instance of demo, running (spawned or started if an earlier test did not leave one)."""
    st = instance_of(w)
    if st is None or st["state"] != "running":
        r = w.cli("alice", "spawn" if st is None else "start", "demo")
        assert r.returncode == 0, r.stderr
    st = wait_for(lambda: (s := instance_of(w)) and s["state"] == "running" and s, what="alice's instance running")
    assert wait_for(lambda: gateway_get(w.gw_port, host(w, "alice"), "/", bearer(w, "alice"))[0] == 200)
    return st

def test_spawn_serves_the_owner_only_and_keeps_credentials_from_the_app(w, no_instance):
    r = w.cli("alice", "spawn", "demo", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["state"] == "running" and out["url"] == f"http://demo--alice.localhost:{w.gw_port}/"
    status, _, body = gateway_get(w.gw_port, host(w, "alice"), "/api/whoami",
                                  {**bearer(w, "alice"), "Cookie": "tether-gw=x; theirs=1", "X-Tether-User": "mallory"})
    assert status == 200, body
    seen = json.loads(body)
    assert seen["user"] == "alice"  # the gateway's header, not the client's
    assert seen["authorization"] == "" and "tether-gw" not in seen["cookie"] and "theirs=1" in seen["cookie"]
    assert seen["uid"] >= 1000 and not any(k.startswith("TETHER_TOKEN") for k in seen["env"])
    # bob is not alice: refused by the gateway, audited
    status, _, body = gateway_get(w.gw_port, host(w, "alice"), "/", bearer(w, "bob"))
    assert status == 403 and b"belongs to alice" in body
    status, _, body = gateway_get(w.gw_port, host(w, "alice"), "/")
    assert status == 401 and b"tether app open demo" in body
    with w.api("admin") as c:
        records = c.get("/api/v1/audit", params={"action": "app.access"}).json()
    records = records.get("records", records)
    assert any(rec["user"] == "bob" and rec["outcome"] == "denied" for rec in records)

def test_spawning_twice_for_others_or_for_nobody_is_refused(w, running):
    again = w.cli("alice", "spawn", "demo")
    assert again.returncode == 1 and "already has an instance" in again.stderr
    other = w.cli("alice", "spawn", "demo", "--for", "bob")
    assert other.returncode == 4 and "app.admin" in other.stderr
    missing = w.cli("alice", "spawn", "nosuch")
    assert missing.returncode == 1 and "no app named nosuch; see `tether app list`" in missing.stderr
    # the other not-found answers read as sentences too, each with what to do
    for user, args, said in (
            ("olga", ("revoke", "demo--alice", "tcp", "192.0.2.1:80"),
             "demo--alice has no grant 192.0.2.1:80; see `tether app grants demo--alice`"),
            ("alice", ("unshare", "demo", "--with", "bob"),
             "demo--alice is not shared with bob; see `tether app shares demo`")):
        r = w.cli(user, *args)
        assert r.returncode == 1 and said in r.stderr and "does not exist" not in r.stderr, r.stderr
    nobody = w.cli("olga", "status", "demo--bob")
    assert nobody.returncode == 1 and "bob has no instance of demo; spawn it with `tether app spawn demo --for bob`" \
        in nobody.stderr, nobody.stderr
    outsider = w.cli("dave", "spawn", "demo")
    assert outsider.returncode == 4 and "no grant on space 'apps'" in outsider.stderr
    with w.api("admin") as c:
        c.post("/api/v1/users/bob/disable").raise_for_status()
        try:
            disabled = w.cli("olga", "spawn", "demo", "--for", "bob")
            assert disabled.returncode == 4 and "bob is disabled" in disabled.stderr
        finally:
            c.post("/api/v1/users/bob/enable").raise_for_status()
    # an admin spawning for a user who could not open it (no grant on the app's space): refused, nothing made
    ungranted = w.cli("olga", "spawn", "demo", "--for", "dave")
    assert ungranted.returncode == 1, ungranted.stderr
    assert "dave has no grant on space apps" in ungranted.stderr
    assert "`tether space grant apps dave read`" in ungranted.stderr
    listed = json.loads(w.cli("olga", "list", "--all", "--json").stdout)
    assert [i["instance"] for i in listed] == ["demo--alice"]
    with w.api("admin") as c:
        tokens = c.get("/api/v1/tokens", params={"user": "dave", "all": "true"}).json()
    assert not [t for t in tokens.get("tokens", tokens) if "app instance" in (t.get("label") or "")], tokens

def test_logs_stop_start_and_restart_after_a_crash(w, running):
    logs = w.cli("alice", "logs", "demo")
    assert logs.returncode == 0 and "demo: serving on /run/tether/app.sock" in logs.stdout, logs.stderr
    stop = w.cli("alice", "stop", "demo")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    status, _, body = gateway_get(w.gw_port, host(w, "alice"), "/", bearer(w, "alice"))
    assert status == 503 and b"tether app start demo" in body
    start = w.cli("alice", "start", "demo")
    assert start.returncode == 0 and "running" in start.stdout, start.stderr
    assert gateway_get(w.gw_port, host(w, "alice"), "/", bearer(w, "alice"))[0] == 200
    # the app dies: the supervisor starts it again (after a 1 s backoff) and counts it
    gateway_get(w.gw_port, host(w, "alice"), "/api/crash", bearer(w, "alice"))
    st = wait_for(lambda: (s := instance_of(w))["restarts"] > running["restarts"] and s["state"] == "running" and s,
                  what="a restart")
    assert st["restarts"] == running["restarts"] + 1
    assert st["reason"].startswith("restarted after it exited 3 (failure "), st  # how it ended, not ""
    assert wait_for(lambda: gateway_get(w.gw_port, host(w, "alice"), "/", bearer(w, "alice"))[0] == 200)
    with w.api("admin") as c:
        records = c.get("/api/v1/audit", params={"action": "app.restart"}).json()
    assert records.get("records", records)

def test_rm_leaves_nothing_behind(w, running):
    st = running
    data = w.hub.data_dir / "apps" / "data" / st["id"]
    assert data.is_dir()
    r = w.cli("alice", "rm", "demo")
    assert r.returncode == 0, r.stderr
    assert leftovers(w.sandbox_root) == [] and not data.exists()
    assert not (w.hub.data_dir / "apps" / "run" / st["id"]).exists()
    assert gateway_get(w.gw_port, host(w, "alice"), "/", bearer(w, "alice"))[0] == 404
    gone = w.cli("alice", "status", "demo")
    assert gone.returncode == 1 and "alice has no instance of demo; spawn it with `tether app spawn demo`" in gone.stderr
