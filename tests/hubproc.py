"""Run a real hub process for tests: ``python -m tether hub`` on a free loopback port."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

_names = itertools.count(1)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}-{next(_names)}"


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, *, verify: ssl.SSLContext | bool = True,
                 log=lambda: "") -> bool:
    """Wait until ``url``/healthz answers 200 (True), or ``timeout`` passes (False).
    RuntimeError with ``log()`` if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log()}")
        try:
            if httpx.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False


class HubHelpers:
    """What tests do with a hub at ``self.url`` as its admin (one hub, or a set behind a balancer)."""

    url: str
    verify: ssl.SSLContext | bool
    data_dir: Path

    @property
    def admin_token(self) -> str:
        """The bootstrap admin's token: in this hub's data directory, or in the one of the
        replica (on the same database) that created ``admin`` (``token_dir``)."""
        return ((getattr(self, "token_dir", None) or self.data_dir) / "admin.token").read_text().strip()

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, verify=self.verify, **kw)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def make_user(self, *, grants: dict[str, str] | None = None, admin: bool = False, kind: str = "person",
                  **caveats) -> tuple[str, str]:
        """Create a user (with grants) and mint a token for it; return (name, token)."""
        name = unique("u")
        with self.admin() as c:
            c.post("/api/v1/users", json={"name": name, "kind": kind, "admin": admin}).raise_for_status()
            for space, level in (grants or {}).items():
                c.put(f"/api/v1/spaces/{space}/grants/{name}", json={"level": level}).raise_for_status()
            r = c.post("/api/v1/tokens", json={"for_user": name, **caveats})
            r.raise_for_status()
            return name, r.json()["token"]

    def make_space(self) -> str:
        name = unique("s")
        with self.admin() as c:
            c.post("/api/v1/spaces", json={"name": name}).raise_for_status()
        return name


class HubProcess(HubHelpers):
    """One hub; ``stop()`` ends only the process it started, by pid."""

    def __init__(self, data_dir: Path, *, database_url: str | None = None, host: str = "127.0.0.1",
                 env: dict[str, str] | None = None, args: list[str] | None = None):
        self.data_dir = data_dir
        self.host = host
        self.port = free_port(host)
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if args and "--tls-cert" in args else "http"
        self.url = f"{scheme}://{shown}:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        full_env = dict(os.environ)
        full_env.pop("TETHER_TOKEN", None)
        if database_url:
            full_env["TETHER_DATABASE_URL"] = database_url
        full_env.update(env or {})
        self.argv = [sys.executable, "-m", "tether", "hub", "--data", str(data_dir),
                     "--listen", f"{shown}:{self.port}", *(args or [])]
        self.env = full_env
        self.proc: subprocess.Popen | None = None
        self.verify: ssl.SSLContext | bool = True

    def start(self, timeout: float = 30) -> "HubProcess":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait_healthy(self.proc, self.url, timeout, verify=self.verify, log=self.log_text):
            return self
        self.stop()
        raise RuntimeError(f"hub did not come up in {timeout}s:\n{self.log_text()}")

    @property
    def blob_dir(self) -> Path:
        """The filesystem blob store's directory."""
        return Path(self.env.get("TETHER_BLOB_STORE") or self.data_dir / "blobs")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()
