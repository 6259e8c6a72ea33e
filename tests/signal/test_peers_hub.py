"""`tether signal peers --from-hub SPACE` against a real hub process: users, grants
and signing keys made through the API become `[ Peers ]` lines that work."""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest
from click.testing import CliRunner

from tests.hubproc import HubProcess
from tests.signal.conftest import BIN
from tether.cli import main
from tether.signal import core
from tether.signal.config import parse_config


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    proc = HubProcess(tmp_path_factory.mktemp("signal-hub") / "data").start()
    yield proc
    proc.stop()


def b64(key: core.SigningKey) -> str:
    return base64.b64encode(key.public).decode()


@pytest.fixture(scope="module")
def world(hub):
    """A space with writers, a reader, a disabled writer, a keyless writer, an ssh-only user and an outsider."""
    keys = {n: core.SigningKey.from_seed(bytes([i + 1]) * 32) for i, n in enumerate(
        ["alice", "alice2", "bob", "carol", "dave", "outsider"])}
    space = hub.make_space()
    users = {}
    with hub.admin() as c:
        for role, level in [("alice", "write"), ("bob", "read"), ("carol", "admin"), ("dave", "write"),
                            ("erin", "write"), ("frank", "read"), ("outsider", None)]:
            name, token = hub.make_user(grants={space: level} if level else None)
            users[role] = (name, token)
        for role in ("alice", "bob", "carol", "dave", "outsider"):
            r = c.post(f"/api/v1/users/{users[role][0]}/keys", json={"public_key": b64(keys[role]), "kind": "signing"})
            assert r.status_code == 201, r.text
        # a second signing key for alice: one line per key
        r = c.post(f"/api/v1/users/{users['alice'][0]}/keys", json={"public_key": b64(keys["alice2"]), "kind": "signing"})
        assert r.status_code == 201, r.text
        # frank has only an SSH key: not a signing key, so left out
        ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMmxwgtI1NLlq1jNDRyjV7nNwBd4SZe5Sw1kVI/bR2QB frank@x"
        assert c.post(f"/api/v1/users/{users['frank'][0]}/keys", json={"public_key": ssh, "kind": "ssh"}).status_code == 201
        assert c.post(f"/api/v1/users/{users['dave'][0]}/disable").status_code == 200
    return {"space": space, "users": users, "keys": keys}


def export(hub, token, *args: str):
    return CliRunner().invoke(main, ["signal", "peers", "--hub", hub.url, "--token", token, *args], prog_name="tether")


def test_export_follows_grants_and_signing_keys(hub, world):
    users, keys = world["users"], world["keys"]
    r = export(hub, hub.admin_token, "--from-hub", world["space"], "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    got = {(row["user"], row["public_key"], tuple(row["verbs"]), row["grant"]) for row in rows}
    assert got == {
        (users["alice"][0], keys["alice"].public_b58, ("*",), "write"),
        (users["alice"][0], keys["alice2"].public_b58, ("*",), "write"),
        (users["bob"][0], keys["bob"].public_b58, (), "read"),
        (users["carol"][0], keys["carol"].public_b58, ("*",), "admin"),
    }
    assert all(row["destination"] == row["user"] and row["fingerprint"] for row in rows)
    # the users left out are named on stderr, with the reason
    assert f"user {users['dave'][0]} is disabled" in r.stderr
    assert f"user {users['erin'][0]} has no signing key" in r.stderr
    assert f"user {users['frank'][0]} has no signing key" in r.stderr
    assert users["outsider"][0] not in r.stdout + r.stderr


def test_exported_lines_make_a_working_config(hub, world):
    """Paste the output under a node's config: writers may send, readers only reply, others are strangers."""
    users, keys = world["users"], world["keys"]
    r = export(hub, hub.admin_token, "--from-hub", world["space"], "--destination", "org.example.{user}",
               "--write-verbs", "deploy, ping")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("# [ Peers ] from ") and lines[1] == "[ Peers ]"
    assert f"org.example.{users['alice'][0]} {keys['alice'].public_b58} [deploy, ping]" in lines
    assert f"org.example.{users['bob'][0]} {keys['bob'].public_b58} []" in lines
    me = core.SigningKey.from_seed(b"\x77" * 32)
    cfg = parse_config(f"server: nats://x\ndestination: org.example.node\n[ Identities ]\n"
                       f"{me.public_b58} {me.private_b58} [*]\n" + r.stdout)
    receiver = core.Receiver(cfg.peers, cfg.allow_skew_ns, core.Filter(local_destination="org.example.node"))
    now = time.time_ns()

    def send(who: str, verb: str):
        return receiver.receive(core.encode(keys[who], destination="org.**", verb=verb, payload=who, time_ns=now,
                                            uuid=core.make_uuid(who + verb)), now)

    assert isinstance(send("alice", "deploy"), core.Accepted)
    assert isinstance(send("alice2", "ping"), core.Accepted)
    assert isinstance(send("carol", "deploy"), core.Accepted)
    assert send("alice", "reboot").kind is core.RefusalKind.VERB_NOT_ALLOWED
    assert send("bob", "ping").kind is core.RefusalKind.VERB_NOT_ALLOWED
    assert send("dave", "ping").kind is core.RefusalKind.UNKNOWN_PEER
    assert send("outsider", "ping").kind is core.RefusalKind.UNKNOWN_PEER
    # readers are known receivers: a request to the space expects them and accepts their reply
    expected = {p.public for p in cfg.peers.receivers("org.example.**")}
    assert keys["bob"].public in expected and keys["dave"].public not in expected


def test_export_refusals(hub, world):
    space = world["space"]
    # a space admin who is not a hub admin sees the grants but may not read other users' keys
    r = export(hub, world["users"]["carol"][1], "--from-hub", space)
    assert r.exit_code == 4, r.output
    # a reader does not even see the grants
    r = export(hub, world["users"]["bob"][1], "--from-hub", space)
    assert r.exit_code == 4 and "grants" in r.output, r.output
    r = export(hub, hub.admin_token, "--from-hub", "no-such-space")
    assert r.exit_code == 1, r.output
    r = export(hub, "tth_bogus", "--from-hub", space)
    assert r.exit_code == 4, r.output
    r = export(hub, hub.admin_token, "--from-hub", space, "--destination", "no-placeholder")
    assert r.exit_code == 2, r.output


def test_export_as_a_real_command(hub, world):
    r = subprocess.run([str(BIN / "tether"), "signal", "peers", "--from-hub", world["space"]], check=False, capture_output=True,
                       text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "TETHER_HUB": hub.url,
                                                   "TETHER_TOKEN": hub.admin_token, "HOME": "/nonexistent"})
    assert r.returncode == 0, r.stderr
    assert world["keys"]["carol"].public_b58 in r.stdout
    assert hub.admin_token not in r.stdout + r.stderr
