"""Push, pull and sync a local log with a remote, over the hub's HTTP API.

A sync is: reconcile (range-based set reconciliation, :mod:`tether.log.reconcile`)
to learn which ids each side lacks, then push the records the hub lacks in
batches and pull the ones we lack in batches. Every batch is one transaction on
its side and records are immutable, so a sync interrupted at any point loses
nothing and, run again, reconciles afresh and sends only what is still missing;
an identical record arriving twice is a no-op, never a duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from tether.clientconfig import ConfigError, is_loopback_url
from tether.log.reconcile import Reconciler
from tether.log.store import LogStore, Record, record_from_wire, record_to_wire

__all__ = ["Remote", "SyncResult", "HttpRemote", "NotImplementedTransport", "parse_remote_url", "sync"]

#: Our replies are cut at this size so that they fit the hub's request limit
#: (1 MiB by default) with one range's worth of output on top.
CLIENT_FRAME_LIMIT = 256 * 1024
PUSH_BATCH_BYTES = 512 * 1024
PUSH_BATCH_RECORDS = 500
PULL_BATCH_IDS = 500
MAX_ROUNDS = 10_000


class NotImplementedTransport(Exception):
    """The remote's transport is not available yet (ssh://)."""


@dataclass(frozen=True)
class Remote:
    """A parsed remote URL: ``http(s)://hub[/prefix]/SPACE`` or ``ssh://user@host[:port]/SPACE``."""

    url: str
    scheme: str  # http | https | ssh
    hub: str  # http(s): the hub's base URL; ssh: user@host[:port]
    space: str


def parse_remote_url(url: str) -> Remote:
    """Validate a remote URL; :class:`ConfigError` says what is wrong."""
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ssh"):
        raise ConfigError(f"unsupported remote URL {url!r}",
                          hint="use https://HUB/SPACE, http://127.0.0.1:PORT/SPACE or ssh://USER@HOST[:PORT]/SPACE")
    if not parts.hostname:
        raise ConfigError(f"remote URL has no host: {url}")
    if parts.query or parts.fragment:
        raise ConfigError(f"remote URL must not have a query or fragment: {url}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in remote URL: {url}") from None
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ConfigError(f"remote URL names no space: {url}", hint="end the URL with /SPACE")
    space = segments[-1]
    if scheme == "ssh":
        if len(segments) != 1:
            raise ConfigError(f"an ssh:// remote is ssh://USER@HOST[:PORT]/SPACE, got {url}")
        if parts.password:
            raise ConfigError("ssh:// remotes must not carry a password; SSH keys authenticate")
        user = f"{parts.username}@" if parts.username else ""
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return Remote(url, scheme, f"{user}{host}" + (f":{port}" if port else ""), space)
    if parts.username or parts.password:
        raise ConfigError("remote URLs must not carry credentials; pass the token with --token or TETHER_TOKEN")
    if scheme == "http" and not is_loopback_url(url):
        raise ConfigError(f"plain http:// is allowed only to loopback, not {parts.hostname}",
                          hint="use https:// (tokens must not cross the network in clear text)")
    prefix = "/".join(segments[:-1])
    hub = f"{scheme}://{parts.netloc}" + (f"/{prefix}" if prefix else "")
    return Remote(url, scheme, hub, space)


@dataclass
class SyncResult:
    pushed: int = 0  # records the remote did not have and stored
    pulled: int = 0  # records we did not have and stored
    rounds: int = 0  # reconciliation round trips
    bytes: int = 0  # bytes of request and response bodies, both ways

    def to_dict(self) -> dict[str, int]:
        return {"pushed": self.pushed, "pulled": self.pulled, "rounds": self.rounds, "bytes": self.bytes}


