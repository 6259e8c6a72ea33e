"""Hostile apps on the real OS: from inside a sandbox, nothing of the host, of another
instance, of IPv6 or of the metadata address is reachable, and nothing on the host gets
into an instance except through its socket. A sandbox whose deny does not hold (the
self-test proves it before the app starts) does not start, with the reason."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from tether.apps import netpolicy
from tether.apps.sandbox import SandboxError
from tests.apps.conftest import PREFIX, leftovers, ns_addresses


@pytest.fixture
def host_listener():
    """A TCP listener of 'the hub' on every host address (IPv4 and IPv6), non-blocking."""
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 0))
    s.listen(16)
    s.setblocking(False)
    yield s, s.getsockname()[1]
    s.close()


def accepted(listener) -> bool:
    try:
        listener.accept()[0].close()
        return True
    except BlockingIOError:
        return False


def host_global_addresses() -> list[str]:
    out = subprocess.run(["ip", "-j", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    return [a["local"] for d in json.loads(out) if not d["ifname"].startswith("tag")
            for a in d.get("addr_info", []) if "local" in a]


def test_the_host_is_unreachable(sandboxes, start_agent, host_listener):
    listener, port = host_listener
    _, a = start_agent("hosta")
    gateways = [r["gateway"] for fam in ("-4", "-6") for r in json.loads(subprocess.run(
        ["ip", "-n", f"{PREFIX}-hosta", "-j", fam, "route", "show", "default"], capture_output=True, text=True).stdout)]
    assert len(gateways) == 2
    for host in gateways + host_global_addresses():
        assert a(op="connect", host=host, port=port) == {"error": "ECONNREFUSED"}, host
    # "the hub's API on loopback": the sandbox's loopback is its own
    assert a(op="connect", host="127.0.0.1", port=port) == {"error": "ECONNREFUSED"}
    assert a(op="connect", host="::1", port=port) == {"error": "ECONNREFUSED"}
    assert not accepted(listener)
    assert sandboxes.status("hosta").refused["host"] >= len(gateways)


def test_ipv6_and_metadata_are_refused(sandboxes, start_agent):
    _, a = start_agent("v6a")
    for host, port in (("2001:db8::1", 443), ("2606:4700::1111", 53), ("169.254.169.254", 80),
                       ("fe80::1", 80)):
        assert "error" in a(op="connect", host=host, port=port), host
    assert "error" in a(op="udp", host="2001:db8::1", port=53)
    assert "error" in a(op="udp", host="169.254.169.254", port=53)
    refused = sandboxes.status("v6a").refused
    assert refused["ipv6"] >= 2 and refused["link-local"] >= 2


def test_another_instance_is_unreachable_both_ways_and_from_the_host(sandboxes, start_agent):
    _, b = start_agent("insb", env={"LISTEN_TCP": "8080"})
    _, a = start_agent("insa", env={"LISTEN_TCP": "8080"})
    b4, b6 = ns_addresses(f"{PREFIX}-insb")
    a4, _ = ns_addresses(f"{PREFIX}-insa")
    assert a(op="connect", host=b4, port=8080) == {"error": "ECONNREFUSED"}
    assert a(op="connect", host=b6, port=8080) == {"error": "ECONNREFUSED"}
    assert b(op="connect", host=a4, port=8080) == {"error": "ECONNREFUSED"}
    assert sandboxes.status("insa").refused["instance"] == 2
    # nothing on the host opens a connection into an instance (only its socket leads in)
    with pytest.raises(OSError):
        socket.create_connection((b4, 8080), timeout=1).close()


def test_a_sandbox_whose_deny_does_not_hold_does_not_start(sandboxes, make_spec, monkeypatch):
    # Sabotage both layers of the policy: empty tables, nothing refused.
    monkeypatch.setattr(netpolicy, "instance_table", lambda table, *a, **k: f"add table inet {table}\n")
    monkeypatch.setattr(netpolicy, "host_table", lambda table, *a, **k: f"add table inet {table}\n")
    spec = make_spec("stf", ["sh", "-c", "touch /data/started; sleep 60"])
    with pytest.raises(SandboxError) as err:
        sandboxes.start(spec)
    assert "not started" in err.value.reason and "reached host" in err.value.reason
    assert not (spec.data_dir / "started").exists()
    assert not sandboxes.status("stf").running
    sandboxes.remove("stf")
    assert leftovers(sandboxes) == []
