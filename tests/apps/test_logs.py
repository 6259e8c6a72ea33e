"""`tether app logs -f` prints new output as the app writes it, and ends when the instance
stops (exit 0, saying so) or on Ctrl-C (exit 0, no traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.apps.hubs import demo_for_alice, gateway_get, wait_for


@pytest.fixture
def w(tmp_path):
    yield from demo_for_alice(tmp_path, {"alice": "read", "olga": "admin"})


class Follower:
    """`tether app logs demo -f` as alice, its output gathered as it comes."""

    def __init__(self, w):
        env = {**os.environ, "TETHER_HUB": w.hub.url, "TETHER_TOKEN": w.tokens["alice"], "HOME": str(w.tmp)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tether", "app", "logs", "demo", "-f"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        threading.Thread(target=lambda: self.out.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()

    def text(self) -> str:
        return "".join(self.out)

    def wait(self, timeout: float = 20) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return code, self.proc.stderr.read()


def visit(w, path):
    code, _, _ = gateway_get(w.gw_port, f"demo--alice.localhost:{w.gw_port}", path,
                             {"Authorization": f"Bearer {w.tokens['alice']}"})
    assert code == 200


def test_follow_prints_new_output_and_ends_when_the_instance_stops(w):
    f = Follower(w)
    wait_for(lambda: "demo: serving on" in f.text(), what="the output so far")
    assert f.proc.poll() is None  # still following
    visit(w, "/api/whoami?first")
    wait_for(lambda: "GET /api/whoami?first" in f.text(), what="the new line")
    visit(w, "/api/whoami?second")
    wait_for(lambda: "GET /api/whoami?second" in f.text(), what="the next new line")
    assert w.cli("alice", "stop", "demo").returncode == 0
    code, err = f.wait()
    assert code == 0 and "demo is stopped: no more output" in err


def test_ctrl_c_ends_a_follow_quietly(w):
    f = Follower(w)
    wait_for(lambda: "demo: serving on" in f.text(), what="the output so far")
    time.sleep(0.5)
    f.proc.send_signal(signal.SIGINT)
    code, err = f.wait()
    assert code == 0 and "Traceback" not in err and "Aborted" not in err