class HttpRemote:
    """The hub's log endpoints for one space."""

    def __init__(self, remote: Remote, token: str | None, ca_bundle: str | None = None, timeout: float = 60):
        from tether.client import HubClient

        self.remote = remote
        self.client = HubClient(remote.hub, token, ca_bundle, timeout)
        self.base = f"/api/v1/log/{quote(remote.space, safe='')}"
        self.bytes = 0

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reconcile(self, message: bytes) -> bytes | None:
        from tether.client import HubError, _problem_from

        http = self.client._http
        try:
            resp = http.post(self.base + "/reconcile", content=message,
                             headers={"Content-Type": "application/octet-stream",
                                      "Accept": "application/octet-stream, application/problem+json"})
        except Exception as exc:
            import httpx

            if isinstance(exc, httpx.TransportError):
                raise self.client._transport_error(exc, self.client.hub_url + self.base) from None
            raise
        self.bytes += len(message) + len(resp.content)
        if not resp.is_success:
            raise HubError(resp.status_code, _problem_from(resp))
        return resp.content or None

    def push(self, records: list[Record]) -> int:
        body = json.dumps([record_to_wire(r) for r in records], ensure_ascii=False).encode()
        out = self.client.post(self.base + "/records", content=body, headers={"Content-Type": "application/json"})
        self.bytes += len(body) + len(json.dumps(out))
        return int(out["new"])  # type: ignore[index]

    def get(self, ids: list[str]) -> list[Record]:
        body = json.dumps({"ids": ids}).encode()
        out = self.client.post(self.base + "/records/get", content=body, headers={"Content-Type": "application/json"})
        self.bytes += len(body) + len(json.dumps(out, ensure_ascii=False).encode())
        return [record_from_wire(d) for d in out["records"]]  # type: ignore[index]


def _push_batches(records: list[Record]) -> list[list[Record]]:
    batches: list[list[Record]] = []
    cur: list[Record] = []
    size = 0
    for r in records:
        n = len(json.dumps(record_to_wire(r), ensure_ascii=False).encode()) + 2
        if cur and (size + n > PUSH_BATCH_BYTES or len(cur) >= PUSH_BATCH_RECORDS):
            batches.append(cur)
            cur, size = [], 0
        cur.append(r)
        size += n
    if cur:
        batches.append(cur)
    return batches


def sync(store: LogStore, remote: HttpRemote, *, push: bool = True, pull: bool = True,
         on_batch: Callable[[str, int], None] | None = None) -> SyncResult:
    """Reconcile ``store`` with ``remote``, then pull and/or push what differs.

    ``on_batch(direction, n)`` is called after each batch is stored (for progress
    reporting, and for tests that interrupt a sync half way).
    """
    result = SyncResult()
    rec = Reconciler(store.range_storage(), frame_limit=CLIENT_FRAME_LIMIT)
    msg: bytes | None = rec.initiate()
    while msg is not None:
        if result.rounds >= MAX_ROUNDS:
            raise RuntimeError("reconciliation did not finish; the remote may be misbehaving")
        reply = remote.reconcile(msg)
        result.rounds += 1
        if reply is None:
            break
        msg = rec.reconcile(reply).reply

    if pull and rec.need:
        import uuid

        need = sorted(rec.need)
        for k in range(0, len(need), PULL_BATCH_IDS):
            ids = [str(uuid.UUID(bytes=i)) for i in need[k : k + PULL_BATCH_IDS]]
            records = remote.get(ids)
            wanted = set(ids)
            records = [r for r in records if r.id in wanted]  # take only what we asked for
            result.pulled += store.insert_many(records)
            if on_batch:
                on_batch("pull", len(records))
    if push and rec.have:
        records = store.get_many(rec.have)
        for batch in _push_batches(records):
            result.pushed += remote.push(batch)
            if on_batch:
                on_batch("push", len(batch))
    result.bytes = remote.bytes
    return result


def open_remote(remote: Remote, token: str | None = None, ca_bundle: str | None = None) -> HttpRemote:
    """Connect to a remote; the token comes from ``token``, TETHER_TOKEN or the
    login config (only when it was saved for this remote's hub)."""
    if remote.scheme == "ssh":
        raise NotImplementedTransport(
            f"push/pull over ssh:// is not implemented yet (remote {remote.url})"
        )
    from tether.clientconfig import resolve

    cfg = resolve(hub=remote.hub, token=token, ca_bundle=ca_bundle)
    return HttpRemote(remote, cfg.token, cfg.ca_bundle)


def records_to_json(records: list[Record]) -> list[dict[str, Any]]:
    return [record_to_wire(r) for r in records]
