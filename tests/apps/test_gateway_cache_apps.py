"""The apps gateway reuses a running instance's row and an allowed credential's check for at
most CHECK_SECONDS (tether.auth.recent), so a busy instance costs no database read per
request. The bounds a user relies on, with two hub replicas on one PostgreSQL: what is taken
away (a revoked token, a disabled user, an unshare, a stopped or removed instance) is refused
at once by the replica it was taken away through, and within the bound by the other one, which
holds the instance and a moment ago let the same request through from its cache."""

from __future__ import annotations

import time

import pytest

from tether.auth.recent import CHECK_SECONDS
from tests.apps.hubs import gateway_get, replicas

SLACK = 0.75  # a request's own time on a busy machine


@pytest.fixture
def pair(pg_server, tmp_path):
    """Replicas a and b; alice's instance of demo runs on a (b passes its requests on to a)."""
    for a, b in replicas(pg_server, tmp_path, shared_root=True,
                         users={"alice": "read", "olga": "admin", "bob": "", "carol": ""}):
        r = a.cli("olga", "register", "demo", "--space", "apps", "--dir", str(a.demo_dir()), "--cmd", "python3",
                  "app.py")
        assert r.returncode == 0, r.stderr
        assert a.cli("alice", "spawn", "demo").returncode == 0
        yield a, b


def status(h, token: str) -> int:
    return gateway_get(h.gw_port, f"demo--alice.localhost:{h.gw_port}", "/api/whoami",
                       {"Authorization": f"Bearer {token}"})[0]


def refused_within(h, token: str, statuses: tuple[int, ...]) -> float:
    """Seconds until ``h``'s gateway answers one of ``statuses`` for ``token`` (asking every 20 ms)."""
    started = time.monotonic()
    while time.monotonic() - started < CHECK_SECONDS + 5:
        if status(h, token) in statuses:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"still let through {CHECK_SECONDS + 5:.1f} s after access was taken away")


def warm(a, b, token: str) -> None:
    """Both replicas let ``token`` through, several times: a's answers now come from its cache."""
    for _ in range(3):
        assert status(a, token) == 200 and status(b, token) == 200


def mint(h, user: str) -> dict:
    with h.api("admin") as c:
        return c.post("/api/v1/tokens", json={"for_user": user, "expires": "1h"}).json()


def test_a_revoked_token_is_refused_at_once_here_and_within_the_bound_there(pair):
    a, b = pair
    here = mint(a, "alice")
    warm(a, b, here["token"])
    with a.api("alice") as c:  # through a, which holds the instance
        c.delete(f"/api/v1/tokens/{here['id']}").raise_for_status()
    assert status(a, here["token"]) == 401 and status(b, here["token"]) == 401
    there = mint(a, "alice")
    warm(a, b, there["token"])
    with b.api("alice") as c:  # through b: a held the allowed answer a moment ago
        c.delete(f"/api/v1/tokens/{there['id']}").raise_for_status()
    assert status(b, there["token"]) == 401
    assert refused_within(a, there["token"], (401,)) <= CHECK_SECONDS + SLACK
    assert status(a, a.tokens["alice"]) == 200  # others' answers are read afresh, not lost
    # a token that expires: refused from its expiry on by both (its caveats are checked on every request)
    with a.api("admin") as c:
        short = c.post("/api/v1/tokens", json={"for_user": "alice", "expires": "3s"}).json()["token"]
    expires = time.monotonic() + 3
    warm(a, b, short)
    refused_within(a, short, (401,))
    assert time.monotonic() - expires <= SLACK and status(b, short) == 401


def test_a_disabled_user_and_an_unshare_are_refused_within_the_bound(pair):
    a, b = pair
    for user in ("bob", "carol"):
        assert a.cli("alice", "share", "demo", "--with", user).returncode == 0
        warm(a, b, b.tokens[user])
    with b.api("admin") as c:
        c.post("/api/v1/users/carol/disable").raise_for_status()
    assert status(b, b.tokens["carol"]) in (401, 403)
    assert refused_within(a, a.tokens["carol"], (401, 403)) <= CHECK_SECONDS + SLACK
    assert b.cli("alice", "unshare", "demo", "--with", "bob").returncode == 0
    assert status(b, b.tokens["bob"]) == 403
    assert refused_within(a, a.tokens["bob"], (403,)) <= CHECK_SECONDS + SLACK
    warm(a, b, a.tokens["alice"])
    assert a.cli("alice", "unshare", "demo", "--with", "bob").returncode == 1  # nothing left: nothing changes
    # a share narrowed to read-only, through a: POST is refused at once there
    assert a.cli("alice", "share", "demo", "--with", "bob").returncode == 0
    post = lambda h: gateway_get(h.gw_port, f"demo--alice.localhost:{h.gw_port}", "/", {  # noqa: E731
        "Authorization": f"Bearer {h.tokens['bob']}"}, method="POST")[0]
    assert post(a) != 403
    assert a.cli("alice", "share", "demo", "--with", "bob", "--read-only").returncode == 0
    assert post(a) == 403


def test_a_stopped_or_removed_instance_is_refused_at_once_here_and_within_the_bound_there(pair):
    a, b = pair
    token = a.tokens["alice"]
    warm(a, b, token)
    assert b.cli("alice", "stop", "demo").returncode == 0  # through b; a holds it
    assert status(b, token) == 503
    assert refused_within(a, token, (503,)) <= CHECK_SECONDS + SLACK
    assert a.cli("alice", "start", "demo").returncode == 0  # now on a again
    warm(a, b, token)
    assert a.cli("alice", "stop", "demo").returncode == 0  # through a, which holds it
    assert status(a, token) == 503 and status(b, token) == 503
    assert a.cli("alice", "start", "demo").returncode == 0
    warm(a, b, token)
    r = b.cli("alice", "rm", "demo")  # through b: a removes it within a sweep
    assert r.returncode == 0, r.stderr
    assert status(b, token) == 404
    assert refused_within(a, token, (404,)) <= CHECK_SECONDS + SLACK
