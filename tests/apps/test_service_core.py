"""The apps core's rules (sans-IO): names, argv, limits, grant destinations, instance ids,
backoff and the gateway's access rule, with every hostile input the issue names."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.apps import core
from tether.auth.caveats import parse_scope

A = ipaddress.ip_address
HUB = [A("10.9.0.1"), A("127.0.0.1"), A("::1"), A("fd00::1")]


@pytest.mark.parametrize("name", ["", "Demo", "de mo", "a/b", "../x", "x;rm -rf /", "$(id)", "a--b", "a.b",
                                  "-a", "a" * 41, "demo\n", "dé"])
def test_bad_app_names_are_refused_with_the_rule(name):
    with pytest.raises(core.AppError) as e:
        core.check_app_name(name)
    assert e.value.status == 400 and "lowercase letters" in e.value.detail


@pytest.mark.parametrize("v", ["", "../1", "1/2", "1 2", "$(id)", "`id`", "1;2", ".hidden", "v\n", "a" * 65])
def test_bad_versions_are_refused(v):
    with pytest.raises(core.AppError, match="version"):
        core.check_version(v)


def test_good_names_and_versions_pass():
    assert core.check_app_name("demo-2") == "demo-2"
    assert core.check_version("1.2.3+build_4-rc1") == "1.2.3+build_4-rc1"


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=50), min_size=1, max_size=20))
def test_argv_is_kept_exactly_as_given(argv):
    if argv[0] == "":
        with pytest.raises(core.AppError):
            core.check_argv(argv)
    else:
        assert core.check_argv(argv) == tuple(argv)


def test_hostile_argv_passes_literally_and_bad_shapes_are_refused():
    hostile = ["python3", "-c", "print('x')\"; rm -rf / #", "$(id)", "`id`", "a\nb", "'", "; ls"]
    assert core.check_argv(hostile) == tuple(hostile)
    for bad in ("python3 app.py", [], [""], ["a\x00b"], [1], ["x"] * 300, ["x" * 5000]):
        with pytest.raises(core.AppError):
            core.check_argv(bad)


@pytest.mark.parametrize("text,n", [("256M", 256 << 20), ("1G", 1 << 30), ("300MB", 300 * 10**6),
                                    ("64MiB", 64 << 20), (str(32 << 20), 32 << 20)])
def test_memory_sizes(text, n):
    assert core.parse_memory(text) == n


@pytest.mark.parametrize("text", ["0", "-1", "-256M", "1", "1K", "100T", "999G", "lots", "", "1.5M", True])
def test_bad_memory_is_refused(text):
    with pytest.raises(core.AppError) as e:
        core.parse_memory(text)
    assert "--memory" in e.value.detail


@pytest.mark.parametrize("text,n", [("16M", 16 << 20), ("1G", 1 << 30), ("1T", 1 << 40), ("500MB", 500 * 10**6)])
def test_disk_sizes(text, n):
    assert core.parse_disk(text) == n
    assert core.parse_limits(disk=text).disk_bytes == n


@pytest.mark.parametrize("text", ["0", "-1G", "1", "1K", "15M", "2T", "1P", "lots", "", "1.5G", True, None])
def test_bad_disk_sizes_are_refused(text):
    with pytest.raises(core.AppError) as e:
        core.parse_disk(text)
    assert "--disk" in e.value.detail and e.value.status == 400


def test_the_disk_defaults_to_one_gib():
    assert core.parse_limits().disk_bytes == 1 << 30


@pytest.mark.parametrize("text", ["0", "-0.5", "nan", "inf", "65", "1e9", "half", ""])
def test_bad_cpu_is_refused(text):
    with pytest.raises(core.AppError, match="--cpu"):
        core.parse_cpu(text)


@pytest.mark.parametrize("text", ["0", "-1", "1", "7", "100000", "1.5", "many"])
def test_bad_pids_are_refused(text):
    with pytest.raises(core.AppError, match="--pids"):
        core.parse_pids(text)


def test_limits_defaults_and_values():
    assert core.parse_limits() == core.AppLimits(256 << 20, 0.5, 128)
    assert core.parse_limits("512M", "1.5", "64") == core.AppLimits(512 << 20, 1.5, 64)


@pytest.mark.parametrize("proto,text,want", [
    ("tcp", "192.0.2.10:5432", core.Wanted("tcp", "192.0.2.10", 5432)),
    (None, "udp:db.example.org:53", core.Wanted("udp", "db.example.org", 53)),
    (None, "tcp:[2001:db8::1]:443", core.Wanted("tcp", "2001:db8::1", 443)),
    ("TCP", "Example.ORG.:80", core.Wanted("tcp", "example.org", 80)),
])
def test_destinations_parse(proto, text, want):
    assert core.parse_destination(proto, text) == want


@pytest.mark.parametrize("proto,text,slug", [
    ("tcp", "0.0.0.0/0:80", "grant-network"), ("tcp", "::/0", "grant-network"), (None, "tcp:10.0.0.0/8:22",
                                                                                   "grant-network"),
    ("icmp", "1.2.3.4:1", "invalid-grant"), ("tcp", "1.2.3.4", "invalid-grant"), ("tcp", "1.2.3.4:0", "invalid-grant"),
    ("tcp", "1.2.3.4:65536", "invalid-grant"), ("tcp", "2001:db8::1:443", "invalid-grant"),
    ("tcp", "a b:80", "invalid-grant"), ("tcp", "$(id):80", "invalid-grant"), ("tcp", ":80", "invalid-grant"),
    ("tcp", "999.1.1.1:80", "invalid-grant"), (None, "192.0.2.1:80", "invalid-grant"),
])
def test_malformed_and_network_destinations_are_refused(proto, text, slug):
    with pytest.raises(core.AppError) as e:
        core.parse_destination(proto, text)
    assert e.value.slug == slug, e.value.detail


def test_destination_checks_say_why():
    w = core.Wanted("tcp", "db.example.org", 5432)
    with pytest.raises(core.AppError, match="resolves to 2 addresses") as e:
        core.check_destination(w, [A("192.0.2.1"), A("192.0.2.2")], HUB)
    assert e.value.slug == "grant-ambiguous"
    with pytest.raises(core.AppError, match="does not resolve"):
        core.check_destination(w, [], HUB)
    for addr, why in [("0.0.0.0", "unspecified"), ("::", "unspecified"), ("169.254.169.254", "metadata"),
                      ("fe80::1", "link-local"), ("127.0.0.1", "loopback"), ("224.0.0.1", "multicast"),
                      ("::ffff:169.254.169.254", "metadata")]:
        with pytest.raises(core.AppError, match=why):
            core.check_destination(core.Wanted("tcp", addr, 80), [A(addr)], HUB)
    # the same address twice is one address
    ok = core.check_destination(w, [A("192.0.2.1"), A("192.0.2.1")], HUB)
    assert ok == core.Checked("tcp", A("192.0.2.1"), 5432, host=False) and ok.key() == "tcp:192.0.2.1:5432"
    hub = core.check_destination(core.Wanted("tcp", "10.9.0.1", 22), [A("10.9.0.1")], HUB)
    assert hub.host is True  # the hub's own machine: admin only (the service asks for it)
    v6 = core.check_destination(core.Wanted("udp", "2001:db8::5", 53), [A("2001:db8::5")], HUB)
    assert v6.key() == "udp:[2001:db8::5]:53" and not v6.host


@given(st.integers(min_value=1, max_value=36**9 - 1))
def test_instance_ids_fit_the_sandbox_and_never_repeat(n):
    i = core.instance_id(n)
    assert core.INSTANCE_ID_RE.match(i)
    assert int(i[1:], 36) == n


def test_instance_references():
    assert core.parse_instance("demo", "alice") == ("demo", "alice")
    assert core.parse_instance("demo--bob", "alice") == ("demo", "bob")
    assert core.parse_instance("bob/demo", "alice") == ("demo", "bob")
    for bad in ("", "demo--", "Demo", "x/../y", "demo--B@d"):
        with pytest.raises(core.AppError):
            core.parse_instance(bad, "alice")


def test_backoff_doubles_to_a_minute():
    assert [core.restart_delay(n) for n in (1, 2, 3, 4, 7, 8, 50)] == [1, 2, 4, 8, 60, 60, 60]


def test_only_the_owner_gets_through_and_scopes_narrow_it():
    def decide(user, scopes=None, method=b"GET", upgrade=False):
        return core.decide(owner="alice", space="apps", app="demo", user=user, method=method, upgrade=upgrade,
                           scopes=tuple(parse_scope(s) for s in scopes) if scopes is not None else None)

    assert decide("alice").allowed
    refused = decide("bob")
    assert not refused.allowed and refused.slug == "not-instance-owner" and "alice" in refused.reason
    assert decide("alice", ["app:apps/demo"]).allowed
    assert decide("alice", ["app:apps"]).allowed and decide("alice", ["space:apps"]).allowed
    assert decide("alice", ["app:apps/other"]).slug == "token-scope"
    assert decide("alice", ["publish:apps"]).slug == "token-scope"
    assert decide("alice", ["app:apps/demo:read"]).allowed and decide("alice", ["app:apps/demo:read"]).read_only
    assert not decide("alice", ["app:apps/demo"]).read_only
    assert decide("alice", ["app:apps/demo:read"], method=b"POST").slug == "read-only"
    assert decide("alice", ["app:apps/demo:read"], upgrade=True).slug == "read-only"


def test_uid_settings_are_checked():
    class S:
        apps_uid_base, apps_uid_count = 4_294_000_000, 1_000_000

    with pytest.raises(ValueError, match="largest uid"):
        core.check_settings(S)
    S.apps_uid_base, S.apps_uid_count = 60_000, 10_000
    with pytest.raises(ValueError, match="65534"):
        core.check_settings(S)


@pytest.mark.parametrize("code, oom, want", [
    (3, False, "exited 3"),
    (0, False, "exited 0"),
    (-9, False, "was killed by signal 9 (SIGKILL)"),
    (-15, False, "was killed by signal 15 (SIGTERM)"),
    (137, False, "exited 137 (killed by signal 9, SIGKILL)"),
    (None, False, "ended with no exit status (its processes were killed from outside the sandbox)"),
    (137, True, "ran out of memory (the memory limit killed it)"),
    (-64, False, "was killed by signal 64 (unnamed)"),
])
def test_an_exit_always_has_a_reason(code, oom, want):
    assert core.exit_reason(code, oom) == want
