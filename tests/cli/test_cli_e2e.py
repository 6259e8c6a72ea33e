"""The ``tether`` command against a real running hub, as a user would use it.

Every test runs twice, on a SQLite hub and on a PostgreSQL hub (the ``hub``
fixture). Most calls go through click's CliRunner (in-process, fast); the flows
where the process boundary matters (exit codes, stdout/stderr separation, the
scheduler's shell one-liner, the config file written by ``login``) run the real
console script.

Config is always isolated: HOME and XDG_CONFIG_HOME point into tmp_path and the
hub and token are passed explicitly, so the real ~/.config is never read or
written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tether.cli import main
from tether.problems import EXIT_AUTH, EXIT_NO, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from tests.hubproc import free_port, unique

TETHER = str(Path(sys.executable).parent / "tether")
SECRET_RE = re.compile(r"tth_[A-Za-z0-9_\-]{8,}")
ADMIN = object()  # "use the hub's admin token"
ANY_TOKEN = "tth_0123456789abcdef_" + "A" * 43  # well formed, unknown to every hub


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make test`, which installs it")
    return path


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def near(text: str, expected: datetime, slack: timedelta = timedelta(minutes=2)) -> bool:
    return abs(parse_time(text) - expected) < slack


def token_id(secret: str) -> str:
    return secret.split("_")[1]


def check_streams(stdout: str, stderr: str, code: int, secrets: list[str]) -> None:
    """What must hold for every invocation, whatever its outcome."""
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    for s in secrets:
        assert s not in stderr, "a token secret leaked to stderr"
    assert not SECRET_RE.search(stderr), f"something secret-looking on stderr: {stderr!r}"
    if code != EXIT_OK:
        assert stdout == "", f"a failing command wrote to stdout: {stdout!r}"
        if code == EXIT_USAGE and stderr.startswith("Usage:"):
            assert "Error:" in stderr  # click's own usage errors
        else:
            assert stderr.startswith("tether: error: "), stderr


class Cli:
    """Run ``tether`` against one hub with an isolated home directory."""

    def __init__(self, hub, home: Path):
        self.hub = hub
        self.home = home
        self.runner = CliRunner()
        self.secrets = [hub.admin_token]

    @property
    def config_file(self) -> Path:
        return self.home / "xdg" / "tether" / "config.toml"

    def env(self, token=ADMIN, hub: str | None = "default") -> dict[str, str | None]:
        if token is ADMIN:
            token = self.hub.admin_token
        if token and token not in self.secrets:
            self.secrets.append(token)
        return {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "xdg"),
            "TETHER_HUB": self.hub.url if hub == "default" else hub,
            "TETHER_TOKEN": token,
            "TETHER_CA_BUNDLE": None,
        }

    def __call__(self, *args: str, code: int = EXIT_OK, token=ADMIN, hub: str | None = "default",
                 input: str | None = None) -> Result:
        r = self.runner.invoke(main, list(args), env=self.env(token, hub), input=input, prog_name="tether")
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise AssertionError(f"`tether {' '.join(args)}` raised {r.exception!r}\n{r.stderr}") from r.exception
        assert r.exit_code == code, f"`tether {' '.join(args)}` exited {r.exit_code}, wanted {code}\n{r.output}"
        check_streams(r.stdout, r.stderr, r.exit_code, self.secrets)
        return r

    def json(self, *args: str, **kw):
        return json.loads(self(*args, "--json", **kw).stdout)

    def proc_env(self, token=ADMIN, hub: str | None = "default") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env.update({k: v for k, v in self.env(token, hub).items() if v is not None})
        env["PATH"] = f"{Path(TETHER).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def proc(self, *args: str, code: int = EXIT_OK, token=ADMIN, hub: str | None = "default",
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run the real console script."""
        r = subprocess.run([TETHER, *args], env=self.proc_env(token, hub), input=input,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == code, f"`tether {' '.join(args)}` exited {r.returncode}, wanted {code}\n{r.stderr}"
        check_streams(r.stdout, r.stderr, r.returncode, self.secrets)
        return r

    def bash(self, script: str, token=ADMIN) -> subprocess.CompletedProcess:
        need("jq")
        return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], env=self.proc_env(token),
                              capture_output=True, text=True, timeout=60, cwd=self.home)

    def user(self, **kw) -> tuple[str, str]:
        name, secret = self.hub.make_user(**kw)
        self.secrets.append(secret)
        return name, secret


