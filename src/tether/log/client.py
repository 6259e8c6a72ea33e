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
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from tether.hubclient.config import is_loopback_url
from tether.problems import ConfigError
from tether.log.iblt import DriftReconciler
from tether.log.reconcile import Reconciler, SortedIds
from tether.log.store import LogStore, Record, RecordError, record_from_wire, record_to_wire

__all__ = [
    "HttpRemote",
    "NotImplementedTransport",
    "Remote",
    "SshRemote",
    "SshRemoteError",
    "SyncResult",
    "parse_remote_url",
    "ssh_argv",
    "sync",
]

#: Our replies are cut at this size so that they fit the hub's limit for a
#: reconcile message (4 MiB) with one range's worth of output on top. Larger
#: frames mean fewer rounds when differences are many (100,000 differences in a
#: million records: 24 rounds at 1 MiB, 92 at 256 KiB).
CLIENT_FRAME_LIMIT = 1024 * 1024
#: Largest reply the client asks for in protocol 3 (an IBLT of 500,000 cells, or a
#: page of 700,000 ids of the hub's list); larger ones come in parts.
CLIENT_MAX_REPLY = 16 << 20
PUSH_BATCH_BYTES = 512 * 1024
PUSH_BATCH_RECORDS = 2000  # the hub takes at most 2000 per push; 512 KiB usually comes first
PULL_BATCH_IDS = 1000  # the hub answers at most 1000 ids per pull, in replies of ~4 MiB
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
class Reconciled:
    """What a reconciliation learned: ids to push, ids to pull, ids in conflict."""

    have: set[bytes]
    need: set[bytes]
    conflicts: set[bytes]
    rounds: int
    method: str  # equal | iblt | list (protocol 3) or ranges (protocol 2)


def _old_peer(exc: Exception) -> bool:
    """The remote refused a version-3 message as an unknown version: a hub from
    before protocol 3, which speaks version 2 only."""
    status = getattr(exc, "status", 0)
    return status == 400 and "unsupported protocol version" in str(exc)


def reconcile(items: SortedIds, remote: HttpRemote | SshRemote, protocol: str = "auto") -> Reconciled:
    """Learn what differs between ``items`` and the remote's log.

    ``protocol``: ``auto`` (version 3, :mod:`tether.log.iblt`, falling back to
    version 2 when the remote refuses it as an unknown version), ``drift``
    (version 3 only) or ``ranges`` (version 2 only, :mod:`tether.log.reconcile`).
    """
    from tether.hubclient.errors import HubError

    if protocol not in ("auto", "drift", "ranges"):
        raise ValueError(f"unknown protocol {protocol!r}")
    if protocol != "ranges":
        import secrets

        drift = DriftReconciler(items, secrets.token_bytes(16), max_reply=CLIENT_MAX_REPLY)
        msg: bytes | None = drift.initiate()
        try:
            reply = remote.reconcile(msg)
        except (HubError, SshRemoteError) as exc:
            if protocol == "drift" or not _old_peer(exc):
                raise
        else:
            msg = drift.receive(reply)
            while msg is not None:
                if drift.rounds >= MAX_ROUNDS:
                    raise RuntimeError("reconciliation did not finish; the remote may be misbehaving")
                msg = drift.receive(remote.reconcile(msg))
            return Reconciled(drift.have, drift.need, drift.conflicts, drift.rounds, drift.method)
    rec = Reconciler(items, frame_limit=CLIENT_FRAME_LIMIT)
    msg = rec.initiate()
    rounds = 0
    while msg is not None:
        if rounds >= MAX_ROUNDS:
            raise RuntimeError("reconciliation did not finish; the remote may be misbehaving")
        reply = remote.reconcile(msg)
        rounds += 1
        if reply is None:
            break
        msg = rec.reconcile(reply).reply
    return Reconciled(rec.have, rec.need, rec.conflicts, rounds, "ranges")


@dataclass
class SyncResult:
    pushed: int = 0  # records the remote did not have and stored
    pulled: int = 0  # records we did not have and stored
    rounds: int = 0  # reconciliation round trips
    method: str = ""  # how the logs were compared (Reconciled.method)
    bytes: int = 0  # bytes of request and response bodies, both ways
    # ids both sides hold with different contents (UUID text): neither copy moves
    conflicts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"pushed": self.pushed, "pulled": self.pulled, "rounds": self.rounds, "method": self.method,
                "bytes": self.bytes, "conflicts": self.conflicts}


