"""The hub's listening sockets, bound once, before it says it serves.

``tether hub`` binds every listener here (the API, SSH, gateway, LAVA) before it
touches its storage or prints "hub serving …", and hands each bound socket to its
server: a taken port is one clear error, not an announcement followed by a
traceback, and no port can be taken between a check and a second bind. A port of 0
is the kernel's choice; :func:`bound` names the address actually bound.
"""

from __future__ import annotations

import errno
import socket

BACKLOG = 2048  # uvicorn's default


class ListenError(Exception):
    """An address that cannot be bound; the message says what to do."""


def bind(host: str, port: int, flag: str) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``flag`` names the setting, for the message)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {_show(host, port)} ({flag}): {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio and uvicorn do
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(_said(host, port, flag, exc)) from None
    sock.set_inheritable(True)
    return sock


def bound(host: str, sock: socket.socket) -> str:
    """``HOST:PORT`` of a bound socket: the host as the setting named it, the port the
    socket has (the kernel's choice for a port of 0)."""
    return _show(host, sock.getsockname()[1])


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _said(host: str, port: int, flag: str, exc: OSError) -> str:
    where = _show(host, port)
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {where} ({flag}): the port is taken by another program; stop it "
                f"(`ss -ltnp 'sport = :{port}'` names it) or pass {flag} HOST:PORT with a free port")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {where} ({flag}): permission denied (ports below 1024 need privileges); "
                f"pass {flag} HOST:PORT with a port above 1023")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where} ({flag}): no interface of this machine has that address"
    return f"cannot listen on {where} ({flag}): {exc.strerror or exc}"


__all__ = ["ListenError", "bind", "bound"]
