"""remaphore's command line is Go's `flag` package: tether's reading of it is held to a model of that package.

The model below is written from Go's documentation of package flag and its
`FlagSet.parseOne`, and `time.ParseDuration`; it is deliberately a separate,
literal rendering, not tether's code. The property test feeds both the real
click commands (`remaphore`, and `tether signal`'s flag interface) and the model
the same argv and requires the same outcome: the same flag values and
positional arguments, or both a usage error (exit 2), or both help (exit 0).
"""

from __future__ import annotations

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.signal.cli import remaphore, signal
from tests.signal.conftest import finish

# -- the model ---------------------------------------------------------------------------

GO_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


class GoError(Exception):
    pass


def go_parse_duration(s: str) -> int:
    """time.ParseDuration, step by step as Go does it (fractions: only whether they parse)."""
    orig, neg, d = s, False, 0
    if s and s[0] in "-+":
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if s == "":
        raise GoError(f"time: invalid duration {orig!r}")
    while s:
        if not (s[0] == "." or s[0].isascii() and s[0].isdigit()):
            raise GoError("invalid duration")
        i = 0
        while i < len(s) and s[i].isascii() and s[i].isdigit():
            i += 1
        pre, v, s = i > 0, int(s[:i] or "0"), s[i:]
        post, frac = False, ""
        if s and s[0] == ".":
            s = s[1:]
            j = 0
            while j < len(s) and s[j].isascii() and s[j].isdigit():
                j += 1
            post, frac, s = j > 0, s[:j], s[j:]
        if not pre and not post:
            raise GoError("invalid duration")
        k = 0
        while k < len(s) and not (s[k] == "." or s[k].isascii() and s[k].isdigit()):
            k += 1
        if k == 0:
            raise GoError("missing unit")
        unit, s = s[:k], s[k:]
        if unit not in GO_UNITS:
            raise GoError("unknown unit")
        d += v * GO_UNITS[unit] + (int(frac) * GO_UNITS[unit]) // 10 ** len(frac) if frac else v * GO_UNITS[unit]
        if d > 2**63 - (0 if neg else 1):
            raise GoError("invalid duration")
    return -d if neg else d


GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class _LastSet(dict):
    """A dict whose order is that of each key's last setting."""

    def __setitem__(self, key, value) -> None:
        self.pop(key, None)
        super().__setitem__(key, value)


def go_flag_parse(argv: list[str], kinds: dict[str, str]):
    """FlagSet.Parse with ContinueOnError: ('ok', values, args) | ('error',) | ('help',).

    kinds: name -> 'bool' | 'string' | 'duration'. ``values`` lists each flag once, in
    the order of its last setting (so flags that share a variable can be resolved).
    """
    values = _LastSet()
    args = list(argv)
    while True:
        if not args:
            return "ok", values, []
        s = args[0]
        if len(s) < 2 or s[0] != "-":
            return "ok", values, args
        num_minuses = 1
        if s[1] == "-":
            num_minuses += 1
            if len(s) == 2:
                return "ok", values, args[1:]
        name = s[num_minuses:]
        if len(name) == 0 or name[0] == "-" or name[0] == "=":
            return ("error",)
        args = args[1:]
        has_value, value = False, ""
        for i in range(1, len(name)):
            if name[i] == "=":
                value, has_value, name = name[i + 1:], True, name[:i]
                break
        if name not in kinds:
            if name in ("help", "h"):
                return ("help",)
            return ("error",)
        if kinds[name] == "bool":
            if has_value:
                if value in GO_TRUE:
                    values[name] = True
                elif value in GO_FALSE:
                    values[name] = False
                else:
                    return ("error",)
            else:
                values[name] = True
        else:
            if not has_value and args:
                has_value, value, args = True, args[0], args[1:]
            if not has_value:
                return ("error",)
            if kinds[name] == "duration":
                try:
                    values[name] = go_parse_duration(value)
                except GoError:
                    return ("error",)
            else:
                values[name] = value


# -- what tether's commands do with the same argv -------------------------------------------


def kinds_of(cmd: click.Command) -> tuple[dict[str, str], dict[str, str]]:
    kinds, param_of = {}, {}
    for p in cmd.params:
        if isinstance(p, click.Option):
            for opt in p.opts:
                name = opt.lstrip("-")
                kinds[name] = "bool" if p.is_flag else "duration" if p.name == "timeout" else "string"
                param_of[name] = p.name
    return kinds, param_of


def tether_parse(cmd: click.Command, argv: list[str]):
    try:
        ctx = cmd.make_context(cmd.name or "signal", list(argv))
    except click.exceptions.Exit as exc:
        return ("help",) if exc.exit_code == 0 else ("error",)
    except click.UsageError:
        return ("error",)
    return "ok", ctx.params


def assert_agrees(cmd: click.Command, argv: list[str]) -> None:
    kinds, param_of = kinds_of(cmd)
    kinds.pop("max-handlers")  # an int range on top of Go's string: left out of the model
    want = go_flag_parse(argv, kinds)
    got = tether_parse(cmd, argv)
    assert got[0] == want[0], (argv, want, got)
    if want[0] != "ok":
        return
    _, values, args = want
    params = got[1]
    positional = next(p.name for p in cmd.params if isinstance(p, click.Argument))
    assert list(params[positional]) == args, (argv, want, params)
    # Flags that are spellings of one option (-u, -uuid) share one variable, as in Go when
    # both are bound to it: the last one set wins.
    final = {param_of[name]: (name, value) for name, value in values.items()}
    for param, (name, value) in final.items():
        have = params[param]
        if value is False:
            assert not have, (argv, name, have)
        else:
            assert have == value, (argv, name, have, value)


