"""The issue's "Done when", in a real browser (Debian's chromium, headless, playwright):
register the demo app that ships with tether, spawn it for two users, open each user's
instance through the gateway, see that neither reaches the other or the outside, grant
one of them a destination (a server this test starts in a network namespace it made),
see it work, revoke it, see it stop."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.apps.hubs import PREFIX, SERVER, AppsHub, clean, outside  # noqa: F401 - outside is a fixture
from tests.browser import ARGS, CHROMIUM, require_chromium


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    require_chromium()
    w = AppsHub(tmp_path_factory.mktemp("appweb")).start().setup({"alice": "read", "bob": "read", "olga": "admin"})
    try:
        r = w.cli("olga", "register", "demo", "--space", "apps", "--dir", str(w.demo_dir()), "--cmd", "python3",
                  "app.py")
        assert r.returncode == 0, r.stderr
        for user in ("alice", "bob"):
            r = w.cli(user, "spawn", "demo")
            assert r.returncode == 0, r.stderr
        yield w
    finally:
        w.stop()
        clean(w.sandbox_root)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(w, browser, user):
    r = w.cli(user, "open", "demo", "--json")
    assert r.returncode == 0, r.stderr
    link = json.loads(r.stdout)
    context = browser.new_context()
    page = context.new_page()
    page.goto(link["signin"])
    assert page.url == link["url"] == f"http://demo--{user}.localhost:{w.gw_port}/"
    return context, page


def _probe(page, host: str, port: int) -> dict:
    page.fill("#host", host)
    page.fill("#port", str(port))
    page.evaluate("document.getElementById('result').textContent = ''")
    page.click("button")
    page.wait_for_function("document.getElementById('result').textContent !== ''", timeout=15_000)
    return json.loads(page.text_content("#result"))


def _eth0(sandbox: str) -> str:
    out = subprocess.run(["ip", "-n", f"{PREFIX}-{sandbox}", "-j", "-4", "addr", "show", "eth0"], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)[0]["addr_info"][0]["local"]


def test_two_users_each_their_own_instance_isolated_then_granted_then_revoked(w, browser, outside):
    alice_ctx, alice = _open(w, browser, "alice")
    bob_ctx, bob = _open(w, browser, "bob")
    try:
        assert alice.text_content("#user") == "alice" and alice.text_content("#instance") == "demo--alice"
        assert bob.text_content("#user") == "bob" and bob.text_content("#instance") == "demo--bob"
        # alice's session does not open bob's instance
        response = alice.goto(f"http://demo--bob.localhost:{w.gw_port}/")
        assert response.status == 401  # her cookie belongs to her instance's origin only
        alice.goto(f"http://demo--alice.localhost:{w.gw_port}/")

        # neither reaches the other, the host or the outside
        bob_id = json.loads(w.cli("bob", "status", "demo", "--json").stdout)["id"]
        listener = subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-{bob_id}", sys.executable, "-c", SERVER,
                                     _eth0(bob_id), "7171", "bob's secret"], stdout=subprocess.PIPE, text=True)
        try:
            assert listener.stdout.readline().strip() == "ready"
            assert not _probe(alice, _eth0(bob_id), 7171)["ok"]
        finally:
            listener.kill()
            listener.wait()
        for page in (alice, bob):
            assert not _probe(page, outside["ip"], outside["port"])["ok"]
            assert not _probe(page, "127.0.0.1", w.gw_port)["ok"]  # loopback is the sandbox's own
            assert not _probe(page, "169.254.169.254", 80)["ok"]
        refused = json.loads(w.cli("alice", "status", "demo", "--json").stdout)["refused"]
        assert sum(refused.values()) >= 3, refused

        # grant alice the outside server: it works for her, not for bob
        r = w.cli("olga", "grant", "demo--alice", "tcp", f"{outside['ip']}:{outside['port']}", "--expires", "1h",
                  "--reason", "the course server")
        assert r.returncode == 0, r.stderr
        got = _probe(alice, outside["ip"], outside["port"])
        assert got["ok"] and got["said"] == "hello from outside", got
        assert not _probe(bob, outside["ip"], outside["port"])["ok"]
        grants = json.loads(w.cli("alice", "grants", "demo", "--json").stdout)
        assert [g["destination"] for g in grants] == [f"tcp:{outside['ip']}:{outside['port']}"]
        assert grants[0]["reason"] == "the course server" and grants[0]["expires"]

        # revoke: it stops at once
        r = w.cli("olga", "revoke", "demo--alice", "tcp", f"{outside['ip']}:{outside['port']}")
        assert r.returncode == 0 and "revoked 1" in r.stdout, r.stderr
        assert not _probe(alice, outside["ip"], outside["port"])["ok"]
        assert json.loads(w.cli("alice", "grants", "demo", "--json").stdout) == []
    finally:
        alice_ctx.close()
        bob_ctx.close()
    with w.api("admin") as c:
        records = c.get("/api/v1/audit", params={"action": "app.grant"}).json()
        records = records.get("records", records)
        assert any(r["user"] == "olga" and "tcp:" in r["resource"] for r in records), records
        revokes = c.get("/api/v1/audit", params={"action": "app.revoke"}).json()
        assert revokes.get("records", revokes)


def test_grants_to_networks_the_hub_and_odd_addresses_are_refused(w):
    """(A name resolving to many addresses: tests/apps/test_service_core.py, no DNS here.)"""
    with w.api("admin") as c:
        c.put("/api/v1/spaces/apps/grants/alice", json={"level": "write"}).raise_for_status()
    for dest, needle in [("0.0.0.0/0:80", "never a range"), ("::/0", "never a range"), ("[::]:80", "unspecified"),
                         ("169.254.169.254:80", "metadata"), ("[fe80::1]:80", "link-local"),
                         ("localhost:80", "loopback"), ("127.0.0.1:22", "loopback"), ("10.0.0.1", "HOST:PORT"),
                         ("no_such.invalid:80", "neither an IP address nor a host name")]:
        r = w.cli("alice", "grant", "demo", "tcp", dest)
        assert r.returncode == 2 and needle in r.stderr, (dest, r.stderr)
    assert json.loads(w.cli("alice", "grants", "demo", "--json").stdout) == []
    host_ip = subprocess.run(["ip", "-j", "-4", "addr", "show", "scope", "global"], capture_output=True, text=True)
    addrs = [a["local"] for link in json.loads(host_ip.stdout) for a in link.get("addr_info", [])]
    if addrs:  # a destination on the hub's own machine: admin on the app's space only
        r = w.cli("alice", "grant", "demo", "tcp", f"{addrs[0]}:22")
        assert r.returncode == 4 and "app.admin" in r.stderr, r.stderr
        assert json.loads(w.cli("alice", "grants", "demo", "--json").stdout) == []
    r = w.cli("bob", "grant", "demo", "tcp", "192.0.2.1:80")  # read on the space: no grants of one's own
    assert r.returncode == 4 and "app.write needs write" in r.stderr, r.stderr
