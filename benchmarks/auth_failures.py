"""What the failed-authentication limiter costs per failure, shared through PostgreSQL
(``tether.auth.failures.SharedFailureLimiter``: one upsert per failure) versus counted in
one process's memory (``tether.auth.ratelimit.FailureLimiter``, the baseline and what a
single hub on SQLite keeps), side by side in the same run.

It starts a real PostgreSQL (``tests.services.postgres``, durable commits as in
production), migrates a fresh database, and times ``failed()`` for failures spread over
100 sources, then ``retry_after()`` for a source known to be over its budget (the fast
refusal, which asks no one). CPU time counts this process and PostgreSQL's (its server
processes, read from /proc): the upsert's whole cost. Successful authentications never
call the limiter, so they pay nothing.

Run from the repository root (about 30 s)::

    .venv/bin/python benchmarks/auth_failures.py                 # prints a markdown table
    .venv/bin/python benchmarks/auth_failures.py --write-docs    # also updates docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from _docs import machine_lines, write_section  # noqa: E402  (benchmarks/ is the script's own directory)

HEADING = "## Failed-authentication limiter"
SOURCES = 100


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its children now alive."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _measure(call, n: int, pg_pid: int | None) -> tuple[float, float]:
    """(wall µs, CPU µs) per call of ``call(i)`` over ``n`` calls; CPU includes PostgreSQL's."""
    server0 = _tree_cpu(pg_pid) if pg_pid else 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        call(i)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    server = (_tree_cpu(pg_pid) - server0) if pg_pid else 0.0
    return wall / n * 1e6, (cpu + server) / n * 1e6


def run(n: int) -> list[tuple[str, float, float]]:
    from tests.services.postgres import PostgresServer

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from auth_rps import make_durable
    from tether.auth.failures import SharedFailureLimiter
    from tether.auth.ratelimit import FailureLimiter
    from tether.db import Database

    budget = 10**9  # never over: every call counts a failure
    keys = [f"192.0.2.{i}" for i in range(SOURCES)]
    with tempfile.TemporaryDirectory(prefix="tether-bench-failures-") as tmp:
        pg = PostgresServer(Path(tmp) / "pg")
        pg.start()
        try:
            make_durable(pg)
            db = Database(pg.create_database("failures"))
            db.migrate()
            memory = FailureLimiter(budget)
            shared = SharedFailureLimiter(db, budget)
            over = SharedFailureLimiter(db, 1)
            over.failed("198.51.100.1", time.monotonic())
            shared.failed(keys[0], time.monotonic())  # the pool's connection made, outside the timing
            rows = [
                ("failure counted in memory (baseline; SQLite's single hub)",
                 *_measure(lambda i: memory.failed(keys[i % SOURCES], time.monotonic()), n * 20, None)),
                ("failure counted in PostgreSQL (one upsert; replicas)",
                 *_measure(lambda i: shared.failed(keys[i % SOURCES], time.monotonic()), n, pg.pid)),
                ("refusal of a source known to be over (memory, no query)",
                 *_measure(lambda i: over.retry_after("198.51.100.1", time.monotonic()), n * 20, pg.pid)),
            ]
            for d in (shared, over, db):
                d.dispose()
        finally:
            pg.stop()
    return rows


def table(rows: list[tuple[str, float, float]]) -> str:
    base_cpu = rows[0][2]
    lines = ["| per call | wall µs | CPU µs (this process + PostgreSQL) | CPU vs baseline |", "|---|---:|---:|---:|"]
    for name, wall, cpu in rows:
        lines.append(f"| {name} | {wall:,.1f} | {cpu:,.1f} | {cpu / base_cpu:,.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="failures counted in PostgreSQL (default 3000)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = run(args.n)
    out = table(rows)
    print(out)
    shared = rows[1]
    if args.write_docs:
        body = "\n".join([
            HEADING, "",
            "What one failed authentication costs the hub to count, shared by replicas through PostgreSQL "
            "(one upsert of a row per source and minute, committed without waiting for the disk: a crash may "
            "forget the last counts, which only lets a source try a few more times) versus in one process's memory, in the same run. "
            "Successful authentications never reach the limiter. A source past its budget is refused "
            "from memory, without a query, until its minute ends.", "",
            out, "",
            f"Counting in PostgreSQL: {shared[1]:,.0f} µs and {shared[2]:,.0f} µs of CPU per failure, paid only "
            "by failures (the 61st and later of a source in a minute are refused from memory).", "",
            "Machine:",
            *machine_lines(cpu_note="shared with other work", load=load,
                           extra=["- PostgreSQL: Debian's, on loopback, fsync on (the limiter's commits do not wait for it)"]),
            "",
            f"Command: `.venv/bin/python benchmarks/auth_failures.py -n {args.n} --write-docs`",
        ])
        write_section(HEADING, body)


if __name__ == "__main__":
    main()
