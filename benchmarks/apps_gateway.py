"""Apps through the gateway: requests/s to an instance through the hub's gateway against
the same requests straight to its socket (issue 17).

A real hub (``tether hub --gateway-listen``, SQLite, as root) runs the demo app that ships
with tether (``tether.apps.demo``: the standard library's threading HTTP server) as an
instance in its sandbox. Side by side, interleaved in rounds, the same Python client
(raw sockets, HTTP/1.1 keep-alive, ``GET /api/whoami``, ~0.5 KiB answers):

* **direct**: to the instance's socket (``DATA/apps/run/ID/app.sock``), as root on the host;
* **gateway**: to the gateway's TCP port with the route's Host and a bearer token, so every
  request is authenticated, authorized, counted and relayed as in production.

Each with 1 connection (requests one after another: latency) and 8 connections (one
thread each: the client's GIL is shared by both rows alike). wrk (64 connections) adds the
gateway's rate under load; it cannot speak to a UNIX socket, so it has no direct row.

Run from the repository root, as root::

    .venv/bin/python benchmarks/apps_gateway.py                 # ~1 minute
    .venv/bin/python benchmarks/apps_gateway.py --write-docs    # also rewrite its section of docs/benchmarks.md
    .venv/bin/python benchmarks/apps_gateway.py --before e04f17f --write-docs  # and that commit's gateway, side by side

Everything it makes is named with the prefix ``tabg`` (``tabh`` for --before's hub) and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "src", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

PREFIX = "tabg"
BEFORE_PREFIX = "tabh"  # the --before hub's sandboxes: two hubs on one machine must not share names
SECTION = "## Apps gateway"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP/1.1 connection; ``get()`` sends one request and reads the whole answer."""

    def __init__(self, connect, host: str, token: str | None):
        self.sock = connect()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.request = f"GET /api/whoami HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()
        self.buf = b""

    def get(self) -> int:
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(
            b"content-length:"))
        while len(self.buf) < length:
            self.buf += self._recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        if status != 200:
            self.buf = body
        return status

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        return data

    def close(self) -> None:
        self.sock.close()


def run_clients(make, connections: int, seconds: float) -> tuple[float, list[float]]:
    """(requests/s, latencies in s) over ``seconds`` with ``connections`` client threads."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            c = make()
            try:
                while time.monotonic() < stop:
                    t = time.perf_counter()
                    status = c.get()
                    if status != 200:
                        raise RuntimeError(f"answered {status}: {c.buf[:300]!r}")
                    latencies[i].append(time.perf_counter() - t)
            finally:
                c.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}")
    flat = [x for lat in latencies for x in lat]
    return len(flat) / (time.monotonic() - started), flat


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def wrk(port: int, host: str, token: str, seconds: float) -> dict:
    argv = ["wrk", "-t2", "-c64", f"-d{seconds:g}s", "--latency", "-H", f"Host: {host}", "-H",
            f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/api/whoami"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec"))
    p50 = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("50%"))
    return {"rps": rps, "p50": p50}


def start_hub(tmp: Path, prefix: str = PREFIX, src: Path | None = None) -> tuple[subprocess.Popen, str, int, str]:
    """A hub in ``tmp`` (its sandboxes named ``prefix``...); ``src``: run that source tree's tether instead."""
    api, gw = free_port(), free_port()
    env = {**os.environ, "TETHER_APPS_PREFIX": prefix}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    env.pop("TETHER_TOKEN", None)
    log = open(tmp / "hub.log", "wb")
    hub = subprocess.Popen([sys.executable, "-m", "tether", "hub", "--data", str(tmp / "data"), "--listen",
                            f"127.0.0.1:{api}", "--gateway-listen", f"127.0.0.1:{gw}"], env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{api}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or hub.poll() is not None:
            raise RuntimeError((tmp / "hub.log").read_text())
        time.sleep(0.1)
    return hub, f"http://127.0.0.1:{api}", gw, (tmp / "data" / "admin.token").read_text().strip()


def hub_cpu(pid: int) -> float:
    """The hub process's CPU time so far (user + system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tether(url: str, token: str, *args: str) -> str:
    env = {**os.environ, "TETHER_HUB": url, "TETHER_TOKEN": token}
    r = subprocess.run([sys.executable, "-m", "tether", *args], capture_output=True, text=True, env=env, timeout=120)
    if r.returncode:
        raise RuntimeError(f"tether {' '.join(args)}: {r.stderr}")
    return r.stdout


def deploy(tmp: Path, prefix: str, src: Path | None = None) -> dict:
    """A hub in ``tmp`` running the demo as its admin's instance: its process, gateway port, token, route, socket."""
    tmp.mkdir()
    hub, url, gw, token = start_hub(tmp, prefix, src)
    tether(url, token, "space", "create", "apps")
    subprocess.run([sys.executable, "-m", "tether.apps.demo", "--copy", str(tmp / "demo")], check=True)
    tether(url, token, "app", "register", "demo", "--space", "apps", "--dir", str(tmp / "demo"), "--cpu", "2",
           "--pids", "256", "--cmd", "python3", "app.py")
    st = json.loads(tether(url, token, "app", "spawn", "demo", "--json"))
    return {"hub": hub, "gw": gw, "token": token, "host": f"demo--{st['user']}.localhost:{gw}",
            "sock": str(tmp / "data" / "apps" / "run" / st["id"] / "app.sock")}


def undeploy(tmp: Path, prefix: str, hub: subprocess.Popen | None) -> None:
    if hub is not None:
        hub.send_signal(signal.SIGTERM)
        hub.wait(30)
    from tether.apps.sandbox import Sandboxes

    sb = Sandboxes(tmp / "data" / "apps" / "sandboxes", prefix=prefix)
    for inst in sb.present():
        sb.remove(inst)
    data = f"{tmp / 'data' / 'apps' / 'data'}/"  # instances' /data filesystems stay mounted until `app rm`
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4].startswith(data):
            subprocess.run(["umount", line.split()[4]], check=False)


