"""Forward's SSH side, served by the SSH entry of the hub's embedded server.

- A remote UNIX-socket forward (``ssh -N -R /NAME:/path/app.sock HUB``, or ``tether
  forward``) registers the key's user's route NAME: :class:`RouteListener`. The route
  lives as long as the forward; each browser connection becomes one channel back to
  the node's socket over that one SSH connection.
- ``tether-forward hello NAME`` (exec) answers, in its hello, the route's URL and a
  one-time sign-in link for its owner: :class:`ForwardHandler`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any
from urllib.parse import parse_qs

import asyncssh

from tether.forward.runtime import ForwardRuntime, LiveRoute
from tether.forward.service import Route
from tether.problems import Problem, not_found
from tether.ssh.entry import Exit, SessionInfo, SSHRequest

log = logging.getLogger("tether.forward")

PROTOCOL = "tether-forward/1"


class RouteListener(asyncssh.SSHListener):
    """Stands for a route on the hub's side of a remote forward: closing it ends the route."""

    def __init__(self, runtime: ForwardRuntime, route: Route):
        super().__init__()
        self.runtime, self.route = runtime, route
        self._closed = asyncio.Event()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        key = (self.route.owner, self.route.name)
        held = self.runtime.live.get(key)
        if held is not None and held.route.token_id == self.route.token_id:
            del self.runtime.live[key]
        # the route waits for its node (browsers get 503) until the reconnect grace ends it
        asyncio.get_running_loop().run_in_executor(None, self.runtime.service.disconnected, self.route)

    async def wait_closed(self) -> None:
        await self._closed.wait()


class RouteRegistrar:
    """The embedded SSH server's :class:`tether.ssh.entry.ListenHandler` for forwards."""

    def __init__(self, runtime: ForwardRuntime):
        self.runtime = runtime

    async def listen(self, session: SessionInfo, path: str, opener, close) -> Any:
        # OpenSSH reads a remote socket only when it holds a slash: `ssh -R /NAME:APP.sock`
        # (/NAME?replace takes the route over from another node; &idle=SECONDS sets its idle limit)
        name, _, query = path.removeprefix("/").partition("?")
        options = parse_qs(query, keep_blank_values=True, max_num_fields=4)
        idle = (options.get("idle") or [""])[0]
        resource = f"route:{session.user}/{name[:40]}"
        try:
            route = await asyncio.to_thread(
                self.runtime.service.register, session.user, name, node=session.ctx.source,
                holder=f"{self.runtime.holder}/{secrets.token_hex(4)}",  # this replica, this connection
                replace="replace" in options,
                idle_seconds=int(idle) if idle.isdigit() and 0 < int(idle) < 10**7 else None)
        except Problem as p:
            session.audit("forward.register", resource, p.status, f"{p.slug}: {p.detail}")
            log.info("forward: %s may not register %r: %s", session.user, path[:64], p.detail)
            return False
        session.audit("forward.register", resource, 200, f"from {session.ctx.source or 'unknown'}")
        previous = self.runtime.live.get((route.owner, route.name))
        self.runtime.live[(route.owner, route.name)] = LiveRoute(route, opener, close)
        if previous is not None:
            previous.close("replaced by another node")  # that node hears why and stops its app
        return RouteListener(self.runtime, route)


class ForwardHandler:
    """``tether-forward hello NAME``: the URL and a one-time sign-in link of a live route."""

    command = "tether-forward"
    usage = "tether-forward hello NAME"

    def __init__(self, runtime: ForwardRuntime):
        self.runtime = runtime

    def parse(self, argv: list[str]) -> SSHRequest:
        if len(argv) != 3 or argv[1] != "hello":
            raise Exit(2, 400, "unknown-command", f"unknown command: this account serves `{self.usage}`")
        return SSHRequest("hello", f"route:{argv[2][:40]}", "forward.signin")

    def open(self, session: SessionInfo, request: SSHRequest) -> HelloChannel:
        name = request.target.removeprefix("route:")
        route = self.runtime.service.lookup(session.user, name)
        if route is None or route.state != "live":
            raise not_found(f"live route {name} of {session.user}")
        secret = self.runtime.service.signin_link(route)
        session.audit("forward.signin-link", f"route:{session.user}/{name}", 200, "one-time sign-in link")
        address = self.runtime.address
        return HelloChannel({"protocol": PROTOCOL, "user": session.user, "name": name,
                             "url": address.url(session.user, name),
                             "signin": address.signin_url(session.user, name, secret)})


class HelloChannel:
    request_types = frozenset()

    def __init__(self, hello: dict[str, Any]):
        self.hello = hello

    def handle(self, ftype: str, payload: bytes) -> tuple[str, bytes]:  # pragma: no cover - no request types
        raise AssertionError("no requests after the hello")
