"""Log sync at scale: two logs of 1,000,000 records, reconciled over SSH and HTTP.

Issue 4's performance targets, against real components on 127.0.0.1: a local
log (SQLite, ``tether.log.store.LogStore``) and a hub process holding the other
log in its own database (``log_records``), reached

* over **SSH**: a real OpenSSH server, the hub's server account, its
  ``authorized_keys`` written by ``tether key authorized-keys`` and the forced
  command ``tether ssh-serve user1`` (the set-up of ``tests/log/test_log_ssh.py``,
  reused through its ``ssh_world`` helper), the client being ``SshRemote`` (the
  user's ``ssh`` binary);
* over **HTTP**: the same hub's API with a token of user1 (``HttpRemote``).

Both logs hold N records (default 1,000,000) that differ by D (0, 100 and
100,000; half on each side, spread at random over the id range). For each D
and transport it measures the reconciliation alone (median of ``--repeat``
runs; rounds, bytes both ways, and the ids each side learned are checked to be
exactly the difference), then one full ``sync()`` (reconcile, pull, push) and
undoes it so the next run starts from the same two logs.

The logs are built directly: ids are UUIDv7s made here, rows go in with one
``executemany`` per table in one transaction (the hub's straight into its
``log_records`` table), not through the API.

    .venv/bin/python benchmarks/log_sync.py                 # print the table
    .venv/bin/python benchmarks/log_sync.py --records 100000   # a quick run
    .venv/bin/python benchmarks/log_sync.py --write-docs    # also rewrite "Log sync" in docs/benchmarks.md

Run as root (sshd, the server account). Everything lives in one temporary
directory that is removed afterwards; the hub and sshd are stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pwd
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tether.log.client import CLIENT_FRAME_LIMIT, HttpRemote, SshRemote, parse_remote_url, sync  # noqa: E402
from tether.log.reconcile import Reconciler  # noqa: E402
from tether.log.store import LogStore, Record, record_digest, record_to_wire  # noqa: E402

from _docs import machine_lines, sh, write_section  # noqa: E402  (benchmarks/ is the script's own directory)

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Log sync"
T0 = 1_700_000_000_000
M62 = (1 << 62) - 1
ID_LINE = 37  # the PoC's id on the wire: 36 characters of UUID text and a newline
LOAD_BEFORE = 0.0


def log(msg: str) -> None:
    print(f"[log_sync] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ data


def make_ids(total: int, rng: random.Random) -> list[bytes]:
    """``total`` UUIDv7s in increasing order, 3 ms apart, random bits as in ``uuid7``."""
    out = []
    for k in range(total):
        r = rng.getrandbits(74)
        v = ((T0 + 3 * k) << 80) | (0x7 << 76) | ((r >> 62) << 64) | (0b10 << 62) | (r & M62)
        out.append(v.to_bytes(16, "big"))
    return out


def body_of(i: bytes) -> str:
    return f"benchmark record {i.hex()[-12:]}: build passed on runner 7, 1234 tests, 0 failures"


def record(i: bytes, author: str) -> Record:
    return Record(str(uuid.UUID(bytes=i)), int.from_bytes(i[:6], "big"), author, "text", body_of(i))


def row(i: bytes, author: str) -> tuple[bytes, int, str, str, str, bytes]:
    """A record as the stores keep it: with its content tag, as a push or an add writes it."""
    r = record(i, author)
    return (i, r.created, r.author, r.kind, r.body, record_digest(r))


def wire_size(i: bytes, author: str) -> int:
    return len(json.dumps(record_to_wire(record(i, author)), ensure_ascii=False).encode())


@dataclass
class Data:
    common: list[bytes]  # on both sides
    hub_extra: list[bytes]  # B: on the hub (and in the client's base log); random order
    client_extra: list[bytes]  # A: only on the client side; random order
    n: int


def make_data(n: int, half_max: int, seed: int) -> Data:
    rng = random.Random(seed)
    ids = make_ids(n + half_max, rng)
    picks = rng.sample(range(len(ids)), 2 * half_max)
    a = [ids[k] for k in picks[:half_max]]
    b = [ids[k] for k in picks[half_max:]]
    taken = set(picks)
    common = [i for k, i in enumerate(ids) if k not in taken]
    return Data(common, b, a, n)


# Authors: the hub's records (common + B) are user2's; the client's own (A) are
# user1's, so user1 may push them.
HUB_AUTHOR, CLIENT_AUTHOR = "user2", "user1"


def build_client(path: Path, data: Data) -> LogStore:
    store = LogStore(path)
    rows = sorted(data.common + data.hub_extra)
    with store.conn:
        store.conn.execute("BEGIN")
        store.conn.executemany("INSERT INTO records (id, created, author, kind, body, digest) VALUES (?, ?, ?, ?, ?, ?)",
                               (row(i, HUB_AUTHOR) for i in rows))
        store.conn.execute("COMMIT")
    return store


def hub_db(data_dir: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(data_dir / "tether.db", isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def bump_head(conn: sqlite3.Connection, space_id: int) -> None:
    """What a push does to the space's head: a new version (the hub's cached ids of
    the space are then stale) and the record count. Inside the caller's transaction."""
    conn.execute(
        "INSERT INTO log_heads (space_id, version, records) "
        "VALUES (?, ?, (SELECT count(*) FROM log_records WHERE space_id = ?)) "
        "ON CONFLICT (space_id) DO UPDATE SET version = excluded.version, records = excluded.records",
        (space_id, os.urandom(16).hex(), space_id))