@pytest.fixture
def cli(hub, tmp_path) -> Cli:
    return Cli(hub, tmp_path)


# -- login and whoami ------------------------------------------------------------


def test_login_saves_a_private_config_and_later_commands_need_no_flags(cli):
    r = cli.proc("login", cli.hub.url, "--token", cli.hub.admin_token, hub=None, token=None)
    assert r.stdout.startswith(f"logged in to {cli.hub.url} as admin (token ")
    assert "saved to" in r.stderr and str(cli.config_file) in r.stderr
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700
    assert cli.hub.admin_token in cli.config_file.read_text()

    me = json.loads(cli.proc("whoami", "--json", hub=None, token=None).stdout)
    assert me["user"]["name"] == "admin" and me["user"]["admin"] is True
    assert me["token"]["id"] == token_id(cli.hub.admin_token)
    assert cli("user", "list", "--json", hub=None, token=None).stdout.startswith("[")


def test_login_reads_the_token_from_stdin(cli):
    name, secret = cli.user()
    r = cli.proc("login", cli.hub.url, hub=None, token=None, input=secret + "\n")
    assert f"as {name}" in r.stdout
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
    assert cli.json("whoami", hub=None, token=None)["user"]["name"] == name
    # The same through CliRunner, replacing the saved login.
    cli("login", cli.hub.url, hub=None, token=None, input=cli.hub.admin_token + "\n")
    assert cli.json("whoami", hub=None, token=None)["user"]["name"] == "admin"


def test_login_with_a_bad_token_exits_4_and_writes_nothing(cli):
    r = cli("login", cli.hub.url, "--token", ANY_TOKEN, code=EXIT_AUTH, hub=None, token=None)
    assert ANY_TOKEN not in r.stderr
    assert not cli.config_file.exists()
    # An existing login is left exactly as it was.
    cli("login", cli.hub.url, "--token", cli.hub.admin_token, hub=None, token=None)
    before = cli.config_file.read_bytes()
    cli("login", cli.hub.url, "--token", "tth_nonsense", code=EXIT_AUTH, hub=None, token=None)
    assert cli.config_file.read_bytes() == before
    # No token at all (empty stdin) is a usage error.
    cli("login", cli.hub.url, code=EXIT_USAGE, hub=None, token=None, input="")


def test_whoami(cli):
    name, secret = cli.user(label="laptop", expires="1h")
    out = cli("whoami", token=secret).stdout
    assert re.search(rf"^user:\s+{name}$", out, re.M)
    assert re.search(r"^label:\s+laptop$", out, re.M)
    me = cli.json("whoami", token=secret)
    assert me["user"] == {**me["user"], "name": name, "kind": "person", "admin": False, "disabled": False}
    assert me["token"]["id"] == token_id(secret) and me["token"]["label"] == "laptop"
    assert near(me["token"]["expires_at"], datetime.now(timezone.utc) + timedelta(hours=1))
    assert "token" not in me["token"], "whoami never echoes a secret"


# -- users ---------------------------------------------------------------------


