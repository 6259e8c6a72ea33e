"""The one SSH entry: every capability served over SSH comes in here.

Two front doors lead to it: ``tether ssh-serve USER``, the forced command behind
OpenSSH (:mod:`tether.ssh.serve`), and the hub's own asyncssh server
(:mod:`tether.ssh.embedded`). Either way the key has decided the user; this module
then does the rest, once for every capability:

1. read the client's command (``tether-log push SPACE``); its first word picks a
   :class:`Handler` from the registry the caller passes in (capabilities register
   theirs in :mod:`tether.hub.capabilities`; this package imports none of them);
2. authorize *before reading anything from the client*: the handler's ``open``
   checks the user's grants and returns a :class:`Channel`; a refusal is audited
   and answered with an ``E`` frame and the exit code of its status;
3. answer frames (:mod:`tether.ssh.frames`) until the client says ``Q``.

Exit codes (:func:`tether.problems.exit_code_for_status`): 0 done; 1 no such
thing; 2 usage (no or unknown command, bad configuration); 3 protocol or runtime
failure (bad frame, idle peer, database); 4 unknown or disabled user, or no grant.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from tether.problems import Problem, exit_code_for_status
from tether.ssh.frames import (
    ERROR,
    HELLO,
    QUIT,
    FrameError,
    FrameReader,
    FrameTimeout,
    encode,
    write_all,
)

log = logging.getLogger("tether.ssh")

DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_FRAME = 8 << 20
#: Most request frames in one session (each is bounded; this bounds the session).
MAX_REQUESTS = 100_000


class Exit(Exception):
    """End the session with exit ``code``, telling the client ``status``/``slug``/``detail``."""

    def __init__(self, code: int, status: int, slug: str, detail: str):
        super().__init__(detail)
        self.code, self.status, self.slug, self.detail = code, status, slug, detail


class SSHRequest(NamedTuple):
    """What the client asked for, parsed by its capability's handler."""

    verb: str
    target: str  # what the grant is checked on, e.g. a space name
    action: str  # the action audited when the request is refused, e.g. "log.write"


class Channel(Protocol):
    """One authorized session of a capability: a hello, then one reply per request frame."""

    hello: dict[str, Any]
    request_types: frozenset[int]

    def handle(self, ftype: str, payload: bytes) -> tuple[str, bytes]: ...


class Handler(Protocol):
    """A capability's SSH side, registered under the first word of its remote command."""

    command: str  # e.g. "tether-log"
    usage: str  # e.g. "tether-log pull|push|sync SPACE"

    def parse(self, argv: list[str]) -> SSHRequest: ...

    def open(self, session: SessionInfo, request: SSHRequest) -> Channel: ...


Auditor = Callable[[str, str, int, str], None]


class ListenHandler(Protocol):
    """A capability that accepts remote UNIX-socket forwards (``ssh -R NAME:PATH``): the
    client asks the hub to "listen" on NAME; ``listen`` decides (a route the key's user
    may register) and returns an asyncssh listener object, or False to refuse.
    ``opener(session_factory)`` opens one channel back to the client's socket (one per
    incoming connection; asyncssh's ``create_unix_connection``: the session gets the
    channel's data in callbacks); ``close`` drops the client's connection, telling it why."""

    async def listen(self, session: SessionInfo, path: str, opener: Callable[[Callable[[], Any]], Any],
                     close: Callable[[str], None]) -> Any: ...


class SessionInfo(NamedTuple):
    """What a handler may use: the hub's settings and database, the caller, and the audit trail."""

    settings: Any
    db: Any
    user: str
    ctx: Any  # tether.auth.service.AuthContext
    audit: Auditor  # audit(action, resource, status, reason)


def usage(handlers: Mapping[str, Handler]) -> str:
    lines = "\n".join(f"    {h.usage}" for h in handlers.values())
    return ("tether: this account only serves tether over SSH; there is no shell here.\n"
            "Use it as a remote from your own machine, for example:\n"
            "    tether log remote add origin ssh://ACCOUNT@HOST/SPACE\n"
            "    tether log sync origin\n"
            f"(the remote commands are:\n{lines})")


def parse_request(original: str | None, handlers: Mapping[str, Handler]) -> tuple[Handler, SSHRequest]:
    """The client's command -> its handler and request; :class:`Exit` (2) for anything else."""
    if original is None or not original.strip():
        raise Exit(2, 400, "no-command", usage(handlers))
    try:
        argv = shlex.split(original)
    except ValueError:
        argv = []
    handler = handlers.get(argv[0]) if argv else None
    if handler is None:
        shown = original if len(original) <= 80 else original[:77] + "..."
        served = " or ".join(f"`{h.usage}`" for h in handlers.values())
        raise Exit(2, 400, "unknown-command", f"unknown command {shown!r}: this account serves only {served}")
    return handler, handler.parse(argv)


