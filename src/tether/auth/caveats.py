"""Token caveats: parsing, evaluation and attenuation.

A sans-IO core. Nothing here touches a socket, a database or the clock:
callers pass ``now`` and the request's source address, and get back either a
value or a :class:`Refusal` / :class:`CaveatError` explaining what is wrong.

Vocabulary
----------
*scope*
    ``KIND:TARGET[/PREFIX][:ACCESS]``, e.g. ``publish:builds/android``,
    ``log:ops:read``, ``job:1234``, ``space:builds:admin``. A token with scopes
    may only act inside them.
*attenuation*
    A child token's caveats are always equal to or narrower than its parent's;
    :func:`derive` enforces that and fills in what the child inherits.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import ipaddress
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from tether import units
from tether.units import MAX_DURATION, NAME_RE, UTC
from tether.units import as_utc as _utc

__all__ = [
    "Level",
    "CaveatError",
    "AttenuationError",
    "SCOPE_KINDS",
    "PREFIX_KINDS",
    "Scope",
    "parse_scope",
    "scope_covers",
    "scope_allows",
    "path_within",
    "parse_duration",
    "parse_time",
    "parse_source",
    "Caveats",
    "Remaining",
    "Refusal",
    "check_request",
    "check_budget",
    "derive",
    "MAX_SCOPES",
    "MAX_SOURCES",
    "MAX_LABEL",
    "MAX_PREFIX",
    "MAX_DURATION",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_SCOPES = 64
MAX_SOURCES = 64
MAX_LABEL = 200
MAX_PREFIX = 1024
MAX_INT = 2**63 - 1  # fits a signed 64-bit database column



# --------------------------------------------------------------------------
# Levels and errors
# --------------------------------------------------------------------------


class Level(enum.IntEnum):
    """Access level, ordered: ``NONE < READ < WRITE < ADMIN``."""

    NONE = 0
    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, s: str) -> "Level":
        """Parse ``none|read|write|admin`` (case-insensitive)."""
        if isinstance(s, Level):
            return s
        if not isinstance(s, str):
            raise ValueError(f"access level must be a string, not {type(s).__name__}")
        try:
            return cls[s.upper()]
        except KeyError:
            raise ValueError(
                f"unknown access level {s!r}; expected one of none, read, write, admin"
            ) from None

    def __str__(self) -> str:  # IntEnum's default str() is the number
        return self.name.lower()

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class CaveatError(ValueError):
    """A caveat's input is invalid. ``caveat`` names it, ``detail`` says why."""

    def __init__(self, caveat: str, detail: str):
        super().__init__(caveat, detail)
        self.caveat = caveat
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.caveat}: {self.detail}"


class AttenuationError(CaveatError):
    """A child token asked for a caveat wider than its parent's."""


# --------------------------------------------------------------------------
# Scopes
# --------------------------------------------------------------------------

SCOPE_KINDS: tuple[str, ...] = ("publish", "log", "signal", "job", "space", "forward", "app")
#: job:GROUP/NODE is one node of a group (what `tether job create` hands each node)
#: app:SPACE/APP is one app of a space (what reaches its instances through the gateway)
PREFIX_KINDS: tuple[str, ...] = ("publish", "space", "forward", "job", "app")
#: kinds whose target is not a space (so a space: scope does not cover them):
#: job:ID, forward:USER/ROUTE
NOT_SPACE_KINDS: tuple[str, ...] = ("job", "forward")

def _bad_char(s: str) -> str | None:
    """Return a description of the first forbidden character in ``s``."""
    for ch in s:
        if ch == "\\":
            return "a backslash"
        if ch == "\x00":
            return "a NUL byte"
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
            return f"the control character {ch!r}"
    return None


