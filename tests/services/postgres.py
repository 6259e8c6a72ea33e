"""A throw-away PostgreSQL server for tests.

Uses Debian's PostgreSQL binaries (``/usr/lib/postgresql/*/bin``). Everything
(data directory, log, and normally the UNIX socket) lives under ``base_dir``.

When running as root, PostgreSQL refuses to run as root, so ``initdb`` and
``pg_ctl`` are run as the ``postgres`` system user through
``runuser -u postgres --``. For that user to reach ``base_dir``:

* ``base_dir`` itself is chowned to ``postgres``;
* every parent directory that the ``postgres`` user cannot traverse gets the
  "others may traverse" bit (``o+x``) added. Nothing else changes: no read or
  write bit is granted, so directory listings stay private. With pytest's
  ``tmp_path_factory`` this touches ``/tmp/pytest-of-root`` and the
  ``pytest-N`` directory below it (both 0700 by default, becoming 0711).

Server settings (port, socket directory, listen address, fsync=off,
max_connections=200) are written into ``postgresql.conf`` rather than passed
through ``pg_ctl -o``: pg_ctl runs the server through ``/bin/sh``, so a path
with spaces or quotes in ``-o`` would be split or misread; the config file has
proper quoting.

Only the postmaster this object started is ever stopped: ``stop()`` uses
``pg_ctl stop`` on our own data directory and, if that fails, signals the pid
recorded at start.

Usage::

    with PostgresServer(tmp_path) as pg:
        url = pg.create_database("app")   # postgresql+psycopg://postgres@127.0.0.1:PORT/app
"""

from __future__ import annotations

import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from types import TracebackType

from tests.hubproc import free_port

PG_USER = "postgres"
_DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# sun_path is 108 bytes on Linux; the socket file is "<dir>/.s.PGSQL.<port>".
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535")


class PostgresError(RuntimeError):
    """The test PostgreSQL server could not be set up or driven."""


