"""Request bodies that cannot hold the hub: a body that stalls or trickles ends with 408.

A client that opens a request and then sends its body slowly, or not at all, costs
the hub a connection and a coroutine, and no worker thread until a first piece of
its body is in hand (the upload routes wait for it on the event loop). What bounds
it in time is this rule: over each
window of ``idle`` seconds spent waiting for the body, at least ``min_rate`` bytes
per second of it (and at least one byte) must arrive. It is the rule of Apache's
mod_reqtimeout (``body=…,MinRate=…``): a pause between two reads alone would let a
byte a second through forever. Only the time spent waiting for the client counts:
while the hub is busy with what it has (or a thread pool is full) the clock stops.
"""

from __future__ import annotations

import asyncio
import time

from tether.problems import Problem


def body_timeout(idle: float, min_rate: int) -> Problem:
    return Problem(
        408, "body-timeout",
        f"the request body stalled: it must keep arriving at {min_rate} bytes/s or more on average "
        f"over each {idle:g} s (settings body_min_rate, body_idle_timeout); send the request again",
        # the rest of the body is unread: this connection can carry no further request
        headers={"Connection": "close"},
    )


def timed_receive(receive, *, idle: float, min_rate: int):
    """``receive`` (ASGI) that raises :func:`body_timeout` when the body falls behind
    the rule above. Once the body is complete, messages pass through untimed (a
    streamed response waits on ``receive`` for the client to go away)."""
    return _TimedReceive(receive, idle, min_rate)


class _TimedReceive:
    """One timer per request, not one per ``receive`` call: an upload takes its body in
    thousands of messages, and a cancel scope around each one cost ~30 µs, half a
    second per GiB. The timer looks at the clock when a window may have ended; if the
    body is behind while the request waits for it, it cancels the waiting task."""

    def __init__(self, receive, idle: float, min_rate: int):
        self._receive = receive
        self._idle = idle
        self._min_rate = min_rate
        self._need = max(1, int(min_rate * idle))  # bytes per window; a silent body never passes
        self._waited = 0.0  # seconds spent waiting in receive(), the current wait excepted
        self._since: float | None = None  # when the current wait began
        self._window_end = idle  # value of _waited at which this window ends
        self._got = 0  # body bytes so far
        self._got_before = 0  # ... when this window began
        self._done = False
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def __call__(self):
        if self._done:
            return await self._receive()
        self._judge(self._waited)  # a window that ended while the app was busy with the body
        self._task = asyncio.current_task()
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_end - self._waited, self._wake)
        self._since = time.monotonic()
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if self._expired and self._task is not None:
                self._task.uncancel()  # our own cancel: turn it into the answer
                raise body_timeout(self._idle, self._min_rate) from None
            raise
        finally:
            self._waited += time.monotonic() - self._since
            self._since = None
        if message["type"] == "http.request":
            self._got += len(message.get("body", b""))
            self._done = not message.get("more_body", False)
        else:
            self._done = True  # disconnected
        if self._done and self._timer is not None:
            self._timer.cancel()
        return message

    def close(self) -> None:
        """The request is over: no more judging (whatever of the body is left is not read)."""
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _judge(self, waited: float) -> None:
        """Raise 408 if a window has ended with too few bytes; else start the next one."""
        while waited >= self._window_end:
            if self._got - self._got_before < self._need:
                raise body_timeout(self._idle, self._min_rate)
            self._window_end += self._idle
            self._got_before = self._got

    def _wake(self) -> None:
        self._timer = None
        if self._since is None or self._done:
            return  # not waiting for the client now: the next receive() judges and re-arms
        waited = self._waited + (time.monotonic() - self._since)
        try:
            self._judge(waited)
        except Problem:
            self._expired = True
            if self._task is not None:
                self._task.cancel()
            return
        self._timer = asyncio.get_running_loop().call_later(self._window_end - waited, self._wake)
