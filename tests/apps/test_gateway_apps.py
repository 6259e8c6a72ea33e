"""Instances and forwarded routes share the gateway and one set of names per user: a name
held by one is refused to the other (409, named). Instances are also reached in path mode
(/apps/USER/APP/), and a token scoped to another app does not get through. An owner
shares an instance with a named user (read-only or not) and unshares it: the door shuts at
the user's next request."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.apps.hubs import AppsHub, clean, gateway_get, wait_for
from tests.forward.conftest import start_app
from tests.hubproc import free_port


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("appgw")
    ssh_port = free_port()
    w = AppsHub(tmp)
    w.hub.argv += ["--ssh-listen", f"127.0.0.1:{ssh_port}"]
    w.start().setup({"alice": "read", "olga": "admin", "bob": "", "carol": ""})
    key = tmp / "alice_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with w.api("admin") as c:
        c.post("/api/v1/users/alice/keys", json={"public_key": key.with_suffix(".pub").read_text()}).raise_for_status()
    pub = (w.hub.data_dir / "ssh_host_ed25519_key.pub").read_text().split()
    known = tmp / "known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh_port} {pub[0]} {pub[1]}\n")
    w.ssh = ["ssh", "-N", "-p", str(ssh_port), "-i", str(key), "-o", "IdentitiesOnly=yes", "-o",
             f"UserKnownHostsFile={known}", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
    for name in ("demo", "lab"):
        r = w.cli("olga", "register", name, "--space", "apps", "--dir", str(w.demo_dir()), "--cmd", "python3", "app.py")
        assert r.returncode == 0, r.stderr
    w.app = start_app(tmp / "fwd.sock")
    yield w
    w.app.kill()
    w.app.wait()
    try:
        w.stop()
    finally:
        clean(w.sandbox_root)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_a_route_name_is_refused_to_an_instance_and_back(w):
    route = subprocess.Popen([*w.ssh, "-R", f"/demo:{w.tmp / 'fwd.sock'}", "alice@127.0.0.1"], stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: gateway_get(w.gw_port, f"demo--alice.localhost:{w.gw_port}", "/echo",
                                     bearer(w.tokens["alice"]))[0] == 200, what="the forwarded route")
        r = w.cli("alice", "spawn", "demo")
        assert r.returncode == 1 and "forwarded route named demo" in r.stderr and "forward stop demo" in r.stderr
        with w.api("alice") as c:
            assert c.post("/api/v1/apps/demo/spawn", json={}).json()["type"] == "urn:tether:problem:name-taken"
    finally:
        route.terminate()
        route.wait(10)
    with w.api("alice") as c:
        c.delete("/api/v1/forward/routes/alice/demo")
    # the other way: an instance holds "lab", so a forward of "lab" is refused
    assert w.cli("alice", "spawn", "lab").returncode == 0
    refused = subprocess.run([*w.ssh, "-R", f"/lab:{w.tmp / 'fwd.sock'}", "alice@127.0.0.1"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "forwarding failed" in refused.stderr.lower()
    port, key, known = w.ssh[3], w.ssh[5], w.ssh[9].split("=", 1)[1]  # and `tether forward` says what may be why
    refused = subprocess.run([sys.executable, "-m", "tether", "forward", "lab", "--tcp", "--ssh", f"alice@127.0.0.1:{port}",
                              "-i", key, "--known-hosts", known, "--", sys.executable, "-m", "http.server", "--bind",
                              "127.0.0.1", "{port}"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=60, env={**os.environ, "HOME": str(w.tmp)})
    assert refused.returncode == 2 and "an app instance of yours is named lab" in refused.stderr, refused.stderr
    code, _, body = gateway_get(w.gw_port, f"lab--alice.localhost:{w.gw_port}", "/api/whoami", bearer(w.tokens["alice"]))
    assert code == 200 and json.loads(body)["instance"] == "lab--alice"  # still the instance


def test_path_mode_and_scoped_tokens(w):
    if w.cli("alice", "status", "lab").returncode != 0:
        assert w.cli("alice", "spawn", "lab").returncode == 0
    code, _, body = gateway_get(w.gw_port, f"localhost:{w.gw_port}", "/apps/alice/lab/api/whoami",
                                bearer(w.tokens["alice"]))
    assert code == 200 and json.loads(body)["user"] == "alice"
    with w.api("alice") as c:
        scoped = c.post("/api/v1/tokens", json={"scopes": ["app:apps/lab:read"], "expires": "1h"}).json()["token"]
        other = c.post("/api/v1/tokens", json={"scopes": ["app:apps/demo"], "expires": "1h"}).json()["token"]
    host = f"lab--alice.localhost:{w.gw_port}"
    assert gateway_get(w.gw_port, host, "/", bearer(scoped))[0] == 200
    assert gateway_get(w.gw_port, host, "/", bearer(scoped), method="POST")[0] == 403  # read-only
    code, _, body = gateway_get(w.gw_port, host, "/", bearer(other))
    assert code == 403 and b"app:apps/lab" in body


def test_a_share_link_lets_a_guest_in_read_only_until_revoked(w):
    if w.cli("alice", "status", "lab").returncode != 0:
        assert w.cli("alice", "spawn", "lab").returncode == 0
    r = w.cli("alice", "share", "lab", "--read-only", "--expires", "30m", "--json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    host = f"lab--alice.localhost:{w.gw_port}"
    path = made["url"].split(f":{w.gw_port}", 1)[1]
    code, headers, _ = gateway_get(w.gw_port, host, path)
    assert code == 303 and headers["set-cookie"].startswith("tether-gw=")
    cookie = {"Cookie": headers["set-cookie"].split(";", 1)[0]}
    code, _, body = gateway_get(w.gw_port, host, "/api/whoami", cookie)
    assert code == 200 and json.loads(body)["cookie"] == ""  # the session cookie never reaches the app
    assert gateway_get(w.gw_port, host, "/", cookie, method="POST")[0] == 403
    with w.api("alice") as c:
        c.delete(f"/api/v1/tokens/{made['id']}").raise_for_status()
    assert gateway_get(w.gw_port, host, "/", cookie)[0] == 401


def test_an_instance_shared_with_a_user_lets_them_in_as_themselves_until_unshared(w):
    if w.cli("alice", "status", "lab").returncode != 0:
        assert w.cli("alice", "spawn", "lab").returncode == 0
    host = f"lab--alice.localhost:{w.gw_port}"
    code, _, body = gateway_get(w.gw_port, host, "/api/whoami", bearer(w.tokens["bob"]))
    assert code == 403 and b"app share lab --with bob" in body  # not shared yet: says how
    r = w.cli("alice", "share", "lab", "--with", "bob", "--read-only")
    assert r.returncode == 0 and "shared lab with bob (read-only)" in r.stdout, r.stderr
    code, _, body = gateway_get(w.gw_port, host, "/api/whoami", bearer(w.tokens["bob"]))
    assert code == 200 and json.loads(body)["user"] == "bob"  # the app is told who it is
    assert gateway_get(w.gw_port, host, "/", bearer(w.tokens["bob"]), method="POST")[0] == 403  # read-only
    assert gateway_get(w.gw_port, host, "/", bearer(w.tokens["carol"]))[0] == 403  # nobody else
    # bob signs in with a browser through a link of his own
    r = w.cli("bob", "open", "lab--alice")
    assert r.returncode == 0, r.stderr
    code, headers, _ = gateway_get(w.gw_port, host, r.stdout.strip().split(f":{w.gw_port}", 1)[1])
    assert code == 303
    cookie = {"Cookie": headers["set-cookie"].split(";", 1)[0]}
    code, _, body = gateway_get(w.gw_port, host, "/api/whoami", cookie)
    assert code == 200 and json.loads(body)["user"] == "bob"
    listed = json.loads(w.cli("alice", "shares", "lab", "--json").stdout)
    assert [(row["user"], row["read_only"]) for row in listed] == [("bob", True)]
    # shared again with write: POST passes the gateway (the app answers it)
    assert w.cli("alice", "share", "lab", "--with", "bob").returncode == 0
    assert gateway_get(w.gw_port, host, "/", bearer(w.tokens["bob"]), method="POST")[0] != 403
    # only the owner shares; unknown users and oneself are refused, and nothing changes
    r = w.cli("bob", "share", "lab--alice", "--with", "carol")
    assert r.returncode == 4, r.stderr
    r = w.cli("alice", "share", "lab", "--with", "nosuchuser")
    assert r.returncode == 1 and "user nosuchuser" in r.stderr
    r = w.cli("alice", "share", "lab", "--with", "alice")
    assert r.returncode == 2 and "owns this instance" in r.stderr
    assert [row["user"] for row in json.loads(w.cli("alice", "shares", "lab", "--json").stdout)] == ["bob"]
    # unshared: bob's token and his open session are refused at once
    r = w.cli("alice", "unshare", "lab", "--with", "bob")
    assert r.returncode == 0, r.stderr
    assert gateway_get(w.gw_port, host, "/api/whoami", bearer(w.tokens["bob"]))[0] == 403
    assert gateway_get(w.gw_port, host, "/api/whoami", cookie)[0] == 403
    assert w.cli("alice", "unshare", "lab", "--with", "bob").returncode == 1  # nothing left to unshare
    with w.api("admin") as c:
        records = [a for act in ("app.share", "app.unshare")
                   for a in c.get("/api/v1/audit", params={"since": "1h", "action": act}).json()["records"]]
    actions = {(a["action"], a["resource"], a["user"], a["outcome"]) for a in records}
    assert ("app.share", "app:apps/lab instance of alice with bob", "alice", "allowed") in actions
    assert ("app.unshare", "app:apps/lab instance of alice with bob", "alice", "allowed") in actions
