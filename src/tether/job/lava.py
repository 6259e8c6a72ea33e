"""A LAVA-coordinator-compatible TCP listener (``tether hub --lava-listen HOST:PORT``).

An unchanged LAVA dispatcher can use the hub as its coordinator: one request per
connection, 8 hex digits of length then JSON, answered with ``wait``, ``ack``
(with ``message``), ``nack`` or ``group_data``. The rules are tether's (the
same core and database as the HTTP API), so the listener differs from
Debian's ``lava-coordinator`` where that one is wrong (docs/job.md lists each
difference; tests/job/test_lava.py checks both side by side):

* only groups made with ``tether job create`` exist (nothing is created by a
  request), only their nodes (``client_name``) may speak, each in its own role;
* ``lava_wait_all`` with a ``waitrole`` waits for every node of that role, and
  before anyone sent it waits instead of answering ``nack``;
* a barrier's last arrival is answered at once; a wait is *held* up to the
  client's ``poll_delay`` (at most 10 s) and answered the moment it completes,
  so most releases do not wait for a poll;
* framing tolerates any split of the bytes (UTF-8 included); a request that
  cannot be read gets a ``nack`` naming why, never a crash; idle connections
  time out, and beyond a bound the oldest idle one is dropped, so no client
  can block the others.

The protocol has no credentials: whoever reaches the port and knows a group's
name and a node's id can speak for that node. Bind it to the lab's private
network only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

import anyio

from tether.job import core
from tether.problems import Problem

log = logging.getLogger("tether.job.lava")

READ_TIMEOUT = 10.0  # seconds for a whole request to arrive
MAX_IDLE = 1024  # connections still sending their request, at most; beyond, the oldest is dropped
MAX_HOLD = 10.0


def _nack(why: str) -> dict[str, Any]:
    # LAVA's clients read only "response"; "error" tells a person reading the traffic why.
    return {"response": "nack", "error": why}


class Listener:
    def __init__(self, app):
        from tether.job.api import _svc_for, waker_of

        self.svc = _svc_for(app)
        self.waker = waker_of(app)
        self.idle: OrderedDict[asyncio.StreamWriter, None] = OrderedDict()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.idle[writer] = None
        if len(self.idle) > MAX_IDLE:
            oldest = next(iter(self.idle))
            self.idle.pop(oldest)
            oldest.transport.abort()
        try:
            try:
                request = await asyncio.wait_for(self._read(reader), READ_TIMEOUT)
            except core.FrameError as exc:
                reply: dict[str, Any] | None = _nack(str(exc))
            except TimeoutError:
                reply = _nack(f"the request did not arrive within {READ_TIMEOUT:.0f} s")
            else:
                self.idle.pop(writer, None)
                reply = await self.answer(request)
            if reply is not None:
                writer.write(core.encode_frame(reply))
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client left before its answer: nothing to do
        except Exception:
            log.exception("LAVA listener: internal error")
        finally:
            self.idle.pop(writer, None)
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> dict[str, Any]:
        dec = core.FrameDecoder(max_body=1 << 20)
        while dec.request is None:
            data = await reader.read(65536)
            if not data:
                dec.eof()
            dec.feed(data)
        return dec.request

    async def answer(self, req: dict[str, Any]) -> dict[str, Any] | None:
        from tether.job.api import hold_wait

        kind = req.get("request")
        if not isinstance(kind, str):
            return _nack("the request has no 'request'")
        for key in ("group_name", "client_name"):
            if not isinstance(req.get(key), str):
                return _nack(f"the request has no {key!r}")
        try:
            place = await anyio.to_thread.run_sync(self.svc.place, None, req["group_name"], req["client_name"])
        except Problem as p:
            return _nack(p.detail + " (groups are made with `tether job create`)")
        role = req.get("role")
        if role is not None and role != place.role:
            return _nack(f"{place.node} has role {place.role!r}, not {role!r}")
        delay = req.get("poll_delay", 0)
        hold = min(float(delay), MAX_HOLD) if isinstance(delay, (int, float)) and delay > 0 else 0.0
        msg_id = req.get("messageID")
        try:
            if kind == "complete":
                return None  # LAVA's coordinator closes without an answer
            if kind == "clear_group":
                try:
                    await anyio.to_thread.run_sync(self.svc.mark, None, place, "done", "")
                except Problem as p:
                    if p.status != 409:  # already ended: clearing again is fine
                        raise
                return {"response": "ack"}
            if kind == "group_data":
                out = await hold_wait(self.svc, self.waker, place, "joined", "", None, None, hold)
                if out["state"] == "done":
                    snap = await anyio.to_thread.run_sync(self.svc.snapshot, place.group_id)
                    return {"response": "group_data", "roles": {n.name: n.role for n in snap.nodes.values()}}
                return self._pending(out)
            if kind not in ("lava_send", "lava_wait", "lava_wait_all", "lava_sync"):
                return _nack(f"unknown request {kind!r}")
            if not isinstance(msg_id, str):
                return _nack("the request has no 'messageID'")
            if kind == "lava_send":
                message = req.get("message")
                await anyio.to_thread.run_sync(self.svc.send, place, msg_id, message if message is not None else {})
                return {"response": "ack"}
            if kind == "lava_sync":
                out = await hold_wait(self.svc, self.waker, place, "sync", msg_id, None, None, hold)
                if out["state"] == "done":
                    return {"response": "ack", "message": req.get("message") or msg_id}
                return self._pending(out)
            waitrole = req.get("waitrole") if kind == "lava_wait_all" else None
            out = await hold_wait(self.svc, self.waker, place, "all" if kind == "lava_wait_all" else "any",
                                  msg_id, waitrole, None, hold)
            if out["state"] == "done":
                return {"response": "ack", "message": out["data"]}
            return self._pending(out)
        except Problem as p:
            return _nack(p.detail)

    @staticmethod
    def _pending(out: dict[str, Any]) -> dict[str, Any]:
        if out["state"] == "failed":
            return _nack(out["reason"])
        return {"response": "wait"}


async def serve(app, listen: str, sock=None) -> None:
    """Serve LAVA's protocol on ``listen`` (or on ``sock``, bound to it already) until cancelled."""
    from tether.config import split_listen

    listener = Listener(app)
    if sock is not None:
        server = await asyncio.start_server(listener.handle, sock=sock, backlog=1024)
    else:
        host, port = split_listen(listen)
        server = await asyncio.start_server(listener.handle, host, port, backlog=1024)
    log.info("LAVA coordinator protocol on %s", listen)
    async with server:
        await server.serve_forever()
