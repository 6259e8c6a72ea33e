"""Fixtures for the sandbox tests: real bubblewrap, cgroups, namespaces and nftables, as root.

Everything the tests make on the OS is named with the prefix ``tag`` (this branch's, and
then a letter per pytest-xdist worker), and removed at teardown even when a test fails.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import time
from pathlib import Path

import pytest

from tether.apps import netpolicy
from tether.apps.sandbox import Limits, SandboxSpec, Sandboxes

# Each pytest-xdist worker its own names (`make test` runs two): "taga", "tagb"... here;
# tests/apps/hubs.py's hubs use "tag0", "tag1"...
WORKER = int((os.environ.get("PYTEST_XDIST_WORKER") or "gw0").removeprefix("gw") or 0) % 10
# TETHER_TEST_APPS_TAG: another 3-letter start, for two checkouts testing on one machine at once
TAG = os.environ.get("TETHER_TEST_APPS_TAG", "tag")
PREFIX = TAG + "abcdefghij"[WORKER]
_uids = itertools.count(61000 + (os.getpid() % 500) * 20)


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.02)


@pytest.fixture
def sandboxes(tmp_path):
    sb = Sandboxes(tmp_path / "state", prefix=PREFIX)
    why = sb.available()
    if why:
        pytest.fail(f"sandboxes cannot run here: {why} (run `make test` as root; it installs bubblewrap and nftables)")
    made: list[str] = []
    sb.test_made = made  # instances a test started, removed below even if the test failed
    yield sb
    for inst in set(made) | set(sb.present()):
        sb.remove(inst)


@pytest.fixture
def make_spec(tmp_path, sandboxes):
    """make_spec(instance, argv, **overrides) -> SandboxSpec with its own dirs and uid."""

    def make(instance: str, argv, files: dict[str, str] | None = None, **kw) -> SandboxSpec:
        app = tmp_path / "apps" / instance
        app.mkdir(parents=True, exist_ok=True)
        for name, text in (files or {}).items():
            (app / name).write_text(text)
        uid = next(_uids)
        sandboxes.test_made.append(instance)
        defaults = dict(
            instance=instance, app_dir=app, data_dir=tmp_path / "data" / instance,
            run_dir=tmp_path / "run" / instance, argv=tuple(argv), env={}, uid=uid, gid=uid,
            limits=Limits(memory_bytes=128 << 20, cpu=0.5, pids=64),
        )
        defaults.update(kw)
        return SandboxSpec(**defaults)

    return make


def run_to_end(sandboxes: Sandboxes, spec: SandboxSpec, timeout: float = 20.0):
    """Start spec, wait until it exits; its status."""
    sandboxes.start(spec)
    return wait_until(lambda: (s := sandboxes.status(spec.instance)) and not s.running and s, timeout,
                      f"{spec.instance} to exit")


def probe(sandboxes: Sandboxes, make_spec, instance: str, code: str, **kw) -> dict:
    """Run a Python probe in a sandbox; it writes a JSON dict to /data/out.json."""
    spec = make_spec(instance, ["python3", "-c", code], **kw)
    st = run_to_end(sandboxes, spec)
    out = spec.data_dir / "out.json"
    assert out.exists(), f"probe wrote nothing (exit {st.exit_code}): {sandboxes.log_path(instance).read_text()}"
    return json.loads(out.read_text())


def leftovers(sandboxes: Sandboxes, instance: str = "") -> list[str]:
    """Every OS object whose name carries the prefix (and instance): cgroups, netns,
    interfaces, nftables objects."""
    name = f"{sandboxes.prefix}-{instance}"
    found = [f"cgroup {n}" for n in sandboxes.layout.names(name)]
    netns = Path("/run/netns")
    if netns.is_dir():
        found += [f"netns {p.name}" for p in netns.iterdir() if p.name.startswith(name)]
    found += [f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith(name)]
    found += [f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if f"/{name}" in line.split()[4]]
    if not instance and netpolicy.has_table(sandboxes.table):
        found.append(f"nft table inet {sandboxes.table}")
    return found


AGENT = (Path(__file__).parent / "agent.py").read_text()


def connect_unix(path: Path, timeout: float = 10.0):
    """A connected UNIX socket to ``path``, once the app has bound it and listens."""
    import socket

    def connect():
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(path))
            return s
        except OSError:  # not bound yet, or bound and not listening yet
            s.close()
            return None

    return wait_until(connect, timeout, what=f"an app listening on {path}")


class Agent:
    """Drives tests/apps/agent.py running in a sandbox, over its socket."""

    def __init__(self, sock: Path):
        self.sock = connect_unix(sock)
        self.file = self.sock.makefile("rwb")

    def __call__(self, **cmd) -> dict:
        self.file.write(json.dumps(cmd).encode() + b"\n")
        self.file.flush()
        return json.loads(self.file.readline())

    def close(self):
        self.file.close()
        self.sock.close()


@pytest.fixture
def start_agent(sandboxes, make_spec):
    """start_agent(instance, **spec overrides) -> (spec, Agent) for a running agent app."""
    agents: list[Agent] = []

    def start(instance: str, **kw):
        spec = make_spec(instance, ["python3", "agent.py"], files={"agent.py": AGENT}, **kw)
        sandboxes.start(spec)
        agent = Agent(spec.run_dir / "app.sock")
        agents.append(agent)
        return spec, agent

    yield start
    for a in agents:
        a.close()


def ns_addresses(ns: str) -> list[str]:
    """Global addresses of eth0 in namespace ns (read with ip, from outside)."""
    import subprocess

    out = subprocess.run(["ip", "-n", ns, "-j", "addr", "show", "dev", "eth0", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    return [a["local"] for dev in json.loads(out) for a in dev.get("addr_info", []) if "local" in a]


SERVER = r"""
import socket, sys, threading
FAMILY = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
def tcp():
    s = socket.socket(FAMILY); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], int(sys.argv[1]))); s.listen()
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
def echo(c):
    with c:
        while data := c.recv(1000):
            c.sendall(b"echo:" + data)