def problem_frame(status: int, slug: str, detail: str) -> bytes:
    """The ``E`` frame for a refusal or failure (the client shows its detail)."""
    return encode(ERROR, json.dumps(Problem(status, slug, detail).body(), ensure_ascii=False).encode())


def auditor(db: Any, user: str, source: str | None, say: Callable[[str], None]) -> Auditor:
    """Record changes and refusals made over SSH in the hub's audit trail, as the HTTP API does."""

    def audit(action: str, resource: str, status: int, reason: str = "") -> None:
        from tether.auth import audit as trail
        from tether.db.models import utcnow

        outcome = "allowed" if status < 400 else "denied" if status in (401, 403) else "failed"
        try:
            trail.record(db, at=utcnow(), user=user, token_id=None, action=action, resource=f"{resource} via ssh",
                         source=source, outcome=outcome, status=status, reason=reason)
        except Exception as exc:  # noqa: BLE001 - auditing must not break the session; say so
            say(f"warning: could not write an audit record: {exc}")

    return audit


def session_for(settings: Any, db: Any, user: str, source: str | None, say: Callable[[str], None]) -> SessionInfo:
    """The caller of a request that is not a command (a forward): the same context and audit trail."""
    from tether.auth.service import context_for_user

    return SessionInfo(settings, db, user, context_for_user(db, user, source=source), auditor(db, user, source, say))


def authorize(handlers: Mapping[str, Handler], settings: Any, db: Any, user: str, original: str | None,
              source: str | None, say: Callable[[str], None]) -> Channel:
    """Parse the command and check the user's grants: the one path for both front doors."""
    from tether.auth.service import context_for_user

    handler, request = parse_request(original, handlers)
    audit = auditor(db, user, source, say)
    try:
        ctx = context_for_user(db, user, source=source)
        return handler.open(SessionInfo(settings, db, user, ctx, audit), request)
    except Problem as p:
        audit(request.action, request.target, p.status, f"{p.slug}: {p.detail}")
        raise Exit(exit_code_for_status(p.status), p.status, p.slug, p.detail) from None


def run(channel: Channel, *, infd: int, outfd: int, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_frame: int = DEFAULT_MAX_FRAME) -> int:
    """Serve an authorized channel: hello, then one reply per request until ``Q`` or EOF."""
    allowed = channel.request_types | {ord(QUIT)}
    reader = FrameReader(infd, frozenset(allowed), max_frame, idle_timeout)

    def send(ftype: str, payload: bytes = b"") -> None:
        write_all(outfd, encode(ftype, payload), timeout=idle_timeout)

    send(HELLO, json.dumps(channel.hello).encode())
    for _ in range(MAX_REQUESTS):
        try:
            frame = reader.read()
        except FrameTimeout as exc:
            raise Exit(3, 408, "idle-timeout", f"idle peer: {exc}; closing") from None
        except FrameError as exc:
            raise Exit(3, 400, "bad-frame", f"malformed frame: {exc}; closing") from None
        if frame is None or frame.type == QUIT:
            return 0
        try:
            reply_type, reply = channel.handle(frame.type, frame.payload)
        except Problem as p:
            send(ERROR, json.dumps(p.body(), ensure_ascii=False).encode())
            continue
        send(reply_type, reply)
    raise Exit(3, 429, "too-many-requests", f"more than {MAX_REQUESTS} requests in one session; closing")


def serve_session(handlers: Mapping[str, Handler], settings: Any, db: Any, user: str, original: str | None, *,
                  infd: int, outfd: int, source: str | None, say: Callable[[str], None],
                  idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_frame: int = DEFAULT_MAX_FRAME) -> int:
    """Authorize, then serve; returns the exit code. Errors go to ``say`` (the server's
    side) and, as an ``E`` frame, to the client (which shows them)."""
    nonblocking = False
    try:
        channel = authorize(handlers, settings, db, user, original, source, say)
        try:
            os.set_blocking(outfd, False)
            nonblocking = True
        except OSError:
            pass
        return run(channel, infd=infd, outfd=outfd, idle_timeout=idle_timeout, max_frame=max_frame)
    except Exit as e:
        say(e.detail if e.slug == "no-command" else f"error: {e.detail}")
        if e.slug != "no-command" or original is not None:  # a bare `ssh host` gets the usage text only
            _try_send(outfd, problem_frame(e.status, e.slug, e.detail))
        return e.code
    except Exception as exc:  # noqa: BLE001 - database unreachable and the like: no traceback to the client
        log.exception("ssh session failed")
        say(f"error: {type(exc).__name__}: {exc}")
        _try_send(outfd, problem_frame(500, "internal", "the hub failed to serve this request; "
                                       "its operator can see why in the server's log"))
        return 3
    finally:
        if nonblocking:
            try:
                os.set_blocking(outfd, True)
            except OSError:
                pass


def _try_send(fd: int, frame: bytes) -> None:
    try:
        write_all(fd, frame, timeout=5)
    except (OSError, FrameError):
        pass  # the peer may be gone
