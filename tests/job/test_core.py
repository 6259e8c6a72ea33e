"""The sans-IO rendezvous core: validation, waits, barriers, liveness, LAVA framing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.job import core as c


def group(roles=(("server", 1), ("client", 3)), **kw) -> c.Snapshot:
    nodes = {n: c.Node(n, r, "joined", last_seen=0.0) for n, r in c.plan_nodes("g", list(roles), [])}
    return c.Snapshot("g", nodes, **kw)


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "a b", "a=b", "a:b", "a\nb", "a\tb", "a\x00b", "a\x7fb", "x" * 129, 5, None])
def test_bad_names_are_refused(bad):
    with pytest.raises(c.Invalid):
        c.check_name("message id", bad)


@pytest.mark.parametrize("bad", [{"k": "a\nb"}, {"k": "\x01"}, {"k": "x" * 4097}, {"a b": "v"}, {"a=b": "v"},
                                 {"k": 3}, {f"k{i}": "v" for i in range(65)}, ["k=v"]])
def test_bad_messages_are_refused(bad):
    with pytest.raises(c.Invalid):
        c.check_message(bad)


def test_values_may_hold_spaces_and_equals():
    assert c.parse_pairs(["ip=10.0.0.1", "cmd=a b=c"]) == {"ip": "10.0.0.1", "cmd": "a b=c"}
    with pytest.raises(c.Invalid):
        c.parse_pairs(["novalue"])


def test_plan_names_nodes_like_lava_sub_jobs():
    assert c.plan_nodes("g", [("server", 1), ("client", 2)], []) == [
        ("g.0", "server"), ("g.1", "client"), ("g.2", "client")]
    assert c.plan_nodes("g", [("client", 1)], [("g.0", "server")]) == [("g.0", "server"), ("g.1", "client")]
    for roles, named in [([], []), ([("a", 0)], []), ([], [("n", "r"), ("n", "s")]), ([("a b", 1)], []),
                         ([], [("a/b", "r")])]:
        with pytest.raises(c.Invalid):
            c.plan_nodes("g", roles, named)


# -- send / wait / wait-all ---------------------------------------------------------------


def test_send_is_idempotent_and_conflicts_name_the_node():
    g = group()
    assert c.send(g, "g.0", "ready", {"ip": "1"}, 0) is True
    g.messages["ready"] = {"g.0": {"ip": "1"}}
    assert c.send(g, "g.0", "ready", {"ip": "1"}, 0) is False
    with pytest.raises(c.Conflict) as e:
        c.send(g, "g.0", "ready", {"ip": "2"}, 0)
    assert e.value.nodes == ("g.0",) and "ready" in e.value.detail


@pytest.mark.parametrize("state,said", [("done", "finished"), ("failed", "failed (exit 3)")])
def test_a_node_that_is_done_or_failed_can_neither_send_nor_arrive(state, said):
    g = group(roles=(("r", 2),))
    g.nodes["g.0"] = c.Node("g.0", "r", state, "exit 3" if state == "failed" else "", 0)
    with pytest.raises(c.NodeEnded) as e:
        c.send(g, "g.0", "y", {"b": "2"}, 0)
    assert e.value.status == 409 and e.value.nodes == ("g.0",) and f"it already {said}" in e.value.detail
    with pytest.raises(c.NodeEnded):
        c.arrive(g, "g.0", "s", None, 0)
    assert c.send(g, "g.1", "y", {"b": "2"}, 0) is True  # the others still can
    assert c.arrive(g, "g.1", "s", None, 0) == (1, True)


def test_a_node_not_seen_for_lost_after_can_neither_send_nor_arrive():
    """Waits that needed it failed once it counted as lost: what it sends after is refused,
    as docs/job.md says, not stored behind the others' backs."""
    g = group(roles=(("r", 2),), lost_after=10)
    g.nodes["g.1"] = c.Node("g.1", "r", "joined", last_seen=9.0)
    with pytest.raises(c.NodeEnded) as e:
        c.send(g, "g.0", "y", {"b": "2"}, 11)
    assert e.value.status == 409 and "not seen for 11 s" in e.value.detail and "lost_after is 10 s" in e.value.detail
    with pytest.raises(c.NodeEnded):
        c.arrive(g, "g.0", "s", None, 11)
    assert c.send(g, "g.0", "y", {"b": "2"}, 10) is True  # within lost_after it still can
    assert c.send(g, "g.1", "y", {"b": "2"}, 11) is True  # and a node seen since, at any time


