"""The quick command line (tether.cli.quick): `whoami`, `token list`, `token mint`, `audit`,
`log add`, `log list` and every `--help` without click. Its reading of the arguments is
click's (click is the oracle, as for `tether publish`), a run ends the same way either
way (stdout, stderr, exit code) against a real hub, its generated tables are what the
click commands make now, and each quick path imports only the modules listed here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.cli import quickgen
from tether.cli.quick import parse
from tether.cli.quickhelp import HELP
from tether.cli.quickspec import SPECS

TETHER = str(Path(sys.executable).parent / "tether")
HERE = Path(__file__).resolve()
A_FILE, A_DIR, NOWHERE = str(HERE), str(HERE.parent), "/no/such/path/for/tether"


def test_the_generated_tables_are_what_the_click_commands_make_now():
    """An option or help text changed in a click command and not regenerated fails here:
    run `.venv/bin/python -m tether.cli.quickgen`. (In a process of its own: click keeps a
    command's help option from the first context made for it, and tests make contexts.)"""
    r = subprocess.run([sys.executable, "-m", "tether.cli.quickgen", "--check"], capture_output=True, text=True,
                       timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    every = set(quickgen.all_paths())
    assert {path for path, _ in HELP} == every  # every command's help, at 80 and 100 columns
    assert len(HELP) == 2 * len(every)


# -- the reading of the arguments: click's -------------------------------------------------


def click_reading(path: tuple[str, ...], argv: list[str], env: dict[str, str]) -> dict | None:
    """What click gives the command's callback for `tether PATH ARGV`, or None when it
    refuses the arguments (or shows help)."""
    cmd = quickgen.command_at(path)
    parent = click.Context(quickgen.root, info_name="tether", **quickgen.root.context_settings)
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            ctx = cmd.make_context(path[-1], list(argv), parent=parent)
        except (click.exceptions.ClickException, click.exceptions.Exit):
            return None
    return dict(ctx.params)


def _env(extra: dict[str, str | None]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return {**base, **{k: v for k, v in extra.items() if v is not None}}


VALUES = ["x", "", "-", "0", "1", "-1", "+1", " 2", "08", "٣", "1_0", "10MB", "2GiB", "1.5", "abc", "1h",
          A_FILE, A_DIR, NOWHERE, "--json", "-h", "--", "hello world", "tth_x"]  # fmt: skip
EXTRA = ["--", "-", "--help", "-h", "--no-such-option", "-x", "--jso", "--json=1", "--json=", "arg", ""]


def tokens_for(path: tuple[str, ...]) -> list[str]:
    spec = SPECS[path]
    options = list(spec["values"]) + list(spec["flags"])
    return options + [f"{o}={v}" for o in spec["values"] for v in ("x", "", "1", A_DIR)] + VALUES + EXTRA


ENVS = {"TETHER_HUB": [None, "", "http://127.0.0.1:2"], "TETHER_TOKEN": [None, "", "tth_env"],
        "TETHER_CA_BUNDLE": [None, "", A_FILE, A_DIR], "TETHER_LOG_DB": [None, "", A_FILE, A_DIR, NOWHERE],
        "TETHER_LOG_AUTHOR": [None, "", "ci"]}  # fmt: skip


@pytest.mark.parametrize("path", list(SPECS), ids=" ".join)
def test_parse_reads_what_click_reads_or_leaves_it_to_click(path):
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        argv=st.lists(st.sampled_from(tokens_for(path)), max_size=8),
        env=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in ENVS.items()}),
    )
    def check(argv, env):
        env = _env(env)
        quick = parse(SPECS[path], argv, env)
        if quick is not None:  # else click reads it: always right
            assert quick == click_reading(path, argv, env), argv

    check()


PLAIN = {
    ("whoami",): [[], ["--json"], ["--hub", "http://127.0.0.1:9", "--token=tth_x", "--json"]],
    ("token", "list"): [[], ["--all"], ["--user", "ci", "--json"]],
    ("token", "mint"): [["--scope", "publish:builds/android", "--scope=log:x:read", "--expires", "1h"],
                        ["--source", "10.0.0.0/8", "--max-files", "500", "--max-bytes", "1GiB", "--label", "job-123",
                         "--json"], ["--for", "ci", "--max-uses", "0", "--not-before", "10m"]],
    ("audit",): [[], ["--since", "1h"], ["--user", "ci", "--action", "token.mint", "--limit", "20"],
                 ["--token", "e6818ad1675e3c84", "--auth-token", "tth_x", "--json"]],
    ("log", "add"): [["hello"], ["--json", '{"a": 1}'], ["-"], ["--author", "ci", "--max-body", "1KiB", "--", "-x"]],
    ("log", "list"): [[], ["--since", "2h", "--author", "alice"], ["--limit", "3", "--json", "--db", NOWHERE]],
}  # fmt: skip


