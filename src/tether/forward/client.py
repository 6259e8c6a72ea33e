"""``tether forward NAME -- CMD``: run an app on this node and serve it through the hub.

The app gets a UNIX socket in a fresh 0700 directory (``$TETHER_SOCKET``, or
``{socket}`` in its arguments; ``--tcp`` gives it a loopback port instead, which
every user of this node can reach). Once it accepts, this connects to the hub's
SSH server with the user's key, registers the route by a remote forward, asks for
the URL and a one-time sign-in link, and relays the app's output. It ends the
app's whole process group (SIGTERM, 3 s, SIGKILL) when the app exits, when the
hub ends the route (stopped, idle) or on Ctrl-C; a dropped connection is retried
with backoff while the hub keeps the route waiting.

With ``--json`` the state is printed as JSON lines, as conductor does: ``connect``,
``live`` (``url``, ``signin``), ``data`` (a line of the app's output), ``failed``
(``reason``), ``exit`` (``code``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

EXIT_OK, EXIT_NO, EXIT_USAGE, EXIT_RUNTIME, EXIT_AUTH = 0, 1, 2, 3, 4
KILL_GRACE = 3.0


@dataclass
class Target:
    user: str
    host: str
    port: int


def parse_target(text: str) -> Target:
    """``[USER@]HOST[:PORT]`` (port 22 by default; the hub's key decides the tether user)."""
    user, _, rest = text.rpartition("@")
    host, sep, port = rest.rpartition(":") if rest.count(":") == 1 or rest.startswith("[") else ("", "", "")
    if not sep:
        host, port = rest, "22"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--ssh {text!r} is not [USER@]HOST[:PORT]")
    return Target(user or os.environ.get("USER") or "tether", host, int(port))


class Failed(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class Forwarder:
    def __init__(self, name: str, argv: list[str], target: Target, *, identity: str | None = None,
                 known_hosts: str | None = None, replace: bool = False, tcp: bool = False,
                 idle: int | None = None, as_json: bool = False, start_timeout: float = 60.0,
                 reconnect_for: float = 300.0):
        self.name, self.argv, self.target = name, argv, target
        self.identity, self.known_hosts = identity, known_hosts
        self.replace, self.tcp, self.idle = replace, tcp, idle
        self.as_json, self.start_timeout, self.reconnect_for = as_json, start_timeout, reconnect_for
        self.app: asyncio.subprocess.Process | None = None
        self.conn = None
        self.closed_reason: str | None = None
        self.dir: str | None = None

    # ------------------------------------------------------------------ output

    def emit(self, event: str, **fields) -> None:
        if self.as_json:
            print(json.dumps({"event": event, **fields}), flush=True)
        elif event == "live":
            print(f"tether: {self.name} is live at {fields['url']}", file=sys.stderr)
            print(f"tether: sign in (once, within 5 minutes): {fields['signin']}", file=sys.stderr, flush=True)
        elif event == "data":
            print(fields["data"], flush=True)
        elif event in ("failed", "warning", "connect"):
            print(f"tether: {event}: {fields.get('reason') or fields.get('to')}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ the run

    async def run(self) -> int:
        code = EXIT_OK
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        relay = None
        try:
            endpoint = await self._start_app()
            relay = asyncio.create_task(self._relay())
            code = await self._serve(endpoint, stop)
        except Failed as f:
            code = f.code
            failed = f.reason
        else:
            failed = None
        finally:
            if relay is not None:
                relay.cancel()  # what the app says while it stops is not relayed after the end
            await self._stop_app()
            if self.conn is not None:
                self.conn.close()
            if self.dir:
                for p in Path(self.dir).iterdir():
                    p.unlink(missing_ok=True)
                os.rmdir(self.dir)
        if failed is not None:
            self.emit("failed", reason=failed)
        self.emit("exit", code=code)
        return code

    async def _start_app(self):
        env = {k: v for k, v in os.environ.items() if k != "TETHER_TOKEN"}  # the app gets no hub credential
        if self.tcp:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            self.emit("warning", reason=f"--tcp: the app listens on 127.0.0.1:{port}, which every user of this node "
                      "can reach; a UNIX socket ({socket}) is private to you")
            env["TETHER_PORT"] = str(port)
            argv = [a.replace("{port}", str(port)) for a in self.argv]
            endpoint = ("127.0.0.1", port)
        else:
            self.dir = tempfile.mkdtemp(prefix="tether-forward-")  # 0700: only this user reaches the socket
            path = os.path.join(self.dir, "app.sock")
            env["TETHER_SOCKET"] = path
            argv = [a.replace("{socket}", path) for a in self.argv]
            endpoint = path
        try:
            self.app = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise Failed(EXIT_RUNTIME, f"cannot start {argv[0]!r}: {exc.strerror}") from None
        deadline = asyncio.get_running_loop().time() + self.start_timeout
        while not await self._accepts(endpoint):
            if self.app.returncode is not None:
                raise Failed(EXIT_RUNTIME, f"the app exited ({self.app.returncode}) before it accepted connections")
            if asyncio.get_running_loop().time() > deadline:
                where = "{port} ($TETHER_PORT)" if self.tcp else "{socket} ($TETHER_SOCKET)"
                raise Failed(EXIT_RUNTIME, f"the app did not accept connections within {self.start_timeout:g} s: "
                             f"does its command listen on {where}? (--start-timeout gives a slow app longer)")
            await asyncio.sleep(0.1)
        return endpoint

    @staticmethod
    async def _accepts(endpoint) -> bool:
        try:
            if isinstance(endpoint, str):
                _, w = await asyncio.open_unix_connection(endpoint)
            else:
                _, w = await asyncio.open_connection(*endpoint)
        except OSError:
            return False
        w.close()
        return True

    async def _relay(self) -> None:
        assert self.app is not None and self.app.stdout is not None
        while line := await self.app.stdout.readline():
            self.emit("data", data=line.decode("utf-8", "replace").rstrip("\n"))

    async def _serve(self, endpoint, stop: asyncio.Event) -> int:
        """Hold the route until the app exits, the hub ends it or we are stopped."""
        import asyncssh

        backoff, lost_at = 1.0, None
        app_done = asyncio.ensure_future(self.app.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while True:
                try:
                    await self._connect(endpoint)
                    backoff, lost_at = 1.0, None
                except (OSError, asyncssh.Error) as exc:
                    if isinstance(exc, asyncssh.PermissionDenied):
                        raise Failed(EXIT_AUTH, f"the hub refused this key ({exc.reason}); is it registered "
                                     "with `tether key add`?") from None
                    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
                        raise Failed(EXIT_AUTH, f"the hub's host key is not known ({exc.reason}); add it to "
                                     "known_hosts (or pass --known-hosts)") from None
                    if lost_at is None:
                        raise Failed(EXIT_RUNTIME, f"cannot reach the hub at {self.target.host}:"
                                     f"{self.target.port}: {exc}") from None
                    self.emit("failed", reason=f"reconnecting in {backoff:g} s: {exc}")
                else:
                    closed = asyncio.ensure_future(self.conn.wait_closed())
                    done, _ = await asyncio.wait({app_done, stopped, closed}, return_when=asyncio.FIRST_COMPLETED)
                    if app_done in done:
                        return EXIT_OK if self.app.returncode == 0 else EXIT_NO
                    if stopped in done:
                        return EXIT_OK
                    reason = self._ended_by_hub()
                    if reason is not None:
                        raise Failed(EXIT_NO, f"the hub ended the route: {reason}")
                    self.emit("failed", reason="lost the hub; reconnecting")
                loop = asyncio.get_running_loop()
                lost_at = lost_at or loop.time()
                if loop.time() - lost_at > self.reconnect_for:
                    raise Failed(EXIT_RUNTIME, f"the hub was unreachable for {self.reconnect_for:g} s; giving up")
                done, _ = await asyncio.wait({app_done, stopped}, timeout=backoff)
                if done:
                    return EXIT_OK if stopped in done or self.app.returncode == 0 else EXIT_NO
                backoff = min(backoff * 2, 30.0)
        finally:
            stopped.cancel()

    def _ended_by_hub(self) -> str | None:
        """Why the hub closed the connection on purpose (stopped, idle, replaced), if it did."""
        return self.closed_reason

    async def _connect(self, endpoint) -> None:
        import asyncssh

        forwarder = self
        self.closed_reason = None

        class _Client(asyncssh.SSHClient):
            def connection_lost(self, exc):
                # the hub ends a route (stopped, idle, replaced) with "service not available" and why;
                # a clean close would carry no reason, a lost network none either
                if isinstance(exc, asyncssh.ServiceNotAvailable):
                    forwarder.closed_reason = exc.reason

        self.emit("connect", to=f"{self.target.host}:{self.target.port}")
        options = {"known_hosts": self.known_hosts} if self.known_hosts else {}
        if self.identity:
            options["client_keys"] = [self.identity]
        self.conn, _ = await asyncssh.create_connection(
            _Client, self.target.host, self.target.port, username=self.target.user, keepalive_interval=15,
            **options)
        query = "&".join(q for q in ("replace" if self.replace else "",
                                     f"idle={self.idle}" if self.idle else "") if q)
        path = f"/{self.name}" + (f"?{query}" if query else "")
        try:
            if isinstance(endpoint, str):
                await self.conn.forward_remote_path(path, endpoint)
            else:
                await self.conn.forward_remote_path_to_port(path, *endpoint)
        except asyncssh.ChannelListenError:
            raise Failed(EXIT_USAGE, f"the hub refused route {self.name}: it is live from another node of yours "
                         f"(--replace takes it over), or an app instance of yours is named {self.name} "
                         "(`tether app list`; pick another name), or this key's user may not register it") from None
        self.replace = True  # a reconnect takes our own route back
        hello = await self._hello()
        self.emit("live", url=hello["url"], signin=hello["signin"])

    async def _hello(self) -> dict:
        proc = await self.conn.create_process(f"tether-forward hello {self.name}", encoding=None)
        head = await proc.stdout.readexactly(5)
        length, kind = struct.unpack(">IB", head)
        body = json.loads(await proc.stdout.readexactly(length))
        proc.close()
        if chr(kind) != "H":
            raise Failed(EXIT_RUNTIME, f"the hub said: {body.get('detail', body)}")
        return body

    async def _stop_app(self) -> None:
        app = self.app
        if app is None or app.returncode is not None:
            return
        try:
            os.killpg(app.pid, signal.SIGTERM)  # the whole group: the app's own children too
            try:
                await asyncio.wait_for(app.wait(), KILL_GRACE)
            except asyncio.TimeoutError:
                os.killpg(app.pid, signal.SIGKILL)
                await app.wait()
        except ProcessLookupError:
            pass
