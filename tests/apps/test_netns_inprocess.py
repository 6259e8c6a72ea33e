"""A sandbox's network namespace and veth, made in process over netlink (tether.apps.netns):
what `ip` sees is what `ip netns add` + `ip link add ... veth` made before (addresses without
DAD, routes both ways, loopback up), the hub's own threads never leave the host's namespace,
a name in use is refused without touching it, and removal leaves no file, mount or link."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tether.apps import netns
from tests.apps.conftest import PREFIX


@pytest.fixture
def name():
    n = f"{PREFIX}-nl{os.getpid() % 1000}"
    yield n
    netns.remove(n)
    assert not (netns.NETNS_DIR / n).exists() and not Path("/sys/class/net", n).exists()


def ip(*args: str) -> list:
    out = subprocess.run([netns.IP, "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def test_namespace_and_veth_as_ip_would_make_them(name):
    link = netns.Link.at(3, *netns.default_pools(PREFIX))
    before = os.readlink("/proc/thread-self/ns/net")
    netns.create(name, link)
    assert os.readlink("/proc/thread-self/ns/net") == before  # the caller stays on the host
    assert name in [n["name"] for n in ip("netns", "list")]
    inside = {d["ifname"]: d for d in ip("-n", name, "addr")}
    assert set(inside) == {"lo", "eth0"} and "UP" in inside["lo"]["flags"] and "UP" in inside["eth0"]["flags"]
    addrs = {(a["local"], a["prefixlen"]): a for a in inside["eth0"]["addr_info"]}
    assert (str(link.inst4), 31) in addrs and addrs[(str(link.inst6), 127)].get("nodad")
    (host,) = ip("addr", "show", "dev", name)
    host_addrs = {(a["local"], a["prefixlen"]) for a in host["addr_info"]}
    assert {(str(link.host4), 31), (str(link.host6), 127)} <= host_addrs and "UP" in host["flags"]
    routes = {r["dst"]: r.get("gateway") for r in ip("-n", name, "route")}
    routes6 = {r["dst"]: r.get("gateway") for r in ip("-n", name, "-6", "route")}
    assert routes["default"] == str(link.host4) and routes6["default"] == str(link.host6)
    assert Path(f"/proc/sys/net/ipv4/conf/{name}/forwarding").read_text().strip() == "1"
    # the host reaches the instance's end over the link (the namespace has no policy yet)
    for family, address in ((socket.AF_INET, str(link.inst4)), (socket.AF_INET6, str(link.inst6))):
        server = netns.run_in(name, lambda: socket.create_server((address, 0), family=family))
        with server, socket.create_connection((address, server.getsockname()[1]), timeout=5):
            pass
    # /run/netns is a shared mount, as `ip netns` keeps it
    (mine,) = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
               if ln.split()[4] == str(netns.NETNS_DIR)]
    assert "shared:" in mine
    netns.remove(name)
    netns.remove(name)  # idempotent
    assert name not in [n["name"] for n in ip("netns", "list")] and not Path("/sys/class/net", name).exists()
    assert not any(ln.split()[4] == str(netns.NETNS_DIR / name)
                   for ln in Path("/proc/self/mountinfo").read_text().splitlines())


def test_a_name_in_use_is_refused_and_left_alone(name):
    link = netns.Link.at(4, *netns.default_pools(PREFIX))
    netns.create(name, link)
    ino = os.stat(netns.NETNS_DIR / name).st_ino
    with pytest.raises(netns.NetError, match="exists"):
        netns.create(name, link)
    assert os.stat(netns.NETNS_DIR / name).st_ino == ino
    assert {d["ifname"] for d in ip("-n", name, "addr")} == {"lo", "eth0"}


def test_a_failed_step_leaves_what_remove_clears(name):
    link = netns.Link.at(5, *netns.default_pools(PREFIX))
    subprocess.run([netns.IP, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"[:15]],
                   check=True)  # the host end's name is taken
    try:
        with pytest.raises(netns.NetError, match="veth"):
            netns.create(name, link)
    finally:
        subprocess.run([netns.IP, "link", "del", name], check=False)
    netns.remove(name)
    assert not (netns.NETNS_DIR / name).exists()


def test_threads_making_namespaces_at_once(name):
    names = [f"{name}{i}"[:15] for i in range(4)]
    errors = []

    def make(i, n):
        try:
            netns.create(n, netns.Link.at(10 + i, *netns.default_pools(PREFIX)))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i, n)) for i, n in enumerate(names)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert {n for n in names if (netns.NETNS_DIR / n).exists() and Path("/sys/class/net", n).exists()} == set(names)
    finally:
        for n in names:
            netns.remove(n)
    assert not any((netns.NETNS_DIR / n).exists() or Path("/sys/class/net", n).exists() for n in names)


def test_run_netns_is_made_a_shared_mount_when_it_is_not_one(tmp_path):
    """On a fresh machine /run/netns is a plain directory: it is bound onto itself and made
    shared, as `ip netns add` does. Tried in a private mount namespace on a stand-in directory."""
    code = ("import sys; from pathlib import Path; from tether.apps import netns\n"
            "netns.NETNS_DIR = Path(sys.argv[1]); netns._share_dir(); netns._share_dir()\n"
            "print('\\n'.join(l for l in open('/proc/self/mountinfo') if l.split()[4] == sys.argv[1]))")
    stand_in = tmp_path / "netns"
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code,
                           str(stand_in)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln]
    assert len(lines) == 1 and "shared:" in lines[0]  # one bind (the second call changed nothing), shared
    assert stand_in.is_dir()
