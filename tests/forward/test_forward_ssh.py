"""Forward end to end: a hub with its SSH server and gateway, a real app on a UNIX
socket, a plain OpenSSH client holding the route (`ssh -N -R /demo:APP.sock HUB`),
and raw sockets / http.client / a websocket client as browsers."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import subprocess
import time

import pytest

from tests.forward.conftest import start_app, start_forward_hub



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fwd")
    w = start_forward_hub(tmp, ("alice", "bob"),
                          {"TETHER_FORWARD_RECONNECT_GRACE": "2s", "TETHER_FORWARD_SWEEP_SECONDS": "0.3"})
    hub = w["hub"]
    app_sock = tmp / "app.sock"
    app = start_app(app_sock)
    w.update(app_sock=app_sock, forwards=[])
    _forward(w, "alice", "demo")  # most tests use alice's route demo
    yield w
    for p in w["forwards"]:
        p.kill()
        p.wait()
    app.terminate()
    app.wait(10)
    hub.stop()


def _ssh(w, user, *args, **kw):
    base = ["ssh", "-p", str(w["ssh_port"]), "-i", str(w["keys"][user]), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={w['known']}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ExitOnForwardFailure=yes"]
    return [*base, *args, f"{user}@127.0.0.1"]


def _forward(w, user, name, sock=None):
    """`ssh -N -R NAME:SOCK`: a plain OpenSSH client holds the route until it is killed."""
    proc = subprocess.Popen(_ssh(w, user, "-N", "-R", f"/{name}:{sock or w['app_sock']}"),
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    w["forwards"].append(proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc
        if _get(w, "/count", f"{name}--{user}")[0] == 401:  # live: it asks for a sign-in
            return proc
        time.sleep(0.1)
    pytest.fail("the route never came up")


def _hello(w, user, name) -> dict:
    """`tether-forward hello NAME` over SSH: the hello frame holds the URL and a sign-in link."""
    r = subprocess.run(_ssh(w, user) + ["tether-forward", "hello", name], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    length, kind = struct.unpack(">IB", r.stdout[:5])
    assert chr(kind) == "H", (r.stdout, r.stderr)
    return json.loads(r.stdout[5:5 + length])


def _get(w, path, route, headers=None, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", w["gw_port"], timeout=10)
    c.request(method, path, headers={"Host": f"{route}.localhost", **(headers or {})})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), body


def _sign_in(w, hello) -> str:
    path = hello["signin"].split(f":{w['gw_port']}", 1)[1]
    route = hello["url"].split("//")[1].split(".localhost")[0]
    status, headers, _ = _get(w, path + "&next=/echo", route)
    assert status == 303 and headers["location"] == "/echo", (status, headers)
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Domain" not in cookie
    return cookie.split(";", 1)[0]


def test_a_route_needs_a_sign_in_and_the_link_works_once(world):
    status, _, body = _get(world, "/echo", "demo--alice", {"Accept": "text/html"})
    assert status == 401 and b"sign in" in body
    hello = _hello(world, "alice", "demo")
    assert hello["url"] == f"http://demo--alice.localhost:{world['gw_port']}/"
    cookie = _sign_in(world, hello)
    status, _, body = _get(world, "/echo", "demo--alice", {"Cookie": f"{cookie}; mine=1"})
    assert status == 200
    seen = dict(json.loads(body)["headers"])
    assert seen["cookie"] == "mine=1"  # the gateway's own cookie never reaches the app
    # the one-time link is spent
    path = hello["signin"].split(f":{world['gw_port']}", 1)[1]
    status, headers, _ = _get(world, path, "demo--alice")
    assert status == 403 and "set-cookie" not in headers


def test_a_forged_ticket_and_another_routes_link_are_refused(world):
    _forward(world, "alice", "other")
    hello = _hello(world, "alice", "other")
    ticket = hello["signin"].split("ticket=")[1]
    assert _get(world, f"/_tether/signin?ticket={ticket}", "demo--alice")[0] == 403  # on another route
    assert _get(world, "/_tether/signin?ticket=tth_0123456789abcdef_" + "A" * 43, "demo--alice")[0] == 403


def test_bearer_tokens_need_the_owner_or_a_share_and_a_matching_scope(world):
    alice, bob = world["tokens"]["alice"], world["tokens"]["bob"]
    ok = _get(world, "/echo", "demo--alice", {"Authorization": f"Bearer {alice}"})
    assert ok[0] == 200 and "authorization" not in dict(json.loads(ok[2])["headers"])
    assert _get(world, "/echo", "demo--alice", {"Authorization": f"Bearer {bob}"})[0] == 403
    with world["hub"].client(alice) as c:
        narrow = c.post("/api/v1/tokens", json={"scopes": ["forward:alice/other"], "expires": "10m"}).json()["token"]
        reader = c.post("/api/v1/tokens", json={"scopes": ["forward:alice/demo:read"], "expires": "10m"}).json()["token"]
    assert _get(world, "/echo", "demo--alice", {"Authorization": f"Bearer {narrow}"})[0] == 403
    assert _get(world, "/echo", "demo--alice", {"Authorization": f"Bearer {reader}"})[0] == 200
    assert _get(world, "/echo", "demo--alice", {"Authorization": f"Bearer {reader}"}, method="POST")[0] == 403


def test_a_websocket_passes_over_the_ssh_forward(world):
    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", world["gw_port"]))
    with connect("ws://demo--alice.localhost/ws", sock=sock, open_timeout=5,
                 additional_headers={"Authorization": f"Bearer {world['tokens']['alice']}"}) as ws:
        ws.send("over ssh")
        assert ws.recv(timeout=5) == "over ssh"


def test_registering_is_refused_for_bad_names_and_for_a_live_route(world):
    for bad in ("Upper", "a.b", "a--b", "x" * 60, "links"):  # (OpenSSH refuses paths past 100 bytes)
        proc = subprocess.run(_ssh(world, "alice", "-N", "-R", f"/{bad}:{world['app_sock']}"), capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert proc.returncode != 0 and "forwarding failed" in proc.stderr, (bad, proc.stderr)
    proc = subprocess.run(_ssh(world, "alice", "-N", "-R", f"/demo:{world['app_sock']}"), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0 and "forwarding failed" in proc.stderr  # demo is live elsewhere
    with world["hub"].admin() as c:
        refused = c.get("/api/v1/audit", params={"user": "alice", "action": "forward.register"}).json()["records"]
    assert any(r["outcome"] != "allowed" for r in refused)


def _wait_status(w, route, cookie, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _get(w, "/echo", route, {"Cookie": cookie})[0]
        if status == want:
            return status
        time.sleep(0.1)
    return status


def test_a_node_that_comes_back_in_time_keeps_its_route_and_sessions(world):
    proc = _forward(world, "bob", "back")
    cookie = _sign_in(world, _hello(world, "bob", "back"))
    proc.kill()
    proc.wait()
    assert _wait_status(world, "back--bob", cookie, 503) == 503  # reconnecting: never a hang
    _forward(world, "bob", "back")
    assert _wait_status(world, "back--bob", cookie, 200) == 200


def test_when_the_node_does_not_come_back_the_route_and_its_sessions_end(world):
    proc = _forward(world, "bob", "gone")
    cookie = _sign_in(world, _hello(world, "bob", "gone"))
    assert _get(world, "/echo", "gone--bob", {"Cookie": cookie})[0] == 200
    proc.kill()
    proc.wait()
    assert _wait_status(world, "gone--bob", cookie, 404) == 404  # after the 2 s grace
    # the session was revoked with the route: a new route of the same name does not honour it
    _forward(world, "bob", "gone")
    assert _get(world, "/echo", "gone--bob", {"Cookie": cookie})[0] in (401, 403)


def _api(w, user):
    return w["hub"].client(w["tokens"][user])


def test_sharing_lets_another_user_through_and_unsharing_stops_them(world):
    bob = {"Authorization": f"Bearer {world['tokens']['bob']}"}
    assert _get(world, "/echo", "demo--alice", bob)[0] == 403
    with _api(world, "alice") as c:
        c.put("/api/v1/forward/routes/demo/shares/bob", json={"read_only": True}).raise_for_status()
    assert _get(world, "/echo", "demo--alice", bob)[0] == 200
    assert _get(world, "/echo", "demo--alice", bob, method="POST")[0] == 403  # read-only share
    with _api(world, "alice") as c:
        assert c.get("/api/v1/forward/routes/demo/shares").json() == [{"user": "bob", "read_only": True}]
        c.delete("/api/v1/forward/routes/demo/shares/bob").raise_for_status()
    assert _get(world, "/echo", "demo--alice", bob)[0] == 403
    with _api(world, "bob") as c:  # only the owner shares
        assert c.put("/api/v1/forward/routes/demo/shares/bob", json={}).status_code == 404


def test_a_read_only_share_link_works_until_revoked(world):
    with _api(world, "alice") as c:
        made = c.post("/api/v1/forward/routes/demo/links", json={"expires": "10m", "read_only": True}).json()
    path = made["url"].split(f":{world['gw_port']}", 1)[1]
    status, headers, _ = _get(world, path, "demo--alice")
    assert status == 303
    cookie = headers["set-cookie"].split(";", 1)[0]
    assert _get(world, "/echo", "demo--alice", {"Cookie": cookie})[0] == 200
    assert _get(world, "/echo", "demo--alice", {"Cookie": cookie}, method="DELETE")[0] == 403
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect("ws://demo--alice.localhost/ws", sock=socket.create_connection(("127.0.0.1", world["gw_port"])),
                additional_headers={"Cookie": cookie}, open_timeout=5)
    assert refused.value.response.status_code == 403
    _forward(world, "alice", "sibling")
    assert _get(world, path, "sibling--alice")[0] == 403  # a link for demo does not open another route
    with _api(world, "alice") as c:
        listed = c.get("/api/v1/forward/routes/demo/links").json()
        assert [(x["id"], x["read_only"]) for x in listed] == [(made["id"], True)]
        assert "tth_" not in str(listed)  # never a secret
        c.delete(f"/api/v1/tokens/{made['id']}").raise_for_status()
        assert c.get("/api/v1/forward/routes/demo/links").json() == []
    assert _get(world, "/echo", "demo--alice", {"Cookie": cookie})[0] in (401, 403)  # its session went with it


def test_jupyterhub_style_route_listing_for_idle_cullers(world):
    with world["hub"].admin() as c:
        routes = c.get("/api/v1/routes").json()
        assert "/demo--alice" in routes and routes["/demo--alice"]["data"]["user"] == "alice"
        assert c.get("/api/v1/routes", params={"inactive_since": "2000-01-01T00:00:00Z"}).json() == {}
        assert c.get("/api/v1/routes", params={"inactive_since": "yesterday"}).status_code == 400
    with _api(world, "bob") as c:
        assert c.get("/api/v1/routes").status_code == 403


def test_an_idle_route_is_reaped_and_its_node_told(world):
    proc = subprocess.Popen(_ssh(world, "bob", "-N", "-R", f"/sleepy?idle=1:{world['app_sock']}"),
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    world["forwards"].append(proc)
    proc.wait(timeout=20)  # the hub ends the route after 1 s without traffic and drops the connection
    assert "idle" in proc.stderr.read()
    with world["hub"].admin() as c:
        listed = c.get("/api/v1/forward/routes", params={"all": "true"}).json()
    assert "sleepy" not in [r["name"] for r in listed]


def test_sign_ins_and_refusals_at_the_gateway_are_audited(world):
    hello = _hello(world, "alice", "demo")
    _sign_in(world, hello)
    path = hello["signin"].split(f":{world['gw_port']}", 1)[1]
    _get(world, path, "demo--alice")  # replayed: refused
    _get(world, "/echo", "demo--alice", {"Authorization": f"Bearer {world['tokens']['bob']}"})  # not shared
    with world["hub"].admin() as c:
        signins = c.get("/api/v1/audit", params={"action": "forward.signin"}).json()["records"]
        access = c.get("/api/v1/audit", params={"action": "forward.access", "user": "bob"}).json()["records"]
    assert {r["outcome"] for r in signins} >= {"allowed", "denied"}
    assert all("ticket" not in (r["reason"] or "") and "tth_" not in (r["reason"] or "") for r in signins)
    assert access and access[-1]["outcome"] == "denied" and "route-not-shared" in access[-1]["reason"]


def test_unknown_and_disabled_keys_cannot_hold_a_route(world, tmp_path):
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    base = ["ssh", "-N", "-p", str(world["ssh_port"]), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={world['known']}", "-o", "ExitOnForwardFailure=yes"]
    r = subprocess.run([*base, "-i", str(stranger), "-R", f"/x:{world['app_sock']}", "alice@127.0.0.1"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    with world["hub"].admin() as c:
        c.post("/api/v1/users", json={"name": "frank"}).raise_for_status()
        key = tmp_path / "frank_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        c.post("/api/v1/users/frank/keys", json={"public_key": key.with_suffix(".pub").read_text()}).raise_for_status()
        c.post("/api/v1/users/frank/disable").raise_for_status()
    r = subprocess.run([*base, "-i", str(key), "-R", f"/x:{world['app_sock']}", "frank@127.0.0.1"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert _get(world, "/", "x--frank")[0] == 404


def test_a_websocket_to_a_route_not_shared_is_refused(world):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect("ws://demo--alice.localhost/ws", sock=socket.create_connection(("127.0.0.1", world["gw_port"])),
                additional_headers={"Authorization": f"Bearer {world['tokens']['bob']}"}, open_timeout=5)
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("path, status", [
    ("/_tether", 401),  # not a control path: the app's, behind the sign-in
    ("/_tether/", 404),
    ("/_tether/signin", 400),
    ("/_tether/signin?ticket=", 400),
    ("/_tether/signin?ticket=%ff%fe", 403),
    ("/_tether/signin?ticket=x&next=%0d%0aSet-Cookie:%20a=1", 403),
    ("/_tether/nothing", 404),
])
def test_the_gateways_own_paths_answer_plainly(world, path, status):
    got, headers, _ = _get(world, path, "demo--alice")
    assert got == status and "set-cookie" not in headers
