"""tether.units: the one grammar for sizes, durations, times and names."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether import units
from tether.units import NAME_RE, USER_NAME_RE, parse_duration, parse_since, parse_size, parse_time

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

# -- sizes --------------------------------------------------------------------------------------

# The cases of the old caveat size parser (tests/auth/test_caveats.py) that hold in the
# grammar kept (the command line's); see test_cli_help.py for its own.
@pytest.mark.parametrize(
    "text, n",
    [("123", 123), ("10MB", 10_000_000), ("10mb", 10_000_000), ("1GiB", 2**30), ("1gib", 2**30),
     ("2 KiB", 2048), ("1.5kB", 1500), ("3b", 3), ("1TB", 10**12)],
)  # fmt: skip
def test_parse_size_examples(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["-1", "0.1", "", "MB", "10XB", "ten", "500k", "1Ki", ".5kB", "1 0"])
def test_parse_size_refusals(text):
    with pytest.raises(ValueError):
        parse_size(text)


UNITS = ["", "B", "kB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB", "PiB"]


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(UNITS), st.sampled_from(["", " "]),
       st.booleans())  # fmt: skip
def test_prop_size_round_trip(n, unit, space, upper):
    text = f"{n}{space}{unit.upper() if upper else unit}"
    assert parse_size(text) == n * units._SIZE_UNITS[unit.lower()]
    assert parse_size(f"  {text} ") == parse_size(text)


@given(st.text(max_size=20))
def test_prop_size_refuses_junk_with_value_error_only(text):
    try:
        n = parse_size(text)
    except ValueError:
        return
    assert isinstance(n, int) and n >= 0
    assert text.strip()[:1].isdigit()


# -- durations and times ----------------------------------------------------------------------


@given(st.dictionaries(st.sampled_from("wdhms"), st.integers(min_value=0, max_value=1000), min_size=1))
def test_prop_duration_round_trip(parts):
    seconds = sum(n * units._UNIT_SECONDS[u] for u, n in parts.items())
    compact = "".join(f"{parts[u]}{u}" for u in "wdhms" if u in parts)
    iso = "P" + "".join(f"{parts[u]}{u.upper()}" for u in "wd" if u in parts)
    if any(u in parts for u in "hms"):
        iso += "T" + "".join(f"{parts[u]}{u.upper()}" for u in "hms" if u in parts)
    if seconds == 0:
        for text in (compact, iso):
            with pytest.raises(ValueError, match="positive"):
                parse_duration(text)
        return
    assert parse_duration(compact) == dt.timedelta(seconds=seconds)
    assert parse_duration(iso) == dt.timedelta(seconds=seconds)


@given(st.text(max_size=20))
def test_prop_time_parsers_refuse_junk_with_value_error_only(text):
    for parse in (parse_duration, lambda t: parse_time(t, now=NOW), lambda t: parse_since(t, now=NOW)):
        try:
            parse(text)
        except ValueError:
            pass


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from("smhdw"))
def test_prop_since_is_the_time_that_long_before_now(n, unit):
    text = f"{n}{unit}"
    try:
        d = parse_duration(text)
    except ValueError:  # longer than 100 years
        with pytest.raises(ValueError):
            parse_since(text, now=NOW)
        return
    assert parse_since(text, now=NOW) == NOW - d
    assert parse_time(text, now=NOW) == NOW + d


def test_since_takes_an_iso_time_as_it_is():
    assert parse_since("2031-01-02T03:04:05Z", now=NOW) == dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert parse_since("2031-01-02", now=NOW.replace(tzinfo=None)) == dt.datetime(2031, 1, 2, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("yesterday", now=NOW)
    with pytest.raises(ValueError, match="repeats"):
        parse_since("1h1h", now=NOW)


# -- names ----------------------------------------------------------------------------------------

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-"


@given(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"), st.text(NAME_CHARS, max_size=63))
def test_prop_names(first, rest):
    assert NAME_RE.match(first + rest)
    assert not NAME_RE.match(first + rest + "\n")
    assert not NAME_RE.match(first + rest + "x" * (64 - len(rest)))  # 65 characters


@given(st.text(max_size=70))
def test_prop_names_refuse_junk(text):
    ok = 1 <= len(text) <= 64 and text[0] in NAME_CHARS[:36] and all(c in NAME_CHARS for c in text)
    assert bool(NAME_RE.match(text)) == ok
    user_ok = 1 <= len(text) <= 32 and text[0] in "abcdefghijklmnopqrstuvwxyz_" and all(
        c in "abcdefghijklmnopqrstuvwxyz0123456789_.-" for c in text)
    assert bool(USER_NAME_RE.match(text)) == user_ok