def test_wait_any_and_wait_all():
    g = group()
    assert isinstance(c.evaluate(g, "g.1", c.WaitAny("ready"), 0), c.Pending)
    g.messages["ready"] = {"g.0": {"ip": "1"}}
    assert c.evaluate(g, "g.1", c.WaitAny("ready"), 0) == c.Done({"g.0": {"ip": "1"}})
    assert c.evaluate(g, "g.1", c.WaitAll("ready", "server"), 0) == c.Done({"g.0": {"ip": "1"}})
    p = c.evaluate(g, "g.0", c.WaitAll("ready"), 0)
    assert isinstance(p, c.Pending) and p.awaited == ("g.1", "g.2", "g.3")


def test_wait_all_for_a_role_waits_for_every_node_of_that_role():
    """LAVA's defect: it released once the first node of the (caller's!) role had sent."""
    g = group()
    g.messages["up"] = {"g.1": {}}
    out = c.evaluate(g, "g.0", c.WaitAll("up", "client"), 0)
    assert isinstance(out, c.Pending) and out.awaited == ("g.2", "g.3")


def test_wait_all_before_anyone_sent_waits():
    """LAVA's defect: a nack (the early waiter fails) instead of waiting."""
    assert isinstance(c.evaluate(group(), "g.0", c.WaitAll("never"), 0), c.Pending)


def test_wait_all_for_an_unknown_role_is_refused():
    with pytest.raises(c.Invalid, match="no role 'db'"):
        c.evaluate(group(), "g.0", c.WaitAll("x", "db"), 0)


# -- sync ---------------------------------------------------------------------------------


def test_sync_is_a_reusable_barrier_and_retries_do_not_arrive_twice():
    g = group(roles=(("r", 2),))
    gen, changed = c.arrive(g, "g.0", "s", None, 0)
    assert (gen, changed) == (1, True)
    g.syncs["s"] = {"g.0": 1}
    assert c.arrive(g, "g.0", "s", None, 0) == (1, False)  # a retry of the same call
    assert c.arrive(g, "g.0", "s", 1, 0) == (1, False)
    assert isinstance(c.evaluate(g, "g.0", c.Sync("s", 1), 0), c.Pending)
    g.syncs["s"]["g.1"] = 1
    assert c.evaluate(g, "g.0", c.Sync("s", 1), 0) == c.Done({})
    # complete, but g.0 was not told yet: its identical request (LAVA polls so) is the same call
    assert c.arrive(g, "g.0", "s", None, 0) == (1, False)
    # ...but a call token decides alone: told is written after the answer leaves, and a
    # fast node's next call (a new token) may come first: it is the next barrier
    g.sync_told["s"] = {"g.0": (0, "call-a")}
    assert c.arrive(g, "g.0", "s", None, 0, "call-a") == (1, False)
    assert c.arrive(g, "g.0", "s", None, 0, "call-b") == (2, True)
    g.sync_told["s"] = {"g.0": (1, "call-a")}
    assert c.arrive(g, "g.0", "s", None, 0, "call-a") == (1, False)  # a retry whose answer was lost
    assert c.arrive(g, "g.0", "s", None, 0, "call-b") == (2, True)  # told: the next call is the next barrier
    with pytest.raises(c.Invalid):
        c.arrive(g, "g.0", "s", 5, 0)


# -- liveness -----------------------------------------------------------------------------


def test_a_failed_node_fails_the_waits_that_need_it_naming_it():
    g = group()
    g.nodes["g.2"] = c.Node("g.2", "client", "failed", "exit 137", 0)
    out = c.evaluate(g, "g.0", c.WaitAll("x"), 0)
    assert isinstance(out, c.Failed) and "g.2" in out.nodes and "exit 137" in out.reason
    g.messages["x"] = {"g.2": {}}  # it sent before failing: the wait does not need it
    out = c.evaluate(g, "g.0", c.WaitAll("x", "server"), 0)
    assert isinstance(out, c.Pending)


