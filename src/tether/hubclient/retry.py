"""When a request to the hub is tried again, and how long to wait first: one policy
object instead of a loop per client.

    >>> policy = RetryPolicy()                      # the hub client's defaults
    >>> policy.tries_for("POST"), policy.tries_for("GET")
    (1, 3)
    >>> for attempt in range(1, policy.tries_for(method) + 1):
    ...     resp = send()
    ...     if policy.retries(resp.status_code) and attempt < policy.tries_for(method):
    ...         policy.sleep(attempt, policy.retry_after(resp))
    ...         continue
    ...     break

or let :meth:`RetryPolicy.call` drive that loop. No I/O here but ``time.sleep``; the
clock and the random source can be replaced (tests).
"""

from __future__ import annotations

import time
from collections import namedtuple

TYPE_CHECKING = False  # (no typing import at run time: see tether.cli.quick)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    R = TypeVar("R")

#: Methods whose repetition does no harm: a request that may have reached the server
#: before the connection broke can be sent again.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: The hub (or a proxy before it) is restarting or overloaded: the request was not handled.
GATEWAY_STATUSES = frozenset({502, 503, 504})
MAX_RETRY_AFTER = 5.0


_FIELDS = {  # field: default
    "tries": 3,  # in all, the first one included
    "backoff": 0.25,  # seconds before the second try, doubled before each next one
    "jitter": 0.5,  # the backoff is spread over ±jitter/2 of itself, so clients do not retry in step
    #: methods retried; None retries every method (for a caller whose requests are all idempotent by design)
    "methods": IDEMPOTENT,
    "statuses": GATEWAY_STATUSES,  # answers that mean "not handled, try again"
    "retry_after_cap": MAX_RETRY_AFTER,  # a server's Retry-After longer than this is cut to this
}


class RetryPolicy(namedtuple("RetryPolicy", list(_FIELDS), defaults=list(_FIELDS.values()))):
    """How often and how patiently to retry. (A named tuple: dataclasses imports inspect,
    and typing.NamedTuple typing, ~5 ms of every command between them.)"""

    __slots__ = ()
    tries: int
    backoff: float
    jitter: float
    methods: frozenset[str] | None
    statuses: frozenset[int]
    retry_after_cap: float

    def tries_for(self, method: str) -> int:
        return self.tries if self.methods is None or method.upper() in self.methods else 1

    def retries(self, status: int) -> bool:
        return status in self.statuses

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based). A server's hint
        (Retry-After, already capped) is taken as it is: it said when."""
        if hint is not None:
            return hint
        import random  # here: most commands never wait

        return self.backoff * (2 ** (attempt - 1)) * (1 - self.jitter / 2 + self.jitter * random.random())

    def sleep(self, attempt: int, hint: float | None = None) -> None:
        time.sleep(self.delay(attempt, hint))

    def retry_after(self, resp: Any) -> float | None:
        return retry_after(resp, self.retry_after_cap)

    def call(
        self,
        method: str,
        send: Callable[[], R],
        *,
        status: Callable[[R], int],
        transient: type[BaseException] | tuple[type[BaseException], ...] = (),
        on_retry: Callable[[int], None] | None = None,
    ) -> R:
        """Run ``send()`` until it answers with a status not retried, or the tries run out;
        the last answer is returned and the last ``transient`` exception raised as it is.
        ``on_retry(attempt)`` runs before each wait (e.g. to count or to give up early)."""
        tries = self.tries_for(method)
        for attempt in range(1, tries + 1):
            last = attempt == tries
            try:
                resp = send()
            except transient:
                if last:
                    raise
                if on_retry is not None:
                    on_retry(attempt)
                self.sleep(attempt)
                continue
            if not last and self.retries(status(resp)):
                if on_retry is not None:
                    on_retry(attempt)
                self.sleep(attempt, self.retry_after(resp))
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover


def retry_after(resp: Any, cap: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds ``resp`` (anything with ``.headers.get``) asks us to wait: ``Retry-After``
    as seconds or as an HTTP date, at most ``cap``; None when it does not say."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), cap)
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime  # only for the rare date form

        when = parsedate_to_datetime(value).timestamp()
        return min(max(when - time.time(), 0.0), cap)
    except (TypeError, ValueError, OverflowError):
        return None


__all__ = ["GATEWAY_STATUSES", "IDEMPOTENT", "MAX_RETRY_AFTER", "RetryPolicy", "retry_after"]
