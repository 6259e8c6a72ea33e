"""Prometheus metrics, on a registry of the app's own (several apps may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tether_http_requests", "HTTP requests served", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "tether_http_request_seconds", "Time to serve an HTTP request", ["method", "route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.auth_refusals = Counter(
            "tether_auth_refusals", "Requests refused by authentication or authorization", ["reason"],
            registry=self.registry,
        )
        self.uploads = Gauge("tether_uploads_in_progress", "Uploads whose bodies are being received or stored",
                             registry=self.registry)  # its value: set_function by the app
        self.job_waits = Gauge("tether_job_waits_held", "Job waits (long-polls) this replica holds "
                               "(at most the setting job_max_waits)", registry=self.registry)  # set_function by job

        # the gateway (forwarded apps): per route, "USER/NAME"
        self.gateway_requests = Counter(
            "tether_gateway_requests", "Requests the gateway answered, by route and status", ["route", "status"],
            registry=self.registry,
        )
        self.gateway_bytes = Counter(
            "tether_gateway_bytes", "Bytes through the gateway, by route and direction (up: to the app)",
            ["route", "direction"], registry=self.registry,
        )
        self.gateway_connections = Gauge(
            "tether_gateway_open_connections", "Browser connections open on the gateway", registry=self.registry,
        )

        # (method, route, status) -> its counter and histogram: a dictionary hit per request
        # rather than prometheus_client's label lookups (a route is a template, so few keys)
        self._children: dict[tuple[str, str, int], tuple] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.requests.labels(method, route, str(status)),
                                           self.latency.labels(method, route))
        child[0].inc()
        child[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
