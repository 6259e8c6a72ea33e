"""`tether log remote|push|pull|sync` against real hub processes (SQLite and PostgreSQL):
the seed README's scenario over HTTP, conflicts, grants, resumability."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tether.cli import main
from tether.problems import EXIT_AUTH, EXIT_NO, EXIT_USAGE


@pytest.fixture
def tether(tmp_path):
    """``tether(user_dir, *args, token=...)``: run `tether log ...` with that user's own log."""
    runner = CliRunner()

    def run(who: str, *args, token: str | None = None, author: str | None = None):
        env = {"TETHER_LOG_DB": str(tmp_path / who / "log.db"), "XDG_CONFIG_HOME": str(tmp_path / who / "cfg"),
               "TETHER_TOKEN": token, "TETHER_LOG_AUTHOR": author, "TETHER_HUB": None}
        return runner.invoke(main, ["log", *args], env=env)

    return run


def listing(tether, who):
    r = tether(who, "list", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def hub_count(hub, space):
    with hub.admin() as c:
        return c.get(f"/api/v1/log/{space}").json()["records"]


def test_seed_scenario_over_http(hub, tether):
    """user3 is refused; user1 and user2 push and pull each other's records."""
    space = hub.make_space()
    u1, t1 = hub.make_user(grants={space: "write"})
    u2, t2 = hub.make_user(grants={space: "write"})
    u3, t3 = hub.make_user()
    url = f"{hub.url}/{space}"
    for who in ("user1", "user2", "user3"):
        assert tether(who, "remote", "add", "origin", url).exit_code == 0

    # user3: no grant on the space -> refused, exit 4, nothing written
    assert tether("user3", "add", "from user3", author=u3).exit_code == 0
    for verb in ("push", "pull", "sync"):
        r = tether("user3", verb, token=t3)
        assert r.exit_code == EXIT_AUTH, r.output
        assert "tether: error:" in r.output and space in r.output and "Traceback" not in r.output
    assert hub_count(hub, space) == 0

    for i in range(3):
        assert tether("user1", "add", f"user1 message {i}", author=u1).exit_code == 0
    r = tether("user1", "push", token=t1)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "pushed 3 records to origin"

    assert tether("user2", "add", "user2 says hi", author=u2).exit_code == 0
    r = tether("user2", "sync", "--json", token=t2)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["pushed"], out["pulled"]) == (1, 3) and out["rounds"] >= 1 and out["bytes"] > 0

    r = tether("user1", "pull", token=t1)
    assert r.stdout.strip() == "pulled 1 record from origin"  # a pull pushes nothing: it says nothing of pushing
    one, two = listing(tether, "user1"), listing(tether, "user2")
    assert one == two and len(one) == 4
    assert {x["author"] for x in one} == {u1, u2}
    assert hub_count(hub, space) == 4

    # idempotent: nothing moves any more
    r = tether("user1", "sync", "--json", token=t1)
    assert json.loads(r.stdout)["pushed"] == json.loads(r.stdout)["pulled"] == 0

    # user1 cannot push a record authored as user2
    assert tether("user1", "add", "forged", author=u2).exit_code == 0
    r = tether("user1", "push", token=t1)
    assert r.exit_code == EXIT_AUTH and "authored by someone other" in r.output
    assert hub_count(hub, space) == 4


def test_read_only_push_refused_pull_allowed(hub, tether):
    space = hub.make_space()
    w, tw = hub.make_user(grants={space: "write"})
    r_, tr = hub.make_user(grants={space: "read"})
    for who in ("w", "r"):
        tether(who, "remote", "add", "origin", f"{hub.url}/{space}")
    tether("w", "add", "by the writer", author=w)
    assert tether("w", "push", token=tw).exit_code == 0
    tether("r", "add", "by the reader", author=r_)
    r = tether("r", "push", token=tr)
    assert r.exit_code == EXIT_AUTH, r.output
    assert hub_count(hub, space) == 1
    r = tether("r", "pull", "--json", token=tr)
    assert r.exit_code == 0 and json.loads(r.stdout)["pulled"] == 1


