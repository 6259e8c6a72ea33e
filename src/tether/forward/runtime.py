"""What one hub replica holds for forward: the SSH connections of its live routes,
the bytes that passed since the last flush, and how to reach the gateway.

The routes themselves are rows (:mod:`tether.forward.service`); a replica only keeps
what cannot be a row, the node's SSH connection, and says on the row that it holds it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether.forward.service import ForwardService, Route
from tether.gateway.core import GatewayAddress  # noqa: F401 - forward's API imports it from here
from tether.units import parse_duration

log = logging.getLogger("tether.forward")

@dataclass
class LiveRoute:
    route: Route
    opener: Callable[[Callable[[], Any]], Any]  # one channel to the app's socket, its data to a session from the factory
    close: Callable[[str], None]  # drop the node's SSH connection, saying why (its client stops the app)


class ForwardRuntime:
    def __init__(self, settings: Any, db: Any, metrics: Any = None):
        self.settings = settings
        self.metrics = metrics  # tether.hub.metrics.Metrics, or None
        self.service = ForwardService(settings, db)
        self.address = GatewayAddress(settings)
        # where the other replicas reach this one's gateway; on the rows of the routes it holds
        self.internal = settings.gateway_internal or settings.gateway_listen or ""
        self.holder = f"{self.internal}#{secrets.token_hex(4)}"
        self.live: dict[tuple[str, str], LiveRoute] = {}
        self._counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        self._open: dict[int, int] = defaultdict(int)  # connections open to the app, per route id
        self._open_saved: dict[int, int] = {}
        idle = settings.forward_idle
        self.hub_idle = parse_duration(idle) if idle else None
        self.reconnect_grace = parse_duration(settings.forward_reconnect_grace)

    def counter(self, route: Route) -> Callable[[int, int], None]:
        """Counts the bytes that pass (saved as the route's activity, and as metrics)."""
        label = f"{route.owner}/{route.name}"
        up_metric = self.metrics.gateway_bytes.labels(label, "up") if self.metrics else None
        down_metric = self.metrics.gateway_bytes.labels(label, "down") if self.metrics else None

        def count(up: int, down: int) -> None:
            c = self._counts[route.id]
            c[0] += up
            c[1] += down
            if up_metric is not None:
                up_metric.inc(up)
                down_metric.inc(down)

        return count

    def connection_opened(self, route_id: int) -> Callable[[], None]:
        """Count a connection open to the route's app; call what it returns when it closes."""
        self._open[route_id] += 1

        def closed() -> None:
            self._open[route_id] -= 1

        return closed

    def status_counter(self, route: Route) -> Callable[[int], None]:
        label = f"{route.owner}/{route.name}"
        metrics = self.metrics
        return (lambda status: metrics.gateway_requests.labels(label, str(status)).inc()) if metrics else (
            lambda status: None)

    async def run(self) -> None:
        """Flush activity to the database and reap idle routes, until cancelled."""
        if self.internal:  # after a restart: what the previous run held waits for its nodes
            await asyncio.to_thread(self.service.orphans_to_reconnecting, self.internal, self.holder)
        while True:
            await asyncio.sleep(self.settings.forward_sweep_seconds)
            try:
                await self.flush()
                await self.reap()
            except Exception:  # noqa: BLE001 - keep serving; say so
                log.exception("forward: flushing activity or reaping failed; will retry")

    async def flush(self) -> None:
        counts, self._counts = self._counts, defaultdict(lambda: [0, 0])
        opened = {i: n for i, n in self._open.items() if self._open_saved.get(i) != n}  # only what changed
        if counts or opened:
            await asyncio.to_thread(self.service.touch, {k: (v[0], v[1]) for k, v in counts.items()},
                                    open_connections=opened)
            self._open_saved.update(opened)

    async def reap(self) -> None:
        """End idle routes, routes whose node did not come back, and drop the connections
        of routes stopped elsewhere (by any replica's API)."""
        for route in await asyncio.to_thread(self.service.idle_routes, hub_idle=self.hub_idle):
            log.info("forward: route %s of %s idle; ending it", route.name, route.owner)
            await asyncio.to_thread(self.service.close, route, "idle")
        await asyncio.to_thread(self.service.expire_reconnecting, self.reconnect_grace)
        held = list(self.live.items())
        states = await asyncio.to_thread(self.service.states, [h.route.id for _, h in held])
        for key, h in held:
            state, token, why = states.get(h.route.id, ("closed", None, None))
            if state == "closed" or token != h.route.token_id:
                self.end(key, f"route ended: {why or 'replaced'}")

    def end(self, key: tuple[str, str], reason: str) -> None:
        """Drop the node's connection: its `tether forward` hears why and stops the app."""
        h = self.live.pop(key, None)
        if h is not None:
            h.close(reason)
