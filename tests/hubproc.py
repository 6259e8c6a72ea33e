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
    """A TCP port on ``host`` that was free a moment ago. Another program may take it before
    the server it is meant for binds it: prefer a server that binds port 0 itself and
    reports it, else start it again on a new port when it says the port is taken
    (:meth:`HubProcess.start` does)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_taken(log: str) -> bool:
    """Whether a server's log says it could not bind a port another program holds."""
    return "the port is taken by another program" in log or "address already in use" in log.lower()


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}-{next(_names)}"


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, *, verify: ssl.SSLContext | bool = True,
                 log=lambda: "", ours=lambda: True) -> bool:
    """Wait until ``url``/healthz answers 200 and ``ours()`` says the answer is from
    ``proc`` (not from another program that took its port first) (True), or ``timeout``
    passes (False). RuntimeError with ``log()`` if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log()}")
        try:
            if httpx.get(url + "/healthz", timeout=1, verify=verify).status_code == 200 and ours():
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
    """One hub; ``stop()`` ends only the process it started, by pid.

    It listens on ports it picks (``port``; and ``ports[FLAG]`` for each flag of
    ``listeners``, e.g. ``--ssh-listen``, ``--gateway-listen``). A port another program
    takes between the pick and the hub's bind fails that start: the first start then
    tries again on new ports (a restart keeps its ports, and tries them again)."""

    def __init__(self, data_dir: Path, *, database_url: str | None = None, host: str = "127.0.0.1",
                 env: dict[str, str] | None = None, args: list[str] | None = None, listeners: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.host = host
        self.args, self.listeners = list(args or []), listeners
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        full_env = dict(os.environ)
        full_env.pop("TETHER_TOKEN", None)
        if database_url:
            full_env["TETHER_DATABASE_URL"] = database_url
        full_env.update(env or {})
        self.env = full_env
        self.proc: subprocess.Popen | None = None
        self.verify: ssl.SSLContext | bool = True
        self.started = False
        self.argv: list[str] = []
        self._built = 0
        self._pick_ports()

    def _pick_ports(self) -> None:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.port = free_port(self.host)
        self.ports = {flag: free_port(self.host) for flag in self.listeners}
        scheme = "https" if "--tls-cert" in self.args else "http"
        self.url = f"{scheme}://{shown}:{self.port}"
        listen = [x for flag, port in self.ports.items() for x in (flag, f"{shown}:{port}")]
        appended = self.argv[self._built:] if self.argv else []  # options a caller added to argv
        self.argv = [sys.executable, "-m", "tether", "hub", "--data", str(self.data_dir),
                     "--listen", f"{shown}:{self.port}", *listen, *self.args]
        self._built = len(self.argv)
        self.argv += appended

    def start(self, timeout: float = 30, attempts: int = 3) -> "HubProcess":
        for attempt in range(1, attempts + 1):
            self.log = open(self.log_path, "ab")
            since = self.log.tell()  # this start's lines (the log is kept across restarts)
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
            said = lambda: self.log_path.read_bytes()[since:].decode(errors="replace")  # noqa: E731
            try:
                # "hub serving" is said once its socket is bound: the answer is this hub's
                if wait_healthy(self.proc, self.url, timeout, verify=self.verify, log=self.log_text,
                                ours=lambda: "tether: hub serving" in said()):
                    self.started = True
                    return self
            except RuntimeError:
                self.stop()
                if attempt == attempts or not port_taken(said()):
                    raise
                if not self.started:
                    self._pick_ports()
                time.sleep(0.2 * attempt)
                continue
            self.stop()
            raise RuntimeError(f"hub did not come up in {timeout}s:\n{self.log_text()}")
        raise AssertionError("unreachable")

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