@pytest.mark.parametrize("path, argv", [(p, a) for p, forms in PLAIN.items() for a in forms], ids=repr)
def test_the_documented_forms_go_the_quick_way(path, argv):
    env = _env({})
    quick = parse(SPECS[path], argv, env)
    assert quick is not None and quick == click_reading(path, argv, env)


def test_the_parser_knows_every_option_of_the_click_commands():
    for path, spec in SPECS.items():
        cmd = quickgen.command_at(path)
        opts = {o for p in cmd.params if isinstance(p, click.Option) for o in [*p.opts, *p.secondary_opts]}
        assert opts - {"-h", "--help"} == set(spec["values"]) | set(spec["flags"]), path


# -- a whole run, both ways -------------------------------------------------------------

QUICK = ("import sys\nsys.argv[0] = 'tether'\nfrom tether.launch import main\ntry:\n    code = main()\n"
         "finally:\n    print('click', 'click' in sys.modules)\nsys.exit(code)")  # (click exits itself)
CLICK = "import sys\nfrom tether.cli import main\nsys.argv[0] = 'tether'\nmain()"


def _both(args: list[str], env: dict[str, str], stdin: str = "") -> tuple[subprocess.CompletedProcess, ...]:
    runs = []
    for code in (QUICK, CLICK):
        runs.append(subprocess.run([sys.executable, "-c", code, *args], env=env, input=stdin, capture_output=True,
                                   text=True, timeout=60, check=False))  # fmt: skip
    return tuple(runs)


@pytest.fixture
def world(hub, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_") and k != "COLUMNS"}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"), TETHER_HUB=hub.url,
               TETHER_TOKEN=hub.admin_token, TETHER_LOG_DB=str(tmp_path / "log.db"), TETHER_LOG_AUTHOR="ci")
    return env


VARYING = re.compile(r"tth_[A-Za-z0-9_\-]+|[0-9a-f]{16}|\d{4}-\d\d-\d\dT[\d:.]+Z|[0-9a-f-]{36}|"
                     r"\d{4}-\d\d-\d\d [\d:.]+Z|\b\d+\b")  # a new token, id or time in each run


@pytest.mark.parametrize(
    "args, code, quick",
    [
        (["whoami"], 0, True),
        (["whoami", "--json"], 0, True),
        (["token", "list", "--json"], 0, True),
        (["token", "mint", "--expires", "1h", "--scope", "log:x:read", "--label", "a label"], 0, True),
        (["token", "mint", "--expires", "1h", "--json"], 0, True),
        (["token", "mint", "--expires", "soon"], 2, True),  # the hub refuses it
        (["token", "list", "--user", "nobody-such"], 1, True),
        (["audit", "--limit", "3", "--json"], 0, True),
        (["audit", "--action", "no.such.action"], 0, True),
        (["whoami", "--token", "tth_0123456789abcdef_" + "A" * 43], 4, True),
        (["whoami", "--hub", "http://127.0.0.1:1"], 3, True),
        (["whoami", "--hub", "ftp://x"], 2, True),
        (["token", "mint", "--max-uses", "-1"], 2, False),  # click's usage error
        (["log", "add", "hello"], 0, True),
        (["log", "add", "--json", "{not json"], 2, True),
        (["log", "add", "   "], 2, True),
        (["log", "add", "--author", "bad author\n", "x"], 2, True),
        (["log", "list"], 0, True),
        (["log", "list", "--json", "--since", "1h"], 0, True),
        (["log", "list", "--since", "yesterday-ish"], 2, False),  # click's usage error
        (["log", "list", "--db", A_DIR], 2, False),
        (["log", "list", "--db", A_FILE], 3, True),  # not a log file
    ],
    ids=repr,
)
def test_a_run_ends_the_same_way_both_ways(world, args, code, quick):
    fast, slow = _both(args, world)
    assert fast.returncode == slow.returncode == code, fast.stderr + slow.stderr
    # click is imported by a run that needs it: click's reading, or (as for publish) to show a failure
    assert fast.stdout.endswith(f"click {not quick or code != 0}\n")
    out = fast.stdout.removesuffix(f"click {not quick or code != 0}\n")
    if args[:2] in (["token", "mint"], ["log", "add"]):  # each run makes its own token or record
        out, slow_out = VARYING.sub("#", out), VARYING.sub("#", slow.stdout)
        assert out == slow_out and VARYING.sub("#", fast.stderr) == VARYING.sub("#", slow.stderr)
    else:
        assert out == slow.stdout
        if args[:1] != ["log"] or "--since" not in args:
            assert VARYING.sub("#", fast.stderr) == VARYING.sub("#", slow.stderr)
    assert "Traceback" not in fast.stderr
    if code:
        assert fast.stderr.startswith(("tether: error: ", "Usage: "))


