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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncssh

from tether.auth.identities import user_for_ssh_key
from tether.db import Database
from tether.ssh.entry import Handler, ListenHandler, serve_session, session_for, usage

#: AES-GCM only. A client takes its own first choice among those offered: OpenSSH ranks
#: chacha20-poly1305 first and AES-CTR before AES-GCM, so offering either gets it. In
#: asyncssh (Python) chacha20-poly1305 builds three cipher contexts per packet and CTR
#: adds a separate MAC, where AES-GCM is one call: measured, the hub's CPU per streamed
#: MiB 2.30 ms with chacha20, 1.93 with aes128-ctr + umac-64-etm, 1.33 with aes128-gcm
#: (docs/benchmarks.md, "Forward gateway"). Every OpenSSH since 6.2 and asyncssh speak it.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

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


class _Server(asyncssh.SSHServer):
    def __init__(self, settings: Any, db: Database, listener: ListenHandler | None):
        self.settings = settings
        self.db = db
        self.listener = listener
        self.tether_user: str | None = None
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def unix_server_requested(self, listen_path: str):
        """``ssh -R NAME:PATH``: a capability (forward) decides; anything else is refused."""
        if self.listener is None or self.tether_user is None or self.conn is None:
            return False
        return self._listen(listen_path)

    async def _listen(self, path: str):
        conn, user = self.conn, self.tether_user
        peer = conn.get_extra_info("peername")
        say = lambda m: log.info("ssh: %s", m)  # noqa: E731
        try:
            session = await asyncio.to_thread(session_for, self.settings, self.db, user, peer[0] if peer else None, say)
            return await self.listener.listen(session, path, lambda factory: conn.create_unix_connection(factory, path),
                                             lambda why: conn.disconnect(asyncssh.DISC_SERVICE_NOT_AVAILABLE, why))
        except Exception:  # noqa: BLE001 - a refusal, never a crash of the connection
            log.exception("ssh: forward of %r for %s failed", path, user)
            return False

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = user_for_ssh_key(self.db, key.get_fingerprint("sha256"))
        if user is None:
            log.info("ssh: unknown key %s refused", key.get_fingerprint("sha256"))
            return False
        self.tether_user = user
        return True


async def _handle(process: asyncssh.SSHServerProcess, handlers: Mapping[str, Handler], settings: Any,
                  db: Database) -> None:
    server: _Server = process.get_extra_info("connection").get_owner()
    user = server.tether_user
    if user is None or process.command is None:
        process.stderr.write((usage(handlers) + "\n").encode())
        process.exit(2)
        return
    peer = process.get_extra_info("peername")
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    result: list[int] = []
    def work():
        try:
            fd = ours.fileno()
            result.append(serve_session(handlers, settings, db, user, process.command, infd=fd, outfd=fd,
                                        source=peer[0] if peer else None, say=lambda m: log.info("ssh: %s", m)))
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


async def start_server(handlers: Mapping[str, Handler], settings: Any, db: Database, host: str, port: int, *,
                       listener: ListenHandler | None = None, sock: socket.socket | None = None) -> asyncssh.SSHAcceptor:
    """Serve SSH on ``host:port``, or on ``sock`` (bound to it already) when given."""
    key = load_or_create_host_key(settings.data_dir)
    where = {"sock": sock} if sock is not None else {"host": host, "port": port}
    return await asyncssh.create_server(
        lambda: _Server(settings, db, listener), **where, server_host_keys=[key],
        process_factory=lambda p: _handle(p, handlers, settings, db),
        encoding=None, allow_pty=False, agent_forwarding=False, x11_forwarding=False,
        login_timeout=30, keepalive_interval=30, encryption_algs=CIPHERS,
    )


def host_key_line(data_dir: Path) -> str:
    return (data_dir / "ssh_host_ed25519_key.pub").read_text().strip()