def find_pg_bin() -> pathlib.Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl."""
    root = pathlib.Path("/usr/lib/postgresql")
    if not root.is_dir():
        return None
    candidates: list[tuple[tuple[int, ...], pathlib.Path]] = []
    for entry in root.iterdir():
        bin_dir = entry / "bin"
        if not ((bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file()):
            continue
        try:
            version = tuple(int(p) for p in entry.name.split("."))
        except ValueError:
            continue
        candidates.append((version, bin_dir))
    if not candidates:
        return None
    return max(candidates)[1]


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class PostgresServer:
    """One PostgreSQL cluster under ``base_dir``, trust auth, superuser ``postgres``."""

    def __init__(self, base_dir: pathlib.Path, pg_bin: pathlib.Path | None = None) -> None:
        self.base_dir = pathlib.Path(base_dir).resolve()
        self._pg_bin = pg_bin
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        self.socket_dir = self.base_dir / "sock"
        self._extra_socket_dir: pathlib.Path | None = None
        self._port: int | None = None
        self.pid: int | None = None
        self._as_root = os.geteuid() == 0

    # -- public API ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresError("the PostgreSQL server has not been started")
        return self._port

    @property
    def running(self) -> bool:
        return self.pid is not None

    def url_for(self, name: str) -> str:
        """SQLAlchemy URL for database ``name`` (psycopg 3 driver, TCP, trust auth)."""
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{name}"

    def start(self, port: int | None = None) -> None:
        """Start (or restart, e.g. on the ``port`` it had before) the server."""
        if self.pid is not None:
            return
        pg_bin = self._pg_bin or find_pg_bin()
        if pg_bin is None:
            raise PostgresError(
                "PostgreSQL binaries not found under /usr/lib/postgresql; "
                "run `make test` to install postgresql"
            )
        self._pg_bin = pg_bin
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        last_error = ""
        for _attempt in range(1 if port else 3):  # the free port may be taken between pick and bind
            self._port = port or free_port()
            self._write_conf(self._port)
            proc = self._run(
                [
                    str(pg_bin / "pg_ctl"),
                    "-D", str(self.data_dir),
                    "-l", str(self.log_file),
                    "-w", "-t", "60",
                    "start",
                ],
                check=False,
            )
            if proc.returncode == 0:
                self.pid = self._read_postmaster_pid()
                return
            last_error = proc.stdout + proc.stderr + self._log_tail()
        self._port = None
        raise PostgresError(f"pg_ctl start failed:\n{last_error}")

    def stop(self) -> None:
        """Fast shutdown of the server we started; safe to call more than once."""
        pid = self.pid
        if pid is None:
            self._cleanup_extra_socket_dir()
            return
        pg_bin = self._pg_bin or find_pg_bin()
        stopped = False
        if pg_bin is not None and self.data_dir.is_dir():
            proc = self._run(
                [str(pg_bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"],
                check=False,
            )
            stopped = proc.returncode == 0
        if not stopped:
            self._kill(pid)
        self.pid = None
        self._cleanup_extra_socket_dir()

    def create_database(self, name: str) -> str:
        from psycopg import sql

        self._check_name(name)
        with self._admin_connection() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        self._check_name(name)
        with self._admin_connection() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresServer(base_dir={str(self.base_dir)!r}, port={self._port}, pid={self.pid})"

    # -- internals ----------------------------------------------------------

    @staticmethod
    def _check_name(name: str) -> None:
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"database name {name!r}: use letters, digits and _ (max 63)")

    def _admin_connection(self):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=PG_USER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    def _argv(self, argv: list[str]) -> list[str]:
        if self._as_root:
            return ["runuser", "-u", PG_USER, "--", *argv]
        return argv

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.setdefault("LC_ALL", "C.UTF-8")
        for var in ("PGHOST", "PGPORT", "PGDATA", "PGUSER", "PGDATABASE", "PGOPTIONS"):
            env.pop(var, None)
        proc = subprocess.run(
            self._argv(argv),
            cwd=self.base_dir,  # postgres must be able to stat its cwd
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise PostgresError(
                f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_dir)) > _MAX_SOCKET_DIR_LEN:
            # Too long for a UNIX socket path: use a short private dir instead.
            self._extra_socket_dir = pathlib.Path(tempfile.mkdtemp(prefix="tether-pg-"))
            self.socket_dir = self._extra_socket_dir
        self.socket_dir.mkdir(exist_ok=True)
        if not self._as_root:
            return
        pw = pwd.getpwnam(PG_USER)
        self._make_traversable(self.base_dir.parent)
        if self._extra_socket_dir is not None:
            self._make_traversable(self._extra_socket_dir.parent)
        for path in (self.base_dir, self.socket_dir):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        if self.data_dir.exists():
            for root, dirs, files in os.walk(self.data_dir):
                os.chown(root, pw.pw_uid, pw.pw_gid)
                for f in files:
                    os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)

    @staticmethod
    def _make_traversable(path: pathlib.Path) -> None:
        """Add o+x to ``path`` and its parents where missing (no read/write bits)."""
        for p in [path, *path.parents]:
            st = p.stat()
            if not st.st_mode & stat.S_IXOTH:
                os.chmod(p, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)

    def _initdb(self) -> None:
        assert self._pg_bin is not None
        self._run(
            [
                str(self._pg_bin / "initdb"),
                "-D", str(self.data_dir),
                "--username", PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )

    def _write_conf(self, port: int) -> None:
        conf = self.data_dir / "postgresql.conf"
        marker = "# --- tether test settings ---\n"
        text = conf.read_text()
        if marker in text:
            text = text[: text.index(marker)]
        settings = {
            "port": str(port),
            "listen_addresses": _conf_quote("127.0.0.1"),
            "unix_socket_directories": _conf_quote(str(self.socket_dir)),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        text += marker + "".join(f"{k} = {v}\n" for k, v in settings.items())
        conf.write_text(text)  # root keeps the postgres-owned file's ownership

    def _read_postmaster_pid(self) -> int:
        pidfile = self.data_dir / "postmaster.pid"
        for _ in range(50):
            try:
                return int(pidfile.read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        raise PostgresError(f"no pid in {pidfile} after start")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n--- postgres.log ---\n" + "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    @staticmethod
    def _kill(pid: int) -> None:
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):  # SIGINT = fast shutdown
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)

    def _cleanup_extra_socket_dir(self) -> None:
        if self._extra_socket_dir is not None:
            shutil.rmtree(self._extra_socket_dir, ignore_errors=True)
            self._extra_socket_dir = None
            self.socket_dir = self.base_dir / "sock"