def test_sync_finds_same_id_different_content(hub, tether, tmp_path):
    """Both sides hold one id with different bodies: reconciliation (which covers each
    record's content tag) reports it as a conflict, exit 1; neither copy changes, and
    every other record still moves both ways."""
    from dataclasses import asdict, replace

    from tether.log.store import LogStore

    space = hub.make_space()
    u, t = hub.make_user(grants={space: "write"})
    assert tether("me", "remote", "add", "origin", f"{hub.url}/{space}").exit_code == 0
    with LogStore(tmp_path / "me" / "log.db") as store:
        mine = store.add("mine", u)
        ours = store.add("the local copy", u)
    theirs = replace(ours, body="the hub's copy")
    with hub.client(t) as c:
        r = c.post(f"/api/v1/log/{space}/records", json=[asdict(theirs)])
        assert r.status_code == 200, r.text
    assert tether("other", "remote", "add", "origin", f"{hub.url}/{space}").exit_code == 0
    assert tether("other", "add", "from elsewhere", author=u).exit_code == 0
    assert tether("other", "push", token=t).exit_code == 0  # the hub now holds 2 records

    r = tether("me", "sync", "--json", token=t)
    assert r.exit_code == EXIT_NO, r.output
    out = json.loads(r.stdout)
    assert out["conflicts"] == [ours.id] and (out["pushed"], out["pulled"]) == (1, 1)
    assert ours.id in r.stderr and "different content" in r.stderr
    assert hub_count(hub, space) == 3
    bodies = {x["id"]: x["body"] for x in listing(tether, "me")}
    assert bodies[ours.id] == "the local copy" and bodies[mine.id] == "mine" and len(bodies) == 3
    with hub.admin() as c:
        got = c.post(f"/api/v1/log/{space}/records/get", json={"ids": [ours.id]}).json()["records"]
    assert got[0]["body"] == "the hub's copy"
    r = tether("me", "sync", token=t)  # still there next time, still nothing overwritten
    assert r.exit_code == EXIT_NO and "nothing to pull from origin; nothing to push to origin" in r.stdout


def test_conflict_detected(hub, tmp_path, monkeypatch):
    """A pushed record whose id the hub already holds with other content is refused (409,
    the ids listed) and nothing of the batch is written. Reconciliation catches known
    conflicts; this one lands between our reconcile and our push."""
    from dataclasses import asdict, replace

    from tether.hubclient.errors import HubError
    from tether.log import client as lc
    from tether.log.client import open_remote, parse_remote_url, sync
    from tether.log.store import LogStore

    space = hub.make_space()
    u, t = hub.make_user(grants={space: "write"})
    store = LogStore(tmp_path / "b.db")
    tampered = store.add("tampered", u)
    store.add("an innocent new record", u)
    original = replace(tampered, body="original")
    real_push = lc.HttpRemote.push

    def racing_push(self, records):
        with hub.client(t) as c:
            assert c.post(f"/api/v1/log/{space}/records", json=[asdict(original)]).status_code == 200
        return real_push(self, records)

    monkeypatch.setattr(lc.HttpRemote, "push", racing_push)
    with open_remote(parse_remote_url(f"{hub.url}/{space}"), t) as rem, pytest.raises(HubError) as err:
        sync(store, rem)
    assert err.value.status == 409 and err.value.problem["ids"] == [tampered.id]
    assert hub_count(hub, space) == 1
    with hub.admin() as c:
        got = c.post(f"/api/v1/log/{space}/records/get", json={"ids": [tampered.id]}).json()["records"]
    assert got[0]["body"] == "original"


def test_interrupted_sync_resumes(hub, tether, tmp_path, monkeypatch):
    """Kill a sync after its first push batch: re-running loses nothing, duplicates nothing."""
    from tether.log import client as lc
    from tether.log.client import open_remote, parse_remote_url, sync
    from tether.log.store import LogStore

    space = hub.make_space()
    u, t = hub.make_user(grants={space: "write"})
    store = LogStore(tmp_path / "x.db")
    for i in range(25):
        store.add(f"record {i}", u)
    monkeypatch.setattr(lc, "PUSH_BATCH_RECORDS", 10)

    class Interrupted(Exception):
        pass

    def die(direction, n):
        raise Interrupted

    remote = parse_remote_url(f"{hub.url}/{space}")
    with open_remote(remote, t) as rem, pytest.raises(Interrupted):
        sync(store, rem, on_batch=die)
    assert hub_count(hub, space) == 10
    with open_remote(remote, t) as rem:
        res = sync(store, rem)
    assert (res.pushed, res.pulled) == (15, 0)
    assert hub_count(hub, space) == 25
    with open_remote(remote, t) as rem:
        res = sync(store, rem)
    assert (res.pushed, res.pulled) == (0, 0)
    # and a second store that pulls half, is interrupted, pulls again
    other = LogStore(tmp_path / "y.db")
    monkeypatch.setattr(lc, "PULL_BATCH_IDS", 10)
    with open_remote(remote, t) as rem, pytest.raises(Interrupted):
        sync(other, rem, on_batch=die)
    assert len(other) == 10
    with open_remote(remote, t) as rem:
        assert sync(other, rem).pulled == 15
    assert other.list() == store.list()


