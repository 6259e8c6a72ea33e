"""tether signal against remaphore's own Go binary, on a nats-server that really requires creds.

Runs when TETHER_REMAPHORE names a remaphore binary built from its source
(docs/signal.md, "Checked against remaphore"); skipped otherwise. Every case
runs the same config files, unchanged, under both programs: "go" is
remaphore's binary, "tether" is `tether signal`.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

from tests.signal.conftest import Site, finish, start_waiter

GO = os.environ.get("TETHER_REMAPHORE", "")
pytestmark = pytest.mark.skipif(
    not (GO and os.access(GO, os.X_OK)),
    reason="TETHER_REMAPHORE names no remaphore binary (see docs/signal.md, 'Checked against remaphore')",
)
PROGS = ("go", "tether")


def other(prog: str) -> str:
    return "tether" if prog == "go" else "go"


@pytest.fixture
def creds_site(tmp_path, nats_operator):
    """Two nodes, each with its own .creds file, trusting each other: remaphore's config format only."""
    srv, auth = nats_operator
    s = Site(tmp_path, srv.url)
    s.node("com.example.a", verbs=("*",))
    s.node("com.example.b", verbs=("*",))
    s.trust("com.example.b", "com.example.a")
    s.trust("com.example.a", "com.example.b")
    s.write()
    for name in s.nodes:
        path = s.nodes[name].path
        creds = auth.user_creds(name)
        path.write_text(path.read_text().replace("allow_skew: 5s\n", f"allow_skew: 5s\ncredentials: {creds}\n"))
    yield s
    s.stop()


def _code(rc: int) -> int:
    """What a shell reports: a process killed by signal N is 128 + N."""
    return 128 - rc if rc < 0 else rc


def _env_script(tmp_path: pathlib.Path, name: str) -> list[str]:
    """A receive SCRIPT that writes its arguments and the REMAPHORE_* variables to a file (remaphore drops its output)."""
    out = tmp_path / f"{name}.out"
    return ["/bin/sh", "-c", f'printf "%s|%s|%s|%s|%s|%s|%s\\n" "$1" "$2" "$REMAPHORE_VERB" "$REMAPHORE_MSG" '
                             f'"$REMAPHORE_DESTMATCH" "$REMAPHORE_SENDER" "$REMAPHORE_UUID" >> {out}; '
                             'echo "answer from $REMAPHORE_DESTMATCH"', "script"]


def _seen(site: Site, tmp_path: pathlib.Path, receiver: str, verb: str, msg: str, uuid: str = "") -> None:
    """The receiver's script ran once, with VERB MSG as arguments and the same REMAPHORE_* values in both programs."""
    from tether.signal import core

    sender = site.nodes["com.example.a"].key.public_b58
    got = (tmp_path / f"{receiver}.out").read_text().splitlines()
    assert len(got) == 1 and got[0].startswith(f"{verb}|{msg}|{verb}|{msg}|com.example.b|{sender}|"), got
    hexuuid = got[0].rsplit("|", 1)[1]  # without -u, a random one: 12 bytes
    assert hexuuid == core.make_uuid(uuid).hex() if uuid else len(bytes.fromhex(hexuuid)) == 12, got


@pytest.mark.parametrize("sender", PROGS)
def test_send_and_wait_both_ways_with_creds(creds_site, tmp_path, sender):
    receiver = other(sender)
    w = creds_site.start("com.example.b", "-t", "15s", "-u", "upload_done", *_env_script(tmp_path, receiver), prog=receiver)
    r = creds_site.run("com.example.a", "-s", "-v", "deploy", "-u", "upload_done", "bigfile", "is up", prog=sender)
    assert r.returncode == 0, r.stderr
    code, _, err = finish(w)
    assert code == 0, err
    _seen(creds_site, tmp_path, receiver, "deploy", "bigfile is up", "upload_done")


@pytest.mark.parametrize("sender", PROGS)
def test_default_payload_is_empty_both_ways(creds_site, tmp_path, sender):
    receiver = other(sender)
    w = creds_site.start("com.example.b", "-t", "15s", "-o", *_env_script(tmp_path, receiver), prog=receiver)
    assert creds_site.run("com.example.a", "-s", prog=sender).returncode == 0
    assert finish(w)[0] == 0
    _seen(creds_site, tmp_path, receiver, "ping", "")


@pytest.mark.parametrize("requester", PROGS)
def test_request_reply_both_ways(creds_site, tmp_path, requester):
    responder = other(requester)
    w = creds_site.start("com.example.b", "-t", "15s", "-o", *_env_script(tmp_path, responder), prog=responder)
    r = creds_site.run("com.example.a", "-r", "-t", "10s", "-v", "status", "how", "are", "you", prog=requester)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "com.example.b,0,answer from com.example.b\n", r.stdout
    assert finish(w)[0] == 0
    _seen(creds_site, tmp_path, responder, "status", "how are you")


