"""End to end: real nats-server, real `tether signal` and `remaphore` processes."""

from __future__ import annotations

import time

import pytest

from tether.signal import core
from tests.signal.conftest import Site, finish


def three_nodes(site: Site) -> None:
    site.node("com.crypto.us.left", verbs=["ping", "deploy", "status"])
    site.node("com.crypto.us.right")
    site.node("com.crypto.eu.one")
    site.trust("com.crypto.us.right", "com.crypto.us.left", "[ping, status]")
    site.trust("com.crypto.eu.one", "com.crypto.us.left", "[*]")
    for r in ("com.crypto.us.right", "com.crypto.eu.one"):
        site.trust("com.crypto.us.left", r, "[ping]")
    site.write()


def test_readme_upload_example_with_both_commands(site):
    three_nodes(site)
    a = site.start("com.crypto.us.right", "-t", "10s", "-u", "upload_done")
    b = site.start("com.crypto.eu.one", "-t", "10s", "-u", "upload_done", prog="remaphore")
    other = site.start("com.crypto.eu.one", "-t", "10s", "-u", "something_else")
    r = site.run("com.crypto.us.left", "-s", "-u", "upload_done")
    assert r.returncode == 0, r.stderr
    assert finish(a)[0] == 0
    assert finish(b)[0] == 0
    other.terminate()
    assert other.wait(5) != 0


def test_timeout_exits_1(site):
    three_nodes(site)
    t0 = time.monotonic()
    r = site.run("com.crypto.us.right", "-t", "300ms", "-o")
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 5


def test_verbs_acl(site):
    three_nodes(site)
    right = site.start("com.crypto.us.right", "-t", "4s", "-o")
    eu = site.start("com.crypto.eu.one", "-t", "10s", "-o")
    r = site.run("com.crypto.us.left", "-s", "-v", "deploy", "go")
    assert r.returncode == 0, r.stderr
    assert finish(eu)[0] == 0  # [*]
    code, _, err = finish(right)
    assert code == 1 and "verb not allowed" in err
    # a local identity may only send its own verbs
    r = site.run("com.crypto.us.left", "-s", "-v", "reboot")
    assert r.returncode == 3 and "no private key" in r.stderr


def test_destination_patterns(site):
    three_nodes(site)
    right = site.start("com.crypto.us.right", "-t", "10s", "-o")
    eu = site.start("com.crypto.eu.one", "-t", "4s", "-o")
    d = site.start("com.crypto.eu.one", "-t", "10s", "-o", "-d")
    exact = site.start("com.crypto.eu.one", "-t", "10s", "-o", "-D", "com.crypto.us.*")
    assert site.run("com.crypto.us.left", "-s", "-D", "com.crypto.us.*").returncode == 0
    assert finish(right)[0] == 0
    assert finish(eu)[0] == 1
    assert finish(d)[0] == 0
    assert finish(exact)[0] == 0


def test_script_env_and_args(site, tmp_path):
    three_nodes(site)
    script = tmp_path / "handler.sh"
    out = tmp_path / "env.txt"
    script.write_text('#!/bin/sh\nenv | grep ^REMAPHORE_ | sort > "$OUTFILE"\necho "args=$1|$2|$3"\n')
    script.chmod(0o755)
    p = site.start("com.crypto.eu.one", "-t", "10s", "-o", str(script), "extra", env={"OUTFILE": str(out), "REMAPHORE_MSG": "stale"})
    t0 = time.time()
    r = site.run("com.crypto.us.left", "-s", "-u", "job-1", "-v", "deploy", "-D", "com.crypto.**", "hello;", "$(world)")
    assert r.returncode == 0, r.stderr
    assert finish(p)[0] == 0
    env = dict(line.split("=", 1) for line in out.read_text().splitlines())
    left = site.nodes["com.crypto.us.left"]
    assert env["REMAPHORE_SENDER"] == left.key.public_b58
    assert env["REMAPHORE_VERB"] == "deploy"
    assert env["REMAPHORE_MSG"] == "hello; $(world)"
    assert env["REMAPHORE_UUID"] == b"job-1".hex()
    assert env["REMAPHORE_DESTMATCH"] == "com.crypto.eu.one"
    assert abs(int(env["REMAPHORE_TIME"]) - t0) < 10