@pytest.mark.parametrize("url,ok", [
    ("https://hub.example.org/builds", True),
    ("https://hub.example.org/prefix/builds", True),
    ("http://127.0.0.1:8580/test", True),
    ("http://localhost/test", True),
    ("ssh://server@hub.example.org:2222/builds", True),
    ("http://hub.example.org/builds", False),  # plain http off loopback
    ("https://hub.example.org/", False),  # no space
    ("https://tok:en@hub.example.org/s", False),
    ("ftp://hub.example.org/s", False),
    ("ssh://u@h/a/b", False),
], ids=lambda v: str(v))
def test_remote_urls(tether, url, ok):
    r = tether("me", "remote", "add", "origin", url)
    assert r.exit_code == (0 if ok else EXIT_USAGE), r.output
    listed = json.loads(tether("me", "remote", "list", "--json").stdout)
    assert listed == ([{"name": "origin", "url": url}] if ok else [])


def test_remote_commands_and_ssh_failure(tether, monkeypatch):
    assert tether("me", "remote", "add", "origin", "ssh://server@127.0.0.1:2222/s").exit_code == 0
    r = tether("me", "remote", "add", "origin", "https://x.example/s")
    assert r.exit_code == EXIT_NO and "already exists" in r.output
    monkeypatch.setenv("TETHER_SSH", "false")  # an "ssh" that fails at once (real SSH: tests/log/test_log_ssh.py)
    r = tether("me", "push")
    assert r.exit_code == 3 and "ssh to server@127.0.0.1:2222 failed" in r.output
    r = tether("me", "pull", "nope")
    assert r.exit_code == EXIT_USAGE and "no remote named" in r.output
    assert tether("me", "remote", "rm", "origin").exit_code == 0
    assert tether("me", "remote", "rm", "origin").exit_code == EXIT_NO
    assert "no remotes" in tether("me", "remote", "list").output


def test_large_pulls_come_in_bounded_replies(hub, tmp_path):
    """A pull of many large records: the hub stops each reply near 4 MiB and lists the
    rest under "more"; sync asks again until it has them all."""
    import uuid
    from dataclasses import asdict

    from tether.log.client import open_remote, parse_remote_url, sync
    from tether.log.service import PULL_REPLY_BYTES
    from tether.log.store import LogStore, make_record

    space = hub.make_space()
    u, t = hub.make_user(grants={space: "write"})
    big = [make_record(f"{k:04d}" + "\x01" * (60 * 1024), u) for k in range(100)]  # escaped: ~360 KiB each
    with hub.client(t) as c:
        for k in range(0, 100, 2):
            assert c.post(f"/api/v1/log/{space}/records", json=[asdict(r) for r in big[k : k + 2]]).status_code == 200
        ids = [r.id for r in big]
        got = c.post(f"/api/v1/log/{space}/records/get", json={"ids": ids}).json()
    sent = [r["id"] for r in got["records"]]
    assert 0 < len(sent) < 100 and got["missing"] == []
    assert sorted(sent + got["more"]) == sorted(ids)
    assert len(json.dumps(got["records"], ensure_ascii=False).encode()) <= PULL_REPLY_BYTES
    with LogStore(tmp_path / "fresh.db") as store, open_remote(parse_remote_url(f"{hub.url}/{space}"), t) as rem:
        res = sync(store, rem)
        assert (res.pulled, res.pushed) == (100, 0)
        assert {uuid.UUID(r.id) for r in store.list()} == {uuid.UUID(i) for i in ids}


def test_log_add_then_push_after_login_uses_the_hub_user(hub, tether, tmp_path):
    """The natural first try: `tether login`, `tether log add`, `tether log push`. The record's
    author is the hub user the login saved, not the OS user, so the push is accepted."""
    space = hub.make_space()
    u, t = hub.make_user(grants={space: "write"})
    runner = CliRunner()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "me" / "cfg"), "TETHER_HUB": None, "TETHER_TOKEN": None}
    r = runner.invoke(main, ["login", hub.url, "--token", t], env=env)
    assert r.exit_code == 0, r.output
    assert tether("me", "remote", "add", "origin", f"{hub.url}/{space}").exit_code == 0
    assert tether("me", "add", "my first record").exit_code == 0
    assert [x["author"] for x in listing(tether, "me")] == [u]
    r = tether("me", "push")  # the token too comes from the login
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "pushed 1 record to origin"
    assert hub_count(hub, space) == 1


def test_foreign_author_refusal_says_how_to_fix_it(hub, tether):
    space = hub.make_space()
    u, t = hub.make_user(grants={space: "write"})
    assert tether("me", "remote", "add", "origin", f"{hub.url}/{space}").exit_code == 0
    assert tether("me", "add", "written as the OS user", author="someone-else").exit_code == 0
    r = tether("me", "push", token=t)
    assert r.exit_code == EXIT_AUTH, r.output
    assert "'someone-else'" in r.stderr and f"--author {u}" in r.stderr and "tether login" in r.stderr
    assert hub_count(hub, space) == 0