def run(args) -> dict:
    if os.geteuid() != 0:
        sys.exit("run as root: instances run in sandboxes")
    tmp = Path(tempfile.mkdtemp(prefix="tabg-"))
    setups: dict[str, dict] = {}
    try:
        setups["gateway"] = deploy(tmp / "now", PREFIX)
        if args.before:  # the same benchmark against that commit's code, side by side
            src = tmp / "before"
            src.mkdir()
            tree = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src"], capture_output=True,
                                  check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=tree, check=True)
            setups["before"] = deploy(tmp / "then", BEFORE_PREFIX, src / "src")
        now = setups["gateway"]

        def direct():
            s = socket.socket(socket.AF_UNIX)
            s.connect(now["sock"])
            return Client(lambda: s, "app", None)

        def gateway(setup):
            return lambda: Client(lambda: socket.create_connection(("127.0.0.1", setup["gw"])), setup["host"],
                                  setup["token"])

        rows = {"direct": (direct, now["hub"]), **{k: (gateway(v), v["hub"]) for k, v in setups.items()}}
        results: dict = {(r, c): [] for r in rows for c in (1, 8)}
        for rnd in range(args.rounds):
            for conns in (1, 8):
                for name, (make, hub) in rows.items():
                    run_clients(make, conns, 0.5)  # warm-up
                    cpu = hub_cpu(hub.pid)
                    rps, lat = run_clients(make, conns, args.seconds)
                    cpu = hub_cpu(hub.pid) - cpu  # the hub's own CPU time: its gateway's cost, whatever the load
                    results[(name, conns)].append((rps, pct(lat, 0.5), pct(lat, 0.99), cpu / (rps * args.seconds)))
                    print(f"round {rnd + 1}: {name} x{conns}: {rps:,.0f} req/s", file=sys.stderr)
        load = wrk(now["gw"], now["host"], now["token"], args.seconds) if shutil.which("wrk") else None
        return {"results": results, "wrk": load, "rounds": args.rounds, "seconds": args.seconds,
                "before": args.before}
    finally:
        for name, prefix in (("now", PREFIX), ("then", BEFORE_PREFIX)):
            key = "gateway" if name == "now" else "before"
            undeploy(tmp / name, prefix, setups.get(key, {}).get("hub"))
        shutil.rmtree(tmp, ignore_errors=True)


