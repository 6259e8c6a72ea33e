"""`tether job` as a scheduler and a node use it: real processes against a real hub,
LAVA's output formats and cache files, and exit codes 0/1/2/3/4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.hubproc import free_port


@pytest.fixture
def tether(tmp_path):
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, token: str | None = None, hub: str | None = None, timeout: float = 60, **env: str):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "LAVA_"))}
        e.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"),
                 LAVA_MULTI_NODE_CACHE=str(tmp_path / "cache.txt"),
                 LAVA_MULTI_NODE_NETWORK_CACHE=str(tmp_path / "net-cache.txt"), **env)
        if token:
            e["TETHER_TOKEN"] = token
        if hub:
            e["TETHER_HUB"] = hub
        return subprocess.run([sys.executable, "-m", "tether", "job", *args], env=e, capture_output=True,
                              text=True, timeout=timeout)

    run.cache = tmp_path / "cache.txt"
    run.net_cache = tmp_path / "net-cache.txt"
    return run


def make_group(tether, scheduler, *args):
    r = tether("create", f"cli-{time.monotonic_ns()}", "--space", scheduler.space, *args, "--json",
               token=scheduler.token, hub=scheduler.hub.url)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_create_and_the_lava_helpers_outputs(tether, scheduler):
    nodes = make_group(tether, scheduler, "--role", "server=1", "--role", "client=2")
    assert [n["role"] for n in nodes] == ["server", "client", "client"]
    group = nodes[0]["group"]
    assert [n["node"] for n in nodes] == [f"{group}.0", f"{group}.1", f"{group}.2"]
    server, c1, _ = nodes
    url = scheduler.hub.url
    assert tether("self", token=c1["token"], hub=url).stdout == f"{group}.1\n"
    assert tether("role", token=c1["token"], hub=url).stdout == "client"  # no newline, as lava-role
    assert tether("role", "list", token=c1["token"], hub=url).stdout == "server\nclient\n"
    assert tether("group", token=c1["token"], hub=url).stdout == (
        f"\t{group}.0\tserver\n\t{group}.1\tclient\n\t{group}.2\tclient\n")
    assert tether("group", "server", token=c1["token"], hub=url).stdout == f"{group}.0\n"
    r = tether("group", "db", token=c1["token"], hub=url)
    assert r.returncode == 1 and "no role 'db'" in r.stderr

    # send never blocks; wait writes LAVA's cache file: node:key=value lines
    assert tether("send", "server-ready", "ip=10.0.0.5", "port=8080", token=server["token"], hub=url).returncode == 0
    r = tether("wait", "server-ready", token=c1["token"], hub=url)
    assert r.returncode == 0, r.stderr
    assert tether.cache.read_text() == f"{group}.0:ip=10.0.0.5\n{group}.0:port=8080\n"
    # a message without data leaves no cache file, as LAVA's helper does
    tether("send", "bare", token=server["token"], hub=url)
    assert tether("wait", "bare", token=c1["token"], hub=url).returncode == 0 and not tether.cache.exists()

    s = tether("status", group, token=scheduler.token, hub=url)
    assert s.returncode == 0 and "message server-ready: sent by " + f"{group}.0" in s.stdout


def test_exit_codes(tether, scheduler):
    nodes = make_group(tether, scheduler, "--role", "r=2")
    a, b = nodes
    url = scheduler.hub.url
    r = tether("wait-all", "never", "--timeout", "1s", token=a["token"], hub=url)
    assert r.returncode == 1 and f"still missing: {a['node']}, {b['node']}" in r.stderr  # timed out, naming them
    r = tether("send", "bad id", token=a["token"], hub=url)
    assert r.returncode == 2 and "whitespace" in r.stderr
    r = tether("send", "m", "novalue", token=a["token"], hub=url)
    assert r.returncode == 2 and "not key=value" in r.stderr
    r = tether("wait-all", "m", "db", "--timeout", "1s", token=a["token"], hub=url)
    assert r.returncode == 2 and "no role 'db'" in r.stderr
    r = tether("status", nodes[0]["group"], token=a["token"], hub=url)  # a node token is not the scheduler's
    assert r.returncode == 4
    r = tether("send", "m", token="tth_0000000000000000_" + "x" * 43, hub=url)
    assert r.returncode == 4
    r = tether("send", "m", token=a["token"], hub=f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 3
    # a failed node: the others' waits fail at once, exit 1, naming it
    tether("fail", nodes[0]["group"], b["node"], "--reason", "board died", token=scheduler.token, hub=url)
    t = time.monotonic()
    r = tether("sync", "s", "--timeout", "60s", token=a["token"], hub=url)
    assert r.returncode == 1 and b["node"] in r.stderr and "board died" in r.stderr
    assert time.monotonic() - t < 10
    # status says why the node is out, once per row
    row = next(ln for ln in tether("status", nodes[0]["group"], token=scheduler.token, hub=url).stdout.splitlines()
               if ln.startswith(b["node"]))
    assert row.split()[:4] == [b["node"], "r", "failed", "(board"], row


def test_sync_and_wait_all_between_processes(tether, scheduler):
    nodes = make_group(tether, scheduler, "--role", "server=1", "--role", "client=3")
    url = scheduler.hub.url
    results = {}

    def node(n):
        results[n["node"]] = (tether("send", "up", f"who={n['node']}", token=n["token"], hub=url).returncode,
                              tether("sync", "all-up", "--timeout", "60s", token=n["token"], hub=url).returncode)

    threads = [threading.Thread(target=node, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(v == (0, 0) for v in results.values()), results
    r = tether("wait-all", "up", "client", token=nodes[0]["token"], hub=url)
    assert r.returncode == 0
    # every sender's data, as LAVA answers a wait-all (the role says whom to wait for)
    assert sorted(tether.cache.read_text().splitlines()) == sorted(f"{n['node']}:who={n['node']}" for n in nodes)


def test_network_broadcast_collect_query_and_hosts(tether, scheduler, tmp_path):
    nodes = make_group(tether, scheduler, "--role", "server=1", "--role", "client=1")
    url = scheduler.hub.url
    server, client = nodes
    assert tether("network", "broadcast", "lo", token=server["token"], hub=url).returncode == 0
    assert tether("network", "broadcast", "lo", token=client["token"], hub=url).returncode == 0
    r = tether("network", "collect", "lo", "server", token=client["token"], hub=url)
    assert r.returncode == 0, r.stderr
    assert tether("network", "query", server["node"], "ipv4", token=client["token"], hub=url).stdout == "127.0.0.1\n"
    assert tether("network", "query", server["node"], "netmask", token=client["token"], hub=url).stdout == "255.0.0.0\n"
    hosts = tmp_path / "hosts"
    tether("network", "alias-hosts", str(hosts), token=client["token"], hub=url)
    host = tether("network", "query", server["node"], "hostname", token=client["token"], hub=url).stdout.strip()
    assert hosts.read_text() == f"127.0.0.1\t{host}\tserver01\n127.0.0.1\t{host}\tclient01\n"
    r = tether("network", "broadcast", "no-such-iface0", token=client["token"], hub=url)
    assert r.returncode == 2


def test_a_node_that_finished_or_failed_can_no_longer_send_or_sync(tether, scheduler):
    """After `tether job run` ends, the node takes no further part: a send or a sync from
    it is refused (exit 1, what happened and what to do) and nothing is stored."""
    nodes = make_group(tether, scheduler, "--role", "r=3")
    url = scheduler.hub.url
    done, failed, other = nodes
    group = done["group"]
    assert tether("run", "--", "true", token=done["token"], hub=url).returncode == 0
    assert tether("run", "--", "false", token=failed["token"], hub=url).returncode != 0
    for node, what in ((done, "finished"), (failed, "failed (false: exit status 1)")):
        r = tether("send", "y", "b=2", token=node["token"], hub=url)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"{node['node']} cannot send 'y': it already {what}" in r.stderr
        assert "nothing was stored" in r.stderr and "new group" in r.stderr
        assert "stored" not in r.stdout
        r = tether("sync", "s", "--timeout", "5s", token=node["token"], hub=url)
        assert r.returncode == 1 and f"cannot sync 's': it already {what}" in r.stderr, r.stderr
    st = json.loads(tether("status", group, "--json", token=scheduler.token, hub=url).stdout)
    assert st["messages"] == [] and st["barriers"] == []  # nothing stored, no arrival counted
    # the node still at work is unaffected
    r = tether("send", "y", "b=2", token=other["token"], hub=url)
    assert r.returncode == 0, r.stderr
