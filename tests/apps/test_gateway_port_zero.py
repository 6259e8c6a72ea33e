"""``--gateway-listen HOST:0``: the gateway serves on the port the kernel chose, and every
place the hub names its gateway says that port: the "gateway on" line, an instance's URL,
and the internal address written on the instance's row for the other replicas."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.apps.hubs import AppsHub, clean, gateway_get


@pytest.fixture
def w(tmp_path):
    w = AppsHub(tmp_path)
    at = w.hub.argv.index("--gateway-listen")
    w.hub.argv[at + 1] = "127.0.0.1:0"
    w.start().setup({"alice": "read", "olga": "admin"})
    yield w
    try:
        w.stop()
    finally:
        clean(w.sandbox_root)


def test_an_instance_is_reached_and_named_at_the_gateway_port_the_kernel_chose(w):
    deadline = time.monotonic() + 10
    while not (m := re.search(r"gateway on 127\.0\.0\.1:(\d+):", w.hub.log_text())):
        assert time.monotonic() < deadline, w.hub.log_text()
        time.sleep(0.05)
    port = int(m.group(1))
    assert port != 0
    r = w.cli("olga", "register", "demo", "--space", "apps", "--dir", str(w.demo_dir()), "--cmd", "python3", "app.py")
    assert r.returncode == 0, r.stderr
    assert w.cli("alice", "spawn", "demo").returncode == 0
    st = json.loads(w.cli("alice", "status", "demo", "--json").stdout)
    assert st["holder"] == f"127.0.0.1:{port}", st  # what the other replicas pass requests on to
    assert st["url"] == f"http://demo--alice.localhost:{port}/", st
    code, _, body = gateway_get(port, f"demo--alice.localhost:{port}", "/api/whoami",
                                {"Authorization": f"Bearer {w.tokens['alice']}"})
    assert code == 200 and json.loads(body)["user"] == "alice"
