"""A test app the tests drive from outside: it listens on $TETHER_SOCKET (and, when
$LISTEN_TCP is set, on 0.0.0.0:$LISTEN_TCP inside its namespace) and runs one JSON
command per line, answering one JSON line:

  {"op": "connect", "host": H, "port": P}          -> {"ok": true} | {"error": "ECONNREFUSED"}
  {"op": "open", "host": H, "port": P}             -> {"id": N} | {"error": ...}
  {"op": "exchange", "id": N, "data": "text"}      -> {"data": "reply"} | {"error": ...}
  {"op": "udp", "host": H, "port": P}              -> {"data": reply} | {"error": ...}

Standard library only: it runs on the system python3 inside the sandbox.
"""

import errno
import json
import os
import socket
import threading

conns = {}


def err(exc):
    code = getattr(exc, "errno", None)
    return {"error": errno.errorcode.get(code, type(exc).__name__) if code else type(exc).__name__}


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def do(cmd):
    op = cmd["op"]
    try:
        if op == "connect":
            with socket.create_connection((cmd["host"], cmd["port"]), timeout=2):
                return {"ok": True}
        if op == "open":
            s = socket.create_connection((cmd["host"], cmd["port"]), timeout=2)
            conns[len(conns) + 1] = s
            return {"id": len(conns)}
        if op == "exchange":
            s = conns[cmd["id"]]
            s.sendall(cmd["data"].encode())
            data = s.recv(1000)
            if not data:
                return {"error": "EOF"}
            return {"data": data.decode()}
        if op == "udp":
            with socket.socket(family(cmd["host"]), socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                s.sendto(b"ping", (cmd["host"], cmd["port"]))
                return {"data": s.recv(100).decode()}
    except Exception as exc:  # the test reads the error's name
        return err(exc)
    return {"error": "unknown op"}


def serve_client(c):
    with c, c.makefile("rwb") as f:
        for line in f:
            f.write(json.dumps(do(json.loads(line))).encode() + b"\n")
            f.flush()


def tcp_listener(port):
    s = socket.socket(socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen()
    while True:
        c, _ = s.accept()
        c.sendall(b"instance here\n")
        c.close()


if os.environ.get("LISTEN_TCP"):
    threading.Thread(target=tcp_listener, args=(int(os.environ["LISTEN_TCP"]),), daemon=True).start()
u = socket.socket(socket.AF_UNIX)
u.bind(os.environ["TETHER_SOCKET"])
u.listen()
while True:
    c, _ = u.accept()
    threading.Thread(target=serve_client, args=(c,), daemon=True).start()
