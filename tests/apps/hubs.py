"""A hub with its gateway, a space ``apps`` and users who may use it; the CLI as each of them."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hubproc import HubProcess, free_port, unique


class AppsHub:
    def __init__(self, tmp: Path, *, env: dict[str, str] | None = None, database_url: str | None = None,
                 data: str = "data", gw_port: int | None = None):
        self.tmp = tmp
        self.gw_port = gw_port or free_port()
        self.hub = HubProcess(tmp / data, database_url=database_url, env={
            "TETHER_APPS_SWEEP_SECONDS": "0.3", "TETHER_APPS_PREFIX": PREFIX, **(env or {})},
            args=["--gateway-listen", f"127.0.0.1:{self.gw_port}"])
        self.tokens: dict[str, str] = {}

    def start(self) -> "AppsHub":
        self.hub.start()
        return self

    def setup(self, users: dict[str, str], space: str = "apps") -> "AppsHub":
        with self.hub.admin() as c:
            c.post("/api/v1/spaces", json={"name": space}).raise_for_status()
            for user, level in users.items():
                c.post("/api/v1/users", json={"name": user}).raise_for_status()
                if level:
                    c.put(f"/api/v1/spaces/{space}/grants/{user}", json={"level": level}).raise_for_status()
                self.tokens[user] = c.post("/api/v1/tokens", json={"for_user": user, "expires": "2h"}).json()["token"]
        self.tokens["admin"] = self.hub.admin_token
        return self

    def cli(self, user: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {**os.environ, "TETHER_HUB": self.hub.url, "TETHER_TOKEN": self.tokens[user], "HOME": str(self.tmp)}
        return subprocess.run([sys.executable, "-m", "tether", "app", *args], capture_output=True, text=True,
                              env=env, timeout=timeout)

    def api(self, user: str):
        return self.hub.client(self.tokens[user])

    def demo_dir(self) -> Path:
        d = self.tmp / "demo"
        if not d.exists():
            subprocess.run([sys.executable, "-m", "tether.apps.demo", "--copy", str(d)], check=True)
        return d

    @property
    def apps_root(self) -> Path:
        return Path(self.hub.env.get("TETHER_APPS_ROOT") or self.hub.data_dir / "apps")

    @property
    def sandbox_root(self) -> Path:
        return self.apps_root / "sandboxes"

    def stop(self) -> None:
        self.hub.stop()


def replicas(pg_server, tmp_path, shared_root: bool, users: dict[str, str] | None = None):
    """A fixture's body: two hub replicas on one PostgreSQL database (and one blob store), their
    gateways behind one public port, ``apps_root`` shared between them or not; stopped and cleaned after."""
    url = pg_server.create_database(unique("apprep").replace("-", "_"))
    a = AppsHub(tmp_path, database_url=url, env={"TETHER_BLOB_STORE": str(tmp_path / "blobs")}, data="a")
    # one public address for both gateways (a load balancer's), so both answer with the same URLs
    env = {"TETHER_BLOB_STORE": str(tmp_path / "blobs"), "TETHER_GATEWAY_PUBLIC_PORT": str(a.gw_port)}
    roots = [{"TETHER_APPS_ROOT": str(tmp_path / "apps")}] * 2 if shared_root else [{}, {}]
    a = AppsHub(tmp_path, database_url=url, env={**env, **roots[0]}, data="a", gw_port=a.gw_port)
    # two hubs on one machine: each its own apps_prefix (a hub refuses one another holds)
    b = AppsHub(tmp_path, database_url=url, env={**env, **roots[1], "TETHER_APPS_PREFIX": PREFIX_B}, data="b")
    try:
        a.start().setup(users or {"alice": "read", "olga": "admin"})
        b.start()
        b.tokens = a.tokens
        yield a, b
    finally:
        for h in (a, b):
            h.stop()
        for h, prefix in ((a, PREFIX), (b, PREFIX_B)):
            clean(h.apps_root / "sandboxes", prefix)


def demo_for_alice(tmp: Path, users: dict[str, str]):
    """A fixture's body: a hub whose users are ``users``, with app ``demo`` registered (by
    olga, an admin) and alice's instance of it spawned; stopped and cleaned after."""
    w = AppsHub(tmp).start().setup(users)
    r = w.cli("olga", "register", "demo", "--space", "apps", "--dir", str(w.demo_dir()), "--cmd", "python3", "app.py")
    assert r.returncode == 0, r.stderr
    assert w.cli("alice", "spawn", "demo").returncode == 0
    yield w
    try:
        w.stop()
    finally:
        clean(w.sandbox_root)


# this branch's prefix for sandboxes' interfaces and cgroups, one per pytest-xdist worker
_WORKER = int((os.environ.get("PYTEST_XDIST_WORKER") or "gw0").removeprefix("gw") or 0) % 10
PREFIX = os.environ.get("TETHER_TEST_APPS_TAG", "tag") + str(_WORKER)
# a second hub's on the same machine (a replica): "tagk", "tagl"... (conftest.py's sandboxes use "taga".."tagj")
PREFIX_B = os.environ.get("TETHER_TEST_APPS_TAG", "tag") + "klmnopqrst"[_WORKER]


def gateway_get(port: int, host: str, path: str = "/", headers: dict | None = None, method: str = "GET"):
    """One request to the gateway for route host ``host``: (status, headers, body)."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, headers={"Host": host, **(headers or {})})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def leftovers(root: Path, prefix: str = PREFIX) -> list[str]:
    """Sandboxes (state, cgroups) with this branch's prefix still on the machine under ``root``."""
    from tether.apps.sandbox import Sandboxes

    return Sandboxes(root, prefix=prefix).present()


def clean(root: Path, prefix: str = PREFIX) -> None:
    """Remove what the hub whose sandboxes live at ``root`` left: sandboxes, and the
    instances' data filesystems (mounted until `rm`, by design: they outlive the hub)."""
    from tether.apps.sandbox import Sandboxes

    sb = Sandboxes(root, prefix=prefix)
    for inst in sb.present():
        sb.remove(inst)
    for mountpoint in data_mounts(root.parent):
        subprocess.run(["umount", mountpoint], capture_output=True)


def data_mounts(apps_root: Path) -> list[str]:
    """The instances' data filesystems mounted under ``apps_root``."""
    under = f"{apps_root / 'data'}/"
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(under)]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[3].encode()); c.close()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def outside():
    """A server outside every sandbox: its own network namespace, reached from the host by a veth."""
    n = random.randrange(1, 250)
    ns, veth = f"tagx{os.getpid() % 10000}", f"tagx{os.getpid() % 10000}h"
    host_ip, server_ip = f"198.18.{n}.1", f"198.18.{n}.2"
    _ip("netns", "add", ns)
    proc = None
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", ns, "addr", "add", f"{server_ip}/30", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", host_ip)
        with open(f"/proc/sys/net/ipv4/conf/{veth}/forwarding", "w") as f:
            f.write("1")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, server_ip, "7070",
                                 "hello from outside"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        yield {"ip": server_ip, "port": 7070, "ns": ns}
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
