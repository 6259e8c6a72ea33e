"""A hub with its gateway, a space ``apps`` and users who may use it; the CLI as each of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.hubproc import HubProcess, free_port


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
    def sandbox_root(self) -> Path:
        return self.hub.data_dir / "apps" / "sandboxes"

    def stop(self) -> None:
        self.hub.stop()


PREFIX = "tas"  # this branch's prefix for sandboxes' interfaces and cgroups


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


def leftovers(root: Path) -> list[str]:
    """Sandboxes (state, cgroups) with this branch's prefix still on the machine under ``root``."""
    from tether.apps.sandbox import Sandboxes

    return Sandboxes(root, prefix=PREFIX).present()


def clean(root: Path) -> None:
    from tether.apps.sandbox import Sandboxes

    sb = Sandboxes(root, prefix=PREFIX)
    for inst in sb.present():
        sb.remove(inst)


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