class HttpRemote:
    """The hub's log endpoints for one space."""

    def __init__(self, remote: Remote, token: str | None, ca_bundle: str | None = None, timeout: float = 60):
        from tether.hubclient.hub import Hub

        self.remote = remote
        self.client = Hub(remote.hub, token, ca_bundle, timeout)
        self.base = f"/api/v1/log/{quote(remote.space, safe='')}"
        self.bytes = 0
        # One request at a time on the connection: sync() pushes from one thread
        # while it pulls from another.
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reconcile(self, message: bytes) -> bytes | None:
        from tether.hubclient.errors import HubError, problem_from

        with self._lock:
            resp = self.client.send("POST", self.base + "/reconcile", content=message,
                                    headers={"Content-Type": "application/octet-stream",
                                             "Accept": "application/octet-stream, application/problem+json"})
            self.bytes += len(message) + len(resp.content)
        if not resp.is_success:
            raise HubError(resp.status_code, problem_from(resp))
        return resp.content or None

    def push(self, records: list[Record]) -> int:
        body = json.dumps([record_to_wire(r) for r in records], ensure_ascii=False).encode()
        with self._lock:
            out = self.client.post(self.base + "/records", content=body, headers={"Content-Type": "application/json"})
            self.bytes += len(body) + len(json.dumps(out))
        return int(out["new"])  # type: ignore[index]

    def get(self, ids: list[str]) -> tuple[list[Record], list[str]]:
        """The records with these ids, and the ids the hub has but left for another request."""
        body = json.dumps({"ids": ids}).encode()
        with self._lock:
            out = self.client.post(self.base + "/records/get", content=body, headers={"Content-Type": "application/json"})
            self.bytes += len(body) + len(json.dumps(out, ensure_ascii=False).encode())
        return _pulled(out)


def _pulled(out: Any) -> tuple[list[Record], list[str]]:
    more = out.get("more", []) if isinstance(out, dict) else []
    if not isinstance(more, list) or not all(isinstance(i, str) for i in more):
        raise RecordError("the remote's reply lists 'more' ids in a wrong shape")
    return [record_from_wire(d) for d in out["records"]], more


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


