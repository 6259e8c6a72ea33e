"""Debian's `lava-coordinator` (the job capability's oracle and baseline), on a free
port with its own config file; stopped by its pid. It binds every interface (its
TODO ignores the configured host); tests speak to it on loopback only."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import time

from tests.hubproc import free_port, port_taken

LAVA_COORDINATOR = "/usr/bin/lava-coordinator"


class LavaCoordinator:
    def __init__(self, base_dir: pathlib.Path, *, poll_delay: int = 1):
        self.dir = base_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.poll_delay = poll_delay
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15) -> "LavaCoordinator":
        """Start it on a free port; on another when that one was taken before it bound it."""
        for attempt in range(3):
            self.port = free_port()
            conf = self.dir / "lava-coordinator.conf"
            conf.write_text(json.dumps({"port": self.port, "blocksize": 4096, "poll_delay": self.poll_delay,
                                        "coordinator_hostname": "127.0.0.1"}))
            log_path = self.dir / "coordinator.log"
            self.log = open(log_path, "ab")
            since = self.log.tell()
            self.proc = subprocess.Popen([LAVA_COORDINATOR, "--config", str(conf), "--logfile", "-", "--loglevel",
                                          "DEBUG"], stdout=self.log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    # an empty connection: the coordinator reads no header and moves on
                    socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                    time.sleep(0.1)  # and it is ours if it is still up (one that could not bind exits)
                    if self.proc.poll() is None:
                        return self
                except OSError:
                    time.sleep(0.05)
            said = log_path.read_bytes()[since:].decode(errors="replace")
            code = self.proc.returncode
            self.stop()
            if not port_taken(said) or attempt == 2:
                raise RuntimeError(f"lava-coordinator did not come up (exit {code}):\n{said[-2000:]}")
        raise AssertionError("unreachable")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()
