"""`tether app register` end to end against a real hub: the app's files go to the blob
store as a build (the same tree again sends nothing), and every bad input is refused
with a clear error and nothing written."""

from __future__ import annotations

import json

import pytest

from tests.apps.hubs import AppsHub


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    w = AppsHub(tmp_path_factory.mktemp("appreg")).start().setup({"alice": "read", "olga": "admin"})
    yield w
    w.stop()


def _apps(w) -> list:
    with w.api("admin") as c:
        return c.get("/api/v1/apps").json()


def test_register_sends_the_tree_once_and_keeps_argv_literal(w):
    d = w.demo_dir()
    hostile = ["python3", "app.py", "it's \"quoted\"", "$(touch /tmp/pwned)", "line\nbreak"]
    r = w.cli("olga", "register", "demo", "--space", "apps", "--dir", str(d), "--memory", "128M", "--cpu", "0.25",
              "--pids", "64", "--json", "--cmd", *hostile)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["files_sent"] == 1 and out["unchanged"] is False and out["current_version"] == "1"
    again = w.cli("olga", "register", "demo", "--space", "apps", "--dir", str(d), "--memory", "128M", "--cpu", "0.25",
                  "--pids", "64", "--json", "--cmd", *hostile)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["files_sent"] == 0 and json.loads(again.stdout)["unchanged"] is True
    v2 = w.cli("olga", "register", "demo", "--space", "apps", "--version", "2", "--dir", str(d), "--cmd", "python3",
               "app.py")
    assert v2.returncode == 0 and "0 files sent" in v2.stdout, v2.stdout + v2.stderr
    app, = [a for a in _apps(w) if a["name"] == "demo"]
    assert app["versions"] == ["1", "2"] and app["current_version"] == "2"
    listed = w.cli("alice", "list", "--apps", "--json")
    assert listed.returncode == 0, listed.stderr
    demo, = [a for a in json.loads(listed.stdout) if a["name"] == "demo"]
    assert demo["argv"] == ["python3", "app.py"]  # version 2's
    with w.api("olga") as c:  # one build holds the tree, whatever the versions: version 1 named it too
        v1 = c.post("/api/v1/apps/demo", json={"space": "apps", "version": "1", "build": out["build"], "cmd": hostile,
                                                  "memory": "128M", "cpu": "0.25", "pids": "64"})
    assert v1.status_code == 200 and v1.json()["unchanged"] is True, v1.text


def test_same_version_with_other_command_is_refused(w):
    d = w.demo_dir()
    r = w.cli("olga", "register", "demo", "--space", "apps", "--dir", str(d), "--cmd", "python3", "other.py")
    assert r.returncode == 1 and "register a new --version" in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["bad/name", "--space", "apps", "--cmd", "x"], "not valid"),
    (["Bad", "--space", "apps", "--cmd", "x"], "not valid"),
    (["x;id", "--space", "apps", "--cmd", "x"], "not valid"),
    (["ok", "--space", "apps", "--version", "../1", "--cmd", "x"], "version"),
    (["ok", "--space", "apps", "--version", "$(id)", "--cmd", "x"], "version"),
    (["ok", "--space", "apps", "--memory", "0", "--cmd", "x"], "--memory"),
    (["ok", "--space", "apps", "--memory", "-5M", "--cmd", "x"], "--memory"),
    (["ok", "--space", "apps", "--memory", "900G", "--cmd", "x"], "out of range"),
    (["ok", "--space", "apps", "--cpu", "0", "--cmd", "x"], "--cpu"),
    (["ok", "--space", "apps", "--cpu", "-1", "--cmd", "x"], "--cpu"),
    (["ok", "--space", "apps", "--pids", "0", "--cmd", "x"], "--pids"),
    (["ok", "--space", "apps", "--pids", "1000000", "--cmd", "x"], "--pids"),
    (["ok", "--space", "apps", "--grant", "tcp:0.0.0.0/0:80", "--cmd", "x"], "network"),
    (["ok", "--space", "apps", "--grant", "tcp:::/0", "--cmd", "x"], "network"),
    (["ok", "--space", "apps", "--grant", "tcp:169.254.169.254:80", "--cmd", "x"], "metadata"),
    (["ok", "--space", "apps", "--grant", "tcp:localhost", "--cmd", "x"], "HOST:PORT"),
    (["ok", "--space", "apps", "--cmd"], "needs a program"),
    (["ok", "--space", "apps"], "--cmd"),
])
def test_bad_input_is_refused_and_nothing_is_written(w, args, needle):
    before = _apps(w)
    extra = [] if "--build" in args else ["--dir", str(w.demo_dir())]
    cut = args.index("--cmd") if "--cmd" in args else len(args)
    r = w.cli("olga", "register", *args[:cut], *extra, *args[cut:])
    assert r.returncode in (1, 2), r.stdout + r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _apps(w) == before


def test_registering_needs_admin_on_the_space(w):
    r = w.cli("alice", "register", "mine", "--space", "apps", "--dir", str(w.demo_dir()), "--cmd", "python3", "app.py")
    assert r.returncode == 4 and "needs write" in r.stderr  # sending the files is refused already
    with w.api("alice") as c:
        r = c.post("/api/v1/apps/mine", json={"space": "apps", "version": "1", "build": "apps/apps/x", "cmd": ["x"]})
    assert r.status_code == 403 and "app.admin needs admin" in r.json()["detail"]
    assert "mine" not in [a["name"] for a in _apps(w)]
    with w.api("admin") as c:
        audit = c.get("/api/v1/audit", params={"action": "app.admin"}).json()
    assert any(rec["outcome"] == "denied" and rec["user"] == "alice" for rec in audit.get("records", audit))


COMMANDS = ["register", "spawn", "open", "share", "stop", "start", "restart", "rm", "list", "status", "logs", "grant", "revoke",
            "grants"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_complete_help(w, command):
    r = w.cli("olga", command, "--help")
    assert r.returncode == 0 and "Examples:" in r.stdout and f"tether app {command} " in r.stdout, r.stdout


def test_spawning_says_why_when_the_hub_has_no_gateway(tmp_path):
    from tests.hubproc import HubProcess

    hub = HubProcess(tmp_path / "data").start()
    try:
        with hub.admin() as c:
            r = c.post("/api/v1/apps/demo/spawn", json={})
        assert r.status_code == 409 and "--gateway-listen" in r.json()["detail"]
    finally:
        hub.stop()
