"""`tether publish` without click (tether.publish.command): its reading of the arguments is
click's, it takes the usual forms itself, leaves the rest to click, and a run ends the
same way (output, error message, exit code) either way."""

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

from tether.publish.cli import publish as click_publish
from tether.publish.command import DEFAULTS, FLAG_OPTIONS, VALUE_OPTIONS, parse

HERE = Path(__file__).resolve().parent
A_DIR = str(HERE)  # an existing directory
A_FILE = str(Path(__file__).resolve())  # an existing file
NOWHERE = "/no/such/path/for/tether"

TOKENS = [
    "--type", "--type=android", "android", "--strip", "--strip=1", "1", "0", "-1", "+1", " 2", "08", "٣",
    "--space", "--space=", "builds", "--root", f"--root={A_DIR}", A_DIR, A_FILE, NOWHERE, ".", "--dry-run",
    "--dry-run=1", "--jobs", "-j", "-j4", "-j=4", "-j65", "64", "65", "--public", "--private", "--latest",
    "--json", "--json=yes", "--hub", "http://127.0.0.1:1", "--token", "tth_x", "--ca-bundle", f"--ca-bundle={A_FILE}",
    "--", "-", "1234", "out/**", "*.txt", "", "--help", "-h", "--no-such-option", "-x", "--typ", "--type=",
]  # fmt: skip
ENV_VALUES = {
    "TETHER_SPACE": [None, "", "env-space"],
    "TETHER_HUB": [None, "", "http://127.0.0.1:2"],
    "TETHER_TOKEN": [None, "", "tth_env"],
    "TETHER_CA_BUNDLE": [None, "", A_FILE, A_DIR, NOWHERE],
}


def click_reading(argv: list[str], env: dict[str, str]) -> dict | None:
    """What click makes of `tether publish ARGV` in ``env``: the callback's parameters, or
    None when it refuses the arguments (or shows help)."""
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            ctx = click_publish.make_context("publish", list(argv))
        except (click.exceptions.ClickException, click.exceptions.Exit):
            return None
    return dict(ctx.params)


def _env(choice: dict[str, str | None]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return {**base, **{k: v for k, v in choice.items() if v is not None}}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    argv=st.lists(st.sampled_from(TOKENS), max_size=9),
    env=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in ENV_VALUES.items()}),
)
def test_parse_reads_what_click_reads_or_leaves_it_to_click(argv, env):
    env = _env(env)
    quick = parse(argv, env)
    if quick is None:
        return  # click reads it: always right
    assert click_reading(argv, env) == quick


@settings(max_examples=400, deadline=None)
@given(
    before=st.lists(st.sampled_from(["--json", "--latest", "--dry-run", "--public", "--private", "-j2",
                                     "--strip=1", "--space=s", "--type=docs"]), max_size=5),  # fmt: skip
    build=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True),
    globs=st.lists(st.from_regex(r"[a-z*][a-z/*.]{0,8}", fullmatch=True), min_size=1, max_size=3),
)
def test_plain_command_lines_are_taken_without_click(before, build, globs):
    argv = ["--type", "android", *before, build, *globs]
    env = _env({})
    quick = parse(argv, env)
    assert quick is not None
    assert quick == click_reading(argv, env)


@pytest.mark.parametrize(
    "argv",
    [
        ["--type", "android", "--strip", "2", "1234", "out/target/**/*.img"],
        ["--token=tth_x", "--type=android", "--strip=2", "1234", "out/**"],
        ["--type", "docs", "--public", "--json", "v1.2.0", "site/**", ".well-known/*"],
        ["--type", "ci", "-j", "16", "--root", A_DIR, "--space", "builds", "7", "**"],
        ["--type", "ci", "--hub", "https://hub.example", "--ca-bundle", A_FILE, "7", "a", "--latest"],
        ["--type", "ci", "--", "7", "-odd-name-*"],
    ],
)
def test_the_documented_forms_go_the_quick_way(argv):
    env = _env({})
    quick = parse(argv, env)
    assert quick is not None and quick == click_reading(argv, env)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--type", "android", "-h"],
        ["--type", "android", "1234"],  # no GLOB
        ["1234", "out/**"],  # no --type
        ["--type", "android", "--strip", "-1", "1234", "x"],
        ["--type", "android", "--jobs", "0", "1234", "x"],
        ["--type", "android", "--jobs", "65", "1234", "x"],
        ["--type", "android", "--root", A_FILE, "1234", "x"],
        ["--type", "android", "--ca-bundle", A_DIR, "1234", "x"],
        ["--type", "android", "--json=1", "1234", "x"],
        ["--type", "android", "--no-such-option", "1234", "x"],
        ["--type", "--json", "1234", "x"],  # click would take "--json" as the type
    ],
)
def test_anything_else_is_left_to_click(argv):
    assert parse(argv, _env({})) is None


