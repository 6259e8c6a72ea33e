"""`tether signal -s` and `remaphore -s` on one socket (tether.signal.quicksend): the same message
on the wire as the full path, through every kind of NATS credentials a real server requires,
without importing nats-py, asyncio or click; anything it does not take goes, unsent, to the
full path (which then says what is wrong, as before)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tether.signal import core, quicksend
from tether.signal.cli import DEFAULT_CONFIG, SUBCOMMANDS, signal
from tests.signal.conftest import finish
from tests.signal.test_auth import pair

BIN = Path(sys.executable).parent


def test_the_flag_table_is_the_click_commands():
    flags = {}
    for p in signal.params:
        if isinstance(p, click.Option):
            for opt in p.opts:
                flags[opt.lstrip("-")] = bool(p.is_flag)
    assert quicksend.SIGNAL_FLAGS == flags
    assert quicksend.DEFAULT_CONFIG == DEFAULT_CONFIG and quicksend.SUBCOMMANDS == SUBCOMMANDS
    envvars = {p.envvar for p in signal.params if isinstance(p, click.Option) and p.envvar}
    assert envvars == {quicksend.ENV_CONFIG}


def receive_raw(url: str, subject: str, run) -> list[bytes]:
    """The payloads published on ``subject`` while ``run()`` runs (a plain nats-py subscriber)."""
    import nats

    got: list[bytes] = []

    async def take(msg) -> None:
        got.append(msg.data)

    async def go() -> None:
        nc = await nats.connect(url)
        sub = await nc.subscribe(subject, cb=take)
        await nc.flush()
        await asyncio.get_running_loop().run_in_executor(None, run)
        await asyncio.sleep(0.3)
        await sub.unsubscribe()
        await nc.close()

    asyncio.run(go())
    return got


QUICK = ("import sys\nsys.argv[0] = 'tether'\nfrom tether.launch import main\ntry:\n    code = main()\nfinally:\n"
         "    print('slow', any(m in sys.modules for m in ('nats', 'asyncio', 'click')), file=sys.stderr)\n"
         "sys.exit(code)")  # fmt: skip


def quick_run(s, name: str, *args: str) -> subprocess.CompletedProcess:
    argv = s.argv(name, *args)[2:]  # after `tether signal`
    return subprocess.run([sys.executable, "-c", QUICK, "signal", *argv], capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip


def test_the_message_is_the_full_paths_on_the_wire(site):
    site.node("com.example.a", verbs=("ping", "deploy"))
    site.write()
    subject = core.broadcast_subject("remaphore", site.subject)
    args = ["-s", "-u", "upload_done", "-v", "deploy", "-D", "com.example.**", "hello", "wörld"]
    fast = receive_raw(site.url, subject, lambda: quick_run(site, "com.example.a", *args))
    env = {**os.environ}
    slow = receive_raw(site.url, subject, lambda: subprocess.run(
        [sys.executable, "-c", "import sys\nfrom tether.cli import main\nmain()", "signal",
         *site.argv("com.example.a", *args)[2:]], env=env, capture_output=True, timeout=30, check=True))
    assert len(fast) == len(slow) == 1
    a, b = core.parse(fast[0]), core.parse(slow[0])
    key = site.nodes["com.example.a"].key
    assert core.verify(a) and core.verify(b)
    # the same message but for the time (and so the signature): re-sign b's fields at a's time to compare bytes
    again = core.encode(key, destination=b.destination, verb=b.verb, payload=b.payload, time_ns=a.time_ns,
                        uuid=b.uuid, request=False)
    assert again == fast[0]


@pytest.mark.parametrize("prog", ["tether", "remaphore"])
def test_a_plain_send_goes_the_quick_way_and_is_received(site, prog):
    site.node("com.example.a")
    site.node("com.example.b")
    site.trust("com.example.b", "com.example.a")
    site.write()
    w = site.start("com.example.b", "-t", "15s", "-u", "job-7", "-o")
    try:
        if prog == "tether":
            r = quick_run(site, "com.example.a", "-s", "-u", "job-7", "done")
            assert r.returncode == 0 and r.stdout == "" and r.stderr == "slow False\n", r.stderr
        else:
            r = site.run("com.example.a", "-s", "-u", "job-7", "done", prog="remaphore")
            assert r.returncode == 0 and r.stdout == r.stderr == "", r.stderr
        assert finish(w)[0] == 0
    finally:
        site.stop()


def test_every_kind_of_credentials(tmp_path, nats_operator, nats_nkey, nats_tls):
    """creds (operator/JWT mode, the server's nonce signed), an nkey seed, and TLS client certificates
    (not taken the quick way: the full path sends it, as before) all reach a waiter."""
    srv, auth = nats_operator
    nkey_srv, seed = nats_nkey
    tls_srv, tls = nats_tls
    cases = [
        (srv.url, f"credentials: {auth.user_creds('qa')}", f"credentials: {auth.user_creds('qb')}", False),
        (nkey_srv.url, f"nkey_seed: {seed}", f"nkey_seed: {seed}", False),
        (tls_srv.url, f"tls_ca: {tls.ca}\ntls_cert: {tls.client_cert}\ntls_key: {tls.client_key}",
         f"tls_ca: {tls.ca}\ntls_cert: {tls.client_cert}\ntls_key: {tls.client_key}", True),
    ]
    for i, (url, a, b, slow) in enumerate(cases):
        s = pair(tmp_path / f"c{i}", url, a, b)
        try:
            w = s.start("com.example.b", "-t", "15s", "-o")
            r = quick_run(s, "com.example.a", "-s", "hi")
            assert r.returncode == 0 and r.stderr.endswith(f"slow {slow}\n"), (url, r.stderr)
            assert finish(w)[0] == 0, url
        finally:
            s.stop()


def test_refused_credentials_send_nothing_twice_and_say_so(tmp_path, nats_operator):
    from tether.signal import natsauth

    srv, auth = nats_operator
    s = pair(tmp_path, srv.url, f"credentials: {auth.user_creds('x', signer=natsauth.new_key('account'))}",
             f"credentials: {auth.user_creds('y')}")
    r = quick_run(s, "com.example.a", "-s", "hi")
    # the quick way gave up before sending, the full path said why: remaphore's exit 3 for a sender
    assert r.returncode == 3 and "refused our credentials" in r.stderr and r.stderr.endswith("slow True\n"), r.stderr


def test_an_unreachable_server_is_the_full_paths_error(site):
    site.url = "nats://127.0.0.1:1"
    site.node("com.example.a")
    site.write()
    r = quick_run(site, "com.example.a", "-s", "hi")
    assert r.returncode == 3 and "cannot connect to NATS" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("argv", [
    ["-r", "-t", "1s"], ["-s", "-t", "1s"], ["-s", "--durable"], ["-t", "1s"], ["send", "-s"], ["-s", "-x"],
    ["-s", "-h"], ["-s", "-p", "not-a-key"], ["-s", "-D", "a,b"],
])  # fmt: skip
def test_anything_else_is_left_to_the_full_path(tmp_path, argv):
    conf = tmp_path / "c.conf"
    key = core.SigningKey.from_seed(b"\1" * 32)
    conf.write_text(f"server: nats://127.0.0.1:1\n[ Identities ]\n{key.public_b58} {key.private_b58} [*]\n")
    assert quicksend.quick(["-c", str(conf), *argv]) is None


def test_a_config_with_warnings_or_tls_is_left_to_the_full_path(tmp_path):
    key = core.SigningKey.from_seed(b"\1" * 32)
    ident = f"[ Identities ]\n{key.public_b58} {key.private_b58} [*]\n"
    for head in ("server: nats://127.0.0.1:1\nno_such_key: 1\n", "server: tls://127.0.0.1:1\n",
                 "server: nats://user:pw@127.0.0.1:1\n", ""):
        conf = tmp_path / "c.conf"
        conf.write_text(head + ident)
        assert quicksend.quick(["-c", str(conf), "-s"]) is None, head


#: Every module a quick send may import beyond `python -c pass`, with a creds file (the server's
#: nonce signed) and an `allow_skew:` (a duration parsed), read with -X importtime as
#: tests/cli/test_quick.py does for the other quick paths. A module not listed fails the test:
#: find who imports it (`python -X importtime .venv/bin/tether signal -c CONF -s hi`) and import
#: it where it is used, or list it here if it is worth its cost (benchmarks/cli_start.py).
SEND_PATH = {
    "__future__", "tether", "tether.launch", "tether.problems", "tether.signal", "tether.signal.quicksend",
    "tether.signal.goflags", "tether.signal.config", "tether.signal.wire", "tether.signal.ed25519",
    "tether.signal.nkey",
    "nacl", "nacl._sodium", "_cffi_backend",  # libsodium: both signatures (benchmarks/ed25519_start.py)
    "socket", "_socket", "select", "selectors", "errno", "array", "math", "enum", "types", "functools",
    "_functools", "collections", "_collections", "collections.abc", "itertools", "keyword", "operator",
    "_operator", "reprlib",  # one TCP connection (collections: the named tuples of wire, config and goflags)
    "json", "json.decoder", "json.encoder", "json.scanner", "_json", "re", "re._casefix", "re._compiler",
    "re._constants", "re._parser", "_sre", "copyreg",  # the server's INFO and our CONNECT; durations
    "base64", "binascii", "struct", "_struct",  # the nkey seed (base32, CRC-16), the nonce's signature
    "decimal", "_decimal", "numbers",  # allow_skew: Go durations, exactly
}  # fmt: skip
#: what the full path imports and a quick send must not, whatever the list above says
HEAVY = ("nats", "asyncio", "click", "httpx", "pydantic", "sqlalchemy", "rich", "typing", "dataclasses", "inspect",
         "cryptography", "nkeys", "base58", "hashlib", "secrets", "encodings.idna", "tether.hubclient",
         "tether.cli", "tether.signal.core")  # fmt: skip


def test_a_quick_send_imports_only_what_is_listed(tmp_path, nats_operator):
    from tests.cli.test_quick import imported

    srv, auth = nats_operator
    s = pair(tmp_path, srv.url, f"credentials: {auth.user_creds('qa')}", f"credentials: {auth.user_creds('qb')}")
    names, r = imported(s.argv("com.example.a", "-s", "-v", "ping", "hello")[1:], dict(os.environ))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tether.signal.nkey" in names and "tether.signal.quicksend" in names  # the creds path was taken
    heavy = sorted(n for n in names if n in HEAVY or n.split(".")[0] in HEAVY)
    assert not heavy, f"a quick send now imports {heavy}"
    assert not names - SEND_PATH, (
        f"a quick send now imports {sorted(names - SEND_PATH)}: import it where it is used, or list it in "
        "tests/signal/test_quick_send.py if it is worth its cost (see `python -X importtime`)")

def _corrupt(seed: str) -> str:
    """The same seed with one character changed: still base32, the checksum now wrong."""
    i = len(seed) // 2
    return seed[:i] + ("A" if seed[i] != "A" else "B") + seed[i + 1 :]


def test_a_malformed_seed_is_never_used_the_quick_way(tmp_path, nats_operator, nats_nkey):
    """A seed with a wrong checksum (or no seed at all) is not signed with: the quick way sends
    nothing, and the full path says what is wrong, no message delivered, no traceback."""
    srv, auth = nats_operator
    nkey_srv, seed_file = nats_nkey
    good_creds = Path(auth.user_creds("qb")).read_text()
    seed = next(ln for ln in good_creds.splitlines() if ln.startswith("SU"))
    bad_seed = tmp_path / "bad.nk"
    bad_seed.write_text(_corrupt(Path(seed_file).read_text().strip()) + "\n")
    bad_creds = tmp_path / "bad.creds"
    bad_creds.write_text(good_creds.replace(seed, _corrupt(seed)))
    garbage = tmp_path / "garbage.nk"
    garbage.write_text("SUnot-a-seed\n")
    for i, (url, line) in enumerate([(srv.url, f"credentials: {bad_creds}"), (nkey_srv.url, f"nkey_seed: {bad_seed}"),
                                     (nkey_srv.url, f"nkey_seed: {garbage}")]):
        s = pair(tmp_path / f"c{i}", url, line, f"credentials: {auth.user_creds('qb')}" if i == 0 else
                 f"nkey_seed: {seed_file}")
        try:
            w = s.start("com.example.b", "-t", "3s", "-o")
            assert quicksend.quick([*s.argv("com.example.a", "-s", "hi")[2:]]) is None, line  # declined, unsent
            r = quick_run(s, "com.example.a", "-s", "hi")
            assert r.returncode in (1, 2, 3, 4) and "Traceback" not in r.stderr, (line, r.stderr)
            assert r.stderr.endswith("slow True\n") and "error" in r.stderr, (line, r.stderr)
            assert finish(w)[0] == 1, line  # the waiter heard nothing: it timed out
        finally:
            s.stop()