def test_lost_nodes_and_recheck_time():
    g = group(lost_after=10)
    out = c.evaluate(g, "g.0", c.Sync("s", 1), 5)
    assert isinstance(out, c.Pending) and out.recheck_at == 10
    out = c.evaluate(g, "g.0", c.Sync("s", 1), 11)
    assert isinstance(out, c.Failed) and "not seen for 11 s" in out.reason


def test_an_essential_failure_ends_the_group():
    g = group(essential=frozenset({"server"}))
    g.nodes["g.0"] = c.Node("g.0", "server", "failed", "crashed", 0)
    out = c.evaluate(g, "g.1", c.WaitAny("ready"), 0)
    assert isinstance(out, c.Failed) and out.nodes == ("g.0",) and "ended" in out.reason
    with pytest.raises(c.Ended):
        c.send(g, "g.1", "x", {}, 0)


def test_wait_any_fails_when_nobody_is_left_to_send():
    g = group(roles=(("r", 2),))
    g.nodes["g.1"] = c.Node("g.1", "r", "done")
    out = c.evaluate(g, "g.0", c.WaitAny("x"), 0)
    assert isinstance(out, c.Failed) and out.nodes == ("g.1",)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_property_a_barrier_completes_exactly_when_everyone_arrived(data):
    """Nodes call sync in any order, asking again at will; each is released exactly
    when every node reached its generation, and none runs ahead of the slowest by two."""
    n = data.draw(st.integers(1, 6))
    g = group(roles=(("r", n),))
    names = list(g.nodes)
    order = data.draw(st.lists(st.sampled_from(names), min_size=0, max_size=30))
    for who in order:
        gen, changed = c.arrive(g, who, "s", None, 0)
        if changed:
            g.syncs.setdefault("s", {})[who] = gen
        reached = g.syncs.get("s", {})
        assert reached[who] == gen
        done = isinstance(c.evaluate(g, who, c.Sync("s", gen), 0), c.Done)
        assert done == all(reached.get(x, 0) >= gen for x in names)
        if done:  # answered: its next call is a new barrier
            g.sync_told.setdefault("s", {})[who] = (gen, "")
        assert max(reached.values()) - min(reached.get(x, 0) for x in names) <= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "b"]), st.sampled_from(["1", "2"]))))
def test_property_sends_never_overwrite(sends):
    g = group()
    for who, mid, val in sends:
        node = f"g.{who}"
        try:
            if c.send(g, node, mid, {"v": val}, 0):
                g.messages.setdefault(mid, {})[node] = {"v": val}
        except c.Conflict:
            assert g.messages[mid][node] != {"v": val}
    for mid, by in g.messages.items():
        for node, d in by.items():
            first = next(v for w, m, v in sends if f"g.{w}" == node and m == mid)
            assert d == {"v": first}


# -- framing ------------------------------------------------------------------------------


def frame(obj) -> bytes:
    text = json.dumps(obj)
    return b"%08X" % len(text) + text.encode()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=5), st.data())
def test_property_any_split_decodes_the_same(obj, data):
    text = json.dumps(obj, ensure_ascii=False)  # non-ASCII straight through: splits may cut a character
    raw = b"%08X" % len(text) + text.encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    d = c.FrameDecoder()
    prev = 0
    for cut in cuts + [len(raw)]:
        d.feed(raw[prev:cut])
        prev = cut
    d.eof()
    assert d.request == obj


@pytest.mark.parametrize("raw,why", [
    (b"0000zz10{}", "not 8 hex"),
    (b"00000010{}", "closed after 2 of the 16"),
    (b"00000001{}", "longer than the 1"),
    (b"00000003[1]", "not an object"),
    (b"000000013", "not an object"),
    (b"00000003{x}", "not JSON"),
    (b"00000002\xff\xfe", "not UTF-8"),
    (b"0000", "after 4 of 8 header"),
    (b"FFFFFFFF", "over the limit"),
])
def test_bad_frames_are_refused_with_a_reason(raw, why):
    d = c.FrameDecoder()
    with pytest.raises(c.FrameError, match=why):
        d.feed(raw)
        d.eof()


def test_encode_frame_matches_the_coordinators():
    assert c.encode_frame({"response": "ack"}) == b'00000013{"response": "ack"}'
