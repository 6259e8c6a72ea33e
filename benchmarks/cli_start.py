"""How fast tether's commands start: issue 22's targets, side by side with Python's floor.

Every command runs as a user runs it (the ``tether`` executable of this checkout's
.venv, a new process each time) against a real hub on loopback (``tests/hubproc.py``,
SQLite) and a local log file, next to ``python -c pass`` of the same interpreter, in
one run: the commands take turns, so a busy spell of the machine hits all of them.
Reported per command: the median wall time and the median CPU time (user + system,
from ``wait4``: what the command itself costs, whatever else the machine is doing),
and their ratio to the floor's. With ``--before EXE`` the same commands also run with
another ``tether`` executable (e.g. an older checkout's .venv/bin/tether), side by
side. Uses hyperfine's method (warm-up runs, then alternating timed runs), without
needing hyperfine.

Run from the repository root::

    .venv/bin/python benchmarks/cli_start.py                       # print the table
    .venv/bin/python benchmarks/cli_start.py --before ../main/.venv/bin/tether --write-docs
"""

from __future__ import annotations

import argparse
import os
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

from _docs import machine_lines, write_section  # noqa: E402  (benchmarks/ is the script's own directory)

from tests.hubproc import HubProcess  # noqa: E402
from tests.services.nats import NatsServer  # noqa: E402
from tests.services.nats_auth import OperatorAuth  # noqa: E402

SECTION = "## CLI start-up"
BIN = Path(sys.executable).parent

#: the issue's figures (hyperfine, 20 runs, one quiet run on this machine), by label
ISSUE_BEFORE = {
    "python -c pass (the floor)": 12, "tether whoami": 195, "tether token list": 185, "tether log add hello": 104,
    "tether log list": 110, "tether --help": 70, "tether signal -c CONF -s -v ping hello": 280,
}  # fmt: skip
#: main before issue 22's last step (6eb8236: this benchmark on a quieter machine, floor 11.3 ms): CPU median, ms
MAIN_BEFORE = {
    "python -c pass (the floor)": 11.3, "tether whoami": 54.3, "tether token list": 56.2,
    "tether token mint --expires 1h": 55.2, "tether audit --limit 20": 55.1, "tether log add hello": 53.5,
    "tether log list": 53.0, "tether --help": 12.6, "tether token mint --help": 12.2, "tether log list --help": 12.7,
    "tether signal send --help": 12.1, "tether signal -c CONF -s -v ping hello": 79.7,
    "tether signal -c CONF -s -t 1m -v ping hello (full path)": 184.1,
}  # fmt: skip
#: the goals, in ms (median wall time)
GOALS = {"hub": 60, "log": 60, "help": 40, "signal": 40}
QUIET_FLOOR = 12  # ms: `python -c pass` on the quiet machine the goals were set on

COMMANDS: list[tuple[str, str, list[str]]] = [  # (label, goal kind, argv after `tether`)
    ("tether whoami", "hub", ["whoami"]),
    ("tether token list", "hub", ["token", "list"]),
    ("tether token mint --expires 1h", "hub", ["token", "mint", "--expires", "1h"]),
    ("tether audit --limit 20", "hub", ["audit", "--limit", "20"]),
    ("tether log add hello", "log", ["log", "add", "hello"]),
    ("tether log list", "log", ["log", "list"]),
    ("tether --help", "help", ["--help"]),
    ("tether token mint --help", "help", ["token", "mint", "--help"]),
    ("tether log list --help", "help", ["log", "list", "--help"]),
    ("tether signal send --help", "help", ["signal", "send", "--help"]),
    ("tether signal -c CONF -s -v ping hello", "signal", ["signal", "-c", "CONF", "-s", "-v", "ping", "hello"]),
    # -t is no flag of the quick send: the full path (click, nats-py, asyncio), for comparison in the same run
    ("tether signal -c CONF -s -t 1m -v ping hello (full path)", "", ["signal", "-c", "CONF", "-s", "-t", "1m", "-v",
                                                                     "ping", "hello"]),
]


