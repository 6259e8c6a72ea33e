"""The hub's own SSH server (``tether hub --ssh-listen``), so a deployment needs no sshd.

asyncssh authenticates the client's public key against the hub's database (the key
decides the tether user, whatever SSH user name the client sends); the command the
client asked for (``tether-log push SPACE``) is then served by the same ``Session``
as the forced command behind OpenSSH. Unlike OpenSSH with ``command=`` in
authorized_keys, there is no forced command to fall back to: the client's exec
request *is* the command, and anything else (a shell, a pty, forwarding) is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

import asyncssh
from sqlalchemy import select

from tether.db import Database
from tether.db.models import PublicKey, User

log = logging.getLogger("tether.ssh")


def load_or_create_host_key(data_dir: Path) -> asyncssh.SSHKey:
    """DATA/ssh_host_ed25519_key (0600), created on first start."""
    path = data_dir / "ssh_host_ed25519_key"
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key())
    (data_dir / "ssh_host_ed25519_key.pub").write_bytes(key.export_public_key())
    return key


def user_for_key(db: Database, fingerprint: str) -> str | None:
    """The enabled user owning this SSH key, if any."""
    with db.read() as s:
        row = s.execute(
            select(User.name).join(PublicKey, PublicKey.user_id == User.id)
            .where(PublicKey.kind == "ssh", PublicKey.fingerprint == fingerprint, User.disabled.is_(False))
        ).first()
    return row[0] if row else None


class _Server(asyncssh.SSHServer):
    def __init__(self, db: Database):
        self.db = db
        self.tether_user: str | None = None

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = user_for_key(self.db, key.get_fingerprint("sha256"))
        if user is None:
            log.info("ssh: unknown key %s refused", key.get_fingerprint("sha256"))
            return False
        self.tether_user = user
        return True


def _run_session(settings: Any, db: Database, user: str, command: str | None, fd: int,
                 source: str | None) -> int:
    """The blocking side: the same session code as ``tether ssh-serve``, on one end of a socketpair."""
    from tether.auth.service import context_for_user
    from tether.log.service import LogService
    from tether.problems import Problem
    from tether.ssh.frames import encode, write_all
    from tether.ssh.serve import (
        MODES,
        Exit,
        Session,
        _audit,
        _exit_for,
        _problem,
        parse_request,
    )

    try:
        verb, space = parse_request(command)
        svc = LogService(settings, db)
        try:
            ctx = context_for_user(db, user, source=source)
            for action in MODES[verb]:
                svc.space_id(ctx, space, action)
        except Problem as p:
            _audit(db, user, MODES[verb][-1], space, p.status, f"{p.slug}: {p.detail}")
            raise Exit(_exit_for(p.status), p.status, p.slug, p.detail) from None
        os.set_blocking(fd, False)
        return Session(user, verb, space, svc, ctx, infd=fd, outfd=fd).run()
    except Exit as e:
        try:
            write_all(fd, encode("E", _problem(e.status, e.slug, e.detail)), timeout=5)
        except Exception:  # noqa: BLE001 - the peer may be gone
            pass
        return e.code
    except Exception:
        log.exception("ssh session failed")
        return 3


async def _handle(process: asyncssh.SSHServerProcess, settings: Any, db: Database) -> None:
    server: _Server = process.get_extra_info("connection").get_owner()
    user = server.tether_user
    if user is None or process.command is None:
        process.stderr.write(b"tether: this hub serves `tether-log pull|push|sync SPACE` only; no shell\n")
        process.exit(2)
        return
    peer = process.get_extra_info("peername")
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    result: list[int] = []
    def work():
        try:
            result.append(_run_session(settings, db, user, process.command, ours.fileno(), peer[0] if peer else None))
        finally:
            ours.close()  # EOF for the pump below: the session is over

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    reader, writer = await asyncio.open_connection(sock=theirs)

    async def client_to_session():
        try:
            while data := await process.stdin.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged, ConnectionError):
            pass
        finally:
            if writer.can_write_eof():
                writer.write_eof()

    async def session_to_client():
        while data := await reader.read(1 << 16):
            process.stdout.write(data)
            await process.stdout.drain()

    pump_in = asyncio.create_task(client_to_session())
    await session_to_client()
    pump_in.cancel()
    await loop.run_in_executor(None, worker.join)
    writer.close()
    process.exit(result[0] if result else 3)


async def start_server(settings: Any, db: Database, host: str, port: int) -> asyncssh.SSHAcceptor:
    key = load_or_create_host_key(settings.data_dir)
    return await asyncssh.create_server(
        lambda: _Server(db), host, port, server_host_keys=[key],
        process_factory=lambda p: _handle(p, settings, db),
        encoding=None, allow_pty=False, agent_forwarding=False, x11_forwarding=False,
        login_timeout=30, keepalive_interval=30,
    )


def host_key_line(data_dir: Path) -> str:
    return (data_dir / "ssh_host_ed25519_key.pub").read_text().strip()
