"""Forward's gateway against nginx, side by side (issue 16, "Performance").

One run starts four ways to reach the same app and measures each with the same clients:

* **direct**: the app's own TCP listener (wrk cannot speak to a UNIX socket; the app
  listens on its socket and on a loopback port, in one process, with one event loop);
* **nginx**: Debian's nginx (own config in a temp dir, ``daemon off``, one worker,
  upstream ``keepalive``) proxying to the app's UNIX socket;
* **gateway**: ``tether.gateway.proxy.Gateway`` in a process of its own, on the same
  event loop the hub uses (uvloop when installed, as uvicorn picks it), its resolver
  returning ``Forward(UnixUpstream(APP.sock), target)`` for every request;
* **gateway over SSH**: a real hub (``tether hub --ssh-listen ... --gateway-listen ...``,
  SQLite, a temp dir) with a user, an SSH key and a token; a plain OpenSSH client holds
  the route (``ssh -N -R /bench:APP.sock``); requests carry ``Authorization: Bearer`` and
  ``Host: bench--alice.localhost``, so every request is authorized as in production.

The app is a tiny raw asyncio server (``asyncio.Protocol``, no framework) so that it
is not the bottleneck: a canned 1 KiB response per GET, a long ``Content-Length``
response written in 256 KiB pieces with flow control, and a websocket echo (the
``websockets`` package's sans-I/O protocol: no hand-written framing).

Measurements, every one over loopback only:

* requests/s for 1 KiB responses and latency p50/p99 under load: ``wrk``, 64 keep-alive
  connections (``--connections``), 2 threads, the rounds interleaved across the four rows;
* time to first byte p50/p99 without load: one keep-alive connection, a Python client
  that times ``sendall`` to the first byte received (the same client for every row);
* MB/s streaming one large response (1 GiB; ``--quick``: 256 MiB) over one connection,
  the same Python client (``recv_into`` a 1 MiB buffer), best of the rounds;
* websocket echo round trip p50/p99: one connection, ``websockets``' asyncio client,
  32-byte text messages one after another;
* RSS of the proxy with 1,000 idle websockets open (opened 50 at a time, pings off),
  against its RSS just before; the hub's RSS (asyncssh channels included) for the SSH row;
* the CPU time the proxy's processes spent per request and per streamed MiB
  (``/proc/PID/stat``), which shares of a busy 2-core machine skew much less than rates;
* what the hub's resolver does for every request over SSH (route lookup, token check,
  the hops to a worker thread), timed in-process against the hub's own database.

Run from the repository root::

    scripts/install-system-deps --bench                       # nginx, wrk (as root)
    .venv/bin/python benchmarks/forward_gateway.py --quick    # about a minute (256 MiB, 1 round of 3 s)
    .venv/bin/python benchmarks/forward_gateway.py            # about 4 minutes (1 GiB, 3 rounds of 10 s)
    .venv/bin/python benchmarks/forward_gateway.py --json     # machine-readable
    .venv/bin/python benchmarks/forward_gateway.py --write-docs   # also rewrite "Forward gateway" in docs/benchmarks.md
    .venv/bin/python benchmarks/forward_gateway.py --rps          # ~1 min: requests/s and CPU per request of
                                                                  # nginx, the gateway and the relay floor only
    .venv/bin/python benchmarks/forward_gateway.py --rps --profile /tmp/gw.prof   # the same, cProfiling the gateway
    .venv/bin/python benchmarks/forward_gateway.py --steps C1 C2 ...  # the gateway at each commit, side by side

Every process it starts (app, nginx, gateway, hub, ssh) is stopped by its pid, and its
temporary directory removed, when it finishes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

SECTION = "## Forward gateway"
USER, ROUTE = "alice", "bench"
HOST = f"{ROUTE}--{USER}.localhost"
SMALL = 1024
NGINX = "/usr/sbin/nginx"
ROWS = ("direct", "nginx", "gateway", "gateway-ssh")
LABELS = {"direct": "direct (app's TCP port)", "nginx": "nginx → socket", "gateway": "gateway → socket",
          "gateway-ssh": "gateway → SSH forward → socket"}


def new_loop() -> asyncio.AbstractEventLoop:
    """The loop uvicorn (so the hub, so its gateway) runs on: uvloop when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def loop_name() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return f"uvloop {uvloop.__version__}"


# ---------------------------------------------------------------- the app (a child process)

_SMALL_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % SMALL) + b"x" * SMALL
_PIECE = b"y" * (256 << 10)


class _App(asyncio.Protocol):
    """GET /1k: 1 KiB; GET /big?n=BYTES: that many bytes; GET /ws: websocket echo. GETs only,
    no request bodies: this app exists to be fast, not general."""

    def connection_made(self, transport):
        self.t = transport
        self.buf = b""
        self.ws = None
        self.streaming = False
        self.can_write = asyncio.Event()
        self.can_write.set()
        transport.set_write_buffer_limits(high=1 << 20)

    def pause_writing(self):
        self.can_write.clear()

    def resume_writing(self):
        self.can_write.set()

    def connection_lost(self, exc):
        self.can_write.set()

    def data_received(self, data):
        if self.ws is not None:
            return self._ws_data(data)
        self.buf += data
        while not self.streaming:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.t.close()
                return
            head, self.buf = self.buf[:end + 4], self.buf[end + 4:]
            target = head.split(b" ", 2)[1]
            if target == b"/ws":
                return self._ws_start(head)
            if target.startswith(b"/big"):
                self.streaming = True
                asyncio.ensure_future(self._stream(int(target.partition(b"=")[2])))
                return
            self.t.write(_SMALL_RESPONSE)

    async def _stream(self, n: int):
        self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % n)
        piece = memoryview(_PIECE)
        while n > 0 and not self.t.is_closing():
            k = min(n, len(piece))
            self.t.write(piece[:k])
            n -= k
            await self.can_write.wait()
        self.streaming = False
        if self.buf:
            self.data_received(b"")

    def _ws_start(self, head: bytes):
        from websockets.server import ServerProtocol

        self.ws = ServerProtocol(max_size=1 << 20)
        self.ws.receive_data(head + self.buf)
        self.buf = b""
        request = self.ws.events_received()[0]
        self.ws.send_response(self.ws.accept(request))
        self._ws_flush()
        self._ws_data(b"")

    def _ws_data(self, data: bytes):
        from websockets.frames import Opcode

        if data:
            self.ws.receive_data(data)
        for frame in self.ws.events_received():
            if frame.opcode is Opcode.TEXT:
                self.ws.send_text(frame.data)
            elif frame.opcode is Opcode.BINARY:
                self.ws.send_binary(frame.data)
        self._ws_flush()

    def _ws_flush(self):
        out = self.ws.data_to_send()
        data = b"".join(out)
        if data:
            self.t.write(data)
        if out and out[-1] == b"":  # the protocol says: close the connection
            self.t.close()


