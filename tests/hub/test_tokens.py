"""Scoped tokens over real HTTP against a running hub, on SQLite and PostgreSQL.

Every caveat gets a test that it allows what it should and refuses what it should not.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.hubproc import HubProcess


def mint(c: httpx.Client, **body) -> dict:
    r = c.post("/api/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def refused(r: httpx.Response, status: int, slug: str, caveat: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == f"urn:tether:problem:{slug}", body
    if caveat is not None:
        assert body.get("caveat") == caveat, body
    return body


def check(hub: HubProcess, token: str, action: str, **resource) -> dict:
    with hub.client(token) as c:
        r = c.post("/api/v1/authz/check", json={"action": action, **resource})
    assert r.status_code == 200, r.text
    return r.json()


def test_token_format_and_storage(hub):
    _, token = hub.make_user()
    assert token.startswith("tth_") and len(token) == 4 + 16 + 1 + 43
    with hub.client(token) as c:
        info = c.get("/api/v1/tokens/self").json()
    assert token.split("_")[1] == info["id"]
    assert "token" not in info  # the secret is shown once, at mint time
    if hub.backend == "sqlite":
        db = (hub.data_dir / "tether.db").read_bytes() + b"".join(
            p.read_bytes() for p in hub.data_dir.glob("tether.db-*")
        )
        assert token.encode() not in db and token.split("_", 2)[2].encode() not in db
    assert token not in hub.log_text()


def test_scopes_publish_prefix(hub):
    space = hub.make_space()
    _, full = hub.make_user(grants={space: "write"})
    with hub.client(full) as c:
        t = mint(c, scopes=[f"publish:{space}/android"], expires="1h")["token"]
    assert check(hub, t, "publish.write", space=space, path="android/123/boot.img")["allowed"]
    assert check(hub, t, "publish.write", space=space, path="android")["allowed"]
    for path in ["androidx/1", "ubuntu/1", None]:
        d = check(hub, t, "publish.write", space=space, path=path)
        assert not d["allowed"] and d["code"] == "token-scope"
    d = check(hub, t, "log.write", space=space)
    assert not d["allowed"] and d["code"] == "token-scope"
    other = hub.make_space()
    assert not check(hub, t, "publish.write", space=other, path="android/1")["allowed"]
    # A scoped token cannot manage anything.
    with hub.client(t) as c:
        refused(c.get("/api/v1/tokens"), 403, "token-scope")
        refused(c.post("/api/v1/spaces", json={"name": "nope"}), 403, "forbidden")


def test_scopes_never_exceed_grants(hub):
    space = hub.make_space()
    _, reader = hub.make_user(grants={space: "read"})
    with hub.client(reader) as c:
        # Minting a wide scope is allowed, but the token still acts only as far as the user's grant.
        t = mint(c, scopes=[f"publish:{space}"], expires="1h")["token"]
    d = check(hub, t, "publish.write", space=space, path="a")
    assert not d["allowed"] and d["code"] == "forbidden"
    assert check(hub, t, "publish.read", space=space, path="a")["allowed"]


def test_scope_access_suffix(hub):
    space = hub.make_space()
    _, full = hub.make_user(grants={space: "admin"})
    with hub.client(full) as c:
        ro = mint(c, scopes=[f"log:{space}:read"], expires="1h")["token"]
        sp_admin = mint(c, scopes=[f"space:{space}:admin"], expires="1h")["token"]
        sp_read = mint(c, scopes=[f"space:{space}:read"], expires="1h")["token"]
    assert check(hub, ro, "log.read", space=space)["allowed"]
    assert not check(hub, ro, "log.write", space=space)["allowed"]
    target, _ = hub.make_user()
    with hub.client(sp_read) as c:
        assert c.get(f"/api/v1/spaces/{space}").status_code == 200
        refused(c.put(f"/api/v1/spaces/{space}/grants/{target}", json={"level": "read"}), 403, "token-scope")
    with hub.client(sp_admin) as c:
        assert c.put(f"/api/v1/spaces/{space}/grants/{target}", json={"level": "read"}).status_code == 200


def test_invalid_caveats_are_400_and_mint_nothing(hub):
    name, full = hub.make_user()
    with hub.client(full) as c:
        before = len(c.get("/api/v1/tokens").json()["tokens"])
        cases = [
            ({"scopes": ["publish:../etc"]}, "scopes"),
            ({"scopes": ["teleport:x"]}, "scopes"),
            ({"scopes": ["publish:b/../x"]}, "scopes"),
            ({"expires": "soon"}, "expires"),
            ({"expires": "-1h"}, "expires"),
            ({"expires": "2001-01-01T00:00:00Z"}, "expires"),
            ({"not_before": "whenever"}, "not_before"),
            ({"sources": ["10.0.0.1/8"]}, "source"),
            ({"sources": ["not-an-ip"]}, "source"),
            ({"expires": "1h", "not_before": "2h"}, None),
            ({"label": "bad\x07label"}, "label"),
        ]
        for body, caveat in cases:
            r = c.post("/api/v1/tokens", json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["type"] == "urn:tether:problem:invalid-caveat", r.text
            if caveat:
                assert r.json()["caveat"] == caveat, (body, r.text)
        for body in [{"label": "nul\x00"}, {"max_uses": 0}, {"max_files": -1}, {"max_bytes": "lots"}, {"scopes": "publish:x"}]:
            assert c.post("/api/v1/tokens", json=body).status_code == 422, body
        assert len(c.get("/api/v1/tokens").json()["tokens"]) == before


def test_expires_and_not_before(hub):
    _, full = hub.make_user()
    now = datetime.now(timezone.utc)
    with hub.client(full) as c:
        short = mint(c, expires="2s")
        later = mint(c, not_before=(now + timedelta(hours=1)).isoformat(), expires="2h")
        started = mint(c, not_before=(now - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"), expires="1h")
    exp = datetime.fromisoformat(short["expires_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=0) < exp - now < timedelta(seconds=10)
    with hub.client(started["token"]) as c:
        assert c.get("/api/v1/whoami").status_code == 200
    with hub.client(later["token"]) as c:
        body = refused(c.get("/api/v1/whoami"), 401, "token-not-yet-valid", "not_before")
        assert later["token"] not in str(body)
    with hub.client(short["token"]) as c:
        assert c.get("/api/v1/whoami").status_code == 200
        time.sleep(max(0.0, (exp - datetime.now(timezone.utc)).total_seconds()) + 0.2)
        body = refused(c.get("/api/v1/whoami"), 401, "token-expired", "expires")
        assert short["token"] not in str(body)


def test_default_and_maximum_lifetime(start_hub):
    h = start_hub(env={"TETHER_TOKEN_MAX_LIFETIME": "2d", "TETHER_TOKEN_DEFAULT_LIFETIME": "1h"})
    now = datetime.now(timezone.utc)
    with h.admin() as c:
        t = mint(c)
        exp = datetime.fromisoformat(t["expires_at"].replace("Z", "+00:00"))
        assert timedelta(minutes=59) < exp - now < timedelta(minutes=61)
        body = refused(c.post("/api/v1/tokens", json={"expires": "3d"}), 400, "invalid-caveat", "expires")
        assert "maximum" in body["detail"]
        assert c.post("/api/v1/tokens", json={"expires": "47h"}).status_code == 201
        # Attenuating the non-expiring admin token still gets an expiry.
        child = mint(c, inherit=True)
        assert child["expires_at"] is not None


def test_source_cidrs_ipv4(hub):
    _, full = hub.make_user()
    with hub.client(full) as c:
        here = mint(c, sources=["127.0.0.0/8"], expires="1h")["token"]
        elsewhere = mint(c, sources=["10.0.0.0/8", "192.168.0.0/16"], expires="1h")["token"]
        v6only = mint(c, sources=["::1/128"], expires="1h")["token"]
    with hub.client(here) as c:
        assert c.get("/api/v1/whoami").status_code == 200
    for t in (elsewhere, v6only):
        with hub.client(t) as c:
            body = refused(c.get("/api/v1/whoami"), 403, "token-source", "source")
            assert "127.0.0.1" in body["detail"] and t not in str(body)


def test_source_cidrs_ipv6(start_hub):
    h = start_hub(host="::1")
    with h.admin() as c:
        v6 = mint(c, sources=["::1/128"], expires="1h")["token"]
        v4 = mint(c, sources=["127.0.0.1/32"], expires="1h")["token"]
        net = mint(c, sources=["fd00::/8", "::/0"], expires="1h")["token"]
    with h.client(v6) as c:
        assert c.get("/api/v1/whoami").status_code == 200
    with h.client(net) as c:
        assert c.get("/api/v1/whoami").status_code == 200
    with h.client(v4) as c:
        refused(c.get("/api/v1/whoami"), 403, "token-source", "source")


def test_max_uses_counts_every_request(hub):
    _, full = hub.make_user()
    with hub.client(full) as c:
        t = mint(c, max_uses=3, expires="1h")["token"]
    with hub.client(t) as c:
        assert [c.get("/api/v1/whoami").status_code for _ in range(3)] == [200, 200, 200]
        refused(c.get("/api/v1/whoami"), 403, "token-uses-exhausted", "max_uses")
        refused(c.get("/api/v1/tokens/self"), 403, "token-uses-exhausted", "max_uses")


def test_max_uses_is_exact_under_concurrency(hub):
    _, full = hub.make_user()
    k, n = 7, 40
    with hub.client(full) as c:
        t = mint(c, max_uses=k, expires="1h")["token"]

    def one(_):
        with hub.client(t) as c:
            return c.get("/api/v1/whoami").status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(one, range(n)))
    assert statuses.count(200) == k, statuses
    assert statuses.count(403) == n - k, statuses
    with hub.client(full) as c:
        infos = c.get("/api/v1/tokens").json()["tokens"]
    assert [i["uses"] for i in infos if i["id"] == t.split("_")[1]] == [k]


def test_child_uses_count_against_parent(hub):
    _, full = hub.make_user()
    with hub.client(full) as c:
        parent = mint(c, max_uses=4, expires="1h")["token"]
    with hub.client(parent) as c:
        # minting is a use of the parent (1); the child asks for what is left (3)
        child = mint(c, inherit=True)["token"]
        assert c.get("/api/v1/tokens/self").json()["uses"] == 2
    with hub.client(child) as c:
        assert c.get("/api/v1/whoami").status_code == 200  # parent at 3
        assert c.get("/api/v1/whoami").status_code == 200  # parent at 4
        body = refused(c.get("/api/v1/whoami"), 403, "token-uses-exhausted", "max_uses")
        assert "parent" in body["detail"]


def test_max_files_and_bytes_budgets(hub):
    space = hub.make_space()
    _, full = hub.make_user(grants={space: "write"})
    with hub.client(full) as c:
        t = mint(c, scopes=[f"publish:{space}"], max_files=10, max_bytes=1000, expires="1h")["token"]
    assert check(hub, t, "publish.write", space=space, path="x", files=10, bytes=1000)["allowed"]
    d = check(hub, t, "publish.write", space=space, path="x", files=11)
    assert not d["allowed"] and d["caveat"] == "max_files" and d["code"] == "token-files-exhausted"
    d = check(hub, t, "publish.write", space=space, path="x", bytes=1001)
    assert not d["allowed"] and d["caveat"] == "max_bytes" and d["code"] == "token-bytes-exhausted"


@pytest.mark.parametrize(
    "parent, child, caveat",
    [
        ({"scopes": ["publish:SPACE/android"]}, {"scopes": ["publish:SPACE"]}, "scopes"),
        ({"scopes": ["log:SPACE:read"]}, {"scopes": ["log:SPACE"]}, "scopes"),
        ({"scopes": ["publish:SPACE"]}, {"scopes": ["log:SPACE"]}, "scopes"),
        ({"expires": "1h"}, {"expires": "2h"}, "expires"),
        ({"not_before": "PT1S", "expires": "1h"}, {"not_before": "2001-01-01T00:00:00Z"}, "not_before"),
        ({"sources": ["127.0.0.0/8"]}, {"sources": ["0.0.0.0/0"]}, "source"),
        ({"sources": ["127.0.0.0/8"]}, {"sources": ["::1/128"]}, "source"),
        ({"max_uses": 5}, {"max_uses": 50}, "max_uses"),
        ({"max_files": 5}, {"max_files": 6}, "max_files"),
        ({"max_bytes": 5000}, {"max_bytes": 5001}, "max_bytes"),
    ],
)
def test_attenuation_refuses_anything_wider(hub, parent, child, caveat):
    space = hub.make_space()
    sub = lambda d: {k: ([s.replace("SPACE", space) for s in v] if k == "scopes" else v) for k, v in d.items()}  # noqa: E731
    _, full = hub.make_user(grants={space: "admin"})
    with hub.client(full) as c:
        p = mint(c, **sub(parent))
    if "not_before" in parent:
        time.sleep(1.1)
    with hub.client(p["token"]) as c:
        r = c.post("/api/v1/tokens", json={"inherit": True, **sub(child)})
        body = refused(r, 403, "attenuation-refused", caveat)
        assert caveat.split("_")[-1] in body["detail"] or caveat in body["detail"]
        assert p["token"] not in r.text
    with hub.client(full) as c:
        tokens = c.get("/api/v1/tokens").json()["tokens"]
    assert not [t for t in tokens if t["parent"] == p["id"]], "a refused attenuation must mint nothing"


def test_attenuation_narrows_and_inherits(hub):
    space = hub.make_space()
    _, full = hub.make_user(grants={space: "write"})
    with hub.client(full) as c:
        p = mint(c, scopes=[f"publish:{space}"], sources=["127.0.0.0/8"], max_files=100, expires="2h", label="sched")
    with hub.client(p["token"]) as c:
        child = mint(c, inherit=True, scopes=[f"publish:{space}/android"], max_files=10, expires="30m")
    assert child["parent"] == p["id"]
    assert child["scopes"] == [f"publish:{space}/android"]
    assert child["sources"] == ["127.0.0.0/8"]  # inherited
    assert child["max_files"] == 10 and child["label"] == "sched"
    assert child["expires_at"] < p["expires_at"]
    assert check(hub, child["token"], "publish.write", space=space, path="android/1")["allowed"]
    assert not check(hub, child["token"], "publish.write", space=space, path="ubuntu/1")["allowed"]


def test_revoke_reaches_descendants_at_once(hub):
    _, full = hub.make_user()
    with hub.client(full) as c:
        root = mint(c, expires="1h")
    with hub.client(root["token"]) as c:
        mid = mint(c, inherit=True)
    with hub.client(mid["token"]) as c:
        leaf = mint(c, inherit=True)
    with hub.client(full) as c:
        sibling = mint(c, expires="1h")
        r = c.delete(f"/api/v1/tokens/{root['id']}")
        assert r.status_code == 200
        assert sorted(r.json()["revoked"]) == sorted([root["id"], mid["id"], leaf["id"]])
    for t in (root, mid, leaf):
        with hub.client(t["token"]) as c:
            body = refused(c.get("/api/v1/whoami"), 401, "token-revoked", "revoked")
            assert t["token"] not in str(body)
    with hub.client(sibling["token"]) as c:
        assert c.get("/api/v1/whoami").status_code == 200


def test_scoped_token_may_revoke_itself_but_not_its_parent(hub):
    space = hub.make_space()
    _, full = hub.make_user(grants={space: "write"})
    with hub.client(full) as c:
        parent = mint(c, scopes=[f"publish:{space}"], expires="1h")
    with hub.client(parent["token"]) as c:
        child = mint(c, inherit=True)
    with hub.client(child["token"]) as c:
        refused(c.delete(f"/api/v1/tokens/{parent['id']}"), 403, "token-scope")
        assert c.delete(f"/api/v1/tokens/{child['id']}").json()["revoked"] == [child["id"]]
    with hub.client(parent["token"]) as c:
        assert c.get("/api/v1/whoami").status_code == 200


def test_tokens_of_others_are_private(hub):
    _, alice = hub.make_user()
    bob_name, bob = hub.make_user()
    with hub.client(bob) as c:
        bob_id = c.get("/api/v1/tokens/self").json()["id"]
    with hub.client(alice) as c:
        refused(c.get(f"/api/v1/tokens/{bob_id}"), 403, "forbidden")
        refused(c.delete(f"/api/v1/tokens/{bob_id}"), 403, "forbidden")
        refused(c.get("/api/v1/tokens", params={"user": bob_name}), 403, "forbidden")
        refused(c.get("/api/v1/tokens", params={"all": "true"}), 403, "forbidden")
        refused(c.post("/api/v1/tokens", json={"for_user": bob_name}), 403, "forbidden")
    with hub.admin() as c:
        assert c.get(f"/api/v1/tokens/{bob_id}").status_code == 200
        assert any(t["id"] == bob_id for t in c.get("/api/v1/tokens", params={"all": "true"}).json()["tokens"])
        scoped = c.post("/api/v1/tokens", json={"expires": "1h", "scopes": ["publish:somewhere"]}).json()["token"]
    with hub.client(scoped) as c:  # an admin's scoped token can't list everyone's tokens
        refused(c.get("/api/v1/tokens", params={"all": "true"}), 403, "token-scope")


def test_disabled_user_tokens_stop_working(hub):
    name, t = hub.make_user()
    with hub.admin() as c:
        assert c.post(f"/api/v1/users/{name}/disable").json()["disabled"] is True
    with hub.client(t) as c:
        refused(c.get("/api/v1/whoami"), 403, "user-disabled")
    with hub.admin() as c:
        refused(c.post("/api/v1/tokens", json={"for_user": name}), 400, "bad-request")
        c.post(f"/api/v1/users/{name}/enable").raise_for_status()
    with hub.client(t) as c:
        assert c.get("/api/v1/whoami").status_code == 200


def test_scheduler_flow_mint_for_service_user(hub):
    space = hub.make_space()
    sched, sched_token = hub.make_user(grants={space: "write"}, kind="service")
    with hub.client(sched_token) as c:
        job = mint(c, scopes=[f"publish:{space}/android"], expires="1h", sources=["127.0.0.0/8"],
                   max_files=500, label="job-123")
    assert job["user"] == sched and job["label"] == "job-123" and job["max_files"] == 500
    with hub.client(job["token"]) as c:
        assert c.get("/api/v1/whoami").json()["token"]["label"] == "job-123"


def test_forwarded_for_is_trusted_only_from_configured_proxies(start_hub):
    trusting = start_hub(env={"TETHER_FORWARDED_ALLOW_IPS": "127.0.0.1"})
    plain = start_hub()
    for h, expected in ((trusting, 200), (plain, 403)):
        with h.admin() as c:
            t = mint(c, sources=["10.0.0.0/8"], expires="1h")["token"]
        with h.client(t) as c:
            r = c.get("/api/v1/whoami", headers={"X-Forwarded-For": "10.1.2.3"})
        assert r.status_code == expected, r.text
