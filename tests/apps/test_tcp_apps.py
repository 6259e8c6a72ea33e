"""Apps that only speak TCP (`tether app register --tcp PORT`), end to end against a real hub
as root: the app listens on 127.0.0.1:PORT inside its own network namespace, the gateway
reaches it (through the sandbox's relay on its socket), and the instance still reaches
nothing it was not granted. Bad ports are refused with a clear error and nothing written."""

from __future__ import annotations

import json

import pytest

from tests.apps.hubs import AppsHub, clean, gateway_get, outside  # noqa: F401 - outside is a fixture


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    w = AppsHub(tmp_path_factory.mktemp("apptcp")).start().setup({"alice": "read", "olga": "admin"})
    yield w
    try:
        w.stop()
    finally:
        clean(w.sandbox_root)


def _apps(w) -> list:
    with w.api("admin") as c:
        return c.get("/api/v1/apps").json()


def bearer(w, user="alice"):
    return {"Authorization": f"Bearer {w.tokens[user]}"}


def test_a_tcp_only_app_is_served_through_the_gateway(w):
    site = w.tmp / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>served over TCP inside the sandbox</h1>\n")
    r = w.cli("olga", "register", "files", "--space", "apps", "--dir", str(site), "--tcp", "8123", "--json",
              "--cmd", "python3", "-m", "http.server", "--bind", "127.0.0.1", "8123")
    assert r.returncode == 0, r.stderr
    [app] = [a for a in _apps(w) if a["name"] == "files"]
    assert app["tcp_port"] == 8123
    r = w.cli("alice", "spawn", "files", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tcp_port"] == 8123
    code, _, body = gateway_get(w.gw_port, f"files--alice.localhost:{w.gw_port}", "/", bearer(w))
    assert code == 200 and b"served over TCP inside the sandbox" in body, (
        code, body, w.cli("alice", "logs", "files").stdout, w.hub.log_text() if hasattr(w.hub, "log_text") else "")
    for args in (["status", "files", "--json"], ["list", "--json"]):
        r = w.cli("alice", *args)
        out = json.loads(r.stdout)
        row = out if isinstance(out, dict) else next(i for i in out if i["app"] == "files")
        assert row["tcp_port"] == 8123 and row["state"] == "running", out
    # the same version again with another port is another version, not a silent change
    r = w.cli("olga", "register", "files", "--space", "apps", "--dir", str(site), "--tcp", "8124",
              "--cmd", "python3", "-m", "http.server", "--bind", "127.0.0.1", "8123")
    assert r.returncode == 1 and "register a new --version" in r.stderr, r.stderr
    assert w.cli("alice", "rm", "files").returncode == 0


def test_a_tcp_instance_reaches_nothing_else(w, outside):
    r = w.cli("olga", "register", "tcpdemo", "--space", "apps", "--dir", str(w.demo_dir()), "--tcp",
              "--cmd", "python3", "app.py")  # --tcp alone: port 8000; the demo listens on $PORT when set
    assert r.returncode == 0, r.stderr
    assert w.cli("alice", "spawn", "tcpdemo").returncode == 0
    st = json.loads(w.cli("alice", "status", "tcpdemo", "--json").stdout)
    assert st["tcp_port"] == 8000 and st["state"] == "running"  # the self-test passed before it was ready
    host = f"tcpdemo--alice.localhost:{w.gw_port}"
    code, _, body = gateway_get(w.gw_port, host, "/api/whoami", bearer(w))
    assert code == 200 and json.loads(body)["user"] == "alice"
    assert json.loads(body)["authorization"] == ""  # tether's credential stays at the gateway
    env = json.loads(body)["env"]
    assert "PORT" in env and "TETHER_SOCKET" not in env  # the socket is the relay's, not the app's to bind
    from tether.apps.service import hub_addresses

    hub_ip = next(str(a) for a in hub_addresses() if a.version == 4 and not a.is_loopback)
    tried = [(outside["ip"], outside["port"]), ("169.254.169.254", 80), (hub_ip, w.gw_port), ("192.0.2.10", 80)]
    for ip, port in tried:
        code, _, body = gateway_get(w.gw_port, host, f"/api/connect?host={ip}&port={port}", bearer(w))
        assert code == 200 and json.loads(body)["ok"] is False, (ip, port, body)
    # its own 127.0.0.1:PORT is the app itself (the instance's own namespace, not the host's)
    code, _, body = gateway_get(w.gw_port, host, "/api/connect?host=127.0.0.1&port=8000", bearer(w))
    assert code == 200 and json.loads(body).get("ok") is True, (code, body, w.cli("alice", "status", "tcpdemo").stdout,
                                                                  w.cli("alice", "logs", "tcpdemo").stdout,
                                                                  w.hub.log_text()[-3000:])
    assert w.cli("alice", "rm", "tcpdemo").returncode == 0


@pytest.mark.parametrize("port", ["0", "65536", "abc", "80.5", "٨٠"])
def test_bad_ports_are_refused_and_nothing_is_written(w, port):
    before = _apps(w)
    r = w.cli("olga", "register", "badport", "--space", "apps", "--dir", str(w.demo_dir()), "--tcp", port,
              "--cmd", "python3", "app.py")
    assert r.returncode == 2 and "--tcp" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "files sent" not in r.stdout  # refused before any file travels
    with w.api("olga") as c:  # the hub refuses them too (a client that skips the CLI's check)
        for value in (port, int(port) if port.isdigit() and port.isascii() else port, -1, True, 8080.0):
            resp = c.post("/api/v1/apps/badport", json={"space": "apps", "version": "1", "build": "apps/apps/x",
                                                         "cmd": ["python3", "app.py"], "tcp": value})
            assert resp.status_code in (400, 422), resp.text
            assert resp.status_code == 422 or "--tcp" in resp.json()["detail"]
    assert _apps(w) == before