def test_user_commands(cli):
    name = unique("cli-u")
    r = cli("user", "add", name)
    assert r.stdout == f"created user {name} (person)\n"
    assert "tth_" not in r.stdout + r.stderr, "user add prints nothing secret"
    cli("user", "add", name, code=EXIT_NO)

    svc = cli.json("user", "add", unique("cli-svc"), "--kind", "service", "--admin")
    assert svc["kind"] == "service" and svc["admin"] is True
    assert "tth_" not in json.dumps(svc)

    users = cli.json("user", "list")
    assert isinstance(users, list)
    assert {u["name"] for u in users} >= {"admin", name, svc["name"]}

    shown = cli.json("user", "show", name)
    assert shown["name"] == name and shown["keys"] == [] and shown["grants"] == []
    assert "keys: none" in cli("user", "show", name).stdout

    assert cli.json("user", "disable", name)["disabled"] is True
    assert cli.json("user", "show", name)["disabled"] is True
    assert cli("user", "enable", name).stdout == f"enabled user {name}\n"
    assert cli.json("user", "show", name)["disabled"] is False

    for sub in ("show", "disable", "enable"):
        assert "nosuch" in cli("user", sub, "nosuch-" + name, code=EXIT_NO).stderr


def test_a_disabled_users_token_stops_working(cli):
    name, secret = cli.user()
    cli("whoami", token=secret)
    cli("user", "disable", name)
    cli("whoami", token=secret, code=EXIT_AUTH)
    cli("user", "enable", name)
    cli("whoami", token=secret)


def test_user_admin_commands_are_refused_to_a_non_admin(cli):
    _, secret = cli.user()
    r = cli("user", "add", unique("x"), token=secret, code=EXIT_AUTH)
    assert "admin" in r.stderr
    cli("user", "list", token=secret, code=EXIT_AUTH)


# -- keys ------------------------------------------------------------------------


