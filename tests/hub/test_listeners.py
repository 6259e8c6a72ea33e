"""The hub's four listeners (API, SSH, gateway, LAVA) are bound once, before the hub says
it serves, and each bound socket is the one its server uses: a port of 0 is the
kernel's choice, announced and used everywhere the address is named."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.hubproc import HubProcess
from tests.job.test_lava import raw

FLAGS = ("--listen", "--ssh-listen", "--gateway-listen", "--lava-listen")


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (from its sockets' inodes and /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def _wait_for(proc: subprocess.Popen, log, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, log.read_text())
        if m:
            return m
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not said:\n{log.read_text()}")


def test_port_zero_for_all_four_listeners_announces_and_serves_the_ports_bound(tmp_path):
    log = tmp_path / "hub.log"
    env = {**os.environ, "TETHER_SIGNAL_NATS": "off"}
    env.pop("TETHER_TOKEN", None)
    argv = [sys.executable, "-m", "tether", "hub", "--data", str(tmp_path / "data")]
    for flag in FLAGS:
        argv += [flag, "127.0.0.1:0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        api = int(_wait_for(proc, log, r"hub serving http://127\.0\.0\.1:(\d+) ").group(1))
        ssh = int(_wait_for(proc, log, r"SSH on 127\.0\.0\.1:(\d+),").group(1))
        gw = int(_wait_for(proc, log, r"gateway on 127\.0\.0\.1:(\d+):").group(1))
        assert f"routes at http://NAME--USER.localhost:{gw}\n" in log.read_text()  # the URL to copy works
        lava = int(_wait_for(proc, log, r"LAVA coordinator protocol on 127\.0\.0\.1:(\d+) ").group(1))
        ports = {api, ssh, gw, lava}
        assert len(ports) == 4 and 0 not in ports, log.read_text()
        assert ":0 " not in log.read_text() and ":0," not in log.read_text()

        url = f"http://127.0.0.1:{api}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # each listener is a socket of this process, bound once: no other port is listened on
        deadline = time.monotonic() + 10
        while _listening_ports(proc.pid) != ports and time.monotonic() < deadline:
            time.sleep(0.05)  # the lifespan's servers start with the app
        assert _listening_ports(proc.pid) == ports
        with socket.create_connection(("127.0.0.1", ssh), timeout=10) as s:
            assert s.recv(64).startswith(b"SSH-2.0-")
        r = httpx.get(f"http://127.0.0.1:{gw}/", headers={"Host": f"nothing--nobody.localhost:{gw}"}, timeout=10)
        assert r.status_code in (404, 401, 302, 303), r.text
        reply = raw(lava, b'{"request": "lava_send", "group_name": "none", "client_name": "x"}')
        assert reply["response"] == "nack"
    finally:
        stopper = HubProcess(tmp_path / "data")
        stopper.proc = proc
        stopper.stop()  # by its pid


def test_a_malformed_listen_address_exits_2_with_one_line_naming_the_form(tmp_path):
    """Each of the four flags (and its env var), given an address without a port, or
    nonsense, or a port out of range: exit 2, one line saying HOST:PORT is expected,
    no traceback or pydantic dump, and nothing written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    data = tmp_path / "data"
    cases = [([flag, bad], {}) for flag in FLAGS for bad in ("127.0.0.1", "nonsense", "127.0.0.1:99999")]
    cases.append(([], {"TETHER_GATEWAY_LISTEN": ":8080"}))
    for args, extra in cases:
        r = subprocess.run([sys.executable, "-m", "tether", "hub", "--data", str(data), *args],
                           env={**env, **extra}, capture_output=True, text=True, timeout=60)
        said = (args, extra, r.stderr)
        assert r.returncode == 2, said
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("tether: error: "), said
        assert "is not HOST:PORT (e.g. 127.0.0.1:8580" in r.stderr, said
        assert "pydantic" not in r.stderr and "Traceback" not in r.stderr, said
        assert not data.exists(), said


@pytest.mark.parametrize("settings,said", [
    ({"gateway_listen": "127.0.0.1:8081"}, "http://NAME--USER.localhost:8081"),
    ({"gateway_listen": "0.0.0.0:8081", "gateway_public_port": 80, "gateway_domain": "apps.example.org"},
     "http://NAME--USER.apps.example.org"),
    ({"gateway_listen": "127.0.0.1:8443", "gateway_tls_cert": "c.pem", "gateway_tls_key": "k.pem"},
     "https://NAME--USER.localhost:8443"),
    ({"gateway_listen": "127.0.0.1:443", "gateway_tls_cert": "c.pem", "gateway_tls_key": "k.pem"},
     "https://NAME--USER.localhost"),
    ({"gateway_listen": "127.0.0.1:8081", "gateway_path_mode": True}, "http://localhost:8081/apps/USER/NAME/"),
])
def test_the_gateway_line_names_the_port_unless_it_is_the_schemes_default(settings, said):
    from tether.cli.hub import _routes_at
    from tether.config import HubSettings

    assert _routes_at(HubSettings(**settings)) == said
