"""`tether forward NAME -- CMD` end to end: the real CLI starts the shipped demo app
on a UNIX socket (and a TCP-only app with --tcp), holds the route over the hub's SSH
server, and stops the app when the hub ends the route."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.forward.conftest import start_forward_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fwdcli")
    w = start_forward_hub(tmp, ("carol", "dave"), {"TETHER_FORWARD_SWEEP_SECONDS": "0.3"})
    hub = w["hub"]
    hub.fwd = {"ssh": f"carol@127.0.0.1:{w['ssh_port']}", "gw_port": w["gw_port"], "key": w["keys"]["carol"],
               "known": w["known"], "token": w["tokens"]["carol"], "tmp": tmp}
    yield hub
    hub.stop()


def _start(hub, name, *command, extra=()):
    f = hub.fwd
    env = {**os.environ, "TETHER_HUB": hub.url, "TETHER_TOKEN": f["token"], "HOME": str(f["tmp"])}
    proc = subprocess.Popen([sys.executable, "-m", "tether", "forward", name, "--ssh", f["ssh"], "-i", str(f["key"]),
                             "--known-hosts", str(f["known"]), "--json", *extra, "--", *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    events = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        events.append(json.loads(line))
        if events[-1]["event"] in ("live", "exit"):
            break
    return proc, events


def _get(port, host, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Host": host, **(headers or {})})
    r = c.getresponse()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()


def _cookie(hub, events):
    live = events[-1]
    path = live["signin"].split(f":{hub.fwd['gw_port']}", 1)[1]
    host = live["url"].split("//")[1].split(":")[0]
    status, headers, _ = _get(hub.fwd["gw_port"], host, path)
    assert status == 303, (status, headers)
    return host, headers["set-cookie"].split(";", 1)[0]


def _cli(hub, *args):
    env = {**os.environ, "TETHER_HUB": hub.url, "TETHER_TOKEN": hub.fwd["token"], "HOME": str(hub.fwd["tmp"])}
    return subprocess.run([sys.executable, "-m", "tether", "forward", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_the_demo_app_is_served_and_stopping_the_route_stops_it(hub):
    proc, events = _start(hub, "demo", sys.executable, "-m", "uvicorn", "--uds", "{socket}", "--log-level",
                          "warning", "tether.forward.demo:app")
    try:
        assert [e["event"] for e in events if e["event"] != "data"] == ["connect", "live"], events
        assert events[-1]["url"] == f"http://demo--carol.localhost:{hub.fwd['gw_port']}/"
        host, cookie = _cookie(hub, events)
        status, _, body = _get(hub.fwd["gw_port"], host, "/api/hello", {"Cookie": cookie})
        assert status == 200
        app_pid = json.loads(body)["pid"]
        from websockets.sync.client import connect

        with connect(f"ws://{host}/ws", sock=socket.create_connection(("127.0.0.1", hub.fwd["gw_port"])),
                     additional_headers={"Cookie": cookie}, open_timeout=5) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the websocket is a connection open to the app
                routes = json.loads(_cli(hub, "list", "--json").stdout)
                if routes and routes[0]["open_connections"] >= 1:
                    break
            assert routes[0]["open_connections"] >= 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the hub's sweep saves activity every 0.3 s here
            listed = json.loads(_cli(hub, "list", "--json").stdout)
            if listed and listed[0]["bytes_down"] > 0:
                break
        assert [(r["name"], r["state"]) for r in listed] == [("demo", "live")]
        assert listed[0]["bytes_up"] > 0 and listed[0]["bytes_down"] > 0
        metrics = httpx.get(hub.url + "/metrics").text  # per-route Prometheus metrics
        assert 'tether_gateway_requests_total{route="carol/demo",status="200"}' in metrics
        assert 'tether_gateway_requests_total{route="carol/demo",status="101"}' in metrics
        assert 'tether_gateway_bytes_total{direction="down",route="carol/demo"}' in metrics
        r = _cli(hub, "stop", "demo")
        assert r.returncode == 0, r.stderr
        out, err = proc.communicate(timeout=30)
        tail = [e for e in map(json.loads, out.splitlines()) if e["event"] != "data"]
        assert proc.returncode == 1, (tail, err)
        assert tail[-2]["event"] == "failed" and "ended the route" in tail[-2]["reason"]
        assert tail[-1] == {"event": "exit", "code": 1}
        with pytest.raises(ProcessLookupError):
            os.kill(app_pid, 0)  # the app's process group was stopped
        assert _get(hub.fwd["gw_port"], host, "/api/hello", {"Cookie": cookie})[0] == 404
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def test_links_and_shares_print_as_a_table_or_as_json_and_unshare_says_what_it_did(hub):
    proc, events = _start(hub, "shown", sys.executable, "-m", "uvicorn", "--uds", "{socket}", "--log-level",
                          "warning", "tether.forward.demo:app")
    try:
        assert events[-1]["event"] == "live", events
        r = _cli(hub, "links", "shown")
        assert (r.returncode, r.stdout, r.stderr.strip()) == (0, "", "no share links")  # the remark off stdout
        assert json.loads(_cli(hub, "links", "shown", "--json").stdout) == []
        r = _cli(hub, "share", "shown", "--link", "--read-only", "--expires", "10m", "--json")
        assert r.returncode == 0, r.stderr
        made = json.loads(r.stdout)
        rows = json.loads(_cli(hub, "links", "shown", "--json").stdout)
        assert [(x["id"], x["read_only"]) for x in rows] == [(made["id"], True)]
        table = _cli(hub, "links", "shown").stdout.splitlines()
        assert table[0].split() == ["id", "read_only", "created", "expires"]
        assert table[1].split()[:2] == [made["id"], "yes"]
        assert _cli(hub, "share", "shown", "--with", "dave").returncode == 0
        r = _cli(hub, "unshare", "shown", "--with", "dave")
        assert (r.returncode, r.stdout) == (0, "shown is no longer shared with dave\n"), r.stderr
        r = _cli(hub, "unshare", "shown", "--with", "nobody-here")  # the hub's refusal, not a "done"
        assert r.returncode != 0 and r.stdout == "", r
        r = _cli(hub, "links", "nosuch", "--json")
        assert r.returncode == 1 and r.stdout == "" and "nosuch" in r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_a_tcp_only_app_with_tcp(hub):
    proc, events = _start(hub, "plain", sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}",
                          extra=("--tcp",))
    try:
        kinds = [e["event"] for e in events if e["event"] != "data"]  # the app's own log lines pass as data
        assert kinds == ["warning", "connect", "live"], events
        assert "every user of this node" in events[0]["reason"]
        host, cookie = _cookie(hub, events)
        status, _, body = _get(hub.fwd["gw_port"], host, "/", {"Cookie": cookie})
        assert status == 200 and b"Directory listing" in body
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert json.loads(out.splitlines()[-1]) == {"event": "exit", "code": 0}



def test_a_second_node_is_refused_unless_it_replaces(hub):
    first, events = _start(hub, "twice", sys.executable, "-m", "uvicorn", "--uds", "{socket}", "--log-level",
                           "warning", "tether.forward.demo:app")
    try:
        assert events[-1]["event"] == "live"
        second, events2 = _start(hub, "twice", sys.executable, "-m", "uvicorn", "--uds", "{socket}",
                                 "--log-level", "warning", "tether.forward.demo:app")
        second.wait(30)
        events2 = [e for e in events2 if e["event"] != "data"]
        assert second.returncode == 2 and events2[-1] == {"event": "exit", "code": 2}
        assert "--replace" in events2[-2]["reason"]
        third, events3 = _start(hub, "twice", sys.executable, "-m", "uvicorn", "--uds", "{socket}",
                                "--log-level", "warning", "tether.forward.demo:app", extra=("--replace",))
        assert events3[-1]["event"] == "live"
        first.wait(30)  # the replaced node is told and stops its app
        assert first.returncode == 1
        third.send_signal(signal.SIGINT)
        third.wait(30)
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_bad_names_and_a_missing_ssh_target_are_usage_errors(hub):
    r = _cli(hub, "Bad.Name", "--ssh", hub.fwd["ssh"], "--", "true")
    assert r.returncode == 2 and "route name" in r.stderr
    env = {k: v for k, v in os.environ.items() if k != "TETHER_SSH_HUB"}
    r = subprocess.run([sys.executable, "-m", "tether", "forward", "x", "--", "true"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 2 and "--ssh" in r.stderr


def test_a_hub_restart_loses_nothing_the_node_reconnects_and_the_session_holds(hub):
    proc, events = _start(hub, "steady", sys.executable, "-m", "uvicorn", "--uds", "{socket}", "--log-level",
                          "warning", "tether.forward.demo:app")
    try:
        assert events[-1]["event"] == "live", events
        host, cookie = _cookie(hub, events)
        assert _get(hub.fwd["gw_port"], host, "/api/hello", {"Cookie": cookie})[0] == 200
        hub.stop()
        hub.start()
        deadline = time.monotonic() + 60  # the node reconnects with backoff (1 s, 2 s, ...)
        status = None
        while time.monotonic() < deadline:
            status = _get(hub.fwd["gw_port"], host, "/api/hello", {"Cookie": cookie})[0]
            if status == 200:
                break
            assert status in (503,), status  # waiting for its node, never a hang or a 404
            time.sleep(0.3)
        assert status == 200
        assert proc.poll() is None  # the app ran on through the outage
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_after_a_restart_a_route_whose_node_is_gone_waits_instead_of_staying_live(hub):
    proc, events = _start(hub, "ghost", sys.executable, "-m", "uvicorn", "--uds", "{socket}", "--log-level",
                          "warning", "tether.forward.demo:app")
    assert events[-1]["event"] == "live", events
    host, cookie = _cookie(hub, events)
    app_pid = json.loads(_get(hub.fwd["gw_port"], host, "/api/hello", {"Cookie": cookie})[2])["pid"]
    hub.stop()
    proc.kill()  # the node dies with the hub's connection: nothing will come back for this route
    proc.wait(10)
    os.killpg(app_pid, signal.SIGKILL)  # and its app (its own process group), which a killed CLI cannot stop
    hub.start()
    deadline = time.monotonic() + 10
    state = None
    while time.monotonic() < deadline:
        routes = json.loads(_cli(hub, "list", "--json").stdout)
        state = next((r["state"] for r in routes if r["name"] == "ghost"), None)
        if state == "reconnecting":
            break
        time.sleep(0.3)
    assert state == "reconnecting"  # and the reconnect grace ends it; browsers get 503 meanwhile