def test_request_response(site, tmp_path):
    three_nodes(site)
    multi = tmp_path / "multi.sh"
    multi.write_text('#!/bin/sh\necho "line one"\necho "line two $1"\nexit 3\n')
    multi.chmod(0o755)
    a = site.start("com.crypto.us.right", "-t", "10s", "-o")  # no script: NO_DATA
    b = site.start("com.crypto.eu.one", "-t", "10s", "-o", str(multi))
    t0 = time.monotonic()
    r = site.run("com.crypto.us.left", "-r", "-t", "8s", "-v", "ping", "-D", "com.crypto.**", "how are you")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert elapsed < 6, "returns as soon as every expected responder answered"
    out = r.stdout
    assert "com.crypto.us.right,NO_DATA\n" in out
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("--> "))
    sep = lines[start][4:]
    assert len(sep) == 32 and int(sep, 16) >= 0
    assert lines[start + 1 : start + 4] == ["com.crypto.eu.one,3,line one", "line two ping", f"--< {sep}"]
    assert finish(a)[0] == 0 and finish(b)[0] == 0


def test_request_partial_then_timeout(site):
    three_nodes(site)
    a = site.start("com.crypto.us.right", "-t", "10s", "-o")
    r = site.run("com.crypto.us.left", "-r", "-t", "1s", "-D", "com.crypto.**")
    assert r.returncode == 0 and r.stdout == "com.crypto.us.right,NO_DATA\n", r.stderr
    finish(a)


def test_request_no_known_receivers_and_no_responders(site):
    three_nodes(site)
    r = site.run("com.crypto.us.left", "-r", "-t", "5s", "-D", "org.nowhere.**")
    assert r.returncode == 3 and "no known receivers" in r.stderr
    t0 = time.monotonic()
    r = site.run("com.crypto.us.left", "-r", "-t", "20s")
    assert r.returncode == 1 and "no responders" in r.stderr  # remaphore's code (it waits out -t), at once
    assert time.monotonic() - t0 < 5


def test_replay_and_garbage_refused_receiver_survives(site, tmp_path):
    three_nodes(site)
    script = tmp_path / "count.sh"
    hits = tmp_path / "hits"
    script.write_text(f'#!/bin/sh\necho "$2" >> {hits}\n')
    script.chmod(0o755)
    p = site.start("com.crypto.eu.one", "-t", "4s", str(script))
    left = site.nodes["com.crypto.us.left"].key
    good = core.encode(left, destination="**", verb="ping", payload="once", time_ns=time.time_ns(), uuid=b"x" * 12)
    old = core.encode(left, destination="**", verb="ping", payload="old", time_ns=time.time_ns() - 60 * 10**9, uuid=b"x" * 12)
    stranger = core.encode(core.SigningKey.from_seed(b"\x99" * 32), destination="**", verb="ping", payload="s",
                           time_ns=time.time_ns(), uuid=b"x" * 12)
    site.publish_raw([b"", b"garbage", b"a,b,c,d,e,f,g,h", good.replace(b"once", b"ONCE"), old, stranger, good, good])
    code, _, err = finish(p)
    assert code == 0, err
    assert hits.read_text() == "once\n"
    for words in ("malformed", "bad signature", "clock skew", "unknown peer", "replay"):
        assert words in err, words
    assert "Traceback" not in err


def test_once_means_exactly_one_handled_and_handlers_run_concurrently(site, tmp_path):
    three_nodes(site)
    script = tmp_path / "slow.sh"
    hits = tmp_path / "hits"
    # Each handler logs its start and end; it sleeps long enough that handlers
    # run one after another could not overlap, however slowly the senders start.
    script.write_text(f'#!/bin/sh\necho "$2 start $(date +%s.%N)" >> {hits}\nsleep 2\n'
                      f'echo "$2 end $(date +%s.%N)" >> {hits}\n')
    script.chmod(0o755)
    once = site.start("com.crypto.eu.one", "-t", "15s", "-o", str(script))
    many = site.start("com.crypto.eu.one", "-t", "12s", "-v", "status", str(script))
    for i in range(3):
        assert site.run("com.crypto.us.left", "-s", str(i)).returncode == 0
    for i in range(4):
        assert site.run("com.crypto.us.left", "-s", "-v", "status", f"s{i}").returncode == 0
    assert finish(once, timeout=30)[0] == 0
    assert finish(many, timeout=30)[0] == 0
    events = [line.split() for line in hits.read_text().splitlines()]
    assert len([e for e in events if not e[0].startswith("s") and e[1] == "start"]) == 1  # -o: exactly one
    spans = {e[0]: [0.0, 0.0] for e in events if e[0].startswith("s")}
    for name, what, when in (e for e in events if e[0].startswith("s")):
        spans[name][what == "end"] = float(when)
    assert sorted(spans) == ["s0", "s1", "s2", "s3"] and all(b > a > 0 for a, b in spans.values())
    # Handlers ran side by side: some two of them were running at the same time.
    iv = sorted(spans.values())
    assert any(iv[k + 1][0] < iv[k][1] for k in range(len(iv) - 1))