def median_round(rounds: list[tuple[float, ...]]) -> tuple[float, ...]:
    return sorted(rounds)[len(rounds) // 2]


def table(out: dict) -> str:
    r = {k: median_round(v) for k, v in out["results"].items()}
    before = out.get("before")
    head = "| measurement | direct to the instance's socket | through the gateway | ratio |"
    rule = "|---|---:|---:|---:|"
    if before:
        head += f" through the gateway at {before} | ratio |"
        rule += "---:|---:|"
    lines = [head, rule]
    for conns in (1, 8):
        d, g = r[("direct", conns)], r[("gateway", conns)]
        b = r.get(("before", conns))
        n = f"{conns} connection{'s' if conns > 1 else ''}"
        lines.append(f"| requests/s, {n} | {d[0]:,.0f} | {g[0]:,.0f} | {g[0] / d[0]:.2f}× |" +
                     (f" {b[0]:,.0f} | {b[0] / d[0]:.2f}× |" if b else ""))
        lines.append(f"| latency p50 / p99, {n}, ms | {d[1] * 1000:.2f} / {d[2] * 1000:.2f} | "
                     f"{g[1] * 1000:.2f} / {g[2] * 1000:.2f} | |" +
                     (f" {b[1] * 1000:.2f} / {b[2] * 1000:.2f} | |" if b else ""))
        lines.append(f"| the hub's CPU time per request, {n}, µs | {d[3] * 1e6:.0f} (idle) | {g[3] * 1e6:.0f} | |" +
                     (f" {b[3] * 1e6:.0f} | {b[3] / g[3]:.1f}× the CPU |" if b else ""))
    if out["wrk"]:
        lines.append(f"| requests/s, wrk, 64 connections | — | {out['wrk']['rps']:,.0f} (p50 {out['wrk']['p50']}) | |" +
                     (" | |" if before else ""))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--before", metavar="COMMIT", help="also run the gateway of COMMIT's code (git archive), side by "
                    "side: e.g. e04f17f, before the gateway reused its checks")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    out = run(args)
    text = table(out)
    print(text)
    if args.write_docs:
        from _docs import machine_lines, write_section

        body = "\n".join([
            SECTION, "",
            "Issue 17: requests/s to an app instance through the hub's gateway against the same requests straight "
            "to its socket. The app is the shipped demo (`tether.apps.demo`, the standard library's threading HTTP "
            "server, HTTP/1.1 keep-alive) in its sandbox (cgroup limits: 2 cores, 256 processes); the hub is real "
            "(SQLite), and every gateway request carries a bearer token, so it is authenticated, authorized against "
            "the instance's owner and scopes, counted and relayed. One Python client (raw sockets, keep-alive, "
            "`GET /api/whoami`, ~0.5 KiB answers) for both rows, interleaved over "
            f"{out['rounds']} rounds of {out['seconds']:g} s (median round shown). wrk cannot speak to a UNIX socket: "
            "its row is the gateway's only. The hub's CPU time per request (user + system of the hub process over "
            "a row, from /proc, divided by its requests) is the gateway's cost whatever else the machine runs; "
            "in the direct rows the hub only idles.", "",
            "Machine:", "",
            *machine_lines(cpu_note="the client, the hub and the app share them", load=load),
            "", "Command (from the repository root, as root):", "",
            "```sh", ".venv/bin/python benchmarks/apps_gateway.py" + (f" --before {out['before']}" if out["before"]
                                                                     else "")
            + (f" --rounds {out['rounds']}" if out["rounds"] != 3 else "") + " --write-docs", "```", "",
            text, "",
            "The gateway adds a TCP hop and an HTTP parse on each side (httptools). The instance's row and the "
            "token's check are read from the database once a second per replica, not per request "
            "(`tether.auth.recent.CHECK_SECONDS`, forward's pattern: what this replica takes away is refused "
            "at once, what another takes away within the second; tests/apps/test_gateway_cache_apps.py holds both "
            "bounds), so a request costs no database read and no thread hop; a request so known is decided at once "
            "(the resolver's `now`, as for forward routes): no task, no turn of the event loop. `--before COMMIT` "
            "runs, side by side in the same rounds, a second hub on COMMIT's code (its own sandbox prefix, the same "
            "app): 4117088's gateway awaited a task per such request; e04f17f's read the row and the check per "
            "request in a thread (1,304 µs of CPU per request over 1 connection against 144, measured 2026-12-07 "
            "03:58 at load 1.9). "
            "The demo app is itself slow (a Python thread per connection), so the ratio says more about the "
            "gateway's cost per request than the absolute rates do. The forward gateway's section above measures "
            "the same proxy against nginx.",
        ])
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