def serve_app(sock_path: str, port: int) -> None:
    loop = new_loop()
    asyncio.set_event_loop(loop)
    # keep the servers referenced: a collected server object may close its listening socket
    servers = [loop.run_until_complete(loop.create_unix_server(_App, sock_path, backlog=1024)),
               loop.run_until_complete(loop.create_server(_App, "127.0.0.1", port, backlog=1024))]
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    for server in servers:
        server.close()


# ---------------------------------------------------------------- tether's gateway alone (a child process)


def serve_gateway(sock_path: str, port: int, profile: str | None = None) -> None:
    if os.environ.get("BENCH_GATEWAY_SRC"):  # --steps: the gateway as it was at a commit
        sys.path.insert(0, os.environ["BENCH_GATEWAY_SRC"])
    from tether.gateway import core
    from tether.gateway.proxy import Forward, Gateway, UnixUpstream, serve

    upstream = UnixUpstream(sock_path)

    def decide(request):
        return Forward(upstream, core.match(request.host, request.target, "localhost"))

    class Resolve:
        """Every request to the socket; decided at once (``now``), as the hub's resolvers decide
        a request whose route and credential they checked within the last second."""

        now = staticmethod(decide)

        async def __call__(self, request):
            return decide(request)

    if os.environ.get("BENCH_AWAITED"):  # --steps: every decision awaited, a task per request
        del Resolve.now

    if os.environ.get("BENCH_GC") == "off":  # (measured: what the collector costs the gateway at most)
        import gc

        gc.disable()
    loop = new_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(serve(Gateway(Resolve()), "127.0.0.1", port))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    if profile:  # --rps --profile FILE: where the gateway's CPU goes, for who works on it
        import cProfile

        prof = cProfile.Profile()
        prof.runcall(loop.run_forever)
        prof.dump_stats(profile)
    else:
        loop.run_forever()
    server.close()


class _Relay(asyncio.Protocol):
    """A browser connection of the relay floor: its bytes to one connection to the app and
    back, unparsed (what any proxy on this event loop pays before it reads any HTTP)."""

    def __init__(self, sock_path: str):
        self.sock_path, self.up, self.held = sock_path, None, []

    def connection_made(self, transport):
        self.t = transport
        asyncio.ensure_future(self._connect())

    async def _connect(self):
        down = self

        class Up(asyncio.Protocol):
            def connection_made(self, transport):
                self.t = transport

            def data_received(self, data):
                down.t.write(data)

            def connection_lost(self, exc):
                down.t.close()

        _, self.up = await asyncio.get_running_loop().create_unix_connection(Up, self.sock_path)
        for data in self.held:
            self.up.t.write(data)

    def data_received(self, data):
        if self.up is None:
            self.held.append(data)
        else:
            self.up.t.write(data)

    def connection_lost(self, exc):
        if self.up is not None:
            self.up.t.close()


def serve_relay(sock_path: str, port: int) -> None:
    loop = new_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(lambda: _Relay(sock_path), "127.0.0.1", port))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    server.close()


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def wait_for(check, what: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:g} s")


