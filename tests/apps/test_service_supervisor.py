"""The supervisor with a real hub and sandboxes: an idle instance is stopped and the next
request through the gateway starts it again (scale to zero); after a hub restart every
instance is adopted (the same process keeps serving) or cleanly stopped, and a sandbox
no row wants is removed: none is left orphaned."""

from __future__ import annotations

import json
import pytest

from tests.apps.hubs import PREFIX, AppsHub, clean, gateway_get, leftovers, wait_for

@pytest.fixture
def w(tmp_path):
    w = AppsHub(tmp_path, env={"TETHER_APPS_IDLE": "2s"}).start().setup({"alice": "read", "bob": "read",
                                                                         "olga": "admin"})
    r = w.cli("olga", "register", "demo", "--space", "apps", "--dir", str(w.demo_dir()), "--cmd", "python3", "app.py")
    assert r.returncode == 0, r.stderr
    yield w
    try:
        w.stop()
    finally:
        clean(w.sandbox_root)

def status(w, user):
    return json.loads(w.cli(user, "status", "demo", "--json").stdout)

def visit(w, user, path="/"):
    return gateway_get(w.gw_port, f"demo--{user}.localhost:{w.gw_port}", path,
                       {"Authorization": f"Bearer {w.tokens[user]}"})

def test_idle_instances_stop_and_the_next_request_starts_them(w):
    assert w.cli("alice", "spawn", "demo").returncode == 0
    assert visit(w, "alice")[0] == 200
    st = wait_for(lambda: (s := status(w, "alice"))["state"] == "idle" and s, what="the idle stop")
    assert "next request starts it" in st["reason"] and leftovers(w.sandbox_root) == []
    code, _, body = visit(w, "alice", "/api/whoami")  # scale from zero: this request starts it
    assert code == 200 and json.loads(body)["user"] == "alice"
    assert status(w, "alice")["state"] == "running"
    with w.api("admin") as c:
        records = c.get("/api/v1/audit", params={"action": "app.idle-stop"}).json()
    assert records.get("records", records)

def test_after_a_restart_instances_are_adopted_and_orphans_removed(w):
    w.hub.env["TETHER_APPS_IDLE"] = "1h"
    w.hub.stop()
    w.hub.start()
    for user in ("alice", "bob"):
        assert w.cli(user, "spawn", "demo").returncode == 0
    assert w.cli("bob", "stop", "demo").returncode == 0
    assert visit(w, "alice")[0] == 200
    alice_id = status(w, "alice")["id"]
    pid_file = w.sandbox_root / alice_id / "pid"
    pid = pid_file.read_text().strip()
    # an orphan: a sandbox this hub made whose row is gone (removed while the hub was down)
    from tether.apps.sandbox import Limits, Sandboxes, SandboxSpec

    sb = Sandboxes(w.sandbox_root, prefix=PREFIX)
    orphan = w.tmp / "orphan"
    orphan.mkdir()
    (orphan / "app.py").write_text("import time\ntime.sleep(600)\n")
    sb.start(SandboxSpec(instance="zz9", app_dir=orphan, data_dir=w.tmp / "od", run_dir=w.tmp / "or",
                         argv=("python3", "app.py"), env={}, uid=1_499_999_000, gid=1_499_999_000,
                         limits=Limits(64 << 20, 0.2, 16)))
    assert "zz9" in sb.present()

    w.hub.stop()  # the sandboxes keep running while the hub is down
    assert sb.status("zz9").running and sb.status(alice_id).running
    w.hub.start()
    wait_for(lambda: "zz9" not in sb.present(), what="the orphan's removal")
    st = status(w, "alice")
    assert st["state"] == "running"
    assert pid_file.read_text().strip() == pid  # adopted: the same process, not a new one
    assert visit(w, "alice")[0] == 200
    assert status(w, "bob")["state"] == "stopped"  # stopped stays stopped
    assert sorted(sb.present()) == [st["id"]]