def _pull(store: LogStore, remote: HttpRemote | SshRemote, need: set[bytes],
          on_batch: Callable[[str, int], None] | None, stop: Callable[[], bool] = lambda: False,
          meanwhile: Callable[[], None] | None = None) -> int:
    """Fetch and store the records with these ids, in batches; the next batch is
    asked for (in a thread) while this one is being stored, so the hub's work and
    ours overlap. A batch is stored, then reported, in order. ``meanwhile`` runs
    here once the first request is on its way; ``stop`` ends the pull early."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    queue = [str(uuid.UUID(bytes=i)) for i in sorted(need)]
    pulled = 0

    def ask() -> Any:
        nonlocal queue
        ids, queue = queue[:PULL_BATCH_IDS], queue[PULL_BATCH_IDS:]
        return pool.submit(lambda: (ids, remote.get(ids))) if ids else None

    with ThreadPoolExecutor(1, thread_name_prefix="tether-pull") as pool:
        fut = ask()
        if meanwhile is not None:
            meanwhile()
        while fut is not None and not stop():
            ids, (records, more) = fut.result()
            wanted = set(ids)
            records = [r for r in records if r.id in wanted]  # take only what we asked for
            more = [i for i in more if i in wanted]
            if more and not records:
                raise RuntimeError("the remote sent no record and asked to be asked again; giving up")
            queue = more + queue  # the hub kept its reply small: ask again for the rest
            fut = ask()
            pulled += store.insert_many(records)
            if on_batch:
                on_batch("pull", len(records))
    return pulled


def sync(store: LogStore, remote: HttpRemote | SshRemote, *, push: bool = True, pull: bool = True,
         on_batch: Callable[[str, int], None] | None = None, protocol: str = "auto") -> SyncResult:
    """Reconcile ``store`` with ``remote``, then pull and/or push what differs.

    ``on_batch(direction, n)`` is called after each batch is stored (for progress
    reporting, and for tests that interrupt a sync half way). ``protocol`` is
    :func:`reconcile`'s.
    """
    result = SyncResult()
    rec = reconcile(store.range_storage(), remote, protocol)
    result.rounds, result.method = rec.rounds, rec.method

    # Pushing runs in a thread beside the pull, so the remote always has the next
    # request while this side stores what it pulled or encodes what it sends. The
    # records to push are read in this thread (the store's connection stays here),
    # once the first pull request is on its way.
    stop = threading.Event()
    pushing: list[Any] = []  # the push thread's future, once started

    def push_all(batches: list[list[Record]]) -> int:
        pushed = 0
        for batch in batches:
            if stop.is_set():
                break
            pushed += remote.push(batch)
            if on_batch:
                on_batch("push", len(batch))
        return pushed

    def start_push() -> None:
        if push and rec.have:
            pushing.append(pool.submit(push_all, _push_batches(store.get_many(rec.have))))

    def push_failed() -> bool:
        return bool(pushing) and pushing[0].done() and pushing[0].exception() is not None

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="tether-push") as pool:
        try:
            if pull and rec.need:
                result.pulled = _pull(store, remote, rec.need, on_batch, stop=push_failed, meanwhile=start_push)
            else:
                start_push()
        except BaseException:
            stop.set()
            raise
        if pushing:
            result.pushed = pushing[0].result()
    result.bytes = remote.bytes
    if rec.conflicts:
        import uuid

        result.conflicts = [str(uuid.UUID(bytes=i)) for i in sorted(rec.conflicts)]
    return result


# ---------------------------------------------------------------- SSH transport

#: Largest reply frame the client accepts (a pull batch of 500 records of up to
#: the hub's body limit fits; nothing larger is ever buffered).
CLIENT_MAX_FRAME = 64 << 20
DEFAULT_SSH_TIMEOUT = 120.0
_SSH_MODES = {(True, True): "sync", (True, False): "push", (False, True): "pull"}


class SshRemoteError(Exception):
    """The SSH remote refused a request (``status`` as in HTTP) or the channel broke (status 0)."""

    def __init__(self, message: str, status: int = 0, problem: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


def ssh_argv(remote: Remote, mode: str, prefix: list[str] | None = None) -> list[str]:
    """The ``ssh`` argv for an ``ssh://`` remote: the user's OpenSSH (so ~/.ssh/config,
    the agent and known_hosts apply; host keys are verified as configured, never
    auto-accepted), no tty, no forwarding, then ``tether-log MODE SPACE``.

    ``prefix`` (default: ``$TETHER_SSH`` split like a shell would, else ``ssh``)
    is the command that starts ssh, e.g. ``ssh -i ~/.ssh/hub_key``.
    """
    import os
    import re
    import shlex

    parts = urlsplit(remote.url)
    if prefix is None:
        env = os.environ.get("TETHER_SSH", "").strip()
        prefix = shlex.split(env) if env else ["ssh"]
    if not prefix:
        raise ConfigError("TETHER_SSH is empty", hint="unset it, or set it to an ssh command such as `ssh -i KEY`")
    joined = " ".join(prefix).lower().replace(" ", "")
    if re.search(r"stricthostkeychecking[=]?(no|off)", joined):
        raise ConfigError("refusing to run ssh with StrictHostKeyChecking=no: host keys must be verified",
                          hint="add the hub's host key to ~/.ssh/known_hosts (ssh-keyscan, then check its fingerprint)")
    host = parts.hostname or ""
    user = parts.username or ""
    if host.startswith("-") or user.startswith("-") or any(c.isspace() for c in host + user):
        raise ConfigError(f"refusing the suspicious ssh:// remote {remote.url!r}")
    from tether.units import NAME_RE

    if not NAME_RE.match(remote.space):
        raise ConfigError(f"invalid space name {remote.space!r} in {remote.url}")
    argv = [*prefix, "-T", "-x", "-a", "-o", "ClearAllForwardings=yes"]
    if parts.port:
        argv += ["-p", str(parts.port)]
    if user:
        argv += ["-l", user]
    return [*argv, "--", host, f"tether-log {mode} {remote.space}"]


class SshRemote:
    """One space on a hub reached over SSH: the same operations as :class:`HttpRemote`,
    as frames (:mod:`tether.ssh.frames`) over the stdin/stdout of the user's ``ssh``."""

    def __init__(self, remote: Remote, mode: str = "sync", *, timeout: float | None = None,
                 prefix: list[str] | None = None):
        import os
        import subprocess
        import tempfile

        from tether.log.ssh import PROTOCOL, REPLY_TYPES
        from tether.ssh.frames import FrameReader

        self.remote = remote
        self.mode = mode
        if timeout is None:
            try:
                timeout = float(os.environ.get("TETHER_SSH_TIMEOUT", DEFAULT_SSH_TIMEOUT))
            except ValueError:
                raise ConfigError("TETHER_SSH_TIMEOUT must be a number of seconds") from None
        self.timeout = timeout
        self.bytes = 0
        self._sent = 0
        self._lock = threading.Lock()  # one request and its reply at a time (see HttpRemote)
        self.argv = ssh_argv(remote, mode, prefix)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, bufsize=0)
        except FileNotFoundError:
            self._stderr.close()
            raise SshRemoteError(f"cannot run {self.argv[0]!r}: not found (install OpenSSH's client, "
                                 "or point TETHER_SSH at it)") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        os.set_blocking(self.proc.stdin.fileno(), False)
        self.reader = FrameReader(self.proc.stdout.fileno(), REPLY_TYPES, CLIENT_MAX_FRAME, timeout)
        try:
            hello = self._read("H")
            info = json.loads(hello)
            if info.get("protocol") != PROTOCOL:
                raise SshRemoteError(f"the remote speaks {info.get('protocol')!r}, not {PROTOCOL}")
        except BaseException:
            self.close()
            raise

    def _ssh_stderr(self) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read(8192).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return "\n".join(line for line in text.strip().splitlines() if line.strip())

    def _broken(self, what: str) -> SshRemoteError:
        try:
            code = self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort, for the message only
            code = None
        err = self._ssh_stderr()
        msg = f"ssh to {self.remote.hub} failed: {what}"
        if code is not None:
            msg += f" (ssh exited {code})"
        if err:
            msg += f": {err}"
        elif code == 127:
            msg += ": the account has no tether forced command (is its authorized_keys made by `tether key authorized-keys`?)"
        return SshRemoteError(msg)

    def _read(self, expect: str) -> bytes:
        from tether.ssh.frames import FrameError, FrameTimeout

        try:
            frame = self.reader.read()
        except FrameTimeout:
            raise SshRemoteError(f"ssh to {self.remote.hub}: no answer in {self.timeout:g} s") from None
        except FrameError as exc:
            raise self._broken(f"garbled reply ({exc})") from None
        self.bytes = self.reader.bytes + self._sent
        if frame is None:
            raise self._broken("the connection closed")
        if frame.type == "E":
            try:
                problem = json.loads(frame.payload)
            except ValueError:
                problem = {"detail": frame.payload[:500].decode("utf-8", "replace")}
            status = int(problem.get("status") or 500) if isinstance(problem, dict) else 500
            detail = problem.get("detail") if isinstance(problem, dict) else None
            raise SshRemoteError(str(detail or "the remote refused the request"), status, problem)
        if frame.type != expect:
            raise SshRemoteError(f"protocol error: expected a {expect!r} frame, got {frame.type!r}")
        return frame.payload

    def _request(self, ftype: str, payload: bytes, expect: str) -> bytes:
        from tether.ssh.frames import encode

        data = encode(ftype, payload)
        with self._lock:
            return self._exchange(data, expect)

    def _exchange(self, data: bytes, expect: str) -> bytes:
        from tether.ssh.frames import FrameTimeout, write_all

        try:
            write_all(self.proc.stdin.fileno(), data, timeout=self.timeout)  # type: ignore[union-attr]
        except FrameTimeout:
            raise SshRemoteError(f"ssh to {self.remote.hub}: the remote stopped reading") from None
        except (BrokenPipeError, OSError):
            raise self._broken("the connection closed") from None
        self._sent += len(data)
        return self._read(expect)

    def reconcile(self, message: bytes) -> bytes | None:
        return self._request("R", message, "r") or None

    def push(self, records: list[Record]) -> int:
        body = json.dumps([record_to_wire(r) for r in records], ensure_ascii=False).encode()
        out = json.loads(self._request("P", body, "p"))
        return int(out["new"])

    def get(self, ids: list[str]) -> tuple[list[Record], list[str]]:
        return _pulled(json.loads(self._request("G", json.dumps({"ids": ids}).encode(), "g")))

    def close(self) -> None:
        import os
        import subprocess

        from tether.ssh.frames import encode

        proc = getattr(self, "proc", None)
        if proc is not None:
            try:
                if proc.poll() is None and proc.stdin is not None:
                    try:
                        os.write(proc.stdin.fileno(), encode("Q"))
                    except OSError:
                        pass
                    proc.stdin.close()
                proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> SshRemote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_remote(remote: Remote, token: str | None = None, ca_bundle: str | None = None, *,
                mode: str = "sync") -> HttpRemote | SshRemote:
    """Connect to a remote; the token comes from ``token``, TETHER_TOKEN or the
    login config (only when it was saved for this remote's hub). For ``ssh://``
    remotes ``mode`` (pull, push or sync) is what the session may do."""
    if remote.scheme == "ssh":
        return SshRemote(remote, mode)
    from tether.hubclient.config import resolve

    cfg = resolve(hub=remote.hub, token=token, ca_bundle=ca_bundle)
    return HttpRemote(remote, cfg.token, cfg.ca_bundle)


def records_to_json(records: list[Record]) -> list[dict[str, Any]]:
    return [record_to_wire(r) for r in records]
