"""Two hubs on one machine with the same ``apps_prefix`` would name their sandboxes alike
(prefix + instance number) and stop, remove and restart each other's: the second one
refuses to run sandboxes and says which setting to change, and the first one's
instance keeps running untouched. An instance that dies says how (an exit status or a
signal) in its reason, before and after the supervisor restarts it."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.apps.hubs import PREFIX, AppsHub, clean, gateway_get, wait_for


def status(h: AppsHub, user: str = "alice") -> dict:
    return json.loads(h.cli(user, "status", "demo", "--json").stdout)


def register(h: AppsHub) -> None:
    r = h.cli("olga", "register", "demo", "--space", "apps", "--dir", str(h.demo_dir()), "--cmd", "python3", "app.py")
    assert r.returncode == 0, r.stderr


@pytest.fixture
def two(tmp_path):
    """Hubs a and b: each its own data directory and database, one apps_prefix."""
    a, b = AppsHub(tmp_path, data="a"), AppsHub(tmp_path, data="b")
    try:
        a.start().setup({"alice": "read", "olga": "admin"})
        b.start().setup({"alice": "read", "olga": "admin"})
        yield a, b
    finally:
        for h in (a, b):
            h.stop()
        for h in (a, b):
            clean(h.sandbox_root)


def test_a_second_hub_with_the_same_prefix_refuses_to_run_sandboxes(two):
    a, b = two
    register(a)
    assert a.cli("alice", "spawn", "demo").returncode == 0
    before = status(a)
    assert before["state"] == "running"
    pid = (a.sandbox_root / before["id"] / "pid").read_text()

    # b said so when it started, not "sandboxes available"
    started = b.hub.log_path.read_text()
    assert "apps cannot run here: another hub process" in started and "sandboxes available" not in started
    assert "sandboxes available" in a.hub.log_path.read_text()
    register(b)  # registering touches no sandbox: allowed
    r = b.cli("alice", "spawn", "demo")
    assert r.returncode == 3, r.stderr
    assert "apps_prefix" in r.stderr and "another hub process" in r.stderr and "TETHER_APPS_PREFIX" in r.stderr
    assert f"(pid {a.hub.proc.pid})" in r.stderr
    assert not (b.sandbox_root / before["id"]).exists()  # b made no sandbox

    time.sleep(2)  # several sweeps of both hubs
    after = status(a)
    assert (after["state"], after["restarts"], after["failures"]) == ("running", 0, 0), after
    assert (a.sandbox_root / before["id"] / "pid").read_text() == pid  # the same process, never touched
    code, _, body = gateway_get(a.gw_port, f"demo--alice.localhost:{a.gw_port}", "/api/whoami",
                                {"Authorization": f"Bearer {a.tokens['alice']}"})
    assert code == 200 and json.loads(body)["user"] == "alice"


def test_an_instance_killed_from_outside_says_how_it_ended(tmp_path):
    w = AppsHub(tmp_path).start().setup({"alice": "read", "olga": "admin"})
    try:
        register(w)
        assert w.cli("alice", "spawn", "demo").returncode == 0
        first = status(w)
        from tether.apps.sandbox import Sandboxes

        for pid in Sandboxes(w.sandbox_root, prefix=PREFIX).layout.pids(f"{PREFIX}-{first['id']}"):
            os.kill(pid, signal.SIGKILL)  # as another hub removing "its" sandbox of that name would
        again = wait_for(lambda: (s := status(w))["restarts"] == 1 and s["state"] == "running" and s,
                         what="the restart")
        assert again["reason"].startswith("restarted after it ") and "killed by signal 9" in again["reason"], again
        assert again["reason"].endswith("(failure 1 in a row)"), again
        with w.api("admin") as c:
            crash = c.get("/api/v1/audit", params={"action": "app.crash"}).json()
        crash = crash.get("records", crash)
        assert crash and crash[0]["reason"].startswith("crashed: it ") and "SIGKILL" in crash[0]["reason"], crash
    finally:
        w.stop()
        clean(w.sandbox_root)
