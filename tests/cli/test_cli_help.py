"""The CLI's shape: help for every command, lazy imports, usage errors, exit codes.

No hub is needed here; the end-to-end tests against a running hub live elsewhere.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from tether.cli import COMMANDS, main
from tether.console import scrub
from tether.problems import EXIT_AUTH, EXIT_NO, EXIT_RUNTIME, EXIT_USAGE, exit_code_for_status
from tether.units import parse_size

CLIENT_OPTS = ["--hub", "--token", "--ca-bundle"]

# command path -> options its --help must mention (besides --help)
EXPECTED: dict[tuple[str, ...], list[str]] = {
    ("login",): ["HUB_URL", "--token", "--ca-bundle", "--insecure-http"],
    ("whoami",): [*CLIENT_OPTS, "--json"],
    ("user",): ["add", "list", "show", "disable", "enable"],
    ("user", "add"): ["NAME", "--kind", "person", "service", "--admin", *CLIENT_OPTS],
    ("user", "list"): [*CLIENT_OPTS, "--json"],
    ("user", "show"): ["NAME", *CLIENT_OPTS, "--json"],
    ("user", "disable"): ["NAME", *CLIENT_OPTS],
    ("user", "enable"): ["NAME", *CLIENT_OPTS],
    ("key",): ["add", "list", "rm", "authorized-keys", "check"],
    ("key", "authorized-keys"): ["--user", "--command", "--output", "--config", "--data", "--database-url"],
    ("key", "check"): ["FILE", "--json"],
    ("ssh-serve",): ["USER", "--config", "--data", "--database-url", "--idle-timeout", "--max-frame"],
    ("forward",): ["run", "list", "stop", "share", "unshare", "links", "signin", "ssh -N -R"],
    ("forward", "run"): ["NAME", "COMMAND", "--ssh", "--identity", "--known-hosts", "--replace", "--tcp", "--idle",
                         "--start-timeout", "--json", "Exit codes", "{socket}"],
    ("forward", "list"): ["--all", *CLIENT_OPTS, "--json"],
    ("forward", "stop"): ["NAME", "--user", *CLIENT_OPTS],
    ("forward", "share"): ["NAME", "--with", "--link", "--expires", "--read-only", *CLIENT_OPTS, "--json"],
    ("forward", "unshare"): ["NAME", "--with", *CLIENT_OPTS],
    ("forward", "links"): ["NAME", *CLIENT_OPTS, "--json"],
    ("forward", "signin"): ["NAME", *CLIENT_OPTS, "--json"],
    ("app",): ["register", "spawn", "open", "share", "unshare", "shares", "stop", "start", "restart", "rm", "list", "status", "logs",
               "grant", "revoke", "grants"],
    ("app", "register"): ["NAME", "--space", "--version", "--dir", "--build", "--memory", "--cpu", "--pids", "--grant",
                          "--install", "--cmd", *CLIENT_OPTS, "--json"],
    ("app", "spawn"): ["NAME", "--for", *CLIENT_OPTS, "--json"],
    ("app", "open"): ["NAME", *CLIENT_OPTS, "--json"],
    ("app", "share"): ["NAME", "--with", "--expires", "--read-only", *CLIENT_OPTS, "--json"],
    ("app", "unshare"): ["NAME", "--with", *CLIENT_OPTS],
    ("app", "shares"): ["NAME", *CLIENT_OPTS, "--json"],
    ("app", "stop"): ["INSTANCE", *CLIENT_OPTS, "--json"],
    ("app", "start"): ["INSTANCE", *CLIENT_OPTS, "--json"],
    ("app", "restart"): ["INSTANCE", *CLIENT_OPTS, "--json"],
    ("app", "rm"): ["INSTANCE", *CLIENT_OPTS],
    ("app", "list"): ["--all", "--apps", *CLIENT_OPTS, "--json"],
    ("app", "status"): ["INSTANCE", "refused", *CLIENT_OPTS, "--json"],
    ("app", "logs"): ["INSTANCE", "--follow", *CLIENT_OPTS],
    ("app", "grant"): ["INSTANCE", "tcp|udp", "HOST:PORT", "--expires", "--reason", *CLIENT_OPTS, "--json"],
    ("app", "revoke"): ["INSTANCE", "--all", *CLIENT_OPTS],
    ("app", "grants"): ["INSTANCE", *CLIENT_OPTS, "--json"],
    ("key", "add"): ["USER", "PUBKEY_FILE", "--signing", "--comment", *CLIENT_OPTS],
    ("key", "list"): ["USER", *CLIENT_OPTS, "--json"],
    ("key", "rm"): ["USER", "FINGERPRINT_OR_ID", *CLIENT_OPTS],
    ("space",): ["create", "list", "show", "grant", "revoke"],
    ("space", "create"): ["NAME", "--description", *CLIENT_OPTS, "--public-builds"],
    ("space", "set"): ["NAME", "--description", "--public-builds", *CLIENT_OPTS, "--json"],
    ("space", "list"): [*CLIENT_OPTS, "--json"],
    ("space", "show"): ["NAME", *CLIENT_OPTS, "--json"],
    ("space", "grant"): ["SPACE", "USER", "none", "read", "write", "admin", *CLIENT_OPTS],
    ("space", "revoke"): ["SPACE", "USER", *CLIENT_OPTS],
    ("token",): ["mint", "attenuate", "inspect", "list", "revoke"],
    ("token", "mint"): [
        "--for", "--scope", "--expires", "--not-before", "--source", "--max-uses",
        "--max-files", "--max-bytes", "--label", "--json", *CLIENT_OPTS,
    ],
    ("token", "attenuate"): [
        "--scope", "--expires", "--not-before", "--source", "--max-uses",
        "--max-files", "--max-bytes", "--label", "--json", *CLIENT_OPTS,
    ],
    ("token", "inspect"): ["[ID|TOKEN]", *CLIENT_OPTS, "--json"],
    ("token", "list"): ["--user", "--all", *CLIENT_OPTS, "--json"],
    ("token", "revoke"): ["ID|TOKEN", *CLIENT_OPTS],
    ("publish",): [
        "BUILD_ID", "GLOB...", "--type", "--strip", "--space", "--root", "--dry-run", "--jobs", "--json",
        "--public", "--private", "--latest", *CLIENT_OPTS,
    ],
    ("gc",): ["--dry-run", "--json", *CLIENT_OPTS],
    ("audit",): ["--since", "--user", "--token", "--action", "--limit", "--json", "--hub", "--auth-token", "--ca-bundle"],
    ("log",): ["add", "list", "show", "remote", "push", "pull", "sync"],
    ("log", "remote"): ["add", "list", "rm", "ssh://"],
    ("log", "remote", "add"): ["NAME", "URL", "--db"],
    ("log", "remote", "list"): ["--json", "--db"],
    ("log", "remote", "rm"): ["NAME", "--db"],
    ("log", "push"): ["[REMOTE]", "--token", "--ca-bundle", "--json", "--db", "Exit codes"],
    ("log", "pull"): ["[REMOTE]", "--token", "--ca-bundle", "--json", "--db", "Exit codes"],
    ("log", "sync"): ["[REMOTE]", "--token", "--ca-bundle", "--json", "--db", "Exit codes"],
    ("log", "add"): ["BODY|-", "--json", "--author", "--max-body", "--db"],
    ("log", "list"): ["--since", "--author", "--limit", "--json", "--db"],
    ("log", "show"): ["ID", "--json", "--db"],
    ("job",): ["create", "status", "send", "wait", "wait-all", "sync", "install-helpers"],
    ("job", "create"): ["GROUP", "--space", "--role", "--node", "--timeout", "--expires", "--essential", "--lost-after",
                        "--json", *CLIENT_OPTS],
    ("job", "status"): ["GROUP", "--json", *CLIENT_OPTS],
    ("job", "list"): ["--space", "--json", *CLIENT_OPTS],
    ("job", "cancel"): ["GROUP", "--reason", "--json"],
    ("job", "fail"): ["GROUP", "NODE", "--reason"],
    ("job", "send"): ["MESSAGE_ID", "[PAIRS]...", *CLIENT_OPTS],
    ("job", "wait"): ["MESSAGE_ID", "--timeout", "lava_multi_node_cache"],
    ("job", "wait-all"): ["MESSAGE_ID", "[ROLE]", "--timeout"],
    ("job", "sync"): ["SYNC_ID", "--timeout"],
    ("job", "role"): ["list"],
    ("job", "group"): ["[ROLE]"],
    ("job", "self"): ["lava-self"],
    ("job", "done"): ["--failed", "--reason"],
    ("job", "run"): ["COMMAND", "--heartbeat"],
    ("job", "network"): ["broadcast", "collect", "query", "hosts", "alias-hosts", "--timeout"],
    ("job", "install-helpers"): ["DIRECTORY", "lava-send"],
    ("signal",): ["-s", "-r", "-D", "-d", "-p", "-u", "-v", "-o", "-t", "-S", "-c", "-C", "--max-handlers", "Exit codes",
                  "send", "wait", "request", "keygen", "peers"],
    ("signal", "send"): ["MESSAGE...", "--to", "--verb", "--uuid", "--identity", "--durable", "--subject", "--config"],
    ("signal", "wait"): ["SCRIPT", "--timeout", "--once", "--uuid", "--verbs", "--from", "--dest", "--any-destination",
                         "--max-handlers", "--durable", "--subject", "--config"],
    ("signal", "request"): ["MESSAGE...", "--timeout", "--to", "--verb", "--uuid", "--identity", "--subject", "--config"],
    ("signal", "keygen"): ["--verbs", "--output", "--json"],
    ("signal", "init"): ["--config", "--destination", "--verbs", "--force", "--json", *CLIENT_OPTS],
    ("signal", "peer"): ["add"],
    ("signal", "peer", "add"): ["DESTINATION PUBKEY", "--from", "--verbs", "--config"],
    ("signal", "peers"): ["--config", "--from-hub", "--destination", "--write-verbs", "--read-verbs", "--json", *CLIENT_OPTS],
}  # fmt: skip

HEAVY = ("httpx", "fastapi", "sqlalchemy", "uvicorn", "starlette", "rich", "nats")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def clean_env(tmp_path) -> dict[str, str | None]:
    """No saved config and no TETHER_* settings leaking in from the caller."""
    return {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "TETHER_HUB": None,
        "TETHER_TOKEN": None,
        "TETHER_CA_BUNDLE": None,
    }


def test_root_help_lists_every_command(runner):
    r = runner.invoke(main, ["--help"])
    assert r.exit_code == 0, r.output
    for name in COMMANDS:
        assert name in r.output
    assert "Exit codes" in r.output


def test_version(runner):
    from tether import __version__

    r = runner.invoke(main, ["--version"])
    assert r.exit_code == 0
    assert r.output.strip() == f"tether {__version__}"


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=" ".join)
def test_command_help(runner, path):
    r = runner.invoke(main, [*path, "--help"])
    assert r.exit_code == 0, r.output
    for word in EXPECTED[path]:
        assert word in r.output, f"{word!r} missing from `tether {' '.join(path)} --help`"
    if len(path) == 2 or path in {("login",), ("whoami",), ("audit",), ("publish",), ("signal",), ("gc",)}:
        assert "Example" in r.output, "every command's help shows an example"


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=" ".join)
def test_the_scopes_and_sizes_in_help_examples_are_valid(runner, path):
    """An example must work when pasted: the values the client checks itself must parse."""
    import re

    from tether.auth.caveats import parse_duration, parse_scope

    text = runner.invoke(main, [*path, "--help"]).output
    checks = {"--scope": parse_scope, "--max-bytes": parse_size, "--expires": parse_duration}
    for option, value in re.findall(r"(--scope|--max-bytes|--expires)[= ]([^\s'\"]+)", text):
        if value.isupper() or value.startswith(("$", "[")):  # a metavar, not an example
            continue
        checks[option](value)  # raises on what the hub would refuse


def test_every_command_is_covered():
    """New commands must be added to EXPECTED (hub belongs to the hub tests)."""
    found = set()

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        found.add(path)
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), (*path, name))

    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        if name == "hub":
            continue
        walk(main.get_command(ctx, name), (name,))
    assert found == set(EXPECTED)


def test_hub_help_if_present(runner):
    try:
        import tether.cli.hub  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "tether.cli.hub":
            pytest.skip("tether.cli.hub not written yet")
        raise
    r = runner.invoke(main, ["hub", "--help"])
    assert r.exit_code == 0, r.output


def _imported_after(code: str) -> list[str]:
    probe = (
        "import sys\n"
        f"{code}\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1].replace("'", '"'))


def test_importing_the_cli_is_light():
    assert _imported_after("import tether.cli") == []


@pytest.mark.parametrize(
    "args", [["--help"], ["user", "--help"], ["token", "mint", "--help"], ["audit", "--help"], ["publish", "--help"],
             ["signal", "--help"], ["signal", "peers", "--help"]]
)
def test_help_imports_nothing_heavy(args):
    code = (
        "from tether.cli import main\n"
        "try:\n"
        f"    main({args!r}, prog_name='tether')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
    )
    assert _imported_after(code) == []


# -- usage errors: exit 2 ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["user", "list", "--no-such-option"],
        ["user", "add"],
        ["user", "add", "bob", "--kind", "robot"],
        ["space", "grant", "builds", "alice", "owner"],
        ["token", "mint", "--max-bytes", "10parsecs"],
        ["token", "mint", "--max-bytes", "10M"],
        ["token", "mint", "--max-files", "-1"],
        ["audit", "--limit", "0"],
        ["key", "add", "alice", "/no/such/file.pub"],
        ["signal", "-s", "-r"],
        ["signal", "-t", "soon"],
        ["signal", "-c", "/no/such/remaphore.conf"],
        ["signal", "send", "--verb", "a,b"],
        ["signal", "peers", "-c", "/no/such/remaphore.conf"],
        ["publish", "1234", "out/**"],
        ["publish", "--type", "android", "1234"],
        ["publish", "--type", "android", "--strip", "-1", "1234", "x"],
        ["publish", "--type", "android", "--jobs", "0", "1234", "x"],
        ["publish", "--type", "Bad Type", "1234", "x", "--hub", "http://127.0.0.1:1"],
        ["publish", "--type", "android", "../up", "x", "--hub", "http://127.0.0.1:1"],
        ["publish", "--type", "android", "1234", "no-such-file-*", "--hub", "http://127.0.0.1:1"],
        ["publish", "--type", "android", "1234", "../x", "--hub", "http://127.0.0.1:1"],
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_2(runner, clean_env, args):
    r = runner.invoke(main, args, env=clean_env)
    assert r.exit_code == EXIT_USAGE, r.output


@pytest.mark.parametrize(
    "args",
    [["whoami"], ["user", "list"], ["token", "mint", "--scope", "x"], ["audit"], ["token", "inspect"]],
)
def test_no_hub_configured_exit_2(runner, clean_env, args):
    r = runner.invoke(main, args, env=clean_env)
    assert r.exit_code == EXIT_USAGE, r.output
    assert r.stderr.startswith("tether: error: no hub configured")
    assert "tether login" in r.stderr
    assert "Traceback" not in r.output


def test_bad_config_file_exit_2(runner, clean_env, tmp_path):
    cfg = tmp_path / "xdg" / "tether"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text("hub = \n")
    r = runner.invoke(main, ["whoami"], env=clean_env)
    assert r.exit_code == EXIT_USAGE
    assert "cannot parse" in r.stderr


def test_login_refuses_plain_http_to_remote_host(runner, clean_env):
    r = runner.invoke(main, ["login", "http://hub.example", "--token", "tth_x"], env=clean_env)
    assert r.exit_code == EXIT_USAGE
    assert "--insecure-http" in r.stderr


def test_login_needs_a_token(runner, clean_env):
    r = runner.invoke(main, ["login", "http://127.0.0.1:1"], input="\n", env=clean_env)
    assert r.exit_code == EXIT_USAGE
    assert "no token" in r.stderr


def test_key_add_refuses_private_key(runner, clean_env):
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    r = runner.invoke(main, ["key", "add", "alice", "-", "--hub", "http://127.0.0.1:1"], input=key, env=clean_env)
    assert r.exit_code == EXIT_USAGE
    assert "private key" in r.stderr


# -- transport failures: exit 3, no secret, no traceback -----------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_exit_3_without_leaking_token(runner, clean_env):
    secret = "tth_0123456789abcdef_supersecretpart"
    url = f"http://127.0.0.1:{_closed_port()}"
    r = runner.invoke(main, ["whoami", "--hub", url, "--token", secret], env=clean_env)
    assert r.exit_code == EXIT_RUNTIME, r.output
    assert r.stderr.startswith("tether: error: cannot reach hub")
    assert "supersecret" not in r.output
    assert "Traceback" not in r.output


def test_login_to_a_hub_that_is_down_hints_at_its_own_argument(runner, clean_env):
    url = f"http://127.0.0.1:{_closed_port()}"
    r = runner.invoke(main, ["login", url, "--token", "tth_x"], env=clean_env)
    assert r.exit_code == EXIT_RUNTIME, r.output
    assert r.stderr.startswith(f"tether: error: cannot reach hub at {url}")
    assert f"reachable at {url}? check the HUB_URL given to `tether login`" in r.stderr
    assert "--hub" not in r.stderr and "TETHER_HUB" not in r.stderr  # options login does not take


def test_missing_ca_bundle_exit_2(runner, clean_env):
    r = runner.invoke(main, ["whoami", "--hub", "https://127.0.0.1:1", "--ca-bundle", "/no/such/ca.pem"], env=clean_env)
    assert r.exit_code == EXIT_USAGE
    assert "CA bundle" in r.stderr


# -- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, code",
    [
        (400, EXIT_USAGE), (401, EXIT_AUTH), (403, EXIT_AUTH), (404, EXIT_NO), (409, EXIT_NO),
        (413, EXIT_USAGE), (422, EXIT_USAGE), (429, EXIT_RUNTIME), (500, EXIT_RUNTIME), (503, EXIT_RUNTIME),
    ],
)  # fmt: skip
def test_exit_code_for_status(status, code):
    assert exit_code_for_status(status) == code


@pytest.mark.parametrize(
    "text, value",
    [
        ("0", 0), ("500", 500), ("500B", 500), ("10MB", 10_000_000), ("10mb", 10_000_000),
        ("1kB", 1000), ("1KiB", 1024), ("1GiB", 2**30), ("1gib", 2**30), ("2 TB", 2 * 10**12),
        ("1.5KiB", 1536), ("1.5GB", 1_500_000_000),
    ],
)  # fmt: skip
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "MB", "-1", "10 parsecs", "10M", "1k", "0.5B", "1e6"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_scrub():
    assert "secret" not in scrub("bad token tth_abc_secretsecret here")
    assert scrub("x MYTOKEN y", "MYTOKEN") == "x <token> y"


def test_hub_help_says_how_each_setting_it_names_is_set():
    """Every hub setting `tether hub --help` names (a flag's, or one named in the text,
    like signal_nats) comes with its env var, as the help the user sees prints it."""
    import re

    from tether.cli.hub import hub
    from tether.config import HubSettings

    for p in hub.params:
        if p.name in HubSettings.model_fields:
            assert f"Env TETHER_{p.name.upper()}" in (p.help or ""), p.name
    out = subprocess.run([sys.executable, "-m", "tether", "hub", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"}, check=True).stdout
    flat = " ".join(out.split())
    named = {w for w in re.findall(r"\b[a-z]+_[a-z_]+\b", flat) if w in HubSettings.model_fields}
    assert {"signal_nats", "gateway_domain"} <= named
    for name in named:
        assert f"TETHER_{name.upper()}" in flat, name
