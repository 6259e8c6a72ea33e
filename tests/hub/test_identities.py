"""Users, keys, spaces and grants over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess

import pytest

from tests.hubproc import unique

LEVELS = ["none", "read", "write", "admin"]
# action -> the lowest grant level that allows it
NEEDS = {"publish.read": "read", "log.read": "read", "signal.receive": "read",
         "publish.write": "write", "log.write": "write", "signal.send": "write",
         "publish.admin": "admin", "log.admin": "admin", "signal.admin": "admin"}


def allowed(hub, token, action, space) -> bool:
    with hub.client(token) as c:
        r = c.post("/api/v1/authz/check", json={"action": action, "space": space, "path": "x/y"})
    assert r.status_code == 200, r.text
    return r.json()["allowed"]


@pytest.mark.parametrize("level", LEVELS)
def test_every_grant_level_allows_exactly_what_it_should(hub, level):
    space = hub.make_space()
    name, token = hub.make_user(grants={space: level} if level != "none" else {})
    rank = LEVELS.index(level)
    for action, need in NEEDS.items():
        assert allowed(hub, token, action, space) == (rank >= LEVELS.index(need)), (level, action)
    target, _ = hub.make_user()
    with hub.client(token) as c:
        show = c.get(f"/api/v1/spaces/{space}")
        assert show.status_code == (200 if rank >= 1 else 403)
        if rank >= 1:
            assert show.json()["access"] == level
            assert ("grants" in show.json()) == (level == "admin")
        listed = [s["name"] for s in c.get("/api/v1/spaces").json()["spaces"]]
        assert (space in listed) == (rank >= 1)
        grant = c.put(f"/api/v1/spaces/{space}/grants/{target}", json={"level": "read"})
        assert grant.status_code == (200 if level == "admin" else 403), grant.text
        # Only hub admins create spaces and users.
        assert c.post("/api/v1/spaces", json={"name": unique("x")}).status_code == 403
        assert c.post("/api/v1/users", json={"name": unique("x")}).status_code == 403
    # A grant on one space says nothing about another.
    other = hub.make_space()
    assert not allowed(hub, token, "publish.read", other)


def test_grant_none_and_revoke_remove_access(hub):
    space = hub.make_space()
    name, token = hub.make_user(grants={space: "write"})
    assert allowed(hub, token, "publish.write", space)
    with hub.admin() as c:
        assert c.put(f"/api/v1/spaces/{space}/grants/{name}", json={"level": "none"}).json()["level"] == "none"
    assert not allowed(hub, token, "publish.read", space)
    with hub.admin() as c:
        c.put(f"/api/v1/spaces/{space}/grants/{name}", json={"level": "read"}).raise_for_status()
        assert allowed(hub, token, "publish.read", space)
        assert c.delete(f"/api/v1/spaces/{space}/grants/{name}").status_code == 204
        grants = c.get(f"/api/v1/spaces/{space}").json()["grants"]
    assert name not in [g["user"] for g in grants]
    assert not allowed(hub, token, "publish.read", space)


def test_bad_grant_input_is_refused_and_changes_nothing(hub):
    space = hub.make_space()
    name, _ = hub.make_user(grants={space: "read"})
    with hub.admin() as c:
        r = c.put(f"/api/v1/spaces/{space}/grants/{name}", json={"level": "owner"})
        assert r.status_code == 400 and "none, read, write, admin" in r.json()["detail"]
        assert c.put(f"/api/v1/spaces/{space}/grants/nobody-{space}", json={"level": "read"}).status_code == 404
        assert c.put(f"/api/v1/spaces/{space}/grants/{name}", json={}).status_code == 422
        grants = {g["user"]: g["level"] for g in c.get(f"/api/v1/spaces/{space}").json()["grants"]}
    assert grants == {name: "read"}


def test_admins_pass_every_grant_check(hub):
    space = hub.make_space()
    _, admin_token = hub.make_user(admin=True)
    for action in NEEDS:
        assert allowed(hub, admin_token, action, space)


def test_users_lifecycle(hub):
    name = unique("svc")
    with hub.admin() as c:
        r = c.post("/api/v1/users", json={"name": name, "kind": "service"})
        assert r.status_code == 201
        created = r.json()
        assert created == {"name": name, "kind": "service", "admin": False, "disabled": False,
                           "created_at": created["created_at"]}
        assert "token" not in r.text.lower()  # a new user gets no secret
        assert name in [u["name"] for u in c.get("/api/v1/users").json()["users"]]
        assert c.get(f"/api/v1/users/{name}").json()["keys"] == []
        # an admin cannot lock themself out
        assert c.post("/api/v1/users/admin/disable").status_code == 400


def test_users_see_themselves_but_not_others(hub):
    alice, alice_token = hub.make_user()
    bob, _ = hub.make_user()
    with hub.client(alice_token) as c:
        assert c.get(f"/api/v1/users/{alice}").json()["name"] == alice
        assert c.get(f"/api/v1/users/{bob}").status_code == 403
        assert c.get("/api/v1/users").status_code == 403
        assert c.post(f"/api/v1/users/{bob}/disable").status_code == 403


@pytest.fixture(scope="module")
def ssh_keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for kind, extra in [("ed25519", []), ("ecdsa", ["-b", "256"]), ("rsa", ["-b", "3072"]), ("weak", ["-t", "rsa", "-b", "1024"])]:
        path = d / kind
        argv = ["ssh-keygen", "-q", "-N", "", "-C", f"{kind}@test", "-f", str(path)]
        argv += extra if kind == "weak" else ["-t", kind, *extra]
        subprocess.run(argv, check=True)
        fp = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], check=True, capture_output=True, text=True).stdout.split()[1]
        out[kind] = ((d / f"{kind}.pub").read_text(), fp, path.read_text())
    return out


def test_ssh_keys_add_list_remove(hub, ssh_keys):
    name, token = hub.make_user()
    with hub.client(token) as c:
        for kind in ("ed25519", "ecdsa", "rsa"):
            pub, fp, _ = ssh_keys[kind]
            r = c.post(f"/api/v1/users/{name}/keys", json={"public_key": pub})
            assert r.status_code == 201, r.text
            assert r.json()["fingerprint"] == fp and r.json()["kind"] == "ssh"
        listed = c.get(f"/api/v1/users/{name}/keys").json()["keys"]
        fps = [k["fingerprint"] for k in listed]
        assert fps == [ssh_keys[k][1] for k in ("ed25519", "ecdsa", "rsa")]
        assert c.delete(f"/api/v1/users/{name}/keys/{fps[0]}").status_code == 204
        assert c.delete(f"/api/v1/users/{name}/keys/{fps[0]}").status_code == 404
        assert len(c.get(f"/api/v1/users/{name}/keys").json()["keys"]) == 2
        # an id past the database's integers is no key's id: 404, not a database error (found by the fuzzer)
        for ref in ("2200000000", "9" * 40):
            assert c.delete(f"/api/v1/users/{name}/keys/{ref}").status_code == 404
        assert len(c.get(f"/api/v1/users/{name}/keys").json()["keys"]) == 2


def test_a_key_maps_to_one_user(hub, ssh_keys):
    alice, _ = hub.make_user()
    bob, _ = hub.make_user()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    with hub.admin() as c:
        assert c.post(f"/api/v1/users/{alice}/keys", json={"public_key": pub}).status_code == 201
        r = c.post(f"/api/v1/users/{bob}/keys", json={"public_key": pub})
        assert r.status_code == 409
        assert c.get(f"/api/v1/users/{bob}/keys").json()["keys"] == []
        # the same key may also serve as a signing key: a different kind
        r = c.post(f"/api/v1/users/{bob}/keys", json={"public_key": pub, "kind": "signing"})
        assert r.status_code == 201 and r.json()["algorithm"] == "ed25519"


def test_bad_keys_are_refused_and_nothing_is_stored(hub, ssh_keys):
    name, token = hub.make_user()
    _, _, private = ssh_keys["ed25519"]
    weak_pub = ssh_keys["weak"][0]
    bad = [private, weak_pub, "ssh-ed25519 AAAAnotbase64!!", 'command="/bin/sh" ' + ssh_keys["rsa"][0],
           "", "ssh-dss AAAAB3NzaC1kc3MAAACBAP", ssh_keys["rsa"][0] + ssh_keys["ecdsa"][0]]
    with hub.client(token) as c:
        for text in bad:
            r = c.post(f"/api/v1/users/{name}/keys", json={"public_key": text})
            assert r.status_code == 400, (text[:40], r.text)
            assert r.json()["type"] == "urn:tether:problem:invalid-key"
        assert "PRIVATE" in c.post(f"/api/v1/users/{name}/keys", json={"public_key": private}).json()["detail"]
        assert c.get(f"/api/v1/users/{name}/keys").json()["keys"] == []
    other, _ = hub.make_user()
    with hub.client(token) as c:
        assert c.post(f"/api/v1/users/{other}/keys", json={"public_key": ssh_keys["rsa"][0]}).status_code == 403


def test_spaces_create_validate_conflict(hub):
    with hub.admin() as c:
        name = unique("sp")
        assert c.post("/api/v1/spaces", json={"name": name, "description": "Android builds"}).status_code == 201
        assert c.post("/api/v1/spaces", json={"name": name}).status_code == 409
        for bad in ["Caps", "-lead", "a/b", "a" * 65, "sp ace", ""]:
            r = c.post("/api/v1/spaces", json={"name": bad})
            assert r.status_code in (400, 422), bad
        assert c.post("/api/v1/spaces", json={"name": unique("sp"), "description": "x\x1b[31m"}).status_code == 400
        info = c.get(f"/api/v1/spaces/{name}").json()
    assert info["description"] == "Android builds" and info["access"] == "admin"
