"""How tether reads sizes, durations, times and names: each rule once.

A foundation module: no I/O, no clock of its own (callers pass ``now``), no click.
Every parser raises ValueError with a message for the user; callers add where the
value came from (a caveat, an option, a setting).
"""

from __future__ import annotations

import datetime as _dt
import re
from decimal import Decimal

UTC = _dt.timezone.utc

# -- names ------------------------------------------------------------------------

#: Space names, and everything named like a space: scope targets, build types.
NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9._-]{0,63}\Z")
#: User names: the shape of a POSIX user name, so a tether user can be a Unix account.
USER_NAME_RE = re.compile(r"\A[a-z_][a-z0-9_.-]{0,31}\Z")

# -- sizes ------------------------------------------------------------------------

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}
_SIZE_RE = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*\Z")


def parse_size(text: str) -> int:
    """Parse ``500``, ``10MB`` (10**7), ``1GiB`` (2**30), ``1.5 kB``... into bytes.

    Units are case-insensitive; decimal (kB, MB, GB, TB, PB) and binary (KiB,
    MiB, GiB, TiB, PiB). A bare ``K``/``M``/``G`` is refused as ambiguous, and so is
    a fraction of a byte.
    """
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (try 500, 10MB or 1GiB)")
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _SIZE_UNITS:
        if unit in ("k", "m", "g", "t", "p"):
            raise ValueError(f"ambiguous unit {m.group(2)!r} in {text!r}: use {unit.upper()}B (decimal) or {unit.upper()}iB (binary)")
        raise ValueError(f"unknown size unit {m.group(2)!r} in {text!r} (use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    value = Decimal(number) * _SIZE_UNITS[unit]
    if value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


# -- durations and times --------------------------------------------------------------

MAX_DURATION = _dt.timedelta(days=36525)  # 100 years

_NUM = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_COMPACT_RE = re.compile(rf"({_NUM})([wdhms])")
_COMPACT_FULL_RE = re.compile(rf"(?:{_NUM}[wdhms])+")
_ISO_RE = re.compile(
    rf"P(?:(?P<w>{_NUM})W)?(?:(?P<d>{_NUM})D)?"
    rf"(?:T(?:(?P<h>{_NUM})H)?(?:(?P<m>{_NUM})M)?(?:(?P<s>{_NUM})S)?)?"
)
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_HINT = "e.g. '90s', '15m', '1h30m', '7d', '2w' or ISO 8601 'PT1H', 'P1DT2H'"


def parse_duration(s: str) -> _dt.timedelta:
    """Parse a positive duration of at most 100 years.

    Compact forms combine ``w d h m s`` (each at most once): ``"1h30m"``.
    ISO 8601 forms use weeks, days, hours, minutes and seconds: ``"P1DT2H"``;
    years and months are refused because their length is ambiguous.
    """
    if not isinstance(s, str):
        raise ValueError(f"a duration must be a string, not {type(s).__name__}")
    text = s.strip()
    if not text:
        raise ValueError(f"empty duration; {_DURATION_HINT}")
    if text.startswith(("-", "+")):
        raise ValueError(f"duration {s!r} must be positive")
    seconds = Decimal(0)
    if text[0] in "Pp":
        iso = text.upper()
        m = _ISO_RE.fullmatch(iso)
        if not m or iso in ("P", "PT") or iso.endswith("T"):
            if re.search(r"[0-9][YM]", iso.split("T")[0]):
                raise ValueError(
                    f"duration {s!r} uses years or months, whose length is ambiguous; "
                    "use weeks or days instead (e.g. 'P30D')"
                )
            raise ValueError(f"invalid ISO 8601 duration {s!r}; {_DURATION_HINT}")
        for unit in "wdhms":
            v = m.group(unit)
            if v is not None:
                seconds += Decimal(v) * _UNIT_SECONDS[unit]
    else:
        compact = text.lower()
        if not _COMPACT_FULL_RE.fullmatch(compact):
            if re.fullmatch(_NUM, compact):
                raise ValueError(f"duration {s!r} has no unit; {_DURATION_HINT}")
            raise ValueError(f"invalid duration {s!r}; {_DURATION_HINT}")
        seen: set[str] = set()
        for num, unit in _COMPACT_RE.findall(compact):
            if unit in seen:
                raise ValueError(f"duration {s!r} repeats the unit {unit!r}")
            seen.add(unit)
            seconds += Decimal(num) * _UNIT_SECONDS[unit]
    if seconds > Decimal(MAX_DURATION.total_seconds()):
        raise ValueError(f"duration {s!r} is longer than 100 years")
    td = _dt.timedelta(seconds=float(seconds))
    if td <= _dt.timedelta(0):
        raise ValueError(f"duration {s!r} must be positive")
    return td


def as_utc(t: _dt.datetime) -> _dt.datetime:
    """Naive datetimes are UTC; aware ones are converted to UTC."""
    if t.tzinfo is None or t.tzinfo.utcoffset(t) is None:
        return t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def _looks_like_duration(text: str) -> bool:
    return bool(re.fullmatch(r"[+-]?(?:[Pp].*|[0-9.]+\s*[A-Za-z][0-9A-Za-z.]*)", text))


def parse_time(s: str | _dt.datetime, *, now: _dt.datetime) -> _dt.datetime:
    """Parse a duration from ``now`` (``"1h"``: an hour from now) or an ISO 8601 time.

    Naive times are taken as UTC; a trailing ``Z`` is accepted. The result
    is always timezone-aware UTC.
    """
    if isinstance(s, _dt.datetime):
        return as_utc(s)
    text = _time_text(s)
    try:
        return as_utc(now) + parse_duration(text)
    except ValueError as e:
        dur_error = e
    except OverflowError:
        raise ValueError(f"time {s!r} is out of range") from None
    return _iso_time(s, text, dur_error)


def parse_since(s: str, *, now: _dt.datetime) -> _dt.datetime:
    """Parse a duration ago (``"1h"``: an hour before ``now``) or an ISO 8601 time, as
    :func:`parse_time` does; the result is timezone-aware UTC."""
    text = _time_text(s)
    try:
        return as_utc(now) - parse_duration(text)
    except ValueError as e:
        return _iso_time(s, text, e)


def _time_text(s: object) -> str:
    if not isinstance(s, str):
        raise ValueError(f"a time must be a string, not {type(s).__name__}")
    text = s.strip()
    if not text:
        raise ValueError("empty time; expected a duration like '1h' or an ISO 8601 time")
    return text


def _iso_time(s: str, text: str, dur_error: ValueError) -> _dt.datetime:
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        return as_utc(_dt.datetime.fromisoformat(iso))
    except ValueError:
        pass
    if _looks_like_duration(text):
        raise dur_error
    raise ValueError(
        f"{s!r} is neither a duration ({_DURATION_HINT}) "
        "nor an ISO 8601 time (e.g. '2030-01-31T12:00:00Z')"
    )


__all__ = [
    "MAX_DURATION", "NAME_RE", "USER_NAME_RE", "UTC",
    "as_utc", "parse_duration", "parse_since", "parse_size", "parse_time",
]  # fmt: skip
