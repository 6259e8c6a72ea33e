"""Grants on the real OS: a server in a namespace the test made is refused by default,
reachable once granted (only that proto/address/port, only for that instance), and cut
off at once when revoked, an open connection included. Grants are keyed by the instance:
a new instance on a reused address inherits nothing."""

from __future__ import annotations

import ipaddress
import subprocess

from tether.apps.sandbox import Destination
from tests.apps.conftest import leftovers, ns_addresses, wait_until


def dest(proto, addr, port):
    return Destination(proto, ipaddress.ip_address(addr), port)


def test_grant_opens_one_destination_and_revoke_closes_it_with_open_flows(sandboxes, start_agent, outside_server):
    addr, port = outside_server
    _, a = start_agent("neta")
    assert a(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}
    assert sandboxes.status("neta").refused["outside"] >= 1

    sandboxes.set_grants("neta", [dest("tcp", addr, port)])
    assert a(op="connect", host=addr, port=port) == {"ok": True}
    conn = a(op="open", host=addr, port=port)["id"]
    assert a(op="exchange", id=conn, data="hi") == {"data": "echo:hi"}
    # only what was granted: not UDP to the same port, not another port
    assert "error" in a(op="udp", host=addr, port=port)
    assert a(op="connect", host=addr, port=port + 1) == {"error": "ECONNREFUSED"}

    sandboxes.set_grants("neta", [])
    assert a(op="exchange", id=conn, data="again")["error"] in ("ECONNRESET", "EOF", "EPIPE", "ECONNREFUSED")
    assert a(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}
    assert sandboxes.status("neta").refused["revoked"] >= 1

    def no_established_flow():
        return "ESTABLISHED" not in subprocess.run(["conntrack", "-L", "-d", addr, "-p", "tcp", "--dport", str(port)],
                                                   capture_output=True, text=True).stdout

    wait_until(no_established_flow, 5, what="the host's conntrack entry of the revoked flow to go")

    # granted again after a revoke: works again; UDP grant works on its own
    sandboxes.set_grants("neta", [dest("tcp", addr, port), dest("udp", addr, port)])
    assert a(op="connect", host=addr, port=port) == {"ok": True}
    assert a(op="udp", host=addr, port=port) == {"data": "pong"}


def test_an_ipv6_grant_opens_one_destination_and_revoke_closes_it(sandboxes, start_agent, outside_server6):
    addr, port = outside_server6
    _, a = start_agent("v6a")
    _, b = start_agent("v6b")
    assert a(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}
    assert sandboxes.status("v6a").refused["ipv6"] >= 1  # ungranted IPv6: refused and counted

    sandboxes.set_grants("v6a", [dest("tcp", addr, port)])
    assert a(op="connect", host=addr, port=port) == {"ok": True}
    conn = a(op="open", host=addr, port=port)["id"]
    assert a(op="exchange", id=conn, data="hi6") == {"data": "echo:hi6"}
    # only what was granted: not UDP, not another port, not for another instance
    assert "error" in a(op="udp", host=addr, port=port)
    assert a(op="connect", host=addr, port=port + 1) == {"error": "ECONNREFUSED"}
    assert b(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}

    sandboxes.set_grants("v6a", [dest("udp", addr, port)])  # the TCP grant revoked, a UDP one made
    assert a(op="exchange", id=conn, data="again")["error"] in ("ECONNRESET", "EOF", "EPIPE", "ECONNREFUSED")
    assert a(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}
    assert sandboxes.status("v6a").refused["revoked"] >= 1
    assert a(op="udp", host=addr, port=port) == {"data": "pong"}
    sandboxes.set_grants("v6a", [])
    assert "error" in a(op="udp", host=addr, port=port)


def test_a_grant_is_the_instances_alone(sandboxes, start_agent, outside_server):
    addr, port = outside_server
    _, a = start_agent("gra")
    _, b = start_agent("grb")
    sandboxes.set_grants("gra", [dest("tcp", addr, port)])
    assert a(op="connect", host=addr, port=port) == {"ok": True}
    assert b(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}


def test_reused_address_inherits_no_grant(sandboxes, start_agent, outside_server):
    addr, port = outside_server
    _, a = start_agent("reua")
    old_addresses = ns_addresses(f"{sandboxes.prefix}-reua")
    sandboxes.set_grants("reua", [dest("tcp", addr, port)])
    assert a(op="connect", host=addr, port=port) == {"ok": True}
    sandboxes.remove("reua")
    _, c = start_agent("reuc")
    assert ns_addresses(f"{sandboxes.prefix}-reuc") == old_addresses  # the same address again
    assert c(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}


def test_deny_wins_over_a_grant(sandboxes, start_agent):
    _, b = start_agent("dwb", env={"LISTEN_TCP": "8080"})
    b_addr = ns_addresses(f"{sandboxes.prefix}-dwb")[0]
    _, a = start_agent("dwa")
    sandboxes.set_grants("dwa", [dest("tcp", b_addr, 8080), dest("tcp", "169.254.169.254", 80)])
    assert a(op="connect", host=b_addr, port=8080) == {"error": "ECONNREFUSED"}
    assert a(op="connect", host="169.254.169.254", port=80) == {"error": "ECONNREFUSED"}
    refused = sandboxes.status("dwa").refused
    assert refused["instance"] >= 1 and refused["link-local"] >= 1


