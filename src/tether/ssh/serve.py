"""``tether ssh-serve USER``: the forced command behind each hub key in the
server account's ``authorized_keys``.

sshd authenticated the key; the key's line names USER. This command reads what
the client asked for from ``SSH_ORIGINAL_COMMAND`` (``tether-log pull|push|sync
SPACE``), checks USER's grants on SPACE *before reading anything from the
client*, then answers frames (:mod:`tether.ssh.frames`) on stdin/stdout with
the same :class:`tether.log.service.LogService` the HTTP API uses.

Exit codes: 0 done; 1 no such space; 2 usage (no or unknown command, bad
configuration); 3 protocol or runtime failure (bad frame, idle peer, database);
4 unknown or disabled user, or no grant.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from tether.ssh.frames import (
    PROTOCOL,
    REQUEST_TYPES,
    FrameError,
    FrameReader,
    FrameTimeout,
    encode,
    write_all,
)

DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_FRAME = 8 << 20
#: Most request frames in one session (each is bounded; this bounds the session).
MAX_REQUESTS = 100_000
SPACE_RE = re.compile(r"\A[a-z0-9][a-z0-9._-]{0,63}\Z")
USER_RE = re.compile(r"\A[a-z_][a-z0-9_.-]{0,31}\Z")

#: verb -> the actions the session needs (checked before any data is read)
MODES: dict[str, tuple[str, ...]] = {
    "pull": ("log.read",),
    "push": ("log.read", "log.write"),
    "sync": ("log.read", "log.write"),
}

USAGE = """\
tether ssh-serve: this account only serves tether over SSH; there is no shell here.
Use it as a remote from your own machine, for example:
    tether log remote add origin ssh://ACCOUNT@HOST/SPACE
    tether log sync origin
(the remote command is `tether-log pull|push|sync SPACE`)."""


class Exit(Exception):
    def __init__(self, code: int, status: int, slug: str, detail: str):
        super().__init__(detail)
        self.code, self.status, self.slug, self.detail = code, status, slug, detail


def _exit_for(status: int) -> int:
    return {400: 2, 401: 4, 403: 4, 404: 1, 409: 1, 413: 2}.get(status, 3)


def _problem(status: int, slug: str, detail: str, **extra: Any) -> bytes:
    body = {"type": f"urn:tether:problem:{slug}", "status": status, "detail": detail, **extra}
    return json.dumps(body, ensure_ascii=False).encode()


def parse_request(original: str | None) -> tuple[str, str]:
    """``tether-log VERB SPACE`` -> (verb, space); :class:`Exit` if it is anything else."""
    if original is None or not original.strip():
        raise Exit(2, 400, "no-command", USAGE)
    try:
        argv = shlex.split(original)
    except ValueError:
        argv = []
    if len(argv) != 3 or argv[0] != "tether-log" or argv[1] not in MODES:
        shown = original if len(original) <= 80 else original[:77] + "..."
        raise Exit(2, 400, "unknown-command",
                   f"unknown command {shown!r}: this account serves only `tether-log pull|push|sync SPACE`")
    if not SPACE_RE.match(argv[2]):
        raise Exit(2, 400, "invalid-space", f"invalid space name {argv[2][:70]!r}")
    return argv[1], argv[2]


def _ssh_source() -> str | None:
    """The client's address as sshd reports it (``SSH_CLIENT=addr port port``)."""
    parts = os.environ.get("SSH_CLIENT", "").split()
    return parts[0] if parts else None


def _audit(db: Any, user: str, action: str, space: str, status: int, reason: str = "") -> None:
    """Record a change or a refusal made over SSH in the hub's audit trail, as the HTTP API does."""
    from tether.auth import audit
    from tether.db.models import utcnow

    try:
        audit.record(db, at=utcnow(), user=user, token_id=None, action=action, resource=f"space:{space} via ssh",
                     source=_ssh_source(), outcome="allowed" if status < 400 else "denied" if status in (401, 403)
                     else "failed", status=status, reason=reason)
    except Exception as exc:  # noqa: BLE001 - auditing must not break the session; say so
        click.echo(f"tether ssh-serve: warning: could not write an audit record: {exc}", err=True)