def _path_problem(path: str, *, allow_colon: bool) -> str | None:
    """Why ``path`` is not a normalised relative path, or None when it is."""
    if path == "":
        return "it is empty"
    if len(path) > MAX_PREFIX:
        return f"it is longer than {MAX_PREFIX} characters"
    if path.startswith("/"):
        return "it starts with '/' (paths are relative to the space)"
    if path.endswith("/"):
        return "it ends with '/'"
    bad = _bad_char(path)
    if bad:
        return f"it contains {bad}"
    if not allow_colon and ":" in path:
        return "it contains ':' (not allowed in a scope prefix)"
    for seg in path.split("/"):
        if seg == "":
            return "it has an empty segment ('//')"
        if seg in (".", ".."):
            return f"it has a {seg!r} segment"
        if seg != seg.strip():
            return f"segment {seg!r} starts or ends with whitespace"
    return None


def path_within(path: str, prefix: str) -> bool:
    """True when ``path`` equals ``prefix`` or lies below it, component-wise.

    ``"android"`` covers ``"android"`` and ``"android/x"`` but not
    ``"androidx"``. An empty prefix covers every path.
    """
    if prefix == "":
        return True
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Scope:
    """One scope of a token: ``KIND:TARGET[/PREFIX][:ACCESS]``.

    Construction validates; invalid values raise :class:`CaveatError`
    (caveat ``"scopes"``).
    """

    kind: str
    target: str
    prefix: str = ""
    access: Level = Level.WRITE

    def __post_init__(self) -> None:
        if isinstance(self.access, int) and not isinstance(self.access, Level):
            object.__setattr__(self, "access", Level(self.access))
        _validate_scope(self, shown=None)

    def __str__(self) -> str:
        s = f"{self.kind}:{self.target}"
        if self.prefix:
            s += f"/{self.prefix}"
        if self.access != Level.WRITE:
            s += f":{self.access}"
        return s


