"""Forward with two hub replicas on one PostgreSQL: the route is a row, so either replica's
gateway serves it (the one without the node's connection passes the request on to the
one with it), and either replica's API lists and stops it."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time

from tests.forward.conftest import start_app
from tests.hubproc import free_port



def _replicas(replica_set):
    """Two replicas (tests/replicas.py), each with its SSH and gateway listener."""
    ports = [(free_port(), free_port()) for _ in range(2)]
    rs = replica_set(env={"TETHER_FORWARD_SWEEP_SECONDS": "0.3"}, args=lambda i: [
        "--ssh-listen", f"127.0.0.1:{ports[i][0]}", "--gateway-listen", f"127.0.0.1:{ports[i][1]}"])
    return rs, ports


def _get(port: int, host: str, token: str, path: str = "/echo") -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Host": host, "Authorization": f"Bearer {token}"})
    status = c.getresponse().status
    c.close()
    return status


def test_either_replica_serves_and_stops_a_route(replica_set, tmp_path):
    rs, ((a_ssh, a_gw), (b_ssh, b_gw)) = _replicas(replica_set)
    a, b = rs.replicas
    procs = []
    try:
        with a.admin() as c:
            c.post("/api/v1/users", json={"name": "dora"}).raise_for_status()
            key = tmp_path / "dora_key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            c.post("/api/v1/users/dora/keys", json={"public_key": key.with_suffix(".pub").read_text()}
                   ).raise_for_status()
            token = c.post("/api/v1/tokens", json={"for_user": "dora", "expires": "1h"}).json()["token"]
        pub = (a.data_dir / "ssh_host_ed25519_key.pub").read_text().split()
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{a_ssh} {pub[0]} {pub[1]}\n")
        sock = tmp_path / "app.sock"
        procs.append(start_app(sock))
        ssh = subprocess.Popen(["ssh", "-N", "-p", str(a_ssh), "-i", str(key), "-o", "IdentitiesOnly=yes",
                                "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes",
                                "-o", "ExitOnForwardFailure=yes", "-R", f"/lab:{sock}", "dora@127.0.0.1"],
                               stdin=subprocess.DEVNULL)
        procs.append(ssh)
        host = "lab--dora.localhost"
        deadline = time.monotonic() + 20
        while _get(a_gw, host, token) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(a_gw, host, token) == 200  # the replica holding the connection
        assert _get(b_gw, host, token) == 200  # the other one passes the request on
        assert _get(b_gw, host, "tth_0123456789abcdef_" + "A" * 43) == 401  # and checks it first
        from websockets.sync.client import connect

        with connect(f"ws://{host}/ws", sock=socket.create_connection(("127.0.0.1", b_gw)), open_timeout=5,
                     additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            ws.send("through two replicas")
            assert ws.recv(timeout=5) == "through two replicas"
        with b.client(token) as c:
            assert [r["name"] for r in c.get("/api/v1/forward/routes").json()] == ["lab"]
            c.delete("/api/v1/forward/routes/dora/lab").raise_for_status()
        ssh.wait(timeout=20)  # replica a drops the node's connection: the route was stopped on b
        assert _get(a_gw, host, token) == 404 and _get(b_gw, host, token) == 404
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        rs.stop()