class Session:
    def __init__(self, user: str, verb: str, space: str, svc: Any, ctx: Any, *, infd: int = 0, outfd: int = 1,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, max_frame: int = DEFAULT_MAX_FRAME):
        self.user, self.verb, self.space, self.svc, self.ctx = user, verb, space, svc, ctx
        self.outfd = outfd
        self.idle_timeout = idle_timeout
        self.reader = FrameReader(infd, REQUEST_TYPES, max_frame, idle_timeout)

    def send(self, ftype: str, payload: bytes = b"") -> None:
        write_all(self.outfd, encode(ftype, payload), timeout=self.idle_timeout)

    def run(self) -> int:
        from tether.problems import Problem

        self.send("H", json.dumps({"protocol": PROTOCOL, "user": self.user, "space": self.space,
                                   "mode": self.verb}).encode())
        for _ in range(MAX_REQUESTS):
            try:
                frame = self.reader.read()
            except FrameTimeout as exc:
                raise Exit(3, 408, "idle-timeout", f"idle peer: {exc}; closing") from None
            except FrameError as exc:
                raise Exit(3, 400, "bad-frame", f"malformed frame: {exc}; closing") from None
            if frame is None or frame.type == "Q":
                return 0
            try:
                reply_type, reply = self.handle(frame.type, frame.payload)
            except Problem as p:
                self.send("E", json.dumps(p.body(), ensure_ascii=False).encode())
                continue
            self.send(reply_type, reply)
        raise Exit(3, 429, "too-many-requests", f"more than {MAX_REQUESTS} requests in one session; closing")

    def handle(self, ftype: str, payload: bytes) -> tuple[str, bytes]:
        from tether.problems import bad_request, forbidden

        if ftype == "R":
            return "r", self.svc.reconcile(self.ctx, self.space, payload) or b""
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise bad_request("the frame's payload is not valid JSON", "invalid-json") from None
        if ftype == "P":
            if self.verb == "pull":
                raise forbidden("this session was opened for pull; push needs `tether-log push` or `sync`",
                                "pull-only-session")
            if not isinstance(data, list):
                raise bad_request("a push is a JSON list of records", "invalid-json")
            from tether.problems import Problem

            try:
                result = self.svc.push(self.ctx, self.space, data)
            except Problem as p:
                _audit(self.svc.db, self.user, "log.write", self.space, p.status, f"{p.slug}: {p.detail}")
                raise
            _audit(self.svc.db, self.user, "log.write", self.space, 200, f"{len(data)} record(s) pushed")
            return "p", json.dumps(result, ensure_ascii=False).encode()
        # G
        ids = data.get("ids") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) and len(i) <= 64 for i in ids):
            raise bad_request('a get is {"ids": [ID, ...]}', "invalid-json")
        return "g", json.dumps(self.svc.get(self.ctx, self.space, ids), ensure_ascii=False).encode()