def test_log_add_reads_stdin_the_same_way(world):
    fast, slow = _both(["log", "add", "-"], world, stdin="from stdin\n")
    assert fast.returncode == slow.returncode == 0
    r = subprocess.run([TETHER, "log", "list", "--json"], env=world, capture_output=True, text=True, check=True)
    assert r.stdout.count('"from stdin\\n"') == 2


def test_an_unreachable_hubs_error_never_shows_the_token(world):
    secret = "tth_0123456789abcdef_secretsecretsecret"
    env = {**world, "TETHER_TOKEN": secret, "TETHER_HUB": "http://127.0.0.1:1"}
    fast, slow = _both(["token", "list"], env)
    assert fast.returncode == slow.returncode == 3
    assert fast.stderr == slow.stderr and "secret" not in fast.stderr + fast.stdout


# -- help ------------------------------------------------------------------------------------


def _help_run(argv: list[str], columns: int | None, code: str = QUICK) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


@pytest.mark.parametrize("path", sorted({p for p, _ in HELP})[::7] + [("token", "mint"), ("log", "add")], ids=" ".join)
@pytest.mark.parametrize("columns", [80, 100, 160])
def test_help_is_clicks_help_without_click(path, columns):
    for flag in ("--help", "-h"):
        r = _help_run([*path, flag], columns)
        assert r.returncode == 0 and r.stderr == ""
        assert r.stdout == HELP[(path, min(columns, 100))] + "click False\n"
        clicks = subprocess.run([sys.executable, "-c", CLICK, *path, flag], capture_output=True, text=True, check=False,
                                env={**os.environ, "COLUMNS": str(columns)})  # fmt: skip
        assert r.stdout == clicks.stdout + "click False\n"


def test_the_log_stores_tag_length_is_reconciles():
    from tether.log import reconcile, store

    assert store.TAG_LEN == reconcile.TAG_LEN  # (store keeps its own copy, so `log add` need not import reconcile)


def test_help_at_other_widths_and_other_forms_come_from_click():
    r = _help_run(["token", "mint", "--help"], 90)
    assert r.returncode == 0 and r.stdout.startswith("Usage: tether token mint") and r.stdout.endswith("click True\n")
    r = _help_run(["token", "mint", "--scope", "x", "--help"], 80)
    assert r.returncode == 0 and r.stdout.endswith("click True\n")
    r = _help_run(["no-such-command", "--help"], 80)
    assert r.returncode == 2 and "No such command" in r.stderr


# -- what each quick path imports -------------------------------------------------------------

#: Every module a quick path may import, beyond what `python -c pass` imports. A module not
#: listed fails the test: find who imports it (`python -X importtime .venv/bin/tether ...`)
#: and import it where it is used, or list it here if it is worth its cost.
STDLIB_HTTP = {
    "__future__", "_bisect", "_datetime", "_json", "_locale", "_random", "_sha512", "_socket", "_ssl", "_string",
    "_struct", "_weakrefset", "array", "base64", "binascii", "bisect", "calendar", "datetime", "email",
    "email._encoded_words", "email._parseaddr", "email._policybase", "email.base64mime", "email.charset",
    "email.encoders", "email.errors", "email.feedparser", "email.header", "email.iterators", "email.message",
    "email.parser", "email.quoprimime", "email.utils", "encodings.idna", "errno", "http", "http.client", "json",
    "json.decoder", "json.encoder", "json.scanner", "locale", "math", "quopri", "random", "select", "selectors",
    "socket", "ssl", "string", "stringprep", "struct", "threading", "unicodedata", "urllib", "urllib.parse",
    "ipaddress",  # (urllib.parse)
}  # fmt: skip
STDLIB_COMMON = {
    "_collections", "_functools", "_operator", "_sre", "collections", "collections.abc", "contextlib", "copyreg",
    "enum", "functools", "itertools", "keyword", "operator", "re", "re._casefix", "re._compiler", "re._constants",
    "re._parser", "reprlib", "types", "warnings", "fnmatch", "ntpath", "pathlib", "nt", "_winapi", "urllib",
}  # fmt: skip
TETHER_HUB = {"tether", "tether.launch", "tether.cli", "tether.cli.quick", "tether.cli.quickspec", "tether.problems",
              "tether.console", "tether.cli.actions", "tether.hubclient", "tether.hubclient.retry",
              "tether.hubclient.hub", "tether.hubclient.config", "tether.hubclient.transport",
              "tether.hubclient.errors"}  # fmt: skip