def connectable_unix(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
    return True


def connectable_tcp(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


@dataclass
class Target:
    row: str
    port: int
    pids: list[int]  # the proxy's processes (the app's for "direct"): CPU, and RSS unless mem_pids
    headers: dict[str, str] = field(default_factory=dict)
    parts: dict[str, list[int]] = field(default_factory=dict)  # CPU split (hub, ssh client) for the SSH row
    mem_pids: list[int] | None = None  # the SSH row: the hub's RSS (the gateway), not the node's ssh

    @property
    def rss_pids(self) -> list[int]:
        return self.mem_pids if self.mem_pids is not None else self.pids


class World:
    """Everything the run starts; ``close()`` stops each process by its pid and removes the temp dir."""

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="tether-bench-gw-"))
        self.procs: list[subprocess.Popen] = []
        self.hub = None
        self.app_pid = 0
        self.token = ""
        self.facts: dict[str, str] = {}
        self.relay: Target | None = None

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self.hub is not None:
            self.hub.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the four rows

    def start(self, nginx_workers: str, *, hub: bool = True, profile: str | None = None) -> dict[str, Target]:
        me = [sys.executable, str(Path(__file__).resolve())]
        sock = self.tmp / "app.sock"
        app_port = free_port()
        app = self.spawn([*me, "--serve-app", str(sock), str(app_port)], cwd=ROOT)
        wait_for(lambda: connectable_unix(sock) and connectable_tcp(app_port), "the app", proc=app)
        self.app_pid = app.pid
        targets = {"direct": Target("direct", app_port, [app.pid])}

        nginx_port = free_port()
        conf = self.nginx_conf(sock, nginx_port, nginx_workers)
        errors = self.tmp / "nginx" / "error.log"
        with open(errors, "ab") as log:
            ngx = self.spawn([NGINX, "-c", str(conf), "-p", str(self.tmp / "nginx"), "-e", str(errors),
                              "-g", "daemon off;"], stderr=log)
        try:
            wait_for(lambda: connectable_tcp(nginx_port), "nginx", proc=ngx)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {errors.read_text(errors='replace')[-2000:]}") from None
        wait_for(lambda: bool(children(ngx.pid)), "nginx's workers", proc=ngx)
        targets["nginx"] = Target("nginx", nginx_port, [ngx.pid, *children(ngx.pid)])

        gw_port = free_port()
        gw = self.spawn([*me, "--serve-gateway", str(sock), str(gw_port), *(["--profile", profile] if profile else [])],
                        cwd=ROOT)
        wait_for(lambda: connectable_tcp(gw_port), "the gateway", proc=gw)
        targets["gateway"] = Target("gateway", gw_port, [gw.pid])

        if hub:
            targets["gateway-ssh"] = self.start_hub(sock)
        relay_port = free_port()
        relay = self.spawn([*me, "--serve-relay", str(sock), str(relay_port)], cwd=ROOT)
        wait_for(lambda: connectable_tcp(relay_port), "the relay floor", proc=relay)
        self.relay = Target("relay", relay_port, [relay.pid])
        return targets

    def nginx_conf(self, sock: Path, port: int, workers: str) -> Path:
        d = self.tmp / "nginx"
        (d / "tmp").mkdir(parents=True)
        conf = d / "nginx.conf"
        # Fair to both: the gateway is one process (one event loop), streams without
        # buffering, reads 64 KiB at a time and adds X-Forwarded-*; nginx gets one worker
        # (--nginx-workers), keeps connections to the app open (the gateway does not),
        # streams unbuffered with 64 KiB buffers and sets the same headers. No access log.
        # as root, nginx's workers would drop to nobody, who may not enter the 0700 temp dir
        # and connect to the app's socket: they keep this process's user instead
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        conf.write_text(f"""
{user}
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream app {{
        server unix:{sock};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_read_timeout 300s;
        }}
    }}
}}
""")
        return conf

    def start_hub(self, sock: Path) -> Target:
        """A hub with its SSH server and gateway, a user with a key and a token (as
        tests/forward/conftest.py makes them), and ``ssh -N -R /bench:APP.sock`` holding the route."""
        from tests.hubproc import HubProcess

        tmp = self.tmp / "hub"
        tmp.mkdir()
        ssh_port, gw_port = free_port(), free_port()
        self.hub = HubProcess(tmp / "data", args=["--ssh-listen", f"127.0.0.1:{ssh_port}",
                                                  "--gateway-listen", f"127.0.0.1:{gw_port}"])
        self.hub.start()
        key = tmp / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        with self.hub.admin() as c:
            c.post("/api/v1/users", json={"name": USER}).raise_for_status()
            c.post(f"/api/v1/users/{USER}/keys", json={"public_key": key.with_suffix(".pub").read_text()}
                   ).raise_for_status()
            token = c.post("/api/v1/tokens", json={"for_user": USER, "expires": "2h"}).json()["token"]
        host_pub = (self.hub.data_dir / "ssh_host_ed25519_key.pub").read_text().split()
        known = tmp / "known_hosts"
        known.write_text(f"[127.0.0.1]:{ssh_port} {host_pub[0]} {host_pub[1]}\n")
        w = {"ssh_port": ssh_port, "gw_port": gw_port, "keys": {USER: key}, "tokens": {USER: token},
             "known": known}
        ssh_log = self.tmp / "ssh.log"
        argv = ["ssh", "-v", "-p", str(w["ssh_port"]), "-i", str(w["keys"][USER]), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={w['known']}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ExitOnForwardFailure=yes", "-N", "-R", f"/{ROUTE}:{sock}", f"{USER}@127.0.0.1"]
        with open(ssh_log, "wb") as log:
            ssh = self.spawn(argv, stderr=log)
        headers = {"Authorization": f"Bearer {w['tokens'][USER]}"}
        target = Target("gateway-ssh", w["gw_port"], [self.hub.proc.pid, ssh.pid], headers,
                        {"hub": [self.hub.proc.pid], "ssh client": [ssh.pid]}, mem_pids=[self.hub.proc.pid])
        self.token = token
        self.ssh_pid = ssh.pid
        wait_for(lambda: http_get(target, "/1k")[0] == 200, "the route over SSH", proc=ssh)
        text = ssh_log.read_text(errors="replace")
        m = re.search(r"kex: server->client cipher: (\S+) MAC: (\S+)", text)
        self.facts["ssh_cipher"] = f"{m.group(1)}" + ("" if m.group(2) == "<implicit>" else f" + {m.group(2)}") if m \
            else "?"
        m = re.search(r"kex: algorithm: (\S+)", text)
        self.facts["ssh_kex"] = m.group(1) if m else "?"
        return target


# ---------------------------------------------------------------- clients


def request_bytes(target: Target, path: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}", *(f"{k}: {v}" for k, v in target.headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(s: socket.socket, first: bytes) -> tuple[int, int]:
    """Read one response whose head starts in ``first``: (status, body bytes)."""
    buf = first
    while b"\r\n\r\n" not in buf:
        more = s.recv(65536)
        if not more:
            raise ConnectionError("closed before the head ended")
        buf += more
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        need = int(m.group(1))
        got = len(body)
        while got < need:
            more = s.recv(65536)
            if not more:
                raise ConnectionError("closed in the body")
            got += len(more)
        return status, need
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        while not body.endswith(b"0\r\n\r\n"):
            more = s.recv(65536)
            if not more:
                raise ConnectionError("closed in the body")
            body += more
        return status, len(body)
    return status, len(body)


def http_get(target: Target, path: str) -> tuple[int, int]:
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as s:
        s.sendall(request_bytes(target, path))
        return _read_response(s, b"")


def ttfb(target: Target, samples: int) -> list[float]:
    """Seconds from sendall to the first byte, one keep-alive connection, one request at a time."""
    req = request_bytes(target, "/1k")
    out = []
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(samples + 50):
            t0 = time.perf_counter()
            s.sendall(req)
            first = s.recv(65536)
            t1 = time.perf_counter()
            status, n = _read_response(s, first)
            if status != 200 or n != SMALL:
                raise RuntimeError(f"{target.row}: GET /1k answered {status} with {n} bytes")
            if i >= 50:  # after a warm-up
                out.append(t1 - t0)
    return out


def stream(target: Target, nbytes: int) -> float:
    """Seconds to receive one ``nbytes`` response over one connection (request sent to last byte)."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", target.port), timeout=60) as s:
        t0 = time.perf_counter()
        s.sendall(request_bytes(target, f"/big?n={nbytes}"))
        head = b""
        while b"\r\n\r\n" not in head:
            n = s.recv_into(view)
            if not n:
                raise ConnectionError("closed before the head ended")
            head += bytes(view[:n])
        head, _, rest = head.partition(b"\r\n\r\n")
        if int(head.split(b" ", 2)[1]) != 200:
            raise RuntimeError(f"{target.row}: GET /big answered {head[:80]!r}")
        got = len(rest)
        while got < nbytes:
            n = s.recv_into(view)
            if not n:
                raise ConnectionError(f"{target.row}: closed after {got} of {nbytes} bytes")
            got += n
        return time.perf_counter() - t0


def wrk(target: Target, seconds: float, connections: int, threads: int) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s",
            "-H", f"Host: {HOST}"]
    for k, v in target.headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(f"http://127.0.0.1:{target.port}/1k")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    out = r.stdout
    if r.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed against {target.row}: {r.stderr or out}")

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": ms("50"), "p99_ms": ms("99"),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(x) for x in errs.groups()) if errs else 0}


async def _ws_connect(target: Target, tries: int = 3):
    from websockets.asyncio.client import connect

    for attempt in range(tries):
        try:
            return await connect(f"ws://{HOST}/ws", host="127.0.0.1", port=target.port, compression=None,
                                 ping_interval=None, open_timeout=30, close_timeout=2,
                                 additional_headers=target.headers, proxy=None)
        except (TimeoutError, OSError):
            if attempt == tries - 1:
                raise
            await asyncio.sleep(0.2)


async def ws_echo(target: Target, messages: int) -> list[float]:
    ws = await _ws_connect(target)
    out = []
    try:
        msg = "x" * 32
        for i in range(messages + 20):
            t0 = time.perf_counter()
            await ws.send(msg)
            got = await asyncio.wait_for(ws.recv(), 10)
            t1 = time.perf_counter()
            if got != msg:
                raise RuntimeError(f"{target.row}: the echo came back different")
            if i >= 20:
                out.append(t1 - t0)
    finally:
        await ws.close()
    return out


async def idle_websockets(target: Target, count: int, settle: float) -> dict:
    """RSS of the target's processes before and with ``count`` idle websockets open."""
    before = rss_mib(target.rss_pids)
    parts_before = {k: rss_mib(v) for k, v in target.parts.items()}
    sem = asyncio.Semaphore(50)
    conns = []

    async def one():
        async with sem:
            conns.append(await _ws_connect(target))

    try:
        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        await asyncio.sleep(settle)
        with_open = rss_mib(target.rss_pids)
        parts_delta = {k: rss_mib(v) - parts_before[k] for k, v in target.parts.items()}
        # the connections are alive: every 100th one echoes
        alive = 0
        for ws in conns[::100]:
            await ws.send("still here")
            alive += await asyncio.wait_for(ws.recv(), 10) == "still here"
        return {"before_mib": before, "with_mib": with_open, "delta_mib": with_open - before,
                "opened": len(conns), "failed": len(failed), "echoed": f"{alive}/{len(conns[::100])}",
                "parts_delta_mib": parts_delta,
                "per_ws_kib": (with_open - before) * 1024 / max(1, len(conns))}
    finally:
        async def close(ws):
            async with sem:
                try:
                    await asyncio.wait_for(ws.close(), 5)
                except Exception:  # noqa: BLE001, S110 - closing is best effort; the processes stop anyway
                    pass

        await asyncio.gather(*(close(ws) for ws in conns))


def time_checks(data_dir: Path, token: str, iterations: int) -> dict[str, float]:
    """µs per call of what the hub's gateway does in its resolver for every request (the
    route lookup and the token check, against the hub's own database, hub idle), and of
    one hop to a worker thread and back (``asyncio.to_thread``, which runs each of them)."""
    from tether.config import HubSettings
    from tether.db import Database
    from tether.forward.service import ForwardService

    settings = HubSettings(data_dir=data_dir)
    svc = ForwardService(settings, Database(settings.effective_database_url()))
    route = svc.lookup(USER, ROUTE)

    def per_call(fn) -> float:
        for _ in range(20):
            fn()
        t0 = time.perf_counter()
        for _ in range(iterations):
            fn()
        return (time.perf_counter() - t0) / iterations * 1e6

    lookup = per_call(lambda: svc.lookup(USER, ROUTE))
    authorize = per_call(lambda: svc.authorize(route, token, source="127.0.0.1", method=b"GET", upgrade=False))

    async def hops() -> float:
        for _ in range(20):
            await asyncio.to_thread(int)
        t0 = time.perf_counter()
        for _ in range(iterations):
            await asyncio.to_thread(int)
        return (time.perf_counter() - t0) / iterations * 1e6

    loop = new_loop()
    try:
        hop = loop.run_until_complete(hops())
    finally:
        loop.close()
    return {"lookup_us": lookup, "authorize_us": authorize, "thread_hop_us": hop}


def ssh_reuses_channels() -> bool:
    """Whether the hub's gateway keeps an SSH channel per browser connection (its upstream has a ``key``)."""
    import inspect

    from tether.forward.gateway import SSHUpstream

    needed = [p for p in inspect.signature(SSHUpstream).parameters.values() if p.default is p.empty]
    return getattr(SSHUpstream(*[None] * len(needed)), "key", None) is not None


# ---------------------------------------------------------------- the run


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def run(args) -> dict:
    for tool in ("wrk", NGINX, "ssh"):
        if not shutil.which(tool):
            sys.exit(f"forward_gateway: {tool} is missing: run scripts/install-system-deps --bench (as root)")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 16384)), hard))
    load_before = os.getloadavg()[0]
    # a SIGTERM unwinds like Ctrl-C, so the finally below still stops every process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    world = World()
    results: dict = {"rows": {r: {} for r in ROWS}, "settings": {
        "connections": args.connections, "threads": args.threads, "seconds": args.seconds, "rounds": args.rounds,
        "stream_bytes": args.stream_mib << 20, "idle_websockets": args.idle_ws, "ttfb_samples": args.samples,
        "ws_messages": args.messages, "nginx_workers": args.nginx_workers, "quick": args.quick},
        "load_before": load_before}
    loop = new_loop()
    try:
        say(f"starting the app, nginx, the gateway and a hub with an SSH forward in {world.tmp}")
        targets = world.start(args.nginx_workers)
        rows = {r: results["rows"][r] for r in ROWS}
        for t in targets.values():
            status, n = http_get(t, "/1k")
            if status != 200 or n != SMALL:
                raise RuntimeError(f"{t.row}: GET /1k answered {status} with {n} bytes")

        # memory first, on processes that have not carried load yet
        for row in ROWS:
            say(f"{args.idle_ws} idle websockets through {row}")
            rows[row]["idle_ws"] = loop.run_until_complete(idle_websockets(targets[row], args.idle_ws, args.settle))
        for row in ROWS:
            say(f"websocket echo through {row}")
            rtt = loop.run_until_complete(ws_echo(targets[row], args.messages))
            rows[row]["ws_p50_ms"], rows[row]["ws_p99_ms"] = pct(rtt, 50) * 1e3, pct(rtt, 99) * 1e3
        for row in ROWS:
            say(f"time to first byte through {row}")
            t = ttfb(targets[row], args.samples)
            rows[row]["ttfb_p50_ms"], rows[row]["ttfb_p99_ms"] = pct(t, 50) * 1e3, pct(t, 99) * 1e3

        def cpu_parts(t: Target) -> dict[str, float]:
            parts = {"proxy": cpu_seconds(t.pids), "app": cpu_seconds([world.app_pid])}
            parts.update({k: cpu_seconds(v) for k, v in t.parts.items()})
            return parts

        def diff(a: dict, b: dict) -> dict:
            return {k: b[k] - a[k] for k in a}

        for rnd in range(args.rounds):
            for row in ROWS:
                say(f"wrk through {row} (round {rnd + 1}/{args.rounds})")
                wrk(targets[row], 1, args.connections, args.threads)  # warm-up
                c0 = cpu_parts(targets[row])
                w = wrk(targets[row], args.seconds, args.connections, args.threads)
                w["cpu"] = diff(c0, cpu_parts(targets[row]))
                rows[row].setdefault("wrk_rounds", []).append(w)
        nbytes = args.stream_mib << 20
        for rnd in range(args.rounds):
            for row in ROWS:
                say(f"streaming {args.stream_mib} MiB through {row} (round {rnd + 1}/{args.rounds})")
                c0 = cpu_parts(targets[row])
                secs = stream(targets[row], nbytes)
                rows[row].setdefault("stream_rounds", []).append(
                    {"seconds": secs, "mb_s": nbytes / 1e6 / secs, "cpu": diff(c0, cpu_parts(targets[row]))})
        for row in ROWS:
            r = rows[row]
            best = statistics.median_low([w["rps"] for w in r["wrk_rounds"]])
            w = next(w for w in r["wrk_rounds"] if w["rps"] == best)  # the median round, whole
            r.update(rps=w["rps"], lat_p50_ms=w["p50_ms"], lat_p99_ms=w["p99_ms"],
                     errors=sum(x["non_2xx"] + x["socket_errors"] for x in r["wrk_rounds"]),
                     cpu_us_per_request={k: v / w["requests"] * 1e6 for k, v in w["cpu"].items()})
            s = max(r["stream_rounds"], key=lambda x: x["mb_s"])
            r.update(stream_mb_s=s["mb_s"], cpu_ms_per_mib={k: v * 1e3 / (nbytes / (1 << 20))
                                                             for k, v in s["cpu"].items()})
        for row in ROWS:
            r = rows[row]
            r["rps_ratio"] = r["rps"] / rows["nginx"]["rps"]
            r["stream_ratio"] = r["stream_mb_s"] / rows["nginx"]["stream_mb_s"]
        say("wrk through a bare byte relay on the same event loop (the floor under any proxy in Python)")
        wrk(world.relay, 1, args.connections, args.threads)
        c0 = cpu_seconds(world.relay.pids)
        w = wrk(world.relay, args.seconds, args.connections, args.threads)
        results["relay"] = {"rps": w["rps"], "cpu_us_per_request": (cpu_seconds(world.relay.pids) - c0)
                            / w["requests"] * 1e6}
        say("timing the hub's per-request checks in-process")
        results["checks"] = time_checks(world.hub.data_dir, world.token, 300 if args.quick else 1000)
        results["facts"] = dict(world.facts, ssh_channel_per_connection=ssh_reuses_channels())
    finally:
        loop.close()
        world.close()
    results["load_after"] = os.getloadavg()[0]
    results["goals"] = goals(results)
    return results


