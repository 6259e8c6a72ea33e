"""Servers the tests start on ports picked a moment before are not fooled when another
program takes the port first (as happens under load, with many sessions on one machine):
the hub and sshd start again on another port, and neither takes the other program's
answers for their own; nats-server picks its port itself and reports it."""

from __future__ import annotations

import http.server
import threading

import httpx
import pytest

import tests.hubproc
import tests.services.sshd
from tests.hubproc import HubProcess
from tests.services.nats import NatsServer


@pytest.fixture
def impostor():
    """An HTTP server on a loopback port that answers 200 to everything (/healthz too)."""

    class Always(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Always)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def _first(monkeypatch, module, port: int) -> list[int]:
    """Make ``module.free_port`` hand out ``port`` first, then free ones; the ports handed out."""
    real, given = tests.hubproc.free_port, []

    def pick(*args):
        given.append(port if not given else real(*args))
        return given[-1]

    monkeypatch.setattr(module, "free_port", pick)
    return given


def test_a_hub_whose_port_was_taken_starts_on_another_and_is_not_fooled(tmp_path, monkeypatch, impostor):
    given = _first(monkeypatch, tests.hubproc, impostor)
    hub = HubProcess(tmp_path / "data", listeners=("--gateway-listen",))
    assert hub.port == impostor
    hub.argv += ["--ssh-listen", f"127.0.0.1:{tests.hubproc.free_port()}"]  # what a caller adds stays
    hub.start()
    try:
        assert hub.port not in (impostor, 0) and hub.port == given[-2]  # new API and gateway ports
        assert hub.ports["--gateway-listen"] == given[-1] and "--ssh-listen" in hub.argv
        assert "the port is taken by another program" in hub.log_text()
        with hub.admin() as c:  # its own API, not the impostor's
            assert c.get("/api/v1/whoami").json()["user"]["name"] == "admin"
        hub.stop()
        hub.start()  # a restart keeps its ports
        assert hub.port == given[-2] and httpx.get(hub.url + "/healthz").status_code == 200
    finally:
        hub.stop()


def test_nats_server_picks_its_own_port(tmp_path, monkeypatch):
    monkeypatch.setattr(tests.hubproc, "free_port", lambda *a: pytest.fail("no port picked for it"))
    with NatsServer(tmp_path / "nats", jetstream=False) as srv:
        assert srv.port > 0
        import socket

        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            assert s.recv(4) == b"INFO"


def test_sshd_whose_port_was_taken_starts_on_another(tmp_path, monkeypatch, impostor):
    given = _first(monkeypatch, tests.services.sshd, impostor)
    with tests.services.sshd.SshServer(tmp_path / "sshd") as sshd:
        assert sshd.port == given[-1] != impostor
        assert f"Server listening on 127.0.0.1 port {sshd.port}." in sshd.log_text()
