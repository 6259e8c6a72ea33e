"""How much of the hub one client may hold at once: uploads in progress per token and per user.

Counted in this replica's memory, on its event loop (no lock needed): the limit
protects the replica's connections, threads and memory, which are its own. A
client spread over several replicas gets the limit on each.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from collections.abc import Iterator

from tether.problems import Problem


class UploadSlots:
    def __init__(self, per_token: int, per_user: int):
        self.per_token = per_token
        self.per_user = per_user
        self._tokens: Counter[str] = Counter()
        self._users: Counter[str] = Counter()
        self.in_progress = 0

    @contextmanager
    def hold(self, user: str, token_id: str | None) -> Iterator[None]:
        """One upload in progress for ``user`` (with ``token_id``); 429 when either is at its limit."""
        if token_id is not None and self._tokens[token_id] >= self.per_token:
            raise _busy(f"token {token_id}", self.per_token, "uploads_per_token")
        if self._users[user] >= self.per_user:
            raise _busy(f"user {user}", self.per_user, "uploads_per_user")
        if token_id is not None:
            self._tokens[token_id] += 1
        self._users[user] += 1
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1
            _drop(self._users, user)
            if token_id is not None:
                _drop(self._tokens, token_id)


def _busy(who: str, limit: int, setting: str) -> Problem:
    return Problem(429, "too-many-uploads",
                   f"{who} already has {limit} uploads in progress, the most the hub allows ({setting}); "
                   "send this one when another has finished", headers={"Retry-After": "1"})


def _drop(counts: Counter[str], key: str) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]  # bounded memory: only keys with uploads in progress stay