def signal_config(tmp: Path, url: str, creds: Path) -> Path:
    """A node config with a creds file, as a remaphore site has (the identity: a fixed test key)."""
    from tether.signal import core

    key = core.SigningKey.from_seed(bytes([7]) * 32)
    conf = tmp / "signal.conf"
    conf.write_text(f"server: {url}\ncredentials: {creds}\nsubject: bench\ndestination: org.bench.sender\n"
                    f"allow_skew: 5s\ndefault_identity: {key.public_b58}\n\n[ Identities ]\n{key.public_b58} {key.private_b58} [*]\n\n"
                    "[ Peers ]\n")
    return conf


REMAINING = (
    "What is left, by `python -X importtime` of each path. A hub command imports `http.client`, which "
    "brings the `email` package (it parses headers with it) and `ssl` (even for an http:// hub), then "
    "`json` and `pathlib`: about 3.5× the floor before tether's own modules, so these commands meet the "
    "5× goal by a small margin; the next cut would be an HTTP/1.1 client that parses headers without "
    "`email`. `log add`/`list` import `sqlite3`, `uuid`, `secrets`, `hashlib` and `dataclasses` (with "
    "`inspect`, for `tether.log.store.Record`). The quick `signal -s` was 79.7 ms of CPU, 7.0× the floor, "
    "before this step (main at 6eb8236, the same benchmark): it imported `cryptography`'s ed25519 API, the "
    "`base58` package (with `typing`), `nkeys` (PyNaCl's API: a second ed25519 library) and `dataclasses` "
    "(through `signal.core`, `signal.config` and `signal.goflags`). Now it imports what one send uses "
    "and no more (`tests/signal/test_quick_send.py` lists it): the config reader and the sending half of "
    "the protocol, `tether.signal.wire` (named tuples, not dataclasses; base58 written out; `hashlib`, "
    "`secrets` and `cryptography` only where a call needs them: verifying, generating a key), libsodium "
    "through PyNaCl's cffi module for both signatures (\"ed25519 for a one-shot send\" below compares the "
    "options), the nkey seed read with `base64` and `binascii`, `json` for the server's INFO and our "
    "CONNECT, `socket`, and `decimal` for an `allow_skew:` duration."
)


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one run; it must succeed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(cases: list[tuple[str, list[str]]], env: dict[str, str], cwd: Path, runs: int, warmup: int) -> dict[str, tuple[list[float], list[float]]]:
    res: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label, _ in cases}
    failed: set[str] = set()
    for i in range(warmup + runs):
        for label, argv in cases:
            if label in failed:
                continue
            try:
                wall, cpu = run_once(argv, env, cwd)
            except SystemExit as exc:
                if not label.startswith("before: "):
                    raise
                print(f"{label}: {exc} (left out)", file=sys.stderr)  # e.g. an older tether without creds support
                failed.add(label)
                continue
            if i >= warmup:
                res[label][0].append(wall)
                res[label][1].append(cpu)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="timed runs per command (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    ap.add_argument("--before", metavar="EXE", help="another tether executable to run side by side")
    ap.add_argument("--write-docs", action="store_true", help=f"rewrite {SECTION!r} in docs/benchmarks.md")
    args = ap.parse_args()

    exe = str(BIN / "tether")
    # as `make install` does: an editable install under PYTHONDONTWRITEBYTECODE never gets its
    # bytecode, and every run would compile the modules it imports
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tether-clistart-") as tmp:
        tmpdir = Path(tmp)
        hub = HubProcess(tmpdir / "hub").start()
        auth = OperatorAuth(tmpdir / "nats-auth")
        nats = NatsServer(tmpdir / "nats", config=auth.server_config(), jetstream=False).start()
        try:
            conf = str(signal_config(tmpdir, nats.url, auth.user_creds("bench")))
            env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_") and k != "COLUMNS"}
            env.update(HOME=str(tmpdir), XDG_CONFIG_HOME=str(tmpdir / "xdg"), TETHER_HUB=hub.url,
                       TETHER_TOKEN=hub.admin_token, TETHER_LOG_DB=str(tmpdir / "log.db"), TETHER_LOG_AUTHOR="bench")
            cases: list[tuple[str, list[str]]] = [("python -c pass (the floor)", [sys.executable, "-c", "pass"])]
            commands = [(label, kind, [conf if a == "CONF" else a for a in argv]) for label, kind, argv in COMMANDS]
            cases += [(label, [exe, *argv]) for label, _, argv in commands]
            if args.before:
                cases += [(f"before: {label}", [args.before, *argv]) for label, _, argv in commands]
            res = measure(cases, env, tmpdir, args.runs, args.warmup)
        finally:
            nats.stop()
            hub.stop()

    med = {label: (statistics.median(w) * 1000, statistics.median(c) * 1000) for label, (w, c) in res.items() if w}
    floor_wall, floor_cpu = med["python -c pass (the floor)"]
    head = "| command | issue's before: wall (ms) | 6eb8236: CPU (ms, × floor) |"
    head += " before, this run: wall · CPU (ms) |" if args.before else ""
    head += " wall median (ms) | × floor | CPU median (ms) | × floor | goal (ms, × floor) | met: CPU × floor · wall |"
    lines = [head, "|---|---:|---:|" + ("---:|" if args.before else "") + "---:|---:|---:|---:|---:|:---:|"]
    rows = [("python -c pass (the floor)", None), *[(label, kind) for label, kind, _ in COMMANDS]]
    for label, kind in rows:
        wall, cpu = med[label]
        before = ISSUE_BEFORE.get(label)
        main_cpu = MAIN_BEFORE.get(label)
        cells = [f"`{label}`", f"{before}" if before else "—",
                 f"{main_cpu} ({main_cpu / MAIN_BEFORE['python -c pass (the floor)']:.1f})" if main_cpu else "—"]
        if args.before:
            b = med.get(f"before: {label}")
            cells.append(f"{b[0]:.0f} · {b[1]:.0f}" if kind and b else "—")
        goal = GOALS.get(kind or "")
        # the goals are wall times on a quiet machine whose floor is 12 ms: held here as a ratio to the
        # floor, in CPU time (what a busy machine does not inflate), and in wall time when it is quiet
        met = "—"
        if goal is not None:
            ratio = goal / QUIET_FLOOR
            met = ("yes" if cpu / floor_cpu <= ratio else "no") + " · " + ("yes" if wall <= goal else "no")
        cells += [f"{wall:.1f}", f"{wall / floor_wall:.1f}", f"{cpu:.1f}", f"{cpu / floor_cpu:.1f}",
                  f"≤ {goal} (× {goal / QUIET_FLOOR:.1f})" if goal else "—", met]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        before_cmd = f" --before {args.before}" if args.before else ""
        body = "\n".join([
            SECTION, "",
            "Issue 22's targets: the wall time of the commonest commands, each a new process of the "
            "`tether` executable as a user runs it, against a real hub on loopback (SQLite) and a local "
            "log file, side by side with `python -c pass` of the same interpreter (the floor) in one run: "
            f"{args.warmup} warm-up rounds, then {args.runs} rounds in which the commands take turns; "
            "medians. CPU time (user + system of the process, from `wait4`) is what the command itself "
            "costs whatever else the machine does; on a busy machine the wall times grow several times over "
            "and the CPU times much less. The sources are byte-compiled first, as `make install` does. \"Issue's before\" is the issue's own table (hyperfine, one quiet run); "
            "\"6eb8236\" is main's CPU time before the quick send's last cut (this benchmark on a quieter "
            "machine, floor 11.3 ms). The goals are "
            "wall times on that quiet machine, where the floor was 12 ms; \"met\" holds each command's CPU time "
            "to the same multiple of this run's floor (60 ms: 5×, 40 ms: 3.3×), and its wall time to the goal "
            "itself, which only a quiet machine can show.",
            "", REMAINING, "", "Machine:", "",
            *machine_lines(cpu_note="the hub and the commands share them", load=load),
            "", "Command (from the repository root):", "", "```sh",
            f".venv/bin/python benchmarks/cli_start.py --write-docs{before_cmd}", "```", "", table, "",
        ])
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