def udp():
    s = socket.socket(FAMILY, socket.SOCK_DGRAM); s.bind((sys.argv[2], int(sys.argv[1])))
    while True:
        data, peer = s.recvfrom(100); s.sendto(b"pong", peer)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
tcp()
"""


def _outside(ns: str, veth: str, host: str, addr: str, plen: int, bind: str, port: int = 7070):
    """A server 'outside' the sandboxes: namespace ``ns``, reached from the host by veth
    ``veth`` (``host``/``plen`` on the host's end, ``addr`` inside), TCP echo and UDP pong
    on ``port`` bound to ``bind``. Removed when the generator ends."""
    import subprocess

    from tether.apps import netns

    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", veth], capture_output=True)
    proc = None
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns], check=True)
        subprocess.run(["ip", "addr", "add", f"{host}/{plen}", "dev", veth, *(["nodad"] if ":" in host else [])],
                       check=True)
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
        if not netns.forward_from(veth) and ":" in host:  # the replies come in here
            pytest.fail("IPv6 forwarding per interface needs Linux 6.17 or later (force_forwarding), or "
                        "net.ipv6.conf.all.forwarding=1 on this machine")
        for cmd in (["addr", "add", f"{addr}/{plen}", "dev", "eth0", *(["nodad"] if ":" in addr else [])],
                    ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", SERVER, str(port), bind],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        yield str(ipaddress.ip_address(addr)), port  # as tether shows it
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def outside_server():
    """An IPv4 server outside: namespace tagsrvW (veth tagsvW, 198.51.100.2W/31; W the worker), port 7070."""
    yield from _outside(f"{TAG}srv{WORKER}", f"{TAG}sv{WORKER}", f"198.51.100.{2 * WORKER}",
                        f"198.51.100.{2 * WORKER + 1}", 31, "0.0.0.0")


@pytest.fixture
def outside_server6():
    """An IPv6 server outside: namespace tagsrv6W (veth tagsv6W, 2001:db8:7a67:W::/127), port 7070."""
    yield from _outside(f"{TAG}srv6{WORKER}", f"{TAG}sv6{WORKER}", f"2001:db8:7a67:{WORKER}::",
                        f"2001:db8:7a67:{WORKER}::1", 127, "::")