def _validate_scope(sc: Scope, shown: str | None) -> None:
    def fail(detail: str) -> None:
        where = f"scope {shown!r}" if shown is not None else f"scope {sc.kind}:{sc.target}"
        raise CaveatError("scopes", f"{where}: {detail}")

    if sc.kind not in SCOPE_KINDS:
        fail(f"unknown kind {sc.kind!r}; expected one of {', '.join(SCOPE_KINDS)}")
    if not isinstance(sc.target, str) or not NAME_RE.match(sc.target):
        what = "job id" if sc.kind == "job" else "space name"
        fail(
            f"{what} {sc.target!r} is invalid; it must be 1-64 characters of "
            "lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if not isinstance(sc.prefix, str):
        fail("prefix must be a string")
    if sc.prefix:
        if sc.kind not in PREFIX_KINDS:
            fail(f"a path prefix is only allowed for {', '.join(PREFIX_KINDS)} scopes")
        problem = _path_problem(sc.prefix, allow_colon=False)
        if problem:
            fail(f"prefix {sc.prefix!r} is invalid: {problem}")
    if not isinstance(sc.access, Level):
        fail(f"access must be a Level, not {type(sc.access).__name__}")
    if sc.access == Level.NONE:
        fail("access 'none' is not allowed in a scope (leave the scope out instead)")


def parse_scope(s: str) -> Scope:
    """Parse ``KIND:TARGET[/PREFIX][:ACCESS]``; access defaults to write.

    Surrounding whitespace is ignored; everything else is checked strictly
    (nothing is silently stripped or normalised).
    """
    if isinstance(s, Scope):
        return s
    if not isinstance(s, str):
        raise CaveatError("scopes", f"a scope must be a string, not {type(s).__name__}")
    shown = s
    s = s.strip()
    if not s:
        raise CaveatError("scopes", "empty scope; expected KIND:TARGET[/PREFIX][:ACCESS]")
    parts = s.split(":")
    if len(parts) < 2:
        raise CaveatError(
            "scopes",
            f"scope {shown!r}: expected KIND:TARGET[/PREFIX][:ACCESS], e.g. 'publish:builds'",
        )
    if len(parts) > 3:
        raise CaveatError(
            "scopes",
            f"scope {shown!r}: too many ':'; expected KIND:TARGET[/PREFIX][:ACCESS] "
            "(a prefix may not contain ':')",
        )
    kind = parts[0].lower()
    target, slash, prefix = parts[1].partition("/")
    if slash and prefix == "":
        raise CaveatError(
            "scopes",
            f"scope {shown!r} ends with '/'; leave the '/' out to cover the whole of {target!r}",
        )
    access = Level.WRITE
    if len(parts) == 3:
        try:
            access = Level.parse(parts[2])
        except ValueError as e:
            raise CaveatError("scopes", f"scope {shown!r}: {e}") from None
    sc = object.__new__(Scope)
    for k, v in (("kind", kind), ("target", target), ("prefix", prefix), ("access", access)):
        object.__setattr__(sc, k, v)
    _validate_scope(sc, shown=shown)
    return sc


def scope_covers(parent: Scope, child: Scope, job_spaces: Mapping[str, str] | None = None) -> bool:
    """True when ``child`` is equal to or narrower than ``parent``.

    A ``space:`` scope covers every other kind on the same space except
    ``job:`` (a job scope names a job id, whose space a scope cannot know) and
    ``forward:`` (it names a user's route, not a space). ``job_spaces`` is what
    the caller knows of that: jobs and their spaces (the job capability, minting
    a new group's node tokens), so a whole-space scope covers a job of its space.
    """
    if parent.kind == "space" and child.kind == "job" and not parent.prefix:
        space = (job_spaces or {}).get(child.target)
        return space == parent.target and child.access <= parent.access
    if parent.kind != child.kind and not (parent.kind == "space" and child.kind not in NOT_SPACE_KINDS):
        return False
    if parent.target != child.target:
        return False
    if parent.prefix and not (child.prefix and path_within(child.prefix, parent.prefix)):
        return False
    return child.access <= parent.access


def scope_allows(
    scope: Scope,
    capability: str,
    *,
    space: str | None,
    job: str | None,
    path: str | None,
    level: Level,
) -> bool:
    """Does ``scope`` allow an action of ``capability`` at ``level``?

    - ``kind`` must equal ``capability``, or the scope is a ``space:`` scope.
    - ``job:`` scopes match ``job``; every other kind matches ``space``
      (so ``space:S`` also allows job actions on jobs in space ``S``).
    - A prefixed scope needs ``path`` equal to or below the prefix. ``path``
      must already be a normalised relative path ("a/b", no "..", no leading
      "/"); anything else is refused, never normalised here.
    - ``level`` must not exceed the scope's access.
    """
    if scope.kind != capability and (scope.kind != "space" or capability == "forward"):
        return False
    if scope.kind == "job":
        if job is None or scope.target != job:
            return False
    else:
        if space is None or scope.target != space:
            return False
    if scope.prefix:
        if not isinstance(path, str) or _path_problem(path, allow_colon=True) is not None:
            return False
        if not path_within(path, scope.prefix):
            return False
    return level <= scope.access


# --------------------------------------------------------------------------
# Durations, times, sources
# --------------------------------------------------------------------------

# The grammars are tether.units'; a caveat's error names the caveat.


def parse_duration(s: str, *, caveat: str = "expires") -> _dt.timedelta:
    """:func:`tether.units.parse_duration`, its refusal a CaveatError naming ``caveat``."""
    try:
        return units.parse_duration(s)
    except ValueError as e:
        raise CaveatError(caveat, str(e)) from None


def parse_time(s: str, *, now: _dt.datetime, caveat: str) -> _dt.datetime:
    """:func:`tether.units.parse_time` (a duration from ``now`` or an ISO 8601 time),
    its refusal a CaveatError naming ``caveat``."""
    try:
        return units.parse_time(s, now=now)
    except ValueError as e:
        raise CaveatError(caveat, str(e)) from None


def parse_source(s: str) -> IPNetwork:
    """Parse a CIDR network or a bare address (as a /32 or /128)."""
    if isinstance(s, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return s
    if not isinstance(s, str):
        raise CaveatError("source", f"a source must be a string, not {type(s).__name__}")
    text = s.strip()
    if not text:
        raise CaveatError("source", "empty source; expected an address or a CIDR network")
    if "%" in text:
        raise CaveatError("source", f"source {s!r}: IPv6 zone ids are not allowed")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise CaveatError(
                "source",
                f"source {s!r} is not an IP address or CIDR network "
                "(e.g. '10.0.0.0/8', '192.0.2.7', '2001:db8::/32')",
            ) from None
        raise CaveatError(
            "source", f"source {s!r} has host bits set; did you mean {loose}?"
        ) from e


# --------------------------------------------------------------------------
# Caveats
# --------------------------------------------------------------------------

_INT_FIELDS = ("max_uses", "max_files", "max_bytes")


@dataclass(frozen=True)
class Caveats:
    """A token's caveats. ``None`` in a field means "no restriction".

    Construction normalises: lists become tuples, scope and source strings
    are parsed, duplicate scopes and sources are dropped (order kept) and
    datetimes become timezone-aware UTC (naive ones are taken as UTC).
    """

    scopes: tuple[Scope, ...] | None = None
    expires_at: _dt.datetime | None = None
    not_before: _dt.datetime | None = None
    sources: tuple[IPNetwork, ...] | None = None
    max_uses: int | None = None
    max_files: int | None = None
    max_bytes: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.scopes is not None:
            if isinstance(self.scopes, (str, Scope)):
                raise CaveatError("scopes", "scopes must be a list of scopes")
            scopes = tuple(dict.fromkeys(parse_scope(x) for x in self.scopes))
            object.__setattr__(self, "scopes", scopes)
        if self.sources is not None:
            if isinstance(self.sources, (str, ipaddress.IPv4Network, ipaddress.IPv6Network)):
                raise CaveatError("source", "sources must be a list of networks")
            sources = tuple(dict.fromkeys(parse_source(x) for x in self.sources))
            object.__setattr__(self, "sources", sources)
        for name, caveat in (("expires_at", "expires"), ("not_before", "not_before")):
            v = getattr(self, name)
            if v is not None:
                if not isinstance(v, _dt.datetime):
                    raise CaveatError(caveat, f"{name} must be a datetime, not {type(v).__name__}")
                object.__setattr__(self, name, _utc(v))
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise CaveatError(name, f"{name} must be an integer, not {type(v).__name__}")
        if self.label is not None and not isinstance(self.label, str):
            raise CaveatError("label", f"label must be a string, not {type(self.label).__name__}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; times are ISO 8601 UTC ending in ``Z``."""

        def t(v: _dt.datetime | None) -> str | None:
            return None if v is None else v.astimezone(UTC).isoformat().replace("+00:00", "Z")

        return {
            "scopes": None if self.scopes is None else [str(s) for s in self.scopes],
            "expires_at": t(self.expires_at),
            "not_before": t(self.not_before),
            "sources": None if self.sources is None else [str(n) for n in self.sources],
            "max_uses": self.max_uses,
            "max_files": self.max_files,
            "max_bytes": self.max_bytes,
            "label": self.label,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Caveats":
        """Inverse of :meth:`to_json`. Unknown keys are refused (fail closed:
        a caveat this version does not understand must not be ignored)."""
        if not isinstance(d, Mapping):
            raise CaveatError("caveats", "caveats must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in known:
                raise CaveatError(str(k), "unknown caveat; refusing to ignore it")

        def t(name: str, caveat: str) -> _dt.datetime | None:
            v = d.get(name)
            if v is None:
                return None
            if not isinstance(v, str):
                raise CaveatError(caveat, f"{name} must be an ISO 8601 string")
            text = v[:-1] + "+00:00" if v.endswith(("Z", "z")) else v
            try:
                return _dt.datetime.fromisoformat(text)
            except ValueError:
                raise CaveatError(caveat, f"{name} {v!r} is not an ISO 8601 time") from None

        def lst(name: str, caveat: str) -> list[Any] | None:
            v = d.get(name)
            if v is None:
                return None
            if not isinstance(v, list):
                raise CaveatError(caveat, f"{name} must be a list")
            return v

        return cls(
            scopes=lst("scopes", "scopes"),  # type: ignore[arg-type]
            expires_at=t("expires_at", "expires"),
            not_before=t("not_before", "not_before"),
            sources=lst("sources", "source"),  # type: ignore[arg-type]
            max_uses=d.get("max_uses"),
            max_files=d.get("max_files"),
            max_bytes=d.get("max_bytes"),
            label=d.get("label"),
        )


@dataclass(frozen=True)
class Remaining:
    """What is left along a token's chain (min over the token and its
    ancestors). ``None`` means unlimited."""

    uses: int | None = None
    files: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused. ``detail`` never contains a secret."""

    caveat: str
    code: str
    detail: str


def _fmt_time(t: _dt.datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _as_address(source: object) -> IPAddress | None:
    if isinstance(source, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return source
    if isinstance(source, str):
        text = source.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return None
    return None


def check_request(
    c: Caveats, *, now: _dt.datetime, source: str | IPAddress | None
) -> Refusal | None:
    """Check the time and source caveats for one request.

    Returns None when the request may proceed. An IPv4-mapped IPv6 source
    (``::ffff:10.1.2.3``) is checked as its IPv4 address; a missing or
    unparseable source is refused when ``sources`` is set.
    """
    now = _utc(now)
    if c.expires_at is not None and now >= c.expires_at:
        return Refusal(
            "expires", "token-expired", f"the token expired at {_fmt_time(c.expires_at)}"
        )
    if c.not_before is not None and now < c.not_before:
        return Refusal(
            "not_before",
            "token-not-yet-valid",
            f"the token is not valid before {_fmt_time(c.not_before)}",
        )
    if c.sources is not None:
        allowed = ", ".join(str(n) for n in c.sources) or "(none)"
        addr = _as_address(source)
        if addr is None:
            what = "no source address is known" if source is None else "the source address is not an IP address"
            return Refusal(
                "source",
                "token-source",
                f"the token is limited to sources {allowed} and {what} for this request",
            )
        candidates: list[IPAddress] = [addr]
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            candidates.append(addr.ipv4_mapped)
        if not any(a in n for a in candidates for n in c.sources if a.version == n.version):
            shown = candidates[-1]
            return Refusal(
                "source",
                "token-source",
                f"the token is limited to sources {allowed}; this request comes from {shown}",
            )
    return None


def check_budget(r: Remaining, *, files: int = 0, bytes: int = 0) -> Refusal | None:
    """Check the use, file and byte budgets left along a token's chain.

    Refuses when no use is left, or when ``files``/``bytes`` exceed what is
    left. Returns None when the request fits.
    """
    if r.uses is not None and r.uses < 1:
        return Refusal("max_uses", "token-uses-exhausted", "the token has no uses left")
    if r.files is not None and files > r.files:
        return Refusal(
            "max_files",
            "token-files-exhausted",
            f"the request adds {files} file(s) but the token has {max(r.files, 0)} left",
        )
    if r.bytes is not None and bytes > r.bytes:
        return Refusal(
            "max_bytes",
            "token-bytes-exhausted",
            f"the request adds {bytes} byte(s) but the token has {max(r.bytes, 0)} left",
        )
    return None


def _has_control(s: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in s)


def _sanity(c: Caveats, *, now: _dt.datetime) -> None:
    """Checks every token's caveats must pass, whoever mints it."""
    if c.scopes is not None and len(c.scopes) > MAX_SCOPES:
        raise CaveatError("scopes", f"{len(c.scopes)} scopes given; at most {MAX_SCOPES} are allowed")
    if c.sources is not None and len(c.sources) > MAX_SOURCES:
        raise CaveatError("source", f"{len(c.sources)} sources given; at most {MAX_SOURCES} are allowed")
    if c.expires_at is not None and c.expires_at <= now:
        raise CaveatError("expires", f"the expiry {_fmt_time(c.expires_at)} is not in the future")
    if c.expires_at is not None and c.not_before is not None and c.not_before >= c.expires_at:
        raise CaveatError(
            "not_before",
            f"not_before {_fmt_time(c.not_before)} is not before the expiry "
            f"{_fmt_time(c.expires_at)}",
        )
    for name in _INT_FIELDS:
        v = getattr(c, name)
        if v is not None and v < 1:
            raise CaveatError(name, f"{name} must be at least 1, got {v}")
        if v is not None and v > MAX_INT:
            raise CaveatError(name, f"{name} {v} is too large")
    if c.label is not None:
        if len(c.label) > MAX_LABEL:
            raise CaveatError("label", f"label is {len(c.label)} characters; at most {MAX_LABEL} are allowed")
        if _has_control(c.label):
            raise CaveatError("label", "label contains control characters")


def _join(items: Iterable[object]) -> str:
    return ", ".join(str(i) for i in items) or "(none)"


# caveat name -> the matching Remaining field (also the noun used in messages)
_NOUNS = {"max_uses": "uses", "max_files": "files", "max_bytes": "bytes"}


def derive(
    parent: Caveats | None,
    requested: Caveats,
    *,
    remaining: Remaining = Remaining(),
    now: _dt.datetime,
    job_spaces: Mapping[str, str] | None = None,
) -> Caveats:
    """Build a child token's caveats from its parent's and the request.

    ``parent is None`` means an unrestricted parent: ``requested`` is
    returned after sanity checks. Otherwise a field left None inherits the
    parent's value (for the counted caveats, what is left of the parent's
    budget), and a field that is set must be equal or narrower, else
    :class:`AttenuationError` names the caveat and both values.
    """
    now = _utc(now)
    if not isinstance(requested, Caveats):
        raise TypeError("requested must be Caveats")
    _sanity(requested, now=now)
    if parent is None:
        return requested

    # scopes
    scopes = requested.scopes
    if scopes is None:
        scopes = parent.scopes
    elif parent.scopes is not None:
        for sc in scopes:
            if not any(scope_covers(ps, sc, job_spaces) for ps in parent.scopes):
                raise AttenuationError(
                    "scopes",
                    f"child asks for scope {str(sc)!r} but the parent only has {_join(parent.scopes)}",
                )

    # times
    expires_at = requested.expires_at
    if expires_at is None:
        expires_at = parent.expires_at
    elif parent.expires_at is not None and expires_at > parent.expires_at:
        raise AttenuationError(
            "expires",
            f"child asks to expire at {_fmt_time(expires_at)} but the parent expires at "
            f"{_fmt_time(parent.expires_at)}",
        )
    not_before = requested.not_before
    if not_before is None:
        not_before = parent.not_before
    elif parent.not_before is not None and not_before < parent.not_before:
        raise AttenuationError(
            "not_before",
            f"child asks to be valid from {_fmt_time(not_before)} but the parent is not valid "
            f"before {_fmt_time(parent.not_before)}",
        )

    # sources
    sources = requested.sources
    if sources is None:
        sources = parent.sources
    elif parent.sources is not None:
        for net in sources:
            if not any(
                net.version == pn.version and net.subnet_of(pn)  # type: ignore[arg-type]
                for pn in parent.sources
            ):
                raise AttenuationError(
                    "source",
                    f"child asks for source {net} but the parent is limited to {_join(parent.sources)}",
                )

    # counted budgets
    counted: dict[str, int | None] = {}
    for name in _INT_FIELDS:
        left = getattr(remaining, _NOUNS[name])
        bound = left if left is not None else getattr(parent, name)
        want = getattr(requested, name)
        noun = _NOUNS[name]
        if want is None:
            if bound is not None and bound < 1:
                raise AttenuationError(name, f"the parent has no {noun} left")
            counted[name] = bound
        else:
            if bound is not None and want > bound:
                raise AttenuationError(
                    name, f"child asks for {want} {noun} but the parent has {max(bound, 0)} left"
                )
            counted[name] = want

    child = Caveats(
        scopes=scopes,
        expires_at=expires_at,
        not_before=not_before,
        sources=sources,
        max_uses=counted["max_uses"],
        max_files=counted["max_files"],
        max_bytes=counted["max_bytes"],
        label=requested.label if requested.label is not None else parent.label,
    )
    _sanity(child, now=now)
    return child