LOG = {
    "tether", "tether.launch", "tether.cli", "tether.cli.quick", "tether.cli.quickspec", "tether.problems",
    "tether.console", "tether.log", "tether.log.command", "tether.log.store", "json", "json.decoder",
    "json.encoder", "json.scanner", "_json", "sqlite3", "sqlite3.dbapi2", "_sqlite3", "datetime", "_datetime",
    "hashlib", "_hashlib", "_blake2", "secrets", "base64", "binascii", "_struct", "struct", "random", "_random",
    "math", "bisect", "_bisect", "_sha512", "uuid", "threading", "_weakrefset", "time", "getpass", "pwd",
    "platform", "_uuid", "tether.units", "__future__", "errno", "hmac", "urllib", "urllib.parse", "ipaddress",
    "org", "org.python", "org.python.core",  # (copy looks for Jython's; not found, but listed by -X importtime)
    "dataclasses", "inspect", "ast", "dis", "opcode", "_opcode", "linecache", "tokenize", "token", "copy",
    "weakref", "importlib", "importlib.machinery", "_ast", "textwrap",  # (the frozen dataclass tether.log.store.Record)
}  # fmt: skip
HEAVY = ["click", "typing", "pydantic", "httpx", "cryptography", "nats", "asyncio", "rich", "sqlalchemy", "h11",
         "anyio", "tomllib", "concurrent", "logging", "tether.log.reconcile"]  # fmt: skip

QUICK_PATHS = [
    (["whoami"], TETHER_HUB | STDLIB_HTTP | STDLIB_COMMON),
    (["token", "list"], TETHER_HUB | STDLIB_HTTP | STDLIB_COMMON),
    (["token", "mint", "--expires", "1h"], TETHER_HUB | STDLIB_HTTP | STDLIB_COMMON),
    (["audit", "--limit", "1"], TETHER_HUB | STDLIB_HTTP | STDLIB_COMMON),
    (["log", "add", "hello"], LOG | STDLIB_COMMON),
    (["log", "list"], LOG | STDLIB_COMMON),
    (["--help"], {"__future__", "tether", "tether.launch", "tether.cli", "tether.cli.quick", "tether.cli.quickhelp"}),
    (["token", "mint", "--help"], {"__future__", "tether", "tether.launch", "tether.cli", "tether.cli.quick",
                                   "tether.cli.quickhelp", "tether.cli.quickspec"}),
]  # fmt: skip


def imported(argv: list[str], env: dict[str, str]) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules `tether ARGV` imports beyond `python -c pass`, read with -X importtime."""

    def modules(cmd: list[str]) -> tuple[set[str], subprocess.CompletedProcess]:
        r = subprocess.run([sys.executable, "-X", "importtime", *cmd], env=env, capture_output=True, text=True,
                           timeout=60, check=False)  # fmt: skip
        names = {ln.rpartition("|")[2].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
        return names - {"package"}, r

    floor, _ = modules(["-c", "pass"])
    names, r = modules([TETHER, *argv])
    return names - floor, r


@pytest.mark.parametrize("argv, allowed", QUICK_PATHS, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_each_quick_path_imports_only_what_is_listed(world, argv, allowed):
    names, r = imported(argv, world)
    assert r.returncode == 0, r.stderr[-2000:]
    heavy = sorted(n for n in names if n.split(".")[0] in HEAVY or n in HEAVY)
    assert not heavy, f"`tether {' '.join(argv)}` now imports {heavy}"
    assert not names - allowed, (
        f"`tether {' '.join(argv)}` now imports {sorted(names - allowed)}: import it where it is used, "
        "or list it in tests/cli/test_quick.py if it is worth its cost (see `python -X importtime`)")
