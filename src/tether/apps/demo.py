"""A small web app to try ``tether app`` with: the Python standard library only, one file.

It listens on ``127.0.0.1:$PORT`` when that is set (registered with ``--tcp``: the
sandbox relays its socket there), else on the UNIX socket ``$TETHER_SOCKET``, and shows who
is signed in (the gateway's ``X-Tether-User``), a visit counter kept in ``/data``, and a
form that tries a TCP connection from inside the sandbox, so a browser shows at once
what the instance may reach (nothing, until a grant). Copy it into a directory and
register that::

    python3 -m tether.apps.demo --copy ./demo
    tether app register demo --space apps --dir ./demo --cmd python3 app.py
"""

from __future__ import annotations

import html
import json
import os
import shutil
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tether app demo</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1>tether app demo</h1>
<p>Signed in as <b id="user">{user}</b>; this is instance <b id="instance">{instance}</b>; visit <b id="visits">{visits}</b>.</p>
<form id="probe" action="api/connect"><input name="host" id="host" placeholder="host"> :
<input name="port" id="port" placeholder="port" size="6"> <button>try to connect</button></form>
<pre id="result"></pre>
<script>
document.getElementById("probe").onsubmit = async (e) => {{
  e.preventDefault();
  const q = new URLSearchParams(new FormData(e.target));
  const r = await fetch("api/connect?" + q);
  document.getElementById("result").textContent = JSON.stringify(await r.json());
}};
</script>
</body></html>
"""


def connect(host: str, port: int, timeout: float = 2.0) -> dict:
    """Try a TCP connection and read what the other side says first (if anything)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(1.0)
            try:
                said = s.recv(200).decode("utf-8", "replace")
            except OSError:
                said = ""
            return {"host": host, "port": port, "ok": True, "said": said}
    except OSError as exc:
        return {"host": host, "port": port, "ok": False, "error": exc.__class__.__name__ + ": " + str(exc)}


class Handler(BaseHTTPRequestHandler):
    server_version = "tether-app-demo"
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length

    def address_string(self) -> str:  # a UNIX socket's peer has no address
        return "gateway"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if os.environ.get("DEMO_QUIET") is None:
            sys.stderr.write("demo: " + (format % args) + "\n")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - the base class's name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        url = urlsplit(self.path)
        user = self.headers.get("x-tether-user", "")
        instance = os.environ.get("TETHER_APP", "demo") + "--" + os.environ.get("TETHER_USER", "?")
        if url.path.endswith("/api/connect"):
            q = parse_qs(url.query)
            try:
                port = int((q.get("port") or ["0"])[0])
            except ValueError:
                port = 0
            result = connect((q.get("host") or [""])[0], port) if 0 < port < 65536 else {"ok": False,
                                                                                          "error": "bad port"}
            self._send(200, json.dumps(result).encode(), "application/json")
            return
        if url.path.endswith("/api/crash"):  # to see the supervisor restart it
            self._send(200, b"{\"exiting\": 3}", "application/json")
            self.wfile.flush()
            os._exit(3)
        if url.path.endswith("/api/whoami"):
            body = {"user": user, "instance": instance, "cookie": self.headers.get("cookie", ""),
                    "authorization": self.headers.get("authorization", ""), "uid": os.getuid(),
                    "env": sorted(os.environ)}
            self._send(200, json.dumps(body).encode(), "application/json")
            return
        visits = bump(Path(os.environ.get("HOME") or "/data") / "visits")
        page = PAGE.format(user=html.escape(user), instance=html.escape(instance), visits=visits)
        self._send(200, page.encode(), "text/html; charset=utf-8")


def bump(path: Path) -> int:
    try:
        n = int(path.read_text() or "0") + 1
    except (OSError, ValueError):
        n = 1
    try:
        path.write_text(str(n))
    except OSError:
        pass
    return n


class UnixServer(ThreadingHTTPServer):
    address_family = socket.AF_UNIX
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: the gateway may connect many times at once

    def server_bind(self) -> None:
        try:
            os.unlink(self.server_address)
        except FileNotFoundError:
            pass
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "app", 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--copy"] and len(argv) == 2:
        Path(argv[1]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(__file__, Path(argv[1]) / "app.py")
        return 0
    path = None if os.environ.get("PORT") else os.environ.get("TETHER_SOCKET")
    if path:
        server: ThreadingHTTPServer = UnixServer(path, Handler)
    else:
        server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT") or 8000)), Handler)
    print(f"demo: serving on {path or server.server_address}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