# -- the property ----------------------------------------------------------------------------

FLAG_NAMES = ["s", "r", "D", "d", "p", "u", "v", "o", "t", "S", "c", "C", "durable", "verbose", "h", "help", "x", "zz",
              "timeout", "uuid", "once", "any-destination"]
VALUES = ["x", "", "1s", "-1s", "1h2m3s4ms", ".5s", "1.s", "1.5h", "0", "-0", "+5s", "5", "1sx", "1m.5s", "3µs",
          "true", "false", "1", "0", "T", "F", "yes", "=", "-o", "--", "-", "a b", "send", "2562047h48m"]


@st.composite
def tokens(draw) -> str:
    kind = draw(st.sampled_from(["flag", "flag=value", "value", "special"]))
    dashes = draw(st.sampled_from(["-", "--"]))
    if kind == "flag":
        return dashes + draw(st.sampled_from(FLAG_NAMES))
    if kind == "flag=value":
        return f"{dashes}{draw(st.sampled_from(FLAG_NAMES))}={draw(st.sampled_from(VALUES))}"
    if kind == "value":
        return draw(st.sampled_from(VALUES) | st.text(max_size=4))
    return draw(st.sampled_from(["--", "-", "---x", "-=x", "--=x", "-", "---"]))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(tokens(), max_size=7))
def test_remaphore_reads_argv_as_gos_flag_package(argv):
    assert_agrees(remaphore, argv)


@settings(max_examples=200, deadline=None)
@given(st.lists(tokens(), max_size=7))
def test_tether_signal_flag_interface_reads_argv_as_go(argv):
    if argv and argv[0] in signal.commands:  # a subcommand: tether's own syntax, not remaphore's
        return
    assert_agrees(signal, argv)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789.+-smhnuµμx", max_size=10))
def test_durations_as_go_parses_them(text):
    from tether.signal.core import parse_duration

    try:
        want = go_parse_duration(text)
    except GoError:
        want = None
    try:
        got = parse_duration(text, allow_negative=True)
    except ValueError:
        got = None
    if want is None or got is None or "." not in text:
        assert got == want, text
    else:  # fractions: Go rounds through a float; the same to within a nanosecond per part
        assert abs(got - want) <= len(text), text


# -- the spellings the issue names, one by one --------------------------------------------------


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["-u=x"], {"uuid": "x"}),
        (["--u", "x"], {"uuid": "x"}),
        (["--u=x"], {"uuid": "x"}),
        (["-u", "-o"], {"uuid": "-o", "once": False}),  # a value flag takes the next argument, whatever it is
        (["-u="], {"uuid": ""}),
        (["-t=1s"], {"timeout": 10**9}),
        (["-t", "-1s"], {"timeout": -(10**9)}),
        (["-r=true"], {"request_reply": True}),
        (["-o=false"], {"once": False}),
        (["-o", "-o=0"], {"once": False}),  # the last one wins
        (["-o", "false"], {"once": True, "args": ("false",)}),  # a boolean never takes the next argument
        (["--", "-o"], {"once": False, "args": ("-o",)}),
        (["-o", "--", "--", "x"], {"once": True, "args": ("--", "x")}),
        (["script", "-o"], {"once": False, "args": ("script", "-o")}),  # flags end at the first non-flag
        (["-", "-o"], {"once": False, "args": ("-", "-o")}),
        (["--durable=true", "-verbose"], {"durable": True, "verbose": True}),
    ],
)
def test_go_spellings(argv, expect):
    ctx = remaphore.make_context("remaphore", argv)
    for key, value in expect.items():
        assert ctx.params[key] == value, (argv, key, ctx.params[key])


@pytest.mark.parametrize(
    "argv, words",
    [(["-u"], "flag needs an argument: -u"), (["-o=maybe"], "invalid boolean value 'maybe' for -o"),
     (["---u", "x"], "bad flag syntax: ---u"), (["-=x"], "bad flag syntax"), (["-x"], "not defined: -x"),
     (["-t=soon"], "invalid value 'soon' for flag -t")],
)
def test_go_refusals_exit_2_and_say_why(argv, words):
    from click.testing import CliRunner

    r = CliRunner().invoke(remaphore, argv)
    assert r.exit_code == 2 and words in r.output, r.output


def test_waiter_with_go_spelling_matches_a_sender(site):
    """`-u=x` used to wait for the uuid `=x`: a waiter that silently never matched."""
    site.node("com.a")
    site.node("com.b")
    site.trust("com.b", "com.a")
    site.write()
    w = site.start("com.b", "-t=10s", "-u=upload_done", prog="remaphore")
    r = site.run("com.a", "-s=true", "--u", "upload_done", "--v=ping")
    assert r.returncode == 0, r.stderr
    code, _, err = finish(w)
    assert code == 0, err


@settings(max_examples=200, deadline=None)
@given(st.lists(tokens(), max_size=6))
def test_the_spelled_out_modes_read_argv_as_go_too(argv):
    """`tether signal wait -u=x` must not wait for `=x` either."""
    from tether.signal.cli import wait_cmd

    assert_agrees(wait_cmd, argv)
    ctx = wait_cmd.make_context("wait", ["-u=x", "--timeout=1s", "-o=false", "--", "-script"])
    assert (ctx.params["uuid"], ctx.params["timeout"], ctx.params["once"], ctx.params["script"]) == (
        "x", 10**9, False, ("-script",))


def test_two_spellings_of_one_flag_the_last_wins():
    """Found by the property test: -u and -uuid name one option, so `-u -s -uuid=x` leaves x."""
    assert_agrees(remaphore, ["-u", "-s", "-uuid=x"])
    assert_agrees(remaphore, ["-uuid=x", "-u", "y"])
