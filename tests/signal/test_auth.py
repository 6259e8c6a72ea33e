"""NATS credentials as real sites use them: .creds files against a server in operator/JWT mode, nkey
seeds, TLS client certificates. Each server really requires them (tests/services/nats_auth.py)."""

from __future__ import annotations

import time

import pytest

from tests.signal.conftest import Site, finish


def pair(tmp_path, url: str, extra_a: str, extra_b: str) -> Site:
    """Two nodes that trust each other; each node's config gets its own credentials lines."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    s = Site(tmp_path, url)
    s.node("com.example.a")
    s.node("com.example.b")
    s.trust("com.example.b", "com.example.a")
    s.trust("com.example.a", "com.example.b")
    s.write()
    for name, extra in (("com.example.a", extra_a), ("com.example.b", extra_b)):
        path = s.nodes[name].path
        path.write_text(path.read_text().replace("allow_skew: 5s\n", f"allow_skew: 5s\n{extra}\n"))
    return s


def test_remaphore_config_with_a_creds_file_works_unchanged(tmp_path, nats_operator):
    srv, auth = nats_operator
    # remaphore's own format, nothing tether-only in it: `credentials:` names the node's .creds file
    s = pair(tmp_path, srv.url, f"credentials: {auth.user_creds('node-a')}", f"credentials: {auth.user_creds('node-b')}")
    try:
        w = s.start("com.example.b", "-t", "15s", "-u", "upload_done", prog="remaphore")
        r = s.run("com.example.a", "-s", "-u", "upload_done")
        assert r.returncode == 0, r.stderr
        assert finish(w)[0] == 0
        # durable mode (JetStream in the same account) works through the creds too
        assert s.run("com.example.b", "--durable", "-t", "1s").returncode == 1
        assert s.run("com.example.a", "-s", "--durable", "kept").returncode == 0
        assert s.run("com.example.b", "--durable", "-t", "10s", "-o").returncode == 0
    finally:
        s.stop()


@pytest.mark.parametrize("how", ["no credentials", "signed by another account", "expired"])
def test_refused_credentials_exit_1_and_say_so(tmp_path, nats_operator, how):
    srv, auth = nats_operator
    from tether.signal import natsauth

    good = f"credentials: {auth.user_creds('good')}"
    bad = {"no credentials": "",
           "signed by another account": f"credentials: {auth.user_creds('stranger', signer=natsauth.new_key('account'))}",
           "expired": f"credentials: {auth.user_creds('old', expires=int(time.time()) - 10)}"}[how]
    s = pair(tmp_path, srv.url, bad, good)
    for args, code in ((["-s", "hello"], 3), (["-t", "30s", "-o"], 1), (["-r", "-t", "5s"], 3)):
        t0 = time.monotonic()
        r = s.run("com.example.a", *args)
        # remaphore's codes when the server refuses its credentials: a waiter 1 (after -t), a sender 3;
        # tether says why, and does not wait out -t
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert "refused our credentials" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert time.monotonic() - t0 < 15


def works_then_refused(tmp_path, url: str, good: str, bad: str) -> None:
    """A message goes through with the ``good`` config lines; with ``bad`` ones the server refuses a sender: exit 3."""
    s = pair(tmp_path, url, good, good)
    try:
        w = s.start("com.example.b", "-t", "15s", "-o")
        assert s.run("com.example.a", "-s").returncode == 0
        assert finish(w)[0] == 0
    finally:
        s.stop()
    r = pair(tmp_path / "refused", url, bad, "").run("com.example.a", "-s")
    assert r.returncode == 3 and "refused our credentials" in r.stderr, r.stderr


def test_nkey_seed(tmp_path, nats_nkey):
    from tether.signal import natsauth

    srv, seed = nats_nkey
    wrong = tmp_path / "other.nk"
    wrong.write_text(natsauth.new_key("user").seed)
    works_then_refused(tmp_path, srv.url, f"nkey_seed: {seed}", f"nkey_seed: {wrong}")


def test_tls_client_certificate(tmp_path, nats_tls):
    srv, tls = nats_tls
    # the server verifies client certificates: without one, we are refused
    works_then_refused(tmp_path, srv.url, f"tls_ca: {tls.ca}\ntls_cert: {tls.client_cert}\ntls_key: {tls.client_key}",
                       f"tls_ca: {tls.ca}")


def test_tether_depends_on_what_creds_files_need():
    """nats-py signs a .creds file's nonce with the `nkeys` package: without it every command failed."""
    from importlib.metadata import requires

    assert any(r.replace(" ", "").startswith(("nkeys", "nats-py[nkeys]")) for r in requires("tether") or [])
