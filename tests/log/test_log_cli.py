"""`tether log add|list|show` against a local SQLite log."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from click.testing import CliRunner

from tether.cli import main
from tether.problems import EXIT_NO, EXIT_USAGE


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()
    db = str(tmp_path / "t" / "log.db")

    def invoke(*args, input=None, db_=db):
        return runner.invoke(main, ["log", *args, "--db", db_], input=input,
                             env={"TETHER_LOG_DB": None, "XDG_CONFIG_HOME": str(tmp_path / "cfg")})

    invoke.db = db
    return invoke


def test_add_list_show(run):
    r = run("add", "hello world", "--author", "alice")
    assert r.exit_code == 0, r.output
    rid = r.stdout.strip()
    assert uuid.UUID(rid).version == 7
    r2 = run("add", "--json", '{"build": 1234}', "--author", "ci")
    r3 = run("add", "-", "--author", "alice", input="from stdin\nline two\n")
    assert r2.exit_code == r3.exit_code == 0
    listing = json.loads(run("list", "--json").stdout)
    assert [x["body"] for x in listing] == ["hello world", {"build": 1234}, "from stdin\nline two\n"]
    assert [x["author"] for x in json.loads(run("list", "--json", "--author", "alice").stdout)] == ["alice", "alice"]
    assert json.loads(run("list", "--json", "--since", "1h").stdout) == listing
    assert json.loads(run("list", "--json", "--since", "2999-01-01T00:00:00Z").stdout) == []
    assert len(json.loads(run("list", "--json", "--limit", "1").stdout)) == 1
    text = run("list").stdout
    assert rid in text and "hello world" in text
    shown = json.loads(run("show", rid, "--json").stdout)
    assert shown == listing[0] and shown["kind"] == "text"
    r = run("show", rid)
    assert r.exit_code == 0 and "hello world" in r.stdout and "alice" in r.stdout


def test_default_author_is_local_user(run):
    import getpass

    r = run("add", "x")
    assert r.exit_code == 0, r.output
    assert json.loads(run("list", "--json").stdout)[0]["author"] == getpass.getuser()


@pytest.mark.parametrize(
    "args, input, match",
    [
        (["add", "--json", "{not json"], None, "not valid JSON"),
        (["add", "-", "--max-body", "10B"], "x" * 11, "limit of 10"),
        (["add", "x" * 70000], None, "limit of 65536"),
        (["add", "   "], None, "empty body"),
        (["add", "x", "--author", "has space"], None, "invalid author"),
        (["add", "-"], b"\xff\xfe", "not UTF-8"),
        (["show", "not-an-id"], None, "invalid record id"),
        (["show", str(uuid.uuid4())], None, "not a UUIDv7"),
        (["list", "--since", "yesterday-ish"], None, "--since"),
    ],
)
def test_bad_input_exit_2_and_writes_nothing(run, args, input, match):
    r = run(*args, input=input)
    assert r.exit_code == EXIT_USAGE, r.output
    assert match in r.stderr
    assert "Traceback" not in r.output
    assert json.loads(run("list", "--json").stdout) == []


def test_show_unknown_exit_1(run):
    from tether.log.store import uuid7

    r = run("show", str(uuid7()))
    assert r.exit_code == EXIT_NO and "no log" in r.stderr
    run("add", "x", "--author", "a")
    r = run("show", str(uuid7()))
    assert r.exit_code == EXIT_NO and r.stderr.startswith("tether: error: no record")


def test_not_a_database_exit_3(run, tmp_path):
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    r = run("list", db_=str(bad))
    assert r.exit_code == 3 and "cannot use the log database" in r.stderr


def test_log_help_is_light():
    probe = (
        "import sys\nfrom tether.cli import main\n"
        "try:\n    main(['log', 'add', '--help'], prog_name='tether')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('httpx', 'sqlalchemy', 'rich', 'sqlite3', 'hashlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "httpx" not in out and "sqlalchemy" not in out and "rich" not in out and "sqlite3" not in out
