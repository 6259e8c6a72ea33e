"""Request bodies that cannot hold the hub: a body that stalls or trickles ends with 408.

A client that opens a request and then sends its body slowly, or not at all, costs
the hub a connection and a coroutine, never a worker thread (the upload routes wait
for body pieces on the event loop). What bounds it in time is this rule: over each
window of ``idle`` seconds spent waiting for the body, at least ``min_rate`` bytes
per second of it (and at least one byte) must arrive. It is the rule of Apache's
mod_reqtimeout (``body=…,MinRate=…``): a pause between two reads alone would let a
byte a second through forever. Only the time spent waiting for the client counts:
while the hub is busy with what it has (or a thread pool is full) the clock stops.
"""

from __future__ import annotations

import time

import anyio

from tether.problems import Problem


def body_timeout(idle: float, min_rate: int) -> Problem:
    return Problem(
        408, "body-timeout",
        f"the request body stalled: it must keep arriving at {min_rate} bytes/s or more on average "
        f"over each {idle:g} s (settings body_min_rate, body_idle_timeout); nothing of it was kept",
        # the rest of the body is unread: this connection can carry no further request
        headers={"Connection": "close"},
    )


def timed_receive(receive, *, idle: float, min_rate: int):
    """``receive`` (ASGI) that raises :func:`body_timeout` when the body falls behind
    the rule above. Once the body is complete, messages pass through untimed (a
    streamed response waits on ``receive`` for the client to go away)."""
    need = max(1, int(min_rate * idle))
    waited = 0.0  # seconds spent in receive() in this window
    got = 0  # body bytes that came in this window
    done = False

    def end_window() -> None:
        nonlocal waited, got
        if got < need:
            raise body_timeout(idle, min_rate)
        waited, got = 0.0, 0

    async def receive_timed():
        nonlocal waited, got, done
        if done:
            return await receive()
        while True:
            started = time.monotonic()
            with anyio.move_on_after(idle - waited):
                message = await receive()
                waited += time.monotonic() - started
                if message["type"] == "http.request":
                    got += len(message.get("body", b""))
                    done = not message.get("more_body", False)
                else:
                    done = True  # disconnected
                if not done and waited >= idle:
                    end_window()
                return message
            waited = idle  # nothing at all came before the window ended
            end_window()

    return receive_timed