def keygen(path: Path, comment: str) -> tuple[Path, str]:
    ssh_keygen = need("ssh-keygen")
    subprocess.run([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    fp = subprocess.run([ssh_keygen, "-lf", f"{path}.pub"], check=True, capture_output=True, text=True).stdout.split()[1]
    return Path(f"{path}.pub"), fp


def test_keys(cli, tmp_path):
    name, _ = cli.user()
    pub, fp = keygen(tmp_path / "id_ed25519", "alice@laptop")
    r = cli("key", "add", name, str(pub))
    assert r.stdout == fp + "\n", "prints the same fingerprint as ssh-keygen -lf"
    assert "added ssh key" in r.stderr
    cli("key", "add", name, str(pub), code=EXIT_NO)  # already registered

    sig_pub, _ = keygen(tmp_path / "signing", "signer")
    signing = cli.json("key", "add", name, str(sig_pub), "--signing", "--comment", "release signer")
    assert signing["kind"] == "signing" and signing["comment"] == "release signer"

    # From stdin, as `ssh-add -L | tether key add USER -` would.
    third_pub, third_fp = keygen(tmp_path / "third", "third")
    assert cli("key", "add", name, "-", input=third_pub.read_text()).stdout.strip() == third_fp

    keys = cli.json("key", "list", name)
    assert isinstance(keys, list) and len(keys) == 3
    by_fp = {k["fingerprint"]: k for k in keys}
    assert by_fp[fp]["kind"] == "ssh" and by_fp[fp]["comment"] == "alice@laptop"
    assert by_fp[fp]["public_key"].split() == pub.read_text().split()[:2]  # the comment is kept apart
    assert fp in cli("key", "list", name).stdout
    assert [k["fingerprint"] for k in cli.json("user", "show", name)["keys"]] == [k["fingerprint"] for k in keys]

    # A private key is refused before anything is sent.
    r = cli("key", "add", name, str(tmp_path / "id_ed25519"), code=EXIT_USAGE)
    assert "private key" in r.stderr and "nothing was sent" in r.stderr
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key at all\n")
    cli("key", "add", name, str(bad), code=EXIT_USAGE)
    assert len(cli.json("key", "list", name)) == 3

    assert "removed key" in cli("key", "rm", name, fp).stdout
    cli("key", "rm", name, str(signing["id"]))
    cli("key", "rm", name, fp, code=EXIT_NO)
    assert [k["fingerprint"] for k in cli.json("key", "list", name)] == [third_fp]
    cli("key", "list", "nosuch-" + name, code=EXIT_NO)


# -- spaces ----------------------------------------------------------------------


def test_spaces(cli):
    space = unique("cli-s")
    name, secret = cli.user()
    assert cli("space", "create", space, "--description", "CI artefacts").stdout == f"created space {space}\n"
    cli("space", "create", space, code=EXIT_NO)

    listed = {s["name"]: s for s in cli.json("space", "list")}
    assert listed[space]["description"] == "CI artefacts" and listed[space]["access"] == "admin"

    for level in ("read", "write", "admin", "none"):
        g = cli.json("space", "grant", space, name, level)
        assert g == {"space": space, "user": name, "level": level}
        grants = {x["user"]: x["level"] for x in cli.json("space", "show", space)["grants"]}
        if level == "none":
            assert name not in grants
        else:
            assert grants[name] == level
            mine = {s["name"]: s for s in cli.json("space", "list", token=secret)}
            assert mine[space]["access"] == level

    cli("space", "grant", space, name, "write")
    assert f"{name}'s access to {space}" in cli("space", "revoke", space, name).stdout
    assert cli.json("space", "show", space)["grants"] == []
    cli("space", "revoke", space, name)  # revoking twice changes nothing and is fine

    r = cli("space", "grant", space, name, "owner", code=EXIT_USAGE)
    assert "owner" in r.stderr
    cli("space", "grant", "nosuch-" + space, name, "read", code=EXIT_NO)
    cli("space", "grant", space, "nosuch-" + name, "read", code=EXIT_NO)
    cli("space", "show", "nosuch-" + space, code=EXIT_NO)
    cli("space", "grant", space, name, "read", token=secret, code=EXIT_AUTH)


# -- tokens ----------------------------------------------------------------------


def test_mint_with_every_caveat_then_inspect(cli):
    space = cli.hub.make_space()
    _, secret = cli.user(grants={space: "write"})
    now = datetime.now(timezone.utc)
    t = cli.json(
        "token", "mint",
        "--scope", f"publish:{space}/android", "--scope", f"log:{space}:read",
        "--expires", "2h", "--not-before", "1m",
        "--source", "10.0.0.0/8", "--source", "2001:db8::/32", "--source", "127.0.0.1",
        "--max-uses", "100", "--max-files", "500", "--max-bytes", "10MB",
        "--label", "job-123",
        token=secret,
    )  # fmt: skip
    cli.secrets.append(t["token"])
    assert t["token"].startswith("tth_") and token_id(t["token"]) == t["id"]
    assert t["parent"] == token_id(secret)

    shown = cli.json("token", "inspect", t["id"], token=secret)
    assert "token" not in shown, "inspect never shows a secret"
    assert shown == {k: v for k, v in t.items() if k != "token"}
    assert shown["scopes"] == [f"publish:{space}/android", f"log:{space}:read"]
    assert shown["sources"] == ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1/32"]
    assert (shown["max_uses"], shown["max_files"], shown["max_bytes"]) == (100, 500, 10_000_000)
    assert shown["label"] == "job-123"
    assert near(shown["expires_at"], now + timedelta(hours=2))
    assert near(shown["not_before"], now + timedelta(minutes=1))

    text = cli("token", "inspect", t["id"], token=secret).stdout
    assert re.search(r"^max_bytes:\s+10000000$", text, re.M) and "job-123" in text

    # The token in use, without an ID; and by the admin.
    assert cli.json("token", "inspect", token=secret)["id"] == token_id(secret)
    assert cli.json("token", "inspect", t["id"])["label"] == "job-123"


def test_mint_for_another_user_is_for_admins(cli):
    name, secret = cli.user()
    other, _ = cli.user()
    t = cli.json("token", "mint", "--for", name, "--expires", "30d", "--label", "scheduler")
    cli.secrets.append(t["token"])
    assert t["user"] == name and t["parent"] is None and t["label"] == "scheduler"
    assert cli.json("whoami", token=t["token"])["user"]["name"] == name

    r = cli("token", "mint", "--for", other, token=secret, code=EXIT_AUTH)
    assert "admin" in r.stderr
    cli("token", "mint", "--for", "nosuch-" + name, code=EXIT_NO)


def test_attenuate_narrower_works_and_wider_is_refused(cli):
    space = cli.hub.make_space()
    _, secret = cli.user(grants={space: "write"}, scopes=[f"publish:{space}"], expires="1h", max_files=5)
    child = cli.json("token", "attenuate", "--scope", f"publish:{space}/android", "--max-files", "2",
                     "--expires", "10m", "--label", "one-job", token=secret)
    cli.secrets.append(child["token"])
    assert child["parent"] == token_id(secret)
    assert child["scopes"] == [f"publish:{space}/android"] and child["max_files"] == 2
    assert child["label"] == "one-job"

    # Non-JSON: the secret alone on stdout, details on stderr.
    r = cli("token", "attenuate", "--max-uses", "3", token=child["token"])
    grandchild = r.stdout.strip()
    cli.secrets.append(grandchild)
    assert r.stdout == grandchild + "\n" and grandchild.startswith("tth_")
    assert "max_uses" in r.stderr

    for flags, caveat in [
        (["--scope", f"publish:{space}-other"], "scopes"),
        (["--expires", "5h"], "expires"),
        (["--max-files", "10"], "max_files"),
    ]:
        r = cli("token", "attenuate", *flags, token=secret, code=EXIT_AUTH)
        assert f"caveat: {caveat}" in r.stderr, r.stderr
        assert "narrow" in r.stderr


def test_token_list(cli):
    name, secret = cli.user()
    other, other_secret = cli.user()
    minted = [cli.json("token", "mint", "--label", f"l{i}", token=secret) for i in range(2)]
    cli.secrets.extend(m["token"] for m in minted)

    mine = cli.json("token", "list", token=secret)
    assert isinstance(mine, list)
    assert {t["id"] for t in mine} == {token_id(secret), *(m["id"] for m in minted)}
    assert all(t["user"] == name and "token" not in t for t in mine)
    assert "l1" in cli("token", "list", token=secret).stdout

    cli("token", "list", "--user", other, token=secret, code=EXIT_AUTH)
    cli("token", "list", "--all", token=secret, code=EXIT_AUTH)
    assert {t["id"] for t in cli.json("token", "list", "--user", other)} == {token_id(other_secret)}
    everyone = {t["id"] for t in cli.json("token", "list", "--all")}
    assert everyone >= {token_id(secret), token_id(other_secret), *(m["id"] for m in minted)}


def test_revoke_takes_descendants_with_it(cli):
    _, secret = cli.user()
    parent = cli.json("token", "mint", "--label", "parent", token=secret)
    child = cli.json("token", "attenuate", "--label", "child", token=parent["token"])
    grandchild = cli.json("token", "attenuate", "--max-uses", "5", token=child["token"])
    cli.secrets.extend(t["token"] for t in (parent, child, grandchild))
    cli("whoami", token=grandchild["token"])

    r = cli("token", "revoke", parent["id"], token=secret)
    assert r.stdout.startswith("revoked 3 tokens: ")
    assert set(r.stdout.split(": ", 1)[1].strip().split(", ")) == {parent["id"], child["id"], grandchild["id"]}

    for t in (parent, child, grandchild):
        r = cli("whoami", token=t["token"], code=EXIT_AUTH)
        assert "revoked" in r.stderr
    assert cli.json("token", "inspect", child["id"], token=secret)["revoked_at"] is not None
    assert cli.json("token", "revoke", parent["id"], token=secret) == {"revoked": []}
    cli("whoami", token=secret)  # the token that revoked them is untouched

    cli("token", "revoke", "0123456789abcdef", token=secret, code=EXIT_NO)
    cli("token", "revoke", "not-an-id", token=secret, code=EXIT_USAGE)


# -- the scheduler's one-liner, through a real shell --------------------------------


def test_scheduler_one_liner(cli, tmp_path):
    space = cli.hub.make_space()
    sched, _ = cli.user(grants={space: "write"}, kind="service")
    sched_token = cli.json("token", "mint", "--for", sched, "--expires", "30d", "--label", "scheduler")["token"]
    cli.secrets.append(sched_token)

    script = f"""
T=$(tether token mint --scope publish:{space}/android --expires 1h --source 10.0.0.0/8 \\
      --max-files 500 --label job-123 --json | jq -r .token)
printf '%s' "$T" > job.token
tether token inspect "$(echo "$T" | cut -d_ -f2)" --json
U=$(tether token mint --scope publish:{space}/ios --expires 1h --label job-124)
printf '%s' "$U" > plain.token
"""
    r = cli.bash(script, token=sched_token)
    assert r.returncode == 0, r.stderr
    job = (tmp_path / "job.token").read_text()
    plain = (tmp_path / "plain.token").read_text()
    assert re.fullmatch(r"tth_[0-9a-f]{16}_[A-Za-z0-9_\-]+", job)
    assert re.fullmatch(r"tth_[0-9a-f]{16}_[A-Za-z0-9_\-]+", plain), "T=$(tether token mint) holds just the secret"
    cli.secrets += [job, plain]
    check_streams(r.stdout, r.stderr, 0, cli.secrets)
    assert "job-124" in r.stderr, "without --json the details go to stderr"

    shown = json.loads(r.stdout)
    assert shown["id"] == token_id(job) and shown["user"] == sched
    assert shown["scopes"] == [f"publish:{space}/android"]
    assert shown["sources"] == ["10.0.0.0/8"] and shown["max_files"] == 500 and shown["label"] == "job-123"
    assert near(shown["expires_at"], datetime.now(timezone.utc) + timedelta(hours=1))
    assert shown["parent"] == token_id(sched_token)
    assert cli.json("token", "inspect", token_id(job))["label"] == "job-123"  # the admin sees it too

    # The job token is bound to 10.0.0.0/8: from loopback it is refused.
    r = cli.proc("whoami", token=job, code=EXIT_AUTH)
    assert "10.0.0.0/8" in r.stderr and "127.0.0.1" in r.stderr


# -- audit -----------------------------------------------------------------------


def test_audit(cli):
    name, secret = cli.user()
    sid = token_id(secret)
    minted = cli.json("token", "mint", "--label", "audited", token=secret)
    cli.secrets.append(minted["token"])
    cli("token", "mint", "--for", "admin", token=secret, code=EXIT_AUTH)
    cli("audit", token=secret, code=EXIT_AUTH)
    cli("audit", "--auth-token", secret, token=None, code=EXIT_AUTH)

    records = cli.json("audit", "--user", name)
    assert isinstance(records, list) and records
    assert all(r["user"] == name for r in records)
    seen = {(r["action"], r["outcome"], r["status"]) for r in records}
    assert ("token.mint", "allowed", 201) in seen
    assert ("token.mint_for", "denied", 403) in seen
    assert ("audit.read", "denied", 403) in seen
    mint = next(r for r in records if r["action"] == "token.mint")
    assert mint["resource"] == f"token:{minted['id']}" and mint["token_id"] == sid

    by_token = cli.json("audit", "--token", sid)
    assert by_token and all(r["token_id"] == sid for r in by_token)
    assert {r["outcome"] for r in by_token} >= {"allowed", "denied"}
    # the whole token works too (its id is used; the secret goes nowhere)
    assert [r["id"] for r in cli.json("audit", "--token", secret)] == [r["id"] for r in by_token]
    r = cli("audit", "--token", secret[:-1] + "!", code=EXIT_USAGE)
    assert "neither a token id" in r.stderr and secret[20:] not in r.stderr

    by_action = cli.json("audit", "--action", "token.mint", "--user", name)
    assert [r["action"] for r in by_action] == ["token.mint"]

    recent = cli.json("audit", "--since", "1h", "--user", name)
    assert len(recent) == len(records)
    assert all(parse_time(r["at"]) > datetime.now(timezone.utc) - timedelta(hours=1) for r in recent)
    assert len(cli.json("audit", "--user", name, "--limit", "1")) == 1
    assert "token.mint_for" in cli("audit", "--user", name).stdout

    dump = json.dumps(cli.json("audit", "--since", "1h"))
    assert not SECRET_RE.search(dump), "the audit log holds no secrets"
    cli("audit", "--since", "banana", code=EXIT_USAGE)


# -- exit codes and error output of the real console script ---------------------------


def test_exit_codes_of_the_real_command(cli):
    # 0, with stdout/stderr kept apart
    r = cli.proc("user", "list", "--json")
    assert isinstance(json.loads(r.stdout), list) and r.stderr == ""
    # 1: not found
    r = cli.proc("user", "show", "nosuch-user", code=EXIT_NO)
    assert "nosuch-user" in r.stderr
    # 2: usage (click) and bad input refused by the hub (400)
    cli.proc("user", "list", "--no-such-flag", code=EXIT_USAGE)
    cli.proc("token", "mint", "--max-bytes", "10M", code=EXIT_USAGE)
    r = cli.proc("token", "mint", "--expires", "banana", code=EXIT_USAGE)
    assert r.stderr.startswith("tether: error: expires:") and "banana" in r.stderr
    cli.proc("token", "mint", "--scope", "nonsense", code=EXIT_USAGE)
    cli.proc("whoami", hub=None, token=None, code=EXIT_USAGE)  # no hub configured
    # 3: nothing listens there
    r = cli.proc("whoami", hub=f"http://127.0.0.1:{free_port()}", token=ANY_TOKEN, code=EXIT_RUNTIME)
    assert r.stderr.startswith("tether: error: cannot reach hub") and "hint:" in r.stderr
    # 4: no token, an unknown token, a token from the wrong network
    r = cli.proc("whoami", token=None, code=EXIT_AUTH)
    assert "no token was sent" in r.stderr
    r = cli.proc("whoami", token=ANY_TOKEN, code=EXIT_AUTH)
    assert ANY_TOKEN not in r.stderr
    _, fenced = cli.user(sources=["10.0.0.0/8"])
    r = cli.proc("user", "list", token=fenced, code=EXIT_AUTH)
    assert "10.0.0.0/8" in r.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["user", "show", "nosuch"], EXIT_NO),
        (["space", "show", "nosuch"], EXIT_NO),
        (["token", "inspect", "0123456789abcdef"], EXIT_NO),
        (["key", "list", "nosuch"], EXIT_NO),
        (["token", "mint", "--not-before", "yesterday-ish"], EXIT_USAGE),
        (["token", "mint", "--source", "10.0.0.0/33"], EXIT_USAGE),
        (["token", "mint", "--expires", "1000y"], EXIT_USAGE),
        (["token", "inspect", "xyz"], EXIT_USAGE),
        (["audit", "--limit", "0"], EXIT_USAGE),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_error_exit_codes(cli, args, code):
    cli(*args, code=code)


def test_hub_flag_and_token_flag_override_the_environment(cli):
    name, secret = cli.user()
    # Environment says "nowhere"; the flags win.
    out = cli.json("whoami", "--hub", cli.hub.url, "--token", secret, hub=f"http://127.0.0.1:{free_port()}",
                   token=ANY_TOKEN)
    assert out["user"]["name"] == name
