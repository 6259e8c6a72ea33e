"""tether.console.read_plain, the one argument reader of the quick command lines
(tether.cli.quick and tether.publish.command; their oracle tests hold it to click's reading).
Here: what its one switch, ``joined_short``, changes."""

from __future__ import annotations

from tether.console import read_plain

VALUES = {"--jobs": ("jobs", ("int", 1, 64), None, False), "-j": ("jobs", ("int", 1, 64), None, False),
          "--tag": ("tags", "str", None, True)}  # fmt: skip
FLAGS = {"--json": ("as_json", True), "-q": ("quiet", True)}


def read(argv, **kw):
    return read_plain(argv, VALUES, FLAGS, {}, **kw)


def test_joined_short_options_are_read_only_with_the_switch():
    assert read(["-j4", "x"], joined_short=True) == ({"jobs": 4}, ["x"])
    assert read(["-j", "4", "x"], joined_short=True) == ({"jobs": 4}, ["x"])
    assert read(["-j=4"], joined_short=True) is None  # click reads the value "=4": not an int
    assert read(["-j4"]) is None
    assert read(["-j", "4"]) is None  # without the switch every short value option goes to click


def test_short_flags_and_long_options_read_the_same_either_way():
    for joined in (False, True):
        assert read(["-q", "--jobs=2", "--tag", "a", "--tag=b", "--", "-q"], joined_short=joined) == (
            {"quiet": True, "jobs": 2, "tags": ("a", "b")}, ["-q"])
        assert read(["-qj4"], joined_short=joined) is None  # combined short options: click's
        assert read(["--json=1"], joined_short=joined) is None
        assert read(["--jobs", "--json"], joined_short=joined) is None  # click might take --json as the value


def test_the_environment_fills_what_the_command_line_left_out():
    values = {"--hub": ("hub", "str", "TETHER_HUB", False)}
    assert read_plain([], values, {}, {"TETHER_HUB": "h"}) == ({"hub": "h"}, [])
    assert read_plain(["--hub", "g"], values, {}, {"TETHER_HUB": "h"}) == ({"hub": "g"}, [])
    assert read_plain([], values, {}, {"TETHER_HUB": ""}) == ({}, [])
