"""`tether signal init --renew`: new NATS credentials from the hub, the same node identity, so its peers
go on trusting it. Refusals leave the config as it was."""

from __future__ import annotations

import os
import subprocess

import pytest

from tether.signal import core
from tether.signal.config import load_config, replace_connection
from tests.hubproc import HubProcess
from tests.signal.conftest import BIN, finish, start_waiter


def signal_cli(hub: HubProcess | None, *args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    if hub is not None:
        env.update(TETHER_HUB=hub.url, TETHER_TOKEN=hub.admin_token)
    return subprocess.run([str(BIN / "tether"), "signal", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=60)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = HubProcess(tmp_path_factory.mktemp("renew") / "data").start()
    yield h
    h.stop()


def test_renew_keeps_the_identity_and_peers_still_trust_it(hub, tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    assert signal_cli(hub, "init", "-c", str(a), "--destination", "com.example.a").returncode == 0
    assert signal_cli(hub, "init", "-c", str(b), "--destination", "com.example.b").returncode == 0
    assert signal_cli(None, "peer", "add", "-c", str(b), "--from", str(a)).returncode == 0
    assert signal_cli(None, "peer", "add", "-c", str(a), "--from", str(b)).returncode == 0
    a.write_text(a.read_text() + "# my own note\n")
    before, creds_before = load_config(str(a)), (tmp_path / "a.conf.creds").read_text()
    text_before = a.read_text()

    r = signal_cli(hub, "init", "-c", str(a), "--renew")
    assert r.returncode == 0, r.stderr
    after = load_config(str(a))
    assert "identity" in r.stdout and core.b58encode(before.default_identity) in r.stdout
    def who(cfg):
        return (cfg.default_identity, cfg.identities, cfg.destination,
                [(p.destination, p.public, p.verbs) for p in cfg.peers])

    assert who(after) == who(before) and len(after.peers) == 1
    assert "# my own note" in a.read_text()
    # only the credentials changed: the same lines but the .creds text is new
    assert a.read_text() == text_before
    assert (tmp_path / "a.conf.creds").read_text() != creds_before
    assert (tmp_path / "a.conf.creds").stat().st_mode & 0o777 == 0o600 and a.stat().st_mode & 0o777 == 0o600

    # b, paired before the renewal, still takes a's messages
    w = start_waiter([str(BIN / "tether"), "signal", "-c", str(b), "-t", "20s", "-u", "after_renewal"],
                     tmp_path / "b.err")
    try:
        r = signal_cli(None, "-c", str(a), "-s", "-u", "after_renewal")
        assert r.returncode == 0, r.stderr
        code, _, err = finish(w, timeout=20)
        assert code == 0, err
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()


@pytest.mark.parametrize("args, code, words", [
    (["--renew", "--destination", "com.other"], 2, "--renew keeps"),
    (["--renew", "--force"], 2, "--renew keeps"),
    ([], 2, "--destination NAME is required"),
])
def test_renew_usage_errors_change_nothing(hub, tmp_path, args, code, words):
    a = tmp_path / "a.conf"
    assert signal_cli(hub, "init", "-c", str(a), "--destination", "com.example.a").returncode == 0
    before = a.read_bytes(), (tmp_path / "a.conf.creds").read_bytes()
    r = signal_cli(hub, "init", "-c", str(a), *args)
    assert r.returncode == code and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (a.read_bytes(), (tmp_path / "a.conf.creds").read_bytes()) == before


def test_renew_of_a_missing_or_broken_config_writes_nothing(hub, tmp_path):
    r = signal_cli(hub, "init", "-c", str(tmp_path / "none.conf"), "--renew")
    assert r.returncode == 1 and "nothing to renew" in r.stderr, r.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text("server: nats://127.0.0.1:4222\ndestination: x\n[ Identities ]\nnot a key line\n")
    r = signal_cli(hub, "init", "-c", str(broken), "--renew")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.conf"]  # no .creds written, no config made


def test_replace_connection_keeps_everything_else():
    text = ("# head\nserver: nats://old1:4222\nServer: nats://old2:4222\ncredentials: /old.creds\nsubject: s\n"
            "token: t\n[ Identities ]\nK P [ping]\n[ Peers ]\nd server: [x]\n")
    got = replace_connection(text, ["nats://new:4222"], "/new.creds")
    assert got == ("# head\nserver: nats://new:4222\ncredentials: /new.creds\nsubject: s\ntoken: t\n"
                   "[ Identities ]\nK P [ping]\n[ Peers ]\nd server: [x]\n")
    # a hub that hands no credentials (a cluster of the site's own): the site's own line stays
    assert replace_connection(text, ["nats://new:4222"], None) == (
        "# head\nserver: nats://new:4222\ncredentials: /old.creds\nsubject: s\ntoken: t\n"
        "[ Identities ]\nK P [ping]\n[ Peers ]\nd server: [x]\n")


def test_init_against_a_hub_with_signal_off_exits_2_saying_so_and_writes_nothing(tmp_path):
    hub = HubProcess(tmp_path / "data", env={"TETHER_SIGNAL_NATS": "off"}).start()
    try:
        out = tmp_path / "node"
        out.mkdir()
        r = signal_cli(hub, "init", "-c", str(out / "a.conf"), "--destination", "com.example.a")
    finally:
        hub.stop()
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("tether: error: this hub has signal off (signal_nats = off)"), r.stderr
    assert "TETHER_SIGNAL_NATS" in r.stderr and "Traceback" not in r.stderr
    assert list(out.iterdir()) == []  # no config, no .creds
