"""Forward with two hub replicas on one PostgreSQL: the route is a row, so either replica's
gateway serves it (the one without the node's connection passes the request on to the
one with it), and either replica's API lists and stops it. Each gateway reuses a route's
row and a credential's check for at most CHECK_SECONDS: what is taken away through one
replica is refused by the other within that bound, and by the one that took it at once."""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import time

from tests.forward.conftest import start_app
from tether.forward.gateway import CHECK_SECONDS


def _replicas(replica_set):
    """Two replicas (tests/replicas.py), each with its SSH and gateway listener."""
    rs = replica_set(env={"TETHER_FORWARD_SWEEP_SECONDS": "0.3"}, listeners=("--ssh-listen", "--gateway-listen"))
    return rs, [(r.ports["--ssh-listen"], r.ports["--gateway-listen"]) for r in rs.replicas]


def _get(port: int, host: str, token: str, path: str = "/echo") -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Host": host, "Authorization": f"Bearer {token}"})
    status = c.getresponse().status
    c.close()
    return status


@contextlib.contextmanager
def _route_on_a(replica_set, tmp_path, users=("dora",)):
    """Route ``lab`` of dora, held by replica a through a plain OpenSSH client; a token for
    each of ``users``. Yields (replicas, ports, tokens, ssh process)."""
    rs, ports = _replicas(replica_set)
    a = rs.replicas[0]
    a_ssh, a_gw = ports[0]
    procs = []
    try:
        tokens = {}
        with a.admin() as c:
            for user in users:
                c.post("/api/v1/users", json={"name": user}).raise_for_status()
                tokens[user] = c.post("/api/v1/tokens", json={"for_user": user, "expires": "1h"}).json()["token"]
            key = tmp_path / "dora_key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            c.post("/api/v1/users/dora/keys", json={"public_key": key.with_suffix(".pub").read_text()}
                   ).raise_for_status()
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
        deadline = time.monotonic() + 20
        while _get(a_gw, HOST, tokens["dora"]) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield rs, ports, tokens, ssh
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        rs.stop()


HOST = "lab--dora.localhost"


def test_either_replica_serves_and_stops_a_route(replica_set, tmp_path):
    with _route_on_a(replica_set, tmp_path) as (rs, ((_, a_gw), (_, b_gw)), tokens, ssh):
        token = tokens["dora"]
        assert _get(a_gw, HOST, token) == 200  # the replica holding the connection
        assert _get(b_gw, HOST, token) == 200  # the other one passes the request on
        assert _get(b_gw, HOST, "tth_0123456789abcdef_" + "A" * 43) == 401  # and checks it first
        from websockets.sync.client import connect

        with connect(f"ws://{HOST}/ws", sock=socket.create_connection(("127.0.0.1", b_gw)), open_timeout=5,
                     additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            ws.send("through two replicas")
            assert ws.recv(timeout=5) == "through two replicas"
        with rs.replicas[1].client(token) as c:
            assert [r["name"] for r in c.get("/api/v1/forward/routes").json()] == ["lab"]
            c.delete("/api/v1/forward/routes/dora/lab").raise_for_status()
        ssh.wait(timeout=20)  # replica a drops the node's connection: the route was stopped on b
        assert _get(a_gw, HOST, token) == 404 and _get(b_gw, HOST, token) == 404


def _refused_within(port: int, token: str, statuses: tuple[int, ...]) -> float:
    """Seconds until the gateway on ``port`` answers one of ``statuses`` (asking every 50 ms)."""
    started = time.monotonic()
    while time.monotonic() - started < CHECK_SECONDS + 5:
        if _get(port, HOST, token) in statuses:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"still let through {CHECK_SECONDS + 5:.1f} s after access was taken away")


def test_what_one_replica_takes_away_the_other_refuses_within_the_bound(replica_set, tmp_path):
    with _route_on_a(replica_set, tmp_path, users=("dora", "eve", "fay")) as (rs, ((_, a_gw), (_, b_gw)), tokens, _):
        a, b = rs.replicas
        with b.client(tokens["dora"]) as c:
            for user in ("eve", "fay"):
                c.put(f"/api/v1/forward/routes/lab/shares/{user}", json={}).raise_for_status()
        slack = 0.75  # a request's own time on a busy machine
        # an unshare through b: a held eve's allowed answer a moment ago
        assert _get(a_gw, HOST, tokens["eve"]) == 200 and _get(b_gw, HOST, tokens["eve"]) == 200
        with b.client(tokens["dora"]) as c:
            c.delete("/api/v1/forward/routes/lab/shares/eve").raise_for_status()
        assert _get(b_gw, HOST, tokens["eve"]) == 403  # the replica that took it away: at once
        assert _refused_within(a_gw, tokens["eve"], (403,)) <= CHECK_SECONDS + slack
        # fay's token revoked through b
        assert _get(a_gw, HOST, tokens["fay"]) == 200
        with b.admin() as c:
            c.delete(f"/api/v1/tokens/{tokens['fay'].split('_')[1]}").raise_for_status()
        assert _get(b_gw, HOST, tokens["fay"]) == 401
        assert _refused_within(a_gw, tokens["fay"], (401,)) <= CHECK_SECONDS + slack
        # a token that expires: refused from its expiry on, by both (the caveat is checked every time)
        with a.admin() as c:
            short = c.post("/api/v1/tokens", json={"for_user": "dora", "expires": "3s"}).json()
        assert _get(a_gw, HOST, short["token"]) == 200 and _get(b_gw, HOST, short["token"]) == 200
        expires = time.monotonic() + 3
        _refused_within(a_gw, short["token"], (401,))
        assert time.monotonic() - expires <= slack
        # a disabled user, through b
        with a.admin() as c:
            eve2 = c.post("/api/v1/tokens", json={"for_user": "eve", "expires": "1h"}).json()["token"]
        with b.client(tokens["dora"]) as c:
            c.put("/api/v1/forward/routes/lab/shares/eve", json={}).raise_for_status()
        assert _get(a_gw, HOST, eve2) == 200
        with b.admin() as c:
            c.post("/api/v1/users/eve/disable").raise_for_status()
        assert _get(b_gw, HOST, eve2) == 403
        assert _refused_within(a_gw, eve2, (403,)) <= CHECK_SECONDS + slack