def serve(user: str, original: str | None, *, config_file: Path | None = None, data_dir: Path | None = None,
          database_url: str | None = None, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
          max_frame: int = DEFAULT_MAX_FRAME, infd: int = 0, outfd: int = 1) -> int:
    """Run one session; returns the exit code. Errors go to stderr and, as an ``E``
    frame, to the client (which shows them)."""
    started = False
    try:
        if original is None and os.isatty(infd):
            raise Exit(2, 400, "no-command", USAGE)
        verb, space = parse_request(original)
        if not USER_RE.match(user):
            raise Exit(2, 400, "invalid-user", f"invalid user name {user[:40]!r} in the forced command")
        svc, ctx = _authorize(user, verb, space, config_file, data_dir, database_url)
        try:
            os.set_blocking(outfd, False)
        except OSError:
            pass
        started = True
        return Session(user, verb, space, svc, ctx, infd=infd, outfd=outfd, idle_timeout=idle_timeout,
                       max_frame=max_frame).run()
    except Exit as e:
        click.echo(e.detail if e.slug == "no-command" else f"tether ssh-serve: error: {e.detail}", err=True)
        if e.slug != "no-command" or original is not None:
            try:
                write_all(outfd, encode("E", _problem(e.status, e.slug, e.detail)), timeout=5)
            except (OSError, FrameError):
                pass
        return e.code
    except Exception as exc:  # noqa: BLE001 - database unreachable and the like: no traceback to the client
        click.echo(f"tether ssh-serve: error: {type(exc).__name__}: {exc}", err=True)
        try:
            write_all(outfd, encode("E", _problem(500, "internal", "the hub failed to serve this request; "
                                                  "its operator can see why in the server's log")), timeout=5)
        except (OSError, FrameError):
            pass
        return 3
    finally:
        if started:
            try:
                os.set_blocking(outfd, True)
            except OSError:
                pass


def _authorize(user: str, verb: str, space: str, config_file: Path | None, data_dir: Path | None,
               database_url: str | None) -> tuple[Any, Any]:
    from tether.auth.service import context_for_user
    from tether.config import ConfigError, load_settings
    from tether.db import Database
    from tether.log.service import LogService
    from tether.problems import Problem

    try:
        settings = load_settings(config_file, data_dir=data_dir, database_url=database_url)
    except ConfigError as exc:
        raise Exit(2, 500, "hub-config", f"hub configuration: {exc}") from None
    url = settings.effective_database_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise Exit(3, 500, "no-database", f"no hub database at {url[len('sqlite:///'):]}; "
                   "pass --data or --database-url (or set them in /etc/tether/hub.toml)")
    db = Database(url)
    svc = LogService(settings, db)
    try:
        ctx = context_for_user(db, user, source="ssh")
        for action in MODES[verb]:
            svc.space_id(ctx, space, action)
    except Problem as p:
        _audit(db, user, MODES[verb][-1], space, p.status, f"{p.slug}: {p.detail}")
        raise Exit(_exit_for(p.status), p.status, p.slug, p.detail) from None
    return svc, ctx


@click.command("ssh-serve")
@click.argument("user")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Hub TOML settings (default /etc/tether/hub.toml when it exists).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The hub's data directory (its SQLite database). Env TETHER_DATA_DIR.")
@click.option("--database-url", default=None, help="The hub's database URL. Env TETHER_DATABASE_URL.")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=DEFAULT_IDLE_TIMEOUT, show_default=True,
              envvar="TETHER_SSH_IDLE_TIMEOUT", show_envvar=True,
              help="Seconds a peer may take to send (or read) one frame before it is cut off.")
@click.option("--max-frame", type=click.IntRange(min=1024), default=DEFAULT_MAX_FRAME, show_default=True,
              help="Largest frame accepted, in bytes.")
def ssh_serve(user: str, config_file: Path | None, data_dir: Path | None, database_url: str | None,
              idle_timeout: float, max_frame: int) -> None:
    """Serve tether to USER over an SSH channel (the authorized_keys forced command).

    Not for interactive use: sshd runs it for a key whose authorized_keys line
    says command="tether ssh-serve USER"; the client's request comes in
    SSH_ORIGINAL_COMMAND (`tether-log pull|push|sync SPACE`). Without one it
    prints usage and exits 2. USER's grants on SPACE are checked before any
    data is read.

    \b
    Examples:
      tether key authorized-keys --output ~tether/.ssh/authorized_keys
      SSH_ORIGINAL_COMMAND='tether-log pull builds' tether ssh-serve alice --data /var/lib/tether
    """
    sys.exit(serve(user, os.environ.get("SSH_ORIGINAL_COMMAND"), config_file=config_file, data_dir=data_dir,
                   database_url=database_url, idle_timeout=idle_timeout, max_frame=max_frame))