def steps(args) -> None:
    """CPU per request of the gateway as it was at each of ``args.steps`` (commits: its
    ``src/tether`` taken with ``git archive``), and at the last one with every decision
    awaited, side by side with nginx and the relay floor in one run; a markdown table."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds, rounds = args.seconds or 5, args.rounds or 3
    world = World()
    me = [sys.executable, str(Path(__file__).resolve())]
    try:
        targets = world.start(args.nginx_workers, hub=False)
        sock = str(world.tmp / "app.sock")
        rows: dict[str, Target] = {"nginx → socket": targets["nginx"], "relay floor": world.relay}
        variants = [(c, {}) for c in args.steps] + [(args.steps[-1], {"BENCH_AWAITED": "1"})]
        for commit, env in variants:
            src = world.tmp / "steps" / f"{commit}{'-awaited' if env else ''}"
            src.mkdir(parents=True)
            tar = subprocess.run(["git", "archive", commit, "src/tether"], cwd=ROOT, check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(src)], input=tar.stdout, check=True)
            port = free_port()
            proc = world.spawn([*me, "--serve-gateway", sock, str(port)], cwd=ROOT,
                               env={**os.environ, "BENCH_GATEWAY_SRC": str(src / "src"), **env})
            wait_for(lambda: connectable_tcp(port), f"the gateway at {commit}", proc=proc)
            label = subprocess.run(["git", "log", "-1", "--format=%h %s", commit], cwd=ROOT, check=True,
                                   capture_output=True, text=True).stdout.strip()[:90]
            rows[("gateway " + label) + (" — every decision awaited (a task per request)" if env else "")] = \
                Target(commit, port, [proc.pid])
        got = cpu_rounds(rows, rounds, seconds, args)
        load = os.getloadavg()[0]
    finally:
        world.close()
    med = {r: statistics.median(us for _, us in v) for r, v in got.items()}
    ngx = med["nginx → socket"]
    print("| step | proxy CPU per request, µs | nginx's ÷ this (the requests/s ratio once both are CPU-bound) |")
    print("|---|---:|---:|")
    for row, us in med.items():
        print(f"| {row} | {us:.1f} | {ngx / us:.2f}× |")
    print(f"\n{rounds} rounds of {seconds:g} s interleaved, median; load average {load:.2f} after, on "
          f"{os.cpu_count()} cores")


def cpu_rounds(rows: dict[str, Target], rounds: int, seconds: float, args) -> dict[str, list[tuple[float, float]]]:
    """wrk through each row in turn, ``rounds`` times: (requests/s, the proxy's CPU µs per request) each time."""
    got: dict[str, list] = {r: [] for r in rows}
    for _ in range(rounds):
        for row, t in rows.items():
            wrk(t, 1, args.connections, args.threads)
            c0 = cpu_seconds(t.pids)
            w = wrk(t, seconds, args.connections, args.threads)
            if w["non_2xx"] or w["socket_errors"]:
                raise RuntimeError(f"{row}: errors under wrk: {w}")
            got[row].append((w["rps"], (cpu_seconds(t.pids) - c0) / w["requests"] * 1e6))
    return got


def rps_only(args) -> None:
    """The quick loop for whoever works on the gateway's CPU per request: nginx, the gateway
    and the relay floor under wrk, interleaved, median round; nothing written."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds, rounds = args.seconds or 5, args.rounds or 3
    world = World()
    try:
        targets = world.start(args.nginx_workers, hub=False, profile=args.profile)
        rows = {"nginx": targets["nginx"], "gateway": targets["gateway"], "relay": world.relay}
        got = cpu_rounds(rows, rounds, seconds, args)
        load = os.getloadavg()[0]
    finally:
        world.close()
    med = {r: sorted(v)[len(v) // 2] for r, v in got.items()}
    for row, (rps, us) in med.items():
        print(f"{row:8} {rps:>10,.0f} req/s  {us:6.1f} µs CPU/request  ratio to nginx {rps / med['nginx'][0]:.2f}×")
    print(f"CPU ratio nginx/gateway {med['nginx'][1] / med['gateway'][1]:.2f}×; load {load:.2f}")


def goals(res: dict) -> list[dict]:
    rows = res["rows"]
    gw, ssh = rows["gateway"], rows["gateway-ssh"]
    return [
        {"goal": "requests/s, gateway → socket ≥ 0.5× nginx", "value": ratio(gw["rps_ratio"]),
         "met": gw["rps_ratio"] >= 0.5},
        {"goal": "streaming MB/s, gateway → socket ≥ 0.8× nginx", "value": f"{gw['stream_ratio']:.2f}×",
         "met": gw["stream_ratio"] >= 0.8},
        {"goal": f"{res['settings']['idle_websockets']:,} idle websockets: gateway RSS < +100 MiB",
         "value": f"+{gw['idle_ws']['delta_mib']:.1f} MiB", "met": gw["idle_ws"]["delta_mib"] < 100
         and gw["idle_ws"]["failed"] == 0},
        {"goal": f"{res['settings']['idle_websockets']:,} idle websockets over SSH: hub RSS < +100 MiB",
         "value": f"+{ssh['idle_ws']['delta_mib']:.1f} MiB", "met": ssh["idle_ws"]["delta_mib"] < 100
         and ssh["idle_ws"]["failed"] == 0},
        {"goal": "the SSH path's overhead stated and explained (below the table)",
         "value": f"{ratio(ssh['rps_ratio'] / gw['rps_ratio'])} the gateway's requests/s, "
                  f"{ratio(ssh['stream_mb_s'] / gw['stream_mb_s'])} its MB/s",
         "met": True},
    ]


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- output


def fmt(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def ratio(v: float) -> str:
    return f"{v:.2f}×" if v >= 0.1 else f"{v:.3f}×"


def table(res: dict) -> str:
    rows = res["rows"]
    n_ws = res["settings"]["idle_websockets"]
    mib = res["settings"]["stream_bytes"] >> 20
    head = "| measurement | " + " | ".join(LABELS[r] for r in ROWS) + " |"
    lines = [head, "|---|" + "---:|" * len(ROWS)]

    def line(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(rows[r], r) for r in ROWS) + " |")

    c = res["settings"]["connections"]
    line(f"requests/s, 1 KiB responses, {c} connections", lambda r, _: fmt(r["rps"]))
    line("ratio to nginx", lambda r, _: ratio(r["rps_ratio"]))
    line("latency p50 / p99 under load, ms", lambda r, _: f"{r['lat_p50_ms']:.2f} / {r['lat_p99_ms']:.2f}")
    line("time to first byte p50 / p99, 1 connection, ms",
         lambda r, _: f"{r['ttfb_p50_ms']:.3f} / {r['ttfb_p99_ms']:.3f}")
    line(f"streaming one {fmt(mib)} MiB response, MB/s", lambda r, _: fmt(r["stream_mb_s"]))
    line("ratio to nginx", lambda r, _: ratio(r["stream_ratio"]))
    line("websocket echo round trip p50 / p99, ms", lambda r, _: f"{r['ws_p50_ms']:.3f} / {r['ws_p99_ms']:.3f}")
    line(f"RSS before → with {n_ws:,} idle websockets, MiB",
         lambda r, _: f"{r['idle_ws']['before_mib']:.1f} → {r['idle_ws']['with_mib']:.1f}")
    line("RSS per idle websocket, KiB", lambda r, _: fmt(r["idle_ws"]["per_ws_kib"], 1))

    def cpu(r, row, key) -> str:
        d = r[key]

        def num(v: float) -> str:
            if key == "cpu_ms_per_mib":
                return f"{v:.2f}"
            return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"

        if row == "gateway-ssh":
            return f"{num(d['proxy'])} (hub {num(d['hub'])}, ssh {num(d['ssh client'])})"
        return num(d["proxy"]) if row != "direct" else "—"

    line("proxy CPU per request, µs", lambda r, row: cpu(r, row, "cpu_us_per_request"))
    line("app CPU per request, µs", lambda r, _: f"{r['cpu_us_per_request']['app']:.1f}")
    line("proxy CPU per streamed MiB, ms", lambda r, row: cpu(r, row, "cpu_ms_per_mib"))
    return "\n".join(lines)


def goals_table(res: dict) -> str:
    lines = ["| goal | measured | met |", "|---|---:|:---:|"]
    for g in res["goals"]:
        lines.append(f"| {g['goal']} | {g['value']} | {'yes' if g['met'] else 'no'} |")
    return "\n".join(lines)


def versions(res: dict) -> dict[str, str]:
    import asyncssh
    import httptools
    from _docs import sh

    nginx = sh([NGINX, "-v"]).partition("/")[2] or "?"
    wrk_version = sh(["wrk", "--version"]).split("\n")[0].partition(" Copyright")[0].replace("wrk ", "").strip()
    return {"nginx": nginx, "wrk": wrk_version,
            "openssh": sh(["ssh", "-V"]).split(",")[0], "asyncssh": asyncssh.__version__, "httptools": httptools.__version__,
            "loop": loop_name()}


def print_text(res: dict) -> None:
    print(table(res))
    print()
    print(goals_table(res))
    s = res["rows"]
    print("\nerrors (non-2xx or socket) under wrk: " + ", ".join(f"{r} {s[r]['errors']}" for r in ROWS))
    print(f"load average: {res['load_before']:.2f} before, {res['load_after']:.2f} after")
    print()
    print(unwrap(notes(res)))


def command_line(args) -> str:
    parts = [".venv/bin/python", "benchmarks/forward_gateway.py"]
    if args.quick:
        parts.append("--quick")
    parts.append("--write-docs")
    return " ".join(parts)


def unwrap(text: str) -> str:
    """Markdown with each paragraph and list item on one line (as the other sections are
    written), tables and code blocks as they are."""
    out: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
            out.append(line)
            continue
        joinable = (not fenced and out and out[-1] and line and not line.startswith(("|", "- ", "#"))
                    and not out[-1].startswith(("|", "#", "```")))
        if joinable:
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


#: the table of steps, from ``--steps`` (a run of its own: the gateway at each commit side by side)
STEPS = """Steps of the last round, CPU per request under wrk as in the table above, each commit's gateway
side by side with nginx and the relay floor in one run (3 rounds of 5 s, median; load average 7.5
before and 11.2 after, on 2 cores: the other sessions of the machine; the lead's quiet re-run replaces
the table above, not this one):

```sh
.venv/bin/python benchmarks/forward_gateway.py --steps a3a41a4 fecff93 4ce084a f796f3c 495d85c a71ac62
```

| step | gateway CPU per request, µs | nginx's ÷ the gateway's |
|---|---:|---:|
| nginx → socket | 8.7 | 1.00× |
| relay floor (no HTTP) | 7.3 | 1.19× |
| a3a41a4: before this round (20.5 µs in the last quiet run, against nginx's 8.7) | 25.0 | 0.35× |
| fecff93: an answer's body taken from the read, no llhttp body callback; a head's reading one lookup | 21.1 | 0.41× |
| 4ce084a: fewer calls per request (the answer head located inline, the kept app connection, the timer) | 20.5 | 0.43× |
| f796f3c: writes held to the end of the loop's turn (one wake-up per reader per turn) | 16.0 | 0.54× |
| 495d85c: the held bytes written by one callback for both sides | 15.9 | 0.55× |
| a71ac62: no whole-head LRU (a connection's last head instead); a streamed read not held | 15.5 | 0.56× |
| a71ac62, every decision awaited (a task per request) | 18.3 | 0.48× |

An earlier run of the same steps up to 495d85c (load 6.7 to 11.3) measured nginx 8.0, a3a41a4 18.4 and
495d85c 14.4 µs (0.43× to 0.56×). The previous round (e04f17f to 8a8ef0b: heads taken whole from llhttp's bytes, `now`, one response
parser per app connection, heads passed as they came) took the gateway from 31.4 to 21.3 µs in a run
of its own (nginx 10.6 there)."""


def notes(res: dict) -> str:
    """What the numbers say, in prose, from the numbers of this run."""
    rows, st, chk = res["rows"], res["settings"], res["checks"]
    gw, ssh, ngx = rows["gateway"], rows["gateway-ssh"], rows["nginx"]
    gw_us, ngx_us = gw["cpu_us_per_request"]["proxy"], ngx["cpu_us_per_request"]["proxy"]
    hub_us, node_us = ssh["cpu_us_per_request"]["hub"], ssh["cpu_us_per_request"]["ssh client"]
    relay_us = res["relay"]["cpu_us_per_request"]
    checks = chk["lookup_us"] + chk["authorize_us"] + 2 * chk["thread_hop_us"]
    ws = gw["idle_ws"]
    return f"""**Requests/s.** The gateway (`tether.gateway.proxy`: asyncio Protocols on uvloop, httptools,
the C parser llhttp, on both sides) spends {gw_us:,.1f} µs of CPU per proxied request against nginx's
{ngx_us:,.1f} µs ({gw_us / ngx_us:,.1f}×); it was 20.5 µs against 8.7 in the quiet run before the round
below, 28.0 µs before the round before, and 237 µs with h11 on asyncio streams. A bare byte relay on
the same event loop, parsing nothing (`--serve-relay` in the benchmark, one connection to the app per
browser connection), spent {relay_us:,.1f} µs per request in this run: that is the floor under any proxy
in Python on this loop (the same reads and writes as nginx's). The requests/s ratio of a run depends on
which side runs out of CPU first: wrk, the app, the proxy and other work share two cores here, so while
nginx is bound by wrk the ratio reads higher, and once both proxies are bound by their own CPU it is
the inverse ratio of their CPU per request, {ngx_us / gw_us:.2f}× in this run; the 0.5× goal is the
gateway at twice nginx's CPU per request ({2 * ngx_us:,.1f} µs here).

{STEPS}

What each step did (every byte of every head is still read by llhttp on both sides; no parser written
by hand; tests/gateway/test_fast_path.py holds each step to the behaviour before it):

- an answer with a Content-Length (the commonest) is relayed from the app's read itself: the response
  parser has no body callback, so llhttp counts the body and calls the message's end without copying
  each piece into a `bytes` for Python (in-process, 0.5 of the parser's 0.8 µs per 1 KiB answer), and
  a read that is exactly an
  answer passing as it came is written to the browser as the same object. A chunked or until-close
  answer, whose pieces are re-framed, is read again from its head by a parser with the callback (once
  per app connection that answers so). A request head's line is split once and its block's reading
  (Host, framing, what to drop) remembered as before; a connection remembers its last head whole, so a
  polled or repeated request is read once. (The first try remembered whole heads in a global LRU:
  wrk's identical requests always hit it, but a browser's paths differ, and in-process a new path per
  request cost 7.9 µs against 7.1 without it; it is gone);
- fewer calls and objects per request: the answer head found where the read begins, the kept app
  connection held alone (no tuple) and checked inline, the one timer's firing time kept beside it (no
  `when()`), the idle time re-armed inline, `Target` made without its Python `__new__`;
- writes wait for the end of the loop's turn: a request head for a kept app connection (a request with
  no body, so nothing else is written to that app before its answer) and every write to a browser are
  held, in order, and written by one callback once the turn's reads are parsed (a close writes what
  its browser holds first). Each reader (the app, a client) is woken once per turn, not once per
  request: on two shared cores each wake-up of another process cost the gateway a context switch (the
  woken process preempts it): 1.2 to 1.3 involuntary switches per request before, 0.6 to 0.8 after
  (nginx: 0.54 to 0.57; `/proc/PID/status` over a wrk round, three runs). This is most of the kernel
  time the gateway spent beyond nginx's. An app's read past 64 KiB (a streamed body) is not held;
- the collector measured no different off (`BENCH_GC=off` for the benchmark's gateway: 15.0 against
  15.2 µs side by side): the gateway's objects per request hold no cycles and go with their last
  reference, and in-process gen-0 collections ran 44 times in 200,000 requests. So the hub's start sets
  nothing for GC (no `gc.freeze()`, no threshold).

Where the rest goes: side by side under wrk (load 6 to 8) the gateway spent 9.1 µs of user time and
6.2 µs of system time per request, against 11.9 and 8.9 before this round (nginx: 2.8 and 5.3; the
relay floor: 1.5 and 4.5): the kernel's share is within 1 µs of nginx's, the same four reads and
writes per request. The user time is Python: about 6 µs in-process
(the transports replaced by lists): reading the request (its line, the remembered block, the `Request`
and the exchange), the resolver (`match` and `Forward`: about 0.5 µs here; the hub's forward resolver
also reads the credential), the head for the app, the answer head's reading, three llhttp callbacks per
message and the held writes. The benchmark's app answers the same head every time and a remembered
answer head (`passable_length`, an LRU keyed by its bytes) always hits here; a real app's heads differ
(`Date`, lengths), and each new one is read afresh (a few searches of the lowercased head). What would
take the gateway further is moving the head work out of Python (a C extension for the head reading and
rewrite), or more than one gateway process: gateway processes share nothing but the database (a
browser connection keeps its own connection to the app), so N of them on one port (`SO_REUSEPORT`, or N
hub replicas, which forward already supports) scale with cores as nginx's workers do; not measured
here, where two cores are already shared by the client, the app and the proxy.

**Streaming.** Per MiB the gateway spends {gw["cpu_ms_per_mib"]["proxy"]:.2f} ms of CPU against nginx's
{ngx["cpu_ms_per_mib"]["proxy"]:.2f} ms (with h11 it was 0.85 ms). After a `Content-Length` body's first
piece the parser steps aside: each read from the app (a `bytes` from uvloop's read buffer) is handed to
the browser's transport as it is, and the kernel takes it from there when the browser keeps up; a
chunked body goes through the parser (its pieces re-framed, not copied together). Flow control is the
transports' own: either side's write buffer past 1 MiB pauses reading on the other (asyncio's 64 KiB
default paused the app on nearly every 256 KiB read). The rate is {gw["stream_ratio"]:.2f}× nginx's in this run;
the client, the app and the proxy share two cores with other work, so the rates move from run to run
more than the CPU per MiB does.

**Idle websockets.** {st["idle_websockets"]:,} idle websockets cost the gateway {ws["delta_mib"]:.1f} MiB
({ws["per_ws_kib"]:.1f} KiB each: two sockets with their uvloop transports and two protocol objects; after the
101 the two transports are spliced by callbacks, with no task or coroutine per websocket),
{ssh["idle_ws"]["delta_mib"]:.1f} MiB in the hub over SSH (an asyncssh channel per websocket in place of a UNIX
connection).

**The SSH path.** Over SSH a request costs the hub {hub_us:,.0f} µs of CPU and the node's `ssh` client
{node_us:,.0f} µs, against {gw_us:,.0f} µs for the gateway alone (the hub's was 2,164 µs before this round); the time to first
byte goes from {gw["ttfb_p50_ms"]:.2f} ms to {ssh["ttfb_p50_ms"]:.2f} ms (p50). Where it went, and where it goes:

- the resolver's checks are reused for at most a second (`tether.forward.gateway.CHECK_SECONDS`): a
  live route's row per route, an allowed credential per route, credential (its SHA-256), source, method
  and upgrade. Uncached they cost, in-process, {chk["lookup_us"]:,.0f} µs (the route lookup),
  {chk["authorize_us"]:,.0f} µs (the token check) and two hops to a worker thread
  ({chk["thread_hop_us"]:,.0f} µs each), about {checks:,.0f} µs; that is now paid once a second per route and
  credential, not per request. An expiry or source caveat is checked on every request; a stop, revoke,
  unshare or disabled user is refused by the replica that made it at once (`tether.auth.epoch`) and by
  every other replica within the second (tests/forward/test_forward_replicas.py). A token that counts
  its uses is checked on every request;
- the apps resolver looked up an app instance of the route's name (a database read in a thread) before
  forward was asked, on every request; a name forward has seen live within the second now skips it
  (names are shared between the two, so it cannot be an instance);
- a browser connection keeps its SSH channel between requests (the upstream's `key`), so a request is a
  data packet each way, not a `CHANNEL_OPEN` round trip;
- the hub's SSH server offers AES-GCM only (`tether.ssh.embedded.CIPHERS`): OpenSSH takes its own
  first choice among those offered, chacha20-poly1305 and then AES-CTR, and in asyncssh chacha20-poly1305
  builds three cipher contexts per packet and CTR adds a separate MAC, where AES-GCM is one call
  (this run: {res["facts"].get("ssh_cipher", "?")}; measured on a quick run each, the hub's CPU per streamed
  MiB was 2.30 ms with chacha20, 1.93 ms with aes128-ctr + umac-64-etm, 1.33 ms with aes128-gcm);
- what remains is asyncssh's per-packet work in Python (framing, the MAC, the window) on the hub's event
  loop, which also serves the API: streaming costs the hub {ssh["cpu_ms_per_mib"]["hub"]:.2f} ms of CPU per MiB and
  the node's `ssh` {ssh["cpu_ms_per_mib"]["ssh client"]:.2f} ms, against {gw["cpu_ms_per_mib"]["proxy"]:.2f} ms for the
  gateway alone. A larger channel window and packet size (8 MiB, 128 KiB, against asyncssh's 2 MiB and
  32 KiB) measured no different, so the defaults stay;
- all of a route's traffic shares one TCP connection and one SSH transport: one browser's large
  download and another's page load queue behind each other there, not in the gateway.
"""


def write_docs(res: dict, args) -> None:
    from _docs import machine_lines, write_section

    v = versions(res)
    st = res["settings"]
    mib = st["stream_bytes"] >> 20
    extra = [(f"- nginx {v['nginx']} (worker_processes {st['nginx_workers']}), wrk {v['wrk']} "
              f"(-t{st['threads']} -c{st['connections']}, {st['seconds']:g} s per round after a 1 s warm-up, "
              f"{st['rounds']} round{'s' if st['rounds'] != 1 else ''} interleaved across the rows, median round "
              "shown; streaming: best round)"),
             (f"- gateway and app on {v['loop']}, httptools {v['httptools']}; the hub's SSH server asyncssh "
              f"{v['asyncssh']}, "
              f"the node's client {v['openssh']}, cipher {res['facts'].get('ssh_cipher', '?')}")]
    machine = machine_lines(cpu_note="wrk, the app, the proxies, the hub and ssh share them, and so does other "
                                     "work on the machine: read the CPU per request and per MiB more than the rates",
                            load=res["load_before"], extra=extra)
    body = f"""{SECTION}

Issue 16's performance goals: one app reached four ways, side by side in one run. The app is a tiny
raw asyncio server (`asyncio.Protocol` on uvloop, no framework: a canned 1 KiB answer, a long
response written in 256 KiB pieces, a websocket echo on the `websockets` package's sans-I/O
protocol), so that it is not the bottleneck (its CPU per request is in the table). It listens on a
UNIX socket and, for the "direct" row only, on a loopback TCP port, because wrk cannot speak to a
UNIX socket. nginx is Debian's with its own config: one worker (the gateway is one event loop),
`keepalive 64` to the app, unbuffered streaming with 64 KiB buffers (the gateway's read size), the
same `X-Forwarded-*` headers, no access log. "gateway → socket" is `tether.gateway.proxy.Gateway`
alone in a process, its resolver forwarding every request to the socket; "gateway → SSH forward" is
a real hub (`tether hub --ssh-listen … --gateway-listen …`, SQLite) where `ssh -N -R /{ROUTE}:APP.sock`
holds the route and every request carries a bearer token, so it is looked up and authorized as in
production.

Requests/s and the latency under load come from `wrk` ({st['connections']} keep-alive connections); the
time to first byte (one connection, one request at a time), streaming (one connection, one
{mib:,} MiB response) and the websocket echo (32-byte messages, one at a time) from one Python client,
the same for every row. Memory is VmRSS (`/proc/PID/status`) of the proxy just before and with
{st['idle_websockets']:,} websockets open and idle (nginx: master and worker; SSH row: the hub). CPU is
the proxy's user and system time (`/proc/PID/stat`) over the measured run, per request and per MiB.
A bare byte relay on the same event loop (no HTTP: each browser connection's bytes to one connection
to the app and back) runs one more wrk round, for the floor under a proxy written in Python.

Machine:

{chr(10).join(machine)}

Command (from the repository root):

```sh
{command_line(args)}
```

{table(res)}

{goals_table(res)}

Load average {res['load_before']:.2f} before the run and {res['load_after']:.2f} after, on
{os.cpu_count()} cores.

{notes(res)}"""
    write_section(SECTION, unwrap(body))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="256 MiB stream, 1 round of 3 s, fewer samples")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the section in docs/benchmarks.md")
    ap.add_argument("--seconds", type=float, help="measured seconds per wrk round (default 10; quick 3)")
    ap.add_argument("--rounds", type=int, help="rounds of wrk and of streaming (default 3; quick 1)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--stream-mib", type=int, help="size of the streamed response (default 1024; quick 256)")
    ap.add_argument("--idle-ws", type=int, default=1000, help="idle websockets for the memory measurement")
    ap.add_argument("--samples", type=int, help="time-to-first-byte samples (default 2000; quick 300)")
    ap.add_argument("--messages", type=int, help="websocket echoes (default 1000; quick 200)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before reading RSS")
    ap.add_argument("--nginx-workers", default="1", help="nginx worker_processes (default 1, like the gateway)")
    ap.add_argument("--rps", action="store_true",
                    help="only requests/s and CPU per request of nginx, the gateway and the relay floor (~1 min)")
    ap.add_argument("--profile", metavar="FILE", help="with --rps: cProfile the gateway, stats to FILE")
    ap.add_argument("--steps", nargs="+", metavar="COMMIT",
                    help="CPU per request of the gateway at each commit, side by side (a table of steps)")
    ap.add_argument("--serve-app", nargs=2, metavar=("SOCKET", "PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--serve-gateway", nargs=2, metavar=("SOCKET", "PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--serve-relay", nargs=2, metavar=("SOCKET", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_app:
        return serve_app(args.serve_app[0], int(args.serve_app[1]))
    if args.serve_gateway:
        return serve_gateway(args.serve_gateway[0], int(args.serve_gateway[1]), args.profile)
    if args.serve_relay:
        return serve_relay(args.serve_relay[0], int(args.serve_relay[1]))
    if args.rps:
        return rps_only(args)
    if args.steps:
        return steps(args)
    q = args.quick
    args.seconds = args.seconds or (3 if q else 10)
    args.rounds = args.rounds or (1 if q else 3)
    args.stream_mib = args.stream_mib or (256 if q else 1024)
    args.samples = args.samples or (300 if q else 2000)
    args.messages = args.messages or (200 if q else 1000)
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print_text(res)
    if args.write_docs:
        write_docs(res, args)
        say(f"wrote {SECTION!r} in docs/benchmarks.md")


if __name__ == "__main__":
    main()
