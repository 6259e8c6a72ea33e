"""The grant sets' bookkeeping, against a model of the kernel's sets (no root needed):
whatever sequence of grant changes, the destinations let through are exactly the last
ones granted, and no transaction deletes an element that is not there (nft would refuse
the whole transaction)."""

from __future__ import annotations

import ipaddress
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.apps import netpolicy
from tether.apps.sandbox import Destination

LINE = re.compile(r"^(add|delete) element inet (\w+) (\w+) \{ (.*) \}$")

destinations = st.builds(
    Destination,
    st.sampled_from(["tcp", "udp"]),
    st.sampled_from([ipaddress.ip_address(a) for a in ("192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2")]),
    st.sampled_from([53, 443, 8080]),
)


def apply(sets: dict[str, set[str]], script: str) -> None:
    """Apply a transaction to the model, all or nothing, as nft does."""
    trial = {k: set(v) for k, v in sets.items()}
    for line in filter(None, script.splitlines()):
        m = LINE.match(line)
        assert m, f"unexpected statement {line!r}"
        op, _, name, elems = m.groups()
        for e in elems.split(", "):
            if op == "add":
                trial[name].add(e)
            else:
                assert e in trial[name], f"deleting {e} not in {name}: nft would refuse the transaction"
                trial[name].discard(e)
    sets.clear()
    sets.update(trial)


def let_through(sets: dict[str, set[str]]) -> set[str]:
    return (sets["g4_i"] - sets["x4_i"]) | (sets["g6_i"] - sets["x6_i"])


def tuples(grants) -> set[str]:
    return {f"{g.address} . {g.proto} . {g.port}" for g in grants}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(destinations, max_size=6), min_size=1, max_size=12), st.integers(0, 4))
def test_the_sets_let_through_exactly_the_last_grants(changes, compact_after):
    sets = {k: set() for k in ("g4_i", "g6_i", "x4_i", "x6_i")}
    old, revoked = [], []
    for new in changes:
        new = list(dict.fromkeys(new))
        script, revoked, removed = netpolicy.plan("t", "i", old, revoked, new)
        apply(sets, script)
        assert let_through(sets) == tuples(new)
        assert tuples(removed) <= sets["x4_i"] | sets["x6_i"]  # a revoked one is denied at once
        if len(revoked) > compact_after:
            apply(sets, netpolicy.compact("t", "i", revoked))
            revoked = []
            assert let_through(sets) == tuples(new)
        old = new


def test_a_grant_that_was_revoked_comes_back():
    d = Destination("tcp", ipaddress.ip_address("192.0.2.1"), 443)
    sets = {k: set() for k in ("g4_i", "g6_i", "x4_i", "x6_i")}
    script, revoked, _ = netpolicy.plan("t", "i", [], [], [d])
    apply(sets, script)
    script, revoked, removed = netpolicy.plan("t", "i", [d], revoked, [])
    apply(sets, script)
    assert removed == [d] and let_through(sets) == set()
    script, revoked, _ = netpolicy.plan("t", "i", [], revoked, [d])
    apply(sets, script)
    assert revoked == [] and let_through(sets) == tuples([d])