@pytest.mark.parametrize("requester", PROGS)
def test_request_multi_line_answer_and_exit_code(creds_site, requester):
    import re

    w = creds_site.start("com.example.b", "-t", "15s", "-o", "/bin/sh", "-c", "echo one; echo two; exit 3",
                         prog=other(requester))
    r = creds_site.run("com.example.a", "-r", "-t", "10s", prog=requester)
    assert r.returncode == 0, r.stderr
    sep = re.fullmatch(r"--> ([0-9a-f]{32})\n.*", r.stdout, re.S)
    assert sep and r.stdout == f"--> {sep[1]}\ncom.example.b,3,one\ntwo\n--< {sep[1]}\n", r.stdout
    finish(w)


@pytest.mark.parametrize("requester", PROGS)
def test_request_to_a_receiver_without_script_answers_no_data(creds_site, requester):
    w = creds_site.start("com.example.b", "-t", "15s", "-o", prog=other(requester))
    r = creds_site.run("com.example.a", "-r", "-t", "10s", prog=requester)
    assert (r.returncode, r.stdout) == (0, "com.example.b,NO_DATA\n"), r.stderr
    assert finish(w)[0] == 0


@pytest.mark.parametrize("generator", PROGS)
def test_generated_config_loads_in_the_other(creds_site, tmp_path, generator):
    """-C output: parsed unchanged by the other program; with a site's server and creds filled in, it signals."""
    gen = subprocess.run(_argv(generator, "-C"), capture_output=True, text=True, timeout=20)
    assert gen.returncode == 0, gen.stderr
    path = tmp_path / f"generated-by-{generator}.conf"
    path.write_text(gen.stdout)
    loader = other(generator)
    # unchanged: the placeholder server cannot be reached, so a waiter with -t gives up with 1, never a config error (2)
    r = subprocess.run(_argv(loader, "-c", str(path), "-t", "1s"), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, (r.returncode, r.stderr)
    # filled in as a site does (server, credentials, a peer): the other program receives with it
    a = creds_site.nodes["com.example.a"]
    text = "".join(line + "\n" for line in gen.stdout.splitlines()
                   if not line.startswith(("server:", "credentials:")))
    creds = next(line for line in a.path.read_text().splitlines() if line.startswith("credentials:"))
    text = f"server: {creds_site.url}\n{creds}\n" + text + f"com.example.b {creds_site.nodes['com.example.b'].key.public_b58} [*]\n"
    path.write_text(text)
    w = start_waiter(_argv(loader, "-c", str(path), "-S", creds_site.subject, "-t", "15s", "-o", "-d"),
                     tmp_path / "loader.err")
    creds_site.procs.append(w)  # killed at the end if still there
    assert creds_site.run("com.example.b", "-s", "hello", prog=generator).returncode == 0
    code, _, err = finish(w)
    assert code == 0, err


@pytest.mark.parametrize("extra, go_code, warning", [
    ("[ Extra ]\n", 1, "unknown section"),  # a header alone: skipped by both
    ("[ Peers ]\ncom.example.x\t{key} [ping]\n", 2, "remaphore refuses this line"),  # remaphore: bad format
])
def test_lenient_lines(creds_site, extra, go_code, warning):
    """What remaphore skips, tether skips with a warning; what remaphore refuses, tether reads and warns about."""
    path = creds_site.nodes["com.example.a"].path
    path.write_text(path.read_text() + extra.format(key=creds_site.nodes["com.example.b"].key.public_b58))
    assert creds_site.run("com.example.a", "-t", "500ms", prog="go").returncode == go_code
    r = creds_site.run("com.example.a", "-t", "500ms", prog="tether")
    assert r.returncode == 1 and warning in r.stderr, r.stderr


def _argv(prog: str, *args: str) -> list[str]:
    from tests.signal.conftest import BIN

    return ([GO] if prog == "go" else [str(BIN / "tether"), "signal"]) + list(args)


@pytest.mark.parametrize("sender", PROGS)
@pytest.mark.parametrize("forms", [
    (["-s=true", "-u=job1"], ["-t=10s", "-u=job1"]),
    (["--s", "--u", "job1"], ["--t", "10s", "--u", "job1"]),
    (["-s", "--u=job1", "-v=deploy"], ["-t", "10s", "-u", "job1", "-v=deploy,ping", "-o=false"]),
])
def test_go_flag_forms_mean_the_same_in_both(creds_site, sender, forms):
    send_args, wait_args = forms
    w = creds_site.start("com.example.b", *wait_args, prog=other(sender))
    r = creds_site.run("com.example.a", *send_args, prog=sender)
    assert r.returncode == 0, r.stderr
    assert finish(w)[0] == 0


@pytest.mark.parametrize("prog", PROGS)
def test_request_with_r_equals_true(creds_site, prog):
    w = creds_site.start("com.example.b", "-t", "15s", "-o", prog=other(prog))
    r = creds_site.run("com.example.a", "-r=true", "-t=10s", prog=prog)
    assert (r.returncode, r.stdout) == (0, "com.example.b,NO_DATA\n"), r.stderr
    finish(w)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _point_at(site: Site, name: str, *, server: str | None = None, creds: pathlib.Path | None = None) -> None:
    path = site.nodes[name].path
    lines = path.read_text().splitlines()
    if server:
        lines = [f"server: {server}" if x.startswith("server:") else x for x in lines]
    if creds:
        lines = [f"credentials: {creds}" if x.startswith("credentials:") else x for x in lines]
    path.write_text("\n".join(lines) + "\n")


def _timed(site: Site, *args: str, prog: str) -> tuple[int, float, str]:
    t0 = time.monotonic()
    r = site.run("com.example.a", *args, prog=prog, timeout=40)
    return r.returncode, time.monotonic() - t0, r.stderr


@pytest.mark.parametrize("prog", PROGS)
def test_exit_while_nats_is_unreachable(creds_site, prog):
    _point_at(creds_site, "com.example.a", server=f"nats://127.0.0.1:{_free_port()}")
    code, took, err = _timed(creds_site, "-t", "2s", prog=prog)
    assert code == 1 and took >= 1.9, (code, took, err)  # a waiter retries until -t, then 1
    code, took, err = _timed(creds_site, "-s", "x", prog=prog)
    assert code == 3, (code, err)  # a sender fails with 3 (remaphore after 10 s, tether within a few)


@pytest.mark.parametrize("prog", PROGS)
def test_exit_credentials_refused(creds_site, nats_operator, prog):
    from tether.signal import natsauth

    _, auth = nats_operator
    _point_at(creds_site, "com.example.a", creds=auth.user_creds("stranger", signer=natsauth.new_key("account")))
    code, took, err = _timed(creds_site, "-t", "2s", prog=prog)
    assert code == 1, (code, err)  # a waiter: 1 (remaphore spins until -t; tether says so at once)
    assert took >= 1.9 if prog == "go" else took < 1.9
    for args in (["-s", "x"], ["-r", "-t", "2s"]):
        code, took, err = _timed(creds_site, *args, prog=prog)
        assert code == 3 and took < 1.9, (args, code, err)  # a sender or requester: 3 at once


@pytest.mark.parametrize("prog", PROGS)
def test_exit_request_nobody_listening_and_no_known_receivers(creds_site, prog):
    code, took, err = _timed(creds_site, "-r", "-t", "2s", prog=prog)
    assert code == 1, (code, err)  # remaphore waits out -t; tether knows at once there are no responders
    assert took >= 1.9 if prog == "go" else took < 1.9
    code, _, err = _timed(creds_site, "-r", "-t", "2s", "-D", "org.nowhere.**", prog=prog)
    assert code == 3 and "no known receivers" in err, (code, err)


@pytest.mark.parametrize("sender", PROGS)
@pytest.mark.parametrize("pattern,wait_args,hit", [
    ("com.*.b", [], True),
    ("com.example.**", [], True),
    ("com.ex*le.b", [], True),
    ("com.example.a", [], False),
    ("org.other", ["-D", "org.other"], True),  # -D: the exact pattern, whatever this node is called
    ("org.other", ["-d"], True),
])
def test_destination_patterns_agree(creds_site, tmp_path, sender, pattern, wait_args, hit):
    receiver = other(sender)
    w = creds_site.start("com.example.b", "-t", "3s", "-o", *wait_args, *_env_script(tmp_path, receiver), prog=receiver)
    assert creds_site.run("com.example.a", "-s", "-D", pattern, "x", prog=sender).returncode == 0
    code, _, err = finish(w)
    assert code == (0 if hit else 1), err
    assert (tmp_path / f"{receiver}.out").exists() == hit


@pytest.mark.parametrize("sender", PROGS)
def test_long_uuid_and_sender_filter_agree(creds_site, tmp_path, sender):
    receiver = other(sender)
    a = creds_site.nodes["com.example.a"].key.public_b58
    uuid = "a-uuid-longer-than-twelve-bytes"  # sent as the first 12 bytes of its sha256
    w = creds_site.start("com.example.b", "-t", "10s", "-u", uuid, "-p", a, *_env_script(tmp_path, receiver),
                         prog=receiver)
    assert creds_site.run("com.example.a", "-s", "-u", uuid + "!", "wrong", prog=sender).returncode == 0
    assert creds_site.run("com.example.a", "-s", "-u", uuid, "right", prog=sender).returncode == 0
    assert finish(w)[0] == 0
    _seen(creds_site, tmp_path, receiver, "ping", "right", uuid)


@pytest.mark.parametrize("prog", PROGS)
def test_exit_sigterm_is_143(creds_site, prog):
    w = creds_site.start("com.example.b", "-t", "30s", prog=prog)
    w.send_signal(signal.SIGTERM)
    code, _, err = finish(w)
    assert _code(code) == 143, (code, err)


@pytest.mark.parametrize("prog", PROGS)
def test_negative_timeout_waits_forever(creds_site, prog):
    w = creds_site.start("com.example.b", "-t", "-1s", prog=prog)
    time.sleep(2.5)
    assert w.poll() is None, finish(w)


@pytest.mark.parametrize("prog", PROGS)
def test_exit_destination_with_a_comma(creds_site, prog):
    r = creds_site.run("com.example.a", "-s", "-D", "com.example.a,com.example.b", prog=prog)
    assert r.returncode == 3, (r.returncode, r.stderr)


_TOKENS = ["-o", "-o=false", "-o=maybe", "--o", "-r=true", "-s", "-d", "-t", "1s", "-t=1s", "-t=-1s", "-t=bad", "-u",
           "x", "-u=x", "--u=x", "--u", "-v=a,b", "-D", "com.*", "-", "--", "---o", "-=x", "-x", "-C", "-p", "false",
           "script", "-S", "all", "-t=1h2m3s4ms5us6ns", "-o=T", "-d=0"]


def _outcome(prog: str, argv: list[str]) -> tuple[int, str]:
    """(exit code, what happened): the flag error's text, or 'config' when parsing passed and the config was read."""
    r = subprocess.run(_argv(prog, "-c", "/nonexistent/remaphore.conf", *argv), capture_output=True, text=True,
                       timeout=30)
    flag_error = {"go": "\nUsage of ", "tether": "Try 'tether signal --help'"}[prog]
    if flag_error in r.stderr:
        line = r.stderr.splitlines()[0] if prog == "go" else r.stderr.rsplit("Error: ", 1)[1]
        return r.returncode, line.split(":")[0].strip().replace('"', "'")  # Go quotes with ", tether with '
    return r.returncode, "config" if "/nonexistent/remaphore.conf" in r.stderr else r.stdout[:12]


def test_go_flag_parsing_agrees_on_random_command_lines():
    """Random command lines of flags, values and stray words: both stop at the same place with the same error
    (or both read the config; -C prints one), remaphore's binary being the reference for Go's flag package."""
    import random

    rng = random.Random(20)
    lines = [rng.choices(_TOKENS, k=rng.randint(1, 5)) for _ in range(60)]
    differ = [(argv, _outcome("go", argv), _outcome("tether", argv)) for argv in lines]
    differ = [d for d in differ if d[1] != d[2]]
    assert not differ, "\n".join(map(str, differ))


def test_configs_written_by_signal_init_work_in_remaphore(tmp_path):
    """`tether signal init` against a hub's embedded NATS, `peer add`: remaphore's binary uses the files as they are,
    before and after `init --renew`."""
    from tests.hubproc import HubProcess
    from tests.signal.test_init_renew import signal_cli

    hub = HubProcess(tmp_path / "data").start()
    try:
        a, b = tmp_path / "a.conf", tmp_path / "b.conf"
        for conf, dest in ((a, "com.example.a"), (b, "com.example.b")):
            assert signal_cli(hub, "init", "-c", str(conf), "--destination", dest).returncode == 0
        assert signal_cli(None, "peer", "add", "-c", str(b), "--from", str(a)).returncode == 0
        assert signal_cli(None, "peer", "add", "-c", str(a), "--from", str(b)).returncode == 0
        for renewed in (False, True):
            if renewed:
                assert signal_cli(hub, "init", "-c", str(a), "--renew").returncode == 0
            for receiver, sender in (("go", "tether"), ("tether", "go")):
                w = start_waiter(_argv(receiver, "-c", str(b), "-t", "20s", "-u", "init_ok"), tmp_path / "b.err")
                try:
                    r = subprocess.run(_argv(sender, "-c", str(a), "-s", "-u", "init_ok"), capture_output=True,
                                       text=True, timeout=30)
                    assert r.returncode == 0, (renewed, sender, r.stderr)
                    code, _, err = finish(w, timeout=20)
                    assert code == 0, (renewed, receiver, err)
                finally:
                    if w.poll() is None:
                        w.kill()
                        w.wait()
    finally:
        hub.stop()
