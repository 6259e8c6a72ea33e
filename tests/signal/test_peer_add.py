"""`tether signal peer add`: pairing without an editor; a refused change leaves the file as it was."""

from __future__ import annotations

import subprocess

import pytest

from tether.signal import core
from tether.signal.config import load_config
from tests.signal.conftest import BIN

A = core.SigningKey.from_seed(b"\x0a" * 32)
B = core.SigningKey.from_seed(b"\x0b" * 32)


def conf(path, key, dest, tail="[ Peers ]\n"):
    path.write_text(f"server: nats://127.0.0.1:4222\ncredentials: /path/to/credentials/file\ndestination: {dest}\n"
                    f"[ Identities ]\n{key.public_b58} {key.private_b58} [ping]\n{tail}")
    return path


def peer_add(*args):
    return subprocess.run([str(BIN / "tether"), "signal", "peer", "add", *args], capture_output=True, text=True)


def test_add_by_key_and_from_a_config(tmp_path):
    a = conf(tmp_path / "a.conf", A, "com.a")
    b = conf(tmp_path / "b.conf", B, "com.b", tail="")  # no [ Peers ] yet
    r = peer_add("-c", str(a), "com.b", B.public_b58, "--verbs", "ping, deploy")
    assert r.returncode == 0, r.stderr
    r = peer_add("-c", str(b), "--from", str(a), "--verbs", "*")
    assert r.returncode == 0, r.stderr
    (pa,), (pb,) = load_config(str(a)).peers, load_config(str(b)).peers
    assert (pa.destination, pa.public, pa.verbs) == ("com.b", B.public, frozenset({"ping", "deploy"}))
    assert (pb.destination, pb.public, pb.verbs) == ("com.a", A.public, frozenset({"*"}))


def test_peers_section_before_identities_still_works(tmp_path):
    a = tmp_path / "a.conf"
    a.write_text(f"server: nats://x:1\ndestination: com.a\n[ Peers ]\n[ Identities ]\n{A.public_b58} {A.private_b58} [ping]\n")
    assert peer_add("-c", str(a), "com.b", B.public_b58).returncode == 0
    assert [p.destination for p in load_config(str(a)).peers] == ["com.b"]


@pytest.mark.parametrize("args, code, words", [
    (["com.b", "0OIl"], 2, "PUBKEY"),
    (["com,b", B.public_b58], 2, "commas"),
    (["com.b"], 2, "name the peer"),
    (["com.b", B.public_b58, "--verbs", "[x]"], 2, "--verbs"),
    (["com.a2", A.public_b58], 1, "already a peer"),
])
def test_refusals_change_nothing(tmp_path, args, code, words):
    a = conf(tmp_path / "a.conf", A, "com.a", tail=f"[ Peers ]\ncom.a {A.public_b58} [ping]\n")
    before = a.read_bytes()
    r = peer_add("-c", str(a), *args)
    assert r.returncode == code and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert a.read_bytes() == before


def test_init_refuses_to_overwrite_an_identity(tmp_path):
    a = conf(tmp_path / "a.conf", A, "com.a")
    before = a.read_bytes()
    r = subprocess.run([str(BIN / "tether"), "signal", "init", "-c", str(a), "--destination", "com.x",
                        "--hub", "http://127.0.0.1:9", "--token", "tth_x"], capture_output=True, text=True)
    assert r.returncode == 1 and "already exists" in r.stderr, r.stderr
    assert a.read_bytes() == before