def test_usage_and_config_errors(site, tmp_path):
    three_nodes(site)
    for args in (["-s", "-r"], ["-d", "-D", "x"], ["-p", "0OIl"], ["-t", "soon"]):
        r = site.run("com.crypto.us.left", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr
    r = site.run("com.crypto.us.left", "-s", "-D", "a,b")
    assert r.returncode == 3 and "comma" in r.stderr  # remaphore's code (it fails to encode the message)
    bad = tmp_path / "bad.conf"
    bad.write_text("server: nats://127.0.0.1:1\nallow_skew: soon\n")
    r = __import__("subprocess").run([*site.argv("com.crypto.us.left")[:2], "-c", str(bad), "-s"], capture_output=True, text=True)
    assert r.returncode == 2 and "bad.conf:2" in r.stderr


def test_unreachable_server_exit_3(tmp_path):
    from tests.services.nats import free_port

    s = Site(tmp_path, f"nats://127.0.0.1:{free_port()}")
    s.node("a")
    s.write()
    t0 = time.monotonic()
    r = s.run("a", "-s")
    assert r.returncode == 3 and "cannot connect" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("auth", ["token", "user"])
def test_auth_server(tmp_path, auth):
    from tests.services.nats import NatsServer

    kw = {"token": "s3cret"} if auth == "token" else {"user": "node", "password": "pw"}
    with NatsServer(tmp_path / "srv", jetstream=False, **kw) as srv:
        good = "token: s3cret" if auth == "token" else "user: node\npassword: pw"
        s = Site(tmp_path, srv.url, extra=good)
        s.node("a")
        s.node("b")
        s.trust("b", "a")
        s.write()
        try:
            p = s.start("b", "-t", "10s", "-o")
            assert s.run("a", "-s").returncode == 0
            assert finish(p)[0] == 0
        finally:
            s.stop()
        s.extra = "token: wrong" if auth == "token" else "user: node\npassword: nope"
        s.write()
        r = s.run("a", "-s")
        assert r.returncode == 3 and "refused our credentials" in r.stderr, r.stderr  # remaphore's code for a sender


def test_durable_delivery_reaches_an_offline_node_exactly_once(site, tmp_path):
    three_nodes(site)
    script = tmp_path / "h.sh"
    hits = tmp_path / "hits"
    script.write_text(f'#!/bin/sh\necho "$2" >> {hits}\n')
    script.chmod(0o755)
    # the receiver's durable consumer exists, then the node goes offline
    r = site.run("com.crypto.eu.one", "--durable", "-t", "1s", str(script))
    assert r.returncode == 1, r.stderr
    for word in ("one", "two"):
        r = site.run("com.crypto.us.left", "-s", "--durable", word)
        assert r.returncode == 0, r.stderr
    # back online: both stored messages arrive
    r = site.run("com.crypto.eu.one", "--durable", "-t", "5s", str(script))
    assert r.returncode == 0, r.stderr
    assert hits.read_text().splitlines() == ["one", "two"]
    # and never again
    r = site.run("com.crypto.eu.one", "--durable", "-t", "500ms", str(script))
    assert r.returncode == 1, r.stderr
    assert hits.read_text().splitlines() == ["one", "two"]


def test_durable_once_leaves_the_rest_and_plain_nodes_still_hear_durable_sends(site):
    three_nodes(site)
    assert site.run("com.crypto.eu.one", "--durable", "-t", "200ms").returncode == 1
    plain = site.start("com.crypto.us.right", "-t", "10s", "-o")
    for word in ("a", "b"):
        assert site.run("com.crypto.us.left", "-s", "--durable", word).returncode == 0
    assert finish(plain)[0] == 0
    assert site.run("com.crypto.eu.one", "--durable", "-o", "-t", "3s").returncode == 0
    assert site.run("com.crypto.eu.one", "--durable", "-o", "-t", "3s").returncode == 0
    assert site.run("com.crypto.eu.one", "--durable", "-o", "-t", "300ms").returncode == 1