def test_the_options_are_the_click_commands():
    """An option added to one side and not the other fails here (an option parse does not
    know would only send every command line to click, but a new default would be missed)."""
    defaults = click_reading(["--type", "t", "b", "g"], _env({}))
    assert defaults == {**DEFAULTS, "build_type": "t", "build_id": "b", "globs": ("g",)}
    seen: dict[str, str] = {}
    for p in click_publish.params:
        if not isinstance(p, click.Option):
            continue
        for opt in [*p.opts, *p.secondary_opts]:
            if p.is_flag:
                param, value = FLAG_OPTIONS[opt]
                assert click_reading(["--type", "t", opt, "b", "g"], _env({}))[param] == value, opt
            else:
                param, _, envvar, _ = VALUE_OPTIONS[opt]
                assert envvar == p.envvar, opt
            assert param == p.name, opt
            seen[opt] = p.name
    assert set(seen) == set(VALUE_OPTIONS) | set(FLAG_OPTIONS)
    assert {p.name for p in click_publish.params} == set(DEFAULTS) | {"build_id", "globs"}


# -- a whole run, both ways --------------------------------------------------------------------

FAST_RETRIES = "from tether.publish import client\nclient.BACKOFF = 0.001\n"  # the unreachable hub: no waiting
QUICK = FAST_RETRIES + "import sys\nfrom tether.launch import main\ncode = main()\nprint('click', 'click' in sys.modules)\n" \
                       "sys.exit(code)"
CLICK = FAST_RETRIES + "from tether.cli import main\nmain()"


def _run(code: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    # a hash cache of each run's own: both ways start cold (the second would find what the first hashed)
    cache = tmp_path / f"cache-{'quick' if code == QUICK else 'click'}"
    env.update({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CACHE_HOME": str(cache)})
    return subprocess.run([sys.executable, "-c", code, "publish", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "out").mkdir(parents=True)
    (root / "out" / "a.txt").write_bytes(b"a")
    (root / "out" / "b.txt").write_bytes(b"bb")
    (root / "x").mkdir()
    (root / "x" / "A").write_bytes(b"1")
    (root / "y").mkdir()
    (root / "y" / "a").write_bytes(b"2")
    return root


@pytest.mark.parametrize(
    "args, code, quick_without_click",
    [
        (["--strip", "1", "--dry-run", "1234", "out/*.txt"], 0, True),
        (["--dry-run", "--json", "--space", "builds", "7", "out/**"], 0, True),
        (["--hub", "http://127.0.0.1:1", "1", "nothing-*"], 2, False),  # no match
        (["--hub", "http://127.0.0.1:1", "1", "../x"], 2, False),  # outside the root
        (["--hub", "http://127.0.0.1:1", "--strip", "1", "1", "*/*"], 2, False),  # names that collide
        (["--hub", "http://127.0.0.1:1", "--token", "tth_0123456789abcdef_secret", "--space", "b", "1", "out/*"], 3,
         False),  # unreachable hub; the secret is not shown
        (["1", "out/*"], 2, False),  # no hub configured
        (["--hub", "http://127.0.0.1:1", "Bad Id", "out/*"], 2, False),
    ],
)
def test_a_run_ends_the_same_way_both_ways(tree, tmp_path, args, code, quick_without_click):
    argv = ["--type", "android", "--root", str(tree), *args]
    fast, slow = _run(QUICK, argv, tmp_path), _run(CLICK, argv, tmp_path)
    assert fast.returncode == slow.returncode == code, fast.stderr + slow.stderr
    number = re.compile(r'\d+\.\d+ s|"seconds": [\d.]+')  # the time taken differs
    assert fast.stdout.endswith(f"click {not quick_without_click}\n")
    assert number.sub("#", fast.stdout.removesuffix(f"click {not quick_without_click}\n")) == number.sub("#", slow.stdout)
    assert number.sub("#", fast.stderr) == number.sub("#", slow.stderr)
    assert "Traceback" not in fast.stderr and "secret" not in fast.stdout + fast.stderr
    if code:
        assert fast.stderr.startswith("tether: error: ")


def test_help_and_usage_errors_still_come_from_click(tmp_path):
    r = _run(QUICK, ["--help"], tmp_path)
    assert r.returncode == 0 and "Usage: " in r.stdout and "--strip N" in r.stdout
    r = _run(QUICK, ["--type", "android", "--jobs", "0", "1", "x"], tmp_path)
    assert r.returncode == 2 and "Invalid value for '--jobs'" in r.stderr
