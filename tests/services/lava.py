"""Debian's `lava-coordinator` (the job capability's oracle and baseline), on a free
port with its own config file; stopped by its pid. It binds every interface (its
TODO ignores the configured host); tests speak to it on loopback only."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import time

from tests.hubproc import free_port

LAVA_COORDINATOR = "/usr/bin/lava-coordinator"


class LavaCoordinator:
    def __init__(self, base_dir: pathlib.Path, *, poll_delay: int = 1):
        self.dir = base_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.poll_delay = poll_delay
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15) -> "LavaCoordinator":
        conf = self.dir / "lava-coordinator.conf"
        conf.write_text(json.dumps({"port": self.port, "blocksize": 4096, "poll_delay": self.poll_delay,
                                    "coordinator_hostname": "127.0.0.1"}))
        self.log = open(self.dir / "coordinator.log", "ab")
        self.proc = subprocess.Popen([LAVA_COORDINATOR, "--config", str(conf), "--logfile", "-", "--loglevel", "DEBUG"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lava-coordinator exited with {self.proc.returncode}")
            try:
                # an empty connection: the coordinator reads no header and moves on
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("lava-coordinator did not come up")

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
