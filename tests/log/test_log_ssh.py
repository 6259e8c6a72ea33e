"""The seed README's scenario over a REAL OpenSSH server.

One server account (``tetherhub``) runs the hub and is reached over SSH; its
``authorized_keys`` is written by ``tether key authorized-keys`` from the hub's
database, so every key logs into that one account and the key's forced command
decides the tether user. user1 and user2 (write grants on ``shared``) push and
pull each other's records; user3 (no grant) is refused before any data moves.

The account cannot read /root (where this venv's interpreter lives), so the
forced command is a small wrapper running Debian's python3 (same 3.11 ABI) on
this checkout and the venv's site-packages; it also points ssh-serve at the
hub's data dir (what /etc/tether/hub.toml does in a deployment) and shortens
the idle timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

import tether
from tests.hubproc import HubProcess, wait_healthy
from tests.services.sshd import (
    SshServer,
    _make_traversable,
    make_key,
    sshd_available,
    temporary_user,
)

ACCOUNT = "tetherhub"
SYSTEM_PYTHON = "/usr/bin/python3"
IDLE = 3


def _system_python_ok() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    out = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    return out.stdout.strip() == str(tuple(sys.version_info[:2]))


class AccountHub(HubProcess):
    """A hub process running as the server account (as a deployment would)."""

    def __init__(self, data_dir: Path, account: str, wrapper: Path):
        super().__init__(data_dir)
        self.account = account
        self.argv = [str(wrapper), "hub", "--data", str(data_dir), "--listen", f"127.0.0.1:{self.port}"]

    def start(self, timeout: float = 30) -> AccountHub:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     user=self.account, group=self.account, extra_groups=[],
                                     cwd=str(self.data_dir.parent))
        if wait_healthy(self.proc, self.url, timeout, log=self.log_text):
            return self
        self.stop()
        raise RuntimeError(f"hub did not come up:\n{self.log_text()}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if not sshd_available():
        pytest.fail("/usr/sbin/sshd not found: run `make test`, which installs openssh-server")
    if os.geteuid() != 0:
        pytest.skip("the SSH scenario needs root (sshd, a server account)")
    if not _system_python_ok():
        pytest.skip(f"{SYSTEM_PYTHON} is not Python {sys.version_info[0]}.{sys.version_info[1]}")
    with ssh_world(tmp_path_factory.mktemp("sshlog")) as w:
        yield w


@contextlib.contextmanager
def ssh_world(base: Path, idle: int = IDLE):
    """The server account, its hub, a real sshd and four users with keys (user1 and
    user2 write, user4 read, user3 nothing on ``shared``), all under ``base``; also
    used by ``benchmarks/log_sync.py``. Stops the hub and sshd on exit."""
    _make_traversable(base)
    os.chmod(base, 0o755)
    with temporary_user(ACCOUNT) as account:  # removed again when the world ends
        yield from _ssh_world(base, account, idle)


def _ssh_world(base: Path, account: str, idle: int):
    pw = pwd.getpwnam(account)

    home = base / "hub"  # the account's own directory: hub data, its authorized_keys
    home.mkdir()
    os.chown(home, pw.pw_uid, pw.pw_gid)
    data = home / "data"
    src = Path(tether.__file__).resolve().parents[1]
    site = sysconfig.get_paths()["purelib"]
    wrapper = base / "bin" / "tether"
    wrapper.parent.mkdir()
    os.chmod(wrapper.parent, 0o755)
    wrapper.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(f'{src}:{site}')}\n"
        f"TETHER_DATA_DIR={shlex.quote(str(data))}\n"
        f"TETHER_SSH_IDLE_TIMEOUT={idle}\n"
        "export PYTHONPATH TETHER_DATA_DIR TETHER_SSH_IDLE_TIMEOUT\n"
        f"exec {SYSTEM_PYTHON} -m tether \"$@\"\n"
    )
    os.chmod(wrapper, 0o755)

    hub = AccountHub(data, account, wrapper).start()
    sshd = SshServer(base / "sshd").start()
    try:
        with hub.admin() as c:
            c.post("/api/v1/spaces", json={"name": "shared"}).raise_for_status()
            for u in ("user1", "user2", "user3", "user4"):
                c.post("/api/v1/users", json={"name": u}).raise_for_status()
            c.put("/api/v1/spaces/shared/grants/user4", json={"level": "read"}).raise_for_status()
            for u in ("user1", "user2"):
                c.put(f"/api/v1/spaces/shared/grants/{u}", json={"level": "write"}).raise_for_status()
        keys = {}
        env = _env()
        for u in ("user1", "user2", "user3", "user4"):
            keys[u] = make_key(base / "clients" / u / "id_ed25519", comment=f"{u}@laptop")
            added = subprocess.run(
                [sys.executable, "-m", "tether", "key", "add", u, str(keys[u].with_suffix(".pub")),
                 "--hub", hub.url, "--token", hub.admin_token],
                capture_output=True, text=True, env=env, timeout=60)
            assert added.returncode == 0, added.stderr
        # the operator, as the server account, writes its authorized_keys from the hub's database
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        os.chown(ssh_dir, pw.pw_uid, pw.pw_gid)
        out = subprocess.run(
            [str(wrapper), "key", "authorized-keys", "--command", str(wrapper), "--data", str(data),
             "--output", str(ssh_dir / "authorized_keys")],
            capture_output=True, text=True, user=account, group=account, extra_groups=[], cwd=str(home),
            timeout=60)
        assert out.returncode == 0, out.stderr
        (sshd.keys_dir / account).symlink_to(ssh_dir / "authorized_keys")
        yield {"base": base, "hub": hub, "sshd": sshd, "keys": keys, "account": account, "wrapper": wrapper,
               "data": data, "authorized_keys": ssh_dir / "authorized_keys"}
    finally:
        sshd.stop()
        hub.stop()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(extra)
    return env


def _ssh_prefix(world, user: str) -> list[str]:
    opts = world["sshd"].ssh_options(world["keys"][user])
    i = opts.index("-p")
    return ["ssh", *opts[:i], *opts[i + 2:]]


def tether_as(world, user: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    db = world["base"] / "clients" / user / "log.db"
    env = _env(TETHER_SSH=shlex.join(_ssh_prefix(world, user)), TETHER_LOG_DB=str(db), TETHER_LOG_AUTHOR=user)
    return subprocess.run([sys.executable, "-m", "tether", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def remote_url(world) -> str:
    return f"ssh://{world['account']}@127.0.0.1:{world['sshd'].port}/shared"


def hub_count(world) -> int:
    with world["hub"].admin() as c:
        r = c.get("/api/v1/log/shared")
        r.raise_for_status()
        return r.json()["records"]


def test_authorized_keys_file(world):
    path = world["authorized_keys"]
    assert path.stat().st_mode & 0o777 == 0o600
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    for u, line in zip(("user1", "user2", "user3", "user4"), lines):
        assert line.startswith(f'restrict,command="{world["wrapper"]} ssh-serve {u}" ssh-ed25519 ')
        assert f" tether:{u}:SHA256:" in line
    ok = subprocess.run([sys.executable, "-m", "tether", "key", "check", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_seed_scenario(world):
    url = remote_url(world)
    for u in ("user1", "user2", "user3"):
        r = tether_as(world, u, "log", "remote", "add", "origin", url)
        assert r.returncode == 0, r.stderr
        r = tether_as(world, u, "log", "add", f"msg from {u}")
        assert r.returncode == 0, r.stderr

    # user3 has no grant on `shared`: refused with a clear message, nothing written
    before = hub_count(world)
    for verb in ("push", "pull", "sync"):
        r = tether_as(world, "user3", "log", verb)
        assert r.returncode == 4, (verb, r.returncode, r.stdout, r.stderr)
        assert "user3" in r.stderr and "shared" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert hub_count(world) == before

    r = tether_as(world, "user1", "log", "push", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pushed"] == 1
    r = tether_as(world, "user2", "log", "push")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "pushed 1 record to origin"
    r = tether_as(world, "user1", "log", "pull", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pulled"] == 1
    r = tether_as(world, "user2", "log", "sync", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["method"] in ("iblt", "list")  # protocol 3; two records: the hub's list is the smaller
    assert out | {"rounds": 0, "bytes": 0} == {"pushed": 0, "pulled": 1, "rounds": 0, "bytes": 0, "method": out["method"],
                                               "conflicts": []}

    lists = {}
    for u in ("user1", "user2"):
        r = tether_as(world, u, "log", "list", "--json")
        lists[u] = sorted((x["id"], x["author"], x["body"]) for x in json.loads(r.stdout))
    assert lists["user1"] == lists["user2"]
    assert sorted(b for _, _, b in lists["user1"]) == ["msg from user1", "msg from user2"]
    assert hub_count(world) == before + 2

    again = tether_as(world, "user1", "log", "sync", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["pushed"] == 0 and json.loads(again.stdout)["pulled"] == 0

    # What happened over SSH is in the hub's audit trail, like what happens over HTTP.
    with world["hub"].admin() as c:
        refused = c.get("/api/v1/audit", params={"user": "user3"}).json()["records"]
        pushed = c.get("/api/v1/audit", params={"user": "user1", "action": "log.write"}).json()["records"]
    assert refused and all(r["outcome"] == "denied" and "via ssh" in r["resource"] for r in refused)
    assert any(r["outcome"] == "allowed" and r["reason"] == "1 record(s) pushed" for r in pushed)


def _raw_ssh(world, user: str, *command: str, data: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess:
    sshd = world["sshd"]
    argv = [*sshd.ssh_argv(world["account"], world["keys"][user]), *command]
    return subprocess.run(argv, input=data, capture_output=True, timeout=timeout)


def test_shell_login_gets_usage_not_a_shell(world):
    # no command: the forced command runs without SSH_ORIGINAL_COMMAND; usage, exit 2, no hang
    r = _raw_ssh(world, "user1")
    assert r.returncode == 2
    assert b"no shell here" in r.stderr
    r = _raw_ssh(world, "user1", "cat", "/etc/passwd")
    assert r.returncode == 2 and b"unknown command" in r.stderr
    assert b"root:" not in r.stdout


def test_bad_frames_idle_and_oversize(world):
    from tether.ssh.frames import HEADER, encode

    before = hub_count(world)
    # malformed: an unknown frame type
    r = _raw_ssh(world, "user1", "tether-log", "sync", "shared", data=b"XXXXXXXXXX")
    assert r.returncode == 3 and b"malformed frame" in r.stderr
    # truncated stream: a header promising more than comes
    r = _raw_ssh(world, "user1", "tether-log", "sync", "shared", data=HEADER.pack(100, ord("P")) + b"[")
    assert r.returncode == 3 and b"middle of a frame" in r.stderr
    # oversized: refused from its header, before the payload is buffered
    r = _raw_ssh(world, "user1", "tether-log", "sync", "shared", data=HEADER.pack(1 << 30, ord("P")))
    assert r.returncode == 3 and b"larger than the limit" in r.stderr
    # wrong JSON and invalid records get an E frame; nothing is written; Q ends cleanly
    r = _raw_ssh(world, "user1", "tether-log", "sync", "shared",
                 data=encode("P", b"{not json") + encode("P", b'[{"id": "nope"}]') + encode("Q"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(b"urn:tether:problem:") == 2
    # a pull-only session may not push
    r = _raw_ssh(world, "user1", "tether-log", "pull", "shared", data=encode("P", b"[]") + encode("Q"))
    assert b"pull-only-session" in r.stdout
    assert hub_count(world) == before

    # idle peer: connected, sends nothing, is cut off after the idle timeout
    sshd = world["sshd"]
    argv = [*sshd.ssh_argv(world["account"], world["keys"]["user1"]), "tether-log", "sync", "shared"]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.wait(timeout=IDLE + 30)  # stdin stays open and silent
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()
    assert p.returncode == 3 and b"idle peer" in err
    assert time.monotonic() - t0 < IDLE + 25


def test_unknown_key_is_refused(world, tmp_path):
    stranger = make_key(tmp_path / "id_stranger")
    sshd = world["sshd"]
    r = subprocess.run([*sshd.ssh_argv(world["account"], stranger), "tether-log", "pull", "shared"],
                       capture_output=True, timeout=30)
    assert r.returncode == 255 and b"Permission denied" in r.stderr


def _log_with_remote(world, tmp_path) -> Path:
    """A client log of its own with the hub as its origin (not one another test made)."""
    db = tmp_path / "log.db"
    r = subprocess.run([sys.executable, "-m", "tether", "log", "remote", "add", "origin", remote_url(world)],
                       capture_output=True, text=True, env=_env(TETHER_LOG_DB=str(db)), timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return db


def test_client_refuses_disabled_host_key_checking(world, tmp_path):
    env_prefix = [*_ssh_prefix(world, "user1"), "-o", "StrictHostKeyChecking=no"]
    db = _log_with_remote(world, tmp_path)
    r = subprocess.run([sys.executable, "-m", "tether", "log", "pull"], capture_output=True, text=True,
                       env=_env(TETHER_SSH=shlex.join(env_prefix), TETHER_LOG_DB=str(db)), timeout=60)
    assert r.returncode == 2 and "StrictHostKeyChecking" in r.stderr


def test_unknown_host_key_is_not_accepted(world, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    prefix = [x if not x.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={empty}"
              for x in _ssh_prefix(world, "user1")]
    db = _log_with_remote(world, tmp_path)
    r = subprocess.run([sys.executable, "-m", "tether", "log", "pull"], capture_output=True, text=True,
                       env=_env(TETHER_SSH=shlex.join(prefix), TETHER_LOG_DB=str(db)), timeout=60)
    assert r.returncode == 3, r.stderr
    assert "Host key verification failed" in r.stderr or "host key" in r.stderr.lower()


def test_read_only_user_pulls_but_cannot_push(world):
    url = remote_url(world)
    assert tether_as(world, "user4", "log", "remote", "add", "origin", url).returncode == 0
    assert tether_as(world, "user4", "log", "add", "msg from user4").returncode == 0
    before = hub_count(world)
    r = tether_as(world, "user4", "log", "push")
    assert r.returncode == 4 and "write" in r.stderr, r.stderr
    r = tether_as(world, "user4", "log", "pull", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pulled"] == before
    assert hub_count(world) == before
