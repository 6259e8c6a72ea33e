"""Log sync's SSH side: ``tether-log pull|push|sync SPACE``, served by the SSH entry.

Frames (:mod:`tether.ssh.frames`), one reply per request; the same operations as the
HTTP API (:mod:`tether.log.api`), on the same :class:`tether.log.service.LogService`:

======  ========================  ==========================================
client  payload                   server reply
======  ========================  ==========================================
``R``   a reconcile message       ``r``: the next message (empty: done)
``P``   JSON list of records      ``p``: ``{"received", "new", "known"}``
``G``   JSON ``{"ids": [...]}``   ``g``: ``{"records": [...], "missing": [...]}``
======  ========================  ==========================================

The hello is ``{"protocol": "tether-log/1", "user", "space", "mode"}``.
"""

from __future__ import annotations

import json
from typing import Any

from tether.problems import bad_request, forbidden
from tether.ssh.entry import Exit, SessionInfo, SSHRequest
from tether.units import NAME_RE as SPACE_NAME_RE

PROTOCOL = "tether-log/1"
COMMAND = "tether-log"
REQUEST_TYPES = frozenset(b"RPG")
REPLY_TYPES = frozenset(b"HrpgE")

#: verb -> the actions the session needs (checked before any data is read)
MODES: dict[str, tuple[str, ...]] = {
    "pull": ("log.read",),
    "push": ("log.read", "log.write"),
    "sync": ("log.read", "log.write"),
}


class LogHandler:
    command = COMMAND
    usage = "tether-log pull|push|sync SPACE"

    def parse(self, argv: list[str]) -> SSHRequest:
        if len(argv) != 3 or argv[1] not in MODES:
            shown = " ".join(argv)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise Exit(2, 400, "unknown-command",
                       f"unknown command {shown!r}: this account serves only `{self.usage}`")
        if not SPACE_NAME_RE.match(argv[2]):
            raise Exit(2, 400, "invalid-space", f"invalid space name {argv[2][:70]!r}")
        return SSHRequest(argv[1], f"space:{argv[2]}", MODES[argv[1]][-1])

    def open(self, session: SessionInfo, request: SSHRequest) -> LogChannel:
        from tether.log.service import LogService

        svc = LogService(session.settings, session.db)
        space = request.target.removeprefix("space:")
        for action in MODES[request.verb]:
            sid = svc.space_id(session.ctx, space, action)
        return LogChannel(session, request.verb, space, svc, sid)


class LogChannel:
    request_types = REQUEST_TYPES

    def __init__(self, session: SessionInfo, verb: str, space: str, svc: Any, space_id: int | None = None):
        self.session, self.verb, self.space, self.svc = session, verb, space, svc
        self.hello = {"protocol": PROTOCOL, "user": session.user, "space": space, "mode": verb}
        # A session is one process: its first reconcile round would read every id
        # of the space from the database. Start that now, while the client reads
        # its own log, so the round finds them in memory.
        self._warm: Any = None
        if space_id is not None:
            import threading

            self._warm = threading.Thread(target=self._warm_up, args=(space_id,), daemon=True,
                                          name="tether-log-warm")
            self._warm.start()

    def _warm_up(self, space_id: int) -> None:
        try:
            self.svc.warm(space_id)
        except Exception:  # noqa: BLE001 - only a head start: the round loads the ids itself
            pass

    def handle(self, ftype: str, payload: bytes) -> tuple[str, bytes]:
        ctx = self.session.ctx
        if ftype == "R":
            if self._warm is not None:
                self._warm.join()
                self._warm = None
            return "r", self.svc.reconcile(ctx, self.space, payload) or b""
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise bad_request("the frame's payload is not valid JSON", "invalid-json") from None
        if ftype == "P":
            return "p", self._push(data)
        # G
        ids = data.get("ids") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) and len(i) <= 64 for i in ids):
            raise bad_request('a get is {"ids": [ID, ...]}', "invalid-json")
        return "g", json.dumps(self.svc.get(ctx, self.space, ids), ensure_ascii=False).encode()

    def _push(self, data: Any) -> bytes:
        from tether.problems import Problem

        if self.verb == "pull":
            raise forbidden("this session was opened for pull; push needs `tether-log push` or `sync`",
                            "pull-only-session")
        if not isinstance(data, list):
            raise bad_request("a push is a JSON list of records", "invalid-json")
        resource = f"space:{self.space}"
        try:
            result = self.svc.push(self.session.ctx, self.space, data)
        except Problem as p:
            self.session.audit("log.write", resource, p.status, f"{p.slug}: {p.detail}")
            raise
        self.session.audit("log.write", resource, 200, f"{len(data)} record(s) pushed")
        return json.dumps(result, ensure_ascii=False).encode()