def fill_hub(conn: sqlite3.Connection, space_id: int, data: Data) -> None:
    now = datetime.now(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    rows = sorted(data.common + data.hub_extra)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO log_records (space_id, id, created, author, kind, body, digest, pushed_by, pushed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((space_id, *row(i, HUB_AUTHOR), HUB_AUTHOR, now) for i in rows))
    bump_head(conn, space_id)
    conn.execute("COMMIT")


def hub_insert(conn: sqlite3.Connection, space_id: int, ids: list[bytes], author: str) -> None:
    now = datetime.now(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO log_records (space_id, id, created, author, kind, body, digest, pushed_by, "
                     "pushed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     ((space_id, *row(i, author), author, now) for i in ids))
    bump_head(conn, space_id)
    conn.execute("COMMIT")


def hub_delete(conn: sqlite3.Connection, space_id: int, ids: list[bytes]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("DELETE FROM log_records WHERE space_id = ? AND id = ?", ((space_id, i) for i in ids))
    bump_head(conn, space_id)
    conn.execute("COMMIT")


def client_insert(store: LogStore, ids: list[bytes], author: str) -> None:
    store.conn.execute("BEGIN")
    store.conn.executemany("INSERT INTO records (id, created, author, kind, body, digest) VALUES (?, ?, ?, ?, ?, ?)",
                           (row(i, author) for i in ids))
    store.conn.execute("COMMIT")


def client_delete(store: LogStore, ids: list[bytes]) -> None:
    store.conn.execute("BEGIN")
    store.conn.executemany("DELETE FROM records WHERE id = ?", ((i,) for i in ids))
    store.conn.execute("COMMIT")


# ------------------------------------------------------------------ measurement


@dataclass
class Cell:
    transport: str
    diffs: int
    rec_times: list[float] = field(default_factory=list)
    rounds: int = 0
    rec_bytes: int = 0
    connect: float = 0.0  # ssh: handshake + forced command start + hello; http: 0 (connects on first request)
    sync_time: float = 0.0
    sync_bytes: int = 0
    moved_bytes: int = 0  # wire size (JSON) of the records that moved
    pushed: int = 0
    pulled: int = 0

    @property
    def rec_time(self) -> float:
        return statistics.median(self.rec_times)

    @property
    def rec_first(self) -> float:
        """The first run after the hub's log changed: the hub reads the space's ids
        from its database (over SSH every run does: each is a new ``ssh-serve``)."""
        return self.rec_times[0]

    @property
    def rec_worst(self) -> float:
        return max(self.rec_times)


def reconcile_only(store: LogStore, remote: HttpRemote | SshRemote) -> tuple[int, set[bytes], set[bytes]]:
    """The reconciliation loop of ``tether.log.client.sync`` (same frame limit), returning what it learned."""
    rec = Reconciler(store.range_storage(), frame_limit=CLIENT_FRAME_LIMIT)
    msg: bytes | None = rec.initiate()
    rounds = 0
    while msg is not None:
        reply = remote.reconcile(msg)
        rounds += 1
        if reply is None:
            break
        msg = rec.reconcile(reply).reply
    return rounds, set(rec.have), set(rec.need)


class Transports:
    def __init__(self, world: dict, token: str):
        self.world = world
        self.token = token

    def open(self, transport: str) -> tuple[HttpRemote | SshRemote, float]:
        from tests.log.test_log_ssh import _ssh_prefix, remote_url

        t = time.perf_counter()
        if transport == "ssh":
            rem: HttpRemote | SshRemote = SshRemote(parse_remote_url(remote_url(self.world)), "sync",
                                                    prefix=_ssh_prefix(self.world, "user1"))
        else:
            rem = HttpRemote(parse_remote_url(f"{self.world['hub'].url}/shared"), self.token)
        return rem, time.perf_counter() - t


def measure(cell: Cell, tr: Transports, store: LogStore, a: list[bytes], b: list[bytes], repeat: int,
            hubconn: sqlite3.Connection, space_id: int) -> None:
    for k in range(repeat):
        rem, connect = tr.open(cell.transport)
        try:
            t = time.perf_counter()
            rounds, have, need = reconcile_only(store, rem)
            cell.rec_times.append(time.perf_counter() - t)
            if k == 0:
                cell.connect = connect
            cell.rounds = rounds
            cell.rec_bytes = rem.bytes
        finally:
            rem.close()
        if have != set(a) or need != set(b):
            raise SystemExit(f"{cell.transport} d={cell.diffs}: reconciliation learned the wrong sets "
                             f"({len(have)} to push, {len(need)} to pull; expected {len(a)} and {len(b)})")
        log(f"  {cell.transport} d={cell.diffs}: reconcile {cell.rec_times[-1]:.2f} s, {rounds} rounds, "
            f"{cell.rec_bytes:,} B")
    # one full sync (reconcile, pull, push), then undo it
    rem, _ = tr.open(cell.transport)
    try:
        t = time.perf_counter()
        res = sync(store, rem)
        cell.sync_time = time.perf_counter() - t
    finally:
        rem.close()
    cell.sync_bytes, cell.pushed, cell.pulled = res.bytes, res.pushed, res.pulled
    if (res.pushed, res.pulled) != (len(a), len(b)):
        raise SystemExit(f"{cell.transport} d={cell.diffs}: sync moved {res.pushed}/{res.pulled}, "
                         f"expected {len(a)}/{len(b)}")
    cell.moved_bytes = sum(wire_size(i, CLIENT_AUTHOR) for i in a) + sum(wire_size(i, HUB_AUTHOR) for i in b)
    log(f"  {cell.transport} d={cell.diffs}: sync {cell.sync_time:.2f} s, {res.bytes:,} B "
        f"({cell.moved_bytes:,} B of records)")
    client_delete(store, b)
    hub_delete(hubconn, space_id, a)


# ------------------------------------------------------------------ report


def fmt_b(x: float) -> str:
    if x >= 1 << 20:
        return f"{x / (1 << 20):.1f} MiB"
    if x >= 1 << 10:
        return f"{x / (1 << 10):.1f} KiB"
    return f"{int(x)} B"


def round_limit(n: int) -> int:
    return math.ceil(math.log(n, 16)) + 2 if n > 1 else 2


def poc_bytes(n: int, rec_line: float) -> float:
    """The PoC's sync, push then pull: every record pushed as a line, then every id sent as a line."""
    return n * rec_line + n * ID_LINE


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(cells: list[Cell], n: int, rec_line: float, repeat: int) -> str:
    lim = round_limit(n)
    out = [
        f"| transport | differences | rounds (limit {lim}) | reconcile: bytes both ways | reconcile: time, "
        f"first run | reconcile: time, median of {repeat} (slowest) | ssh connect | full sync: time | "
        f"full sync: bytes beyond the records | PoC bytes / ours | targets met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    poc = poc_bytes(n, rec_line)
    for c in cells:
        beyond = c.sync_bytes - c.moved_bytes
        if c.diffs == 100 or (c.diffs > 0 and c.diffs == min(x.diffs for x in cells if x.diffs > 0) and
                              not any(x.diffs == 100 for x in cells)):
            ok = [c.rounds <= lim, beyond <= 64 * 1024, poc / c.sync_bytes >= 100, c.rec_worst <= 5]
            met = (f"rounds {yes(ok[0])}; ≤ 64 KiB {yes(ok[1])}; ≥ 100× {yes(ok[2])}; ≤ 5 s {yes(ok[3])}")
        else:
            met = "— (reported)"
        out.append(
            f"| {c.transport.upper()} | {c.diffs:,} | {c.rounds} | {c.rec_bytes:,} B ({fmt_b(c.rec_bytes)}) | "
            f"{c.rec_first:.2f} s | {c.rec_time:.2f} s ({c.rec_worst:.2f} s) | "
            f"{f'{c.connect:.2f} s' if c.transport == 'ssh' else '—'} | "
            f"{c.sync_time:.2f} s ({c.pushed:,} pushed, {c.pulled:,} pulled) | {beyond:,} B ({fmt_b(beyond)}) | "
            f"{poc / c.sync_bytes:,.0f}× | {met} |")
    return "\n".join(out)


def machine_facts(build_s: float) -> list[str]:
    fs = sh(["findmnt", "-n", "-o", "FSTYPE", "-T", tempfile.gettempdir()]) or "?"
    return machine_lines(
        cpu_note="the client, ssh, sshd, the forced command and the hub share them",
        memory_note=f"both databases in the page cache (built just before), on {fs}",
        load=LOAD_BEFORE,
        extra=[f"- SQLite {sqlite3.sqlite_version}; the hub on SQLite; building the two logs took {build_s:.0f} s",
               f"- {sh(['ssh', '-V'])}; the forced command runs Debian's `/usr/bin/python3` "
               "(see `tests/log/test_log_ssh.py`)"],
    )


def main(argv: list[str] | None = None) -> int:
    global LOAD_BEFORE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="records in each log (default 1,000,000)")
    ap.add_argument("--diffs", default="0,100,100000", help="comma-separated differences (half on each side)")
    ap.add_argument("--transports", default="ssh,http", help="comma-separated: ssh,http")
    ap.add_argument("--repeat", type=int, default=3, help="reconciliations per cell (median shown; default 3)")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--write-docs", action="store_true", help=f"update the section in {DOCS.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    n = args.records
    diffs = [int(x) for x in args.diffs.split(",") if x.strip()]
    if any(d % 2 or d // 2 >= n for d in diffs):
        ap.error("differences must be even and less than twice --records")
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if os.geteuid() != 0:
        ap.error("run as root: it starts sshd and logs in as the server account")
    LOAD_BEFORE = os.getloadavg()[0]
    if LOAD_BEFORE > 1.0:
        log(f"warning: load average is {LOAD_BEFORE:.2f}; other processes will skew the numbers")

    from tests.log.test_log_ssh import ssh_world

    half_max = max(diffs) // 2
    base = Path(tempfile.mkdtemp(prefix="tether-logsync-"))
    cells: list[Cell] = []
    hubconn = store = None
    try:
        t_build = time.perf_counter()
        log(f"making {n + half_max:,} ids")
        data = make_data(n, half_max, args.seed)
        log("building the client's log")
        store = build_client(base / "client" / "log.db", data)
        # a generous idle timeout: the client hashes 1M ids between rounds
        (base / "ssh").mkdir()
        with ssh_world(base / "ssh", idle=120) as world:
            hub = world["hub"]
            with hub.admin() as c:
                r = c.post("/api/v1/tokens", json={"for_user": "user1"})
                r.raise_for_status()
                token = r.json()["token"]
            hubconn = hub_db(world["data"])
            space_id = hubconn.execute("SELECT id FROM spaces WHERE name = 'shared'").fetchone()[0]
            log("filling the hub's log_records")
            fill_hub(hubconn, space_id, data)
            pw = pwd.getpwnam(world["account"])
            for p in world["data"].iterdir():  # files SQLite may have created as root
                os.chown(p, pw.pw_uid, pw.pw_gid)
            build_s = time.perf_counter() - t_build
            with hub.admin() as c:
                assert c.get("/api/v1/log/shared").json()["records"] == n
            assert len(store) == n
            log(f"built in {build_s:.0f} s")
            tr = Transports(world, token)
            for d in diffs:
                h = d // 2
                a, b = data.client_extra[:h], data.hub_extra[:h]
                client_delete(store, b)  # the client lacks h of the hub's records...
                client_insert(store, a, CLIENT_AUTHOR)  # ...and holds h of its own
                for t in transports:
                    cell = Cell(t, d)
                    measure(cell, tr, store, a, b, args.repeat, hubconn, space_id)
                    cells.append(cell)
                client_delete(store, a)
                client_insert(store, b, HUB_AUTHOR)
    finally:
        if store is not None:
            store.close()
        if hubconn is not None:
            hubconn.close()
        shutil.rmtree(base, ignore_errors=True)

    rec_line = statistics.mean(wire_size(i, HUB_AUTHOR) for i in data.common[:1000]) + 1
    tab = table(cells, n, rec_line, args.repeat)
    print(tab)
    if args.write_docs:
        write_docs(section(cells, n, rec_line, args, tab, build_s))
        log(f"wrote {SECTION!r} in {DOCS.relative_to(ROOT)}")
    return 0


def section(cells: list[Cell], n: int, rec_line: float, args: argparse.Namespace, tab: str, build_s: float) -> str:
    cmd = ".venv/bin/python benchmarks/log_sync.py --write-docs"
    if args.records != 1_000_000:
        cmd = f".venv/bin/python benchmarks/log_sync.py --records {args.records} --write-docs"
    poc = poc_bytes(n, rec_line)
    intro = (
        f"Issue 4's targets: two logs of {n:,} records each, differing by 0, 100 (50 on each side) and 100,000 "
        "(50,000 on each side) records spread at random over the id range, reconciled by the client "
        "(`tether.log.client`) with a real hub: **over SSH** to a real OpenSSH server on 127.0.0.1, into the hub's "
        "server account, whose `authorized_keys` comes from `tether key authorized-keys` and forces "
        "`tether ssh-serve user1` (the set-up of `tests/log/test_log_ssh.py`), and **over HTTP** to the same hub "
        "process with a token of user1. The local log is a `LogStore` SQLite file; the hub's log is its "
        "`log_records` table (SQLite), filled directly (with the `log_heads` row a push would write). Records are short text records "
        f"({rec_line - 1:.0f} bytes each as JSON on the wire). \"Reconcile\" is the reconciliation loop of `sync()` "
        "alone (same frame limit; every run checked to learn exactly the ids each side lacks), "
        f"{args.repeat} runs, each on a fresh connection, the first right after the hub's log changed; its time excludes the SSH connection (shown apart: "
        "handshake, forced command start-up, hello). \"Full sync\" is one `sync()` — reconcile, pull, push — after "
        "which the records that moved are deleted again, so every run starts from the same two logs. Bytes are what "
        "the client counts: request and response bodies over HTTP, whole frames over SSH (SSH's and HTTP's own "
        "headers, encryption and TCP are not counted). \"Beyond the records\" subtracts the JSON of the records "
        "that moved."
    )
    poc_txt = (
        f"The PoC's method is computed, not run: its `push` sends every record and its `pull` sends every id, as "
        f"lines of text, so one push and one pull of a {n:,}-record log send at least {n:,} × {rec_line:.0f} B "
        f"(a record as above, plus a newline) + {n:,} × {ID_LINE} B (a UUID and a newline) = {fmt_b(poc)}, "
        "whatever the difference; the \"PoC bytes / ours\" column divides that by our full sync's bytes."
    )
    return "\n".join([
        SECTION, "", intro, "", poc_txt, "", "Machine:", "", *machine_facts(build_s), "",
        "Command (from the repository root, as root):", "", "```sh", cmd, "```", "", tab, "",
        interpretation(cells, n, rec_line), ""])


def interpretation(cells: list[Cell], n: int, rec_line: float) -> str:
    out = []
    lim = round_limit(n)
    poc = poc_bytes(n, rec_line)
    for c in cells:
        if c.diffs != 100:
            continue
        beyond = c.sync_bytes - c.moved_bytes
        ok = c.rounds <= lim and beyond <= 64 * 1024 and poc / c.sync_bytes >= 100 and c.rec_worst <= 5
        out.append(
            f"**{c.transport.upper()}, 100 differences: {'all targets met' if ok else 'missed (see below)'}**: "
            f"{c.rounds} rounds (limit {lim}), {c.sync_bytes - c.moved_bytes:,} B beyond the records "
            f"(limit 65,536), {poc / c.sync_bytes:,.0f}× fewer bytes than the PoC's method, reconciliation in "
            f"{c.rec_worst:.2f} s at worst (limit 5 s; first run {c.rec_first:.2f} s, median {c.rec_time:.2f} s).")
    zero = [c for c in cells if c.diffs == 0]
    if zero:
        out.append(
            "**Where the time goes.** Each side reads its ids and their content tags once per sync into two "
            "sorted blobs (24 B per record) and answers every round from them: a range fingerprint is a binary "
            "search and a SHA-256 over two slices (a million records hash in about 15 ms). With no difference (" + ", ".join(
                f"{c.transport.upper()} first {c.rec_first:.2f} s, median {c.rec_time:.2f} s" for c in zero)
            + ") the time is those reads: the client's index scan of its SQLite file (about 0.5 s for a million "
            "records) and the hub's. Over SSH every sync runs a new `ssh-serve`, which reads the space's ids once "
            "(its Python start-up is in the \"ssh connect\" column). Over HTTP the hub keeps the space's ids in "
            "memory between requests (`log_cache_bytes`) and checks the space's `log_heads.version` (one "
            "primary-key read) each round: the first run after a change to the hub's log (here: the benchmark "
            "undoing the previous sync) reads them again, later runs don't. The rest is the rounds themselves: "
            "Python parsing and building messages of up to 1 MiB.")
    big = [c for c in cells if c.diffs >= 10_000]
    for c in big:
        out.append(
            f"**{c.diffs:,} differences ({c.transport.upper()})**: {c.rounds} rounds, {fmt_b(c.rec_bytes)} of "
            f"reconciliation and {fmt_b(c.sync_bytes - c.moved_bytes)} beyond the {fmt_b(c.moved_bytes)} of "
            f"records; reconciliation {c.rec_time:.1f} s, full sync {c.sync_time:.1f} s. No target; with "
            "differences this dense (one record in ten) nearly every range differs down to a few ids, so most "
            "ranges end as id lists and the bytes approach 24 B per record of the log (id and tag), in frames of at most 1 MiB; "
            "the time is the reconciler's Python work per range on both sides.")
    out.append("SSH's connection (handshake, the forced command's Python start-up, the hello frame) is shown "
               "apart and is not in the reconciliation time. Runs on a shared 2-core machine vary by 10–20%.")
    return "\n\n".join(out)


def write_docs(section_text: str) -> None:
    write_section(SECTION, section_text, DOCS)


if __name__ == "__main__":
    sys.exit(main())
