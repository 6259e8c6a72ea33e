"""The gateway's reuse of forward's checks (tether.forward.gateway.Recent): an answer lives
at most CHECK_SECONDS, and any access this process takes away drops every answer at once.
The end-to-end bounds, with two replicas, are in test_forward_replicas.py."""

from __future__ import annotations

from tether.auth import epoch
from tether.forward.gateway import CHECK_SECONDS, Recent


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_reused_for_at_most_the_bound():
    clock = Clock()
    recent = Recent(clock=clock)
    recent.put("k", "allowed")
    clock.now += CHECK_SECONDS - 0.01
    assert recent.get("k") == "allowed"
    clock.now += 0.02
    assert recent.get("k") is None


def test_taking_access_away_in_this_process_drops_every_answer_at_once():
    recent = Recent(clock=Clock())
    recent.put("k", "allowed")
    epoch.bump()  # what a revoke, a disable, an unshare or a route's close does
    assert recent.get("k") is None


def test_it_holds_a_bounded_number_of_answers():
    recent = Recent(size=3, clock=Clock())
    for i in range(10):
        recent.put(i, i)
    assert len(recent._d) <= 3 and recent.get(9) == 9
