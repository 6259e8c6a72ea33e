"""Helpers for job tests: a scheduler (a user with admin on a fresh space) on a real hub."""

from __future__ import annotations

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
