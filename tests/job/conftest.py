"""Helpers for job tests: a scheduler (a user with admin on a fresh space) on a real hub."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from pathlib import Path

import httpx
import pytest

from tests.hubproc import HubProcess, unique


class Scheduler:
    def __init__(self, hub: HubProcess):
        self.hub = hub
        self.space = hub.make_space()
        self.user, self.token = hub.make_user(grants={self.space: "admin"})

    def client(self) -> httpx.Client:
        return self.hub.client(self.token)

    def create(self, roles=None, nodes=None, **kw) -> dict:
        name = kw.pop("name", None) or unique("g")
        body = {"name": name, "space": self.space, "roles": roles or {}, "nodes": nodes or {}, **kw}
        with self.client() as c:
            r = c.post("/api/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def scheduler(hub) -> Scheduler:
    return Scheduler(hub)


def node_client(hub: HubProcess, node: dict, timeout: float = 60) -> httpx.Client:
    return httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {node['token']}"}, timeout=timeout)


@contextlib.contextmanager
def open_files(n: int):
    """Let this process hold ``n`` more file descriptors (its soft RLIMIT_NOFILE raised
    for the block; a hub started earlier keeps its own limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 1024
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs {want} open files; this machine's hard RLIMIT_NOFILE is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def rss_mib(pid: int) -> float:
    """A process's resident memory (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, timeout: float = 20) -> None:
    """Until the process has used under 5% of a CPU for half a second (it finished taking
    in what the test sent it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        used = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - used < 0.025:
            return
    raise AssertionError(f"process {pid} still busy after {timeout} s")
