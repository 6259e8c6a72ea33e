"""The sans-IO signal core: envelope, matcher, filters, replay, output formatting."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.signal import core as c

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")  # RFC 8032 test 1
KEY = c.SigningKey.from_seed(SEED)
OTHER = c.SigningKey.from_seed(bytes(range(32)))
T0 = 0x17A2B3C4D5E6F708
SKEW = 5_000_000_000

# A fixed vector, checked byte for byte.
VECTOR = (
    b"FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z,"
    b"5vxm32icnU86PTDfH8rvZ7St7BUwve5t1JdHYzpGV5SffZ3Djk52zTCJgem4meHQFuUScDg7o8UvQNp2KLRJraJM,"
    b"com.crypto.*,17a2b3c4d5e6f708,75706c6f61645f646f6e65,ping,Q,hello, world"
)


def msg(key=KEY, *, dest="**", verb="ping", payload="hi", t=T0, uuid=b"u" * 12, request=False) -> bytes:
    return c.encode(key, destination=dest, verb=verb, payload=payload, time_ns=t, uuid=uuid, request=request)


# -- keys and base58 ---------------------------------------------------------------


def test_rfc8032_public_key_and_base58():
    assert KEY.public.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert KEY.public_b58 == "FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z"
    assert KEY.private == SEED + KEY.public
    assert c.SigningKey.from_base58(KEY.public_b58, KEY.private_b58) == KEY


def test_base58_leading_zeros():
    assert c.b58encode(b"\x00\x00\x01") == "112"
    assert c.b58decode("112") == b"\x00\x00\x01"


@pytest.mark.parametrize("text", ["0OIl", "abc!", "ÿ", ""])
def test_bad_public_keys_refused(text):
    with pytest.raises(c.KeyError_):
        c.parse_public_key(text)


def test_wrong_length_and_mismatched_private_keys_refused():
    with pytest.raises(c.KeyError_):
        c.SigningKey.from_base58(KEY.public_b58, c.b58encode(KEY.private[:63]))
    with pytest.raises(c.KeyError_):
        c.SigningKey.from_base58(KEY.public_b58, OTHER.private_b58)
    with pytest.raises(c.KeyError_):
        c.parse_public_key(c.b58encode(b"\x01" * 31))


# -- envelope ------------------------------------------------------------------------


def test_fixed_vector_encoding_and_signature():
    raw = msg(dest="com.crypto.*", payload="hello, world", uuid=c.make_uuid("upload_done"), request=True)
    assert raw == VECTOR
    env = c.parse(VECTOR)
    assert c.verify(env)
    assert env.signed == b"com.crypto.*,17a2b3c4d5e6f708,75706c6f61645f646f6e65,ping,Q,hello, world"
    assert (env.destination, env.time_ns, env.uuid, env.verb, env.request, env.payload) == (
        "com.crypto.*", T0, b"upload_done", "ping", True, "hello, world"
    )
    assert c.reply_subject("remaphore", VECTOR) == "remaphore.2a7668943ce1111b75109d606c27f490f08b4e4ccad20c23d6fd52fadfa16625"
    assert c.reply_subject("remaphore", VECTOR) == "remaphore." + hashlib.sha256(VECTOR).hexdigest()


def test_time_is_unpadded_lowercase_hex():
    assert msg(t=0).split(b",")[3] == b"0"
    assert msg(t=255).split(b",")[3] == b"ff"


@pytest.mark.parametrize("field", ["dest", "verb"])
def test_comma_in_destination_or_verb_refused_on_send(field):
    with pytest.raises(c.EnvelopeError):
        msg(**{field: "a,b"})


@given(
    dest=st.text().filter(lambda s: "," not in s),
    verb=st.text().filter(lambda s: "," not in s),
    payload=st.text(),
    t=st.integers(0, 2**63 - 1),
    uuid=st.binary(max_size=12),
    request=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_envelope_round_trip(dest, verb, payload, t, uuid, request):
    raw = msg(dest=dest, verb=verb, payload=payload, t=t, uuid=uuid, request=request)
    env = c.parse(raw)
    assert c.verify(env)
    assert (env.sender, env.destination, env.verb, env.payload, env.time_ns, env.uuid, env.request) == (
        KEY.public, dest, verb, payload, t, uuid, request
    )


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_parse_never_raises_anything_else(raw):
    try:
        env = c.parse(raw)
    except c.EnvelopeError:
        return
    c.verify(env)


@given(st.integers(0, len(VECTOR) - 1))
def test_truncated_vector_is_refused_or_fails_verification(cut):
    try:
        env = c.parse(VECTOR[:cut])
    except c.EnvelopeError:
        return
    assert not c.verify(env)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"a,b,c",
        b"a,b,c,d,e,f,g",
        VECTOR.replace(b"FVen3X", b"0Ven3X", 1),  # bad base58 in key
        VECTOR.replace(b",5vxm", b",0vxm", 1),  # bad base58 in signature
        c.b58encode(KEY.public[:31]).encode() + VECTOR[VECTOR.index(b","):],  # short key
        VECTOR.replace(b"17a2b3c4d5e6f708", b"17A2B3C4D5E6F708"),  # uppercase hex time
        VECTOR.replace(b"17a2b3c4d5e6f708", b"017a2b3c4d5e6f708"),  # padded time
        VECTOR.replace(b"17a2b3c4d5e6f708", b"-17a2b3c4d5e6f708"),
        VECTOR.replace(b"17a2b3c4d5e6f708", b"ffffffffffffffffff"),  # overflows int64
        VECTOR.replace(b",75706c", b",7z706c"),  # bad hex uuid
        VECTOR.replace(b",75706c", b",5706c"),  # odd length uuid
        VECTOR.replace(b",Q,", b",X,"),
    ],
)
def test_hostile_payloads_are_envelope_errors(raw):
    with pytest.raises(c.EnvelopeError):
        c.parse(raw)


def test_tampered_payload_fails_verification():
    env = c.parse(VECTOR.replace(b"hello", b"HELLO"))
    assert not c.verify(env)
    other_sig = c.b58encode(OTHER.sign(c.parse(VECTOR).signed)).encode()
    env = c.parse(VECTOR.replace(VECTOR.split(b",")[1], other_sig))
    assert not c.verify(env)


# -- uuid and subjects ------------------------------------------------------------------


def test_make_uuid():
    assert c.make_uuid("upload_done") == b"upload_done"
    assert c.make_uuid("x" * 12) == b"x" * 12
    assert c.make_uuid("x" * 13) == hashlib.sha256(b"x" * 13).digest()[:12]
    assert c.make_uuid(None, rand=lambda n: b"r" * n) == b"r" * 12
    assert c.make_uuid("", rand=lambda n: b"r" * n) == b"r" * 12


def test_subjects():
    assert c.broadcast_subject("remaphore") == "remaphore.all"
    assert c.broadcast_subject("remaphore", "") == "remaphore.all"
    assert c.broadcast_subject("remaphore", "builds") == "remaphore.builds"
    assert c.make_subject("", "x") == "x.all"


# -- destination matching ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, pattern, expected",
    [
        ("com.crypto.host.us", "com.crypto.host.us", True),
        ("com.crypto.host.us", "com.crypto.*.us", True),
        ("com.crypto.host.us", "com.crypto.**", True),
        ("com.crypto.host.us", "**", True),
        ("com.crypto", "com.crypto.**", False),  # ** needs one or more segments
        ("com.crypto.host.us", "com.crypto.host", False),
        ("com.crypto.host", "com.crypto.host.us", False),
        ("com.crypto.host.us", "com.cr*o.h*t.*s", True),
        ("com.crypto.host.us", "com.**.us", False),  # ** only last
        ("ab", "ab*b", False),  # prefix and suffix may not overlap
        ("abb", "ab*b", True),
        ("a", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa*", False),  # remaphore panics here
        ("a", "*aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", False),
        ("abc", "a*b*c", False),  # one wildcard per segment
        ("abc", "a**", False),
        ("a*c", "a*c", False),  # a name with * never matches
        ("", "", True),
        ("", "**", True),
        ("x", "", False),
    ],
)
def test_match_examples(name, pattern, expected):
    assert c.match_destination(name, pattern) is expected


segment = st.text(alphabet="abc*", max_size=5)
name_seg = st.text(alphabet="abc", max_size=4)


def _reference(name: str, pattern: str) -> bool:
    """An independent regex model of the rules."""
    if "*" in name:
        return False
    pats = pattern.split(".")
    parts = []
    for i, p in enumerate(pats):
        if p == "**":
            if i != len(pats) - 1:
                return False
            parts.append(r"[^.]*(?:\.[^.]*)*")
            continue
        if p.count("*") > 1:
            return False
        if "*" in p:
            pre, post = p.split("*")
            parts.append(re.escape(pre) + r"[^.]*" + re.escape(post))
        else:
            parts.append(re.escape(p))
    return re.fullmatch(r"\.".join(parts), name) is not None


@given(st.lists(name_seg, min_size=1, max_size=5), st.lists(segment, min_size=1, max_size=5))
@settings(max_examples=500)
def test_matcher_agrees_with_reference(names, pats):
    name, pattern = ".".join(names), ".".join(pats)
    assert c.match_destination(name, pattern) == _reference(name, pattern)


@given(st.text(), st.text())
@settings(max_examples=500)
def test_matcher_never_crashes(name, pattern):
    assert c.match_destination(name, pattern) in (True, False)


@given(st.lists(name_seg.filter(bool), min_size=1, max_size=6))
def test_exact_name_and_doublestar_properties(names):
    name = ".".join(names)
    assert c.match_destination(name, name)
    assert c.match_destination(name, "**")
    for k in range(len(names)):
        assert c.match_destination(name, ".".join([*names[:k], "**"]))
    assert not c.match_destination(name, ".".join([*names, "**"]))


@given(name_seg, st.text(alphabet="abc", max_size=4), st.text(alphabet="abc", max_size=4))
def test_star_segment_needs_room_for_prefix_and_suffix(seg, pre, post):
    matched = c.match_destination(seg, f"{pre}*{post}")
    assert matched == (len(seg) >= len(pre) + len(post) and seg.startswith(pre) and seg.endswith(post))


# -- receiving ----------------------------------------------------------------------------------


def receiver(**filt) -> c.Receiver:
    peers = c.Peers([c.Peer("com.x.sender", KEY.public, frozenset({"ping", "deploy"})), c.Peer("com.x.other", OTHER.public, frozenset({"*"}))])
    f = c.Filter(local_destination=filt.pop("local", "com.x.me"), **filt)
    return c.Receiver(peers, SKEW, f)


def test_accepts_a_good_message_with_destmatch():
    got = receiver().receive(msg(dest="com.x.*"), T0)
    assert isinstance(got, c.Accepted)
    assert got.destmatch == "com.x.me"
    assert got.peer.destination == "com.x.sender"


@pytest.mark.parametrize(
    "raw, kind",
    [
        (b"garbage", c.RefusalKind.MALFORMED),
        (msg(c.SigningKey.from_seed(b"\x07" * 32)), c.RefusalKind.UNKNOWN_PEER),
        (msg(verb="reboot"), c.RefusalKind.VERB_NOT_ALLOWED),
        (msg().replace(b",hi", b",ho"), c.RefusalKind.BAD_SIGNATURE),
        (msg(t=T0 - SKEW - 1), c.RefusalKind.CLOCK_SKEW),
        (msg(t=T0 + SKEW + 1), c.RefusalKind.CLOCK_SKEW),
    ],
    ids=["garbage", "unknown", "verb", "signature", "old", "future"],
)
def test_refusals(raw, kind):
    got = receiver().receive(raw, T0)
    assert isinstance(got, c.Refused) and got.kind is kind, got
    assert str(got)


def test_edge_of_skew_is_accepted():
    assert isinstance(receiver().receive(msg(t=T0 - SKEW), T0), c.Accepted)


def test_star_verb_peer_may_send_anything():
    assert isinstance(receiver().receive(msg(OTHER, verb="anything"), T0), c.Accepted)


def test_replay_refused_within_window():
    r = receiver()
    raw = msg()
    assert isinstance(r.receive(raw, T0), c.Accepted)
    again = r.receive(raw, T0 + 1)
    assert isinstance(again, c.Refused) and again.kind is c.RefusalKind.REPLAY
    late = r.receive(raw, T0 + SKEW + 1)
    assert isinstance(late, c.Refused) and late.kind is c.RefusalKind.CLOCK_SKEW
    # a filtered-out message is still remembered
    r2 = receiver(verbs=frozenset({"deploy"}))
    assert isinstance(r2.receive(raw, T0), c.Ignored)
    assert r2.receive(raw, T0).kind is c.RefusalKind.REPLAY


def test_replay_cache_is_bounded():
    cache = c.ReplayCache(window_ns=10, max_entries=100)
    for i in range(1000):
        assert not cache.seen(i.to_bytes(4, "big"), time_ns=5, now_ns=5)
        assert len(cache) <= 100


def test_replay_cache_expires():
    cache = c.ReplayCache(window_ns=10)
    assert not cache.seen(b"a", 0, 0)
    assert cache.seen(b"a", 0, 10)
    for i in range(5):
        cache.seen(bytes([i]), 100, 100)
    assert b"a" not in cache._expiry


@pytest.mark.parametrize(
    "filt, raw, passes",
    [
        ({}, msg(dest="com.y.*"), False),
        ({"match_destination": False}, msg(dest="com.y.*"), True),
        ({"exact_destination": "com.y.*"}, msg(dest="com.y.*"), True),
        ({"exact_destination": "com.x.me"}, msg(dest="com.x.*"), False),
        ({"uuid": c.make_uuid("upload_done")}, msg(uuid=b"upload_done"), True),
        ({"uuid": c.make_uuid("upload_done")}, msg(uuid=b"other"), False),
        ({"verbs": frozenset({"deploy", "ping"})}, msg(verb="ping"), True),
        ({"verbs": frozenset({"deploy"})}, msg(verb="ping"), False),
        ({"sender": KEY.public}, msg(), True),
        ({"sender": OTHER.public}, msg(), False),
    ],
)
def test_filters(filt, raw, passes):
    got = receiver(**filt).receive(raw, T0)
    assert isinstance(got, c.Accepted if passes else c.Ignored), got


def test_destmatch_absent_when_pattern_does_not_match_local():
    got = receiver(match_destination=False).receive(msg(dest="com.y.*"), T0)
    assert isinstance(got, c.Accepted) and got.destmatch is None


# -- scripts, replies, output ---------------------------------------------------------------


def test_script_argv_and_env():
    env = c.parse(msg(payload="a b; rm -rf /", uuid=b"upload_done", t=5_123_456_789))
    assert c.script_argv(["./s.sh", "x"], env) == ["./s.sh", "x", "ping", "a b; rm -rf /"]
    e = c.script_env(env, "com.x.me")
    assert e == {
        "REMAPHORE_SENDER": KEY.public_b58,
        "REMAPHORE_VERB": "ping",
        "REMAPHORE_TIME": "5",
        "REMAPHORE_UUID": b"upload_done".hex(),
        "REMAPHORE_MSG": "a b; rm -rf /",
        "REMAPHORE_DESTMATCH": "com.x.me",
    }
    assert "REMAPHORE_DESTMATCH" not in c.script_env(env, None)


def test_reply_payload():
    assert c.reply_payload(None, None) == "NO_DATA"
    assert c.reply_payload(0, "ok\n") == "0,ok\n"
    assert c.reply_payload(-1, "") == "-1,"


def test_format_response():
    sep = c.new_separator(lambda n: b"\xab" * n)
    assert sep == "ab" * 16 and len(sep) == 32
    assert c.format_response("com.x.a", "0,ok\n", sep) == "com.x.a,0,ok\n"
    assert c.format_response("com.x.a", "0,l1\nl2\n", sep) == f"--> {sep}\ncom.x.a,0,l1\nl2\n--< {sep}\n"


def test_response_collector():
    peers = c.Peers([c.Peer("com.x.a", KEY.public, frozenset({"ping"})), c.Peer("com.y.b", OTHER.public, frozenset())])
    col = c.ResponseCollector(peers, "com.x.**", SKEW, "s" * 32)
    assert set(col.pending) == {KEY.public}
    reply = msg(dest="", verb="reply", payload="0,done")
    assert col.reply(reply, T0) == "com.x.a,0,done\n"
    assert col.done
    assert col.reply(reply, T0).kind is c.RefusalKind.REPLAY
    assert isinstance(col.reply(b"junk", T0), c.Refused)
    assert isinstance(col.reply(msg(dest="", verb="reply", request=True), T0), c.Ignored)


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ns",
    [("5s", 5 * 10**9), ("1h2m3s4ms", 3723004 * 10**6), ("300ms", 3 * 10**8), ("1.5h", 5400 * 10**9), ("0", 0), ("2us", 2000), ("1µs", 1000), ("10ns", 10)],
)
def test_parse_duration(text, ns):
    assert c.parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "5", "s", "-5s", "5x", "1h 2m", "abc", "1e3s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        c.parse_duration(text)


def test_format_duration():
    assert c.format_duration(5 * 10**9) == "5s"
    assert c.format_duration(90 * 10**9) == "1m30s"


def test_durable_receiver_accepts_old_messages_up_to_max_age_only():
    peers = c.Peers([c.Peer("com.x.sender", KEY.public, frozenset({"*"}))])
    r = c.Receiver(peers, SKEW, c.Filter("com.x.me"), max_age_ns=3600 * 10**9)
    assert isinstance(r.receive(msg(t=T0 - 1800 * 10**9), T0), c.Accepted)
    assert r.receive(msg(t=T0 - 3601 * 10**9), T0).kind is c.RefusalKind.CLOCK_SKEW
    assert r.receive(msg(t=T0 + SKEW + 1), T0).kind is c.RefusalKind.CLOCK_SKEW  # the future stays strict
    assert r.receive(msg(t=T0 - 1800 * 10**9), T0 + 10**9).kind is c.RefusalKind.REPLAY
