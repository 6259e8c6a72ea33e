"""Tests for tether.auth.caveats: examples for every rule, plus properties."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.auth.caveats import (
    AttenuationError,
    Caveats,
    CaveatError,
    Level,
    Refusal,
    Remaining,
    Scope,
    check_budget,
    check_request,
    derive,
    parse_duration,
    parse_scope,
    parse_source,
    parse_time,
    path_within,
    scope_allows,
    scope_covers,
)

UTC = dt.timezone.utc
NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
H = dt.timedelta(hours=1)

# --------------------------------------------------------------------------
# Level and errors
# --------------------------------------------------------------------------


def test_level_parse_and_order():
    assert Level.parse("READ") is Level.READ
    assert Level.parse("admin") is Level.ADMIN
    assert Level.parse("None") is Level.NONE
    assert Level.NONE < Level.READ < Level.WRITE < Level.ADMIN
    assert str(Level.WRITE) == "write"
    assert f"{Level.READ}" == "read"
    with pytest.raises(ValueError, match="unknown access level"):
        Level.parse("owner")


def test_caveat_error_str_and_fields():
    e = CaveatError("expires", "too long")
    assert (e.caveat, e.detail, str(e)) == ("expires", "too long", "expires: too long")
    assert isinstance(AttenuationError("x", "y"), CaveatError)
    assert isinstance(e, ValueError)


# --------------------------------------------------------------------------
# Scopes
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, scope",
    [
        ("publish:builds", Scope("publish", "builds", "", Level.WRITE)),
        ("publish:builds/android", Scope("publish", "builds", "android", Level.WRITE)),
        ("publish:builds/android/x:admin", Scope("publish", "builds", "android/x", Level.ADMIN)),
        ("log:ops:read", Scope("log", "ops", "", Level.READ)),
        ("signal:lab", Scope("signal", "lab", "", Level.WRITE)),
        ("job:1234", Scope("job", "1234", "", Level.WRITE)),
        ("space:builds:read", Scope("space", "builds", "", Level.READ)),
        ("space:builds/a b/c:READ", Scope("space", "builds", "a b/c", Level.READ)),
        ("  publish:builds  ", Scope("publish", "builds")),
    ],
)
def test_parse_scope_examples(text, scope):
    assert parse_scope(text) == scope


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("publish:builds:write", "publish:builds"),
        ("log:ops:read", "log:ops:read"),
        ("publish:builds/android/x:admin", "publish:builds/android/x:admin"),
        ("PUBLISH:builds:Write", "publish:builds"),
    ],
)
def test_scope_str_is_canonical(text, canonical):
    assert str(parse_scope(text)) == canonical


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty scope"),
        ("publish", "expected KIND:TARGET"),
        ("publish:builds:read:x", "too many ':'"),
        ("blob:builds", "unknown kind 'blob'"),
        ("publish:Builds", "space name 'Builds' is invalid"),
        ("publish:", "space name '' is invalid"),
        ("publish:/x", "space name '' is invalid"),
        ("publish:-x", "is invalid"),
        ("job:" + "1" * 65, "job id"),
        ("publish:builds/", "ends with '/'"),
        ("publish:builds//x", "starts with '/'"),
        ("publish:builds/x/", "ends with '/'"),
        ("publish:builds/x//y", "empty segment"),
        ("publish:builds/./x", "'.' segment"),
        ("publish:builds/x/..", "'..' segment"),
        ("publish:builds/x\\y", "backslash"),
        ("publish:builds/x\x00y", "NUL"),
        ("publish:builds/x\ny", "control character"),
        ("publish:builds/x /y", "whitespace"),
        ("publish:builds/" + "a" * 1025, "longer than 1024"),
        ("log:ops/x", "only allowed for publish, space, forward, job"),
        ("signal:lab/x", "only allowed for publish, space, forward, job"),
        ("publish:builds:none", "'none' is not allowed"),
        ("publish:builds:owner", "unknown access level"),
    ],
)
def test_parse_scope_refusals(text, fragment):
    with pytest.raises(CaveatError) as ei:
        parse_scope(text)
    assert ei.value.caveat == "scopes"
    assert fragment in ei.value.detail
    if text.strip():
        assert repr(text) in ei.value.detail or "publish:" in ei.value.detail


def test_parse_scope_rejects_non_string():
    with pytest.raises(CaveatError):
        parse_scope(42)  # type: ignore[arg-type]


def test_scope_constructor_validates():
    with pytest.raises(CaveatError):
        Scope("log", "ops", "x")
    with pytest.raises(CaveatError):
        Scope("space", "ops", "", Level.NONE)
    assert Scope("space", "ops", "", 1).access is Level.READ  # type: ignore[arg-type]


def test_path_within_is_component_wise():
    assert path_within("android", "android")
    assert path_within("android/x", "android")
    assert not path_within("androidx", "android")
    assert not path_within("andro", "android")
    assert path_within("anything", "")


def test_scope_covers_examples():
    s = parse_scope
    assert scope_covers(s("publish:b"), s("publish:b/android:read"))
    assert scope_covers(s("publish:b/android"), s("publish:b/android/x"))
    assert not scope_covers(s("publish:b/android"), s("publish:b/androidx"))
    assert not scope_covers(s("publish:b/android"), s("publish:b"))
    assert not scope_covers(s("publish:b:read"), s("publish:b"))
    assert not scope_covers(s("publish:b"), s("publish:c"))
    assert not scope_covers(s("publish:b"), s("log:b"))
    assert scope_covers(s("space:b"), s("log:b"))
    assert scope_covers(s("space:b:admin"), s("publish:b/x:admin"))
    assert scope_covers(s("space:b/x"), s("publish:b/x/y"))
    assert not scope_covers(s("space:b/x"), s("log:b"))
    assert not scope_covers(s("space:b"), s("job:b"))
    # a whole-space scope covers a job of its space once the caller knows the job's space
    assert scope_covers(s("space:b:admin"), s("job:g/g.0"), {"g": "b"})
    assert scope_covers(s("space:b"), s("job:g/g.0:read"), {"g": "b"})
    assert not scope_covers(s("space:b"), s("job:g/g.0"), {"g": "c"})  # a job of another space
    assert not scope_covers(s("space:b"), s("job:g/g.0"), {"other": "b"})  # a job it knows nothing of
    assert not scope_covers(s("space:b/x"), s("job:g/g.0"), {"g": "b"})  # a path, not the whole space
    assert not scope_covers(s("space:b:read"), s("job:g/g.0"), {"g": "b"})  # wider access
    assert not scope_covers(s("log:b"), s("space:b"))
    assert scope_covers(s("job:1"), s("job:1:read"))


def test_scope_allows_examples():
    s = parse_scope

    def allows(scope, cap, level=Level.READ, space="b", job=None, path=None):
        return scope_allows(s(scope), cap, space=space, job=job, path=path, level=level)

    assert allows("publish:b", "publish", Level.WRITE)
    assert not allows("publish:b", "publish", Level.ADMIN)
    assert not allows("publish:b", "publish", space="c")
    assert not allows("publish:b", "publish", space=None)
    assert not allows("publish:b", "log")
    assert allows("space:b", "log")
    assert allows("space:b", "signal", Level.WRITE)
    # a prefixed scope needs a path within the prefix
    assert allows("publish:b/android", "publish", path="android")
    assert allows("publish:b/android", "publish", path="android/app.apk")
    assert not allows("publish:b/android", "publish", path="androidx/app.apk")
    assert not allows("publish:b/android", "publish", path=None)
    assert not allows("publish:b/android", "publish", path="android/../ios/x")
    assert not allows("publish:b/android", "publish", path="android//x")
    assert not allows("publish:b/android", "publish", path="/android/x")
    assert not allows("space:b/android", "log")
    # unprefixed scopes ignore the path
    assert allows("publish:b", "publish", path="../weird")
    # jobs: job scopes match the job id; space scopes match the job's space
    assert allows("job:42", "job", job="42")
    assert not allows("job:42", "job", job="43")
    assert not allows("job:42", "job", job=None)
    assert allows("space:b", "job", job="42")
    assert not allows("space:c", "job", job="42")
    assert not allows("publish:b", "job", job="42")
    assert not allows("job:42", "publish", job="42")
    # job:GROUP/NODE: one node of a group (tether job hands each node such a token)
    assert allows("job:42/n1", "job", job="42", path="n1")
    assert not allows("job:42/n1", "job", job="42", path="n2")
    assert not allows("job:42/n1", "job", job="42", path=None)
    assert scope_covers(s("job:42"), s("job:42/n1")) and not scope_covers(s("job:42/n1"), s("job:42/n2"))


# --------------------------------------------------------------------------
# Durations, times, sources, sizes
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("1h30m", 5400),
        ("1d2h3m4s", 86400 + 7200 + 184),
        ("1.5h", 5400),
        (" 1H ", 3600),
        ("PT1H", 3600),
        ("P1DT2H", 93600),
        ("P2W", 14 * 86400),
        ("PT90M", 5400),
        ("pt30s", 30),
        ("P1D", 86400),
    ],
)
def test_parse_duration_examples(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("0s", "positive"),
        ("0h0m", "positive"),
        ("PT0S", "positive"),
        ("-1h", "positive"),
        ("90", "no unit"),
        ("soon", "invalid duration"),
        ("1x", "invalid duration"),
        ("1h1h", "repeats"),
        ("1 h", "invalid duration"),
        ("P", "invalid ISO"),
        ("PT", "invalid ISO"),
        ("P1DT", "invalid ISO"),
        ("PT1M1H", "invalid ISO"),
        ("P1Y", "years or months"),
        ("P2M", "years or months"),
        ("36600d", "100 years"),
        ("P9999999999999999999999D", "100 years"),
    ],
)
def test_parse_duration_refusals(text, fragment):
    with pytest.raises(CaveatError) as ei:
        parse_duration(text)
    assert ei.value.caveat == "expires"
    assert fragment in ei.value.detail


def test_parse_duration_names_caveat():
    with pytest.raises(CaveatError) as ei:
        parse_duration("nope", caveat="not_before")
    assert ei.value.caveat == "not_before"
    with pytest.raises(CaveatError):
        parse_duration(3600)  # type: ignore[arg-type]


def test_parse_time():
    assert parse_time("1h", now=NOW, caveat="expires") == NOW + H
    t = parse_time("2031-01-02T03:04:05Z", now=NOW, caveat="expires")
    assert t == dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert t.tzinfo is UTC
    naive = parse_time("2031-01-02T03:04:05", now=NOW, caveat="expires")
    assert naive == t and naive.utcoffset() == dt.timedelta(0)
    other = parse_time("2031-01-02T05:04:05+02:00", now=NOW, caveat="expires")
    assert other == t and other.tzinfo is UTC
    assert parse_time("2031-01-02", now=NOW, caveat="x") == dt.datetime(2031, 1, 2, tzinfo=UTC)
    # naive `now` is taken as UTC
    assert parse_time("1h", now=NOW.replace(tzinfo=None), caveat="x") == NOW + H


@pytest.mark.parametrize(
    "text, fragment",
    [("0s", "positive"), ("tomorrow", "neither a duration"), ("2031-13-01", "neither"), ("", "empty")],
)
def test_parse_time_refusals(text, fragment):
    with pytest.raises(CaveatError) as ei:
        parse_time(text, now=NOW, caveat="not_before")
    assert ei.value.caveat == "not_before"
    assert fragment in ei.value.detail


@pytest.mark.parametrize(
    "text, net",
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("2001:db8::1", "2001:db8::1/128"),
        (" 192.0.2.0/24 ", "192.0.2.0/24"),
    ],
)
def test_parse_source_examples(text, net):
    assert parse_source(text) == ipaddress.ip_network(net)


def test_parse_source_host_bits_suggests_network():
    with pytest.raises(CaveatError) as ei:
        parse_source("10.0.0.1/8")
    assert ei.value.caveat == "source"
    assert "did you mean 10.0.0.0/8?" in ei.value.detail
    with pytest.raises(CaveatError, match="did you mean 2001:db8::/32"):
        parse_source("2001:db8::1/32")


@pytest.mark.parametrize("text", ["", "example.com", "10.0.0.0/33", "300.1.1.1", "fe80::1%eth0"])
def test_parse_source_refusals(text):
    with pytest.raises(CaveatError) as ei:
        parse_source(text)
    assert ei.value.caveat == "source"


# --------------------------------------------------------------------------
# Caveats container
# --------------------------------------------------------------------------


def test_caveats_normalises():
    c = Caveats(
        scopes=["publish:b", parse_scope("publish:b:write"), "log:b:read"],  # type: ignore[arg-type]
        sources=["10.0.0.0/8", "10.0.0.0/8"],  # type: ignore[arg-type]
        expires_at=dt.datetime(2031, 1, 1),
    )
    assert c.scopes == (parse_scope("publish:b"), parse_scope("log:b:read"))
    assert c.sources == (ipaddress.ip_network("10.0.0.0/8"),)
    assert c.expires_at == dt.datetime(2031, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "kwargs, caveat",
    [
        ({"scopes": "publish:b"}, "scopes"),
        ({"sources": "10.0.0.0/8"}, "source"),
        ({"max_uses": "3"}, "max_uses"),
        ({"max_files": True}, "max_files"),
        ({"expires_at": "2031-01-01"}, "expires"),
        ({"label": 3}, "label"),
    ],
)
def test_caveats_type_errors(kwargs, caveat):
    with pytest.raises(CaveatError) as ei:
        Caveats(**kwargs)
    assert ei.value.caveat == caveat


def test_caveats_json_round_trip():
    c = Caveats(
        scopes=(parse_scope("publish:b/x:read"), parse_scope("job:7")),
        expires_at=NOW + H,
        not_before=NOW,
        sources=(parse_source("10.0.0.0/8"), parse_source("2001:db8::/32")),
        max_uses=3,
        max_files=10,
        max_bytes=1000,
        label="ci build 7",
    )
    j = c.to_json()
    assert j["scopes"] == ["publish:b/x:read", "job:7"]
    assert j["expires_at"] == "2030-06-01T13:00:00Z"
    assert j["sources"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert Caveats.from_json(j) == c
    empty = Caveats()
    assert Caveats.from_json(empty.to_json()) == empty
    assert all(v is None for v in empty.to_json().values())


def test_caveats_from_json_fails_closed():
    with pytest.raises(CaveatError) as ei:
        Caveats.from_json({"max_uses": 1, "max_requests_per_second": 5})
    assert ei.value.caveat == "max_requests_per_second"
    with pytest.raises(CaveatError):
        Caveats.from_json({"scopes": "publish:b"})
    with pytest.raises(CaveatError):
        Caveats.from_json({"expires_at": "soon"})
    with pytest.raises(CaveatError):
        Caveats.from_json({"expires_at": 12})
    with pytest.raises(CaveatError):
        Caveats.from_json(["nope"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# check_request / check_budget
# --------------------------------------------------------------------------


def test_check_request_unrestricted():
    assert check_request(Caveats(), now=NOW, source=None) is None


def test_check_request_expiry_and_not_before():
    c = Caveats(expires_at=NOW + H, not_before=NOW - H)
    assert check_request(c, now=NOW, source=None) is None
    r = check_request(c, now=NOW + H, source=None)
    assert r == Refusal("expires", "token-expired", r.detail) and "expired" in r.detail
    r = check_request(c, now=NOW - 2 * H, source=None)
    assert r is not None and (r.caveat, r.code) == ("not_before", "token-not-yet-valid")
    assert check_request(c, now=NOW - H, source=None) is None  # not_before is inclusive


def test_check_request_sources():
    c = Caveats(sources=(parse_source("10.0.0.0/8"), parse_source("2001:db8::/32")))
    assert check_request(c, now=NOW, source="10.1.2.3") is None
    assert check_request(c, now=NOW, source=ipaddress.ip_address("10.9.9.9")) is None
    assert check_request(c, now=NOW, source="::ffff:10.1.2.3") is None
    assert check_request(c, now=NOW, source="2001:db8::5") is None
    assert check_request(c, now=NOW, source="[2001:db8::5]") is None
    for bad in ("11.0.0.1", "::ffff:11.0.0.1", "2001:db9::1", None, "not-an-ip", ""):
        r = check_request(c, now=NOW, source=bad)
        assert r is not None and (r.caveat, r.code) == ("source", "token-source"), bad
        assert "10.0.0.0/8" in r.detail


def test_check_budget():
    assert check_budget(Remaining()) is None
    assert check_budget(Remaining(), files=10**9, bytes=10**18) is None
    assert check_budget(Remaining(uses=1, files=2, bytes=100), files=2, bytes=100) is None
    r = check_budget(Remaining(uses=0))
    assert r is not None and (r.caveat, r.code) == ("max_uses", "token-uses-exhausted")
    r = check_budget(Remaining(files=2), files=3)
    assert r is not None and (r.caveat, r.code) == ("max_files", "token-files-exhausted")
    assert "3" in r.detail and "2" in r.detail
    r = check_budget(Remaining(bytes=10), bytes=11)
    assert r is not None and (r.caveat, r.code) == ("max_bytes", "token-bytes-exhausted")
    assert check_budget(Remaining(files=0)) is None


# --------------------------------------------------------------------------
# derive
# --------------------------------------------------------------------------

PARENT = Caveats(
    scopes=(parse_scope("publish:builds/android"), parse_scope("log:ops:read")),
    expires_at=NOW + 24 * H,
    not_before=NOW - H,
    sources=(parse_source("10.0.0.0/8"),),
    max_uses=10,
    max_files=100,
    max_bytes=10**9,
    label="parent",
)


def test_derive_unrestricted_parent_returns_requested():
    req = Caveats(scopes=(parse_scope("space:x:admin"),), max_uses=5)
    assert derive(None, req, now=NOW) is req
    assert derive(None, Caveats(), now=NOW) == Caveats()


def test_derive_inherits_everything():
    child = derive(PARENT, Caveats(), now=NOW)
    assert child == PARENT


def test_derive_inherits_remaining_budget():
    child = derive(PARENT, Caveats(), remaining=Remaining(uses=3, files=None, bytes=5), now=NOW)
    assert (child.max_uses, child.max_files, child.max_bytes) == (3, 100, 5)


def test_derive_narrower_is_kept():
    req = Caveats(
        scopes=(parse_scope("publish:builds/android/nightly:read"),),
        expires_at=NOW + H,
        not_before=NOW,
        sources=(parse_source("10.1.0.0/16"),),
        max_uses=1,
        max_files=5,
        max_bytes=1000,
        label="child",
    )
    assert derive(PARENT, req, now=NOW) == req


@pytest.mark.parametrize(
    "req, caveat, fragments",
    [
        (Caveats(scopes=(parse_scope("publish:builds"),)), "scopes", ["publish:builds", "publish:builds/android"]),
        (Caveats(scopes=(parse_scope("publish:builds/androidx"),)), "scopes", ["androidx"]),
        (Caveats(scopes=(parse_scope("log:ops"),)), "scopes", ["log:ops"]),
        (Caveats(expires_at=NOW + 48 * H), "expires", ["2030-06-03T12:00:00Z", "2030-06-02T12:00:00Z"]),
        (Caveats(not_before=NOW - 2 * H), "not_before", ["2030-06-01T10:00:00Z", "2030-06-01T11:00:00Z"]),
        (Caveats(sources=(parse_source("11.0.0.0/8"),)), "source", ["11.0.0.0/8", "10.0.0.0/8"]),
        (Caveats(sources=(parse_source("0.0.0.0/0"),)), "source", ["0.0.0.0/0"]),
        (Caveats(sources=(parse_source("::/0"),)), "source", ["::/0"]),
        (Caveats(max_uses=11), "max_uses", ["11 uses", "10 left"]),
        (Caveats(max_files=101), "max_files", ["101 files", "100 left"]),
        (Caveats(max_bytes=10**9 + 1), "max_bytes", ["1000000001 bytes"]),
    ],
)
def test_derive_refuses_wider(req, caveat, fragments):
    with pytest.raises(AttenuationError) as ei:
        derive(PARENT, req, now=NOW)
    assert ei.value.caveat == caveat
    for f in fragments:
        assert f in ei.value.detail


def test_derive_remaining_bounds_requests():
    with pytest.raises(AttenuationError) as ei:
        derive(PARENT, Caveats(max_uses=10), remaining=Remaining(uses=3), now=NOW)
    assert ei.value.detail == "child asks for 10 uses but the parent has 3 left"
    with pytest.raises(AttenuationError, match="no uses left"):
        derive(PARENT, Caveats(), remaining=Remaining(uses=0), now=NOW)
    # an unlimited parent with a chain budget: remaining still bounds
    with pytest.raises(AttenuationError):
        derive(Caveats(), Caveats(max_files=3), remaining=Remaining(files=2), now=NOW)
    assert derive(Caveats(), Caveats(), remaining=Remaining(bytes=7), now=NOW).max_bytes == 7


def test_derive_space_scope_parent_covers_other_kinds():
    parent = Caveats(scopes=(parse_scope("space:b:read"),))
    child = derive(parent, Caveats(scopes=(parse_scope("log:b:read"), parse_scope("publish:b/x:read"))), now=NOW)
    assert child.scopes is not None and len(child.scopes) == 2
    with pytest.raises(AttenuationError):
        derive(parent, Caveats(scopes=(parse_scope("log:b"),)), now=NOW)
    with pytest.raises(AttenuationError):
        derive(parent, Caveats(scopes=(parse_scope("job:b:read"),)), now=NOW)


def test_derive_unscoped_parent_allows_any_scope():
    parent = Caveats(max_uses=3)
    child = derive(parent, Caveats(scopes=(parse_scope("space:x:admin"),)), now=NOW)
    assert child.scopes == (parse_scope("space:x:admin"),) and child.max_uses == 3


def test_derive_ipv6_source_subnet():
    parent = Caveats(sources=(parse_source("2001:db8::/32"),))
    assert derive(parent, Caveats(sources=(parse_source("2001:db8:1::/48"),)), now=NOW).sources
    with pytest.raises(AttenuationError):
        derive(parent, Caveats(sources=(parse_source("10.0.0.0/8"),)), now=NOW)


@pytest.mark.parametrize(
    "req, caveat",
    [
        (Caveats(expires_at=NOW), "expires"),
        (Caveats(expires_at=NOW - H), "expires"),
        (Caveats(expires_at=NOW + H, not_before=NOW + H), "not_before"),
        (Caveats(max_uses=0), "max_uses"),
        (Caveats(max_files=-1), "max_files"),
        (Caveats(max_bytes=0), "max_bytes"),
        (Caveats(label="x" * 201), "label"),
        (Caveats(label="a\nb"), "label"),
        (Caveats(scopes=tuple(parse_scope(f"log:s{i}") for i in range(65))), "scopes"),
        (Caveats(sources=tuple(parse_source(f"10.0.0.{i}") for i in range(65))), "source"),
    ],
)
def test_derive_sanity_checks(req, caveat):
    for parent in (None, Caveats()):
        with pytest.raises(CaveatError) as ei:
            derive(parent, req, now=NOW)
        assert ei.value.caveat == caveat
        assert not isinstance(ei.value, AttenuationError)


def test_derive_sanity_applies_to_inherited_values():
    expired_parent = Caveats(expires_at=NOW - H)
    with pytest.raises(CaveatError, match="not in the future"):
        derive(expired_parent, Caveats(), now=NOW)
    parent = Caveats(expires_at=NOW + H)
    with pytest.raises(CaveatError) as ei:
        derive(parent, Caveats(not_before=NOW + 2 * H), now=NOW)
    assert ei.value.caveat == "not_before"


def test_derive_limits_and_label_edges_accepted():
    req = Caveats(
        scopes=tuple(parse_scope(f"log:s{i}") for i in range(64)),
        sources=tuple(parse_source(f"10.0.0.{i}") for i in range(64)),
        label="x" * 200,
    )
    assert derive(None, req, now=NOW) == req
    assert derive(PARENT, Caveats(label="new"), now=NOW).label == "new"


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,10}", fullmatch=True)
segments = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cf", "Cs"), blacklist_characters="/\\:\x00"
    ),
    min_size=1,
    max_size=6,
).filter(lambda s: s not in (".", "..") and s == s.strip())
small_segments = st.sampled_from(["a", "b", "ab", "a.b", "x y"])
levels = st.sampled_from([Level.READ, Level.WRITE, Level.ADMIN])


@st.composite
def scopes(draw, seg=segments, targets=names):
    kind = draw(st.sampled_from(["publish", "log", "signal", "job", "space"]))
    target = draw(targets)
    prefix = ""
    if kind in ("publish", "space", "job"):
        prefix = "/".join(draw(st.lists(seg, max_size=3)))
    return Scope(kind, target, prefix, draw(levels))


# Small alphabets so that coverage relations actually occur.
small_scopes = scopes(seg=small_segments, targets=st.sampled_from(["s", "t", "1"]))
small_paths = st.one_of(
    st.none(), st.lists(small_segments, min_size=1, max_size=4).map("/".join),
    st.sampled_from(["", "/a", "a/", "a//b", "a/../b", "../a"]),
)


@given(scopes())
def test_prop_scope_round_trip(s):
    assert parse_scope(str(s)) == s


@given(small_scopes)
def test_prop_covers_reflexive(s):
    assert scope_covers(s, s)


@given(small_scopes, small_scopes, small_scopes)
def test_prop_covers_transitive(a, b, c):
    if scope_covers(a, b) and scope_covers(b, c):
        assert scope_covers(a, c)


@st.composite
def covered_pairs(draw):
    """A scope and a scope narrower than (or equal to) it."""
    p = draw(small_scopes)
    kinds = [p.kind]
    if p.kind == "space":
        kinds += ["publish", "log", "signal"]
    if p.prefix:
        kinds = [k for k in kinds if k in ("publish", "space", "job")]
    kind = draw(st.sampled_from(kinds))
    prefix = ""
    if kind in ("publish", "space", "job"):
        extra = draw(st.lists(small_segments, max_size=2))
        prefix = "/".join(([p.prefix] if p.prefix else []) + extra)
    access = draw(st.sampled_from([lv for lv in (Level.READ, Level.WRITE, Level.ADMIN) if lv <= p.access]))
    return p, Scope(kind, p.target, prefix, access)


@given(covered_pairs())
def test_prop_constructed_narrower_is_covered(pair):
    p, c = pair
    assert scope_covers(p, c)


@given(
    st.one_of(covered_pairs(), st.tuples(small_scopes, small_scopes)),
    st.sampled_from(["publish", "log", "signal", "job", "space"]),
    st.sampled_from([None, "s", "t", "1"]),
    st.sampled_from([None, "s", "t", "1"]),
    small_paths,
    st.sampled_from(list(Level)),
)
def test_prop_covered_scope_allows_no_more(pair, cap, space, job, path, level):
    p, c = pair
    if scope_covers(p, c) and scope_allows(c, cap, space=space, job=job, path=path, level=level):
        assert scope_allows(p, cap, space=space, job=job, path=path, level=level)


@given(st.text(max_size=30))
def test_prop_parse_scope_only_raises_caveat_error(text):
    try:
        s = parse_scope(text)
    except CaveatError:
        return
    assert parse_scope(str(s)) == s


@given(st.text(max_size=20))
def test_prop_parsers_only_raise_caveat_error(text):
    for fn in (
        parse_duration,
        parse_source,
            lambda t: parse_time(t, now=NOW, caveat="expires"),
    ):
        try:
            fn(text)
        except CaveatError:
            pass


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from("smhdw"))
def test_prop_duration_units(n, unit):
    secs = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit] * n
    if secs > 36525 * 86400:
        with pytest.raises(CaveatError):
            parse_duration(f"{n}{unit}")
    else:
        assert parse_duration(f"{n}{unit}") == dt.timedelta(seconds=secs)
        assert parse_duration(f"P{'T' if unit in 'hms' else ''}{n}{unit.upper()}") == dt.timedelta(seconds=secs)


networks = st.one_of(
    st.builds(
        lambda a, p: ipaddress.ip_network((a, p), strict=False),
        st.sampled_from(["10.0.0.0", "10.1.0.0", "10.1.2.0", "192.168.0.0", "0.0.0.0"]),
        st.sampled_from([0, 8, 16, 24, 32]),
    ),
    st.builds(
        lambda a, p: ipaddress.ip_network((a, p), strict=False),
        st.sampled_from(["2001:db8::", "2001:db8:1::", "::"]),
        st.sampled_from([0, 32, 48, 128]),
    ),
)
opt_int = st.one_of(st.none(), st.integers(min_value=-1, max_value=12))
times = st.one_of(st.none(), st.integers(min_value=-3, max_value=6).map(lambda h: NOW + h * H))


@st.composite
def caveats(draw):
    return Caveats(
        scopes=draw(st.one_of(st.none(), st.lists(small_scopes, max_size=3).map(tuple))),
        expires_at=draw(times),
        not_before=draw(times),
        sources=draw(st.one_of(st.none(), st.lists(networks, max_size=3).map(tuple))),
        max_uses=draw(opt_int),
        max_files=draw(opt_int),
        max_bytes=draw(opt_int),
        label=draw(st.one_of(st.none(), st.sampled_from(["a", "b"]))),
    )


def _within(child: Caveats, parent: Caveats, remaining: Remaining) -> None:
    """Assert every caveat of ``child`` is equal to or narrower than ``parent``'s."""
    if parent.scopes is not None:
        assert child.scopes is not None
        assert all(any(scope_covers(p, c) for p in parent.scopes) for c in child.scopes)
    if parent.expires_at is not None:
        assert child.expires_at is not None and child.expires_at <= parent.expires_at
    if parent.not_before is not None:
        assert child.not_before is not None and child.not_before >= parent.not_before
    if parent.sources is not None:
        assert child.sources is not None
        assert all(
            any(c.version == p.version and c.subnet_of(p) for p in parent.sources)  # type: ignore[arg-type]
            for c in child.sources
        )
    for name, rem in (("max_uses", "uses"), ("max_files", "files"), ("max_bytes", "bytes")):
        bound = getattr(remaining, rem)
        if bound is None:
            bound = getattr(parent, name)
        if bound is not None:
            v = getattr(child, name)
            assert v is not None and 1 <= v <= bound


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    caveats(),
    caveats(),
    st.builds(Remaining, uses=opt_int, files=opt_int, bytes=opt_int),
)
def test_prop_derive_never_widens(parent, requested, remaining):
    try:
        child = derive(parent, requested, remaining=remaining, now=NOW)
    except CaveatError:
        return
    _within(child, parent, remaining)
    # and the child is a valid token in its own right: deriving it again
    # from itself, unchanged, succeeds
    assert derive(child, Caveats(), now=NOW) == child


@settings(max_examples=200)
@given(caveats(), caveats())
def test_prop_derive_chain_stays_within_root(root, requested):
    try:
        mid = derive(root, Caveats(), now=NOW)
        leaf = derive(mid, requested, now=NOW)
    except CaveatError:
        return
    _within(leaf, root, Remaining())


@given(caveats())
def test_prop_json_round_trip(c):
    assert Caveats.from_json(c.to_json()) == c


@given(
    st.lists(networks, min_size=1, max_size=3),
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.sampled_from(["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1", "192.168.0.1"]),
    ),
)
def test_prop_source_check_matches_membership(nets, addr):
    c = Caveats(sources=tuple(nets))
    a = ipaddress.ip_address(addr)
    forms = [a] + ([a.ipv4_mapped] if getattr(a, "ipv4_mapped", None) else [])
    expected = any(f in n for f in forms for n in nets if f.version == n.version)
    assert (check_request(c, now=NOW, source=addr) is None) == expected