def test_remove_leaves_no_namespace_link_table_cgroup_or_socket(sandboxes, start_agent, outside_server):
    addr, port = outside_server
    spec, a = start_agent("rmx")
    sandboxes.set_grants("rmx", [dest("tcp", addr, port)])
    a(op="open", host=addr, port=port)
    a.close()
    assert leftovers(sandboxes, "rmx")
    sandboxes.remove("rmx")
    assert leftovers(sandboxes) == []  # no netns, veth, cgroup, nor the host's nft table
    assert not (spec.run_dir / "app.sock").exists()
    assert subprocess.run(["pgrep", "-u", str(spec.uid)], capture_output=True).stdout == b""
    flows = subprocess.run(["conntrack", "-L", "-d", addr], capture_output=True, text=True).stdout
    assert f"dport={port}" not in flows


def test_adopt_after_a_hub_restart(sandboxes, start_agent, outside_server, tmp_path):
    from tether.apps.sandbox import Sandboxes

    addr, port = outside_server
    spec, a = start_agent("adp", grants=(dest("tcp", addr, port),))
    assert a(op="connect", host=addr, port=port) == {"ok": True}
    later = Sandboxes(sandboxes.root, prefix=sandboxes.prefix)  # a new hub process's view
    assert later.present() == ["adp"]
    st = later.adopt(spec)
    assert st.running
    later.set_grants("adp", [])
    assert a(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}
    later.remove("adp")
    assert leftovers(later) == []


def test_set_grants_refuses_bad_destinations_and_changes_nothing(sandboxes, start_agent, outside_server):
    import pytest

    from tether.apps.sandbox import SandboxError

    addr, port = outside_server
    _, a = start_agent("bgr", grants=(dest("tcp", addr, port),))
    for bad in ([dest("icmp", addr, port)], [dest("tcp", addr, 0)], [dest("tcp", addr, 70000)],
                [Destination("tcp", addr, port)]):
        with pytest.raises(SandboxError):
            sandboxes.set_grants("bgr", bad)
        assert a(op="connect", host=addr, port=port) == {"ok": True}
    with pytest.raises(SandboxError):
        sandboxes.set_grants("nosuch", [])


def test_a_grant_change_is_atomic(sandboxes, start_agent, outside_server):
    """A transaction that fails part-way leaves the policy as it was (nft applies whole or not at all)."""
    import pytest

    from tether.apps import netpolicy

    addr, port = outside_server
    _, a = start_agent("atom")
    good = netpolicy.change_grants(sandboxes.table, "atom", [], [dest("tcp", addr, port)], [])
    with pytest.raises(netpolicy.PolicyError):
        netpolicy.run(good + "add element inet nosuch g4_atom { 1.2.3.4 . tcp . 1 }\n", f"{sandboxes.prefix}-atom")
    assert a(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}
    netpolicy.run(good, f"{sandboxes.prefix}-atom")
    assert a(op="connect", host=addr, port=port) == {"ok": True}


START_ELSEWHERE = r"""
import sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/src"]
from tether.apps.sandbox import Sandboxes, spec_from_json
spec = spec_from_json(Path(sys.argv[3]).read_text())
Sandboxes(Path(sys.argv[2]), prefix=sys.argv[4]).start(spec)
"""


def test_adopt_what_another_hub_process_started(sandboxes, make_spec, outside_server, tmp_path):
    """A hub process starts an instance and exits (a restart); a new one finds it, adopts it
    (the same app process keeps running), changes its grants and removes it cleanly."""
    import dataclasses
    import sys
    from pathlib import Path

    from tether.apps.sandbox import _spec_to_json
    from tests.apps.conftest import AGENT, Agent

    addr, port = outside_server
    spec = make_spec("orph", ["python3", "agent.py"], files={"agent.py": AGENT})
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(_spec_to_json(spec))
    repo = str(Path(__file__).resolve().parents[2])
    subprocess.run([sys.executable, "-c", START_ELSEWHERE, repo, str(sandboxes.root), str(spec_file),
                    sandboxes.prefix], check=True)
    a = Agent(spec.run_dir / "app.sock")
    try:
        pid_before = sandboxes.status("orph").pid
        assert sandboxes.present() == ["orph"]
        st = sandboxes.adopt(dataclasses.replace(spec, grants=(dest("tcp", addr, port),)))
        assert st.running and st.pid == pid_before
        assert a(op="connect", host=addr, port=port) == {"ok": True}
        sandboxes.set_grants("orph", [])
        assert a(op="connect", host=addr, port=port) == {"error": "ECONNREFUSED"}
    finally:
        a.close()
    sandboxes.remove("orph")
    assert leftovers(sandboxes) == []
    assert subprocess.run(["pgrep", "-u", str(spec.uid)], capture_output=True).stdout == b""
