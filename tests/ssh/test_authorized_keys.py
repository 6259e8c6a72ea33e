"""The authorized_keys parser and checker, against friendly and hostile lines."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from tether.cli import main
from tether.ssh.authorized_keys import check_line, check_text, forced_line, parse_line

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
FP = "SHA256:abcdefABCDEF0123456789+/xyz"
SAFE = f'restrict,command="/usr/bin/tether ssh-serve alice" {KEY} tether:alice:{FP}'


def reasons(line: str) -> list[str]:
    r = check_line(line)
    assert r is not None
    return r.reasons


def test_generated_line_is_safe_and_parses():
    line = forced_line("/usr/bin/tether", "alice", KEY, FP)
    assert line == SAFE
    k = parse_line(line)
    assert k is not None and k.keytype == "ssh-ed25519" and k.comment == f"tether:alice:{FP}"
    assert k.values("command") == ["/usr/bin/tether ssh-serve alice"]
    assert reasons(line) == []


def test_odd_command_paths_are_quoted_and_escaped():
    line = forced_line('/opt/my "odd" dir/te\'ther', "bob", KEY, FP)
    k = parse_line(line)
    assert k is not None
    import shlex

    assert shlex.split(k.values("command")[0]) == ['/opt/my "odd" dir/te\'ther', "ssh-serve", "bob"]
    assert reasons(line) == []


@pytest.mark.parametrize("user", ["Alice", "a b", "x;rm -rf /", "-o", ""])
def test_forced_line_refuses_bad_user_names(user):
    with pytest.raises(ValueError):
        forced_line("/usr/bin/tether", user, KEY, FP)


def test_forced_line_refuses_control_characters():
    with pytest.raises(ValueError):
        forced_line("/usr/bin/tether\nssh-rsa AAAA", "alice", KEY, FP)


def test_blank_and_comment_lines_are_skipped():
    assert check_line("") is None
    assert check_line("   \t ") is None
    assert check_line("# restrict,command=\"x\" ssh-ed25519 AAAA") is None


def test_bare_key_gets_a_shell():
    rs = reasons(KEY + " alice@laptop")
    assert any("no forced command" in r for r in rs)
    assert any("port-forwarding allowed" in r for r in rs)


def test_seed_style_line_without_no_pty_is_unsafe():
    line = f'command="/usr/bin/python3 app.py pushpullserver user1",no-port-forwarding,no-x11-forwarding,no-agent-forwarding {KEY}'
    assert reasons(line) == ["pty allowed (add restrict, or no-pty)"]
    assert reasons(line.replace("no-agent-forwarding", "no-agent-forwarding,no-pty")) == []


@pytest.mark.parametrize("opt", ["port-forwarding", "agent-forwarding", "X11-forwarding", "pty"])
def test_reenabled_after_restrict(opt):
    line = f'restrict,{opt},command="/usr/bin/tether ssh-serve a" {KEY}'
    assert any(f"{opt.lower()} allowed" in r for r in reasons(line))


def test_restrict_after_permission_wins():
    assert reasons(f'port-forwarding,restrict,command="t ssh-serve a" {KEY}') == []


@pytest.mark.parametrize("opt", ['permitopen="localhost:22"', 'permitlisten="0.0.0.0:80"', 'environment="LD_PRELOAD=/tmp/x.so"',
                                 'tunnel="0"'])
def test_risky_value_options(opt):
    assert reasons(f'restrict,command="t ssh-serve a",{opt} {KEY}')


def test_quoted_commas_and_spaces_do_not_split_options():
    line = f'restrict,from="10.0.0.1,10.0.0.2",command="t ssh-serve a, no-pty ok" {KEY} c'
    k = parse_line(line)
    assert k is not None
    assert k.values("from") == ["10.0.0.1,10.0.0.2"]
    assert k.values("command") == ["t ssh-serve a, no-pty ok"]
    assert reasons(line) == []


def test_escaped_quote_inside_command():
    line = f'restrict,command="echo \\"hi, there\\" ssh-serve a" {KEY}'
    k = parse_line(line)
    assert k is not None and k.values("command") == ['echo "hi, there" ssh-serve a']
    assert reasons(line) == []


def test_hostile_quote_cannot_smuggle_a_second_key():
    # the quote closes early: the rest is not a key line sshd accepts as safe
    line = f'restrict,command="t" ssh-serve a" {KEY}'
    rs = reasons(line)
    assert rs and rs[0].startswith("invalid line")


@pytest.mark.parametrize("line", [
    f'restrict,command="unterminated {KEY}',
    f'restrict,command=unquoted {KEY}',
    f'restrict,no-such-option {KEY}',
    f'restrict,command="x",, {KEY}',
    'restrict,command="x"',
    'restrict,command="x" ssh-ed25519 not*base64',
    'restrict,command="x" ssh-foo AAAA',
    f'restrict,command="x",command="y" {KEY}',
    f'restrict,command="" {KEY}',
    f'restrict,command="x\x00y" {KEY}',
])
def test_invalid_or_ambiguous_lines_are_reported(line):
    assert reasons(line)


def test_option_names_are_case_insensitive():
    assert reasons(f'RESTRICT,Command="t ssh-serve a" {KEY}') == []


def test_check_text_line_numbers():
    text = "# header\n\n" + SAFE + "\n" + KEY + "\n" + SAFE + "\r\n"
    reports = check_text(text)
    assert [r.lineno for r in reports] == [3, 4, 5]
    assert [r.safe for r in reports] == [True, False, True]


@given(st.text(max_size=200))
def test_checker_never_crashes_and_never_calls_garbage_safe(line):
    r = check_line(line)
    if r is not None and r.safe:
        k = parse_line(line)
        assert k is not None and len(k.values("command")) == 1


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters=[chr(c) for c in range(127, 160)]),
               min_size=1, max_size=60))
def test_any_command_path_round_trips(path):
    import shlex

    line = forced_line("/" + path, "alice", KEY, FP)
    k = parse_line(line)
    assert k is not None and check_line(line).safe
    assert shlex.split(k.values("command")[0]) == ["/" + path, "ssh-serve", "alice"]


def test_key_check_cli(tmp_path):
    f = tmp_path / "authorized_keys"
    f.write_text(f"# ok\n{SAFE}\n{KEY} bare\n")
    r = CliRunner().invoke(main, ["key", "check", str(f)])
    assert r.exit_code == 1
    assert f"{f}:3: no forced command" in r.output
    f.write_text(SAFE + "\n")
    r = CliRunner().invoke(main, ["key", "check", str(f), "--json"])
    assert r.exit_code == 0, r.output
    assert '"safe": true' in r.output
