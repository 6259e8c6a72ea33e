"""Talk to a hub's job API: the scheduler's calls and a node's send/wait/sync.

A wait is a series of long-polls (each held by the hub up to 25 s); between
them, and across a hub restart or a dropped connection, the client asks again
until its own deadline, so the node's wait survives anything short of its
timeout. A sync carries the generation the hub gave it, so asking again never
arrives at the barrier twice.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from tether.hubclient.errors import HubError, TransportError
from tether.hubclient.hub import Hub, q
from tether.problems import EXIT_NO, TetherError

#: Answers that mean "ask again shortly": the hub restarts, or its database does, or the
#: replica holds its most waits (503 with Retry-After, setting job_max_waits).
RETRY_STATUSES = frozenset({502, 503, 504})
#: How long the hub holds one long-poll: within the client's 30 s socket timeout.
HOLD = 20.0


class WaitFailed(TetherError):
    """A wait cannot complete: ``nodes`` are the ones it needed and lost (exit 1)."""

    exit_code = EXIT_NO
    hint = "see `tether job status GROUP` (with the scheduler's token)"

    def __init__(self, reason: str, nodes: list[str]):
        super().__init__(reason)
        self.reason = reason
        self.nodes = nodes


class WaitTimeout(TetherError):
    """The caller's timeout passed first; ``awaited`` are the nodes still missing (exit 1)."""

    exit_code = EXIT_NO

    def __init__(self, what: str, awaited: list[str]):
        shown = ", ".join(awaited[:10]) + (f" and {len(awaited) - 10} more" if len(awaited) > 10 else "")
        super().__init__(f"timed out waiting for {what}" + (f"; still missing: {shown}" if awaited else ""))
        self.awaited = awaited


@dataclass(frozen=True)
class Me:
    group: str
    node: str
    role: str
    nodes: dict[str, str]  # node -> role, in the group's order


class JobClient:
    def __init__(self, hub: Hub):
        self.hub = hub
        self._me: Me | None = None

    # -- scheduler ------------------------------------------------------------------

    def create(self, name: str, space: str, *, roles: dict[str, int], nodes: dict[str, str], timeout: str | None,
               expires: str | None, essential: list[str], lost_after: str | None) -> dict[str, Any]:
        body = {"name": name, "space": space, "roles": roles, "nodes": nodes, "timeout": timeout,
                "expires": expires, "essential": essential, "lost_after": lost_after}
        return self.hub.post("/api/v1/jobs", json=body) or {}

    def status(self, group: str) -> dict[str, Any]:
        return self.hub.get(f"/api/v1/jobs/{q(group)}") or {}

    def list(self, space: str | None = None) -> list[dict[str, Any]]:
        return self.hub.get("/api/v1/jobs", params={"space": space} if space else None) or []  # type: ignore[return-value]

    def cancel(self, group: str, reason: str = "") -> dict[str, Any]:
        return self.hub.post(f"/api/v1/jobs/{q(group)}/cancel", json={"reason": reason}) or {}

    def mark(self, group: str, node: str, state: str, reason: str = "") -> dict[str, Any]:
        return self.hub.post(f"{self._node(group, node)}/state", json={"state": state, "reason": reason}) or {}

    # -- a node ------------------------------------------------------------------------

    def me(self) -> Me:
        """This token's group, node and role (``TETHER_JOB=GROUP/NODE`` saves nothing:
        the group's roles come from the hub either way)."""
        if self._me is None:
            r = self.hub.get("/api/v1/jobs/me") or {}
            self._me = Me(r["group"], r["node"], r["role"], dict(r.get("nodes", {})))
        return self._me

    def _node(self, group: str, node: str) -> str:
        return f"/api/v1/jobs/{q(group)}/nodes/{q(node)}"

    def send(self, msg_id: str, data: dict[str, str]) -> dict[str, Any]:
        me = self.me()
        return self.hub.post(f"{self._node(me.group, me.node)}/send", json={"id": msg_id, "data": data}) or {}

    def wait(self, kind: str, msg_id: str, role: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Wait until done; raise :class:`WaitFailed` or :class:`WaitTimeout`."""
        me = self.me()
        path = f"{self._node(me.group, me.node)}/wait"
        deadline = None if timeout is None else time.monotonic() + timeout
        generation: int | None = None
        call = secrets.token_hex(8)  # asking again after a lost answer is this same call
        awaited: list[str] = []
        pause = 0.1
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                what = {"any": f"{msg_id!r}", "all": f"all of {msg_id!r}", "sync": f"sync {msg_id!r}"}[kind]
                raise WaitTimeout(what + (f" from role {role!r}" if role else ""), awaited)
            hold = HOLD if left is None else min(HOLD, left)
            body = {"id": msg_id, "kind": kind, "role": role, "generation": generation, "timeout": hold}
            if kind == "sync":
                body["call"] = call
            try:
                r = self.hub.post(path, json=body) or {}
            except TransportError:
                time.sleep(pause)  # the hub restarts or the network blinked: ask again
                pause = min(pause * 2, 2.0)
                continue
            except HubError as exc:
                if exc.status not in RETRY_STATUSES:
                    raise
                # the hub restarts, or this replica holds its most waits: after the time it
                # asked for (Retry-After), else a growing pause, ask again
                delay = exc.retry_after if exc.retry_after is not None else pause
                time.sleep(delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.1
            generation = r.get("generation", generation)
            if r.get("state") == "done":
                return r
            if r.get("state") == "failed":
                raise WaitFailed(r.get("reason", "the wait failed"), r.get("nodes", []))
            awaited = r.get("awaited", [])


# -- LAVA's files -------------------------------------------------------------------------

CACHE = "/tmp/lava_multi_node_cache.txt"
NETWORK_CACHE = "/tmp/lava_multi_node_network_cache.txt"


def write_cache(path: str, lines: list[str]) -> None:
    """Replace LAVA's cache file with ``lines`` (none: no file, as LAVA leaves it)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    if lines:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
