"""The spelled-out subcommands (send, wait, request, keygen, peers) and the rule
that tells a subcommand from a receive SCRIPT; `remaphore` keeps remaphore's
interface exactly."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time

from click.testing import CliRunner

from tests.signal.conftest import BIN, Site, finish
from tether.cli import main
from tether.signal import core
from tether.signal.cli import SUBCOMMANDS, remaphore, signal
from tether.signal.config import parse_config


def three_nodes(site: Site) -> None:
    site.node("com.crypto.us.left", verbs=["ping", "deploy", "status"])
    site.node("com.crypto.us.right")
    site.node("com.crypto.eu.one")
    site.trust("com.crypto.us.right", "com.crypto.us.left", "[ping, status]")
    site.trust("com.crypto.eu.one", "com.crypto.us.left", "[*]")
    for r in ("com.crypto.us.right", "com.crypto.eu.one"):
        site.trust("com.crypto.us.left", r, "[ping]")
    site.write()


# -- help and the dispatch rule -------------------------------------------------------------


def test_help_lists_subcommands_but_remaphore_has_none():
    r = CliRunner().invoke(main, ["signal", "--help"], prog_name="tether")
    assert r.exit_code == 0
    for name in SUBCOMMANDS:
        assert f"  {name} " in r.output
    assert "or: tether signal {send|wait|request|keygen|peers|init|peer}" in r.output
    r = CliRunner().invoke(remaphore, ["--help"], prog_name="remaphore")
    assert r.exit_code == 0
    assert "Commands:" not in r.output and "keygen" not in r.output and "tether signal" not in r.output
    assert signal.subcommands_enabled and not remaphore.subcommands_enabled  # type: ignore[attr-defined]


def test_subcommand_usage_line():
    for name in SUBCOMMANDS:
        r = CliRunner().invoke(main, ["signal", name, "--help"], prog_name="tether")
        assert r.exit_code == 0, r.output
        assert r.output.startswith(f"Usage: tether signal {name} [OPTIONS]"), r.output.splitlines()[0]
        assert "Example" in r.output


def test_subcommand_usage_errors_exit_2(tmp_path):
    for args in (["send", "--verb", "a,b"], ["wait", "--timeout", "soon"], ["request", "--no-such"],
                 ["keygen", "--verbs", "[x]"], ["peers", "-c", str(tmp_path / "none.conf")],
                 ["send", "-c", str(tmp_path / "none.conf")]):
        r = CliRunner().invoke(main, ["signal", *args], prog_name="tether")
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output


def test_a_subcommand_name_elsewhere_is_a_script(site, tmp_path):
    """`tether signal send` is the subcommand; `tether signal -o send`, and `remaphore send`, run ./send."""
    three_nodes(site)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    hits = tmp_path / "hits"
    (bindir / "send").write_text(f'#!/bin/sh\necho "$0 $1 $2" >> {hits}\n')
    (bindir / "send").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    # tether: a flag first, so `send` is the SCRIPT
    p = site.start("com.crypto.eu.one", "-t", "10s", "-o", "send", env={"PATH": env["PATH"]})
    # remaphore: `send` as the very first argument is still a SCRIPT (config and subject from the environment)
    conf = site.nodes["com.crypto.us.right"].path
    conf.write_text(conf.read_text().replace("[ Identities ]", f"subject: remaphore.{site.subject}\n[ Identities ]"))
    err = tmp_path / "remaphore.err"
    with open(err, "w") as fh:
        q = subprocess.Popen([str(BIN / "remaphore"), "send"], env={**env, "TETHER_SIGNAL_CONFIG": str(conf)},
                             stdout=subprocess.DEVNULL, stderr=fh)
    try:
        deadline = time.monotonic() + 10
        while "ready" not in err.read_text() and time.monotonic() < deadline:
            assert q.poll() is None, err.read_text()
            time.sleep(0.02)
        # the tether receiver listens on remaphore.<S>, the remaphore one on remaphore.<S>.all
        r = site.run("com.crypto.us.left", "-s", "-v", "status", "hello")
        assert r.returncode == 0, r.stderr
        r = subprocess.run([str(BIN / "tether"), "signal", "send", "-c", str(site.nodes["com.crypto.us.left"].path),
                            "-S", f"{site.subject}.all", "--verb", "status", "again"], check=False, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert finish(p)[0] == 0
        deadline = time.monotonic() + 10
        while hits.read_text().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        q.kill()
        q.wait(5)
    lines = sorted(hits.read_text().splitlines())
    assert lines == [f"{bindir}/send status again", f"{bindir}/send status hello"], lines


# -- send / wait / request, spelled out ---------------------------------------------------------


def test_send_wait_request_subcommands(site, tmp_path):
    three_nodes(site)
    left = site.nodes["com.crypto.us.left"]

    def sub(name: str, node: str, *args: str) -> list[str]:
        return [str(BIN / "tether"), "signal", name, "-c", str(site.nodes[node].path), "--subject", site.subject, *args]

    # wait + send, mixed with the flag interface and with remaphore
    err = tmp_path / "wait.err"
    with open(err, "w") as fh:
        w = subprocess.Popen(sub("wait", "com.crypto.eu.one", "--timeout", "10s", "--uuid", "upload_done"),
                             stdout=subprocess.PIPE, stderr=fh, text=True)
    deadline = time.monotonic() + 10
    while "ready" not in err.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    r2 = site.start("com.crypto.us.right", "-t", "10s", "-u", "upload_done", prog="remaphore")
    r = subprocess.run(sub("send", "com.crypto.us.left", "--uuid", "upload_done", "--to", "com.crypto.**"),
                       check=False, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert w.wait(15) == 0, err.read_text()
    w.stdout.close()
    assert finish(r2)[0] == 0
    # wait with a timeout and nothing: exit 1
    r = subprocess.run(sub("wait", "com.crypto.eu.one", "-t", "200ms", "--once"), check=False, capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    # request: replies from a flag-style receiver and a remaphore one
    a = site.start("com.crypto.us.right", "-t", "10s", "-o")
    b = site.start("com.crypto.eu.one", "-t", "10s", "-o", prog="remaphore")
    r = subprocess.run(sub("request", "com.crypto.us.left", "--timeout", "8s", "--to", "com.crypto.**", "--verb", "ping"),
                       check=False, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["com.crypto.eu.one,NO_DATA", "com.crypto.us.right,NO_DATA"]
    assert finish(a)[0] == 0 and finish(b)[0] == 0
    # the identity's verbs still apply
    r = subprocess.run(sub("send", "com.crypto.us.left", "--verb", "reboot"), check=False, capture_output=True, text=True)
    assert r.returncode == 3 and "no private key" in r.stderr
    assert left.key is not None


# -- keygen ---------------------------------------------------------------------------------------


def test_keygen_line_is_a_working_identity():
    r = CliRunner().invoke(main, ["signal", "keygen", "--verbs", "ping, Deploy"], prog_name="tether")
    assert r.exit_code == 0, r.output
    pub, priv, verbs = r.output.strip().split(" ", 2)
    assert verbs == "[ping, deploy]"
    key = core.SigningKey.from_base58(pub, priv)
    assert len(core.b58decode(pub)) == 32 and len(core.b58decode(priv)) == 64
    cfg = parse_config(f"server: nats://x\ndestination: d\n[ Identities ]\n{r.output}")
    assert cfg.identity(None, "deploy").key == key
    # a message signed with it verifies
    raw = core.encode(key, destination="**", verb="ping", payload="x", time_ns=1, uuid=b"u" * 12)
    assert core.verify(core.parse(raw))
    again = CliRunner().invoke(main, ["signal", "keygen"], prog_name="tether").output.split()[0]
    assert again != pub, "fresh every time"


def test_keygen_json_and_output_file(tmp_path):
    r = CliRunner().invoke(main, ["signal", "keygen", "--json"], prog_name="tether")
    obj = json.loads(r.output)
    assert set(obj) == {"public_key", "public_key_base64", "private_key", "verbs", "line"} and obj["verbs"] == ["ping"]
    key = core.SigningKey.from_base58(obj["public_key"], obj["private_key"])
    assert base64.b64decode(obj["public_key_base64"]) == key.public
    out = tmp_path / "node.identity"
    r = CliRunner().invoke(main, ["signal", "keygen", "--verbs", "*", "-o", str(out), "--json"], prog_name="tether")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output)
    assert "private_key" not in obj and obj["file"] == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pub, _priv, verbs = out.read_text().strip().split(" ", 2)
    assert pub == obj["public_key"] and verbs == "[*]"
    before = out.read_text()
    r = CliRunner().invoke(main, ["signal", "keygen", "-o", str(out)], prog_name="tether")
    assert r.exit_code == 1 and "already exists" in r.output
    assert out.read_text() == before


# -- peers from the config -------------------------------------------------------------------------


def test_peers_lists_the_config(tmp_path):
    site = Site(tmp_path, "nats://127.0.0.1:4222")
    three_nodes(site)
    path = str(site.nodes["com.crypto.us.left"].path)
    r = CliRunner().invoke(main, ["signal", "peers", "-c", path, "--json"], prog_name="tether")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert rows == [
        {"destination": "com.crypto.us.right", "public_key": site.nodes["com.crypto.us.right"].key.public_b58, "verbs": ["ping"]},
        {"destination": "com.crypto.eu.one", "public_key": site.nodes["com.crypto.eu.one"].key.public_b58, "verbs": ["ping"]},
    ]
    r = CliRunner().invoke(main, ["signal", "peers", "-c", str(site.nodes["com.crypto.eu.one"].path)])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].split() == ["destination", "public_key", "verbs"]
    assert lines[1].split() == ["com.crypto.us.left", site.nodes["com.crypto.us.left"].key.public_b58, "[*]"]
