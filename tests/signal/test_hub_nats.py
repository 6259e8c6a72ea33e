"""The hub's embedded nats-server for signal: started by `tether hub`, reachable only with the
credentials the hub hands its signed-in users, kept across restarts, stopped with the hub."""

from __future__ import annotations

import asyncio
import socket

import nats
import pytest

from tests.hubproc import HubProcess


def nats_port(hub: HubProcess) -> int:
    return int((hub.data_dir / "nats" / "port").read_text())


def connect(url: str, creds_path=None):
    async def go():
        kw = {"user_credentials": str(creds_path)} if creds_path else {}
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0, **kw)
        try:
            js = nc.jetstream()
            await js.add_stream(name="HUBTEST", subjects=["hubtest"])  # JetStream is on
            return (await js.publish("hubtest", b"x")).seq
        finally:
            await nc.close()

    return asyncio.run(go())


def test_embedded_nats_with_per_user_credentials(tmp_path):
    hub = HubProcess(tmp_path / "data").start()
    try:
        assert "NATS for signal on nats://127.0.0.1:" in hub.log_text()
        with hub.client(hub.admin_token) as c:
            got = c.post("/api/v1/signal/nats", json={}).json()
            child = c.post("/api/v1/tokens", json={"scopes": ["publish:x"], "expires": "1h"}).json()
        with hub.client(child["token"]) as c:  # a scoped token gets no NATS credentials
            assert c.post("/api/v1/signal/nats", json={}).status_code == 403
        with hub.client() as c:
            assert c.post("/api/v1/signal/nats", json={}).status_code == 401
        url = got["servers"][0]
        assert url == f"nats://127.0.0.1:{nats_port(hub)}" and "BEGIN NATS USER JWT" in got["creds"]
        creds = tmp_path / "u.creds"
        creds.write_text(got["creds"])
        assert connect(url, creds) == 1
        with pytest.raises(Exception, match="(?i)authoriz"):  # without credentials: refused
            connect(url)
        nats_dir = hub.data_dir / "nats"
        assert nats_dir.stat().st_mode & 0o777 == 0o700
        assert all((nats_dir / f"{k}.nk").stat().st_mode & 0o777 == 0o600 for k in ("operator", "account", "system"))
    finally:
        hub.stop()
    with pytest.raises(OSError):  # the hub took its nats-server down with it
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()
    # a restart keeps the port and the keys: configs written by `signal init` go on working
    hub = HubProcess(tmp_path / "data").start()
    try:
        assert nats_port(hub) == int(url.rsplit(":", 1)[1])
        assert connect(url, creds) == 2  # the stream (JetStream's store) is still there too
    finally:
        hub.stop()


@pytest.mark.parametrize("setting, status, servers", [("off", 404, None),
                                                      ("nats://n1.example:4222,nats://n2.example:4222", 200,
                                                       ["nats://n1.example:4222", "nats://n2.example:4222"])])
def test_off_or_a_cluster_of_your_own(tmp_path, setting, status, servers):
    hub = HubProcess(tmp_path / "data", env={"TETHER_SIGNAL_NATS": setting}).start()
    try:
        assert "NATS for signal" not in hub.log_text()
        assert not (hub.data_dir / "nats").exists()
        with hub.client(hub.admin_token) as c:
            r = c.post("/api/v1/signal/nats", json={})
        assert r.status_code == status, r.text
        if servers:
            assert r.json() == {"servers": servers, "creds": None, "expires": None}
    finally:
        hub.stop()


def test_a_bad_signal_nats_setting_stops_the_hub_at_start(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "tether", "hub", "--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0"],
                       env={"TETHER_SIGNAL_NATS": "http://wrong", "PATH": "/usr/bin:/bin"}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "signal_nats must be" in r.stderr, r.stderr
